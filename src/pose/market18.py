"""Market-1501's 18-point keypoints: DeepFashion's OpenPose points, file syntax and renderer
(``src.pose.openpose18``) with coordinates in pixels of the 128x64 photo, PATN's frame, and a
stick width for pedestrians 128 pixels high.

A file holds 18 rows of ``x y`` in pixels of the photo, ``-1 -1`` for a missing point (NaN in
memory). Sizes are (height, width).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import openpose18

FRAME_SIZE = (128, 64)  # Market-1501's bounding boxes and PATN's keypoint frame, (height, width)

# DeepFashion's training renders use 4-px joints and limb half-widths on the 550-high canvas B2
# draws on (0.73% of the height); at 128 high that is 0.93 px, so 1 (3-px strokes and dots).
# 0 would draw 1-px lines that a bicubic resize washes out; 2 (5-px strokes) would be as wide as
# a pedestrian's arm at this size.
STICK_WIDTH = 1
FLIP_PERMUTATION = openpose18.FLIP_PERMUTATION


def stick_width_at(draw_size: tuple[int, int]) -> int:
    """``STICK_WIDTH`` scaled from the photo's height to a canvas ``draw_size`` high, so a line
    keeps its width relative to the pedestrian on any canvas."""
    return max(1, round(STICK_WIDTH * draw_size[0] / FRAME_SIZE[0]))


def read_keypoints(path: str | Path) -> np.ndarray:
    """(18, 2) pixel keypoints of a file, NaN for missing; the frame is checked by the dataset."""
    return openpose18.read_file_keypoints(path)


write_keypoints = openpose18.write_keypoints


def draw_pose(kp: np.ndarray, height: int, width: int, stick_width: int = STICK_WIDTH) -> np.ndarray:
    """The OpenPose renderer with joints and limbs ``stick_width`` wide (RGB uint8)."""
    return openpose18.draw_pose(kp, height, width, stick_width=stick_width, joint_radius=stick_width)
