"""Stage 1: CLIP encoders, combiner, loss, retrieval metrics, save/load, missing weights."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.models.clip_encoder import (
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_encoder, clip_resize, load_encoder, tiny_encoder_config,
)
from src.models.fusion import Combiner, FusionModel
from src.train.stage1 import embed_dataset, fusion_logits, fusion_loss, retrieval_metrics, retrieval_ranks
from src.util.scripts import run_script
from src.util.weights import WeightsNotFoundError, exit_on_missing_weights

BACKENDS = ("transformers", "open_clip")


def images(n, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------
# combiner


def test_combiner_shapes_unit_norm_and_lambda():
    torch.manual_seed(0)
    comb = Combiner(embed_dim=16, projection_dim=8, hidden_dim=12, dropout=0.5)
    s, p = F.normalize(torch.randn(5, 16), dim=-1), F.normalize(torch.randn(5, 16), dim=-1)
    for mode in (comb.train, comb.eval):
        mode()
        f, lam = comb(s, p, return_lambda=True)
        assert f.shape == (5, 16) and lam.shape == (5,)
        assert torch.allclose(f.norm(dim=-1), torch.ones(5), atol=1e-6)
        assert ((lam > 0) & (lam < 1)).all()
    comb.eval()
    assert torch.equal(comb(s, p), comb(s, p))  # no dropout in eval mode
    comb.train()
    assert not torch.equal(comb(s, p), comb(s, p))  # dropout active in training


def test_combiner_matches_the_spec_formula():
    torch.manual_seed(1)
    comb = Combiner(embed_dim=6, projection_dim=4, hidden_dim=5, dropout=0.5).eval()
    s, p = torch.randn(3, 6), torch.randn(3, 6)
    ps = torch.relu(comb.source_projection(s))
    pp = torch.relu(comb.pose_projection(p))
    c = torch.cat([pp, ps], dim=-1)
    h = torch.relu(comb.combiner_layer(c))
    mlp = comb.dynamic_scalar
    lam = torch.sigmoid(mlp[3](torch.relu(mlp[0](c))))
    expected = F.normalize(comb.output_layer(h) + lam * p + (1 - lam) * s, dim=-1)
    assert torch.allclose(comb(s, p), expected, atol=1e-6)
    # parameter shapes: Ls, Lp: D->P; Lc: 2P->H; Lo: H->D; MLP: 2P->H->1
    assert comb.source_projection.weight.shape == (4, 6)
    assert comb.pose_projection.weight.shape == (4, 6)
    assert comb.combiner_layer.weight.shape == (5, 8)
    assert comb.output_layer.weight.shape == (6, 5)
    assert mlp[0].weight.shape == (5, 8) and mlp[3].weight.shape == (1, 5)
    assert [m.p for m in comb.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 4


def test_default_combiner_has_paper_sizes():
    comb = Combiner()
    assert comb.source_projection.weight.shape == (768, 768)
    assert comb.combiner_layer.weight.shape == (768, 1536)
    assert comb.output_layer.weight.shape == (768, 768)


# ---------------------------------------------------------------------------------------------
# loss and metrics


def test_loss_equals_hand_computation():
    # raw (not unit-norm) CLIP embeddings t and s, unit-norm f, as the combiner gives them
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    s = torch.tensor([[1.0, 3.0, 0.0], [0.0, 1.0, 1.0]])
    f = F.normalize(torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, -1.5]]), dim=-1)
    temp = 0.07

    def cos(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    rows = [t[0], t[1], s[0], s[1]]       # targets extended with the sources
    cands = [f[0], f[1], s[0], s[1]]      # candidates: fusion embeddings, then sources
    total = 0.0
    for i, r in enumerate(rows):
        logits = [cos(r, c) / temp for c in cands]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    infonce = total / 4
    # the authors' L1: extended sources [s; s] (raw) against the candidates [f; s]
    l1 = (float((s - f).abs().sum()) + 0.0) / (2 * f.numel())
    loss, stats = fusion_loss(t, s, f)
    assert loss.item() == pytest.approx(infonce + 1e-4 * l1, rel=1e-6)
    assert stats["infonce"].item() == pytest.approx(infonce, rel=1e-5)
    assert stats["l1"].item() == pytest.approx(l1, rel=1e-6)
    # target 0 is closer to f0 than to f1, s0, s1; target 1 is closer to s0/s1 than to f1
    assert stats["top1"].item() == 0.5
    assert fusion_logits(t, s, f).shape == (4, 4)


def test_combiner_gets_the_raw_clip_embeddings():
    torch.manual_seed(0)
    model = FusionModel.tiny().eval()
    src, pose = images(2), images(2, seed=1)
    raw = model.encoder(torch.cat([src, pose])).float()
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4), atol=1e-3)  # the test needs raw != unit norm
    expected = model.combiner(raw[:2], raw[2:])
    assert torch.allclose(model.fuse(src, pose), expected, atol=1e-5)
    out = model(src, pose, images(2, seed=2))
    assert torch.allclose(out["source"], raw[:2], atol=1e-5) and torch.allclose(out["pose"], raw[2:], atol=1e-5)


def test_loss_rewards_fusion_near_its_target_and_away_from_sources():
    torch.manual_seed(0)
    t = F.normalize(torch.randn(6, 8), dim=-1)
    s = F.normalize(torch.randn(6, 8), dim=-1)
    good, _ = fusion_loss(t, s, t.clone())
    shuffled, _ = fusion_loss(t, s, t[torch.tensor([1, 2, 3, 4, 5, 0])])
    copies_source, _ = fusion_loss(t, s, s.clone())
    assert good < shuffled and good < copies_source


def test_retrieval_metrics_ranks_and_ties():
    t = torch.eye(4)
    f = torch.tensor([[1.0, 0, 0, 0],          # target 0: own f0 is the best match -> rank 1
                      [0.9, 0.1, 0, 0],        # target 1: own f1 (cos .11) is beaten by f3 -> rank 2
                      [0, 0, 1.0, 0],          # target 2: rank 1
                      [0, 1.0, 0, 0]])         # target 3: every cosine is 0, all tie -> rank 4
    ranks = retrieval_ranks(t, f)
    assert ranks.tolist() == [1, 2, 1, 4]
    m = retrieval_metrics(t, f)
    assert m["top1"] == 0.5 and m["top5"] == 1.0 and m["mean_rank"] == 2.0 and m["count"] == 4
    # identical fusion embeddings are ties: they count against the positive (no free top-1)
    same = retrieval_metrics(t, torch.ones(4, 4))
    assert same["top1"] == 0.0 and same["mean_rank"] == 4.0


# ---------------------------------------------------------------------------------------------
# encoders


def test_clip_resize_any_size_centre_crop():
    x = images(2, 90, 60)
    y = clip_resize(x, 32)
    assert y.shape == (2, 3, 32, 32)
    assert clip_resize(images(1, 32, 32), 32).shape == (1, 3, 32, 32)
    # a left/right split image stays split after the crop of the tall image
    half = torch.cat([-torch.ones(1, 3, 90, 30), torch.ones(1, 3, 90, 30)], dim=3)
    z = clip_resize(half, 30)
    assert z[..., :, :10].mean() < -0.9 and z[..., :, -10:].mean() > 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_encoder_interface(backend):
    torch.manual_seed(0)
    enc = build_encoder(tiny_encoder_config(backend)).eval()
    assert enc.backend == backend and enc.image_size == 64 and enc.embed_dim == 32 and enc.width == 32
    x = images(3, 100, 70)
    with torch.no_grad():
        emb = enc(x)
        tokens = enc.tokens(x)
        patches = enc.patch_tokens(x)
    assert emb.shape == (3, 32)
    assert tokens.shape == (3, 1 + 16, 32) and patches.shape == (3, 16, 32)
    assert torch.equal(patches, tokens[:, 1:])
    # the projected embedding is the projection of the class token
    with torch.no_grad():
        if backend == "transformers":
            m = enc.model
            proj = m.visual_projection(m.vision_model.post_layernorm(tokens[:, 0]))
        else:
            proj = tokens[:, 0] @ enc.visual.proj
    assert torch.allclose(proj, emb, atol=1e-5)
    # CLIP normalisation: a mid-grey image (0 in [-1, 1]) becomes (0.5 - mean) / std
    pix = enc.preprocess(torch.zeros(1, 3, 80, 80))
    expected = (0.5 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert pix.shape == (1, 3, 64, 64)
    assert torch.allclose(pix[0, :, 5, 5], expected, atol=1e-5)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        enc(torch.zeros(3, 64, 64))


# ---------------------------------------------------------------------------------------------
# fusion model


@pytest.mark.parametrize("backend", BACKENDS)
def test_fusion_model_embeddings(backend):
    torch.manual_seed(0)
    model = FusionModel.tiny(backend).eval()
    s, p, t = images(4, seed=1), images(4, seed=2), images(4, seed=3)
    with torch.no_grad():
        out = model(s, p, t)
        f = model.fuse(s, p)
        e = model.encode(t)
    assert set(out) == {"source", "pose", "fusion", "target"}
    for v in out.values():
        assert v.shape == (4, 32)
    assert torch.allclose(out["fusion"].norm(dim=-1), torch.ones(4), atol=1e-5)  # only f is normalised
    assert torch.allclose(out["fusion"], f, atol=1e-5)
    assert torch.allclose(out["target"], e, atol=1e-5)
    assert set(model(s, p)) == {"source", "pose", "fusion"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fuse_in_half_precision_matches_fp32(dtype):
    torch.manual_seed(0)
    model = FusionModel.tiny().eval()
    src, pose = images(2, seed=1), images(2, seed=2)
    ref = model.fuse(src, pose)
    half = model.to(dtype).fuse(src.to(dtype), pose.to(dtype))
    assert half.dtype == dtype
    assert torch.allclose(half.float(), ref, atol=2e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_pretrained_round_trip_identical(backend, tmp_path):
    torch.manual_seed(0)
    model = FusionModel.tiny(backend).eval()
    with torch.no_grad():  # move the weights away from their initialisation
        for prm in model.parameters():
            prm.add_(0.01 * torch.randn_like(prm))
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()
    assert list((tmp_path / "m").glob("*.safetensors"))
    torch.manual_seed(123)  # a different random init must be fully overwritten
    loaded = FusionModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.encoder_config["backend"] == backend
    s, p, t = images(3, 90, 70, seed=4), images(3, seed=5), images(3, seed=6)
    with torch.no_grad():
        a, b = model(s, p, t), loaded(s, p, t)
    for k in a:  # weights equal bit for bit (below); memory-mapped tensors may take another CPU kernel path
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_embed_dataset_orders_by_index():
    torch.manual_seed(0)
    model = FusionModel.tiny("transformers")
    s, p, t = images(5, seed=1), images(5, seed=2), images(5, seed=3)
    order = [3, 0, 4, 1, 2]
    batches = [{"source": s[order[i:i + 2]], "pose": p[order[i:i + 2]], "target": t[order[i:i + 2]],
                "index": torch.tensor(order[i:i + 2])} for i in range(0, 5, 2)]
    emb = embed_dataset(model, batches)
    assert emb["index"].tolist() == [0, 1, 2, 3, 4]
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        direct = model(s, p, t)
    assert torch.allclose(emb["fusion"], direct["fusion"], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# real weights: local copies load, missing ones give one clear message


def test_from_clip_local_transformers_folder(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = tiny_encoder_config("transformers")["clip_config"]
    torch.manual_seed(0)
    hf = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    hf.save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    model = FusionModel.from_clip(str(tmp_path / "clip"), backend="transformers", projection_dim=16,
                                  hidden_dim=24).eval()
    assert model.config.encoder_config["image_mean"] == [0.5, 0.5, 0.5]
    assert model.combiner.combiner_layer.weight.shape == (24, 32)
    sd = hf.state_dict()
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the saved fusion model reloads without the original folder
    model.save_pretrained(tmp_path / "fusion")
    (tmp_path / "clip" / "model.safetensors").unlink()
    loaded = FusionModel.from_pretrained(tmp_path / "fusion").eval()
    x = images(2, seed=9)
    with torch.no_grad():
        assert torch.equal(model.fuse(x, x), loaded.fuse(x, x))
    assert torch.allclose(loaded.encoder.preprocess(torch.ones(1, 3, 64, 64)), torch.full((1, 3, 64, 64), 2.0))


def test_missing_transformers_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as e:
        FusionModel.from_clip("openai/clip-vit-large-patch14", backend="transformers")
    msg = str(e.value)
    assert "weights not found: 'openai/clip-vit-large-patch14'" in msg
    assert "hf download openai/clip-vit-large-patch14 --local-dir" in msg
    # the library names no option; the script that catches the error adds its own
    assert msg.endswith("then pass the local copy: weights/clip-vit-large-patch14") and "--encoder" not in msg
    e.value.option = "encoder"
    assert str(e.value).endswith("then pass the local copy: --encoder=weights/clip-vit-large-patch14")


def test_missing_transformers_folder(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        FusionModel.from_clip(str(tmp_path / "nope"), backend="transformers")
    msg = str(e.value)
    assert "does not exist" in msg and "hf download openai/clip-vit-large-patch14" in msg


def test_empty_transformers_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="weights not found"):
        load_encoder(str(tmp_path / "empty"), backend="transformers")


def test_missing_open_clip_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as e:
        FusionModel.from_clip("ViT-L-14", backend="open_clip", pretrained="openai")
    msg = str(e.value)
    assert "OpenCLIP ViT-L-14" in msg and "hf download timm/vit_large_patch14_clip_224.openai" in msg
    assert e.value.weights == "open_clip" and "--pretrained" not in msg
    with pytest.raises(WeightsNotFoundError, match="not a checkpoint file nor a known tag"):
        FusionModel.from_clip("ViT-L-14", backend="open_clip", pretrained=str(tmp_path / "x.bin"))


def test_exit_on_missing_weights_is_a_clean_exit(capsys):
    with pytest.raises(SystemExit) as e:
        with exit_on_missing_weights():
            load_encoder("/definitely/not/here", backend="transformers")
    assert e.value.code == 1
    assert "weights not found" in capsys.readouterr().err


def test_open_clip_local_checkpoint_file(tmp_path):
    import open_clip

    torch.manual_seed(0)
    full = open_clip.create_model("ViT-S-32-alt")
    torch.save(full.state_dict(), tmp_path / "ckpt.pt")
    enc = load_encoder("ViT-S-32-alt", backend="open_clip", pretrained=str(tmp_path / "ckpt.pt")).eval()
    for k, v in full.visual.state_dict().items():
        assert torch.equal(v, enc.visual.state_dict()[k]), k
    rebuilt = build_encoder(enc.config).eval()
    rebuilt.load_state_dict(enc.state_dict())
    x = images(2, 100, 100)
    with torch.no_grad():
        assert torch.equal(enc(x), rebuilt(x))


# ---------------------------------------------------------------------------------------------
# B1.train_Fusion_model.py


ROOT = Path(__file__).resolve().parents[1]
B1 = ROOT / "B1.train_Fusion_model.py"


def b1_args(samples_root, out_dir, *extra):
    return ["--preset=tiny", f"--dataset_root={samples_root}", "--train_pairs=test_pairs_data.json",
            "--val_pairs=test_pairs_data.json", f"--out_dir={out_dir}", *extra]


def b1_env():
    """B1 in a subprocess with this process's torch threads: its float sums are then those of the
    runs made in this process (run_b1), to the bit."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


