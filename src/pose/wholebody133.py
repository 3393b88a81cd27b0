"""The 133-point COCO-WholeBody keypoint format of PHOENIX-2014T and its renderer.

Points (0-based): body 0-16 (COCO order: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow,
l/r wrist, l/r hip, l/r knee, l/r ankle), feet 17-22 (l big toe, l small toe, l heel, r big toe,
r small toe, r heel), face 23-90 (the 68-point iBUG face: jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, outer lips 48-59, inner lips 60-67, each + 23), left hand 91-111 and right hand
112-132 (wrist root, then thumb, index, middle, ring, little finger, four joints each).

In memory keypoints are float (133, 2) arrays of (x, y) pixels of the frame, NaN = missing (see
``src.pose.keypoints``). In the MSKA / TwoStream-SLR files a coordinate of 0 or a non-finite one
marks a missing point: ``to_keypoints`` turns both into NaN (and optionally drops points under a
score threshold). Sizes are (height, width).

Pose file (``pose/<split>/<video>/imagesNNNN.txt``, written by A1's PHOENIX mode): 133 lines
``x y`` in pixels of the 210x260 frame (two decimals), ``nan nan`` for a missing point.

Renderer: the authors' (``ProcessingSignKeypoints`` of dhlee-work/FPDM), reimplemented. A black
canvas of the frame's size; every present point a filled circle of radius 2 in colour i; then
the links, each a filled ellipse between its two points (half-length = half their distance,
half-width = ``stick_width``, rotated along the link, centre/axes/angle truncated to integers,
1-degree polygon) drawn on a copy of the canvas and blended in as canvas*0.4 + copy*0.6. A link
with a missing end is skipped. Colours: ``np.random.seed(777); np.random.choice(np.arange(256),
399).reshape(133, 3)`` (computed here with a private ``RandomState(777)``, which gives the same
numbers without touching numpy's global RNG), used as B,G,R triples in a BGR canvas that is
converted to RGB at the end; link k of the authors' list and point k share colour k.

The authors' link list (117 items) and the two defects fixed here:

* mouth: the item meant to be the three links (83,72) (72,84) (88,78) (1-based; closing the outer
  lip and joining the two mouth corners to the inner lip) was written ``[[83,72] + [72,84] +
  [88,78]]``, a single six-index "limb". The authors' drawing code then draws only (83,72) and
  skips it whenever any of the six points is missing. Here it is the three links, each with the
  colour of that item (index 77).
* right hand: the left hand has all 20 finger links; the right hand lacks the little finger's
  middle link (132,131) (1-based; 0-based 131-130). It is restored here, with the colour of its
  neighbour (133,132) (item 98).

Every other item is kept as the authors have it, in their order, orientation (which decides how
the angle is truncated) and colour, including their quirks that are not defects of the list
(feet and the head's body links are not drawn, the first three jaw links are drawn twice, the
outer lip chain runs on into the inner lip (83,84), the inner lip's lower half 89-91 has no
links). So a render here equals the authors' pixel for pixel except on the fixed links:
120 links in all.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .keypoints import swap_permutation

NUM_POINTS = 133
FRAME_SIZE = (260, 210)  # PHOENIX-2014T frames, (height, width)

BODY = range(0, 17)
FEET = range(17, 23)
FACE = range(23, 91)
LEFT_HAND = range(91, 112)
RIGHT_HAND = range(112, 133)
BODY_NAMES = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
FEET_NAMES = ("l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")


def point_name(i: int) -> str:
    if i in BODY:
        return BODY_NAMES[i]
    if i in FEET:
        return FEET_NAMES[i - 17]
    if i in FACE:
        return f"face_{i - 23}"
    if i in LEFT_HAND:
        return f"l_hand_{i - 91}"
    if i in RIGHT_HAND:
        return f"r_hand_{i - 112}"
    raise IndexError(i)


# ---------------------------------------------------------------------------------------------
# left/right swap table (0-based), for horizontal flips (off by default for signing: the hands
# are not mirror-symmetric in meaning, but the table is here for whoever wants them)


def _face_pairs() -> list[tuple[int, int]]:
    f = []
    f += [(i, 16 - i) for i in range(8)]                       # jaw
    f += [(17 + i, 26 - i) for i in range(5)]                  # eyebrows
    f += [(31, 35), (32, 34)]                                  # nostrils
    f += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    f += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]    # outer lips
    f += [(60, 64), (61, 63), (65, 67)]                        # inner lips
    return [(a + 23, b + 23) for a, b in f]


FLIP_PAIRS = tuple(
    [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]   # body
    + [(17, 20), (18, 21), (19, 22)]                                          # feet
    + _face_pairs()                                                           # face
    + [(91 + k, 112 + k) for k in range(21)]                                  # hands
)
FLIP_PERMUTATION = swap_permutation(NUM_POINTS, FLIP_PAIRS)


# ---------------------------------------------------------------------------------------------
# links (1-based as in the authors' list; the renderer subtracts one)


def _chain(first: int, last: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(first, last)]


def _authors_items() -> list[tuple[int, ...]]:
    """The authors' 117 items in order, 1-based, with the two defects as they are."""
    body = [(11, 9), (9, 7), (7, 6), (6, 8), (8, 10), (7, 13), (6, 12), (13, 12), (13, 15),
            (15, 17), (12, 14), (14, 16), (24, 25), (25, 26), (26, 27)]
    jaw = _chain(24, 40)
    brows = _chain(41, 50)
    nose = _chain(51, 59) + [(59, 54)]
    eye_a = _chain(60, 65) + [(65, 60)]
    eye_b = _chain(66, 71) + [(71, 66)]
    mouth = _chain(72, 88) + [(83, 72, 72, 84, 88, 78)]        # the bracket slip
    left = []
    for f in range(4):                                         # thumb .. ring: tip to wrist
        base = 93 + 4 * f
        left += [(base + 3, base + 2), (base + 2, base + 1), (base + 1, base), (base, 92)]
    left += [(112, 111), (111, 110), (110, 109), (92, 109)]
    right = [(133, 132), (131, 130), (130, 113)]               # (132, 131) missing
    for f in (3, 2, 1, 0):                                     # ring .. thumb
        base = 114 + 4 * f
        right += [(base + 3, base + 2), (base + 2, base + 1), (base + 1, base), (base, 113)]
    return body + jaw + brows + nose + eye_a + eye_b + mouth + left + right


