"""The pose image of each keypoint format: one implementation, parametrised by the format.

Stage 2 sees a target pose as a render: the keypoints drawn by the format's renderer on a canvas
of ``draw_size``, then resized bicubic to the model size. B2 draws its targets so, the pipeline
its keypoint targets (``FPDMPipeline.render_target_pose``) and C1 its test poses with
``test_pose="draw"``. Formats differ in three things only, which a ``PoseFormat`` names: how its
files are read, what their coordinates are (``to_pixels``) and the drawing (``draw_array``).
``pose_format(name)`` looks one up in ``POSE_FORMATS``: "openpose18" (DeepFashion's 18 points in
the annotation frame), "wholebody133" (PHOENIX-2014T's 133 points in frame pixels) and "market18"
(Market-1501's 18 points in photo pixels, drawn thinner).
Sizes are (height, width).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..util.images import load_rgb, resize
from . import market18, openpose18, wholebody133
from .keypoints import resize_keypoints

Size = tuple[int, int]


@dataclass(frozen=True)
class PoseFormat:
    """A keypoint format: ``read_keypoints(path)`` gives a file's keypoints as stored;
    ``to_pixels(kp, size, photo_size)`` maps stored keypoints of a photo of ``photo_size`` (None:
    the format's usual frame) to pixels of an image of ``size``; ``draw_array(kp, size)`` renders
    pixel keypoints on a black canvas (RGB uint8); ``flip_permutation`` is its left/right swap."""

    name: str
    read_keypoints: Callable[[str | Path], np.ndarray]
    to_pixels: Callable[[np.ndarray, Size, Size | None], np.ndarray]
    draw_array: Callable[[np.ndarray, Size], np.ndarray]
    flip_permutation: tuple[int, ...]

    def draw(self, kp_draw: np.ndarray, draw_size: Size, size: Size) -> Image.Image:
        """Pixel keypoints drawn on a canvas of ``draw_size``, then resized bicubic to ``size``."""
        draw_size, size = tuple(draw_size), tuple(size)
        image = Image.fromarray(self.draw_array(kp_draw, draw_size))
        return image if draw_size == size else resize(image, size)

    def stage2_pose(self, kp: np.ndarray, size: Size, draw_size: Size, photo_size: Size | None = None) -> Image.Image:
        """The stage-2 pose image of stored keypoints, without augmentation."""
        return self.draw(self.to_pixels(kp, tuple(draw_size), photo_size), draw_size, size)

    def drawn_pose(self, keypoint_file: str | Path, size: Size, draw_size: Size) -> Image.Image:
        """``stage2_pose`` of a keypoint file."""
        return self.stage2_pose(self.read_keypoints(keypoint_file), size, draw_size)

    def target_pose_image(self, rendered_file: str | Path, keypoint_file: str | Path, size: Size) -> Image.Image:
        """A1's render of a photo when ``rendered_file`` exists, else drawn now from its keypoints at
        ``size``, the photo's (what A1 would have written)."""
        if Path(rendered_file).is_file():
            return load_rgb(rendered_file)
        return self.drawn_pose(keypoint_file, size, size)


def _openpose18_pixels(kp: np.ndarray, size: Size, photo_size: Size | None = None) -> np.ndarray:
    # The annotation frame maps onto any photo: its size does not enter.
    return openpose18.frame_to_pixels(kp, *size)


def _openpose18_draw(kp: np.ndarray, size: Size) -> np.ndarray:
    return openpose18.draw_pose(kp, *size)


def _wholebody133_pixels(kp: np.ndarray, size: Size, photo_size: Size | None = None) -> np.ndarray:
    return resize_keypoints(kp, photo_size or wholebody133.FRAME_SIZE, size)


def _wholebody133_draw(kp: np.ndarray, size: Size) -> np.ndarray:
    return wholebody133.draw_pose(kp, *size, wholebody133.stick_width_at(size))


def _market18_pixels(kp: np.ndarray, size: Size, photo_size: Size | None = None) -> np.ndarray:
    return resize_keypoints(kp, photo_size or market18.FRAME_SIZE, size)


def _market18_draw(kp: np.ndarray, size: Size) -> np.ndarray:
    return market18.draw_pose(kp, *size, market18.stick_width_at(size))


OPENPOSE18 = PoseFormat("openpose18", openpose18.read_keypoints, _openpose18_pixels, _openpose18_draw,
                        tuple(openpose18.FLIP_PERMUTATION))
WHOLEBODY133 = PoseFormat("wholebody133", wholebody133.read_keypoints, _wholebody133_pixels, _wholebody133_draw,
                          tuple(wholebody133.FLIP_PERMUTATION))
MARKET18 = PoseFormat("market18", market18.read_keypoints, _market18_pixels, _market18_draw,
                      tuple(market18.FLIP_PERMUTATION))
POSE_FORMATS = {f.name: f for f in (OPENPOSE18, WHOLEBODY133, MARKET18)}


def pose_format(name: str) -> PoseFormat:
    """The ``PoseFormat`` of a name in ``POSE_FORMATS``."""
    if name not in POSE_FORMATS:
        raise ValueError(f"pose_format={name!r}: expected one of {', '.join(POSE_FORMATS)}")
    return POSE_FORMATS[name]


__all__ = ["MARKET18", "OPENPOSE18", "POSE_FORMATS", "WHOLEBODY133", "PoseFormat", "pose_format"]
