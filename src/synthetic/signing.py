"""The project's own synthetic signing set, in the layout of the PHOENIX-2014T release.

A few dozen short videos of a signer figure (upper body, dark clothes, grey background, 210 wide
x 260 high) whose arms, hands and fingers move smoothly, each frame with its 133 COCO-WholeBody
keypoints (``src.pose.wholebody133``). Written as the release and MSKA distribute them:

    <root>/features/fullFrame-210x260px/{train,dev,test}/<name>/images0001.png ...
    <root>/annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv
    <keypoints_dir>/Phoenix-2014T.{train,dev,test}   MSKA pickles: "<split>/<name>" ->
        {'name', 'gloss', 'text', 'num_frames', 'keypoint': torch tensor (T, 133, 3) x, y, score}

Everything follows from ``seed``. Legs and feet lie below the frame (as HRNet reports them, with
low scores), so the set itself has no missing points; tests inject faults on copies.

Because the frames are drawn from their keypoints, generated frames are scored exactly
(``HandScorer``: the error where the hands of the target and of the source lie).
"""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.pairs import pose_path
from ..data.phoenix import CSV_COLUMNS, MSKA_NAME, SPLITS, corpus_csv, frames_dir
from ..pose.wholebody133 import FRAME_SIZE, NUM_POINTS, read_keypoints
from .figures import PairScorer

GLOSSES = ("REGEN", "SONNE", "WOLKE", "NORD", "SUED", "MORGEN", "HEUTE", "WIND", "KALT", "WARM")
WORDS = ("es", "regnet", "morgen", "im", "norden", "sonne", "und", "wolken", "heute", "wind")

SKIN = (186, 200, 236)      # BGR
CLOTHES = (45, 32, 28)
BACKGROUND = 128


def _pose(t: float, params: dict) -> np.ndarray:
    """(133, 3) keypoints (x, y, score) of the figure at time ``t`` (frames)."""
    h, w = FRAME_SIZE
    kp = np.zeros((NUM_POINTS, 3))
    kp[:, 2] = 0.9
    cx = w / 2 + params["dx"]
    head = np.array([cx + 3 * math.sin(0.2 * t + params["phase"][0]), 62.0])
    ls, rs = np.array([cx + 38, 128.0]), np.array([cx - 38, 128.0])   # signer's left on image right
    body = {
        0: head + (0, 6), 1: head + (9, -4), 2: head + (-9, -4), 3: head + (19, 0), 4: head + (-19, 0),
        5: ls, 6: rs, 11: np.array([cx + 28, 255.0]), 12: np.array([cx - 28, 255.0]),
        13: np.array([cx + 30, 330.0]), 14: np.array([cx - 30, 330.0]),
        15: np.array([cx + 30, 400.0]), 16: np.array([cx - 30, 400.0]),
    }
    hands = {}
    for side, shoulder, sign, p0 in ((0, ls, 1, 1), (1, rs, -1, 3)):
        # upper arm hangs down and a little out; the forearm comes up and in, to the chest
        a1 = params["base"][side] + params["amp"][side] * math.sin(params["freq"][side] * t + params["phase"][p0])
        b = 0.7 + 0.55 * math.sin(params["freq"][side] * 1.3 * t + params["phase"][p0 + 1])
        elbow = shoulder + 50 * np.array([sign * math.sin(a1), math.cos(a1)])
        fore = math.atan2(-math.sin(b), -sign * math.cos(b))      # image angle of the forearm
        wrist = elbow + 44 * np.array([math.cos(fore), math.sin(fore)])
        body[7 + side], body[9 + side] = elbow, wrist
        hands[side] = (wrist, fore, sign)
    for i, p in body.items():
        kp[i, :2] = p
    kp[11:17, 2] = [0.4, 0.4, 0.02, 0.02, 0.01, 0.01]
    for j, (dx, dy) in enumerate(((10, 340), (16, 342), (-4, 335), (-10, 340), (-16, 342), (4, 335))):
        kp[17 + j, :2] = (cx + dx + (20 if j < 3 else -20), 60 + dy)
        kp[17 + j, 2] = 0.01
    # face: 68 iBUG points from an ellipse template around the head
    fx, fy = head
    face = np.zeros((68, 2))
    for i in range(17):                                   # jaw, image left to right
        ang = math.pi * (1 - i / 16)
        face[i] = (fx + 17 * math.cos(ang), fy + 2 + 22 * math.sin(ang) * (1 if i in (0, 16) else 1))
    for i in range(5):
        face[17 + i] = (fx - 15 + 2.5 * i, fy - 12 - (1 if i in (1, 2, 3) else 0))
        face[22 + i] = (fx + 5 + 2.5 * i, fy - 12 - (1 if i in (1, 2, 3) else 0))
    for i in range(4):
        face[27 + i] = (fx, fy - 8 + 3 * i)
    for i in range(5):
        face[31 + i] = (fx - 4 + 2 * i, fy + 5)
    for e, ex in ((36, fx - 8), (42, fx + 8)):
        for i, (ox, oy) in enumerate(((-4, 0), (-2, -1.5), (2, -1.5), (4, 0), (2, 1.5), (-2, 1.5))):
            face[e + i] = (ex + ox, fy - 6 + oy)
    mouth_open = 1.5 + 1.5 * math.sin(0.9 * t + params["phase"][0])
    for i in range(12):                                   # outer lips
        ang = math.pi + 2 * math.pi * i / 12
        face[48 + i] = (fx + 7 * math.cos(ang), fy + 12 + (2 + mouth_open) * math.sin(ang))
    for i in range(8):                                    # inner lips
        ang = math.pi + 2 * math.pi * i / 8
        face[60 + i] = (fx + 5 * math.cos(ang), fy + 12 + mouth_open * math.sin(ang))
    kp[23:91, :2] = face
    # hands: wrist, then thumb..little finger, 4 joints each, curling over time
    for side, (wrist, fore, sign) in hands.items():
        start = 91 + 21 * side
        kp[start, :2] = wrist
        for f in range(5):
            spread = (f - 2) * 0.3 * sign
            curl = 0.15 + 0.2 * (1 + math.sin(params["freq"][side] * 1.7 * t + f + params["phase"][2]))
            ang, p = fore + spread, wrist.copy()
            for j in range(4):
                seg = (9.0, 6.0, 4.5, 3.5)[j] * (0.8 if f in (0, 4) else 1.0)
                p = p + seg * np.array([math.cos(ang), math.sin(ang)])
                kp[start + 1 + 4 * f + j, :2] = p
                ang += sign * curl * (0.4 if j == 0 else 1.0)
    return kp


