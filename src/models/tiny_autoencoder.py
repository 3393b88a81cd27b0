"""The tiny preset's VAE as a network the demo and the synthetic benchmark train
(``src.synthetic.autoencoder``), and the SD2 folder that holds it.

The tiny preset's SD2 folder (``src.models.sd2.make_tiny_sd2``) holds a random VAE, which cannot
decode anything meaningful, so stage 2 trained on top of it cannot produce a recognisable image.
``tiny_vae`` is that same VAE (diffusers ``AutoencoderKL`` with the tiny config; three blocks
give latents 1/4 of the image, the preset's four 1/8); once trained, ``save_tiny_sd2`` writes it
into the SD2 folder layout (``vae/`` trained, ``unet/`` and ``scheduler/`` as the tiny preset's),
which B2 loads through its normal ``--pretrained_model=FOLDER`` path.

The latent scaling factor matters: SD's 0.18215 is the inverse standard deviation of *its*
VAE's latents. Diffusion assumes latents of unit scale (the noise schedule's signal-to-noise
ratios are computed for it), so a retrained VAE gets its own ``scaling_factor`` = 1 / std of
its latents over the training images (``latent_scaling_factor``), stored in its config. Its
latents' channel means stay small against that scale, so no shift is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from .sd2 import make_tiny_sd2, tiny_sd2_configs


def tiny_vae(sample_size: int = 64, seed: int = 0, block_out_channels=None) -> AutoencoderKL:
    """The tiny preset's VAE architecture (``tiny_sd2_configs()['vae']``: four blocks, latents
    1/8 of the image) with random weights; ``block_out_channels`` with three entries (e.g.
    (16, 32, 32)) gives the same design with latents 1/4 of the image."""
    kwargs = {} if block_out_channels is None else {"vae_channels": tuple(block_out_channels)}
    config = dict(tiny_sd2_configs(**kwargs)["vae"], sample_size=sample_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**config)


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64, seed: int = 0) -> float:
    """1 / standard deviation of the VAE's (sampled) latents over ``images``: the factor that
    gives the diffusion model latents of unit scale, as 0.18215 does for SD's VAE."""
    g = torch.Generator().manual_seed(seed)
    was_training = vae.training
    vae.eval()
    latents = torch.cat([vae.encode(images[i:i + batch_size]).latent_dist.sample(generator=g)
                         for i in range(0, len(images), batch_size)])
    vae.train(was_training)
    return float(1.0 / latents.float().std())


def save_tiny_sd2(vae: AutoencoderKL, folder: str | Path, prediction_type: str = "epsilon", seed: int = 0,
                  stats: dict | None = None) -> Path:
    """Write an SD2-layout folder (``vae/`` = the trained ``vae``, ``unet/`` and ``scheduler/`` as
    the tiny preset's) that B2 loads with ``--pretrained_model=FOLDER``; ``stats`` (training
    record, reconstruction PSNR, ...) go to ``vae_training.json`` beside them."""
    folder = make_tiny_sd2(folder, prediction_type=prediction_type, seed=seed, vae=vae, overwrite=True)
    if stats is not None:
        from ..util.fileio import atomic_write_text

        atomic_write_text(Path(folder) / "vae_training.json", json.dumps(stats, indent=2, default=float) + "\n")
    return Path(folder)


__all__ = ["latent_scaling_factor", "save_tiny_sd2", "tiny_vae"]
