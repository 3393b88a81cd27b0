"""GPU benchmark: B2 training throughput and MFU, C1 sampling speed, C2 throughput, and the
authors' setup as the baseline, at the paper's full architecture with random weights.

    python bench/gpu_benchmark.py                          # one CUDA GPU, under 10 minutes (time_budget_s)
    python bench/gpu_benchmark.py --resume=True            # measure what the last run skipped, keep the rest
    python bench/gpu_benchmark.py --preset=cpu_smoke       # tiny models on the CPU (a minute; logs/, never bench/results)

Every measurement builds the models fresh (SD2 UNet and VAE, DINOv2-large, CLIP ViT-L/14 fusion model
from src/models/configs, random weights: speed does not depend on the weights' values) and runs
warm-up iterations, then timed ones, synchronising the GPU around each. A configuration that runs
out of memory or fails to compile is recorded with its error and the sweep goes on. The JSON is
rewritten atomically after every configuration (a run cut short keeps what it measured); past
``time_budget_s`` the remaining configurations are recorded as skipped.

Measured, in this order (the headline figures first):
  train   B2's step (src.train.stage2.training_loss, backward, clipping, AdamW; data loading
          excluded): images/s, MFU, peak memory. "default" = B2's CUDA defaults (bf16 autocast
          over fp32 weights, SDPA, TF32); "baseline" = the authors' setup (fp32 weights under fp16
          autocast with a GradScaler, eager, plain attention processor, no TF32, no
          channels_last); each switch flipped from the default at ablation_batch_size;
          "precomputed" = the UNet step fed cached VAE latents, DINOv2 tokens and fusion
          embeddings; "best" = the default with every switch that won, at the best batch size.
  sample  C1's pipeline call at ``size``: conditions once, num_inference_steps steps of one UNet
          call on the guidance branches (two at one scale), VAE decode; s/image. "fast" = bf16
          weights + SDPA (+ torch.compile); "baseline" = fp32 weights under fp16 autocast, plain
          attention, the authors' three branches.
  psnr    the same seeds and inputs sampled in fp32 and with the fast (and the baseline) settings.
  c2      src.evaluate.metrics.score_generated (SSIM, SSIM-256, PSNR, LPIPS, FID features) on generated
          files.
MFU = model FLOPs per image (bench.perf.flop_accounting, as bench/flops.py) x images/s / the device's
dense bf16 peak (H100 SXM and H200: 989 TFLOP/s; ``peak_flops`` overrides).

Writes <results_dir>/<device>.json and <device>.md (the README table row), and the same two files
under $OUT when that environment variable is set.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
model = "full"                               # "full": the paper's sizes (shipped configs); "tiny": the tiny preset
size = (512, 352)                            # target (height, width): training and sampling
source_size = 512                            # source image (square)
fusion_size = 224                            # fusion-model inputs
train_batch_sizes = [8, 16, 32]
ablation_batch_size = 16                     # batch of the headline pair and of the switch ablations
switches = ["bf16", "sdpa", "tf32", "channels_last", "compile", "gradient_checkpointing", "fused_adamw"]
precomputed_features = True                  # also time the step fed cached frozen features
min_gain = 0.02                              # a switch "wins" when it adds this fraction of images/s
train_warmup = 3
train_iters = 10
sample_batch_sizes = [1, 8, 16]
sample_batch_size = 16                       # the headline sampling batch (goal: 0.15 s/image at 16)
sample_compile = True                        # also sample with torch.compile
num_inference_steps = 20
guidance_scale = 2.0
scheduler = "ddpm"
sample_warmup = 1                            # whole pipeline calls
sample_iters = 2
psnr_images = 2                              # images sampled in fp32 and fast for the PSNR
compile_mode = "default"                     # torch.compile mode ("max-autotune-no-cudagraphs", ...)
compile_backend = "inductor"
c2_images = 256                              # generated/ground-truth pairs for the C2 timing (0 = skip)
c2_eval_sizes = ["256x176", "512x352"]
c2_batch_size = 32
c2_num_workers = 8
peak_flops = 0.0                             # dense bf16 FLOP/s; 0 = from the device table
time_budget_s = 480.0                        # seconds; configurations left after this are recorded as skipped
resume = False                               # keep the measured configurations of an existing results file
results_dir = ""                             # "" = bench/results on a CUDA GPU at full size, else logs/bench_gpu
device = "auto"                              # auto = cuda if available
threads = 0                                  # torch CPU threads; 0 = torch's default
seed = 7
# -----------------------------------------------------------------------------------------------
PRESETS = {
    "cpu_smoke": {"model": "tiny", "size": (64, 48), "source_size": 64, "fusion_size": 64,
                  "train_batch_sizes": [1, 2], "ablation_batch_size": 2,
                  "switches": ["bf16", "sdpa", "channels_last", "gradient_checkpointing", "fused_adamw"],
                  "train_warmup": 1, "train_iters": 2, "sample_batch_sizes": [1, 2], "sample_batch_size": 2,
                  "sample_compile": False, "num_inference_steps": 2, "sample_warmup": 1, "sample_iters": 1,
                  "psnr_images": 1, "c2_images": 4, "c2_eval_sizes": ["64x64"], "c2_batch_size": 4,
                  "c2_num_workers": 0, "time_budget_s": 240.0, "results_dir": "logs/bench_gpu_smoke",
                  "device": "cpu", "threads": 1},
}

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import configure  # noqa: E402

GPU_RESULTS = ROOT / "bench" / "results"
# switch -> the TrainSettings field and value that flip it away from B2's default
FLIPS = {"bf16": ("precision", "fp32"), "sdpa": ("sdpa", False), "tf32": ("tf32", False),
         "channels_last": ("channels_last", True), "compile": ("compile", True),
         "gradient_checkpointing": ("gradient_checkpointing", True), "fused_adamw": ("fused_adamw", True)}


def switch_name(switch: str) -> str:
    """The ablation's configuration name: 'train_sdpa_off_b16', 'train_compile_on_b16'."""
    return f"train_{switch}_{'on' if FLIPS[switch][1] is True else 'off'}_b{ablation_batch_size}"


