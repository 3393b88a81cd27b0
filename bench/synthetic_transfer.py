"""Synthetic pose-transfer benchmark: does FPDM learn pose transfer on a CPU, and does each
condition matter? (No pretrained weights or DeepFashion reach this project's machines: data
whose answer is known is the evidence that the method is implemented right, not just runs.)

    python bench/synthetic_transfer.py                 # default budget (about 17 min on 2 CPU cores)
    python bench/synthetic_transfer.py --preset=test   # the smaller budget of tests/test_synthetic_transfer.py
    make bench-synthetic

Steps; every numbered script runs its command line as a researcher runs it (in this process,
src.util.scripts: a subprocess per step would repeat the imports):
  1. data   src.synthetic.figures: a few hundred identities at image_size x image_size, split by identity
  2. A1     pose images
  3. VAE    src.synthetic.autoencoder trains the tiny preset's VAE on the training images and
            writes an SD2-layout folder (trained vae/, tiny unet/ and scheduler/): OUT/sd2
  4. B1     tiny preset (+ sizes): OUT/B1/fusion_model
  5. B2     tiny preset + sizes, --pretrained_model=OUT/sd2: OUT/B2/pipeline (and, with
            train_without_fusion, a second one trained with the fusion embedding always dropped)
  6. C1     generates the benchmark pairs (test identities only) with OUT/B2/pipeline. The
            ablations are generated with C1's own generation code (src.evaluate.generate.generate_pairs)
            on the same pipeline, with FPDMPipeline's drop_conditions (the condition zeroed in
            every guidance branch), since C1 has no option for it. Two references beside them:
            copy-source (the source image as the answer) and the VAE ceiling (the autoencoder's
            own reconstruction of the target: the best any model decoding its latents can do).
  7. C2     SSIM, PSNR (LPIPS, FID where their weights are present) of every method, and from
            src.synthetic.figures.TransferScorer the two exact task scores: pose IoU (generated vs target
            silhouette) and appearance accuracy (generated clothing colours nearest the own
            identity's among all test identities).
Writes bench/results/synthetic.json, bench/results/synthetic_grid.png (source | pose | ground
truth | FPDM | ablations) and the section "## Synthetic pose-transfer benchmark" of bench/README.md.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
out_dir = "logs/bench_synthetic"         # data, models and generated images (rebuilt on every run)
results_dir = "bench/results"            # synthetic.json and the grid
readme = "bench/README.md"               # its benchmark section is replaced; "" = leave it alone
identities = 300
test_identities = 40
poses_per_identity = 4
image_size = 64                          # square images; 64 or 128
min_clothing_distance = 120              # identities' (upper, lower) colours at least this L1 apart
data_seed = 0
pairs_per_test_identity = 3              # benchmark pairs per test identity
pose_draw_size = (128, 128)              # B2/C1 draw the target pose at this size, then resize
vae_channels = (16, 32, 32)              # tiny VAE blocks: 3 = latents 1/4 of the image; (16, 16, 32, 32) = the tiny preset's 1/8
vae_steps = 1600                         # small batches, many steps: what keeps colours (src.synthetic.autoencoder)
vae_batch_size = 8
vae_lr = 2e-3
vae_kl_weight = 1e-6
b1_steps = 1500
b1_batch_size = 32
b1_args = ["--eval_max_pairs=256"]       # more B1 overrides
b2_steps = 3000
b2_batch_size = 16
b2_lr = 1e-3
b2_ema_decay = 0.998                     # B2 exports EMA weights at this decay; 0 = no EMA
pose_channels = (8, 16, 16)              # pose encoder: one stride-2 step per VAE downsampling (len = len(vae_channels))
b2_args = []                             # more B2 overrides
train_without_fusion = False             # also train a B2 that never sees the fusion embedding
variants = ["copy_source", "vae_ceiling", "no_fusion", "no_source"]  # compared with FPDM as trained
num_inference_steps = 20
guidance_scale = 2.0
scheduler = "ddpm"
c1_batch_size = 40
c2_args = ["--fid_backbone=pytorch-fid", "--lpips_backbone_random=False"]  # more C2 overrides
seed = 7
grid_rows = 8
threads = 0                              # torch threads in every step; 0 = torch's default
# -----------------------------------------------------------------------------------------------
PRESETS = {
    # every step and output of the runner, at a budget too small to learn anything (tests)
    "test": {"identities": 16, "test_identities": 4, "pairs_per_test_identity": 2, "vae_steps": 20,
             "b1_steps": 5, "b1_batch_size": 8, "b2_steps": 10, "b2_batch_size": 4, "variants": ["vae_ceiling"],
             "num_inference_steps": 2, "grid_rows": 4, "readme": "",
             # no AlexNet download in CI: LPIPS with a random backbone still runs every step
             "c2_args": ["--fid_backbone=pytorch-fid", "--lpips_backbone_random=True"]},
}

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish, run  # noqa: E402
from src.config import configure, save_config  # noqa: E402

SECTION = "## Synthetic pose-transfer benchmark"
LABELS = {"fpdm": "FPDM", "copy_source": "copy-source", "vae_ceiling": "VAE ceiling (target reconstructed)",
          "no_fusion": "FPDM, fusion zeroed",
          "no_source": "FPDM, source tokens zeroed", "no_pose": "FPDM, pose zeroed",
          "b2_without_fusion": "B2 trained without fusion"}
DROPS = {"no_fusion": ("fusion",), "no_source": ("source",), "no_pose": ("pose",)}
REFERENCES = ("copy_source", "vae_ceiling")  # answers that are no sample of the trained model


def benchmark_pairs(data: Path) -> list[dict]:
    """``pairs_per_test_identity`` pairs of every test identity, each a different source pose."""
    from src.data import load_pairs
    from src.synthetic.figures import identity_of

    by_identity: dict[str, list[dict]] = {}
    for p in load_pairs(data, "test_pairs_data.json"):
        by_identity.setdefault(identity_of(p["target_image"]), []).append(p)
    chosen = []
    for pairs in by_identity.values():
        step = max(1, len(pairs) // pairs_per_test_identity)
        chosen += pairs[::step][:pairs_per_test_identity]
    return chosen


def train_vae(data: Path, sd2: Path) -> dict:
    """The tiny VAE trained on the training images, in the SD2 folder ``sd2``; its stats add the
    mean garment-colour error of its reconstructions of the test images."""
    from src.synthetic.autoencoder import load_images, pair_file_images, reconstruct, to_uint8, train_on_dataset
    from src.synthetic.figures import clothing_colour_error

    vae, stats = train_on_dataset(data, sd2, (image_size, image_size), steps=vae_steps, batch_size=vae_batch_size,
                                  lr=vae_lr, kl_weight=vae_kl_weight, block_out_channels=vae_channels, seed=seed)
    test = pair_file_images(data, "test_pairs_data.json")
    recon = to_uint8(reconstruct(vae, load_images([data / p for p in test], (image_size, image_size))))
    stats["colour_error_test"] = clothing_colour_error(recon, data, test)
    print(f"VAE: mean garment-colour error of the test reconstructions {stats['colour_error_test']:.1f} of 255")
    return stats


def generate_variant(pipe, data: Path, pairs_file: str, out: Path, drop: tuple) -> float:
    """The benchmark pairs with C1's generation code, a condition zeroed; writes the manifest."""
    from src.data import load_pairs
    from src.evaluate.generate import generate_pairs
    from src.evaluate.handoff import write_manifest

    start = time.time()
    pairs = load_pairs(data, pairs_file)
    size = (image_size, image_size)
    generate_pairs(pipe, data, pairs, out, size=size, eval_size=size, draw_size=pose_draw_size, dataset="deepfashion",
                   batch_size=c1_batch_size, seed=seed, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, scheduler=scheduler, show_progress=False,
                   drop_conditions=drop)
    write_manifest(out, pairs, size, size)
    return time.time() - start


