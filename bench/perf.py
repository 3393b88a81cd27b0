"""Performance measurement shared by ``bench/flops.py`` and ``bench/gpu_benchmark.py``.

- ``random_pipeline``: the FPDM architecture with random weights, built directly on a device:
  ``"full"`` = the real sizes from the configs shipped in ``src/models/configs`` (SD2 UNet, VAE
  and scheduler, DINOv2-large source encoder, CLIP ViT-L/14 fusion model), ``"tiny"`` = the tiny
  preset's. On the ``meta`` device nothing is allocated or computed: that is what the FLOP
  counts use. Speed does not depend on the weights' values.
- ``flop_accounting``: FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matrix products,
  convolutions and attention; 2 FLOPs per multiply-add) of one B2 training step and one C1
  sampling step per component, per image.
- ``measure_training`` / ``measure_sampling`` / ``measure_c2`` / ``sampling_psnr``: timed runs
  of B2's step (``src.train.stage2.training_loss``, backward, clipping, AdamW), of C1's
  sampling (``FPDMPipeline.__call__``) and of C2's metrics (``src.evaluate.metrics.score_generated``)
  under a set of speed switches, and the PSNR between images sampled in fp32 and with the fast
  settings.
- ``peak_flops`` (B2's table of dense bf16 peaks, or an override) and ``mfu``
  (``src.train.flops``, as B2 logs it): model FLOP utilisation.
"""

from __future__ import annotations

import contextlib
import gc
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.train.flops import batch_shapes, count_flops, mfu, train_step_flops
from src.util.devices import PEAK_BF16_FLOPS, device_name, peak_bf16_flops

MODELS = ("full", "tiny")
COMPONENTS = ("vae_encode", "source_encoder", "fusion_model", "pose_encoder_source_mlp", "unet", "vae_decode")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONDITION_DROPOUT = 0.2   # B2's drop_pose / drop_source / drop_fusion
NOISE_OFFSET = 0.1        # B2's noise_offset
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-4, 1e-2, 1.0   # B2's AdamW and clipping


# ---------------------------------------------------------------------------------------------
# models


