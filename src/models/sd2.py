"""Stable Diffusion 2 backbone of stage 2: frozen VAE, UNet, noise scheduler.

``load_sd2(name)`` reads any SD2-family folder or hub id in the hub layout (``unet/``, ``vae/``,
``scheduler/``): the VAE (``AutoencoderKL``), the UNet (``UNet2DConditionModel``) and a
``DDPMScheduler`` built from the folder's scheduler config, whose ``prediction_type``
(``epsilon`` or ``v_prediction``) decides the training target and how samplers step.

The fusion embedding reaches the UNet's timestep embedding through the fusion MLP (a pipeline
component of its own, ``src.models.heads.FusionMLP``), whose output the UNet takes as
``class_labels`` with diffusers' identity class embedding (``class_embed_type="identity"``:
added to the timestep embedding as is). A pretrained SD2 UNet has no class embedding, so
``with_identity_class_embedding`` builds the same UNet with that config and assigns every
pretrained tensor to it; the identity has no parameters, so nothing is new.

``make_tiny_sd2(folder)`` writes a tiny random SD2-style folder in the same layout (VAE with
four blocks, so latents are 1/8 of the image as in SD; a two-block UNet), which the tests and
the tiny preset load through the same ``load_sd2`` path as a real download.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from ..util.weights import WeightsNotFoundError, looks_like_path, weights_not_found

DEFAULT_SD2 = "stabilityai/stable-diffusion-2-1"
WHAT = "Stable Diffusion 2 (unet/, vae/, scheduler/)"
SUBFOLDERS = ("unet", "vae", "scheduler")


@dataclass
class SD2Components:
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DDPMScheduler

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type


# ---------------------------------------------------------------------------------------------
# loading


def _missing(name: str, reason: str | None = None) -> WeightsNotFoundError:
    return weights_not_found(WHAT, name, "sd2", hub_id=DEFAULT_SD2 if looks_like_path(name) else None,
                             reason=reason, default_hub_id=DEFAULT_SD2)


def _resolve(name: str) -> str:
    """A local folder (checked for the three subfolders) or a hub id, unchanged."""
    path = os.path.expanduser(str(name))
    if os.path.isdir(path):
        absent = [s for s in SUBFOLDERS if not os.path.isfile(os.path.join(path, s, _config_file(s)))]
        if absent:
            raise _missing(str(name), reason=f"the folder lacks {', '.join(s + '/' for s in absent)} "
                                                      "(expected the hub layout of an SD2 repository)")
        return path
    if looks_like_path(str(name)):
        raise _missing(str(name))
    return str(name)


def _config_file(subfolder: str) -> str:
    return "scheduler_config.json" if subfolder == "scheduler" else "config.json"


def _load(loader, name: str, subfolder: str, **kwargs):
    try:
        return loader(name, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as e:  # missing folder/files/repo, hub offline, bad checkpoint
        raise _missing(name, reason=f"{subfolder}/: {e}") from None


def load_scheduler(name: str = DEFAULT_SD2) -> DDPMScheduler:
    """The training scheduler: a DDPMScheduler from the folder's scheduler config (SD2's
    scheduler folder may name another class; its betas and prediction type carry over)."""
    name = _resolve(name)
    config = _load(DDPMScheduler.load_config, name, "scheduler")
    return DDPMScheduler.from_config(config)


def load_vae(name: str = DEFAULT_SD2, dtype=None) -> AutoencoderKL:
    """The frozen VAE (``requires_grad`` off, eval mode)."""
    name = _resolve(name)
    vae = _load(AutoencoderKL.from_pretrained, name, "vae", dtype=dtype)
    vae.requires_grad_(False).eval()
    return vae


def load_unet(name: str = DEFAULT_SD2, dtype=None) -> UNet2DConditionModel:
    """The pretrained UNet with the identity class embedding (see ``with_identity_class_embedding``);
    a trained FPDM UNet, which has it already, is returned as saved."""
    name = _resolve(name)
    unet = _load(UNet2DConditionModel.from_pretrained, name, "unet", dtype=dtype)
    return with_identity_class_embedding(unet)


def load_sd2(name: str = DEFAULT_SD2, dtype=None) -> SD2Components:
    """VAE (frozen), UNet with the identity class embedding, DDPM scheduler of an SD2-family
    folder or hub id. Missing weights raise ``WeightsNotFoundError`` with a one-line fix."""
    return SD2Components(
        vae=load_vae(name, dtype=dtype),
        unet=load_unet(name, dtype=dtype),
        scheduler=load_scheduler(name),
    )


def with_identity_class_embedding(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The same UNet with ``class_embed_type="identity"``, every pretrained tensor kept
    (assigned, not copied). Raises if the UNet has a class embedding of another kind."""
    if unet.config.class_embed_type == "identity":
        return unet
    if unet.config.class_embed_type is not None or unet.config.num_class_embeds is not None:
        raise ValueError(f"the UNet already has a class embedding ({unet.config.class_embed_type or 'num_class_embeds'}); "
                         "FPDM needs an SD2 UNet without one")
    config = dict(unet.config)
    config.update(class_embed_type="identity")
    # Built without allocating weights; the pretrained tensors are then assigned (no copy).
    with init_empty_weights():
        new = UNet2DConditionModel.from_config(config)
    new.load_state_dict(unet.state_dict(), strict=True, assign=True)
    left = [n for n, t in list(new.named_parameters()) + list(new.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"adding the class embedding left tensors unset: {left[:5]}")
    return new


# ---------------------------------------------------------------------------------------------
# the tiny preset


def tiny_sd2_configs(prediction_type: str = "epsilon", cross_attention_dim: int = 32,
                     unet_channels=(32, 64), vae_channels=(16, 16, 32, 32)) -> dict:
    """Configs of a tiny SD2-style model: a four-block VAE (latents 1/8 of the image, 4
    channels) and a two-block UNet with linear-projection cross-attention (as SD2)."""
    return {
        "vae": dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=list(vae_channels), down_block_types=["DownEncoderBlock2D"] * len(vae_channels),
            up_block_types=["UpDecoderBlock2D"] * len(vae_channels), sample_size=64, scaling_factor=0.18215,
        ),
        "unet": dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=list(unet_channels),
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=cross_attention_dim, attention_head_dim=[2, 4],
            use_linear_projection=True, upcast_attention=True,
        ),
        "scheduler": dict(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, steps_offset=1, timestep_spacing="leading",
            prediction_type=prediction_type,
        ),
    }


