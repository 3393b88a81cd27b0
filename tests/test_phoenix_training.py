"""PHOENIX-2014T training and generation: the Datasets of both stages on A1's output for the
synthetic signing set, their check, the pipeline's 133-point drawing, C1's per-video generation
(one source encoding a video) and B1 -> B2 -> C1 tiny runs with configs/phoenix.py end to end."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from src.data.pairs import DatasetError, load_pairs, relative_stem
from src.data.phoenix_datasets import SPEC as PHOENIX
from src.data.phoenix_datasets import PhoenixDiffusionDataset, PhoenixFusionDataset, check_dataset
from src.pose.render import WHOLEBODY133
from PIL import Image

from src.util.images import resize
from src.pipeline import FPDMPipeline
from src.pose import wholebody133
from src.train.stage2 import make_tiny_pipeline
from src.synthetic.signing import write_synthetic_signing
from src.util.scripts import run_script
from src.util.videos import gif_info, mp4_info, read_mp4

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["train_pairs_data.json", "test_pairs_data.json"]
PHOENIX_CONFIG = f"--config={ROOT / 'configs' / 'phoenix.py'}"


@pytest.fixture(scope="module")
def phoenix_root(tmp_path_factory):
    """The synthetic signing release (3 train, 2 test videos of 4-5 frames) through A1's PHOENIX mode."""
    base = tmp_path_factory.mktemp("phoenix_training")
    release = write_synthetic_signing(base / "release", videos={"train": 3, "test": 2}, frames=(4, 5), seed=1)
    out = base / "data"
    r = run_script("A1.pose_data_preprocessing.py", "--dataset=phoenix", f"--phoenix_root={release['root']}",
                   f"--keypoints={release['keypoints_dir']}", f"--dataset_root={out}", "--train_pairs_count=12",
                   "--workers=1", capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_check_passes_then_lists_every_problem_at_once(phoenix_root, tmp_path):
    counts = check_dataset(phoenix_root, PAIRS, workers=1)
    assert counts["pairs"]["train_pairs_data.json"] == 12 and counts["images"] > 0
    # a copy whose img link points at the same frames, with three faults
    root = tmp_path / "broken"
    root.mkdir()
    (root / "img").symlink_to((phoenix_root / "img").resolve())
    pairs = load_pairs(phoenix_root, "test_pairs_data.json")
    shutil.copytree(phoenix_root / "pose", root / "pose")
    stem_a, stem_b = relative_stem(pairs[0]["target_image"]), relative_stem(pairs[1]["target_image"])
    (root / "pose" / stem_a.with_suffix(".txt")).unlink()                         # missing pose file
    (root / "pose" / stem_b.with_suffix(".txt")).write_text("1 2\n" * 18)        # wrong shape
    bad = dict(pairs[2], target_image="./img/test/no_such_video/images0001.png")  # missing frame
    (root / "test_pairs_data.json").write_text(json.dumps(pairs[:2] + [bad]))
    with pytest.raises(DatasetError) as e:
        check_dataset(root, ["test_pairs_data.json", "train_pairs_data.json"], workers=1)
    text = str(e.value)
    assert "train_pairs_data.json: pair file missing" in text
    assert str(stem_a.with_suffix(".txt")) in text and "expected 133 rows" in text
    assert "no_such_video/images0001.png: image missing" in text


def test_fusion_dataset_items(phoenix_root):
    ds = PhoenixFusionDataset(phoenix_root, "train_pairs_data.json", image_size=32)
    item = ds[0]
    assert set(item) == {"source", "pose", "target", "index"}
    for key in ("source", "pose", "target"):
        assert item[key].shape == (3, 32, 32) and item[key].min() >= -1 and item[key].max() <= 1
    assert item["pose"].max() > -1  # the render is not empty


def test_diffusion_dataset_items_sizes_and_no_flip_by_default(phoenix_root):
    kw = dict(target_size=(64, 48), source_size=32, fusion_size=24, source_scales=(16, 32), seed=0)
    ds = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", **kw)
    assert ds.flip_prob == 0 and ds.pose_draw_size == wholebody133.FRAME_SIZE and PHOENIX.model_size == (320, 256)
    item = ds[1]
    assert set(item) == {"target", "target_pose", "source", "fusion_source", "fusion_pose", "index"}
    assert item["target"].shape == item["target_pose"].shape == (3, 64, 48)
    assert item["source"].shape == (3, 32, 32)
    assert item["fusion_source"].shape == item["fusion_pose"].shape == (3, 24, 24)

    # without jitter the training pose is the plain render, unflipped, for every index and epoch
    plain = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", jitter_sigma=0.0, **kw)
    for epoch in range(3):
        plain.set_epoch(epoch)
        for i in range(len(plain)):
            kp = wholebody133.read_keypoints(phoenix_root / "pose" / relative_stem(plain.pairs[i]["target_image"]).with_suffix(".txt"))
            expected = np.asarray(WHOLEBODY133.stage2_pose(kp, (64, 48), wholebody133.FRAME_SIZE),
                                  dtype=np.float32) / 127.5 - 1
            got = plain[i]["target_pose"].permute(1, 2, 0).numpy()
            assert np.abs(got - expected).max() < 1e-5
    # with flip forced on the target is mirrored (and a warning says flips are off by design)
    with pytest.warns(UserWarning, match="mirror"):
        flipped = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", jitter_sigma=0.0, flip_prob=1.0,
                                          identity_prob=0.0, **{k: v for k, v in kw.items()})
    test_set = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", train=False, **kw)
    assert torch.allclose(flipped[0]["target"], test_set[0]["target"].flip(-1), atol=1e-6)


