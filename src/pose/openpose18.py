"""The 18-point OpenPose/COCO keypoint format of DeepFashion: txt files in a 256x256 annotation
frame, the left/right swap table, and the OpenPose-style renderer.

A file holds 18 rows of ``x y`` in the annotation frame, ``-1 -1`` for a missing point (NaN in
memory, see ``src.pose.keypoints``). The frame is 256x256 and its central 176x256 (from x = 40)
is the person image. Sizes are (height, width).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .keypoints import PoseFileError, swap_permutation

NUM_JOINTS = 18
JOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
# Left/right partners (0-based), swapped by the horizontal flip.
FLIP_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
FLIP_PERMUTATION = swap_permutation(NUM_JOINTS, FLIP_PAIRS)

# The annotation frame: 256x256 whose central 176x256 is the person image.
FRAME_SIZE = 256
FRAME_OFFSET_X = 40
FRAME_WIDTH = 176

# OpenPose palette as B,G,R triples, drawn into a BGR canvas that is converted to RGB at the end.
COLORS_BGR = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
# Limbs as joint numbers counted from 1; limb i takes colour i.
LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)
JOINT_RADIUS = 4
STICK_WIDTH = 4


# ---------------------------------------------------------------------------------------------
# files


def parse_keypoints(text: str, name: str = "<keypoints>") -> np.ndarray:
    """Parse 18 rows of ``x y``; ``-1`` in either coordinate marks a missing point."""
    rows = [line.split() for line in text.strip().splitlines() if line.strip()]
    if len(rows) != NUM_JOINTS or any(len(r) != 2 for r in rows):
        shape = f"{len(rows)} rows" + ("" if all(len(r) == 2 for r in rows) else " with a row not of 2 values")
        raise PoseFileError(f"{name}: expected {NUM_JOINTS} rows of 'x y', got {shape}")
    try:
        kp = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise PoseFileError(f"{name}: a value is not a number") from None
    if not np.isfinite(kp).all():
        raise PoseFileError(f"{name}: non-finite coordinate (nan or inf)")
    missing = (kp == -1).any(axis=1)
    kp[missing] = np.nan
    return kp


def check_frame(kp: np.ndarray, name: str = "<keypoints>") -> int:
    """Reject points more than one frame outside the annotation frame; return how many lie
    slightly outside it (in the margins or past the border), which are kept as valid."""
    valid = ~np.isnan(kp).any(axis=1)
    pts = kp[valid]
    far = (pts < -FRAME_SIZE) | (pts > 2 * FRAME_SIZE)
    if far.any():
        joint = int(np.flatnonzero(valid)[far.any(axis=1)][0])
        raise PoseFileError(
            f"{name}: joint {joint} ({JOINT_NAMES[joint]}) at {kp[joint].tolist()} is outside the "
            f"{FRAME_SIZE}x{FRAME_SIZE} annotation frame by more than a frame"
        )
    inside_x = (pts[:, 0] >= FRAME_OFFSET_X) & (pts[:, 0] <= FRAME_OFFSET_X + FRAME_WIDTH)
    inside_y = (pts[:, 1] >= 0) & (pts[:, 1] <= FRAME_SIZE)
    return int((~(inside_x & inside_y)).sum())


def read_file_keypoints(path: str | Path) -> np.ndarray:
    """The 18 rows of a txt file as stored, whatever their frame (``parse_keypoints``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PoseFileError(f"{path}: pose file missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PoseFileError(f"{path}: unreadable ({e})") from None
    return parse_keypoints(text, str(path))


def read_keypoints(path: str | Path) -> np.ndarray:
    """Read an 18-point txt file in the annotation frame and check it."""
    kp = read_file_keypoints(path)
    check_frame(kp, str(path))
    return kp


def format_keypoints(kp: np.ndarray) -> str:
    rows = []
    for x, y in np.asarray(kp, dtype=np.float64):
        rows.append("-1 -1" if (math.isnan(x) or math.isnan(y)) else f"{x:g} {y:g}")
    return "\n".join(rows) + "\n"


def write_keypoints(path: str | Path, kp: np.ndarray) -> None:
    from ..util.fileio import atomic_write_text

    atomic_write_text(path, format_keypoints(kp))


# ---------------------------------------------------------------------------------------------
# annotation frame <-> pixels


def frame_to_pixels(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Annotation-frame coordinates to pixels of an image ``height`` x ``width``."""
    kp = np.asarray(kp, dtype=np.float64)
    out = np.empty_like(kp)
    out[:, 0] = (kp[:, 0] - FRAME_OFFSET_X) * width / FRAME_WIDTH
    out[:, 1] = kp[:, 1] * height / FRAME_SIZE
    return out


def pixels_to_frame(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels of an image ``height`` x ``width`` to annotation-frame coordinates."""
    kp = np.asarray(kp, dtype=np.float64)
    out = np.empty_like(kp)
    out[:, 0] = kp[:, 0] * FRAME_WIDTH / width + FRAME_OFFSET_X
    out[:, 1] = kp[:, 1] * FRAME_SIZE / height
    return out


# ---------------------------------------------------------------------------------------------
# renderer


def draw_pose(kp: np.ndarray, height: int, width: int, stick_width: int = STICK_WIDTH,
              joint_radius: int = JOINT_RADIUS) -> np.ndarray:
    """Render pixel keypoints OpenPose-style; returns an RGB uint8 array (height, width, 3).

    Joints are filled circles of ``joint_radius``; each limb is a filled ellipse of half-width
    ``stick_width`` blended in as canvas * 0.4 + copy * 0.6. Points and limbs with a missing joint
    are skipped. The defaults are DeepFashion's at any canvas (the authors' fixed 4 px).
    """
    kp = np.asarray(kp, dtype=np.float64)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    present = ~np.isnan(kp).any(axis=1)
    for i in range(NUM_JOINTS):
        if present[i]:
            x, y = kp[i]
            cv2.circle(canvas, (int(x), int(y)), joint_radius, COLORS_BGR[i], thickness=-1)
    for i, (a, b) in enumerate(LIMBS):
        a, b = a - 1, b - 1
        if not (present[a] and present[b]):
            continue
        xs, ys = kp[[a, b], 0], kp[[a, b], 1]
        cx, cy = xs.mean(), ys.mean()
        length = math.hypot(ys[0] - ys[1], xs[0] - xs[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(cx), int(cy)), (int(length / 2), stick_width), int(angle), 0, 360, 1)
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, polygon, COLORS_BGR[i])
        canvas = cv2.addWeighted(canvas, 0.4, limb, 0.6, 0)
    return np.ascontiguousarray(canvas[:, :, ::-1])


def draw_pose_from_frame(kp_frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Render annotation-frame keypoints at an image size (what A1 writes)."""
    return draw_pose(frame_to_pixels(kp_frame, height, width), height, width)
