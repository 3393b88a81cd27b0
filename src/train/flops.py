"""Model FLOPs of B2's training step, for the MFU that B2 logs beside images/s.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions
and attention, 2 FLOPs per multiply-add; normalisations and other element-wise work are not
counted) on a copy of the pipeline's architecture on PyTorch's ``meta`` device: shapes only, no
memory, no arithmetic, the trained pipeline and the RNGs untouched. One step is
``src.train.stage2.training_loss`` and its backward: the frozen models' forward (VAE encoder,
source encoder, fusion model) and the trained parts' forward and backward, model FLOPs only
(gradient checkpointing's recomputation is not counted). bench/flops.py breaks the same count
down per component.

MFU = FLOPs per image x images/s / (peak FLOP/s x processes), the peak being the device's dense
bf16 tensor-core figure (``src.util.devices.peak_bf16_flops``); on the CPU or a GPU missing from
that table there is no MFU, and B2 says so in its one line about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..util.devices import device_name, peak_bf16_flops
from ..util.errors import first_line

# Every FPDMPipeline component that holds weights; the scheduler is rebuilt from its config.
MODULES = ("vae", "unet", "pose_encoder", "source_mlp", "fusion_mlp", "source_encoder", "fusion_model")


def count_flops(fn, *args, **kwargs) -> tuple[int, object]:
    """(FLOPs, result) of ``fn(*args, **kwargs)`` under ``FlopCounterMode``."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), out


def batch_shapes(height: int, width: int, source_size: int, fusion_size: int) -> dict:
    """(height, width) of each image of a B2 batch (``DiffusionDataset`` items)."""
    return {"target": (height, width), "target_pose": (height, width), "source": (source_size, source_size),
            "fusion_source": (fusion_size, fusion_size), "fusion_pose": (fusion_size, fusion_size)}


def meta_copy(pipe):
    """The pipeline's architecture (every component rebuilt from its config, each parameter's
    ``requires_grad`` as in ``pipe``) on the meta device, and a fresh scheduler: ``add_noise``
    moves a scheduler's tables to the latents' device, which must not happen to ``pipe``'s."""
    from ..pipeline import FPDMPipeline

    parts = {}
    with torch.device("meta"):
        for name in MODULES:
            module = getattr(pipe, name)
            parts[name] = copy = type(module).from_config(module.config)
            trained = dict(module.named_parameters())
            for key, param in copy.named_parameters():
                param.requires_grad_(trained[key].requires_grad)
    c = pipe.config
    return FPDMPipeline(scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config), **parts,
                        source_size=c.source_size, fusion_size=c.fusion_size, height=c.height, width=c.width,
                        pose_draw_size=c.pose_draw_size, pose_format=c.pose_format)


def train_step_flops(pipe, batch: dict, device, rates: dict | float = 0.2, noise_offset: float = 0.1) -> int:
    """FLOPs of one B2 step on ``batch``: ``training_loss`` and its backward, counted at once."""
    from .stage2 import training_loss

    denoiser = pipe.denoiser()
    denoiser.train()
    forward, loss = count_flops(training_loss, pipe, denoiser, batch, device, rates, noise_offset)
    backward, _ = count_flops(loss.backward)
    denoiser.zero_grad(set_to_none=True)
    return forward + backward


def train_flops_per_image(pipe, rates: dict | float = 0.2, noise_offset: float = 0.1, batch: int = 2) -> float:
    """Model FLOPs per image of one B2 step of ``pipe`` at its configured sizes, counted on a meta
    copy for a batch of ``batch``."""
    c = pipe.config
    meta = torch.device("meta")
    inputs = {k: torch.empty(batch, 3, *hw, device=meta)
              for k, hw in batch_shapes(c.height, c.width, c.source_size, c.fusion_size).items()}
    with torch.random.fork_rng(devices=[]):  # drop_masks draws from the CPU generator
        return train_step_flops(meta_copy(pipe), inputs, meta, rates, noise_offset) / batch


def mfu(flops_per_image: float | None, images_per_s: float | None, peak: float | None) -> float | None:
    """Model FLOP utilisation, a fraction: FLOPs per image x images/s / peak FLOP/s."""
    if not flops_per_image or not images_per_s or not peak:
        return None
    return flops_per_image * images_per_s / peak


@dataclass
class TrainingMFU:
    """B2's MFU: ``of(images_per_s)`` (all processes' images) gives it, None without a peak;
    ``note`` is the line that says what it is measured against, or why there is none."""

    flops_per_image: float | None
    peak: float | None  # FLOP/s of all processes together
    note: str

    def of(self, images_per_s: float) -> float | None:
        return mfu(self.flops_per_image, images_per_s, self.peak)


def training_mfu(pipe, device, num_processes: int = 1, rates: dict | float = 0.2,
                 noise_offset: float = 0.1) -> TrainingMFU:
    """The MFU of B2 training ``pipe`` on ``device`` in each of ``num_processes`` processes; the
    FLOPs are counted only where a peak is known (a few seconds at the paper's size)."""
    name = device_name(device)
    peak, source = peak_bf16_flops(name)
    if peak is None:
        return TrainingMFU(None, None, f"MFU: not logged ({source})")
    try:
        per_image = train_flops_per_image(pipe, rates, noise_offset)
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        return TrainingMFU(None, None, f"MFU: not logged (counting the step's FLOPs failed: {first_line(e)[:200]})")
    total = peak * num_processes
    return TrainingMFU(per_image, total, f"MFU: {per_image / 1e9:,.1f} GFLOPs per image (model FLOPs of one "
                                         f"training step) x images/s / {peak / 1e12:g} TFLOP/s dense bf16 "
                                         f"({source}, {name}) x {num_processes} process(es)")


__all__ = [
    "MODULES", "TrainingMFU", "batch_shapes", "count_flops", "meta_copy", "mfu", "train_flops_per_image",
    "train_step_flops", "training_mfu",
]
