"""Exact scores of generated images of the synthetic dataset (``src.synthetic``), for the
synthetic pose-transfer benchmark (``bench/synthetic_transfer.py``).

The dataset draws every figure on a plain background from its identity's recorded clothing, so
two task scores need no learned model: pose IoU (the generated silhouette against the target's)
and appearance accuracy (whether the generated clothing colours at the target pose are nearest
those of the own identity among the candidate identities).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from src.pose import frame_to_pixels, read_keypoints
from src.data import pose_path
from src.images import load_rgb
from src.synthetic import BACKGROUND, draw_figure


def figure_mask(image: np.ndarray, threshold: int = 60) -> np.ndarray:
    """Pixels that differ from the plain background: the figure's silhouette."""
    return np.abs(image.astype(np.int32) - np.array(BACKGROUND)).sum(-1) > threshold


def pose_iou(generated: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of the generated and target silhouettes."""
    a, b = figure_mask(generated), figure_mask(target)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def region_masks(kp: np.ndarray, width: int, height: int) -> dict[str, np.ndarray]:
    """Upper-garment (torso) and lower-garment (legs) regions of pixel keypoints."""
    scale = height / 256.0
    limb_w = max(2, int(round(9 * scale)))
    pt = lambda i: (int(round(kp[i, 0])), int(round(kp[i, 1])))  # noqa: E731
    upper = np.zeros((height, width), np.uint8)
    if not np.isnan(kp[[2, 5, 8, 11]]).any():
        cv2.fillConvexPoly(upper, cv2.convexHull(np.array([pt(2), pt(5), pt(11), pt(8)], np.int32)), 1)
    lower = np.zeros((height, width), np.uint8)
    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        if not np.isnan(kp[[a, b]]).any():
            cv2.line(lower, pt(a), pt(b), 1, limb_w)
    return {"upper": upper.astype(bool), "lower": lower.astype(bool)}


def clothing_features(image: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """Mean colour of the upper and lower garment regions (6 values) at pixel keypoints."""
    h, w = image.shape[:2]
    feats = []
    for mask in region_masks(kp, w, h).values():
        pixels = image[mask].astype(np.float64)
        feats.append(pixels.mean(0) if len(pixels) else np.full(3, np.nan))
    return np.concatenate(feats)


def identity_of(image_rel: str) -> str:
    """The identity folder of an image path: './img/SYNTH/Figures/id_00012/01_front.jpg' -> 'id_00012'."""
    return Path(image_rel).parent.name


class TransferScorer:
    """Pose IoU and appearance accuracy of generated images for a list of pairs of a synthetic
    dataset, at the generated images' size (height, width).

    Everything that depends only on the pairs (target silhouettes, target keypoints, and the
    clothing colours every candidate identity would show at each target pose) is computed once,
    so several methods are scored against exactly the same references. Candidates default to
    the identities of the pairs (for the test split: the test identities, never seen in training).
    """

    def __init__(self, root: str | Path, pairs: list[dict], size: tuple[int, int], candidates: list[str] | None = None):
        self.root, self.pairs, self.size = Path(root), list(pairs), tuple(size)
        meta = json.loads((self.root / "synthetic_meta.json").read_text())["identities"]
        names = candidates or sorted({identity_of(p["target_image"]) for p in self.pairs})
        self.candidates = names
        h, w = self.size
        self.targets, self.keypoints, self.own, self.references = [], [], [], []
        for p in self.pairs:
            target = load_rgb(self.root / p["target_image"])
            if target.size != (w, h):
                target = target.resize((w, h), Image.BICUBIC)
            kp = frame_to_pixels(read_keypoints(pose_path(self.root, p["target_image"])), h, w)
            self.targets.append(np.asarray(target))
            self.keypoints.append(kp)
            self.own.append(names.index(identity_of(p["target_image"])))
            self.references.append(np.stack([clothing_features(draw_figure(kp, meta[n], w, h), kp) for n in names]))

    def score(self, images: list[np.ndarray]) -> dict:
        """``pose_iou`` (mean IoU of generated and target silhouettes), ``appearance_accuracy``
        (share of pairs whose generated clothing colours are nearest the own identity's among
        the candidates) and the per-pair values."""
        if len(images) != len(self.pairs):
            raise ValueError(f"{len(images)} images for {len(self.pairs)} pairs")
        ious, matches = [], []
        for image, target, kp, own, refs in zip(images, self.targets, self.keypoints, self.own, self.references):
            image = np.asarray(image)
            if image.shape[:2] != self.size:
                raise ValueError(f"generated image of size {image.shape[:2]}, expected {self.size}")
            ious.append(pose_iou(image, target))
            dists = np.nansum(np.abs(refs - clothing_features(image, kp)), axis=1)
            matches.append(bool(np.argmin(dists) == own))
        return {"pose_iou": float(np.mean(ious)), "appearance_accuracy": float(np.mean(matches)),
                "count": len(ious), "candidates": len(self.candidates), "per_pair_iou": ious,
                "per_pair_match": matches}