def plan() -> list[dict]:
    """The configurations, headline figures first; "best" ones are settled when reached."""
    from bench.perf import BASELINE_SAMPLE, BASELINE_TRAIN, SampleSettings, TrainSettings

    unknown = [s for s in switches if s not in FLIPS]
    if unknown:
        raise SystemExit(f"unknown switches {unknown}; choose among {', '.join(FLIPS)}")
    b, sb = ablation_batch_size, sample_batch_size
    items = []

    def train(name, group, **kw):
        items.append({"name": name, "kind": "train", "group": group, "settings": TrainSettings(**kw)})

    def sample(name, group, **kw):
        items.append({"name": name, "kind": "sample", "group": group, "settings": SampleSettings(**kw)})

    train(f"train_default_b{b}", "default", batch=b)
    train(f"train_baseline_b{b}", "baseline", batch=b, **BASELINE_TRAIN)
    sample(f"sample_fast_b{sb}", "fast", batch=sb)
    sample(f"sample_baseline_b{sb}", "baseline", batch=sb, **BASELINE_SAMPLE)
    items.append({"name": "psnr", "kind": "psnr", "group": "check"})
    for batch in train_batch_sizes:
        if batch != b:
            train(f"train_default_b{batch}", "default", batch=batch)
            train(f"train_baseline_b{batch}", "baseline", batch=batch, **BASELINE_TRAIN)
    for s in switches:
        if s != "compile":
            field, value = FLIPS[s]
            train(switch_name(s), "switch", batch=b, **{field: value})
    if precomputed_features:
        for batch in train_batch_sizes:
            train(f"train_precomputed_b{batch}", "precomputed", batch=batch, precomputed=True)
    for batch in sample_batch_sizes:
        if batch != sb:
            sample(f"sample_fast_b{batch}", "fast", batch=batch)
            sample(f"sample_baseline_b{batch}", "baseline", batch=batch, **BASELINE_SAMPLE)
    if "channels_last" in switches:
        sample(f"sample_channels_last_b{sb}", "switch", batch=sb, channels_last=True)
    if c2_images > 0:
        items.append({"name": "c2", "kind": "c2", "group": "c2"})
    if "compile" in switches:
        train(switch_name("compile"), "switch", batch=b, compile=True)
    if sample_compile:
        for batch in sorted(sample_batch_sizes, key=lambda n: n != sb):
            sample(f"sample_compile_b{batch}", "fast", batch=batch, compile=True)
    items.append({"name": "train_best", "kind": "train", "group": "best", "settings": None})
    if precomputed_features:
        items.append({"name": "train_best_precomputed", "kind": "train", "group": "best", "settings": None})
    items.append({"name": f"sample_best_b{sb}", "kind": "sample", "group": "best", "settings": None})
    items.append({"name": "psnr_best", "kind": "psnr", "group": "best", "settings": None})
    return items


