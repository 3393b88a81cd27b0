"""C1's training-free video consistency options: shared noise per video, cross-frame attention
(the processor's properties, on its own and inside the UNet), their record in C1_run.json and the
manifest, the refusal to resume with another value, and C2's report naming them."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from src.data import load_pairs
from src.data.preprocess import preprocess_phoenix
from src.evaluate import generate, handoff, metrics
from src.models.heads import time_embedding_dim
from src.models.cross_frame_attention import CrossFrameAttnProcessor, anchor_indices, cross_frame_attention
from src.synthetic.signing import write_synthetic_signing
from src.train.stage2 import make_tiny_pipeline
from src.util.scripts import run_script

ROOT = Path(__file__).resolve().parents[1]
SIZE, EVAL, DRAW = (64, 48), (260, 210), (260, 210)
STEPS = 2


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """A1's output for two synthetic test videos of 5 frames, and a saved tiny 133-point pipeline
    whose pose path carries some weight: {"root", "pairs", "pipeline" (folder), "pipe"}."""
    base = tmp_path_factory.mktemp("video_consistency")
    release = write_synthetic_signing(base / "release", videos={"test": 2}, frames=(5, 5), seed=4)
    root = base / "data"
    preprocess_phoenix(release["root"], release["keypoints_dir"], root, splits=("test",), workers=1,
                       log=lambda *a: None)
    pipe = make_tiny_pipeline(base / "sd2", height=SIZE[0], width=SIZE[1], pose_draw_size=DRAW,
                              pose_format="wholebody133")
    conv = pipe.pose_encoder.embedding.conv_out
    conv.weight.data = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.05
    pipe.save_pretrained(base / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    return {"root": root, "pairs": load_pairs(root, "test_pairs_data.json"), "pipeline": base / "pipeline",
            "pipe": pipe}


def run(pipe, root, pairs, out, **consistency):
    return generate.generate_pairs(pipe, root, pairs, out, size=SIZE, eval_size=SIZE, draw_size=DRAW,
                                   dataset="phoenix", batch_size=3, num_inference_steps=STEPS, show_progress=False,
                                   consistency=consistency)


def starting_latents(phoenix, out, monkeypatch, **consistency) -> dict:
    """{target image: the initial latent C1 gave it} of one C1 run (frames named in the order
    their poses are rendered, which is their order in the batch)."""
    pipe, latents, order = phoenix["pipe"], [], []
    initial, render = pipe.initial_latents, generate.test_pose_render

    def record(*args, **kwargs):
        result = initial(*args, **kwargs)
        latents.append(result[0].clone())
        return result

    def named(root, image_rel, *args, **kwargs):
        order.append(image_rel)
        return render(root, image_rel, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(pipe, "initial_latents", record)
        m.setattr(generate, "test_pose_render", named)
        run(pipe, phoenix["root"], phoenix["pairs"], out, **consistency)
    latents = torch.cat(latents)
    assert len(order) == latents.shape[0]
    return dict(zip(order, latents))


def test_shared_noise_starts_every_frame_of_a_video_from_one_latent(phoenix, tmp_path, monkeypatch):
    videos, _ = handoff.group_videos(phoenix["pairs"])
    a, b = ([p["target_image"] for p in v.entries] for v in videos)
    shared = starting_latents(phoenix, tmp_path / "shared", monkeypatch, shared_noise=True)
    assert all(torch.equal(shared[a[0]], shared[t]) for t in a[1:])
    assert all(torch.equal(shared[b[0]], shared[t]) for t in b[1:])
    assert not torch.allclose(shared[a[0]], shared[b[0]])            # each video its own noise
    own = starting_latents(phoenix, tmp_path / "own", monkeypatch)
    assert not torch.allclose(own[a[0]], own[a[1]])                   # frame by frame: each frame its own

    # the per-step noise of a stochastic sampler is shared too: one pose, one seed -> one image
    pipe, pair = phoenix["pipe"], phoenix["pairs"][0]
    source, pose = generate.pair_inputs(phoenix["root"], pair, DRAW, dataset="phoenix")
    seed = generate.frame_seed(7, pair, shared_noise=True)
    twins = pipe(source_image=source, target_pose=[pose, pose], num_inference_steps=3, scheduler="ddpm",
                 seeds=[seed, seed], output_type="pt").images
    assert torch.equal(twins[0], twins[1])


def test_cross_frame_processor_with_itself_as_anchor_is_plain_self_attention():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    hidden = torch.randn(8, 10, 16)  # two guidance branches of four frames
    plain = AttnProcessor2_0()
    own = plain(attn, hidden)
    assert torch.allclose(CrossFrameAttnProcessor(plain, torch.arange(4))(attn, hidden), own, atol=1e-6)

    anchored = CrossFrameAttnProcessor(plain, torch.tensor(anchor_indices([0] * 4, "first")))(attn, hidden)
    for branch in (0, 4):
        assert torch.allclose(anchored[branch], own[branch], atol=1e-6)   # the first frame is its own anchor
        assert not torch.allclose(anchored[branch + 1:branch + 4], own[branch + 1:branch + 4], atol=1e-3)
    # the anchor is taken in the frame's own branch: frame 2 of branch 2 attends to frame 0 of branch 2
    expected = plain(attn, hidden[6:7], torch.cat([hidden[6:7], hidden[4:5]], dim=1))
    assert torch.allclose(anchored[6:7], expected, atol=1e-6)
    # cross-attention (encoder states given) is left to the layer's processor
    states = torch.randn(8, 3, 16)
    assert torch.allclose(CrossFrameAttnProcessor(plain, torch.tensor([0, 0, 0, 0]))(attn, hidden, states),
                          plain(attn, hidden, states), atol=1e-6)
    assert anchor_indices(["a", "a", "a", "b", "b"], "previous") == [0, 0, 1, 3, 3]
    assert anchor_indices(["a", "a", "a", "b", "b"], "first") == [0, 0, 0, 3, 3]
    with pytest.raises(ValueError, match="cross_frame_attention='next'"):
        anchor_indices([0], "next")


def test_cross_frame_attention_in_the_unet(phoenix):
    unet = phoenix["pipe"].unet
    torch.manual_seed(1)
    inputs = dict(sample=torch.randn(3, 4, 8, 6), timestep=torch.tensor([500] * 3),
                  encoder_hidden_states=torch.randn(3, 5, unet.config.cross_attention_dim),
                  class_labels=torch.randn(3, time_embedding_dim(unet)))
    with torch.no_grad():
        own = unet(**inputs).sample
        processors = dict(unet.attn_processors)
        with cross_frame_attention(unet, [0, 1, 2]):
            assert sum(isinstance(p, CrossFrameAttnProcessor) for p in unet.attn_processors.values()) > 0
            itself = unet(**inputs).sample
        with cross_frame_attention(unet, [0, 0, 0]):
            first = unet(**inputs).sample
    assert unet.attn_processors == processors                          # restored after the block
    assert torch.allclose(itself, own, atol=1e-5)
    assert torch.allclose(first[0], own[0], atol=1e-5) and not torch.allclose(first[1:], own[1:], atol=1e-4)


def test_cross_frame_chunks_keep_each_video_together_led_by_its_anchor(phoenix):
    videos, _ = handoff.group_videos(phoenix["pairs"])
    frames = [p["target_image"] for p in videos[0].entries]
    chunks = generate.video_chunks(phoenix["pairs"], 3, "first")
    first = [([p["target_image"] for p in c], n) for c, n in chunks if c[0]["source_image"] == videos[0].source_image]
    assert first == [(frames[:3], 0), ([frames[0], *frames[3:5]], 1)]
    previous = generate.video_chunks(phoenix["pairs"], 3, "previous")
    assert [p["target_image"] for p in previous[1][0]] == frames[2:5]


def c1(phoenix, out, *extra):
    return run_script("C1.test_Diffusion_model.py", f"--config={ROOT / 'configs' / 'phoenix.py'}",
                      f"--pipeline={phoenix['pipeline']}", f"--dataset_root={phoenix['root']}", f"--out_dir={out}",
                      f"--num_inference_steps={STEPS}", "--batch_size=3", "--num_grids=0", "--videos=off", *extra,
                      capture=True)


def test_c1_records_the_options_and_c2_names_them(phoenix, tmp_path, monkeypatch):
    out = tmp_path / "C1"
    r = c1(phoenix, out, "--shared_noise=True", "--cross_frame_attention=first")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "'context_frames': 2" in r.stdout    # two videos of 5 frames in chunks of 3: one anchor again each
    options = {"shared_noise": True, "cross_frame_attention": "first"}
    record = json.loads((out / generate.RUN_RECORD).read_text())
    assert {k: record[k] for k in options} == options and record["cross_frame_batch"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest) == len(phoenix["pairs"]) and all(m["consistency"] == options for m in manifest)

    # a bad value: a one-line config error before any work
    r = c1(phoenix, tmp_path / "bad", "--cross_frame_attention=next")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "cross_frame_attention='next': choose one of off, first, previous" in r.stderr
    assert not (tmp_path / "bad").exists()

    # C2's report says which options made the images (LPIPS and FID, beside the point here, left out)
    def unavailable(*args, **kwargs):
        raise OSError("not in this test")

    for network in ("build_lpips", "build_inception"):
        monkeypatch.setattr(metrics, network, unavailable)
    entries, problems = handoff.generated_entries(out, phoenix["root"], ["260x210"])
    assert not problems
    results = metrics.score_generated(entries, ["260x210"], [e.truth for e in entries], fid_reference="test",
                                      fid_backbone="pytorch-fid", lpips_random=True, batch_size=8, progress=False,
                                      temporal="on", i3d=tmp_path / "no_i3d", device="cpu")
    protocol = results["260x210"]["protocol"]
    assert protocol["consistency"] == options
    assert protocol["consistency_description"] == "shared noise + cross-frame attention to the first frame"
    row = "| FPDM (shared noise + cross-frame attention to the first frame) | 260x210"
    assert row in metrics.markdown_table(results)


def test_runs_recorded_before_the_options_resume_and_other_values_are_refused(phoenix, tmp_path):
    pipe, pairs = phoenix["pipe"], phoenix["pairs"][:2]
    counts = run(pipe, phoenix["root"], pairs, tmp_path)
    assert counts["generated"] == 2 and counts["context_frames"] == 0
    record = json.loads((tmp_path / generate.RUN_RECORD).read_text())
    for key in generate.LATER_SETTINGS:                                   # a record of an older C1
        del record[key]
    (tmp_path / generate.RUN_RECORD).write_text(json.dumps(record))
    assert run(pipe, phoenix["root"], pairs, tmp_path)["skipped"] == 2    # frame by frame: resumes
    # another value of an option: refused before generating, naming it
    with pytest.raises(generate.RunMismatchError, match="shared_noise: False -> True"):
        run(pipe, phoenix["root"], pairs, tmp_path, shared_noise=True)
    with pytest.raises(generate.RunMismatchError, match="cross_frame_attention: 'off' -> 'previous'"):
        run(pipe, phoenix["root"], pairs, tmp_path, cross_frame_attention="previous")
    # cross-frame attention to the first frame: the first frame as frame by frame, the next one changed
    run(pipe, phoenix["root"], pairs, tmp_path / "first", cross_frame_attention="first")
    for pair, same in zip(pairs, (True, False)):
        a, b = (np.asarray(Image.open(folder / "64x48" / handoff.output_name(pair)), dtype=np.int16)
                for folder in (tmp_path, tmp_path / "first"))
        assert (np.abs(a - b).max() <= 1) == same, pair["target_image"]
    assert handoff.consistency_text(None) == "not recorded"
    assert handoff.consistency_text(handoff.CONSISTENCY_DEFAULTS) == "frame by frame"