def run_b1(samples_root, out_dir, *extra):
    return run_script(B1.name, *b1_args(samples_root, out_dir, *extra), capture=True)


def safetensors_weights(folder):
    from safetensors.torch import load_file

    return load_file(next(Path(folder).glob("*.safetensors")))


def test_b1_tiny_learns_the_sample_pairs(samples_root, tmp_path):
    start = time.time()
    r = run_b1(samples_root, tmp_path / "run")
    elapsed = time.time() - start
    assert r.returncode == 0, r.stderr[-3000:]
    assert elapsed < 180
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["top1"] == 1.0 and metrics["train"]["mean_rank"] == 1.0
    assert metrics["initial"]["train"]["top1"] < 0.7  # clearly below before training
    assert metrics["train"]["loss"] < metrics["initial"]["train"]["loss"]
    assert set(metrics["val"]) >= {"top1", "top5", "mean_rank", "loss"}
    assert metrics["step"] == 60 and metrics["replicas_in_sync"]
    # the exported model reloads offline and embeds unit-norm fusion vectors
    model = FusionModel.from_pretrained(tmp_path / "run" / "fusion_model").eval()
    with torch.no_grad():
        f = model.fuse(images(2, 224, 224), images(2, 224, 224, seed=1))
    assert f.shape == (2, 32) and torch.allclose(f.norm(dim=-1), torch.ones(2), atol=1e-5)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-50", "checkpoint-60"]  # every 10 steps, the last 2 kept
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "run" / "B1_config.json").read_text())["preset"] == "tiny"