def _draw(kp: np.ndarray) -> np.ndarray:
    """RGB frame (260, 210, 3) of the figure with keypoints ``kp``."""
    h, w = FRAME_SIZE
    ramp = np.linspace(BACKGROUND - 12, BACKGROUND + 12, h, dtype=np.float64)[:, None, None]
    img = np.repeat(np.repeat(ramp, w, axis=1), 3, axis=2).astype(np.uint8).copy()
    p = lambda i: tuple(int(round(v)) for v in kp[i, :2])  # noqa: E731
    torso = np.array([kp[6, :2] + (-6, -4), kp[5, :2] + (6, -4), kp[11, :2] + (14, 10),
                      kp[12, :2] + (-14, 10)], dtype=np.int32)
    cv2.fillConvexPoly(img, torso, CLOTHES, lineType=cv2.LINE_AA)
    cv2.line(img, p(0), (p(0)[0], p(5)[1] - 8), SKIN, 12, cv2.LINE_AA)                    # neck
    cv2.ellipse(img, (p(0)[0], p(0)[1] - 4), (19, 25), 0, 0, 360, SKIN, -1, cv2.LINE_AA)  # head
    cv2.ellipse(img, (p(0)[0], p(0)[1] - 20), (20, 14), 0, 180, 360, (30, 40, 60), -1, cv2.LINE_AA)
    for i in (36, 42):
        cv2.circle(img, tuple(int(v) for v in kp[23 + i: 23 + i + 6, :2].mean(0)), 2, (40, 30, 30), -1, cv2.LINE_AA)
    mouth = kp[23 + 48: 23 + 60, :2].astype(np.int32)
    cv2.fillPoly(img, [mouth], (70, 60, 150), cv2.LINE_AA)
    for side in (0, 1):
        s, e, wr = p(5 + side), p(7 + side), p(9 + side)
        cv2.line(img, s, e, CLOTHES, 15, cv2.LINE_AA)
        cv2.line(img, e, wr, CLOTHES, 13, cv2.LINE_AA)
        _draw_hand(img, kp, side, SKIN)
    return np.ascontiguousarray(img[:, :, ::-1])


def _draw_hand(img: np.ndarray, kp: np.ndarray, side: int, colour) -> None:
    """Hand ``side`` (0 left, 1 right) of keypoints ``kp`` (frame pixels) onto ``img``: a palm and
    five fingers."""
    p = lambda i: tuple(int(round(v)) for v in kp[i, :2])  # noqa: E731
    start = 91 + 21 * side
    palm = kp[[start, start + 5, start + 17], :2]
    cv2.fillConvexPoly(img, np.round(np.vstack([palm, palm.mean(0, keepdims=True)])).astype(np.int32), colour, cv2.LINE_AA)
    for f in range(5):
        chain = [start] + [start + 1 + 4 * f + j for j in range(4)]
        for a, b in zip(chain, chain[1:]):
            cv2.line(img, p(a), p(b), colour, 4, cv2.LINE_AA)