AUTHORS_ITEMS = tuple(_authors_items())
MOUTH_SLIP_ITEM = AUTHORS_ITEMS.index((83, 72, 72, 84, 88, 78))
RIGHT_PINKY_TIP_ITEM = AUTHORS_ITEMS.index((133, 132))


def _fixed_links() -> tuple[tuple[int, int, int], ...]:
    """(a, b, colour index), 1-based points: the authors' items with both defects fixed."""
    links = []
    for k, item in enumerate(AUTHORS_ITEMS):
        if k == MOUTH_SLIP_ITEM:
            links += [(item[0], item[1], k), (item[2], item[3], k), (item[4], item[5], k)]
        else:
            links.append((item[0], item[1], k))
        if k == RIGHT_PINKY_TIP_ITEM:
            links.append((132, 131, k))
    return tuple(links)


LINKS = _fixed_links()        # 120 links (a, b, colour), 1-based points
POINT_RADIUS = 2
# Stick width (ellipse half-width) for PHOENIX: not published; the authors' GIFs show 1-2 px
# lines. Width 1 draws 3-px strokes and width 0 collapses the ellipse into a 1-px line; 1 is the
# thinnest real ellipse, and a 1-px line of fingers would mostly vanish once the pose image is
# resized to the model size. Override with A1's ``stick_width``.
STICK_WIDTH = 1


def stick_width_at(draw_size: tuple[int, int]) -> int:
    """``STICK_WIDTH`` scaled from the frame's height to a canvas ``draw_size`` high, so a line
    keeps its width relative to the signer on any canvas."""
    return max(1, round(STICK_WIDTH * draw_size[0] / FRAME_SIZE[0]))


def palette_bgr() -> np.ndarray:
    """(133, 3) int colours, B,G,R, equal to ``np.random.seed(777); np.random.choice(
    np.arange(256), 399).reshape(133, 3)`` without touching the global RNG."""
    return np.random.RandomState(777).choice(np.arange(256), 3 * NUM_POINTS).reshape(NUM_POINTS, 3)


COLORS_BGR = tuple(tuple(int(c) for c in row) for row in palette_bgr())


# ---------------------------------------------------------------------------------------------
# keypoint arrays


