"""src.util.images.resize against Pillow 10.3's own bicubic resizes (tests/data/pillow103_resize.npz,
written by bench/pillow_resize_reference.py under Pillow 10.3)."""

from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from src.util.images import resize

REFERENCE = Path(__file__).resolve().parent / "data" / "pillow103_resize.npz"


def reference_cases():
    """The source (H, W, 3) and {(height, width): Pillow 10.3's resize}; stored as planes."""
    ref = np.load(REFERENCE)
    rgb = lambda a: np.moveaxis(a, 0, -1)  # noqa: E731
    cases = {tuple(int(v) for v in k.split("x")): rgb(ref[k]) for k in ref.files if "x" in k}
    return rgb(ref["source"]), cases


def pillow13_reorders(source_size, size) -> bool:
    """Pillow 13 runs both passes, vertical first: the height shrinks by more than twice as many
    pixels as the width (ImagingResampleInner)."""
    dh, dw = source_size[0] - size[0], source_size[1] - size[1]
    return dw != 0 and dh > 0 and dh > 2 * dw


def test_reference_covers_both_orders():
    source, cases = reference_cases()
    reordered = [s for s in cases if pillow13_reorders(source.shape[:2], s)]
    assert str(np.load(REFERENCE)["pillow"]) == "10.3.0"
    assert len(reordered) >= 2 and len(cases) - len(reordered) >= 4


def test_resize_equals_pillow_103_bytes():
    source, cases = reference_cases()
    image = Image.fromarray(source)
    for size, expected in cases.items():
        out = resize(image, size)
        assert out.size == (size[1], size[0]) and out.mode == "RGB"
        assert np.asarray(out).tobytes() == expected.tobytes(), f"{size} differs from Pillow 10.3"


def test_plain_pillow_13_resize_differs_where_it_reorders():
    if int(PIL.__version__.split(".")[0]) < 13:
        pytest.skip(f"Pillow {PIL.__version__} < 13 keeps the horizontal-then-vertical order")
    source, cases = reference_cases()
    image = Image.fromarray(source)
    differing = [size for size, expected in cases.items() if pillow13_reorders(source.shape[:2], size)
                 and not np.array_equal(np.asarray(image.resize((size[1], size[0]), Image.BICUBIC)), expected)]
    assert differing, "plain Image.resize matched Pillow 10.3 in every reordered case"


def test_same_size_is_a_copy():
    source, _ = reference_cases()
    image = Image.fromarray(source)
    out = resize(image, source.shape[:2])
    assert out is not image and out.tobytes() == image.tobytes()
