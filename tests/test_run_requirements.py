"""What a real run needs, said up front: the disk B1 and B2 will fill (checked before the first
step), the one-thread CPU processes of `accelerate launch`, the source encoder saved in the layout
every transformers version reads, and the 256x176 configuration."""

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from src.util.scripts import load_script
from test_init_pipeline import run_b2

ROOT = Path(__file__).resolve().parents[1]
CONFIG_256 = ROOT / "configs" / "deepfashion_256x176.py"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_b2(samples_root, out, *extra):
    return ["--preset=tiny", f"--dataset_root={samples_root}", f"--out_dir={out}", "--batch_size=1",
            "--validation_steps=0", "--validation_pairs=0", "--validation_loss_pairs=1", "--mixed_precision=no",
            *extra]


def small_disk(free: int):
    return lambda path: SimpleNamespace(total=10 * free, used=9 * free, free=free)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def one_thread_under_accelerate(monkeypatch):
    """What `accelerate launch` leaves a process on a machine without a GPU."""
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# disk


def test_b2_on_a_full_disk_stops_before_the_first_step_and_loses_nothing(samples_root, tmp_path, monkeypatch,
                                                                         capsys, one_thread_under_accelerate):
    out = tmp_path / "B2"
    run_b2(*tiny_b2(samples_root, out, "--max_steps=1"))
    first = capsys.readouterr().out
    line = next(s for s in first.splitlines() if s.startswith("disk: "))
    assert f"under {out}" in line and "the exported pipeline" in line
    before = snapshot(out)
    assert "checkpoints/checkpoint-1/model.safetensors" in before and "pipeline/model_index.json" in before

    monkeypatch.setattr(shutil, "disk_usage", small_disk(1000))
    with pytest.raises(SystemExit) as stop:
        run_b2(*tiny_b2(samples_root, out, "--max_steps=3", "--resume=latest"))
    message = str(stop.value.code)
    assert "\n" not in message and message.startswith(f"error: out_dir {out} has 1 kB free")
    assert "checkpoints_total_limit" in message
    assert snapshot(out) == before  # no step, no checkpoint, no config rewritten, nothing deleted
    # and the CPU-thread warning came first, in one line
    assert "--num_cpu_threads_per_process=8" in capsys.readouterr().out


def test_b1_on_a_full_disk_stops_before_the_first_step(samples_root, tmp_path, monkeypatch):
    out = tmp_path / "B1"
    monkeypatch.setattr(shutil, "disk_usage", small_disk(1000))
    b1, cfg = load_script("B1.train_Fusion_model.py", [
        "--preset=tiny", f"--dataset_root={samples_root}", f"--out_dir={out}", "--max_steps=1"])
    with pytest.raises(SystemExit, match=rf"^error: out_dir {out} has 1 kB free on its disk, this run needs "
                                         r".*the exported fusion model"):
        b1.main(cfg)
    assert not out.exists() or not [f for f in out.rglob("*") if f.is_file()]  # no config, metrics or checkpoint


def test_the_checkpoint_estimate_is_what_a_checkpoint_holds(tmp_path):
    from torch import nn

    from src.train import common as training

    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256))
    model[0].requires_grad_(False)  # frozen: in the weights, without AdamW moments
    accelerator = training.make_accelerator(tmp_path, mixed_precision="no", log_with=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(4, 64)).square().mean().backward()
    optimizer.step()
    estimate = training.checkpoint_size(model, [p for p in model.parameters() if p.requires_grad])
    saved = training.save_checkpoint(accelerator, tmp_path, training.TrainState(global_step=1))
    weights, moments = (saved / "model.safetensors").stat().st_size, (saved / "optimizer.bin").stat().st_size
    assert estimate.weights == pytest.approx(weights, rel=0.01)
    assert estimate.optimizer == pytest.approx(moments, rel=0.01)
    assert estimate.optimizer == 2 * (512 * 256 + 256) * 4