def write_answers(out: Path, pairs: list[dict], images) -> None:
    """One image per pair (uint8 arrays at image_size), in C1's layout and manifest."""
    from PIL import Image

    from src.util.fileio import atomic_save_image
    from src.evaluate.handoff import output_name, size_name, write_manifest

    size = (image_size, image_size)
    for p, image in zip(pairs, images, strict=True):
        atomic_save_image(out / size_name(size) / output_name(p), Image.fromarray(image))
    write_manifest(out, pairs, size, size)


def vae_ceiling(sd2: Path, data: Path, pairs: list[dict]):
    """The autoencoder's reconstructions of the pairs' targets (uint8 arrays at image_size)."""
    from src.models.sd2 import load_vae
    from src.synthetic.autoencoder import load_images, reconstruct, to_uint8

    targets = load_images([data / p["target_image"] for p in pairs], (image_size, image_size))
    return to_uint8(reconstruct(load_vae(str(sd2)), targets))


def c2(data: Path, generated: Path, method: str) -> tuple[dict, float]:
    seconds = run(f"C2 {method}", "C2.eval.caculate_metrics.py", "--preset=tiny", f"--dataset_root={data}",
                  f"--generated={generated}", f"--eval_sizes=['{image_size}x{image_size}']", "--fid_reference=test",
                  f"--method={method}", *c2_args)
    metrics = json.loads((generated / "metrics.json").read_text())
    return metrics[f"{image_size}x{image_size}"], seconds