def _ok(sweep: dict, kind: str, group=None) -> dict:
    return {n: r for n, r in sweep.items() if r.get("kind") == kind and "error" not in r and "skipped" not in r
            and r.get("images_per_s") and (group is None or r.get("group") == group)}


def best_settings(name: str, sweep: dict):
    """The default settings with every switch that beat the default at the ablation batch, at the
    fastest batch size (of the default, or of the precomputed runs); None without the data."""
    from bench.perf import SampleSettings, TrainSettings

    if name.startswith(("sample", "psnr")):
        ref = sweep.get(f"sample_fast_b{sample_batch_size}", {})
        if "s_per_image" not in ref:
            return None
        fields = {}
        for other, field in ((f"sample_compile_b{sample_batch_size}", "compile"),
                             (f"sample_channels_last_b{sample_batch_size}", "channels_last")):
            r = sweep.get(other, {})
            if r.get("s_per_image") and r["s_per_image"] < ref["s_per_image"] * (1 - min_gain):
                fields[field] = True
        return SampleSettings(batch=psnr_images if name.startswith("psnr") else sample_batch_size, **fields)
    ref = sweep.get(f"train_default_b{ablation_batch_size}", {})
    if not ref.get("images_per_s"):
        return None
    fields = {}
    for s in switches:
        field, value = FLIPS[s]
        r = sweep.get(switch_name(s), {})
        if r.get("images_per_s") and r["images_per_s"] > ref["images_per_s"] * (1 + min_gain):
            fields[field] = value
    group = "precomputed" if name.endswith("precomputed") else "default"
    candidates = _ok(sweep, "train", group)
    if not candidates:
        return None
    batch = max(candidates.values(), key=lambda r: r["images_per_s"])["settings"]["batch"]
    return TrainSettings(batch=batch, precomputed=group == "precomputed", **fields)


def summarize(results: dict) -> dict:
    """The top-level figures from the sweep: best online training (not precomputed) and its MFU,
    the baseline's best, sampling at sample_batch_size, ratios, the lower PSNR of the "psnr" and
    "psnr_best" checks, C2."""
    sweep = results["sweep"]
    train = _ok(sweep, "train")
    online = {n: r for n, r in train.items() if r["group"] != "baseline" and not r["settings"]["precomputed"]}
    cached = {n: r for n, r in train.items() if r["settings"]["precomputed"]}
    base = {n: r for n, r in train.items() if r["group"] == "baseline"}
    pick = lambda d: max(d.items(), key=lambda kv: kv[1]["images_per_s"]) if d else (None, {})  # noqa: E731
    best_name, best = pick(online)
    cached_name, cached_best = pick(cached)
    base_name, base_best = pick(base)
    samples = {n: r for n, r in _ok(sweep, "sample").items() if r["settings"]["batch"] == sample_batch_size}
    fast = {n: r for n, r in samples.items() if r["group"] != "baseline"}
    slow = {n: r for n, r in samples.items() if r["group"] == "baseline"}
    low = lambda d: min(d.items(), key=lambda kv: kv[1]["s_per_image"]) if d else (None, {})  # noqa: E731
    sample_name, sample_best = low(fast)
    sbase_name, sbase_best = low(slow)
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    psnr = sweep.get("psnr", {})
    fast_psnr = [r["psnr_fp32_vs_fast"] for r in (psnr, sweep.get("psnr_best", {})) if "psnr_fp32_vs_fast" in r]
    return {
        "train_images_per_s": best.get("images_per_s"), "train_mfu": best.get("mfu"), "train_best": best_name,
        "train_peak_memory_gib": best.get("peak_memory_gib"),
        "baseline_train_images_per_s": base_best.get("images_per_s"), "baseline_train_mfu": base_best.get("mfu"),
        "baseline_train_best": base_name,
        "train_speedup": ratio(best.get("images_per_s"), base_best.get("images_per_s")),
        "train_images_per_s_precomputed": cached_best.get("images_per_s"),
        "train_mfu_precomputed": cached_best.get("mfu"), "train_best_precomputed": cached_name,
        "sample_s_per_image": sample_best.get("s_per_image"), "sample_best": sample_name,
        "sample_batch": sample_batch_size,
        "baseline_sample_s_per_image": sbase_best.get("s_per_image"), "baseline_sample_best": sbase_name,
        "sample_speedup": ratio(sbase_best.get("s_per_image"), sample_best.get("s_per_image")),
        "psnr_fp32_vs_fast": min(fast_psnr) if fast_psnr else None,
        "psnr_fp32_vs_baseline": psnr.get("psnr_fp32_vs_baseline"),
        "c2_images_per_s": sweep.get("c2", {}).get("images_per_s"),
    }