def test_disk_plan_counts_rotation_resume_and_the_export(tmp_path, monkeypatch):
    from src.train import common as training

    assert [training.planned_checkpoints(*a) for a in ((0, 10, 4), (4, 10, 4), (0, 8, 4), (8, 8, 4))] == [3, 2, 2, 0]
    size = training.CheckpointSize(weights=100, optimizer=200)
    seen = []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: seen.append(Path(p)) or small_disk(10_000)(p))
    out = tmp_path / "not" / "yet"
    plan = training.plan_disk(out, size, 50, 3, 5)
    assert seen == [tmp_path]  # the disk of the nearest folder that exists
    # 4 checkpoints while the newest is written before the oldest goes; 3 + the export at the end
    assert (plan.at_once, plan.kept, plan.needed) == (4, 3, 1200)
    assert training.plan_disk(out, size, 1000, 3, 5).needed == 3 * 300 + 1000
    assert training.plan_disk(out, size, 50, 0, 5).needed == 5 * 300 + 50  # no limit: all kept
    for step in (4, 8):  # a resumed run: its checkpoints are on the disk already
        folder = out / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / training.STATE_FILE).write_text('{"global_step": %d, "epoch": 0, "batch_in_epoch": 0}' % step)
        (folder / "weights").write_bytes(bytes(300 - len((folder / training.STATE_FILE).read_bytes())))
    plan = training.plan_disk(out, size, 50, 3, 2)
    assert (plan.at_once, plan.kept, plan.existing, plan.needed) == (4, 3, 600, 4 * 300 - 600)
    assert training.checkpoint_global_step(out / "checkpoints" / "checkpoint-8") == 8
    tight = training.plan_disk(out, size, 50, 3, 2)
    tight.free = tight.needed - 1
    with pytest.raises(SystemExit, match="^error: out_dir .* has 599 B free on its disk, this run needs 600 B "
                                         r"\(up to 4 checkpoints at once with checkpoints_total_limit=3"):
        tight.check()
    assert tight.line().startswith("disk: a checkpoint is 300 B (weights 100 B + AdamW 200 B)")
    assert training.format_bytes(10_441_779_696) == "10.4 GB" and training.format_bytes(999) == "999 B"


def test_the_paper_size_figures_of_the_readme():
    from bench.perf import random_pipeline
    from src.train.stage2 import describe_disk_footprint

    assert describe_disk_footprint(random_pipeline("full", "meta")) == (
        "a checkpoint is 10.4 GB (weights 3.48 GB + AdamW 6.96 GB); the exported pipeline 6.27 GB, 2.78 GB of it "
        "frozen (vae 335 MB, source_encoder 1.22 GB, fusion_model 1.23 GB); peak with checkpoints_total_limit=3: "
        "41.8 GB")


# ---------------------------------------------------------------------------------------------
# threads


def test_one_cpu_thread_under_accelerate_launch_is_said(monkeypatch, one_thread_under_accelerate):
    from src.util.devices import cpu_threads_note

    note = cpu_threads_note(1)
    assert note.startswith("warning: one CPU thread per process (OMP_NUM_THREADS=1")
    assert "--num_cpu_threads_per_process=8" in note and "\n" not in note
    assert "--num_cpu_threads_per_process=4" in cpu_threads_note(2)
    assert cpu_threads_note(8) is None  # one core each: nothing to gain
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    assert cpu_threads_note(1) is None  # not accelerate launch: the user's own choice
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    torch.set_num_threads(2)
    assert cpu_threads_note(1) is None


# ---------------------------------------------------------------------------------------------
# the source encoder's saved layout


