"""Market-1501: the release and PATN's annotation files as researchers have them, A1's check of
them, and the dataset's declaration (``SPEC``), check and torch Datasets of both stages.

The inputs::

    Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg   128 high x 64 wide JPEGs
    Market-1501-v15.09.15/bounding_box_test/...
    market-annotation-{train,test}.csv   PATN: name:keypoints_y:keypoints_x, 18 ints in the 128x64
                                         frame, -1 missing
    market-pairs-{train,test}.csv        PATN: from,to (file names of the split's folder)

The dataset root A1's Market mode writes (``src.data.preprocess.preprocess_market``)::

    img -> Market-1501-v15.09.15                            a link, the release is never copied
    pose/bounding_box_{train,test}/<name>.txt               18 rows "x y" in photo pixels, -1 -1 missing
    pose_img/bounding_box_{train,test}/<name>.jpg           A1's renders at 128x64 (src.pose.market18)
    train_pairs_data.json, test_pairs_data.json             PATN's pairs (263,632 and 12,000)

Differences from DeepFashion, and why:

* keypoints are in pixels of the 128x64 photo (PATN's frame has no margins), drawn thinner
  (``src.pose.market18``: the stick width);
* the model works at the photo's 128x64 (``SPEC``: the latent and the UNet's down-samplings);
* the stage-2 pose is drawn on the photo's own canvas and jittered by 0.25 px, DeepFashion's 1 px
  at its 550-high canvas in proportion to the height (1 x 128 / 550);
* horizontal flip stays on (p = 0.5): a walking pedestrian seen from a street camera is
  mirror-symmetric enough (clothing and bags may sit on one side, as on DeepFashion's models,
  whose flip the authors keep), unlike a signer's dominant hand;
* C2 also scores SSIM and LPIPS inside the target pose's mask (``pose_masks``), as the peers do
  on Market.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..pose import market18
from ..pose.keypoints import PoseFileError
from .pairs import DatasetError, check_image, check_pairs_and_images, pose_path
from .spec import DatasetSpec
from .stages import DiffusionPairs, FusionTriplets

FRAME_SIZE = market18.FRAME_SIZE                                   # (128, 64)
SPLIT_FOLDERS = {"train": "bounding_box_train", "test": "bounding_box_test"}
ANNOTATION_FILE = "market-annotation-{split}.csv"
PAIRS_FILE = "market-pairs-{split}.csv"


def image_rel(split: str, name: str) -> str:
    """A PATN file name of a split to its './img/...' path (img links to the release)."""
    name = str(name).strip()
    if not name.endswith(".jpg") or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a Market-1501 file name like 0002_c1s1_000451_03.jpg")
    return f"./img/{SPLIT_FOLDERS[split]}/{name}"


def frame_problem(kp: np.ndarray, where: str) -> tuple[str | None, int]:
    """(the problem of pixel keypoints more than one frame outside the 128x64 frame, or None;
    how many lie slightly outside it, kept as valid)."""
    h, w = FRAME_SIZE
    x, y = kp[:, 0], kp[:, 1]
    with np.errstate(invalid="ignore"):
        far = (x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)
        outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    problem = f"{where}: {int(far.sum())} point(s) more than one frame outside the {w}x{h} frame" if far.any() else None
    return problem, int(outside.sum())


def to_keypoints(ys: list[int], xs: list[int]) -> np.ndarray:
    """PATN's (y, x) integer lists, -1 missing -> (18, 2) pixel (x, y), NaN missing."""
    kp = np.stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)], axis=1)
    kp[(kp == -1).any(axis=1)] = np.nan
    return kp


class MarketIndex:
    """What ``check_market`` found: per split the keypoints of every annotated image
    ({'./img/...': (18, 2)}) and PATN's pairs, and the points kept slightly outside the frame."""

    def __init__(self):
        self.keypoints: dict[str, dict[str, np.ndarray]] = {}
        self.pairs: dict[str, list[dict]] = {}
        self.points_outside = 0


def _photo_problem(path: Path) -> str | None:
    problem = check_image(path)
    if problem:
        return problem
    with Image.open(path) as im:
        w, h = im.size
    if (h, w) != FRAME_SIZE:
        return f"{path}: {w}x{h} pixels, expected Market-1501's {FRAME_SIZE[1]}x{FRAME_SIZE[0]} (PATN's keypoint frame)"
    return None