def markdown(results: dict) -> str:
    """The README row of bench/README.md's "GPU performance" table."""
    def f(v, spec, suffix=""):
        return "n/a" if v is None else f"{v:{spec}}{suffix}"

    s = results
    return "\n".join([
        "| device | torch | date | B2 img/s (best) | authors' setup | ratio | MFU | C1 s/img (batch "
        f"{s['sample_batch']}) | authors' setup | ratio | PSNR fp32 vs fast | C2 img/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['device']} | {s['torch']} | {s['date']} | {f(s['train_images_per_s'], '.1f')} | "
        f"{f(s['baseline_train_images_per_s'], '.1f')} | {f(s['train_speedup'], '.2f', 'x')} | "
        f"{f(s['train_mfu'] and 100 * s['train_mfu'], '.1f', '%')} | {f(s['sample_s_per_image'], '.3f')} | "
        f"{f(s['baseline_sample_s_per_image'], '.3f')} | {f(s['sample_speedup'], '.2f', 'x')} | "
        f"{f(s['psnr_fp32_vs_fast'], '.1f', ' dB')} | {f(s['c2_images_per_s'], '.1f')} |",
    ])


def sweep_table(results: dict) -> str:
    lines = [f"{'configuration':34s} {'img/s':>9s} {'s/img':>9s} {'MFU':>7s} {'mem GiB':>8s}  note"]
    for name, r in results["sweep"].items():
        note = r.get("error") or r.get("skipped") or ""
        if r.get("kind") == "psnr":
            note = note or ", ".join(f"PSNR fp32 vs {k} {r[f'psnr_fp32_vs_{k}']:.1f} dB" for k in ("fast", "baseline")
                                     if f"psnr_fp32_vs_{k}" in r)
        v = lambda k, spec, w: f"{r[k]:{w}{spec}}" if isinstance(r.get(k), float) else f"{'-':>{w}}"  # noqa: E731
        mfu = f"{100 * r['mfu']:.1f}%" if isinstance(r.get("mfu"), float) else "-"
        lines.append(f"{name:34s} {v('images_per_s', '.2f', 9)} {v('s_per_image', '.4f', 9)} {mfu:>7s} "
                     f"{v('peak_memory_gib', '.1f', 8)}  {note}")
    return "\n".join(lines)


def run_item(item: dict, dev, flops: dict, peak: float | None) -> dict:
    from bench import perf

    common = dict(model=model, height=size[0], width=size[1], source_size=source_size, fusion_size=fusion_size,
                  seed=seed)
    compile_kwargs = {"mode": compile_mode} if compile_backend == "inductor" else {"backend": compile_backend}
    kind, settings = item["kind"], item.get("settings")
    sampling = dict(steps=num_inference_steps, guidance_scale=guidance_scale, scheduler=scheduler)
    if kind == "train":
        r = perf.measure_training(settings, dev, warmup=train_warmup, iters=train_iters, compile_kwargs=compile_kwargs,
                               **common)
        per_image = flops["train"]["train_step_precomputed" if settings.precomputed else "train_step"]
        return {**r, "flops_per_image": per_image, "mfu": perf.mfu(per_image, r["images_per_s"], peak)}
    if kind == "sample":
        r = perf.measure_sampling(settings, dev, warmup=sample_warmup, iters=sample_iters, compile_kwargs=compile_kwargs,
                               **sampling, **common)
        per_image = flops["sample"]["per_image"]
        return {**r, "flops_per_image": per_image, "mfu": perf.mfu(per_image, r["images_per_s"], peak)}
    if kind == "psnr":
        baseline = None if settings else perf.SampleSettings(batch=psnr_images, **perf.BASELINE_SAMPLE)
        return perf.sampling_psnr(settings or perf.SampleSettings(batch=psnr_images), dev, baseline=baseline,
                               compile_kwargs=compile_kwargs, **sampling, **common)
    if kind == "c2":
        return perf.measure_c2(dev, n_images=c2_images, size=size, eval_sizes=c2_eval_sizes, batch_size=c2_batch_size,
                            num_workers=c2_num_workers, seed=seed)
    raise ValueError(f"unknown kind {kind!r}")


