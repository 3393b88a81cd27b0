"""A synthetic pose-transfer dataset the project writes itself (no third-party data).

Each identity is a figure with its own clothing (upper and lower colours and a pattern on the
upper garment) drawn along plausible 18-point poses, on a plain background, in the DeepFashion
layout (``img/``, ``pose/``, pair JSONs). Train and test are split by identity. The same seed
gives the same files. ``synthetic_meta.json`` records each identity's clothing.

Because every figure is drawn from known keypoints and clothing on a plain background, generated
images of this dataset are scored exactly, with no learned model (``TransferScorer``): pose IoU
(the generated silhouette against the target's) and appearance accuracy (whether the generated
clothing colours at the target pose are nearest those of the own identity among the candidate
identities). The demo and the synthetic benchmark (``bench/synthetic_transfer.py``) use both.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.pairs import pose_path
from ..util.fileio import atomic_save_image, atomic_write_json
from ..util.images import comparison_grid, load_rgb, resize
from ..pose import NUM_JOINTS, pixels_to_frame, write_keypoints
from ..pose.render import pose_format as find_pose_format
from ..evaluate.pose_accuracy import target_keypoints

BACKGROUND = (238, 238, 238)
SKIN_TONES = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 205, 148), (234, 192, 134))
PATTERNS = ("plain", "hstripes", "vstripes", "dots")
VIEWS = ("front", "back", "side")


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour, far from the background grey."""
    hue = rng.uniform(0, 180)
    hsv = np.uint8([[[hue, rng.uniform(150, 255), rng.uniform(90, 230)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def clothing_distance(a: dict, b: dict) -> int:
    """L1 distance between two identities' (upper, lower) clothing colours."""
    return int(np.abs(np.subtract(a["upper"] + a["lower"], b["upper"] + b["lower"])).sum())


def _clothing(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    upper = random_color(rng)
    lower = random_color(rng)
    while np.abs(np.subtract(upper, lower)).sum() < 120:
        lower = random_color(rng)
    return upper, lower


def make_identity(rng: np.random.Generator, others: list[dict] | tuple = (), min_distance: int = 0,
                  tries: int = 200, patterns: tuple[str, ...] = PATTERNS) -> dict:
    """A random identity. With ``min_distance`` > 0 its clothing colours are redrawn until their
    ``clothing_distance`` to every identity in ``others`` is at least that (after ``tries``
    draws, the farthest draw is kept), so a few hundred identities stay tellable apart. Its
    upper-garment pattern is one of ``patterns``."""
    upper, lower = _clothing(rng)
    if min_distance > 0 and others:
        best, best_gap = (upper, lower), -1
        for _ in range(tries):
            gap = min(clothing_distance({"upper": upper, "lower": lower}, o) for o in others)
            if gap > best_gap:
                best, best_gap = (upper, lower), gap
            if gap >= min_distance:
                break
            upper, lower = _clothing(rng)
        upper, lower = best
    return {
        "upper": upper,
        "lower": lower,
        "accent": tuple(int(255 - c * 0.6) for c in upper),
        # drawn from all patterns whatever ``patterns`` allows, so a seed gives the same colours
        "pattern": patterns[int(rng.integers(len(PATTERNS))) % len(patterns)],
        "skin": SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        "hair": tuple(int(c) for c in rng.integers(10, 90, size=3)),
        "build": float(rng.uniform(0.9, 1.1)),
    }


def _limb(start: np.ndarray, length: float, angle_deg: float) -> np.ndarray:
    """End point of a limb hanging from ``start``; angle 0 points down, positive towards +x."""
    a = math.radians(angle_deg)
    return start + length * np.array([math.sin(a), math.cos(a)])


def random_pose(rng: np.random.Generator, width: int, height: int, build: float = 1.0,
                view: str | None = None) -> np.ndarray:
    """Pixel keypoints (18, 2) of a standing figure; NaN marks joints hidden by the view."""
    view = view or VIEWS[int(rng.integers(len(VIEWS)))]
    body = height * rng.uniform(0.78, 0.9)
    top = rng.uniform(0.03, 0.08) * height
    cx = width / 2 + rng.uniform(-0.06, 0.06) * width
    turn = {"front": 1.0, "back": 1.0, "side": rng.uniform(0.35, 0.55)}[view]
    half_sh = 0.11 * body * build * turn
    half_hip = 0.075 * body * build * turn
    neck = np.array([cx, top + 0.17 * body])
    nose = np.array([cx + (0.03 * body if view == "side" else 0.0), top + 0.08 * body])
    kp = np.full((NUM_JOINTS, 2), np.nan)
    # person's right is image-left when facing the camera, image-right from the back
    side = -1.0 if view != "back" else 1.0
    kp[1] = neck
    kp[2] = neck + [side * half_sh, 0.01 * body]
    kp[5] = neck + [-side * half_sh, 0.01 * body]
    hip_y = neck[1] + 0.33 * body
    kp[8] = [cx + side * half_hip, hip_y]
    kp[11] = [cx - side * half_hip, hip_y]
    for shoulder, elbow, wrist, sgn in ((2, 3, 4, side), (5, 6, 7, -side)):
        up = rng.uniform(-20, 95)
        bend = rng.uniform(-10, 70)
        kp[elbow] = _limb(kp[shoulder], 0.17 * body, sgn * up)
        kp[wrist] = _limb(kp[elbow], 0.15 * body, sgn * (up + bend))
    for hip, knee, ankle, sgn in ((8, 9, 10, side), (11, 12, 13, -side)):
        out = rng.uniform(-8, 22)
        kp[knee] = _limb(kp[hip], 0.24 * body, sgn * out)
        kp[ankle] = _limb(kp[knee], 0.23 * body, sgn * (out - rng.uniform(0, 12)))
    eye_dx, ear_dx = 0.025 * body * turn, 0.05 * body * turn
    if view != "back":
        kp[0] = nose
        kp[14] = nose + [side * eye_dx, -0.025 * body]
        kp[15] = nose + [-side * eye_dx, -0.025 * body]
    kp[16] = nose + [side * ear_dx, -0.01 * body]
    kp[17] = nose + [-side * ear_dx, -0.01 * body]
    if view == "side":
        kp[[15, 17]] = np.nan  # the far side of the face is hidden
    return kp


def draw_figure(kp: np.ndarray, identity: dict, width: int, height: int) -> np.ndarray:
    """Draw the identity's figure along pixel keypoints; returns RGB uint8 (height, width, 3)."""
    img = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    scale = height / 256.0
    limb_w = max(2, int(round(9 * scale * identity["build"])))
    pt = lambda i: (int(round(kp[i, 0])), int(round(kp[i, 1])))  # noqa: E731
    have = lambda *ids: all(not np.isnan(kp[i]).any() for i in ids)  # noqa: E731

    for a, b in ((8, 9), (9, 10), (11, 12), (12, 13)):
        if have(a, b):
            cv2.line(img, pt(a), pt(b), identity["lower"], limb_w + 2, cv2.LINE_AA)
    if have(8, 11):
        cv2.line(img, pt(8), pt(11), identity["lower"], limb_w + 2, cv2.LINE_AA)

    torso = np.array([pt(2), pt(5), pt(11), pt(8)], dtype=np.int32)
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(torso), 255, cv2.LINE_AA)
    cv2.line(mask, pt(2), pt(5), 255, limb_w, cv2.LINE_AA)
    garment = np.empty_like(img)
    garment[:] = identity["upper"]
    step = max(3, int(round(8 * scale)))
    if identity["pattern"] == "hstripes":
        garment[(np.arange(height) // step) % 2 == 1, :] = identity["accent"]
    elif identity["pattern"] == "vstripes":
        garment[:, (np.arange(width) // step) % 2 == 1] = identity["accent"]
    elif identity["pattern"] == "dots":
        for y in range(step // 2, height, step * 2):
            for x in range(step // 2, width, step * 2):
                cv2.circle(garment, (x, y), max(1, step // 2), identity["accent"], -1)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    img = (img * (1 - alpha) + garment * alpha).round().astype(np.uint8)

    for a, b, color in ((2, 3, "upper"), (3, 4, "skin"), (5, 6, "upper"), (6, 7, "skin")):
        if have(a, b):
            cv2.line(img, pt(a), pt(b), identity[color], limb_w, cv2.LINE_AA)
    head = kp[0] if have(0) else np.nanmean(kp[[16, 17]], axis=0)
    r = max(3, int(round(13 * scale)))
    c = (int(round(head[0])), int(round(head[1])))
    cv2.circle(img, c, r, identity["skin"] if have(0) else identity["hair"], -1, cv2.LINE_AA)
    if have(0):
        cv2.ellipse(img, c, (r, r), 0, 180, 360, identity["hair"], -1, cv2.LINE_AA)
    return img


def make_synthetic_dataset(root: str | Path, n_identities: int = 6, poses_per_identity: int = 4,
                           test_identities: int = 2, width: int = 176, height: int = 256,
                           seed: int = 0, min_clothing_distance: int = 0,
                           patterns: tuple[str, ...] = PATTERNS) -> dict:
    """Write the dataset under ``root`` and return a summary. Identities ``0..n-test-1`` train,
    the rest test. Pairs are all ordered pairs of distinct poses within an identity.

    Any size works (the figure is drawn in proportion to ``height``; 64x64 and 128x128 make the
    synthetic benchmark). ``min_clothing_distance`` > 0 keeps every identity's (upper, lower)
    colours at least that L1 distance from all earlier identities' (see ``make_identity``);
    0 (the default) draws them independently. ``patterns`` limits the upper garments' patterns
    (("plain",): plain colours only, the simplest figures)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    meta = {"seed": seed, "width": width, "height": height, "min_clothing_distance": min_clothing_distance,
            "patterns": list(patterns), "identities": {}}
    splits = {"train": [], "test": []}
    made: list[dict] = []
    for i in range(n_identities):
        identity = make_identity(rng, made, min_clothing_distance, patterns=tuple(patterns))
        made.append(identity)
        split = "test" if i >= n_identities - test_identities else "train"
        name = f"id_{i:05d}"
        meta["identities"][name] = {**identity, "split": split}
        rels = []
        for j in range(poses_per_identity):
            kp = random_pose(rng, width, height, identity["build"])
            view = "front" if not np.isnan(kp[0]).any() and not np.isnan(kp[15]).any() else "other"
            rel = f"SYNTH/Figures/{name}/{j:02d}_{view}"
            image = Image.fromarray(draw_figure(kp, identity, width, height))
            atomic_save_image(root / "img" / f"{rel}.jpg", image, quality=95)
            write_keypoints(root / "pose" / f"{rel}.txt", pixels_to_frame(kp, height, width))
            rels.append(f"./img/{rel}.jpg")
        splits[split] += [{"source_image": a, "target_image": b} for a in rels for b in rels if a != b]
    for split, pairs in splits.items():
        atomic_write_json(root / f"{split}_pairs_data.json", pairs)
    atomic_write_json(root / "synthetic_meta.json", meta)
    return {"root": str(root), "train_pairs": len(splits["train"]), "test_pairs": len(splits["test"]),
            "images": n_identities * poses_per_identity}


# ---------------------------------------------------------------------------------------------
# exact scores of generated images


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


def load_at(root: str | Path, image_rel: str, size: tuple[int, int]) -> np.ndarray:
    """A dataset image as RGB uint8 (height, width, 3), resized bicubic to ``size`` when needed."""
    image = load_rgb(Path(root) / image_rel)
    if image.size != (size[1], size[0]):
        image = resize(image, size)
    return np.asarray(image)


def clothing_colour_error(images: list[np.ndarray], root: str | Path, image_rels: list[str]) -> float:
    """Mean absolute difference (0-255 per channel) between the mean upper- and lower-garment
    colours of ``images`` and those of the dataset's own images ``image_rels`` at the same
    keypoints (e.g. an autoencoder's reconstructions against the originals)."""
    errors = []
    for image, rel in zip(images, image_rels, strict=True):
        size = image.shape[:2]
        kp = target_keypoints(root, rel, size)
        errors.append(np.abs(clothing_features(image, kp) - clothing_features(load_at(root, rel, size), kp)))
    return float(np.nanmean(errors))


def identity_of(image_rel: str) -> str:
    """The identity folder of an image path: './img/SYNTH/Figures/id_00012/01_front.jpg' -> 'id_00012'."""
    return Path(image_rel).parent.name


class PairScorer:
    """What scoring generated images of a list of pairs against the known answer needs, whatever
    the score: the targets, the generated images of a folder of C1's layout and the copy-source
    answers, all at one size (height, width), loaded once so that every method is scored against
    the same references. Subclasses (``TransferScorer``, ``src.synthetic.signing.HandScorer``) add
    their references and ``score``."""

    def __init__(self, root: str | Path, pairs: list[dict], size: tuple[int, int]):
        self.root, self.pairs, self.size = Path(root), list(pairs), tuple(size)
        self.targets = [load_at(self.root, p["target_image"], self.size) for p in self.pairs]

    def generated(self, folder: str | Path) -> list[np.ndarray]:
        """The pairs' generated images in a folder of C1's layout, at the scoring size."""
        from ..evaluate.handoff import output_name, size_name

        return [np.asarray(load_rgb(Path(folder) / size_name(self.size) / output_name(p))) for p in self.pairs]

    def sources(self) -> list[np.ndarray]:
        """The pairs' source images at the scoring size: the copy-source answers."""
        return [load_at(self.root, p["source_image"], self.size) for p in self.pairs]

    def checked(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """``images`` as arrays, after checking there is one per pair at the scoring size."""
        if len(images) != len(self.pairs):
            raise ValueError(f"{len(images)} images for {len(self.pairs)} pairs")
        images = [np.asarray(image) for image in images]
        for image in images:
            if image.shape[:2] != self.size:
                raise ValueError(f"generated image of size {image.shape[:2]}, expected {self.size}")
        return images


class TransferScorer(PairScorer):
    """Pose IoU and appearance accuracy of generated images for a list of pairs of a synthetic
    dataset, at the generated images' size (height, width).

    Everything that depends only on the pairs (target silhouettes, target keypoints, and the
    clothing colours every candidate identity would show at each target pose) is computed once.
    Candidates default to the identities of the pairs (for the test split: the test identities,
    never seen in training).
    """

    def __init__(self, root: str | Path, pairs: list[dict], size: tuple[int, int], candidates: list[str] | None = None):
        super().__init__(root, pairs, size)
        meta = json.loads((self.root / "synthetic_meta.json").read_text())["identities"]
        names = candidates or sorted({identity_of(p["target_image"]) for p in self.pairs})
        self.candidates = names
        h, w = self.size
        self.keypoints, self.own, self.references = [], [], []
        for p in self.pairs:
            kp = target_keypoints(self.root, p["target_image"], self.size)
            self.keypoints.append(kp)
            self.own.append(names.index(identity_of(p["target_image"])))
            self.references.append(np.stack([clothing_features(draw_figure(kp, meta[n], w, h), kp) for n in names]))

    def score(self, images: list[np.ndarray]) -> dict:
        """``pose_iou`` (mean IoU of generated and target silhouettes), ``appearance_accuracy``
        (share of pairs whose generated clothing colours are nearest the own identity's among
        the candidates) and the per-pair values."""
        ious, matches = [], []
        for image, target, kp, own, refs in zip(self.checked(images), self.targets, self.keypoints, self.own,
                                                self.references):
            ious.append(pose_iou(image, target))
            dists = np.nansum(np.abs(refs - clothing_features(image, kp)), axis=1)
            matches.append(bool(np.argmin(dists) == own))
        return {"pose_iou": float(np.mean(ious)), "appearance_accuracy": float(np.mean(matches)),
                "count": len(ious), "candidates": len(self.candidates), "per_pair_iou": ious,
                "per_pair_match": matches}


def pair_grid(root: str | Path, pairs: list[dict], columns: dict[str, Path], size: tuple[int, int],
              pose_draw_size: tuple[int, int], rows: int = 8, cell: tuple[int, int] = (128, 128),
              pose_format: str = "openpose18") -> Image.Image:
    """A labelled grid of up to ``rows`` pairs spread over ``pairs``: source | target pose (drawn
    in ``pose_format`` at ``pose_draw_size`` and resized to ``size``, as B2 and C1 draw it) |
    ground truth | one column per entry of ``columns`` (label -> a folder of C1's layout at ``size``)."""
    from PIL import ImageDraw

    from ..evaluate.handoff import output_name, size_name

    drawer = find_pose_format(pose_format)
    labels = ["source", "target pose", "ground truth", *columns]
    body_rows = []
    for p in pairs[:: max(1, len(pairs) // rows)][:rows]:
        row = [load_rgb(Path(root) / p["source_image"]),
               drawer.drawn_pose(pose_path(root, p["target_image"]), size, pose_draw_size),
               load_rgb(Path(root) / p["target_image"])]
        row += [load_rgb(folder / size_name(size) / output_name(p)) for folder in columns.values()]
        body_rows.append(row)
    body = comparison_grid(body_rows, cell)
    header = Image.new("RGB", (body.width, 28), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(labels):
        draw.multiline_text((i * cell[1] + 3, 2), "\n".join(textwrap.wrap(label, 20)[:2]), fill=(0, 0, 0), spacing=1)
    grid = Image.new("RGB", (body.width, body.height + header.height), (255, 255, 255))
    grid.paste(header, (0, 0))
    grid.paste(body, (0, header.height))
    return grid


if __name__ == "__main__":
    import sys

    print(json.dumps(make_synthetic_dataset(sys.argv[1] if len(sys.argv) > 1 else "data/synthetic"), indent=2))