def random_pipeline(model: str = "full", device="cpu", *, height: int = 512, width: int = 352,
                    source_size: int = 512, fusion_size: int = 224, seed: int = 0):
    """An FPDMPipeline of random weights built on ``device`` ("meta": no memory): ``"full"`` from
    the shipped configs, ``"tiny"`` as the tiny preset. Frozen parts (VAE, source encoder, fusion
    model) have ``requires_grad`` off, as in ``src.train.stage2.build_pipeline``. Seeds
    torch's global RNG."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from src.models import shipped_config
    from src.models.fusion import FusionModel
    from src.models.heads import FusionMLP, SourceMLP
    from src.models.pose_encoder import PoseEncoder
    from src.models.sd2 import tiny_sd2_configs
    from src.models.source_encoder import SourceEncoder
    from src.pipeline import FPDMPipeline
    from src.train.stage2 import TINY_HEADS, Heads

    if model not in MODELS:
        raise ValueError(f"model {model!r}: choose one of {', '.join(MODELS)}")
    torch.manual_seed(seed)
    with torch.device(device):
        if model == "full":
            fusion = FusionModel(encoder_config={"backend": "transformers", "source": "random",
                                                 "clip_config": shipped_config("clip_vit_large_patch14_vision")})
            source_encoder = SourceEncoder(backend="dinov2", model_config=shipped_config("dinov2_large"),
                                           image_size=source_size)
            unet_config, vae_config = shipped_config("sd2_unet"), shipped_config("sd2_vae")
            scheduler_config = shipped_config("sd2_scheduler")
            heads = Heads()
        else:
            fusion = FusionModel.tiny()
            source_encoder = SourceEncoder.tiny(image_size=source_size)
            tiny = tiny_sd2_configs()
            unet_config, vae_config, scheduler_config = tiny["unet"], tiny["vae"], tiny["scheduler"]
            heads = TINY_HEADS
        unet = UNet2DConditionModel.from_config({**unet_config, "class_embed_type": "identity"})
        vae = AutoencoderKL.from_config(vae_config)
        pose_encoder = PoseEncoder(out_channels=unet.config.block_out_channels[0],
                                   block_out_channels=heads.pose_channels)
        source_mlp = SourceMLP(in_dim=source_encoder.width, hidden_dim=heads.mlp_hidden_dim,
                               out_dim=unet.config.cross_attention_dim)
        fusion_mlp = FusionMLP(in_dim=fusion.embed_dim, hidden_dim=fusion.embed_dim,
                               out_dim=unet.time_embedding.linear_2.out_features)
    vae.requires_grad_(False).eval()
    fusion.requires_grad_(False).eval()
    return FPDMPipeline(vae=vae, unet=unet, scheduler=DDPMScheduler.from_config(scheduler_config),
                        pose_encoder=pose_encoder, source_mlp=source_mlp, fusion_mlp=fusion_mlp,
                        source_encoder=source_encoder,
                        fusion_model=fusion, source_size=source_size, fusion_size=fusion_size,
                        height=height, width=width)


def example_batch(batch: int, height: int, width: int, source_size: int, fusion_size: int, device="cpu",
                  seed: int = 0) -> dict:
    """Random images in [-1, 1] shaped as a stacked B2 batch (``DiffusionDataset`` items)."""
    g = torch.Generator().manual_seed(seed)
    shapes = batch_shapes(height, width, source_size, fusion_size)
    if torch.device(device).type == "meta":
        return {k: torch.empty(batch, 3, *hw, device="meta") for k, hw in shapes.items()}
    return {k: (torch.rand(batch, 3, *hw, generator=g) * 2 - 1).to(device) for k, hw in shapes.items()}


# ---------------------------------------------------------------------------------------------
# FLOP accounting


def _vae_latents(pipe, target):
    return pipe.vae.encode(target.to(pipe.vae.dtype)).latent_dist.sample() * pipe.vae.config.scaling_factor


def _latent_shape(pipe, batch: dict) -> tuple[int, int, int]:
    """(batch, latent height, latent width) of ``batch["target"]``."""
    h, w = batch["target"].shape[-2:]
    return batch["target"].shape[0], h // pipe.vae_scale_factor, w // pipe.vae_scale_factor


def _random_latents(pipe, batch: dict, device) -> torch.Tensor:
    b, h, w = _latent_shape(pipe, batch)
    return torch.randn(b, pipe.unet.config.in_channels, h, w, device=device)


def _frozen_features(pipe, batch: dict, components, device, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Source tokens and fusion embeddings of ``batch``: counted into ``out`` for the components
    asked for, random tensors of the same shapes for the others."""
    b = batch["target"].shape[0]
    if "source_encoder" in components:
        out["source_encoder"], tokens = count_flops(pipe.source_encoder, batch["source"])
    else:
        tokens = torch.randn(b, pipe.source_encoder.num_tokens(), pipe.source_encoder.width, device=device)
    if "fusion_model" in components:
        out["fusion_model"], fusion = count_flops(pipe.fusion_embedding, batch["fusion_source"], batch["fusion_pose"])
    else:
        fusion = torch.randn(b, pipe.fusion_model.embed_dim, device=device)
    return tokens, fusion


def _random_conditions(pipe, batch: dict, tokens: torch.Tensor, fusion: torch.Tensor, device):
    """Conditions of the shapes the pose encoder and source MLP would give, when they are not counted."""
    from src.models.denoiser import Conditions

    b, h, w = _latent_shape(pipe, batch)
    unet = pipe.unet.config
    return Conditions(torch.randn(b, unet.block_out_channels[0], h, w, device=device),
                      torch.randn(b, tokens.shape[1], unet.cross_attention_dim, device=device), fusion)


