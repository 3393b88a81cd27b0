"""Stage 2 training: building an FPDMPipeline to train, and B2's loss, all of it in this module.

The loss (``training_loss``, read top to bottom in the "B2's loss" section): the frozen inputs
of a batch (``frozen_conditions``), per-item condition dropout (``drop_masks``), then
``diffusion_loss``: noise, a timestep per item, MSE between the denoiser's prediction
(``src.models.denoiser.FPDMDenoiser``: the conditions in, the UNet's prediction out) and the
scheduler's target (``prediction_target``: epsilon or v).

``build_pipeline`` assembles the pipeline B2 starts from: the pretrained SD2 folder (its UNet
given the identity class embedding), the frozen source encoder and stage-1 fusion model, and the
new trainable parts (pose encoder, source MLP, fusion MLP) sized to fit them. Two small config
objects carry what travels together: ``Geometry`` (every image size, (height, width)) and
``Heads`` (the sizes and dropout of the new parts). ``make_tiny_pipeline`` builds the same
thing from a tiny random SD2 folder for tests and demos.

``load_pipeline_to_train`` is the other starting point: a complete FPDM pipeline folder
(``FPDMPipeline.save_pretrained``: B2's export, or a released model converted to that layout),
whose UNet, pose encoder, source MLP and fusion MLP go on training (their dropout kept) and
whose VAE, source encoder and fusion model stay frozen. ``check_pipeline_folder`` checks such a
folder up front (``WeightsNotFoundError`` naming everything missing) and ``folder_geometry``
reads its sizes and keypoint format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from ..data.deepfashion import SPEC as DEEPFASHION
from ..models.denoiser import CONDITIONS
from ..models.fusion import FusionModel
from ..models.heads import FusionMLP, SourceMLP, time_embedding_dim
from ..models.pose_encoder import PoseEncoder
from ..models.source_encoder import SourceEncoder
from ..pipeline import FPDMPipeline
from ..util.errors import first_line
from ..util.weights import WeightsNotFoundError


@dataclass(frozen=True)
class Geometry:
    """Stage 2's image sizes: output ``height`` x ``width``, the square ``source_size`` the
    source encoder sees, the square ``fusion_size`` of the fusion model's inputs, and the
    ``pose_draw_size`` (height, width) at which target poses are drawn before resizing, in
    the keypoint format ``pose_format`` ("openpose18" or "wholebody133", the dataset's)."""

    # DeepFashion's, where a pipeline folder records none (folders of the first releases)
    height: int = DEEPFASHION.model_size[0]
    width: int = DEEPFASHION.model_size[1]
    source_size: int = DEEPFASHION.model_size[0]
    fusion_size: int = 224
    pose_draw_size: tuple[int, int] | None = DEEPFASHION.pose_draw_size
    pose_format: str = DEEPFASHION.pose_format


@dataclass(frozen=True)
class Heads:
    """The new trainable parts: pose-encoder channels, the source MLP's hidden width, and the
    dropout of the source and fusion MLPs (the fusion MLP's hidden width is the fusion
    embedding's)."""

    pose_channels: tuple[int, ...] = (16, 32, 96, 256)
    mlp_hidden_dim: int = 768
    mlp_dropout: float = 0.2
    fusion_mlp_dropout: float = 0.2


TINY_HEADS = Heads(pose_channels=(8, 8, 16, 16), mlp_hidden_dim=32)


def load_fusion_model(fusion_model) -> FusionModel:
    """The frozen stage-1 model: a FusionModel, the folder B1 exports, or ``"tiny"``/None."""
    if fusion_model is None or fusion_model == "tiny":
        fusion_model = FusionModel.tiny()
    elif isinstance(fusion_model, str):
        folder = os.path.expanduser(fusion_model)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise WeightsNotFoundError(
                f"stage-1 fusion model not found: {fusion_model!r} has no config.json\n"
                f"  train stage 1 first: accelerate launch B1.train_Fusion_model.py --out_dir=logs/B1",
                "fusion_model", "logs/B1/fusion_model", "then pass its export")
        fusion_model = FusionModel.from_pretrained(folder)
    return fusion_model.requires_grad_(False).eval()


def build_pipeline(pretrained_model: str, source_encoder="facebook/dinov2-large", fusion_model=None, *,
                   geometry: Geometry = Geometry(), heads: Heads = Heads(), source_backend: str | None = None,
                   ) -> FPDMPipeline:
    """A pipeline ready to train: the SD2 folder or hub id ``pretrained_model``, the frozen
    source encoder (hub id, folder, ``"tiny"`` or a SourceEncoder) fed the ``source_size``
    square source, the stage-1 fusion model (``load_fusion_model``) and new parts sized by
    ``heads``."""
    from ..models.sd2 import load_sd2

    fusion_model = load_fusion_model(fusion_model)
    if isinstance(source_encoder, str):
        source_encoder = SourceEncoder.load(source_encoder, backend=source_backend, image_size=geometry.source_size)
    elif source_encoder.config.image_size != geometry.source_size:
        source_encoder.register_to_config(image_size=geometry.source_size)
    sd2 = load_sd2(pretrained_model)
    c = sd2.unet.config
    pose_encoder = PoseEncoder(out_channels=c.block_out_channels[0], block_out_channels=tuple(heads.pose_channels))
    source_mlp = SourceMLP(in_dim=source_encoder.width, hidden_dim=heads.mlp_hidden_dim, out_dim=c.cross_attention_dim,
                           dropout=heads.mlp_dropout)
    fusion_mlp = FusionMLP(in_dim=fusion_model.embed_dim, hidden_dim=fusion_model.embed_dim,
                           out_dim=time_embedding_dim(sd2.unet), dropout=heads.fusion_mlp_dropout)
    return FPDMPipeline(vae=sd2.vae, unet=sd2.unet, scheduler=sd2.scheduler, pose_encoder=pose_encoder,
                        source_mlp=source_mlp, fusion_mlp=fusion_mlp, source_encoder=source_encoder,
                        fusion_model=fusion_model, source_size=geometry.source_size,
                        fusion_size=geometry.fusion_size, height=geometry.height, width=geometry.width,
                        pose_draw_size=geometry.pose_draw_size, pose_format=geometry.pose_format)


PIPELINE_COMPONENTS = ("vae", "unet", "scheduler", "pose_encoder", "source_mlp", "fusion_mlp", "source_encoder",
                       "fusion_model")
TRAINED_COMPONENTS = ("unet", "pose_encoder", "source_mlp", "fusion_mlp")
FROZEN_COMPONENTS = ("vae", "source_encoder", "fusion_model")


def check_pipeline_folder(folder) -> dict:
    """The config (``model_index.json``) of a complete FPDM pipeline folder, or
    ``WeightsNotFoundError`` naming the folder and everything it lacks: model_index.json, a
    component's subfolder, its config or its weights. Reads only small JSON files."""
    path = Path(os.path.expanduser(str(folder)))
    config, missing = {}, []
    if not path.is_dir():
        missing.append("the folder itself (it does not exist)")
    else:
        index = path / "model_index.json"
        if not index.is_file():
            missing.append("model_index.json")
        else:
            try:
                config = json.loads(index.read_text())
            except (OSError, ValueError) as e:
                missing.append(f"a readable model_index.json ({e})")
        for name in PIPELINE_COMPONENTS:
            sub = path / name
            config_file = "scheduler_config.json" if name == "scheduler" else "config.json"
            if not sub.is_dir():
                missing.append(f"{name}/")
            elif not (sub / config_file).is_file():
                missing.append(f"{name}/{config_file}")
            # rglob: the source encoder keeps its network's weights in network/
            elif name != "scheduler" and not any(sub.rglob("*.safetensors")) and not any(sub.rglob("*.bin")):
                missing.append(f"{name}/diffusion_pytorch_model.safetensors (no weights)")
        if config and config.get("_class_name") not in (None, "FPDMPipeline"):
            missing.append(f"an FPDMPipeline model_index.json (it is a {config.get('_class_name')}'s)")
    if missing:
        sd2_like = (path / "unet").is_dir() and not (path / "pose_encoder").is_dir()
        raise WeightsNotFoundError(
            f"FPDM pipeline to fine-tune: {str(folder)!r} is not a complete pipeline folder; "
            f"missing: {', '.join(missing)}\n"
            f"  expected what FPDMPipeline.save_pretrained writes (B2's OUT/pipeline): model_index.json and "
            f"{', '.join(c + '/' for c in PIPELINE_COMPONENTS)}"
            + ("\n  (it is an SD2 folder: a model to build a new pipeline on, not a pipeline to fine-tune)"
               if sd2_like else ""), "pipeline", hint="pass a complete pipeline folder")
    return config


def folder_geometry(config: dict) -> Geometry:
    """The ``Geometry`` a pipeline config (``model_index.json``) records; ``pose_draw_size``
    None for a pipeline saved before the config recorded it."""
    default = Geometry()
    draw = config.get("pose_draw_size")
    return Geometry(height=int(config.get("height", default.height)), width=int(config.get("width", default.width)),
                    source_size=int(config.get("source_size", default.source_size)),
                    fusion_size=int(config.get("fusion_size", default.fusion_size)),
                    pose_draw_size=tuple(draw) if draw else None,
                    pose_format=config.get("pose_format", default.pose_format))


def load_pipeline_to_train(folder, geometry: Geometry | None = None) -> FPDMPipeline:
    """A pipeline ready to train from a complete FPDM pipeline folder (``check_pipeline_folder``),
    in fp32: its UNet, pose encoder, source MLP and fusion MLP (their dropout as saved) to train
    on, its VAE, source encoder and fusion model frozen, a DDPMScheduler from its scheduler
    config. ``geometry`` (default: the folder's, ``folder_geometry``) sets the sizes; a
    ``source_size`` other than the folder's resizes the source encoder's input, as
    ``build_pipeline`` does; its ``pose_format`` must be the folder's (the pose encoder learned
    that renderer)."""
    from diffusers import DDPMScheduler

    from ..models.sd2 import with_identity_class_embedding

    config = check_pipeline_folder(folder)
    saved_geometry = folder_geometry(config)
    geometry = geometry or saved_geometry
    if geometry.pose_format != saved_geometry.pose_format:
        raise ValueError(f"{folder}: trained on {saved_geometry.pose_format} poses, asked to train on "
                         f"{geometry.pose_format} poses")
    try:
        saved = FPDMPipeline.from_pretrained(os.path.expanduser(str(folder)), dtype=torch.float32)
    except (OSError, ValueError) as e:  # unreadable weights or configs
        raise WeightsNotFoundError(f"FPDM pipeline to fine-tune: {str(folder)!r} could not be loaded: "
                                   f"{first_line(e)[:300]}",
                                   "pipeline", hint="pass a complete pipeline folder") from None
    source_encoder = saved.source_encoder
    if source_encoder.config.image_size != geometry.source_size:
        source_encoder.register_to_config(image_size=geometry.source_size)
    for name in FROZEN_COMPONENTS:
        getattr(saved, name).requires_grad_(False).eval()
    return FPDMPipeline(vae=saved.vae, unet=with_identity_class_embedding(saved.unet),
                        scheduler=DDPMScheduler.from_config(saved.scheduler.config), pose_encoder=saved.pose_encoder,
                        source_mlp=saved.source_mlp, fusion_mlp=saved.fusion_mlp, source_encoder=source_encoder,
                        fusion_model=saved.fusion_model, source_size=geometry.source_size,
                        fusion_size=geometry.fusion_size, height=geometry.height, width=geometry.width,
                        pose_draw_size=geometry.pose_draw_size, pose_format=geometry.pose_format,
                        sampling=saved.config.get("sampling"))


def disk_footprint(pipe: FPDMPipeline, ema: bool = False) -> tuple:
    """(one B2 checkpoint as ``src.train.common.CheckpointSize``, the exported pipeline's bytes, the
    bytes of its frozen components among them), from the pipeline's tensors and dtypes (meta
    tensors too, so the paper's size needs no weights)."""
    from .common import checkpoint_size, state_bytes

    denoiser = pipe.denoiser()
    trained = [p for p in denoiser.parameters() if p.requires_grad]
    modules = [getattr(pipe, name) for name in PIPELINE_COMPONENTS if isinstance(getattr(pipe, name), torch.nn.Module)]
    frozen = state_bytes(*(getattr(pipe, name) for name in FROZEN_COMPONENTS))
    return checkpoint_size(denoiser, trained, ema=ema), state_bytes(*modules), frozen


def describe_disk_footprint(pipe: FPDMPipeline, total_limit: int = 3) -> str:
    """``disk_footprint`` in words, with the peak of a run rotated to ``total_limit`` checkpoints."""
    from .common import format_bytes, state_bytes

    checkpoint, export, frozen = disk_footprint(pipe)
    peak = max((total_limit + 1) * checkpoint.total, total_limit * checkpoint.total + export)
    parts = ", ".join(f"{name} {format_bytes(state_bytes(getattr(pipe, name)))}" for name in FROZEN_COMPONENTS)
    return (f"a checkpoint is {checkpoint.describe()}; the exported pipeline {format_bytes(export)}, "
            f"{format_bytes(frozen)} of it frozen ({parts}); peak with checkpoints_total_limit={total_limit}: "
            f"{format_bytes(peak)}")


def make_tiny_pipeline(folder, fusion_model=None, prediction_type: str = "epsilon", height: int = 64,
                       width: int = 48, source_size: int = 64, fusion_size: int = 64,
                       pose_draw_size: tuple[int, int] | None = None, pose_format: str = "openpose18",
                       seed: int = 0) -> FPDMPipeline:
    """Tiny random pipeline for tests and demos: writes a tiny SD2 folder under ``folder`` (if not
    there) and loads it through the same path as a real one; tiny source encoder and fusion model."""
    from ..models.sd2 import make_tiny_sd2

    geometry = Geometry(height=height, width=width, source_size=source_size, fusion_size=fusion_size,
                        pose_draw_size=pose_draw_size, pose_format=pose_format)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd2_folder = make_tiny_sd2(folder, prediction_type=prediction_type, seed=seed)
        return build_pipeline(str(sd2_folder), SourceEncoder.tiny(image_size=source_size),
                              fusion_model or FusionModel.tiny(), geometry=geometry, heads=TINY_HEADS)


# ---------------------------------------------------------------------------------------------
# B2's loss


def frozen_conditions(pipe: FPDMPipeline, batch: dict, device, sample: bool = True):
    """B2's frozen inputs of a batch (no gradients): VAE latents of ``batch["target"]`` (scaled;
    drawn from the latent distribution, or its mean with sample=False so validation leaves the
    global RNG alone), source-encoder tokens of ``batch["source"]`` and fusion embeddings of
    ``batch["fusion_source"]``, ``batch["fusion_pose"]``."""
    with torch.no_grad():
        target = batch["target"].to(device, pipe.vae.dtype)
        dist = pipe.vae.encode(target).latent_dist
        latents = (dist.sample() if sample else dist.mean) * pipe.vae.config.scaling_factor
        tokens = pipe.source_encoder(batch["source"].to(device))
        fusion = pipe.fusion_embedding(batch["fusion_source"].to(device), batch["fusion_pose"].to(device))
    return latents.float(), tokens, fusion


def drop_masks(batch: int, rates: dict | float, generator: torch.Generator | None = None,
               device=None) -> dict:
    """Independent per-item drop masks {"pose", "source", "fusion"} -> (B,) bool; ``rates`` is
    one probability for all three or a dict of them."""
    if not isinstance(rates, dict):
        rates = dict.fromkeys(CONDITIONS, float(rates))
    gen_device = generator.device if generator is not None else "cpu"
    masks = {k: torch.rand(batch, generator=generator, device=gen_device) < float(rates.get(k, 0.0))
             for k in CONDITIONS}
    return {k: m.to(device or gen_device) for k, m in masks.items()}


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict, from the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def diffusion_loss(denoiser, scheduler, latents: torch.Tensor, pose_images: torch.Tensor,
                   source_tokens: torch.Tensor, fusion_emb: torch.Tensor, *, noise: torch.Tensor | None = None,
                   timesteps: torch.Tensor | None = None, noise_offset: float = 0.0, drop=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the denoiser's prediction and the scheduler's target (epsilon or v).

    latents: VAE latents already multiplied by the scaling factor. ``noise``/``timesteps`` are
    drawn when not given; ``noise_offset`` adds ``offset * N(0, 1)`` per (item, channel) to the
    noise. ``drop``: dict of (B,) drop masks (see ``drop_masks``) or None.
    """
    b = latents.shape[0]
    if noise is None:
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        if noise_offset:
            noise = noise + noise_offset * randn_tensor((b, latents.shape[1], 1, 1), generator=generator,
                                                        device=latents.device, dtype=latents.dtype)
    if timesteps is None:
        gen_device = generator.device if generator is not None else latents.device
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                                  device=gen_device).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(scheduler, latents, noise, timesteps)
    drop = drop or {}
    pred = denoiser(noisy, timesteps, pose_images, source_tokens, fusion_emb, drop_pose=drop.get("pose"),
                    drop_source=drop.get("source"), drop_fusion=drop.get("fusion"))
    return F.mse_loss(pred.float(), target.float())


def training_loss(pipe: FPDMPipeline, denoiser, batch: dict, device, rates: dict | float, noise_offset: float = 0.0,
                  features: tuple | None = None) -> torch.Tensor:
    """B2's loss on one batch: the frozen inputs, each condition dropped per item at ``rates``
    (zeroed where it enters the UNet), then ``diffusion_loss`` with ``noise_offset`` on
    ``batch["target_pose"]``. ``features``: precomputed ``(latents, tokens, fusion)`` used instead
    of running the frozen models (the cached-features variant of the benchmarks)."""
    latents, tokens, fusion = frozen_conditions(pipe, batch, device) if features is None else features
    drop = drop_masks(latents.shape[0], rates, device=device)
    return diffusion_loss(denoiser, pipe.scheduler, latents, batch["target_pose"].to(device), tokens, fusion,
                          noise_offset=noise_offset, drop=drop)


__all__ = [
    "FROZEN_COMPONENTS", "Geometry", "Heads", "PIPELINE_COMPONENTS", "TINY_HEADS", "TRAINED_COMPONENTS",
    "build_pipeline", "check_pipeline_folder", "describe_disk_footprint", "diffusion_loss", "disk_footprint",
    "drop_masks", "folder_geometry", "frozen_conditions", "load_fusion_model", "load_pipeline_to_train",
    "make_tiny_pipeline", "prediction_target", "training_loss",
]
