"""FLOP accounting of one B2 training step and one C1 sampling step, per component and per image.

    python bench/flops.py                  # full-size architectures, 512x352 and 256x176 (seconds, no GPU)
    python bench/flops.py --preset=tiny    # the tiny preset's models (tests)

The models are the real architectures (SD2 UNet and VAE, DINOv2-large, CLIP ViT-L/14 fusion model,
from the configs in src/models/configs) with random weights, built on PyTorch's ``meta`` device:
shapes only, no memory and no arithmetic. FLOPs are counted by torch.utils.flop_counter.FlopCounterMode
(matrix products, convolutions and attention, 2 FLOPs per multiply-add; normalisations and other
element-wise work are not counted), for a batch of ``batch_size`` and divided by it.

Training step: VAE encode, source encoder, fusion model (frozen, forward only), pose encoder +
source MLP and UNet (forward and backward); ``train_step`` is their sum and must equal
``one_pass_train_step``, the whole step (src.train.stage2.training_loss + backward) counted at
once.
Sampling: one denoising step is one UNet call on the two guidance branches of one guidance scale
(three with a separate fusion scale, and with C1's cross-frame attention for videos, also counted); the source encoder,
fusion model, pose encoder + source MLP and the VAE decode run once per image.
Writes ``out`` (JSON) and prints a table. bench/gpu_benchmark.py uses the same counts for MFU.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
model = "full"                               # "full": shipped configs, real sizes; "tiny": the tiny preset
sizes = [(512, 352), (256, 176)]             # target (height, width) of each accounting
source_sizes = [512, 256]                    # the source image (square) at each size
fusion_size = 224                            # the fusion model's inputs (CLIP resizes to 224 anyway)
batch_size = 2                               # counted for this batch, reported per image
num_inference_steps = 20
guidance_scale = 2.0
components = ["vae_encode", "source_encoder", "fusion_model", "pose_encoder_source_mlp", "unet", "vae_decode"]
device = "meta"                              # "meta": shapes only; "cpu" runs the arithmetic (batch 1 advised)
out = "bench/results/flops.json"
# -----------------------------------------------------------------------------------------------
PRESETS = {
    "tiny": {"model": "tiny", "sizes": [(64, 48)], "source_sizes": [64], "fusion_size": 64,
             "out": "logs/bench_flops/flops_tiny.json"},
}

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import configure  # noqa: E402

TRAIN_ROWS = ["vae_encode", "source_encoder", "fusion_model", "pose_encoder_source_mlp_forward", "unet_forward",
              "unet_backward", "pose_encoder_source_mlp_backward", "forward", "backward", "train_step",
              "train_step_precomputed", "one_pass_train_step"]
SAMPLE_ROWS = ["source_encoder", "fusion_model", "pose_encoder_source_mlp", "vae_decode", "once",
               "unet_step_2_branches", "unet_step_3_branches", "unet_step_2_branches_cross_frame", "per_image"]


def account(size, source_size, on_device: str, batch: int) -> dict:
    from bench.perf import flop_accounting

    return flop_accounting(model, size[0], size[1], source_size=source_size, fusion_size=fusion_size,
                           batch=batch,
                           num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                           components=components, device=on_device)


def table(results: dict) -> str:
    names = list(results)
    fmt = lambda v: "" if v is None else f"{v / 1e9:,.1f}"  # noqa: E731
    head = ["| GFLOPs per image | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    rows = [f"| train: {r} | " + " | ".join(fmt(results[n]["train"].get(r)) for n in names) + " |"
            for r in TRAIN_ROWS if any(r in results[n]["train"] for n in names)]
    rows += [f"| sample: {r}{f' ({num_inference_steps} steps)' if r == 'per_image' else ''} | "
             + " | ".join(fmt(results[n]["sample"].get(r)) for n in names) + " |"
             for r in SAMPLE_ROWS if any(r in results[n]["sample"] for n in names)]
    return "\n".join(head + rows)


def main() -> dict:
    import torch

    from src.util.fileio import atomic_write_json

    if len(source_sizes) != len(sizes):
        raise SystemExit(f"source_sizes {source_sizes} needs one entry per size {sizes}")
    start = time.time()
    results = {}
    for size, source_size in zip(sizes, source_sizes):
        name = f"{size[0]}x{size[1]}"
        try:
            results[name] = account(size, source_size, device, batch_size)
        except (NotImplementedError, RuntimeError) as e:
            if device != "meta":
                raise
            print(f"{name}: counting on the meta device failed ({type(e).__name__}: {e}); counting on the CPU, batch 1")
            results[name] = account(size, source_size, "cpu", 1)
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "model": model,
              "counter": "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add)",
              "unit": "FLOPs per image", "config": dict(cfg), "seconds": time.time() - start, "sizes": results}
    path = atomic_write_json(Path(out), report)
    print(table(results))
    print(f"flops: {path} ({report['seconds']:.1f}s)")
    return report


if __name__ == "__main__":
    cfg = configure(globals(), presets=PRESETS)
    main()
