"""Stage 2 training: building an FPDMPipeline to train, the frozen inputs of a batch and B2's loss.

``build_pipeline`` assembles the pipeline B2 starts from: the pretrained SD2 folder (its UNet
given the identity class embedding), the frozen source encoder and stage-1 fusion model, and the
new trainable parts (pose encoder, source MLP, fusion MLP) sized to fit them. Two small config
objects carry what travels together: ``Geometry`` (every image size, (height, width)) and
``Heads`` (the sizes and dropout of the new parts). ``make_tiny_pipeline`` builds the same
thing from a tiny random SD2 folder for tests and demos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .models.conditioning import FusionMLP, PoseEncoder, SourceMLP, diffusion_loss, drop_masks, time_embedding_dim
from .models.fusion import FusionModel
from .models.source_encoder import SourceEncoder
from .pipeline import FPDMPipeline
from .weights import WeightsNotFoundError


@dataclass(frozen=True)
class Geometry:
    """Stage 2's image sizes: output ``height`` x ``width``, the square ``source_size`` the
    source encoder sees, the square ``fusion_size`` of the fusion model's inputs, and the
    ``pose_draw_size`` (height, width) at which target poses are drawn before resizing, in
    the keypoint format ``pose_format`` ("openpose18" or "wholebody133", the dataset's)."""

    height: int = 512
    width: int = 352
    source_size: int = 512
    fusion_size: int = 224
    pose_draw_size: tuple[int, int] | None = (550, 375)
    pose_format: str = "openpose18"


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


def load_fusion_model(fusion_model, option: str = "fusion_model") -> FusionModel:
    """The frozen stage-1 model: a FusionModel, the folder B1 exports, or ``"tiny"``/None."""
    if fusion_model is None or fusion_model == "tiny":
        fusion_model = FusionModel.tiny()
    elif isinstance(fusion_model, str):
        folder = os.path.expanduser(fusion_model)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise WeightsNotFoundError(
                f"stage-1 fusion model not found: {fusion_model!r} has no config.json\n"
                f"  train stage 1 first: accelerate launch B1.train_Fusion_model.py --out_dir=logs/B1\n"
                f"  then pass its export: --{option}=logs/B1/fusion_model")
        fusion_model = FusionModel.from_pretrained(folder)
    return fusion_model.requires_grad_(False).eval()


def build_pipeline(pretrained_model: str, source_encoder="facebook/dinov2-large", fusion_model=None, *,
                   geometry: Geometry = Geometry(), heads: Heads = Heads(), source_backend: str | None = None,
                   options: tuple[str, str, str] = ("pretrained_model", "source_encoder", "fusion_model"),
                   ) -> FPDMPipeline:
    """A pipeline ready to train: the SD2 folder or hub id ``pretrained_model``, the frozen
    source encoder (hub id, folder, ``"tiny"`` or a SourceEncoder) fed the ``source_size``
    square source, the stage-1 fusion model (``load_fusion_model``) and new parts sized by
    ``heads``. ``options`` name the script options of the three models in missing-weights
    messages."""
    from .models.sd2 import load_sd2

    sd2_option, source_option, fusion_option = options
    fusion_model = load_fusion_model(fusion_model, fusion_option)
    if isinstance(source_encoder, str):
        source_encoder = SourceEncoder.load(source_encoder, backend=source_backend, image_size=geometry.source_size,
                                            option=source_option)
    elif source_encoder.config.image_size != geometry.source_size:
        source_encoder.register_to_config(image_size=geometry.source_size)
    sd2 = load_sd2(pretrained_model, option=sd2_option)
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


def training_loss(pipe: FPDMPipeline, denoiser, batch: dict, device, rates: dict | float, noise_offset: float = 0.0,
                  features: tuple | None = None) -> torch.Tensor:
    """B2's loss on one batch: the frozen conditions (``frozen_conditions``), independent
    per-item condition dropout at ``rates`` and ``diffusion_loss`` on ``batch["target_pose"]``.
    ``features``: precomputed ``(latents, tokens, fusion)`` used instead of running the frozen
    models (the cached-features variant of the benchmarks)."""
    latents, tokens, fusion = frozen_conditions(pipe, batch, device) if features is None else features
    drop = drop_masks(latents.shape[0], rates, device=device)
    return diffusion_loss(denoiser, pipe.scheduler, latents, batch["target_pose"].to(device), tokens, fusion,
                          noise_offset=noise_offset, drop=drop)


def make_tiny_pipeline(folder, fusion_model=None, prediction_type: str = "epsilon", height: int = 64,
                       width: int = 48, source_size: int = 64, fusion_size: int = 64,
                       pose_draw_size: tuple[int, int] | None = None, pose_format: str = "openpose18",
                       seed: int = 0) -> FPDMPipeline:
    """Tiny random pipeline for tests and demos: writes a tiny SD2 folder under ``folder`` (if not
    there) and loads it through the same path as a real one; tiny source encoder and fusion model."""
    from .models.sd2 import make_tiny_sd2

    geometry = Geometry(height=height, width=width, source_size=source_size, fusion_size=fusion_size,
                        pose_draw_size=pose_draw_size, pose_format=pose_format)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd2_folder = make_tiny_sd2(folder, prediction_type=prediction_type, seed=seed)
        return build_pipeline(str(sd2_folder), SourceEncoder.tiny(image_size=source_size),
                              fusion_model or FusionModel.tiny(), geometry=geometry, heads=TINY_HEADS)


__all__ = [
    "Geometry", "Heads", "TINY_HEADS", "build_pipeline", "frozen_conditions", "load_fusion_model",
    "make_tiny_pipeline", "training_loss",
]