def _train_flops(pipe, batch: dict, components, device) -> dict:
    """FLOPs of one B2 step on ``batch`` per component; a component left out is replaced by a
    random tensor of its output's shape."""
    from src.models.denoiser import Conditions
    from src.train.stage2 import drop_masks

    b = batch["target"].shape[0]
    denoiser = pipe.denoiser()
    denoiser.train()
    out = {}
    with torch.no_grad():
        if "vae_encode" in components:
            out["vae_encode"], latents = count_flops(_vae_latents, pipe, batch["target"])
        else:
            latents = _random_latents(pipe, batch, device)
        tokens, fusion = _frozen_features(pipe, batch, components, device, out)
    drop = drop_masks(b, CONDITION_DROPOUT, device=device)
    timesteps = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (b,), device=device)
    noisy = pipe.scheduler.add_noise(latents.float(), torch.randn_like(latents.float()), timesteps)
    if "pose_encoder_source_mlp" in components:
        out["pose_encoder_source_mlp_forward"], conditions = count_flops(
            denoiser.encode_conditions, batch["target_pose"], tokens, fusion, drop["pose"], drop["source"],
            drop["fusion"])
    else:
        conditions = _random_conditions(pipe, batch, tokens, fusion, device)
    if "unet" in components:
        # The UNet runs on detached copies of the conditions, so that its backward and the pose
        # encoder's / source MLP's are counted apart.
        leaves = Conditions(conditions.pose_features.detach().requires_grad_(),
                            conditions.encoder_hidden_states.detach().requires_grad_(), conditions.fusion)
        out["unet_forward"], pred = count_flops(denoiser.denoise, noisy, timesteps, leaves)
        loss = F.mse_loss(pred.float(), torch.zeros_like(pred, dtype=torch.float32))
        out["unet_backward"], _ = count_flops(loss.backward)
        if "pose_encoder_source_mlp" in components:
            out["pose_encoder_source_mlp_backward"], _ = count_flops(
                torch.autograd.backward, [conditions.pose_features, conditions.encoder_hidden_states],
                [leaves.pose_features.grad, leaves.encoder_hidden_states.grad])
    if all(c in components for c in COMPONENTS[:5]):
        denoiser.zero_grad(set_to_none=True)
        out["one_pass_train_step"] = train_step_flops(pipe, batch, device, CONDITION_DROPOUT, NOISE_OFFSET)
    denoiser.zero_grad(set_to_none=True)
    return out


