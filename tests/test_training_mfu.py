"""B2's MFU (src.train.flops): the FLOPs per image are the benchmark's training step, counted on a
meta copy that leaves the pipeline and the RNG alone; none without a known peak (the CPU); B2 logs
it beside images/s when there is one."""

import importlib.util
from pathlib import Path

import pytest
import torch

from src.train import flops
from src.train.stage2 import make_tiny_pipeline
from src.util.devices import peak_bf16_flops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("mfu") / "sd2", height=64, width=48, source_size=64,
                              fusion_size=64)


def test_flops_per_image_are_the_benchmarks_train_step_and_touch_nothing(pipe):
    from bench import perf

    rng = torch.get_rng_state()
    alphas = pipe.scheduler.alphas_cumprod
    per_image = flops.train_flops_per_image(pipe)
    assert torch.equal(torch.get_rng_state(), rng)
    assert pipe.scheduler.alphas_cumprod is alphas and alphas.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in pipe.unet.parameters())
    bench = perf.flop_accounting("tiny", 64, 48, source_size=64, fusion_size=64)["train"]["train_step"]
    assert per_image == pytest.approx(bench) and per_image > 0


def test_no_mfu_without_a_known_peak(pipe):
    assert peak_bf16_flops("CPU (x86_64)")[0] is None
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == (989e12, "table: H100")
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
    mfu = flops.training_mfu(pipe, "cpu")
    assert mfu.of(100.0) is None and mfu.flops_per_image is None
    assert mfu.note.startswith("MFU: not logged (no dense bf16 peak known for CPU")


def test_b2_logs_mfu_beside_images_per_s(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState, GradientState
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.synthetic.figures import make_synthetic_dataset

    peak = 1e9
    monkeypatch.setattr(flops, "peak_bf16_flops", lambda name: (peak, "table: test"))
    root = tmp_path / "data"
    make_synthetic_dataset(root, n_identities=2, poses_per_identity=2, test_identities=1, width=48, height=64)
    spec = importlib.util.spec_from_file_location("b2_script", ROOT / "B2.train_Diffusion_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "B2"
    try:
        script.cli(["--preset=tiny", f"--dataset_root={root}", f"--out_dir={out}", "--target_size=(64, 48)",
                    "--max_steps=2", "--log_every=1", "--batch_size=2", "--validation_steps=0",
                    "--validation_pairs=0", "--validation_loss_pairs=1", "--checkpointing_steps=100"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    scalars = {}
    for events in (out / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in set(acc.Tags()["scalars"]) & {"mfu", "images_per_s"}:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    per_image = flops.train_flops_per_image(make_tiny_pipeline(tmp_path / "sd2", height=64, width=48,
                                                               source_size=64, fusion_size=64))
    assert scalars["mfu"].keys() == scalars["images_per_s"].keys() == {1, 2}
    for step, rate in scalars["images_per_s"].items():
        assert scalars["mfu"][step] == pytest.approx(per_image * rate / peak, rel=1e-5)
