"""Accuracy of the offline photo pose estimator (src.pose.estimator) on the shared sample photos.

For each photo with a keypoint txt, compares the estimator's 18 points with the file's
(annotation frame -> pixels of the photo) over the points present in both: the median error in
pixels and PCK@0.1 (share within 0.1 of the image height), plus how many file points the
estimator dropped and how many it reported that the file lacks, and the time per image.

    .venv/bin/python bench/pose_estimator_accuracy.py [--root ../shared/data/deepfashion_samples]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.util.images import load_rgb  # noqa: E402
from src.pose.estimator import PoseEstimator  # noqa: E402
from src.pose.formats import read_pose  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "deepfashion_samples"),
                        help="folder with img/... photos and pose/... txt files beside them")
    parser.add_argument("--pck", type=float, default=0.1, help="PCK threshold as a share of the image height")
    args = parser.parse_args(argv)
    root = Path(args.root)
    photos = sorted((root / "img").rglob("*.jpg"))
    if not photos:
        print(f"no photos under {root / 'img'}", file=sys.stderr)
        return 1
    errors, hits, dropped, extra, seconds, sizes = [], [], 0, 0, [], set()
    with PoseEstimator() as estimator:
        for photo in photos:
            txt = root / "pose" / photo.relative_to(root / "img").with_suffix(".txt")
            image = load_rgb(photo)
            h, w = image.height, image.width
            sizes.add(f"{w}x{h}")
            truth = read_pose(txt, image_size=(h, w))
            t = time.perf_counter()
            est = estimator(image, str(photo))
            seconds.append(time.perf_counter() - t)
            have_t, have_e = ~np.isnan(truth[:, 0]), ~np.isnan(est[:, 0])
            both = have_t & have_e
            dropped += int((have_t & ~have_e).sum())
            extra += int((have_e & ~have_t).sum())
            err = np.linalg.norm(est[both] - truth[both], axis=1)
            errors.extend(err.tolist())
            hits.extend((err <= args.pck * h).tolist())
            print(f"{photo.relative_to(root)}: {both.sum()} points, median {np.median(err):.1f} px, "
                  f"PCK@{args.pck:g} {np.mean(err <= args.pck * h):.2f}")
    print(f"{len(photos)} photos ({', '.join(sorted(sizes))}), {len(errors)} points present in both")
    print(f"median error {np.median(errors):.1f} px; PCK@{args.pck:g} of the height {np.mean(hits):.3f}")
    print(f"file points the estimator dropped: {dropped}; points it reported that the file lacks: {extra}; "
          f"PCK@{args.pck:g} counting dropped file points as misses {np.sum(hits) / (len(hits) + dropped):.3f}")
    print(f"{1000 * np.median(seconds):.0f} ms an image (median, after the first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
