"""A rehearsal of the whole chain A1 -> B1 -> B2 -> C1 -> C2 at the paper's architecture on the CPU.

    python bench/rehearsal.py                           # paper size, B2 at 256x176
    python bench/rehearsal.py --sizes=256x176,512x352   # B2, C1 and C2 at both of the paper's sizes
    python bench/rehearsal.py --size=tiny               # the same path with tiny networks, a minute or two

What a researcher's first real run does, with every network at its real size and random weights,
so that it needs no download and no GPU: hub-layout folders are written from the architecture
configs shipped in src/models/configs (SD2-1 UNet, VAE and scheduler; DINOv2-large; CLIP
ViT-L/14 with both towers, as the hub's folder holds them) and random LPIPS AlexNet and FID
Inception-v3 files go into a torch hub folder of the work dir; then the five numbered scripts run
as subprocesses with their defaults, except what keeps the run short: B1 at batch 2 for 2 steps;
B2 at batch 1 for 2 steps with gradient checkpointing, its validation on one pair with 2
denoising steps (512x352: B2's defaults; 256x176: configs/deepfashion_256x176.py); C1 on two
pairs with 2 denoising steps; C2 on what C1 wrote (tiny: at 256x176 only). Speed and memory do
not depend on the weights' values; the metrics' values mean nothing.

Data: --data (default: the shared sample folder beside the repository, five train and five test
DeepFashion pairs), linked into the work dir, never copied; where it is absent, or with
--data=synthetic, the project's synthetic figures at DeepFashion's photo size (src/synthetic/figures.py).

Per stage it records the wall time, the peak resident memory (the largest process: the script or
one of its workers, from the kernel's accounting when it exits) and the size of what it wrote;
per training step (and per C1 image) the seconds between the progress bar's counts. Results go
to bench/results/rehearsal_<size>.json (--out elsewhere) and a Markdown table is printed. The
first failing stage stops the run with the end of its log, and its outputs are kept. The work dir
(default logs/rehearsal_<size>) keeps the hub folders for the next run and the logs; without
--keep, the other outputs go as soon as no later stage needs them (the B1 and B2 checkpoints
after their stage, the B2 pipeline after its C2).

The paper size is meant to fit a 2-core CPU with 24 GB in under 30 minutes with B2 at 256x176;
B2 holds about 17 GB of weights, gradients and AdamW state, and the disk holds about 25 GB at
the peak (6 GB of hub folders, B1's 1 GB export, a 10 GB B2 checkpoint, a 6 GB pipeline): the
rehearsal stops at once when the work dir's disk has less than 30 GB free (17 GB more per size
with --keep).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "deepfashion_samples"
GIB = 2**30

# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14). FPDM never runs it, but the hub
# folder a researcher downloads holds it, and loading the vision tower from that folder is part
# of what B1 does; src/models/configs ships only the vision tower.
CLIP_TEXT = {
    "paper": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "tiny": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
}
# The normalisation each hub folder's preprocessor_config.json gives (the scripts read it).
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# Per rehearsal size: which architecture configs (bench/authors_format.configs), the options that
# size the heads, and B2's settings per image size: the paper's two are B2's defaults (512x352)
# and its documented 256x176 configuration.
SIZES = {
    "paper": {
        "configs": "full",
        "B1": {},
        "B2": {},
        "C2": {},
        "sizes": {"256x176": {"config": str(ROOT / "configs" / "deepfashion_256x176.py")}, "512x352": {}},
        "default_sizes": "256x176",
        # (hub folders + B1's export and checkpoint, one B2 size: checkpoint with AdamW + pipeline)
        "disk_gib": (12, 17),
    },
    "tiny": {
        "configs": "tiny",
        "B1": {"projection_dim": 32, "hidden_dim": 32},
        "B2": {"pose_channels": (8, 8, 16, 16), "mlp_hidden_dim": 24, "fusion_size": 64},
        "C2": {"eval_sizes": ["256x176"]},  # SSIM's 51-pixel window is wider than the model's own size
        "sizes": {"64x48": {"target_size": (64, 48), "source_size": 64, "source_scales": (32, 64)},
                  "128x96": {"target_size": (128, 96), "source_size": 64, "source_scales": (32, 64)}},
        "default_sizes": "64x48",
        "disk_gib": (0.5, 0.1),
    },
}
HUB_FOLDERS = ("stable-diffusion-2-1", "dinov2-large", "clip-vit-large-patch14", "torch")

# What keeps the run short; everything else is the scripts' defaults.
A1_OPTIONS = {"workers": min(8, os.cpu_count() or 1)}
B1_OPTIONS = {"batch_size": 2, "max_steps": 2, "num_workers": 0, "log_every": 1}
B2_OPTIONS = {"batch_size": 1, "gradient_accumulation_steps": 1, "max_steps": 2, "gradient_checkpointing": True,
              "num_workers": 0, "log_every": 1, "validation_pairs": 1, "validation_loss_pairs": 1,
              "validation_inference_steps": 2}
C1_OPTIONS = {"max_pairs": 2, "num_inference_steps": 2}
C2_OPTIONS = {"num_workers": 0, "fid_cache": ""}   # no cache: the reference's features are computed, as on a first run

TQDM = re.compile(r"^(?P<desc>[^\r\n|]*?):\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[")
TRAINING_BARS = ("B1", "B2")
GENERATE_BAR = "generate"   # C1's bar, counting images


# ---------------------------------------------------------------------------------------------
# hub folders (run in a subprocess: the rehearsal's own process stays small while the scripts run)


def build_hub(size: str, hub: str) -> None:
    """Random-weight hub folders of ``size``'s architecture under ``hub``; complete ones are kept."""
    import torch

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.authors_format import configs
    from src.util.fileio import atomic_dir

    cfg = configs(SIZES[size]["configs"])
    hub = Path(hub)
    torch.manual_seed(0)
    for name in HUB_FOLDERS:
        folder = hub / name
        if (folder / "rehearsal.json").is_file():
            continue
        start = time.perf_counter()
        with atomic_dir(folder) as tmp:
            _write_hub_folder(name, tmp, cfg, size)
            (tmp / "rehearsal.json").write_text(json.dumps({"size": size, "weights": "random"}) + "\n")
        print(f"{folder}: {time.perf_counter() - start:.1f} s, {_gib(folder):.2f} GiB", flush=True)