def test_source_encoder_is_saved_in_the_checkpoint_layout_of_the_hub(tmp_path):
    """transformers 5 names DINOv2's attention q_proj, ...; the hub's checkpoints and transformers 4
    name it attention.attention.query, ...: the saved network must carry the latter."""
    from diffusers import ModelMixin
    from safetensors import safe_open
    from transformers import Dinov2Model

    from src.models.source_encoder import NETWORK_FOLDER, SourceEncoder

    encoder = SourceEncoder.tiny(image_size=40, model_image_size=32)
    encoder.save_pretrained(tmp_path / "source_encoder")
    network = tmp_path / "source_encoder" / NETWORK_FOLDER
    with safe_open(network / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "encoder.layer.0.attention.attention.query.weight" in keys
    assert "encoder.layer.1.attention.output.dense.bias" in keys
    assert not any("q_proj" in k or "o_proj" in k for k in keys)

    images = torch.rand(2, 3, 50, 40) * 2 - 1
    expected = encoder(images)
    assert torch.equal(SourceEncoder.from_pretrained(tmp_path / "source_encoder")(images), expected)
    pixels = torch.rand(1, 3, 32, 32)
    assert torch.equal(Dinov2Model.from_pretrained(network)(pixel_values=pixels).last_hidden_state,
                       encoder.model(pixel_values=pixels).last_hidden_state)
    # a folder saved before network/ existed (the module's own state dict) still loads
    ModelMixin.save_pretrained(encoder, tmp_path / "old")
    assert torch.equal(SourceEncoder.from_pretrained(tmp_path / "old")(images), expected)


OTHER_TRANSFORMERS = os.environ.get("FPDM_OTHER_TRANSFORMERS")  # a `pip install --target` folder


@pytest.mark.skipif(not OTHER_TRANSFORMERS, reason="FPDM_OTHER_TRANSFORMERS (another transformers) not set")
def test_another_transformers_version_reads_the_saved_source_encoder(tmp_path):
    import subprocess
    import sys

    from src.models.source_encoder import NETWORK_FOLDER, SourceEncoder

    encoder = SourceEncoder.tiny(image_size=32)
    encoder.save_pretrained(tmp_path / "source_encoder")
    pixels = torch.rand(1, 3, 32, 32)
    torch.save({"x": pixels, "y": encoder.model(pixel_values=pixels).last_hidden_state}, tmp_path / "ref.pt")
    code = ("import sys, torch, transformers; from transformers import Dinov2Model; "
            f"m = Dinov2Model.from_pretrained({str(tmp_path / 'source_encoder' / NETWORK_FOLDER)!r}); "
            f"r = torch.load({str(tmp_path / 'ref.pt')!r}); "
            "d = (m(pixel_values=r['x']).last_hidden_state - r['y']).abs().max().item(); "
            "print(transformers.__version__, d); sys.exit(d > 1e-5)")
    env = {**os.environ, "PYTHONPATH": OTHER_TRANSFORMERS}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# the 256x176 configuration


def b2_values(*argv) -> tuple[dict, object]:
    b2, cfg = load_script("B2.train_Diffusion_model.py", list(argv))
    return cfg, b2


def test_the_256x176_config_is_the_512x352_recipe_at_half_size():
    paper, b2_paper = b2_values(f"--config={ROOT / 'configs' / 'deepfashion_512x352.py'}")
    b2_paper.take_dataset_values(paper)
    cfg, b2 = b2_values(f"--config={CONFIG_256}")
    b2.take_dataset_values(cfg)
    assert cfg["target_size"] == (256, 176) and cfg["source_size"] == 256
    assert paper["target_size"] == (512, 352) and paper["pose_draw_size"] == (550, 375)
    assert [2 * s for s in cfg["target_size"]] == list(paper["target_size"])
    assert cfg["source_size"] * 2 == paper["source_size"]
    for c in (paper, cfg):  # the source at half and at full resolution, never above the encoder's input
        assert max(c["source_scales"]) == c["source_size"] and min(c["source_scales"]) == c["source_size"] // 2
    assert cfg["pose_draw_size"] == paper["pose_draw_size"] and cfg["fusion_size"] == paper["fusion_size"]
    assert (cfg["jitter_sigma"], cfg["flip_prob"]) == (paper["jitter_sigma"], paper["flip_prob"]) == (1.0, 0.5)
    b2.check_source_scales()
    # under tiny, the setting's sizes win over tiny's: tiny models at the setting's size
    tiny, b2_tiny = b2_values("--preset=tiny", f"--config={CONFIG_256}")
    b2_tiny.take_dataset_values(tiny)
    assert (tiny["target_size"], tiny["pose_draw_size"], tiny["pretrained_model"]) == ((256, 176), (550, 375), "tiny")


def test_b2_refuses_source_scales_above_the_source_size(samples_root, tmp_path):
    out = tmp_path / "B2"
    with pytest.raises(SystemExit) as stop:
        run_b2(*tiny_b2(samples_root, out, "--source_size=32", "--source_scales=(32, 64)"))
    assert str(stop.value.code) == (
        "config error: source_scales=(32, 64) has [64] above source_size=32: the source is squashed to a scale "
        "and then to source_size, so use scales up to source_size, e.g. --source_scales=(16, 32)")
    assert not out.exists()


def test_a_tiny_b2_run_with_the_256x176_config(samples_root, tmp_path):
    import json

    out = tmp_path / "B2"
    run_b2(*tiny_b2(samples_root, out, "--max_steps=1"), f"--config={CONFIG_256}")
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert (index["height"], index["width"], index["source_size"]) == (256, 176, 256)
    assert index["pose_draw_size"] == [550, 375]
    saved = json.loads((out / "B2_config.json").read_text())
    assert saved["source_scales"] == [128, 256]