def main() -> dict:
    import diffusers
    import torch
    import transformers

    from bench import perf
    from src.util.fileio import atomic_write_json, atomic_write_text

    start = time.time()
    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type != "cuda" and model == "full":
        raise SystemExit("the full-size benchmark needs a CUDA GPU; on the CPU run --preset=cpu_smoke")
    gpu_run = dev.type == "cuda" and model == "full"
    out_dir = Path(results_dir) if results_dir else (GPU_RESULTS if gpu_run else ROOT / "logs" / "bench_gpu")
    if not gpu_run and out_dir.resolve() == GPU_RESULTS.resolve():
        raise SystemExit(f"{out_dir} holds GPU results at full size only; pick another results_dir")
    name = perf.device_name(dev)
    stem = perf.slug(name) + ("" if model == "full" else f"-{model}")
    paths = [out_dir / f"{stem}.json"]
    if os.environ.get("OUT"):
        paths.append(Path(os.environ["OUT"]) / f"{stem}.json")
    peak, peak_source = perf.peak_flops(name, peak_flops)
    flops = perf.flop_accounting(model, size[0], size[1], source_size=source_size, fusion_size=fusion_size,
                              num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale)
    results = {"device": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
               "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
               "device_type": dev.type, "model": model, "size": list(size), "peak_flops": peak,
               "peak_flops_source": peak_source, "flops_per_image": {"train": flops["train"], "sample": flops["sample"]},
               "config": dict(cfg), "sweep": {}}
    if resume and paths[0].is_file():
        previous = json.loads(paths[0].read_text())
        results["sweep"] = {n: r for n, r in previous.get("sweep", {}).items()
                            if "error" not in r and "skipped" not in r}
        print(f"resuming {paths[0]}: {len(results['sweep'])} configurations kept")

    def save():
        results.update(summarize(results), elapsed_s=time.time() - start)
        for p in paths:
            atomic_write_json(p, results)
            atomic_write_text(p.with_suffix(".md"), markdown(results) + "\n")

    save()
    for item in plan():
        key = item["name"]
        if key in results["sweep"]:
            continue
        entry = {"kind": item["kind"], "group": item["group"]}
        if time.time() - start > time_budget_s:
            results["sweep"][key] = {**entry, "skipped": f"time budget of {time_budget_s:.0f}s spent"}
            save()
            continue
        if item["group"] == "best":
            item["settings"] = best_settings(key, results["sweep"])
            if item["settings"] is None:
                results["sweep"][key] = {**entry, "skipped": "the configurations it is built from are missing"}
                save()
                continue
        if item.get("settings") is not None:
            entry["settings"] = item["settings"].to_dict()
        t = time.time()
        print(f"{key} ...", flush=True)
        try:
            entry.update(run_item(item, dev, flops, peak))
        except Exception as e:  # noqa: BLE001 - OOM, compile failures: recorded, the sweep goes on
            entry["error"] = perf.error_text(e)
        finally:
            perf.cleanup(dev)
        entry["seconds"] = time.time() - t
        results["sweep"][key] = entry
        save()
        figures = [f"{k} {entry[k]:.4g}" for k in ("images_per_s", "s_per_image", "mfu", "peak_memory_gib",
                                                      "psnr_fp32_vs_fast") if isinstance(entry.get(k), float)]
        print(f"  {entry.get('error') or ', '.join(figures)} ({entry['seconds']:.0f}s)", flush=True)
    results["complete"] = not any("skipped" in r or "error" in r for r in results["sweep"].values())
    save()
    print(sweep_table(results))
    print(markdown(results))
    print("results: " + ", ".join(str(p) for p in paths))
    return results


if __name__ == "__main__":
    cfg = configure(globals(), presets=PRESETS)
    main()
