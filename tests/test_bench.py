"""bench/flops.py, bench/gpu_benchmark.py and bench/rehearsal.py on the CPU: FLOP counts against
analytic ones, the tiny accounting, the GPU benchmark's smoke path (summary keys, MFU, errors,
time budget), and the rehearsal's measurements and its tiny run of the five scripts."""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from bench import perf
from src.util import scripts

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ["device", "torch", "train_images_per_s", "train_mfu", "baseline_train_images_per_s",
            "sample_s_per_image", "baseline_sample_s_per_image"]


def load_bench(name: str, argv: list[str]):
    """A bench script as a module, its header configured from ``argv`` (as on the command line)."""
    module, module.cfg = scripts.load_script(f"bench/{name}.py", argv)
    return module


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_flop_counts_are_the_analytic_ones():
    batch, n_in, n_out = 5, 64, 32
    linear = torch.nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in)
    forward, y = perf.count_flops(linear, x)
    assert forward == 2 * batch * n_in * n_out
    backward, _ = perf.count_flops(y.sum().backward)
    assert backward == forward  # the weight's gradient only: the input needs none
    x.requires_grad_(True)
    backward, _ = perf.count_flops(linear(x).sum().backward)
    assert backward == 2 * forward  # the weight's and the input's gradients
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, device="meta")
    flops, _ = perf.count_flops(conv, torch.empty(2, 3, 16, 12, device="meta"))
    assert flops == 2 * 2 * 8 * 16 * 12 * 3 * 3 * 3