def make_video(rng: np.random.Generator, num_frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    params = {
        "dx": float(rng.uniform(-8, 8)),
        "phase": rng.uniform(0, 2 * math.pi, 5).tolist(),
        "freq": rng.uniform(0.3, 0.6, 2).tolist(),
        "base": rng.uniform(0.1, 0.3, 2).tolist(),
        "amp": rng.uniform(0.05, 0.2, 2).tolist(),
    }
    kps = np.stack([_pose(float(t), params) for t in range(num_frames)])
    return [_draw(k) for k in kps], kps.astype(np.float32)


def write_synthetic_signing(root: str | Path, keypoints_dir: str | Path | None = None, *,
                            videos: dict | None = None, frames: tuple[int, int] = (8, 16),
                            seed: int = 0) -> dict:
    """Write the set under ``root`` (release layout) and the MSKA pickles under
    ``keypoints_dir`` (default ``root/keypoints``). ``videos``: videos per split (default
    train 24, dev 4, test 8); ``frames``: (min, max) frames per video. Returns
    {"root", "keypoints_dir", "pickles": {split: path}, "videos": {split: {name: T}}}."""
    import torch

    root = Path(root)
    keypoints_dir = Path(keypoints_dir) if keypoints_dir else root / "keypoints"
    videos = videos or {"train": 24, "dev": 4, "test": 8}
    rng = np.random.default_rng(seed)
    out = {"root": root, "keypoints_dir": keypoints_dir, "pickles": {}, "videos": {}}
    keypoints_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows, data, counts = [], {}, {}
        for v in range(videos.get(split, 0)):
            name = f"{split}_synthetic_signer{v % 3 + 1}-{v:04d}"
            T = int(rng.integers(frames[0], frames[1] + 1))
            imgs, kps = make_video(rng, T)
            folder = frames_dir(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for t, im in enumerate(imgs, start=1):
                Image.fromarray(im).save(folder / f"images{t:04d}.png")
            gloss = " ".join(rng.choice(GLOSSES, 3))
            text = " ".join(rng.choice(WORDS, 5)) + " ."
            rows.append([name, f"{name}/1/*.png", "-1", "-1", f"Signer{v % 3 + 1:02d}", gloss, text])
            data[f"{split}/{name}"] = {"name": f"{split}/{name}", "gloss": gloss, "text": text,
                                       "num_frames": T, "keypoint": torch.from_numpy(kps)}
            counts[name] = T
        csv_path = corpus_csv(root, split)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f, delimiter="|", lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
        pkl = keypoints_dir / MSKA_NAME.format(split=split)
        with open(pkl, "wb") as f:
            pickle.dump(data, f)
        out["pickles"][split] = pkl
        out["videos"][split] = counts
    return out


# ---------------------------------------------------------------------------------------------
# exact scores of generated frames


def hand_mask(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The pixels of an image of ``size`` (height, width) that the hands of keypoints ``kp``
    (frame pixels, hands complete) cover, drawn as the frames draw them and resized: a pixel any
    part of a hand touches counts."""
    canvas = np.zeros(FRAME_SIZE, np.uint8)
    for side in (0, 1):
        _draw_hand(canvas, kp, side, 255)
    return cv2.resize(canvas, (size[1], size[0]), interpolation=cv2.INTER_AREA) > 0


class HandScorer(PairScorer):
    """The hand-region error of generated frames for pairs of the signing set (A1's dataset root),
    at ``size`` (height, width): the mean absolute difference (0-255, over pixels and channels)
    between a generated frame and its ground truth where the hands of the target or of the source
    lie (``hand_mask`` of their pose files).

    The hands are what the pose moves: head and torso stay nearly still and the arms are dark on
    the dark torso, so a whole-frame score barely tells copying the source from following the
    pose. Here a hand where the target pose puts it costs nothing; one left where the source
    held it, or one missing, costs the skin-against-clothes difference (about 170)."""

    def __init__(self, root: str | Path, pairs: list[dict], size: tuple[int, int]):
        super().__init__(root, pairs, size)
        hands = lambda rel: hand_mask(read_keypoints(pose_path(self.root, rel)), self.size)  # noqa: E731
        self.zones = [hands(p["target_image"]) | hands(p["source_image"]) for p in self.pairs]

    def score(self, images: list[np.ndarray]) -> dict:
        """``hand_error`` (mean over the pairs) and the per-pair values."""
        errors = [float(np.abs(image.astype(np.float64) - target)[zone].mean())
                  for image, target, zone in zip(self.checked(images), self.targets, self.zones)]
        return {"hand_error": float(np.mean(errors)), "count": len(errors), "per_pair": errors}


def write_twostream_pickle(mska_pickles: dict, path: str | Path) -> Path:
    """TwoStream-SLR's layout of the same keypoints: one pickle, name -> {'keypoints': (T, 133, 3)
    float16}, names without split prefix."""
    data = {}
    for pkl in mska_pickles.values():
        with open(pkl, "rb") as f:
            for key, item in pickle.load(f).items():  # our own file, just written
                data[key.split("/")[-1]] = {"keypoints": item["keypoint"].numpy().astype(np.float16)}
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return Path(path)


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "data/phoenix_synthetic"
    info = write_synthetic_signing(target)
    print({k: len(v) for k, v in info["videos"].items()}, "videos ->", info["root"])