@torch.no_grad()
def _sample_flops(pipe, batch: dict, components, guidance_scale: float, device) -> dict:
    """FLOPs per component of C1's once-per-image work and of one sampling step: the guidance
    branches in one batched UNet call, two (one guidance scale, the default) and three (a separate
    fusion scale)."""
    from src.models.cross_frame_attention import anchor_indices, cross_frame_attention
    from src.pipeline import FPDMPipeline, guidance_conditions

    denoiser = pipe.denoiser()
    denoiser.eval()
    out = {}
    tokens, fusion = _frozen_features(pipe, batch, components, device, out)
    if "pose_encoder_source_mlp" in components:
        out["pose_encoder_source_mlp"], conditions = count_flops(denoiser.encode_conditions, batch["target_pose"],
                                                                 tokens, fusion)
    else:
        conditions = _random_conditions(pipe, batch, tokens, fusion, device)
    latents = _random_latents(pipe, batch, device)
    if "unet" in components:
        t = torch.tensor(pipe.scheduler.config.num_train_timesteps // 2, device=device)
        for n in (2, 3):
            out[f"unet_step_{n}_branches"], _ = count_flops(
                FPDMPipeline.guided_prediction, denoiser, latents, t,
                guidance_conditions(conditions, three_branches=n == 3), guidance_scale)
        # C1's video option: every frame's self-attention also over its anchor's tokens (the batch's
        # items as frames of one video, anchored to the first; "previous" costs the same)
        with cross_frame_attention(pipe.unet, anchor_indices([0] * latents.shape[0], "first")):
            out["unet_step_2_branches_cross_frame"], _ = count_flops(
                FPDMPipeline.guided_prediction, denoiser, latents, t,
                guidance_conditions(conditions, three_branches=False), guidance_scale)
    if "vae_decode" in components:
        out["vae_decode"], _ = count_flops(pipe.vae.decode, latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor)
    return out


def flop_accounting(model: str = "full", height: int = 512, width: int = 352, source_size: int = 512,
                    fusion_size: int = 224, batch: int = 2,
                    num_inference_steps: int = 20, guidance_scale: float = 2.0, components=COMPONENTS,
                    device="meta") -> dict:
    """FLOPs per image of one B2 training step and of C1's sampling at one size.

    ``train``: ``vae_encode``, ``source_encoder``, ``fusion_model`` (frozen, forward only),
    ``pose_encoder_source_mlp_forward``/``_backward``, ``unet_forward``/``_backward``; sums
    ``forward``, ``backward``, ``train_step`` and ``train_step_precomputed`` (the step fed cached
    latents, tokens and fusion embeddings); ``one_pass_train_step``: the whole step
    (``training_loss`` + backward) counted at once, which must equal ``train_step``.
    ``sample``: ``unet_step_2_branches`` (one denoising step at one guidance scale, the default;
    ``unet_step_3_branches`` with a separate fusion scale; ``unet_step_2_branches_cross_frame``
    with C1's cross-frame attention) and the
    once-per-image ``source_encoder``, ``fusion_model``, ``pose_encoder_source_mlp`` and
    ``vae_decode``; ``per_image`` = steps x step + once.
    Counted for a batch of ``batch`` and divided by it."""
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown components {unknown}; choose among {', '.join(COMPONENTS)}")
    device = torch.device(device)
    pipe = random_pipeline(model, device, height=height, width=width, source_size=source_size,
                           fusion_size=fusion_size)
    inputs = example_batch(batch, height, width, source_size, fusion_size, device)
    train = {k: v / batch for k, v in _train_flops(pipe, inputs, components, device).items()}
    sample = {k: v / batch for k, v in _sample_flops(pipe, inputs, components, guidance_scale, device).items()}
    frozen = sum(train.get(k, 0) for k in ("vae_encode", "source_encoder", "fusion_model"))
    forward = frozen + train.get("pose_encoder_source_mlp_forward", 0) + train.get("unet_forward", 0)
    backward = train.get("unet_backward", 0) + train.get("pose_encoder_source_mlp_backward", 0)
    once = sum(sample.get(k, 0) for k in ("source_encoder", "fusion_model", "pose_encoder_source_mlp", "vae_decode"))
    step = sample.get("unet_step_2_branches", 0)
    return {
        "model": model, "size": [height, width], "source_size": source_size, "fusion_size": fusion_size,
        "batch": batch, "device": str(device),
        "components": list(components),
        "train": {**train, "forward": forward, "backward": backward, "train_step": forward + backward,
                  "train_step_precomputed": forward + backward - frozen},
        "sample": {**sample, "once": once, "step": step, "num_inference_steps": num_inference_steps,
                   "per_image": num_inference_steps * step + once},
    }


# ---------------------------------------------------------------------------------------------
# devices, peak FLOP/s, MFU


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def peak_flops(name: str, override: float = 0.0) -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s, where it comes from) of a device name (B2's table,
    ``src.util.devices.peak_bf16_flops``); ``override`` > 0 wins."""
    if override > 0:
        return float(override), "override"
    peak, source = peak_bf16_flops(name)
    return (peak, source) if peak else (None, "unknown device: pass peak_flops")


# ---------------------------------------------------------------------------------------------
# timing


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, warmup: int, iters: int, device) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, iters)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def set_tf32(enable: bool) -> None:
    """TF32 for matrix products and cuDNN convolutions, both on or both off."""
    torch.backends.cuda.matmul.allow_tf32 = enable
    torch.backends.cudnn.allow_tf32 = enable


def autocast(device, precision: str):
    """Autocast to ``precision`` ("bf16", "fp16") on the device's type; "fp32": none."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])