def to_keypoints(raw: np.ndarray, score_threshold: float | None = None) -> tuple[np.ndarray, int]:
    """(T, 133, 3) or (133, 3) (x, y, score) -> ((..., 133, 2) float pixels with NaN for missing,
    number of points made missing because a coordinate was 0 or non-finite). Points with a score
    under ``score_threshold`` (when given) are dropped too, not counted in that number."""
    raw = np.asarray(raw, dtype=np.float64)
    xy = raw[..., :2].copy()
    bad = (~np.isfinite(xy) | (xy == 0)).any(axis=-1)
    drop = bad.copy()
    if score_threshold is not None and raw.shape[-1] > 2:
        with np.errstate(invalid="ignore"):
            drop |= ~(raw[..., 2] >= score_threshold)
    xy[drop] = np.nan
    return xy, int(bad.sum())


def format_keypoints(kp: np.ndarray) -> str:
    rows = []
    for x, y in np.asarray(kp, dtype=np.float64):
        rows.append("nan nan" if (math.isnan(x) or math.isnan(y)) else f"{x:.2f} {y:.2f}")
    return "\n".join(rows) + "\n"


def parse_keypoints(text: str, name: str = "<keypoints>") -> np.ndarray:
    """Parse a 133-line pose file (``nan nan`` = missing)."""
    from .keypoints import PoseFileError

    rows = [line.split() for line in text.strip().splitlines() if line.strip()]
    if len(rows) != NUM_POINTS or any(len(r) != 2 for r in rows):
        raise PoseFileError(f"{name}: expected {NUM_POINTS} rows of 'x y', got {len(rows)} rows")
    try:
        kp = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise PoseFileError(f"{name}: a value is not a number") from None
    if np.isinf(kp).any():
        raise PoseFileError(f"{name}: infinite coordinate")
    kp[np.isnan(kp).any(axis=1)] = np.nan
    return kp


def read_keypoints(path) -> np.ndarray:
    from pathlib import Path

    from .keypoints import PoseFileError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise PoseFileError(f"{path}: pose file unreadable ({e})") from None
    return parse_keypoints(text, str(path))


def write_keypoints(path, kp: np.ndarray) -> None:
    from ..util.fileio import atomic_write_text

    atomic_write_text(path, format_keypoints(kp))


# ---------------------------------------------------------------------------------------------
# renderer


def _blend_link(canvas: np.ndarray, polygon: np.ndarray, color: tuple[int, int, int]) -> None:
    """canvas = canvas*0.4 + (canvas with the polygon filled)*0.6, done on the polygon's bounding
    box only (outside it both terms are equal, so the result is the full-canvas blend)."""
    h, w = canvas.shape[:2]
    x0, y0 = np.maximum(polygon.min(axis=0), 0)
    x1, y1 = np.minimum(polygon.max(axis=0) + 1, (w, h))
    if x0 >= x1 or y0 >= y1:
        return
    roi = canvas[y0:y1, x0:x1]
    filled = roi.copy()
    cv2.fillConvexPoly(filled, polygon - np.array([x0, y0], dtype=polygon.dtype), color)
    canvas[y0:y1, x0:x1] = cv2.addWeighted(roi, 0.4, filled, 0.6, 0)


def draw_pose(kp: np.ndarray, height: int, width: int, stick_width: int = STICK_WIDTH,
              links=LINKS) -> np.ndarray:
    """Render (133, 2) pixel keypoints (NaN = missing); returns RGB uint8 (height, width, 3)."""
    kp = np.asarray(kp, dtype=np.float64)
    if kp.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected keypoints of shape ({NUM_POINTS}, 2), got {kp.shape}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        present = (np.abs(kp) < 1e5).all(axis=1)   # NaN/inf (missing) and absurd values skipped
    for i in np.flatnonzero(present):
        x, y = kp[i]
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, COLORS_BGR[i], thickness=-1)
    for a, b, colour in links:
        a, b = a - 1, b - 1
        if not (present[a] and present[b]):
            continue
        xs, ys = kp[[a, b], 0], kp[[a, b], 1]
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(xs.mean()), int(ys.mean())), (int(length / 2), int(stick_width)),
                                   int(angle), 0, 360, 1)
        _blend_link(canvas, polygon, COLORS_BGR[colour])
    return np.ascontiguousarray(canvas[:, :, ::-1])