def markdown(results: dict) -> str:
    fmt = lambda v, d: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    b = results["budget"]
    lines = [
        SECTION, "",
        f"`make bench-synthetic` (`bench/synthetic_transfer.py`, run {results['date']}): FPDM's tiny preset trained "
        f"from scratch on a synthetic set whose answer is known: {results['data']['identities']} identities "
        f"({results['data']['test_identities']} held out for test), {results['data']['poses_per_identity']} poses "
        f"each, {image_size}x{image_size}, clothing colours and pattern per identity, plain background. "
        f"{results['data']['benchmark_pairs']} test pairs (test identities only, never seen in training).", "",
        f"Budget: VAE {b['vae_steps']} steps (batch {b['vae_batch_size']}), B1 {b['b1_steps']} steps (batch {b['b1_batch_size']}), B2 "
        f"{b['b2_steps']} steps (batch {b['b2_batch_size']}, lr {b2_lr}, EMA {b2_ema_decay or 'off'}); {b['total_seconds'] / 60:.1f} min in total on "
        f"{b['machine']} ({', '.join(f'{k} {v:.0f}s' for k, v in b['seconds'].items())}). Sampling: "
        f"{num_inference_steps} {scheduler} steps, guidance {guidance_scale}. Learned tiny VAE: reconstruction "
        f"PSNR {results['vae']['psnr_test']:.2f} dB on the test images, mean garment-colour error "
        f"{results['vae']['colour_error_test']:.1f} of 255 (scaling factor {results['vae']['scaling_factor']:.3f}).", "",
        "| method | SSIM | PSNR | pose IoU | appearance accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["methods"].items():
        lines.append(f"| {LABELS.get(name, name)} | {fmt(r['ssim'], 4)} | {fmt(r['psnr'], 2)} | "
                     f"{fmt(r['pose_iou'], 3)} | {fmt(r['appearance_accuracy'], 3)} |")
    lines += [
        "",
        f"Pose IoU: silhouette of the generated figure against the target's. Appearance accuracy: share of pairs "
        f"whose generated clothing colours (mean upper and lower garment colour at the target pose) are nearest "
        f"those of the own identity among all {results['data']['test_identities']} test identities (chance "
        f"{1 / results['data']['test_identities']:.3f}). SSIM/PSNR are C2's, at {image_size}x{image_size}. "
        "VAE ceiling: the learned autoencoder's own reconstruction of each target, the best that a model "
        "decoding its latents can score; read every other row against it. "
        "Ablations sample the same trained model with one condition zeroed in every guidance branch "
        "(`FPDMPipeline(..., drop_conditions=...)`). Full numbers: `bench/results/synthetic.json`; grid (source | "
        "target pose | ground truth | methods): `bench/results/synthetic_grid.png`.",
        "",
    ]
    return "\n".join(lines)


def main() -> dict:
    import platform

    # before the first import of huggingface_hub, which reads them once: every weight is local
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import torch

    from src.util.fileio import atomic_save_image, atomic_write_json
    from src.pipeline import FPDMPipeline
    from src.synthetic.figures import TransferScorer, make_synthetic_dataset, pair_grid

    if threads > 0:
        torch.set_num_threads(threads)
    unknown = [v for v in variants if v not in REFERENCES and v not in DROPS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose among {', '.join(REFERENCES + tuple(DROPS))}")
    if len(pose_channels) != len(vae_channels):
        raise SystemExit(f"pose_channels {pose_channels} needs one entry per VAE block {vae_channels}: the pose "
                         "features must come out at the latent size")
    start = time.time()
    out, results_path = Path(out_dir), Path(results_dir)
    for sub in ("data", "sd2", "B1", "B2", "B2_without_fusion", "C1"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out, "bench_config.json")
    seconds: dict[str, float] = {}
    data, sd2 = out / "data", out / "sd2"
    size = (image_size, image_size)
    size_arg = f"({image_size},{image_size})"

    t = time.time()
    summary = make_synthetic_dataset(data, n_identities=identities, poses_per_identity=poses_per_identity,
                                     test_identities=test_identities, width=image_size, height=image_size,
                                     seed=data_seed, min_clothing_distance=min_clothing_distance)
    pairs = benchmark_pairs(data)
    pairs_file = "benchmark_pairs_data.json"
    atomic_write_json(data / pairs_file, pairs)
    seconds["data"] = time.time() - t
    print(f"data: {summary}; {len(pairs)} benchmark pairs")
    seconds["A1"] = run("A1", "A1.pose_data_preprocessing.py", "--preset=tiny", f"--dataset_root={data}")

    print("\n=== VAE", flush=True)
    t = time.time()
    vae_stats = train_vae(data, sd2)
    seconds["VAE"] = time.time() - t

    b1_out = out / "B1"
    seconds["B1"] = run("B1", "B1.train_Fusion_model.py", "--preset=tiny", f"--dataset_root={data}",
                        f"--out_dir={b1_out}", f"--max_steps={b1_steps}", f"--batch_size={b1_batch_size}",
                        f"--image_size={image_size}", f"--seed={seed}", *b1_args)
    b2_common = ["--preset=tiny", f"--dataset_root={data}", f"--pretrained_model={sd2}",
                 f"--fusion_model={b1_out / 'fusion_model'}", f"--target_size={size_arg}",
                 f"--source_size={image_size}", f"--fusion_size={image_size}",
                 f"--pose_draw_size=({pose_draw_size[0]},{pose_draw_size[1]})",
                 f"--pose_channels={tuple(pose_channels)}", f"--max_steps={b2_steps}", f"--batch_size={b2_batch_size}", f"--lr={b2_lr}",
                 f"--checkpointing_steps={b2_steps}", f"--validation_steps={b2_steps}", f"--val_pairs={pairs_file}",
                 f"--seed={seed}"]
    if b2_ema_decay > 0:
        b2_common += ["--use_ema=True", f"--ema_decay={b2_ema_decay}"]
    seconds["B2"] = run("B2", "B2.train_Diffusion_model.py", *b2_common, f"--out_dir={out / 'B2'}", *b2_args)
    if train_without_fusion:
        seconds["B2 without fusion"] = run("B2 without fusion", "B2.train_Diffusion_model.py", *b2_common,
                                           f"--out_dir={out / 'B2_without_fusion'}", "--drop_fusion=1.0", *b2_args)

    c1 = out / "C1"
    seconds["C1"] = run("C1", "C1.test_Diffusion_model.py", "--preset=tiny", f"--pipeline={out / 'B2' / 'pipeline'}",
                        f"--dataset_root={data}", f"--test_pairs={pairs_file}", f"--out_dir={c1 / 'fpdm'}",
                        f"--size={size_arg}", f"--eval_size={size_arg}",
                        f"--pose_draw_size=({pose_draw_size[0]},{pose_draw_size[1]})", "--test_pose=draw",
                        f"--num_inference_steps={num_inference_steps}", f"--guidance_scale={guidance_scale}",
                        f"--scheduler={scheduler}", f"--seed={seed}", f"--batch_size={c1_batch_size}")
    methods = {"fpdm": c1 / "fpdm"}
    t = time.time()
    scorer = TransferScorer(data, pairs, size)
    answers = {"copy_source": scorer.sources, "vae_ceiling": lambda: vae_ceiling(sd2, data, pairs)}
    for v in (v for v in variants if v in REFERENCES):
        write_answers(c1 / v, pairs, answers[v]())
        methods[v] = c1 / v
    ablations = [v for v in variants if v in DROPS]
    if ablations:
        pipe = FPDMPipeline.from_pretrained(out / "B2" / "pipeline")
        pipe.set_progress_bar_config(disable=True)
        for v in ablations:
            generate_variant(pipe, data, pairs_file, c1 / v, DROPS[v])
            methods[v] = c1 / v
    if train_without_fusion:
        pipe = FPDMPipeline.from_pretrained(out / "B2_without_fusion" / "pipeline")
        pipe.set_progress_bar_config(disable=True)
        generate_variant(pipe, data, pairs_file, c1 / "b2_without_fusion", ("fusion",))
        methods["b2_without_fusion"] = c1 / "b2_without_fusion"
    seconds["variants"] = time.time() - t

    table, c2_seconds = {}, 0.0
    for name, folder in methods.items():
        metrics, s = c2(data, folder, LABELS.get(name, name))
        c2_seconds += s
        task = scorer.score(scorer.generated(folder))
        table[name] = {**{k: metrics.get(k) for k in ("ssim", "ssim_256", "psnr", "lpips", "fid")},
                       "pose_iou": task["pose_iou"], "appearance_accuracy": task["appearance_accuracy"],
                       "count": task["count"], "c2_protocol": metrics.get("protocol")}
    seconds["C2"] = c2_seconds
    total = time.time() - start

    b1_metrics = json.loads((b1_out / "metrics.json").read_text())
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "config": {k: v for k, v in cfg.items()},
        "data": {**summary, "identities": identities, "test_identities": test_identities,
                 "poses_per_identity": poses_per_identity, "size": list(size), "benchmark_pairs": len(pairs)},
        "budget": {"vae_steps": vae_steps, "vae_batch_size": vae_batch_size, "b1_steps": b1_steps, "b1_batch_size": b1_batch_size,
                   "b2_steps": b2_steps, "b2_batch_size": b2_batch_size, "seconds": seconds,
                   "total_seconds": total,
                   "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
                              f"torch threads {torch.get_num_threads()}"},
        "vae": {k: v for k, v in vae_stats.items() if k != "history"},
        "b1": {"train": b1_metrics.get("train"), "val": b1_metrics.get("val")},
        "methods": table,
    }
    grid = atomic_save_image(results_path / "synthetic_grid.png", pair_grid(
        data, pairs, {LABELS.get(k, k): v for k, v in methods.items() if k not in REFERENCES}, size, pose_draw_size,
        rows=grid_rows))
    publish(results, results_path / "synthetic.json", markdown(results), readme)
    print(f"results: {results_path / 'synthetic.json'}; grid: {grid}; total {total / 60:.1f} min")
    return results


if __name__ == "__main__":
    cfg = configure(globals(), presets=PRESETS)
    main()
