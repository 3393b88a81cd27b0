"""Where and in what precision to run: the one resolver of the scripts' "auto" settings.

- ``resolve_device("auto")``: the CUDA GPU when there is one, else the CPU; any other name
  (``"cpu"``, ``"cuda:1"``) or a ``torch.device`` is taken as is.
- ``resolve_dtype("auto", device)``: bfloat16 on a CUDA device that supports it, float32
  elsewhere; or by name, ``"fp32"``, ``"bf16"``, ``"fp16"`` or torch's ``"float32"``, ``"bfloat16"``,
  ``"float16"``.
- ``enable_tf32(enable)``: TF32 for matrix products and cuDNN convolutions, both on or both
  off; ``without_tf32()`` turns both off for a block (feature extraction for FID).
- ``cpu_threads_note(num_processes)``: the one-line warning the scripts print when ``accelerate
  launch`` left them one CPU thread on a machine without a GPU.
- ``device_name(device)`` and ``peak_bf16_flops(name)``: the dense bf16 peak FLOP/s that MFU is
  measured against, for the GPUs in ``PEAK_BF16_FLOPS``; none for the CPU or other devices.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          # torch's own names, as users write them (torch.bfloat16 -> "bfloat16")
          "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Dense (no sparsity) bf16 tensor-core peak in FLOP/s; the first name found in the device name
# wins, so the PCIe and NVL variants come before the H100 SXM.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),   # SXM
    ("H200", 989e12),
    ("A100", 312e12),
)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: cuda if available, else cpu; anything else as ``torch.device(name)``."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device with bf16 support, else float32; or one of ``DTYPES``."""
    if name == "auto":
        device = resolve_device(device)
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def enable_tf32(enable: bool = True) -> None:
    """TF32 for matrix products and cuDNN convolutions (Ampere and later GPUs), both on or both off."""
    torch.backends.cuda.matmul.allow_tf32 = enable
    torch.backends.cudnn.allow_tf32 = enable


def device_name(device) -> str:
    """The GPU's name ('NVIDIA H100 80GB HBM3'), or 'CPU (<processor>)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def peak_bf16_flops(name: str) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, where it comes from) of a device name (``device_name``); (None,
    why) for a device missing from ``PEAK_BF16_FLOPS``, the CPU included."""
    for key, value in PEAK_BF16_FLOPS:
        if key.lower() in name.lower():
            return value, f"table: {key}"
    return None, f"no dense bf16 peak known for {name}"


@contextmanager
def without_tf32():
    """Full fp32 precision for the block (no TF32), the previous settings restored after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    enable_tf32(False)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def cpu_threads_note(num_processes: int = 1, environ=None) -> str | None:
    """A one-line warning when a process runs on the CPU with one thread although the machine has
    cores to spare and ``accelerate launch`` started it, else None.

    Without a GPU (and without ``--cpu``), ``accelerate launch`` sets ``OMP_NUM_THREADS`` to the
    environment's value or 1, so every process computes on one core. The value is not changed
    here: a user's own ``OMP_NUM_THREADS=1`` reads the same, and it may be deliberate."""
    environ = os.environ if environ is None else environ
    if torch.cuda.is_available() or "ACCELERATE_DYNAMO_BACKEND" not in environ or torch.get_num_threads() > 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, num_processes)
    if per_process <= 1:
        return None
    return (f"warning: one CPU thread per process (OMP_NUM_THREADS={environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"which accelerate launch sets on a machine without a GPU) on a machine with {cores} cores: "
            f"accelerate launch --num_cpu_threads_per_process={per_process} ..., or run the script with python")