def _write_hub_folder(name: str, folder: Path, cfg: dict, size: str) -> None:
    from bench.authors_format import _clean as clean  # the config without its bookkeeping keys

    if name == "stable-diffusion-2-1":
        from diffusers import AutoencoderKL, UNet2DConditionModel

        UNet2DConditionModel.from_config(cfg["unet"]).save_pretrained(folder / "unet")
        AutoencoderKL.from_config(cfg["vae"]).save_pretrained(folder / "vae")
        (folder / "scheduler").mkdir()
        scheduler = {"_class_name": "DDPMScheduler", **cfg["scheduler"]}
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n")
    elif name == "dinov2-large":
        from transformers import Dinov2Config, Dinov2Model

        Dinov2Model(Dinov2Config(**clean(cfg["dinov2"]))).save_pretrained(folder)
        _preprocessor(folder, IMAGENET_MEAN, IMAGENET_STD)
    elif name == "clip-vit-large-patch14":
        from transformers import CLIPConfig, CLIPModel

        vision = clean(cfg["clip"])
        config = CLIPConfig(text_config={**CLIP_TEXT[size], "projection_dim": vision["projection_dim"]},
                            vision_config=vision, projection_dim=vision["projection_dim"])
        CLIPModel(config).save_pretrained(folder)
        _preprocessor(folder, CLIP_MEAN, CLIP_STD)
    else:  # torch hub checkpoints: C2's LPIPS backbone and FID network, under the names torchvision looks for
        import torch
        import torchvision

        from src.evaluate.metrics import ALEXNET_FILE, TV_INCEPTION_FILE

        checkpoints = folder / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / ALEXNET_FILE)
        inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        torch.save(inception.state_dict(), checkpoints / TV_INCEPTION_FILE)


def _preprocessor(folder: Path, mean, std) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}) + "\n")