def reset_memory(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 30


def cleanup(device) -> None:
    """Free what a measurement left (after an error too) and forget compiled graphs."""
    torch._dynamo.reset()
    reset_memory(device)


def error_text(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _stats(times: list[float], batch: int) -> dict:
    median = statistics.median(times)
    return {"times_s": [round(t, 6) for t in times], "median_s": median, "mean_s": statistics.fmean(times),
            "images_per_s": batch / median, "s_per_image": median / batch}


# ---------------------------------------------------------------------------------------------
# B2 training step


@dataclass
class TrainSettings:
    """One configuration of B2's step. ``precision``: autocast dtype over fp32 weights ("bf16",
    "fp16" with a GradScaler as the authors' fp16 mixed precision, "fp32": none)."""

    batch: int = 16
    precision: str = "bf16"
    sdpa: bool = True
    tf32: bool = True
    channels_last: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False
    fused_adamw: bool = False
    precomputed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


BASELINE_TRAIN = dict(precision="fp16", sdpa=False, tf32=False, channels_last=False, compile=False,
                      gradient_checkpointing=False, fused_adamw=False, precomputed=False)


def apply_switches(denoiser, sdpa: bool, channels_last: bool, gradient_checkpointing: bool = False,
                   compile: bool = False, compile_kwargs: dict | None = None) -> None:
    """The FPDMDenoiser speed switches, as B2 and C1 set them."""
    denoiser.set_sdpa(sdpa)
    if channels_last:
        denoiser.set_channels_last(True)
    if gradient_checkpointing:
        denoiser.set_gradient_checkpointing(True)
    if compile:
        denoiser.compile_unet(**(compile_kwargs or {}))


def measure_training(settings: TrainSettings, device, *, model: str = "full", height: int = 512, width: int = 352,
                     source_size: int = 512, fusion_size: int = 224,
                     warmup: int = 3, iters: int = 10, compile_kwargs: dict | None = None, seed: int = 0) -> dict:
    """Time B2's step (``training_loss`` under autocast, backward, gradient clipping, AdamW) on a
    fixed random batch with random weights: images/s, step seconds, peak memory. Data loading
    is not included. With ``settings.precomputed`` the frozen features are computed once and
    fed to every step instead of running the VAE encoder, DINOv2 and the fusion model."""
    from src.train.stage2 import frozen_conditions, training_loss

    device = torch.device(device)
    reset_memory(device)
    set_tf32(settings.tf32)
    pipe = random_pipeline(model, device, height=height, width=width, source_size=source_size,
                           fusion_size=fusion_size, seed=seed)
    denoiser = pipe.denoiser()
    apply_switches(denoiser, settings.sdpa, settings.channels_last, settings.gradient_checkpointing,
                   settings.compile, compile_kwargs)
    denoiser.train()
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY,
                                  fused=True if settings.fused_adamw else None)
    scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
    batch = example_batch(settings.batch, height, width, source_size, fusion_size, device, seed)
    features = None
    if settings.precomputed:
        with autocast(device, settings.precision):
            features = frozen_conditions(pipe, batch, device)

    def step():
        with autocast(device, settings.precision):
            loss = training_loss(pipe, denoiser, batch, device, CONDITION_DROPOUT, NOISE_OFFSET, features)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = timed(step, warmup, iters, device)
    return {**_stats(times, settings.batch), "peak_memory_gib": peak_memory_gib(device)}


# ---------------------------------------------------------------------------------------------
# C1 sampling


@dataclass
class SampleSettings:
    """One configuration of C1's sampling. ``dtype``: the weights; ``autocast``: "" (none),
    "fp16" or "bf16" around the call (the authors: fp32 weights under fp16 autocast)."""

    batch: int = 16
    dtype: str = "bf16"
    autocast: str = ""
    sdpa: bool = True
    tf32: bool = True
    channels_last: bool = False
    compile: bool = False
    guidance_branches: int | None = None  # None: two at one guidance scale; 3: the authors' three

    def to_dict(self) -> dict:
        return asdict(self)


BASELINE_SAMPLE = dict(dtype="fp32", autocast="fp16", sdpa=False, tf32=False, channels_last=False, compile=False,
                       guidance_branches=3)


def sampling_pipeline(settings: SampleSettings, device, *, model: str = "full", height: int = 512, width: int = 352,
                      source_size: int = 512, fusion_size: int = 224,
                      compile_kwargs: dict | None = None, seed: int = 0, pipe=None):
    """A random-weight pipeline (or ``pipe``) with the settings' dtype and switches applied."""
    set_tf32(settings.tf32)
    if pipe is None:
        pipe = random_pipeline(model, device, height=height, width=width, source_size=source_size,
                               fusion_size=fusion_size, seed=seed)
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # a cast with .to() warns once per component
    try:
        pipe.to(dtype=PRECISIONS[settings.dtype])
    finally:
        diffusers_logging.set_verbosity(level)
    pipe.set_progress_bar_config(disable=True)
    apply_switches(pipe.denoiser(), settings.sdpa, settings.channels_last, compile=settings.compile,
                   compile_kwargs=compile_kwargs)
    return pipe


def sample_images(pipe, settings: SampleSettings, inputs: dict, device, *, steps: int, guidance_scale: float,
                  scheduler: str, seeds: list[int], output_type: str = "pt"):
    """C1's call of the pipeline on prepared tensors (per-item seeds), under the settings' autocast."""
    ctx = autocast(device, settings.autocast) if settings.autocast else contextlib.nullcontext()
    with ctx:
        return pipe(inputs["source"], inputs["target_pose"], fusion_pose=inputs["fusion_pose"],
                    num_inference_steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seeds=seeds,
                    output_type=output_type, guidance_branches=settings.guidance_branches).images


def measure_sampling(settings: SampleSettings, device, *, model: str = "full", height: int = 512, width: int = 352,
                     source_size: int = 512, fusion_size: int = 224,
                     steps: int = 20, guidance_scale: float = 2.0, scheduler: str = "ddpm", warmup: int = 1,
                     iters: int = 2, compile_kwargs: dict | None = None, seed: int = 0) -> dict:
    """Seconds per image of whole C1 pipeline calls (conditions, ``steps`` UNet steps on the
    settings' guidance branches, VAE decode) on a random batch, random weights."""
    device = torch.device(device)
    reset_memory(device)
    pipe = sampling_pipeline(settings, device, model=model, height=height, width=width, source_size=source_size,
                             fusion_size=fusion_size, compile_kwargs=compile_kwargs, seed=seed)
    inputs = example_batch(settings.batch, height, width, source_size, fusion_size, device, seed)
    seeds = list(range(seed, seed + settings.batch))
    times = timed(lambda: sample_images(pipe, settings, inputs, device, steps=steps, guidance_scale=guidance_scale,
                                        scheduler=scheduler, seeds=seeds), warmup, iters, device)
    return {**_stats(times, settings.batch), "peak_memory_gib": peak_memory_gib(device)}


def _to_uint8(images) -> list[np.ndarray]:
    return [np.clip(np.rint(np.nan_to_num(np.asarray(im, dtype=np.float64)) * 255), 0, 255).astype(np.uint8)
            for im in images]


def sampling_psnr(fast: SampleSettings, device, *, baseline: SampleSettings | None = None, model: str = "full",
                  height: int = 512, width: int = 352, source_size: int = 512, fusion_size: int = 224,
                  steps: int = 20, guidance_scale: float = 2.0,
                  scheduler: str = "ddpm", compile_kwargs: dict | None = None, seed: int = 0) -> dict:
    """PSNR (dB, uint8 images, data range 1, as C2) between images sampled from the same random
    weights, inputs and seeds in fp32 (no TF32) and with ``fast`` (and ``baseline``) settings;
    ``fast.batch`` images. ``inf`` where identical."""
    from src.evaluate.metrics import psnr

    device = torch.device(device)
    reset_memory(device)
    reference = SampleSettings(batch=fast.batch, dtype="fp32", autocast="", sdpa=True, tf32=False)
    pipe = sampling_pipeline(reference, device, model=model, height=height, width=width, source_size=source_size,
                             fusion_size=fusion_size, seed=seed)
    inputs = example_batch(fast.batch, height, width, source_size, fusion_size, device, seed)
    seeds = list(range(seed, seed + fast.batch))
    kwargs = dict(steps=steps, guidance_scale=guidance_scale, scheduler=scheduler, seeds=seeds, output_type="np")
    ref = _to_uint8(sample_images(pipe, reference, inputs, device, **kwargs))
    out = {"images": fast.batch, "reference": reference.to_dict()}
    runs = ([("baseline", baseline)] if baseline is not None else []) + [("fast", fast)]
    for name, settings in runs:  # the baseline keeps fp32 weights, so it runs before the cast
        pipe = sampling_pipeline(settings, device, compile_kwargs=compile_kwargs, pipe=pipe)
        images = _to_uint8(sample_images(pipe, settings, inputs, device, **kwargs))
        values = [psnr(im, r) for im, r in zip(images, ref)]
        out[f"psnr_fp32_vs_{name}"] = min(values)
        out[f"psnr_fp32_vs_{name}_each"] = values
        out[f"max_abs_diff_{name}"] = int(max(np.abs(im.astype(int) - r.astype(int)).max() for im, r in zip(images, ref)))
        out[name] = settings.to_dict()
    return out


# ---------------------------------------------------------------------------------------------
# C2 metrics


@contextlib.contextmanager
def random_fid_inception(folder: str | Path):
    """torch's hub folder pointed at ``folder`` for the block, holding random weights for
    torchvision's FID Inception-v3 (speed does not depend on them; nothing is downloaded)."""
    import torchvision

    from src.evaluate.metrics import TV_INCEPTION_FILE
    from src.util.weights import hub_checkpoints_dir

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(folder))
    try:
        path = hub_checkpoints_dir() / TV_INCEPTION_FILE
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
            torch.save(net.state_dict(), path)
        yield
    finally:
        torch.hub.set_dir(old)