def make_tiny_sd2(folder: str | Path, prediction_type: str = "epsilon", cross_attention_dim: int = 32,
                  seed: int = 0, overwrite: bool = False, vae: AutoencoderKL | None = None) -> Path:
    """Write a tiny random SD2-style folder (``unet/``, ``vae/``, ``scheduler/``, safetensors)
    in the hub layout; an existing complete folder is kept unless ``overwrite``. ``vae``: a
    trained VAE to save instead of the random one (``src.synthetic.autoencoder``); the UNet is the same
    random tiny UNet either way."""
    from ..util.fileio import atomic_dir

    folder = Path(folder)
    if not overwrite and all((folder / s / _config_file(s)).is_file() for s in SUBFOLDERS):
        return folder
    configs = tiny_sd2_configs(prediction_type, cross_attention_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_vae = AutoencoderKL(**configs["vae"])
        unet = UNet2DConditionModel(**configs["unet"])
    scheduler = DDPMScheduler(**configs["scheduler"])
    trained = vae is not None
    with atomic_dir(folder) as tmp:
        (vae if trained else random_vae).save_pretrained(tmp / "vae")
        unet.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        what = "VAE trained (src.synthetic.autoencoder), UNet random" if trained else "not trained"
        (tmp / "README.md").write_text(f"Tiny SD2-style model (FPDM tests and tiny preset); {what}.\n")
        (tmp / "tiny_sd2.json").write_text(json.dumps({"prediction_type": prediction_type, "seed": seed,
                                                       "trained_vae": trained}) + "\n")
    return folder


__all__ = [
    "DEFAULT_SD2", "SD2Components", "load_scheduler", "load_sd2", "load_unet", "load_vae", "make_tiny_sd2",
    "tiny_sd2_configs", "with_identity_class_embedding",
]
