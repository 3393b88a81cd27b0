"""A synthetic Market-1501 release the project writes itself: small pedestrian figures at 128x64
(``src.synthetic.figures``) in the official folder layout, with PATN-format annotation and pair
files, for tests and for trying A1's Market mode without the data::

    <out>/Market-1501-v15.09.15/bounding_box_{train,test}/<id>_c<cam>s1_<frame>_00.jpg
    <out>/patn/market-annotation-{train,test}.csv     name:keypoints_y:keypoints_x (18 ints, -1 missing)
    <out>/patn/market-pairs-{train,test}.csv          from,to: every ordered pair within an identity

Train and test are split by identity, as the benchmark is. The same seed gives the same files.

    python -m src.synthetic.market OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..pose.market18 import FRAME_SIZE
from ..util.fileio import atomic_save_image, atomic_write_text
from .figures import draw_figure, make_identity, random_pose

RELEASE = "Market-1501-v15.09.15"


def patn_coordinates(kp: np.ndarray) -> tuple[list[int], list[int]]:
    """Pixel keypoints (18, 2) (x, y), NaN missing -> PATN's integer (ys, xs) lists, -1 missing."""
    h, w = FRAME_SIZE
    ys, xs = [], []
    for x, y in kp:
        if np.isnan(x) or np.isnan(y):
            ys.append(-1)
            xs.append(-1)
        else:
            ys.append(int(np.clip(round(y), 0, h - 1)))
            xs.append(int(np.clip(round(x), 0, w - 1)))
    return ys, xs


def write_synthetic_market(out: str | Path, identities: dict | None = None, images_per_identity: int = 3,
                           seed: int = 0) -> dict:
    """Write the release and PATN's files under ``out`` (``identities``: per split how many, default
    {"train": 3, "test": 2}); return {"market_root", "patn_dir", "images": {split: n}, "pairs": {split: n}}."""
    out = Path(out)
    identities = identities or {"train": 3, "test": 2}
    rng = np.random.default_rng(seed)
    h, w = FRAME_SIZE
    market_root, patn_dir = out / RELEASE, out / "patn"
    counts: dict = {"market_root": str(market_root), "patn_dir": str(patn_dir), "images": {}, "pairs": {}}
    person = 1
    for split, n in identities.items():
        folder = market_root / f"bounding_box_{split}"
        annotation, pairs = ["name:keypoints_y:keypoints_x"], ["from,to"]
        for _ in range(n):
            identity = make_identity(rng)
            names = []
            for j in range(images_per_identity):
                kp = random_pose(rng, w, h, identity["build"])
                name = f"{person:04d}_c{j % 6 + 1}s1_{int(rng.integers(1, 999999)):06d}_00.jpg"
                atomic_save_image(folder / name, Image.fromarray(draw_figure(kp, identity, w, h)), quality=95)
                ys, xs = patn_coordinates(kp)
                annotation.append(f"{name}: {ys}: {xs}")
                names.append(name)
            pairs += [f"{a},{b}" for a in names for b in names if a != b]
            person += 1
        atomic_write_text(patn_dir / f"market-annotation-{split}.csv", "\n".join(annotation) + "\n")
        atomic_write_text(patn_dir / f"market-pairs-{split}.csv", "\n".join(pairs) + "\n")
        counts["images"][split] = len(annotation) - 1
        counts["pairs"][split] = len(pairs) - 1
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m src.synthetic.market OUT")
    print(write_synthetic_market(sys.argv[1]))