def _smooth_image(rng: np.random.Generator, height: int, width: int):
    from PIL import Image

    small = Image.fromarray(rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8))
    return small.resize((width, height), Image.BICUBIC)


def measure_c2(device, *, n_images: int = 256, size=(512, 352), eval_sizes=("256x176", "512x352"),
               batch_size: int = 32, num_workers: int = 8, seed: int = 0) -> dict:
    """C2's ``score_generated`` (SSIM, SSIM-256, PSNR, LPIPS with a random AlexNet, FID features with a
    random Inception, reference = the ground-truth images) on ``n_images`` smooth random PNG pairs
    at ``size``; images/s per evaluation size and over all of them (seconds include building the
    networks)."""
    from src.evaluate.handoff import EvalEntry, parse_size, size_name
    from src.evaluate.metrics import score_generated

    rng = np.random.default_rng(seed)
    out = {"images": n_images, "eval_sizes": list(eval_sizes), "batch_size": batch_size, "num_workers": num_workers,
           "weights": "random LPIPS AlexNet and FID Inception-v3 (torchvision)", "per_size": {}}
    with tempfile.TemporaryDirectory(prefix="fpdm_c2_bench_") as tmp:
        tmp = Path(tmp)
        entries = []
        for i in range(n_images):
            gen, truth = tmp / "generated" / f"{i:05d}.png", tmp / "truth" / f"{i:05d}.png"
            for p in (gen, truth):
                p.parent.mkdir(parents=True, exist_ok=True)
                _smooth_image(rng, *size).save(p)
            entries.append(EvalEntry(f"s{i}", f"t{i}", truth, {size_name(parse_size(s)): gen for s in eval_sizes}))
        reference = [e.truth for e in entries]
        total = 0.0
        with random_fid_inception(tmp / "hub"):
            for s in eval_sizes:
                synchronize(device)
                start = time.perf_counter()
                result = score_generated(entries, [s], reference, fid_reference="test", fid_backbone="torchvision",
                                         lpips_random=True, batch_size=batch_size, num_workers=num_workers,
                                         device=str(device), cache_dir=None, progress=False)
                synchronize(device)
                seconds = time.perf_counter() - start
                total += seconds
                name = size_name(parse_size(s))
                nulls = result[name]["protocol"]["null_reasons"]
                out["per_size"][name] = {"seconds": seconds, "images_per_s": n_images / seconds,
                                         "null_metrics": nulls}
    out["evaluate_seconds"] = total
    out["images_per_s"] = n_images / total if total else None
    return out


__all__ = [
    "BASELINE_SAMPLE", "BASELINE_TRAIN", "COMPONENTS", "PEAK_BF16_FLOPS", "SampleSettings",
    "TrainSettings", "apply_switches", "cleanup", "count_flops", "device_name", "error_text",
    "example_batch", "flop_accounting", "measure_c2", "measure_sampling", "measure_training", "mfu", "peak_flops",
    "random_pipeline", "sampling_psnr", "slug", "timed",
]
