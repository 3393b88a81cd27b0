"""Readers for the pose files users already have, each to the project's 18 points in pixels.

Every reader returns a float array (18, 2) of (x, y) pixels of the image the caller names
(``image_size`` = (height, width)); a missing point is NaN (``src.pose.keypoints``). Formats:

- **OpenPose JSON** (``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}``): BODY_18/COCO
  (18 x 3 values, the project's order) and BODY_25 (25 x 3: mid-hip (8) and the feet (19-24)
  dropped, the rest renumbered). A point with confidence 0 (OpenPose writes ``0 0 0``) or below
  ``threshold`` is missing. The coordinates are pixels of the image OpenPose ran on: when the
  file records it (``canvas_height``/``canvas_width``, as ControlNet's editors write) or the
  caller passes ``pose_size``, they are scaled to ``image_size``; otherwise they are taken as
  pixels of ``image_size`` already. Coordinates that all lie in [0, 1] (OpenPose's
  ``--keypoint_scale 3``) are read as fractions of the image.
- **COCO-17** (mmpose, DWPose, COCO annotations): a JSON of COCO ``annotations``
  (``keypoints`` = 17 x [x, y, v], v = 0 unlabelled), mmpose's instance lists
  (``keypoints`` 17 x [x, y] beside ``keypoint_scores``), or a ``.npy`` array (17, 2|3) or
  (people, 17, 2|3); the neck is the mean of the shoulders when both are present. DWPose's
  133-point whole body uses its first 17 (the COCO body). ``.npy`` arrays of 18 or 25 points are
  read as BODY_18 / BODY_25.
- **The project's txt** (18 rows of ``x y`` in the 256x256 annotation frame, ``-1 -1`` missing,
  ``src.pose.openpose18``): converted with ``image_size``, which it needs.

``read_pose(path, image_size, person=0, threshold=None, pose_size=None)`` picks the reader by
extension and content. Every fault is a ``PoseFileError`` (a ``ValueError``) with a one-line
message naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .keypoints import PoseFileError, resize_keypoints
from .openpose18 import NUM_JOINTS, frame_to_pixels, read_keypoints

# Source index of each of our 18 points (None: derived, see the readers).
BODY25_TO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# COCO-17: nose, l_eye, r_eye, l_ear, r_ear, l_sho, r_sho, l_elb, r_elb, l_wri, r_wri, l_hip,
# r_hip, l_knee, r_knee, l_ank, r_ank. The neck (our 1) is the mean of the shoulders.
COCO17_TO_18 = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO17_SHOULDERS = (5, 6)

# Default confidence thresholds: OpenPose's own render threshold; mmpose/DWPose's usual 0.3.
OPENPOSE_THRESHOLD = 0.05
COCO_SCORE_THRESHOLD = 0.3

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
LAYOUTS = {18: "BODY_18/COCO", 25: "BODY_25", 17: "COCO-17"}


def _lengths_help(per_point: int) -> str:
    return ", ".join(f"{k * per_point} ({name} {k}x{per_point})" for k, name in LAYOUTS.items())


# ---------------------------------------------------------------------------------------------
# points of any layout -> our 18


def to_18(points: np.ndarray, scores: np.ndarray | None, threshold: float, name: str = "<pose>") -> np.ndarray:
    """(K, 2) points with (K,) confidences (or None: all present) of a K in {17, 18, 25} (or
    DWPose's 133) -> our (18, 2), missing as NaN; a point with score <= 0 or below
    ``threshold`` is missing."""
    points = np.asarray(points, dtype=np.float64)
    k = points.shape[0]
    if k == 133:  # DWPose whole body: the first 17 are the COCO body
        points, k = points[:17], 17
        scores = None if scores is None else np.asarray(scores)[:17]
    if points.ndim != 2 or points.shape[1] != 2 or k not in LAYOUTS:
        raise PoseFileError(f"{name}: {k} points; expected 18 (BODY_18/COCO), 25 (BODY_25) or 17 (COCO-17)")
    pts = points.copy()
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        pts[(scores <= 0) | (scores < threshold) | ~np.isfinite(scores)] = np.nan
    pts[~np.isfinite(pts).all(axis=1)] = np.nan
    out = np.full((NUM_JOINTS, 2), np.nan)
    if k == 18:
        out[:] = pts
    elif k == 25:
        out[:] = pts[list(BODY25_TO_18)]
    else:
        for j, src in enumerate(COCO17_TO_18):
            if src is not None:
                out[j] = pts[src]
        out[1] = pts[list(COCO17_SHOULDERS)].mean(axis=0)  # NaN unless both shoulders are present
    return out


def _scale(kp: np.ndarray, pose_size, image_size) -> np.ndarray:
    """Pixels of ``pose_size`` -> pixels of ``image_size`` (either None: unchanged); keypoints
    that all lie in [0, 1] are fractions of the image."""
    present = kp[~np.isnan(kp).any(axis=1)]
    if len(present) and present.min() >= 0 and present.max() <= 1.0:
        if image_size is None:
            return kp
        h, w = image_size
        return kp * np.array([w, h])
    if pose_size is None or image_size is None:
        return kp
    return resize_keypoints(kp, tuple(pose_size), tuple(image_size))


def _pick(people: list, person: int, name: str):
    if not people:
        raise PoseFileError(f"{name}: no people in the file")
    if not -len(people) <= person < len(people):
        raise PoseFileError(f"{name}: person {person} requested but the file holds {len(people)}")
    return people[person]


# ---------------------------------------------------------------------------------------------
# OpenPose JSON


def parse_openpose(data, name: str = "<openpose>", image_size=None, person: int = 0,
                   threshold: float | None = None, pose_size=None) -> np.ndarray:
    """An OpenPose JSON object (already parsed) -> (18, 2) pixels; see the module docstring."""
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # ControlNet's editors write a list of one frame
    if not isinstance(data, dict) or "people" not in data:
        raise PoseFileError(f"{name}: not an OpenPose JSON file (no 'people' list)")
    threshold = OPENPOSE_THRESHOLD if threshold is None else threshold
    entry = _pick(list(data["people"] or []), person, name)
    values = entry.get("pose_keypoints_2d") if isinstance(entry, dict) else None
    if values is None:
        raise PoseFileError(f"{name}: person {person} has no 'pose_keypoints_2d'")
    try:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PoseFileError(f"{name}: 'pose_keypoints_2d' of person {person} holds a value that is not a number") from None
    if len(values) % 3 or len(values) // 3 not in LAYOUTS:
        raise PoseFileError(f"{name}: person {person} has {len(values)} values in 'pose_keypoints_2d'; "
                            f"expected {_lengths_help(3)}")
    triples = values.reshape(-1, 3)
    kp = to_18(triples[:, :2], triples[:, 2], threshold, name)
    if pose_size is None and "canvas_height" in data and "canvas_width" in data:
        pose_size = (int(data["canvas_height"]), int(data["canvas_width"]))
    return _scale(kp, pose_size, image_size)


def openpose_canvas_size(path: str | Path) -> tuple[int, int] | None:
    """The (height, width) an OpenPose JSON records (``canvas_height``/``canvas_width``), if any."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and "canvas_height" in data and "canvas_width" in data:
        return int(data["canvas_height"]), int(data["canvas_width"])
    return None


# ---------------------------------------------------------------------------------------------
# COCO-17 (COCO annotations, mmpose, DWPose)


def _coco_people(data) -> tuple[list, str] | None:
    """The instances of a COCO/mmpose JSON object and their kind, or None if it is neither."""
    if isinstance(data, dict):
        for key in ("annotations", "instances", "instance_info", "predictions"):
            if key in data:
                return _coco_people(data[key]) or ([], "coco")
        if "keypoints" in data:
            return [data], "coco"
        return None
    if isinstance(data, list):
        if not data:
            return [], "coco"
        if all(isinstance(d, dict) and "keypoints" in d for d in data):
            return data, "coco"
        if len(data) == 1:  # mmpose's inferencer: one list of instances per image
            return _coco_people(data[0])
    return None


def parse_coco(data, name: str = "<coco>", image_size=None, person: int = 0,
               threshold: float | None = None, pose_size=None) -> np.ndarray:
    """A COCO annotations / mmpose JSON object -> (18, 2) pixels; see the module docstring."""
    found = _coco_people(data)
    if found is None:
        raise PoseFileError(f"{name}: not a COCO/mmpose keypoint file (no 'keypoints')")
    threshold = COCO_SCORE_THRESHOLD if threshold is None else threshold
    entry = _pick(found[0], person, name)
    try:
        kp = np.asarray(entry["keypoints"], dtype=np.float64)
        scores = entry.get("keypoint_scores", entry.get("scores"))
        scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise PoseFileError(f"{name}: 'keypoints' of person {person} holds a value that is not a number") from None
    if kp.ndim == 1:  # COCO annotations: flat [x, y, v] * 17
        if len(kp) % 3 or len(kp) // 3 not in LAYOUTS:
            raise PoseFileError(f"{name}: person {person} has {len(kp)} keypoint values; expected {_lengths_help(3)}")
        kp = kp.reshape(-1, 3)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise PoseFileError(f"{name}: person {person} keypoints of shape {kp.shape}; expected (17, 2) or (17, 3)")
    if kp.shape[1] == 3:  # COCO visibility v: 0 = not labelled; 1, 2 = labelled
        visibility = kp[:, 2]
        scores, threshold = (visibility if scores is None else scores), (0.0 if scores is None else threshold)
        kp = kp[:, :2]
    if scores is not None and len(scores) != len(kp):
        raise PoseFileError(f"{name}: person {person} has {len(kp)} keypoints but {len(scores)} scores")
    return _scale(to_18(kp, scores, threshold, name), pose_size, image_size)


def parse_array(arr: np.ndarray, name: str = "<array>", image_size=None, person: int = 0,
                threshold: float | None = None, pose_size=None) -> np.ndarray:
    """An array (K, 2|3) or (people, K, 2|3), K in {17, 18, 25, 133} -> (18, 2) pixels; a third
    column is the confidence."""
    arr = np.asarray(arr)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise PoseFileError(f"{name}: not a numeric keypoint array")
    arr = arr.astype(np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3):
        raise PoseFileError(f"{name}: array of shape {arr.shape}; expected (K, 2|3) or (people, K, 2|3)")
    one = _pick(list(arr), person, name)
    k = one.shape[0]
    default = OPENPOSE_THRESHOLD if k in (18, 25) else COCO_SCORE_THRESHOLD
    scores = one[:, 2] if one.shape[1] == 3 else None
    kp = to_18(one[:, :2], scores, default if threshold is None else threshold, name)
    return _scale(kp, pose_size, image_size)


# ---------------------------------------------------------------------------------------------
# one entry point


def read_txt(path: str | Path, image_size) -> np.ndarray:
    """The project's 18-point txt (annotation frame) -> pixels of ``image_size``."""
    if image_size is None:
        raise PoseFileError(f"{path}: a keypoint txt is in the 256x256 annotation frame; "
                            "pass image_size=(height, width) to get pixels")
    return frame_to_pixels(read_keypoints(path), *image_size)


def read_pose(path: str | Path, image_size: tuple[int, int] | None = None, person: int = 0,
              threshold: float | None = None, pose_size: tuple[int, int] | None = None) -> np.ndarray:
    """Any supported pose file -> our 18 points (18, 2) in pixels of ``image_size`` (height,
    width), missing as NaN.

    person:    which person of a multi-person file (0: the first, as the file lists them).
    threshold: confidence below which a point is missing (OpenPose: 0.05, mmpose/DWPose scores
               0.3 by default; a confidence of 0 is always missing).
    pose_size: (height, width) of the image the file's pixel coordinates refer to (JSON, npy),
               when the file does not record it; None: the file's own or ``image_size``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    name = str(path)
    if suffix in IMAGE_EXTENSIONS:
        raise PoseFileError(f"{name}: an image, not a pose file (estimate its pose with src.pose.estimator, "
                            "or use it as a rendered pose image)")
    if not path.is_file():
        raise PoseFileError(f"{name}: pose file missing")
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise PoseFileError(f"{name}: not a readable .npy array ({e})") from None
        return parse_array(arr, name, image_size, person, threshold, pose_size)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        raise PoseFileError(f"{name}: not a text pose file (OpenPose/COCO JSON, keypoint txt) nor .npy") from None
    stripped = text.lstrip()
    if suffix == ".json" or stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise PoseFileError(f"{name}: not valid JSON ({e})") from None
        if (isinstance(data, dict) and "people" in data) or (
                isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and "people" in data[0]):
            return parse_openpose(data, name, image_size, person, threshold, pose_size)
        if _coco_people(data) is not None:
            return parse_coco(data, name, image_size, person, threshold, pose_size)
        raise PoseFileError(f"{name}: not a pose file: expected OpenPose JSON ('people'), COCO annotations "
                            "('annotations') or mmpose/DWPose instances ('keypoints')")
    return read_txt(path, image_size)


__all__ = [
    "BODY25_TO_18", "COCO17_TO_18", "COCO_SCORE_THRESHOLD", "OPENPOSE_THRESHOLD", "openpose_canvas_size",
    "parse_array", "parse_coco", "parse_openpose", "read_pose", "read_txt", "to_18",
]
