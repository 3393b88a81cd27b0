"""Keypoint operations for any number of points K.

Keypoints are float arrays of shape (K, 2) holding (x, y) pixels; a missing point is NaN, so
every operation keeps it missing without special cases. Sizes are (height, width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PoseFileError(ValueError):
    """A keypoint file that cannot be used; the message names the file and the fault."""


def swap_permutation(num_points: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """The index permutation that exchanges each (left, right) pair of ``pairs`` (0-based)."""
    permutation = list(range(num_points))
    for a, b in pairs:
        permutation[a], permutation[b] = b, a
    return permutation


def resize_keypoints(kp: np.ndarray, old_size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Pixel keypoints of an image of (height, width) ``old_size`` to one of ``new_size``."""
    (h0, w0), (h1, w1) = old_size, new_size
    return np.asarray(kp, dtype=np.float64) * np.array([w1 / w0, h1 / h0])


def hflip_keypoints(kp: np.ndarray, width: int, swap: Sequence[int]) -> np.ndarray:
    """Mirror pixel keypoints of an image ``width`` wide and reorder them by ``swap`` (the
    left/right permutation of the format, see ``swap_permutation``), matching
    ``PIL.Image.transpose(FLIP_LEFT_RIGHT)`` (pixel column c goes to width - 1 - c)."""
    out = np.asarray(kp, dtype=np.float64).copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out[list(swap)]


def jitter_keypoints(kp: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` pixels to every present point."""
    kp = np.asarray(kp, dtype=np.float64)
    return kp + rng.normal(0.0, sigma, size=kp.shape)
