"""Training and evaluating the tiny autoencoder (``src.models.tiny_autoencoder``) on a set of
images: the demo's and the synthetic benchmark's VAE.

``train_tiny_vae`` trains the tiny VAE with the usual objective, reconstruction error plus a
small KL term (``vae_loss``), and sets its latent scaling factor from the data;
``train_on_dataset`` does it for a dataset folder and writes the SD2 folder B2 loads
(``src.models.tiny_autoencoder.save_tiny_sd2``).

Colours need many small steps. Trained with batches of 32 for 400 steps, the autoencoder
reconstructs shapes well enough (23.9 dB) but decodes every hue onto one purple-green axis (a
red shirt turns purple, green trousers olive: 26 of 255 mean error of a garment's colour);
four times as many steps on batches of 8 (the same images seen, about the same time) keep
them (29.4 dB, 6.9 of 255). More latent channels (8) or a loss on pooled colours did not help:
the network had the capacity, not the updates.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image

from ..models.tiny_autoencoder import latent_scaling_factor, save_tiny_sd2, tiny_vae


def load_images(paths, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Images (RGB files) as one float tensor (N, 3, H, W) in [-1, 1]; resized bicubic to
    ``size`` (height, width) when given, else all must share one size."""
    from ..util.images import load_rgb, resize, to_tensor

    tensors = []
    for p in paths:
        im = load_rgb(p)
        if size is not None and im.size != (size[1], size[0]):
            im = resize(im, size)
        tensors.append(to_tensor(im))
    if not tensors:
        raise ValueError("no images given")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)}: pass size=(height, width)")
    return torch.stack(tensors)


def pair_file_images(root: str | Path, pairs_file: str) -> list[str]:
    """Every image of a pair file (sources and targets), once each, sorted: './img/...' paths."""
    from ..data import load_pairs

    return sorted({p[k] for p in load_pairs(root, pairs_file) for k in ("source_image", "target_image")})


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, kl_weight: float = 1e-6,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Reconstruction (mean squared error on [-1, 1] pixels, plus the same weight of L1) of a
    sample of the posterior, plus ``kl_weight`` x the KL divergence to N(0, 1) summed over a
    latent and averaged over the batch."""
    posterior = vae.encode(images).latent_dist
    latents = posterior.sample(generator=generator)
    recon = vae.decode(latents).sample
    mse = F.mse_loss(recon, images)
    l1 = F.l1_loss(recon, images)
    kl = posterior.kl().mean()
    loss = mse + l1 + kl_weight * kl
    return loss, {"mse": float(mse.detach()), "l1": float(l1.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decoded posterior means of ``images`` ([-1, 1]), clamped to [-1, 1]."""
    was_training = vae.training
    vae.eval()
    out = torch.cat([vae.decode(vae.encode(images[i:i + batch_size]).latent_dist.mode()).sample
                     for i in range(0, len(images), batch_size)])
    vae.train(was_training)
    return out.clamp(-1, 1)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """A batch in [-1, 1] as (H, W, 3) uint8 arrays, rounded as a saved image would be."""
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(a) for a in arrays]


def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> float:
    """Mean PSNR (dB, data range 1: C2's ``src.evaluate.metrics.psnr``) of the VAE's reconstructions of
    ``images``, both rounded to 8 bits as saved images would be."""
    from ..evaluate.metrics import psnr

    pairs = zip(to_uint8(reconstruct(vae, images, batch_size)), to_uint8(images), strict=True)
    return float(np.mean([psnr(recon, image) for recon, image in pairs]))


def train_tiny_vae(images: torch.Tensor, steps: int = 1600, batch_size: int = 8, lr: float = 2e-3,
                   kl_weight: float = 1e-6, seed: int = 0, log_every: int = 200, log=print,
                   vae: AutoencoderKL | None = None, block_out_channels=None) -> tuple[AutoencoderKL, dict]:
    """Train the tiny VAE (``tiny_vae(block_out_channels=...)``, or ``vae``) on ``images``
    (N, 3, H, W) in [-1, 1] for ``steps`` AdamW steps of random batches (cosine learning-rate
    decay, random horizontal flips), then set its ``scaling_factor`` from the data. Returns
    (vae in eval mode, stats). Small batches and many steps keep colours (module docstring)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
    vae = vae or tiny_vae(sample_size=int(images.shape[-2]), seed=seed, block_out_channels=block_out_channels)
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
    g = torch.Generator().manual_seed(seed)
    start, history = time.time(), []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=g)
        batch = images[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        loss, stats = vae_loss(vae, batch, kl_weight, generator=g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": float(loss.detach()), **stats})
            log(f"vae step {step}/{steps}: loss {history[-1]['loss']:.4f} mse {stats['mse']:.4f} kl {stats['kl']:.1f} "
                f"({time.time() - start:.0f}s)")
    vae.requires_grad_(False).eval()
    factor = latent_scaling_factor(vae, images, seed=seed)
    vae.register_to_config(scaling_factor=factor)
    return vae, {"steps": steps, "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight,
                 "block_out_channels": list(vae.config.block_out_channels),
                 "downscale": 2 ** (len(vae.config.block_out_channels) - 1),
                 "seconds": time.time() - start, "scaling_factor": factor, "history": history}


def sample_grid(vae: AutoencoderKL, images: torch.Tensor, count: int = 8) -> Image.Image:
    """Two rows: ``count`` images and their reconstructions."""
    x = images[:count]
    rows = torch.cat([torch.cat(list(x), -1), torch.cat(list(reconstruct(vae, x)), -1)], -2)
    return Image.fromarray(to_uint8(rows[None])[0])


def train_on_dataset(root: str | Path, folder: str | Path, size: tuple[int, int], *, steps: int = 1600,
                     batch_size: int = 8, lr: float = 2e-3, kl_weight: float = 1e-6, block_out_channels=None,
                     seed: int = 0, log=print) -> tuple[AutoencoderKL, dict]:
    """Train the tiny VAE on the training images of a dataset folder (``train_pairs_data.json``)
    at ``size`` (height, width) and write the SD2 folder (``save_tiny_sd2``) with
    ``reconstructions.png`` (test images over their reconstructions). Stats add the
    reconstruction PSNR of the training images (at most 256) and of the test images
    (``test_pairs_data.json``)."""
    from ..util.fileio import atomic_save_image

    root, folder = Path(root), Path(folder)
    train = load_images([root / p for p in pair_file_images(root, "train_pairs_data.json")], size)
    test = load_images([root / p for p in pair_file_images(root, "test_pairs_data.json")], size)
    vae, stats = train_tiny_vae(train, steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight, seed=seed,
                                log_every=max(1, steps // 8), log=log, block_out_channels=block_out_channels)
    stats.update(train_images=len(train), test_images=len(test), psnr_train=reconstruction_psnr(vae, train[:256]),
                 psnr_test=reconstruction_psnr(vae, test))
    save_tiny_sd2(vae, folder, seed=seed, stats=stats)
    atomic_save_image(folder / "reconstructions.png", sample_grid(vae, test, 8))
    log(f"VAE: reconstruction PSNR train {stats['psnr_train']:.2f} dB, test {stats['psnr_test']:.2f} dB, "
        f"scaling factor {stats['scaling_factor']:.4f}, {stats['seconds']:.0f}s")
    return vae, stats


__all__ = [
    "load_images", "pair_file_images", "reconstruct", "reconstruction_psnr", "sample_grid", "to_uint8",
    "train_on_dataset", "train_tiny_vae", "vae_loss",
]