def test_b1_sigterm_then_resume_equals_uninterrupted_run(samples_root, tmp_path):
    extra = ("--epochs=30", "--checkpointing_steps=2", "--checkpoints_total_limit=3")
    full = run_b1(samples_root, tmp_path / "full", *extra)
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(B1), *b1_args(samples_root, out, *extra)], cwd=ROOT,
                            env=b1_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "checkpoint-2").is_dir():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    assert "SIGTERM received" in log and "--resume=latest" in log
    assert not (out / "metrics.json").exists() and not (out / "fusion_model").exists()
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-")]
    assert 2 <= max(steps) < 30

    resumed = run_b1(samples_root, out, *extra, "--resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {out / 'checkpoints' / f'checkpoint-{max(steps)}'}" in resumed.stdout
    a, b = safetensors_weights(tmp_path / "full" / "fusion_model"), safetensors_weights(out / "fusion_model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = json.loads((tmp_path / "full" / "metrics.json").read_text())
    mb = json.loads((out / "metrics.json").read_text())
    assert ma["train"] == mb["train"] and ma["val"] == mb["val"] and ma["initial"] == mb["initial"]


def test_b1_missing_encoder_weights_is_one_clear_message(samples_root, tmp_path):
    r = run_b1(samples_root, tmp_path / "run", "--encoder=weights/not-downloaded-clip")
    assert r.returncode == 1
    assert "weights not found: 'weights/not-downloaded-clip'" in r.stderr
    assert "hf download openai/clip-vit-large-patch14" in r.stderr
    assert "then pass the local copy: --encoder=" in r.stderr  # B1 names its own option
    assert "Traceback" not in r.stderr


def test_b1_bad_dataset_lists_problems(tmp_path):
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "test_pairs_data.json").write_text("[{\"source_image\": \"./img/a.jpg\", \"target_image\": \"./img/b.jpg\"}]")
    r = run_b1(bad, tmp_path / "run")
    assert r.returncode == 1
    assert "dataset check failed" in r.stderr and "a.jpg: image missing" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_b1_two_processes_keep_identical_weights(samples_root, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(B1),
                        *b1_args(samples_root, out, "--epochs=4", "--checkpointing_steps=2")],
                       cwd=ROOT, env=b1_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["replicas_in_sync"] is True
    assert metrics["step"] == 4 and metrics["val"]["count"] == 5  # evaluation gathered, no duplicates
    ckpt = out / "checkpoints" / "checkpoint-4"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()


def test_b1_nan_loss_stops_with_a_clear_message(samples_root, tmp_path):
    r = run_b1(samples_root, tmp_path / "run", "--lr=1e30", "--epochs=20")
    assert r.returncode == 1
    assert "error: loss is nan at step" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_full_clip_checkpoint_loads_its_vision_tower_with_one_line_about_the_text_tower(tmp_path, capsys):
    from transformers import CLIPConfig, CLIPModel

    from src.models.clip_encoder import load_encoder

    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=8)
    full = CLIPModel(CLIPConfig(text_config=small, vision_config=dict(small, image_size=32, patch_size=16),
                                projection_dim=8))
    full.save_pretrained(tmp_path / "clip")
    encoder = load_encoder(str(tmp_path / "clip"))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "text" in line or "UNEXPECTED" in line]
    assert lines == [f"{tmp_path / 'clip'}: 22 tensors of the checkpoint are not used by the image encoder "
                     "(logit_scale, text_model, text_projection: the text tower of a full CLIP model)"]
    vision = full.vision_model.state_dict()
    assert all(torch.equal(v, encoder.model.vision_model.state_dict()[k]) for k, v in vision.items())