def check_market(market_root: str | Path, patn_dir: str | Path, splits=("train", "test"),
                 check_images: bool = True, workers: int = 8) -> MarketIndex:
    """Check the release and PATN's files in one pass, before anything is written: the split
    folders and the four CSV files exist; every annotation row has a name of the split's folder
    whose image exists, decodes (when ``check_images``) and is 128x64, and 18 integer y and x
    coordinates, none more than a frame outside it; every pair names annotated images. Raise
    DatasetError listing every problem, else return the ``MarketIndex``."""
    from .preprocess import parse_patn_annotations, parse_patn_pairs

    market_root, patn_dir = Path(market_root), Path(patn_dir)
    problems: list[str] = []
    index = MarketIndex()
    for split in splits:
        folder = market_root / SPLIT_FOLDERS[split]
        ann, pairs_csv = patn_dir / ANNOTATION_FILE.format(split=split), patn_dir / PAIRS_FILE.format(split=split)
        missing = [f"{folder}: Market-1501 folder missing"] if not folder.is_dir() else []
        missing += [f"{p}: PATN file missing" for p in (ann, pairs_csv) if not p.is_file()]
        if missing:
            problems += missing
            continue
        to_rel = lambda name, split=split: image_rel(split, name)  # noqa: E731
        rows, found = parse_patn_annotations(ann, to_rel)
        problems += found
        keypoints = {}
        for rel, (ys, xs) in rows.items():
            kp = to_keypoints(ys, xs)
            problem, outside = frame_problem(kp, f"{ann}: {Path(rel).name}")
            index.points_outside += outside
            if problem:
                problems.append(problem)
            keypoints[rel] = kp
        photos = [market_root / Path(rel).relative_to("./img") for rel in keypoints]
        if check_images:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                problems += [p for p in pool.map(_photo_problem, photos) if p]
        else:
            problems += [f"{p}: image missing" for p in photos if not p.is_file()]
        pairs, found = parse_patn_pairs(pairs_csv, to_rel)
        problems += found
        unannotated = sorted({p[k] for p in pairs for k in ("source_image", "target_image")} - set(keypoints))
        problems += [f"{pairs_csv}: {Path(rel).name} has no row in {ann.name}" for rel in unannotated]
        if not pairs and not found:
            problems.append(f"{pairs_csv}: no pairs")
        index.keypoints[split], index.pairs[split] = keypoints, pairs
    if problems:
        raise DatasetError(problems, "Market-1501 check")
    return index


# ---------------------------------------------------------------------------------------------
# the prepared dataset: its check and the Datasets of both stages


def check_dataset(root: str | Path, pair_files: list[str], check_images: bool = True,
                  workers: int = 8, extra_images: tuple[str, ...] = ()) -> dict:
    """Check pair files, photos (decoded when ``check_images``, through the ``img`` link) and
    18-point pixel pose files in one pass; raise DatasetError listing every problem."""
    root = Path(root)

    def check_pose(rel: str) -> tuple[list[str], int]:
        path = pose_path(root, rel)
        try:
            kp = market18.read_keypoints(path)
        except PoseFileError as e:
            return [str(e)], 0
        problem, outside = frame_problem(kp, str(path))
        return ([problem] if problem else []), outside

    return check_pairs_and_images(root, pair_files, check_pose, check_images=check_images,
                                  extra_images=extra_images, workers=workers,
                                  outside_note="lie slightly outside the 128x64 frame")


class MarketFusionDataset(FusionTriplets):
    """Stage 1 on Market-1501: the pose is A1's render at 128x64."""

    dataset = "market"


class MarketDiffusionDataset(DiffusionPairs):
    """Stage 2 on Market-1501: poses drawn at 128x64, jitter 0.25 px, flip 0.5 (module docstring)."""

    dataset = "market"


# Stage 2 at the photo's 128x64, the FPDM authors' Market size (their config used SD2-1-base at
# 128x64). The VAE's 1/8 latent is 16x8; SD2's UNet halves it three times (16x8 -> 8x4 -> 4x2 ->
# 2x1, its mid-block at 2x1), all evenly, since 128 and 64 are multiples of 64: no padding, no
# crop, the skip connections match. Upscaling to 256x128 (a 32x16 latent, 4x2 at the bottom)
# would give the UNet more room at 4x the cost, for images that only hold 128x64 of detail; it
# remains a --target_size away. C1 writes and C2 scores 128x64, the peers' evaluation size.
SPEC = DatasetSpec(
    name="market", pose_format="market18", photo_size=FRAME_SIZE, model_size=FRAME_SIZE,
    eval_size=FRAME_SIZE, pose_draw_size=FRAME_SIZE, jitter_sigma=0.25, flip_prob=0.5,
    test_pairs_are_videos=False, check_dataset=check_dataset, FusionDataset=MarketFusionDataset,
    DiffusionDataset=MarketDiffusionDataset, pose_masks=True,
)
