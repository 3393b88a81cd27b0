"""Pillow 10.3's bicubic resizes of a synthetic image, the reference of ``src.util.images.resize``.

The FPDM authors trained with Pillow 10.3, whose ``Image.resize`` always runs the horizontal
pass before the vertical one; Pillow 13 runs the vertical pass first when the height shrinks by
more than twice as many pixels as the width, which changes 8-bit results. ``src.util.images.resize``
keeps the old order on any Pillow; ``tests/test_images_resize.py`` checks it against the file
this script writes.

    # with Pillow 10.3 (numpy only, no torch needed): write the reference, then compare
    python3.11 -m venv /tmp/pil103 && /tmp/pil103/bin/pip install pillow==10.3.0 numpy
    /tmp/pil103/bin/python bench/pillow_resize_reference.py --write
    # with the project's Pillow: compare plain Image.resize and src.util.images.resize to it
    .venv/bin/python bench/pillow_resize_reference.py

The comparison prints, per size, whether Pillow 13 reorders the passes and the largest
difference (grey levels) of each resize from the reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "pillow103_resize.npz"
REFERENCE_PILLOW = "10.3.0"
SOURCE_SIZE = (220, 150)  # (height, width)
# (height, width) targets: Pillow 13 reorders the passes of the first four, not of the others
# (64x64 shrinks the height by 156 pixels, not more than twice the width's 86; 120x150 changes
# the height only: one pass).
SIZES = [(100, 100), (64, 100), (100, 170), (40, 140),
         (64, 64), (110, 75), (220, 100), (120, 150), (242, 165)]


def synthetic_image(seed: int = 1103) -> np.ndarray:
    """(220, 150, 3) uint8: smooth gradients and a sinusoid, under hard-edged shapes, a diagonal,
    one-pixel stripes and a block of noise (edges make the bicubic overshoot clip)."""
    h, w = SOURCE_SIZE
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / (w - 1),
                    127.5 + 127.5 * np.sin(2 * np.pi * y / 37 + x / 23),
                    255 * (y / (h - 1)) ** 2], axis=-1)
    for _ in range(12):
        y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
        dy, dx = rng.integers(3, 40), rng.integers(3, 40)
        img[y0:y0 + dy, x0:x0 + dx] = rng.choice([0.0, 255.0], size=3)
    img[np.abs(y - 1.4 * x - 10) < 1.5] = (255, 255, 0)
    img[150:190, 20:60] = np.where((x[150:190, 20:60] % 2)[..., None] == 0, 255.0, 0.0)
    img[30:60, 90:140] = rng.integers(0, 256, size=(30, 50, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def pillow13_reorders(source_size: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether Pillow 13 runs two passes, vertical first (``ImagingResampleInner``)."""
    dh, dw = source_size[0] - size[0], source_size[1] - size[1]
    return dw != 0 and dh > 0 and dh > 2 * dw


def plain_resize(source: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(source).resize((size[1], size[0]), Image.BICUBIC))


def key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def planes(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (3, H, W): deflate packs colour planes about 3x smaller than RGB triples."""
    return np.ascontiguousarray(np.moveaxis(image, -1, 0))


def write() -> None:
    if PIL.__version__ != REFERENCE_PILLOW:
        sys.exit(f"the reference is Pillow {REFERENCE_PILLOW}'s; this is Pillow {PIL.__version__}")
    source = synthetic_image()
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE, source=planes(source), pillow=np.array(PIL.__version__),
                        **{key(s): planes(plain_resize(source, s)) for s in SIZES})
    print(f"wrote {REFERENCE.relative_to(ROOT)} ({REFERENCE.stat().st_size} bytes)")


def compare() -> None:
    ref = np.load(REFERENCE)
    source = np.moveaxis(ref["source"], 0, -1)
    try:
        sys.path.insert(0, str(ROOT))
        from src.util.images import resize
    except ImportError as e:  # the Pillow 10.3 venv has no torch
        print(f"src.util.images.resize not compared ({e})")
        resize = None
    print(f"Pillow {PIL.__version__} vs Pillow {ref['pillow']} (source {key(source.shape[:2])})")
    print(f"{'size':>8} {'13 reorders':>11} {'plain max':>9} {'plain diff %':>12} {'src max':>7}")
    for s in SIZES:
        expected = np.moveaxis(ref[key(s)], 0, -1).astype(int)
        plain = np.abs(plain_resize(source, s).astype(int) - expected)
        line = (f"{key(s):>8} {str(pillow13_reorders(source.shape[:2], s)):>11} {plain.max():>9} "
                f"{100 * np.mean(plain > 0):>12.2f}")
        if resize is not None:
            ours = np.asarray(resize(Image.fromarray(source), s)).astype(int)
            line += f" {np.abs(ours - expected).max():>7}"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help=f"write {REFERENCE.relative_to(ROOT)} first (Pillow {REFERENCE_PILLOW} only)")
    args = parser.parse_args()
    if args.write:
        write()
    compare()