def test_full_size_models_build_on_meta_with_the_real_parameter_counts():
    pipe = perf.random_pipeline("full", "meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert next(pipe.unet.parameters()).is_meta
    assert count(pipe.unet) == 865_910_724  # SD2 UNet; its identity class embedding has no weights
    assert count(pipe.fusion_mlp) == 768 * 768 + 768 + 768 * 1280 + 1280  # 768 -> 768 -> 1280
    assert count(pipe.vae) == 83_653_863
    assert count(pipe.source_encoder) == 304_368_640  # DINOv2-large
    assert pipe.source_encoder.num_tokens() == 1297 and pipe.fusion_model.embed_dim == 768  # source at 512 px
    assert not any(p.requires_grad for p in pipe.fusion_model.parameters())


def test_flops_tiny_preset_accounts_every_component(tmp_path):
    out = tmp_path / "flops.json"
    module = load_bench("flops", ["--preset=tiny", f"--out={out}"])
    report = module.main()
    assert json.loads(out.read_text())["sizes"].keys() == report["sizes"].keys() == {"64x48"}
    r = report["sizes"]["64x48"]
    train, sample = r["train"], r["sample"]
    for key in ("vae_encode", "source_encoder", "fusion_model", "pose_encoder_source_mlp_forward", "unet_forward",
                "unet_backward", "pose_encoder_source_mlp_backward"):
        assert train[key] > 0, key
    assert train["train_step"] > train["forward"] > train["unet_forward"]
    assert train["train_step"] == pytest.approx(train["one_pass_train_step"])  # nothing counted twice or missed
    assert train["train_step_precomputed"] == pytest.approx(
        train["train_step"] - train["vae_encode"] - train["source_encoder"] - train["fusion_model"])
    assert train["unet_backward"] == pytest.approx(2 * train["unet_forward"], rel=0.1)
    # one sampling step = one UNet call on the two guidance branches (three with a separate fusion scale)
    assert sample["unet_step_2_branches"] == pytest.approx(2 * train["unet_forward"])
    assert sample["unet_step_3_branches"] == pytest.approx(3 * train["unet_forward"])
    assert sample["per_image"] == pytest.approx(20 * sample["unet_step_2_branches"] + sample["once"])
    assert sample["vae_decode"] > 0


def test_cross_frame_attention_flops_are_the_added_keys_and_values(monkeypatch):
    """The counted cost of C1's cross-frame attention equals the arithmetic of attending over twice
    the tokens in every self-attention layer: K and V projections of N more tokens (4 N C D per
    item) and N more keys in QK^T and AV (4 N^2 D), per item of both guidance branches."""
    pipe = perf.random_pipeline("tiny", torch.device("meta"), height=64, width=48, source_size=64, fusion_size=64)
    layers = {}

    def record(name):
        def hook(module, args):   # (tokens N, channels C, inner dim D) of the layer; the input unchanged
            layers.setdefault(name, (*args[0].shape[1:], module.to_k.out_features))
        return hook

    for name, module in pipe.unet.named_modules():
        if name.endswith("attn1"):
            module.register_forward_pre_hook(record(name))
    monkeypatch.setattr(perf, "random_pipeline", lambda *args, **kwargs: pipe)
    sample = perf.flop_accounting("tiny", 64, 48, source_size=64, fusion_size=64, batch=2)["sample"]
    assert layers
    added = sum(2 * (4 * n * c * d + 4 * n * n * d) for n, c, d in layers.values())   # 2 branches per image
    assert sample["unet_step_2_branches_cross_frame"] - sample["unet_step_2_branches"] == pytest.approx(added)


def test_peak_table_and_mfu():
    assert perf.peak_flops("NVIDIA H100 80GB HBM3") == (989e12, "table: H100")
    assert perf.peak_flops("NVIDIA H200")[0] == 989e12
    assert perf.peak_flops("NVIDIA H100 PCIe")[0] < 989e12
    assert perf.peak_flops("NVIDIA H100 80GB HBM3", override=5e14) == (5e14, "override")
    assert perf.peak_flops("CPU (x86_64)")[0] is None
    assert perf.mfu(2e12, 100.0, 989e12) == pytest.approx(2e14 / 989e12)
    assert perf.mfu(2e12, 100.0, None) is None
    assert perf.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_gpu_benchmark_cpu_smoke_writes_the_summary(tmp_path, monkeypatch, keep_threads):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    argv = ["--preset=cpu_smoke", f"--results_dir={tmp_path / 'results'}", "--train_batch_sizes=[1]",
            "--ablation_batch_size=1", "--switches=['sdpa','compile']", "--compile_backend=no_such_backend",
            "--sample_batch_sizes=[1]", "--sample_batch_size=1", "--num_inference_steps=1", "--c2_images=0",
            "--peak_flops=1e12"]
    module = load_bench("gpu_benchmark", argv)
    results = module.main()
    stem = perf.slug(perf.device_name("cpu")) + "-tiny"
    written = [tmp_path / "results" / f"{stem}.json", tmp_path / "out" / f"{stem}.json"]
    for path in written:
        data = json.loads(path.read_text())
        assert all(k in data for k in REQUIRED)
        assert path.with_suffix(".md").read_text().startswith("| device |")
    sweep = results["sweep"]
    assert results["device"] == data["device"] and results["torch"] == torch.__version__
    assert results["train_images_per_s"] > 0 and results["baseline_train_images_per_s"] > 0
    assert results["sample_s_per_image"] > 0 and results["baseline_sample_s_per_image"] > 0
    best = sweep[results["train_best"]]
    assert results["train_mfu"] == pytest.approx(best["flops_per_image"] * best["images_per_s"] / 1e12)
    assert best["flops_per_image"] == results["flops_per_image"]["train"]["train_step"]
    assert sweep["train_precomputed_b1"]["flops_per_image"] < best["flops_per_image"]
    assert sweep["train_baseline_b1"]["settings"] == {**sweep["train_baseline_b1"]["settings"], **perf.BASELINE_TRAIN}
    assert math.isfinite(results["psnr_fp32_vs_fast"]) and results["psnr_fp32_vs_fast"] > 20
    # a configuration that fails (here: an unknown compile backend) is recorded, the sweep goes on
    assert "error" in sweep["train_compile_on_b1"] and "sample_best_b1" in sweep
    assert "error" not in sweep["train_sdpa_off_b1"] and "error" not in sweep["sample_baseline_b1"]

    # resume keeps what was measured; past the time budget the rest is recorded as skipped
    module = load_bench("gpu_benchmark", argv + ["--resume=True", "--time_budget_s=0.0"])
    again = module.main()
    assert again["sweep"]["train_default_b1"] == sweep["train_default_b1"]
    assert "skipped" in again["sweep"]["train_compile_on_b1"]
    assert again["train_images_per_s"] == results["train_images_per_s"]


def test_cpu_results_never_go_to_bench_results(keep_threads):
    module = load_bench("gpu_benchmark", ["--preset=cpu_smoke", f"--results_dir={ROOT / 'bench' / 'results'}"])
    with pytest.raises(SystemExit, match="GPU results"):
        module.main()
    module = load_bench("gpu_benchmark", ["--device=cpu"])
    with pytest.raises(SystemExit, match="CUDA GPU"):
        module.main()


def test_rehearsal_stage_times_progress_bars_and_measures_peak_memory(tmp_path):
    from bench import rehearsal

    child = ("import sys, time\n"
             "block = bytearray(300 * 2**20)\n"
             "for n, pause in enumerate((0.2, 0.6, 1.0)):\n"
             "    sys.stderr.write(f'\\rB2: {50 * n}%|##| {n}/2 [00:00<00:00]'); sys.stderr.flush(); time.sleep(pause)\n"
             "print('done')\n")
    result = rehearsal.run_stage("B2 test", [sys.executable, "-c", child], tmp_path / "log.txt", dict(os.environ))
    assert result["returncode"] == 0 and result["peak_rss_gib"] >= 300 / 1024
    # each count is timed when its line starts (0.2 s, 0.6 s), not when the next line ends it (0.6 s, 1.0 s)
    assert result["bars"]["B2"]["counts"] == [0, 1, 2]
    assert result["step_seconds"] == [pytest.approx(0.2, abs=0.15), pytest.approx(0.6, abs=0.15)]
    with pytest.raises(rehearsal.StageFailed):
        rehearsal.check(rehearsal.run_stage("fails", [sys.executable, "-c", "print('last words'); raise SystemExit(3)"],
                                            tmp_path / "fail.txt", dict(os.environ)))
    assert rehearsal.log_tail(tmp_path / "fail.txt").endswith("last words")


@pytest.mark.slow
def test_rehearsal_runs_the_five_scripts_at_tiny_size(tmp_path, capsys):
    from bench import rehearsal

    out, work = tmp_path / "rehearsal.json", tmp_path / "work"
    report = rehearsal.main(["--size=tiny", f"--work_dir={work}", "--data=synthetic", f"--out={out}"])
    assert json.loads(out.read_text()) == report and report["status"] == "ok"
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["hub folders", "synthetic data", "A1", "B1", "B2 64x48", "C1 64x48", "C2 64x48"]
    assert all(s["seconds"] > 0 and s["peak_rss_gib"] > 0.1 and s["returncode"] == 0 for s in stages.values())
    assert len(stages["B1"]["step_seconds"]) == len(stages["B2 64x48"]["step_seconds"]) == 2
    assert stages["C1 64x48"]["seconds_per_image"] > 0
    assert stages["B2 64x48"]["checkpoint_gib"] > 0 and stages["B2 64x48"]["pipeline_gib"] > 0
    assert "256x176" in stages["C2 64x48"]["metrics"]
    assert "| B2 64x48 |" in capsys.readouterr().out
    # the outputs are gone, the hub folders kept for the next run
    assert not any((work / name).exists() for name in ("B1", "B2_64x48", "C1_64x48"))
    assert (work / "hub" / "clip-vit-large-patch14" / "model.safetensors").is_file()