def make_synthetic_data(root: str) -> None:
    """Synthetic figures at DeepFashion's photo size (750x1101), so that A1 and the data loaders
    see images of the real size."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from src.synthetic.figures import make_synthetic_dataset

    print(make_synthetic_dataset(root, n_identities=5, poses_per_identity=2, test_identities=2, width=750,
                                 height=1101))


# ---------------------------------------------------------------------------------------------
# running a stage


def _gib(path: Path) -> float:
    if not path.exists():
        return 0.0
    files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files) / GIB


def _option(name: str, value) -> str:
    if name == "config":
        return f"--config={value}"  # a file name, read as it is
    return f"--{name}={value!r}"  # a Python literal, as the scripts read it: a path never parses as a number


def run_stage(name: str, argv: list[str], log: Path, env: dict, outputs: list[Path] = ()) -> dict:
    """Run ``argv`` from the repository root, its output (stdout and stderr together) into
    ``log``; wall time, peak resident memory from ``os.wait4`` (the largest of the process and
    its waited-for children, exact), training-step times from its progress bars."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{name} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    bars: dict[str, dict] = {}
    pending, pending_since = b"", 0.0
    with open(log, "wb") as f:
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            now = time.perf_counter() - start
            f.write(chunk)
            f.flush()
            # A progress bar line is "\r<bar>" with no end: it is complete only when the next one
            # arrives, so each line is timed by the arrival of its first byte.
            *segments, last = re.split(rb"[\r\n]", pending + chunk)
            for i, segment in enumerate(segments):
                _bar_update(bars, segment.decode("utf-8", "replace"), pending_since if i == 0 and pending else now)
            pending_since = pending_since if not segments and pending else now
            pending = last
        if pending:
            _bar_update(bars, pending.decode("utf-8", "replace"), pending_since)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / GIB
    result = {"stage": name, "seconds": round(seconds, 2), "peak_rss_gib": round(peak, 2),
              "returncode": proc.returncode, "log": str(log), "command": [Path(argv[1]).name, *argv[2:]]}
    result["output_gib"] = round(sum(_gib(p) for p in outputs), 3)
    for desc, bar in bars.items():
        times = [t for _, t in sorted(bar["times"].items())]
        result.setdefault("bars", {})[desc] = {"total": bar["total"], "counts": sorted(bar["times"]),
                                               "seconds": [round(b - a, 2) for a, b in zip(times, times[1:])]}
    found = result.get("bars", {})
    steps = [found[d]["seconds"] for d in TRAINING_BARS if d in found]
    if steps:
        result["step_seconds"] = steps[0]
    if found.get(GENERATE_BAR, {}).get("counts", [0])[-1] > 0:
        generate = found[GENERATE_BAR]
        result["seconds_per_image"] = round(sum(generate["seconds"]) / generate["counts"][-1], 2)
    return result


def _bar_update(bars: dict, line: str, now: float) -> None:
    """The first time each count of each progress bar was printed."""
    m = TQDM.match(line.strip())
    if m:
        bar = bars.setdefault(m["desc"].strip(), {"total": int(m["total"]), "times": {}})
        bar["times"].setdefault(int(m["n"]), round(now, 3))


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_bytes().decode("utf-8", "replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


# ---------------------------------------------------------------------------------------------
# the run


def machine() -> dict:
    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpus": os.cpu_count(), "ram_gib": round(pages / GIB, 1), "machine": platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(),
            **{p: version(p) for p in ("torch", "diffusers", "transformers", "accelerate")}}


def prepare_data(data: str, work: Path, env: dict, stages: list) -> tuple[Path, str]:
    """The dataset folder the scripts use: ``data`` linked (its img/ and pose/; A1 writes
    pose_img/ here, not into ``data``), or synthetic figures."""
    source = Path(data).expanduser()
    if data != "synthetic" and (source / "img").is_dir():
        root = work / "data"
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("img", "pose"):
            link = root / sub
            if link.is_symlink():  # a reused work dir may have been given other data
                link.unlink()
            link.symlink_to(source.resolve() / sub, target_is_directory=True)
        for pairs in source.glob("*_pairs_data.json"):
            shutil.copyfile(pairs, root / pairs.name)
        return root, str(source.resolve())
    if data != "synthetic":
        print(f"{source} holds no img/: using synthetic figures instead", flush=True)
    root = work / "data_synthetic"
    if not (root / "test_pairs_data.json").is_file():
        call = f"from bench.rehearsal import make_synthetic_data; make_synthetic_data({str(root)!r})"
        stages.append(check(run_stage("synthetic data", [sys.executable, "-c", call], work / "logs" / "data.log",
                                      env, [root])))
    return root, "synthetic (src/synthetic/figures.py, 750x1101)"


