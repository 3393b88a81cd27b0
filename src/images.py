"""Image helpers shared by every stage: loading, the one PIL <-> tensor conversion, result grids.

Tensors are float (3, H, W) in [-1, 1]; sizes are (height, width).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image fully decoded as RGB; grayscale, palette, CMYK and RGBA are converted
    (transparency composited on white)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (3, H, W) in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """float (3, H, W) in [-1, 1] -> PIL RGB."""
    arr = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


def comparison_grid(rows: list[list[Image.Image]], cell: tuple[int, int]) -> Image.Image:
    """Rows of images (source | pose | ground truth | generated) resized into one grid of
    ``cell`` (height, width) cells."""
    h, w = cell
    grid = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(im.convert("RGB").resize((w, h), Image.BICUBIC), (j * w, i * h))
    return grid