def test_b1_and_b2_tiny_phoenix_end_to_end(phoenix_root, tmp_path):
    from src.models.fusion import FusionModel
    from src.pipeline import FPDMPipeline

    b1 = tmp_path / "B1"
    r = run_script("B1.train_Fusion_model.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--out_dir={b1}", "--max_steps=2", "--batch_size=4", "--eval_max_pairs=4", "--eval_at_start=False",
                   capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert '"dataset": "phoenix"' in (b1 / "B1_config.json").read_text()
    FusionModel.from_pretrained(b1 / "fusion_model")

    b2 = tmp_path / "B2"
    r = run_script("B2.train_Diffusion_model.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--fusion_model={b1 / 'fusion_model'}", f"--out_dir={b2}", "--max_steps=2",
                   "--batch_size=2", "--validation_pairs=0", "--validation_loss_pairs=2", capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    config = (b2 / "B2_config.json").read_text()
    assert '"flip_prob": 0.0' in config and '"jitter_sigma": 0.5' in config and '"dataset": "phoenix"' in config
    pipe = FPDMPipeline.from_pretrained(b2 / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.config.height, pipe.config.width) == (80, 64)  # tiny's PHOENIX size, no flag needed
    assert tuple(pipe.config.pose_draw_size) == PHOENIX.pose_draw_size and pipe.config.pose_format == "wholebody133"

    c1 = tmp_path / "C1"
    r = run_script("C1.test_Diffusion_model.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--pipeline={b2 / 'pipeline'}", f"--out_dir={c1}", "--num_inference_steps=2", "--batch_size=3",
                   capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    pairs = load_pairs(phoenix_root, "test_pairs_data.json")
    assert "'sources_encoded': 2" in r.stdout  # two test videos, 9 frames, batches of 3
    manifest = json.loads((c1 / "manifest.json").read_text())
    assert len(manifest) == len(pairs) and all("generated_260x210" in m for m in manifest)
    videos = sorted((c1 / "videos" / "test").iterdir())
    assert len(videos) == 8  # two videos x (panels, generated alone) x (mp4, gif)
    for video, frames in release_videos(pairs).items():
        n, size = mp4_info(c1 / "videos" / f"{video}.mp4")
        assert (n, size) == (frames, (260, 840))
        n, size = mp4_info(c1 / "videos" / f"{video}_generated.mp4")
        assert (n, size) == (frames, (260, 210))
        assert gif_info(c1 / "videos" / f"{video}_generated.gif")[1] == (260, 210)
        assert gif_info(c1 / "videos" / f"{video}.gif")[2][0] == 40  # 25 fps
    # the panel's generated quarter is the generated frame: its first frame against the PNG
    first = [m for m in manifest if "images0001" in m["target_image"]][0]
    video = Path(first["target_image"]).parent.relative_to("./img").as_posix()
    panel = read_mp4(c1 / "videos" / f"{video}.mp4")[0]
    png = np.asarray(Image.open(c1 / first["generated_260x210"]).convert("RGB"), dtype=np.float32)
    assert np.abs(panel[:, 630:].astype(np.float32) - png).mean() < 8  # MP4 compression only
    assert np.abs(panel[:, 420:630].astype(np.float32) - png).mean() > 8  # the ground truth is another image

    # C2 on C1's output: per-frame metrics at 260x210 and the temporal figures of both videos
    r = run_script("C2.eval.caculate_metrics.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--generated={c1}", capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    block = json.loads((c1 / "metrics.json").read_text())["260x210"]
    assert block["count"] == len(pairs) and 0 < block["ssim"] < 1
    temporal = block["temporal"]
    assert temporal["count"] == 2 and sorted(v["name"] for v in temporal["videos"]) == sorted(release_videos(pairs))
    assert temporal["warping_error"] > temporal["warping_error_real"] >= 0

    # a rerun skips every frame and every video
    r = run_script("C1.test_Diffusion_model.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--pipeline={b2 / 'pipeline'}", f"--out_dir={c1}", "--num_inference_steps=2", capture=True)
    assert r.returncode == 0 and "'generated': 0" in r.stdout and "'sources_encoded': 0" in r.stdout


def release_videos(pairs):
    """{'<split>/<video>': frame count} of test pairs, counted from their target paths."""
    counts = {}
    for p in pairs:
        video = Path(p["target_image"]).parent.relative_to("./img").as_posix()
        counts[video] = counts.get(video, 0) + 1
    return counts


def test_deepfashion_pipeline_refuses_phoenix_data(phoenix_root, tmp_path):
    pipe = make_tiny_pipeline(tmp_path / "sd2", height=64, width=48)
    pipe.save_pretrained(tmp_path / "pipeline")
    r = run_script("C1.test_Diffusion_model.py", "--preset=tiny", PHOENIX_CONFIG, f"--dataset_root={phoenix_root}",
                   f"--pipeline={tmp_path / 'pipeline'}", f"--out_dir={tmp_path / 'C1'}", capture=True)
    assert r.returncode != 0
    assert "trained on openpose18 poses" in r.stderr and "has wholebody133 poses" in r.stderr
    assert not (tmp_path / "C1" / "manifest.json").exists()


@pytest.fixture(scope="module")
def phoenix_pipeline(tmp_path_factory):
    """A tiny random pipeline of the 133-point format whose pose path carries some weight."""
    tmp = tmp_path_factory.mktemp("phoenix_pipeline")
    pipe = make_tiny_pipeline(tmp / "sd2", height=64, width=48, pose_draw_size=(260, 210), pose_format="wholebody133")
    g = torch.Generator().manual_seed(3)
    conv = pipe.pose_encoder.embedding.conv_out
    conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.05
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_draws_133_point_keypoints_as_b2(phoenix_pipeline, phoenix_root):
    pairs = load_pairs(phoenix_root, "test_pairs_data.json")
    kp_frame = wholebody133.read_keypoints(phoenix_root / "pose" / relative_stem(pairs[1]["target_image"]).with_suffix(".txt"))
    kp_out = kp_frame * np.array([48 / 210, 64 / 260])  # keypoints in pixels of the 64x48 output
    drawn = np.asarray(phoenix_pipeline.draw_target_pose(kp_out, 64, 48), dtype=np.int16)
    # independently: the renderer at the frame's own 260x210 (keypoints as in the file), then resized
    canvas = wholebody133.draw_pose(kp_frame, 260, 210, wholebody133.STICK_WIDTH)
    expected = np.asarray(Image.fromarray(canvas).resize((48, 64), Image.BICUBIC), dtype=np.int16)
    # the scaling round trip (260 -> 64 -> 260 px) can move a truncated pixel coordinate by one
    assert drawn.sum() > 0 and np.abs(drawn - expected).mean() < 1.0
    assert np.abs(drawn - np.asarray(WHOLEBODY133.stage2_pose(kp_frame, (64, 48), (260, 210)),
                                     dtype=np.int16)).mean() < 1.0
    # what a pipeline of the 18-point format draws of the same points is something else entirely
    openpose_render = FPDMPipeline.render_target_pose(_with_pose_format("openpose18"), kp_out[:18], 64, 48)
    openpose = np.asarray(resize(openpose_render, (64, 48)), dtype=np.int16)
    assert np.abs(openpose - expected).mean() > 3
    with pytest.raises(ValueError, match="pose_format='coco17'"):
        make_tiny_pipeline(Path(phoenix_root).parent / "sd2_other", pose_format="coco17")


def _with_pose_format(pose_format):
    """A stand-in ``self`` for FPDMPipeline.render_target_pose: only its config is read."""
    return SimpleNamespace(config=SimpleNamespace(pose_draw_size=(260, 210), pose_format=pose_format))


def test_c1_encodes_each_video_source_once_and_matches_per_frame_generation(phoenix_pipeline, phoenix_root, tmp_path):
    from src.evaluate import generate
    from src.evaluate.handoff import output_name

    pipe = phoenix_pipeline
    pairs = load_pairs(phoenix_root, "test_pairs_data.json")
    shuffled = pairs[1::2] + pairs[0::2]  # frames of the two videos interleaved: still one encoding each
    seen = []
    encoder_forward = pipe.source_encoder.forward
    pipe.source_encoder.forward = lambda x, *a, **k: (seen.append(x.shape[0]), encoder_forward(x, *a, **k))[1]
    try:
        counts = generate.generate_pairs(pipe, phoenix_root, shuffled, tmp_path, size=(64, 48), eval_size=(260, 210),
                                         draw_size=(260, 210), batch_size=3, num_inference_steps=2,
                                         dataset="phoenix", show_progress=False)
    finally:
        pipe.source_encoder.forward = encoder_forward
    videos = {p["source_image"] for p in pairs}
    assert len(videos) == 2 and len(pairs) >= 8
    assert sum(seen) == counts["sources_encoded"] == len(videos)
    assert counts["generated"] == len(pairs)
    # the same frame generated alone, its source encoded with it, is the same image
    for pair in (pairs[0], pairs[-1]):
        source, pose = generate.pair_inputs(phoenix_root, pair, (260, 210), dataset="phoenix")
        alone = pipe(source_image=source, target_pose=pose, num_inference_steps=2,
                     seeds=[generate.pair_seed(7, pair)], output_type="pil").images[0]
        written = Image.open(tmp_path / "64x48" / output_name(pair)).convert("RGB")
        diff = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(written, dtype=np.int16))
        assert diff.max() <= 1, output_name(pair)