class StageFailed(Exception):
    pass


def check(result: dict) -> dict:
    if result["returncode"] != 0:
        raise StageFailed(result)
    print(f"    {result['seconds']:.1f} s, peak {result['peak_rss_gib']:.2f} GiB"
          + (f", steps {', '.join(f'{s:.2f}' for s in result['step_seconds'])} s" if "step_seconds" in result else "")
          + (f", wrote {result['output_gib']:.2f} GiB" if result["output_gib"] else ""), flush=True)
    return result


def script(name: str, **options) -> list[str]:
    return [sys.executable, str(ROOT / name), *(_option(k, v) for k, v in options.items())]


def rehearse(size: str, work: Path, data: str, sizes: list[str], keep: bool) -> dict:
    spec = SIZES[size]
    work.mkdir(parents=True, exist_ok=True)
    hub, logs = work / "hub", work / "logs"
    free = shutil.disk_usage(work).free / GIB
    base, per_size = spec["disk_gib"]
    need = base + per_size * (len(sizes) if keep else 1) - _gib(hub)
    if free < need:
        raise SystemExit(f"error: {work} has {free:.1f} GiB free; the {size} rehearsal needs about {need:.0f} GiB "
                         "(--work_dir elsewhere)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "TORCH_HOME": str(hub / "torch")}
    report = {"size": size, "date": datetime.date.today().isoformat(), "machine": machine(),
              "work_dir": str(work), "disk_free_gib_at_start": round(free, 1), "data": data, "b2_sizes": sizes,
              "stages": []}
    stages = report["stages"]
    start = time.perf_counter()
    try:
        report["hub_reused"] = all((hub / n / "rehearsal.json").is_file() for n in HUB_FOLDERS)
        if not report["hub_reused"]:
            call = f"from bench.rehearsal import build_hub; build_hub({size!r}, {str(hub)!r})"
            stages.append(check(run_stage("hub folders", [sys.executable, "-c", call], logs / "hub.log", env, [hub])))
        report["hub_gib"] = round(_gib(hub), 2)
        root, report["data"] = prepare_data(data, work, env, stages)
        shutil.rmtree(root / "pose_img", ignore_errors=True)  # A1 skips what is up to date: make it do its work
        with open(root / "train_pairs_data.json") as f_train, open(root / "test_pairs_data.json") as f_test:
            report["pairs"] = {"train": len(json.load(f_train)), "test": len(json.load(f_test))}
        stages.append(check(run_stage("A1", script("A1.pose_data_preprocessing.py", dataset_root=str(root),
                                                   **A1_OPTIONS), logs / "A1.log", env, [root / "pose_img"])))
        b1 = work / "B1"
        shutil.rmtree(b1, ignore_errors=True)
        stages.append(check(run_stage("B1", script("B1.train_Fusion_model.py", dataset_root=str(root), out_dir=str(b1),
                                                   encoder=str(hub / "clip-vit-large-patch14"),
                                                   **B1_OPTIONS, **spec["B1"]), logs / "B1.log", env, [b1])))
        if not keep:
            shutil.rmtree(b1 / "checkpoints", ignore_errors=True)
        for name in sizes:
            b2, c1 = work / f"B2_{name}", work / f"C1_{name}"
            for folder in (b2, c1):
                shutil.rmtree(folder, ignore_errors=True)
            options = {**B2_OPTIONS, **spec["B2"], **spec["sizes"][name]}
            stages.append(check(run_stage(
                f"B2 {name}", script("B2.train_Diffusion_model.py", dataset_root=str(root), out_dir=str(b2),
                                     pretrained_model=str(hub / "stable-diffusion-2-1"),
                                     source_encoder=str(hub / "dinov2-large"), fusion_model=str(b1 / "fusion_model"),
                                     **options),
                logs / f"B2_{name}.log", env, [b2])))
            stages[-1]["checkpoint_gib"] = round(_gib(b2 / "checkpoints"), 3)
            stages[-1]["pipeline_gib"] = round(_gib(b2 / "pipeline"), 3)
            if not keep:
                shutil.rmtree(b2 / "checkpoints", ignore_errors=True)
            stages.append(check(run_stage(
                f"C1 {name}", script("C1.test_Diffusion_model.py", pipeline=str(b2 / "pipeline"),
                                     dataset_root=str(root), out_dir=str(c1), **C1_OPTIONS),
                logs / f"C1_{name}.log", env, [c1])))
            stages.append(check(run_stage(
                f"C2 {name}", script("C2.eval.caculate_metrics.py", generated=str(c1), dataset_root=str(root),
                                     **C2_OPTIONS, **spec["C2"]),
                logs / f"C2_{name}.log", env)))
            metrics = c1 / "metrics.json"
            if metrics.is_file():
                stages[-1]["metrics"] = json.loads(metrics.read_text())
            if not keep:
                shutil.rmtree(b2, ignore_errors=True)
        report["status"] = "ok"
    except StageFailed as e:
        failed = e.args[0]
        stages.append(failed)
        report["status"] = f"failed at {failed['stage']} (exit code {failed['returncode']})"
        print(f"{failed['stage']} failed (exit code {failed['returncode']}); the end of {failed['log']}:\n"
              f"{log_tail(Path(failed['log']))}", file=sys.stderr)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    report["peak_rss_gib"] = max((s["peak_rss_gib"] for s in stages), default=0.0)
    if not keep and report["status"] == "ok":  # a failed run keeps its outputs to be looked at
        for folder in [work / "B1", *(work / f"{k}_{n}" for k in ("B2", "C1") for n in sizes)]:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def markdown_table(report: dict) -> str:
    rows = ["| stage | seconds | peak memory GiB | seconds per step (B1, B2: each step) or image (C1) | written GiB |",
            "|---|---:|---:|---:|---:|"]
    for s in report["stages"]:
        steps = ", ".join(f"{t:.2f}" for t in s.get("step_seconds", []))
        if "seconds_per_image" in s:
            steps = f"{s['seconds_per_image']:.2f}"
        rows.append(f"| {s['stage']} | {s['seconds']:.1f} | {s['peak_rss_gib']:.2f} | {steps} | "
                    f"{s['output_gib']:.3f} |")
    rows.append(f"| **total** | **{report['total_seconds']:.1f}** | **{report['peak_rss_gib']:.2f}** | | |")
    m = report["machine"]
    head = (f"{report['size']} size, {m['cpus']} CPUs ({m['machine']}), {m['ram_gib']} GiB RAM, torch {m['torch']}, "
            f"{report['date']}; data: {report['data']}; {report['status']}")
    return head + "\n\n" + "\n".join(rows)


def main(argv=None) -> dict:
    summary, details = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(description=summary, epilog=details,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="paper", choices=tuple(SIZES))
    p.add_argument("--work_dir", default=None, help="default logs/rehearsal_<size>")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="a DeepFashion-layout folder, or 'synthetic'")
    p.add_argument("--sizes", default=None, help="B2/C1/C2 sizes, comma-separated (paper: 256x176, 512x352)")
    p.add_argument("--keep", action="store_true", help="keep every stage's output (B2 checkpoints: ~10 GB each)")
    p.add_argument("--out", default=None, help="default bench/results/rehearsal_<size>.json")
    args = p.parse_args(argv)
    spec = SIZES[args.size]
    sizes = (args.sizes or spec["default_sizes"]).split(",")
    unknown = [s for s in sizes if s not in spec["sizes"]]
    if unknown:
        p.error(f"--sizes: {', '.join(unknown)} unknown at --size={args.size}; choose among {', '.join(spec['sizes'])}")
    work = Path(args.work_dir or ROOT / "logs" / f"rehearsal_{args.size}").expanduser().resolve()
    report = rehearse(args.size, work, args.data, sizes, args.keep)
    out = Path(args.out or ROOT / "bench" / "results" / f"rehearsal_{args.size}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{markdown_table(report)}\n\nresults: {out}")
    if report["status"] != "ok":
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
