"""How each image reaches the fusion model, the same for B1, B2, C1 and the pipeline.

The authors' preparation: a pose is always squashed to the square (a centre crop would cut the
head and feet off a tall render); stage 1's photos go through CLIP's processor (shortest edge,
centre crop); stage 2 and sampling squash the source.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..images import to_tensor

FUSION_VIEWS = {"pose": "squash", "stage1_photo": "crop", "source": "squash"}


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP-style: bicubic resize of the shortest edge to ``size``, then a central square crop."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def fusion_input(image: Image.Image | torch.Tensor, size: int, kind: str) -> torch.Tensor:
    """The fusion model's input (3, size, size) in [-1, 1] of a PIL image or a (3, H, W) tensor in
    [-1, 1]; ``kind`` is a key of ``FUSION_VIEWS`` and decides crop or squash."""
    if kind not in FUSION_VIEWS:
        raise ValueError(f"unknown fusion input kind {kind!r}; choose one of {', '.join(FUSION_VIEWS)}")
    crop = FUSION_VIEWS[kind] == "crop"
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        return to_tensor(resize_crop(image, size) if crop else image.resize((size, size), Image.BICUBIC))
    x = image.float()[None]
    if crop:
        from ..models.clip_encoder import clip_resize

        return clip_resize(x, size)[0]
    if tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0]

