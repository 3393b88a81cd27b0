"""How each image reaches each network, the same in B1, B2, C1 and the pipeline.

The authors' preparation, reproduced exactly (every resize PIL bicubic in the pass order of the
Pillow they trained with, ``src.util.images.resize``):

- stage 1 (B1): photos through CLIP's processor (shortest edge, centre crop); the pose render
  squashed to the square (a centre crop would cut the head and feet off a tall render);
- stage 2 and sampling, ``source_views``: the source photo squashed to a square at its scale
  (``source_size``, or 256 in training at random) and then to ``source_size`` for the source
  encoder and to ``fusion_size`` for the fusion model (two resizes, from that square);
- ``pose_views``: the full pose render (drawn at ``pose_draw_size`` in training, A1's render at
  the photo's size in C1) resized to the output size for the pose encoder, and straight from the
  render to ``fusion_size`` for the fusion model.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..util.images import resize, to_tensor

FUSION_VIEWS = {"pose": "squash", "stage1_photo": "crop", "source": "squash"}


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP-style: bicubic resize of the shortest edge to ``size``, then a central square crop."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = resize(image, (nh, nw))
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
        return to_tensor(resize_crop(image, size) if crop else resize(image, (size, size)))
    x = image.float()[None]
    if crop:
        from ..models.clip_encoder import clip_resize

        return clip_resize(x, size)[0]
    if tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0]


def source_views(photo: Image.Image, source_size: int, fusion_size: int,
                 scale: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(source encoder's input (3, S, S), fusion model's input (3, F, F)) of a source photo, in
    [-1, 1]: squashed to ``scale`` (default ``source_size``), then from that square to each size."""
    square = resize(photo.convert("RGB"), (scale or source_size,) * 2)
    return to_tensor(resize(square, (source_size, source_size))), to_tensor(resize(square, (fusion_size,) * 2))


def pose_views(render: Image.Image, size: tuple[int, int], fusion_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pose encoder's input (3, H, W), fusion model's input (3, F, F)) of a full pose render, in
    [-1, 1], each resized straight from the render."""
    render = render.convert("RGB")
    return to_tensor(resize(render, tuple(size))), to_tensor(resize(render, (fusion_size, fusion_size)))
