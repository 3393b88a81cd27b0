"""RWTH-PHOENIX-Weather 2014T as researchers have it: the official release in place, the MSKA or
TwoStream-SLR keypoint pickles, the up-front check, and the paper's pairs.

Release (``phoenix_root``)::

    features/fullFrame-210x260px/{train,dev,test}/<video>/images0001.png ...   (210 wide x 260 high)
    annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv  (name|video|start|end|speaker|orth|translation)

Keypoints: MSKA's ``Phoenix-2014T.{train,dev,test}`` (video -> {'name', 'gloss', 'text',
'num_frames', 'keypoint': torch tensor (T, 133, 3)}) or TwoStream-SLR's single pickle
(video -> {'keypoints': (T, 133, 3) float16}); x, y in pixels of the frame, then a score. Keys
with or without a split prefix (``test/<video>``) resolve alike. Pickles are read with
``safe_load_pickle``, which admits only containers, strings, numbers, numpy arrays and torch
tensors: a tampered file is refused (``UnsafePickleError``) before anything in it runs.

Dataset root written by A1 (``dataset_root``, e.g. ``data/phoenix``)::

    img -> <phoenix_root>/features/fullFrame-210x260px   a symlink: no copy of the ~950k frames
    pose/<split>/<video>/imagesNNNN.txt                 133 lines "x y" (frame pixels), "nan nan" = missing
    pose_img/<split>/<video>/imagesNNNN.jpg             the 133-point pose image (JPEG quality 100)
    train_pairs_data.json, test_pairs_data.json         [{"source_image": "./img/<split>/<video>/imagesNNNN.png", ...}]

So pair entries are ordinary ``./img/...`` paths (``src.data.pairs`` reads them unchanged) and an
image's files share its ``relative_stem`` (``<split>/<video>/imagesNNNN``) as with DeepFashion.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..pose.wholebody133 import FRAME_SIZE, NUM_POINTS, to_keypoints
from .pairs import DatasetError, check_image

SPLITS = ("train", "dev", "test")
FRAMES_SUBDIR = Path("features") / "fullFrame-210x260px"
CSV_COLUMNS = ["name", "video", "start", "end", "speaker", "orth", "translation"]
MSKA_NAME = "Phoenix-2014T.{split}"
_FRAME_RE = re.compile(r"^images(\d+)\.png$")


def corpus_csv(phoenix_root: str | Path, split: str) -> Path:
    return Path(phoenix_root) / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"


def frames_dir(phoenix_root: str | Path) -> Path:
    return Path(phoenix_root) / FRAMES_SUBDIR


def frame_rel(split: str, video: str, t: int) -> str:
    """Pair-file path of frame ``t`` (1-based) of a video: './img/<split>/<video>/imagesNNNN.png'."""
    return f"./img/{split}/{video}/images{t:04d}.png"


# ---------------------------------------------------------------------------------------------
# restricted unpickler


class UnsafePickleError(pickle.UnpicklingError):
    """A keypoint pickle that asks for something a keypoint file never holds."""


def _load_storage_bytes(data: bytes):
    """Stand-in for ``torch.storage._load_from_bytes`` (which calls an unrestricted torch.load):
    the storage bytes are read with torch's own weights-only unpickler."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _allowed() -> dict[tuple[str, str], object]:
    import collections

    import numpy

    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
        ("numpy", "ndarray"): numpy.ndarray, ("numpy", "dtype"): numpy.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = numpy.ndarray.__reduce__(numpy.zeros(1))[0]
        allowed[(mod, "scalar")] = _numpy_scalar()
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                 "Int16DType", "Int8DType", "UInt8DType", "BoolDType"):
        cls = getattr(getattr(numpy, "dtypes", None), name, None)
        if cls is not None:
            allowed[("numpy.dtypes", name)] = cls
    try:
        import torch
        import torch._utils

        allowed[("torch._utils", "_rebuild_tensor_v2")] = torch._utils._rebuild_tensor_v2
        allowed[("torch._utils", "_rebuild_tensor")] = torch._utils._rebuild_tensor
        allowed[("torch.storage", "_load_from_bytes")] = _load_storage_bytes
        allowed[("torch", "Size")] = torch.Size
        for name in ("FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "IntStorage",
                     "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "BFloat16Storage"):
            if hasattr(torch, name):
                allowed[("torch", name)] = getattr(torch, name)
    except ImportError:
        pass
    return allowed


def _numpy_scalar():
    import numpy

    return numpy.float32(0).__reduce__()[0]


class _RestrictedUnpickler(pickle.Unpickler):
    ALLOWED: dict | None = None

    def find_class(self, module, name):
        if _RestrictedUnpickler.ALLOWED is None:
            _RestrictedUnpickler.ALLOWED = _allowed()
        obj = _RestrictedUnpickler.ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(f"{module}.{name}")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"persistent id {str(pid)[:40]!r}")


def safe_load_pickle(path: str | Path):
    """Unpickle a keypoint file admitting only dicts, lists, tuples, strings, numbers, numpy
    arrays and torch tensors; anything else raises UnsafePickleError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(
            f"{path}: refused: the pickle asks for {e}, which a keypoint file never holds "
            f"(only dicts, strings, numbers, numpy arrays and torch tensors are admitted)") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, RuntimeError) as e:
        raise UnsafePickleError(f"{path}: not a readable keypoint pickle ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# keypoint files


def keypoint_files(keypoints: str | Path | list) -> list[Path]:
    """A pickle, a comma-separated list or a list of them, or a folder holding MSKA's
    ``Phoenix-2014T.{train,dev,test}``."""
    if isinstance(keypoints, (list, tuple)):
        items = [Path(k) for k in keypoints]
    else:
        items = [Path(k.strip()) for k in str(keypoints).split(",") if k.strip()]
    files = []
    for item in items:
        if item.is_dir():
            files += [item / MSKA_NAME.format(split=s) for s in SPLITS if (item / MSKA_NAME.format(split=s)).is_file()]
        else:
            files.append(item)
    return files


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def read_keypoint_files(files: list[Path]) -> tuple[dict, list[str]]:
    """Read every pickle; return ({(split or None, video): array}, problems)."""
    out, problems = {}, []
    for path in files:
        if not path.is_file():
            problems.append(f"{path}: keypoint file missing")
            continue
        try:
            data = safe_load_pickle(path)
        except UnsafePickleError as e:
            problems.append(str(e))
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}: expected a dict of videos, got {type(data).__name__}")
            continue
        for key, item in data.items():
            arr = None
            if isinstance(item, dict):
                arr = item.get("keypoint", item.get("keypoints"))
            if arr is None:
                problems.append(f"{path}: {key!r} has no 'keypoint' (MSKA) or 'keypoints' (TwoStream-SLR) entry")
                continue
            split, _, video = str(key).strip("/").rpartition("/")
            split = split.split("/")[-1] if split else None
            out[(split if split in SPLITS else None, video)] = _as_array(arr)
    return out, problems


def lookup(keypoints: dict, split: str, video: str):
    """The array of ``video``, keyed '<split>/<video>' or '<video>'."""
    found = keypoints.get((split, video))
    return found if found is not None else keypoints.get((None, video))


# ---------------------------------------------------------------------------------------------
# the release


def read_corpus(path: Path) -> tuple[list[dict], list[str]]:
    if not path.is_file():
        return [], [f"{path}: corpus file missing"]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [], [f"{path}: unreadable ({e})"]
    if not rows or [c.strip() for c in rows[0]] != CSV_COLUMNS:
        return [], [f"{path}: header must be {'|'.join(CSV_COLUMNS)}"]
    entries, problems = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(CSV_COLUMNS):
            problems.append(f"{path}:{line}: expected {len(CSV_COLUMNS)} '|'-separated columns, got {len(row)}")
            continue
        entries.append(dict(zip(CSV_COLUMNS, row)))
    return entries, problems


def list_frames(folder: Path) -> list[str]:
    """Frame file names of a video folder, in frame order."""
    try:
        names = [n for n in os.listdir(folder) if _FRAME_RE.match(n)]
    except OSError:
        return []
    return sorted(names, key=lambda n: int(_FRAME_RE.match(n).group(1)))


@dataclass
class Video:
    split: str
    name: str
    frames: list[str]                       # file names, 'images0001.png' ...
    keypoints: np.ndarray                   # (T, 133, 2) pixels, NaN = missing

    def rel(self, t: int) -> str:
        """'./img/<split>/<video>/<frame t>' for 0-based t."""
        return f"./img/{self.split}/{self.name}/{self.frames[t]}"


@dataclass
class PhoenixIndex:
    root: Path
    videos: dict[str, list[Video]] = field(default_factory=dict)   # split -> videos in CSV order
    missing_points: dict[str, int] = field(default_factory=dict)   # split -> zero/non-finite points

    def frames(self, split: str) -> int:
        return sum(len(v.frames) for v in self.videos.get(split, []))


def check_phoenix(phoenix_root: str | Path, keypoints, splits=("train", "test"), *,
                  check_frames: str = "sample", score_threshold: float | None = None,
                  frame_size: tuple[int, int] = FRAME_SIZE, max_videos: dict | None = None) -> PhoenixIndex:
    """Check the release and the keypoints in one pass; raise DatasetError listing every problem
    (a video in a CSV without frames or without keypoints, keypoints of the wrong shape or whose T
    differs from the frame count, an unreadable or wrongly sized frame, an empty split, missing
    files), else return the index. ``check_frames``: "all" decodes every frame, "sample" the
    first, middle and last of each video, "none" none. Zero or non-finite coordinates are
    missing points (counted in ``missing_points``), never problems. ``max_videos``: split ->
    how many videos to use (the first of the CSV; None or 0 = all)."""
    if check_frames not in ("all", "sample", "none"):
        raise ValueError(f"check_frames must be 'all', 'sample' or 'none', got {check_frames!r}")
    root = Path(phoenix_root)
    problems: list[str] = []
    if not frames_dir(root).is_dir():
        problems.append(f"{frames_dir(root)}: frames folder of the release not found")
    files = keypoint_files(keypoints)
    if not files:
        problems.append(f"{keypoints!r}: no keypoint pickle given or found")
    table, found = read_keypoint_files(files)
    problems += found
    index = PhoenixIndex(root=root)
    for split in splits:
        if split not in SPLITS:
            problems.append(f"split {split!r}: not one of {', '.join(SPLITS)}")
            continue
        csv_path = corpus_csv(root, split)
        entries, found = read_corpus(csv_path)
        problems += found
        limit = (max_videos or {}).get(split) or None
        entries = entries[:limit] if limit else entries
        if not entries and not found:
            problems.append(f"{csv_path}: split {split} is empty (no videos)")
        videos, missing = [], 0
        for entry in entries:
            name = entry["name"].strip()
            folder = frames_dir(root) / split / name
            frames = list_frames(folder)
            if not frames and list_frames(folder / "1"):
                name, frames = f"{name}/1", list_frames(folder / "1")
                folder = folder / "1"
            if not frames:
                problems.append(f"{folder}: video {split}/{entry['name']} of {csv_path.name} has no frames (imagesNNNN.png)")
                continue
            numbers = [int(_FRAME_RE.match(n).group(1)) for n in frames]
            if numbers != list(range(1, len(frames) + 1)):
                problems.append(f"{folder}: frames are not numbered 1..{len(frames)} without gaps")
            arr = lookup(table, split, entry["name"].strip())
            if arr is None:
                problems.append(f"{split}/{entry['name']}: no keypoints in {', '.join(str(f) for f in files)}")
                continue
            if arr.ndim != 3 or arr.shape[1:] != (NUM_POINTS, 3):
                problems.append(f"{split}/{entry['name']}: keypoints of shape {tuple(arr.shape)}, expected (T, {NUM_POINTS}, 3)")
                continue
            if arr.shape[0] != len(frames):
                problems.append(f"{split}/{entry['name']}: {arr.shape[0]} keypoint frames but {len(frames)} image frames in {folder}")
                continue
            if check_frames != "none":
                picks = range(len(frames)) if check_frames == "all" else sorted({0, len(frames) // 2, len(frames) - 1})
                for t in picks:
                    problem = _check_frame(folder / frames[t], frame_size)
                    if problem:
                        problems.append(problem)
            kp, bad = to_keypoints(arr, score_threshold)
            missing += bad
            videos.append(Video(split, name, frames, kp))
        index.videos[split] = videos
        index.missing_points[split] = missing
    if problems:
        raise DatasetError(problems, "PHOENIX check")
    return index


def _check_frame(path: Path, size: tuple[int, int]) -> str | None:
    problem = check_image(path)
    if problem:
        return problem
    with Image.open(path) as im:
        w, h = im.size
    if (h, w) != tuple(size):
        return f"{path}: frame is {w} wide x {h} high, expected {size[1]} x {size[0]}"
    return None


# ---------------------------------------------------------------------------------------------
# pairs


def train_pairs(videos: list[Video], count: int = 100_000, seed: int = 0) -> list[dict]:
    """``count`` random (source, target) frame pairs, both from the same training video: each
    pair's video drawn with probability proportional to its frames (every frame is equally likely
    a target), then two different frames of it (the same one for a 1-frame video). Reproducible
    from ``seed`` whatever the order of ``videos``."""
    videos = sorted(videos, key=lambda v: v.name)
    if not videos or count <= 0:
        return []
    lengths = np.array([len(v.frames) for v in videos])
    rng = np.random.default_rng(seed)
    which = rng.choice(len(videos), size=count, p=lengths / lengths.sum())
    src = rng.integers(0, lengths[which])
    offset = rng.integers(1, np.maximum(lengths[which], 2))
    tgt = np.where(lengths[which] > 1, (src + offset) % np.maximum(lengths[which], 1), src)
    return [{"source_image": videos[v].rel(int(s)), "target_image": videos[v].rel(int(t))}
            for v, s, t in zip(which, src, tgt)]


def test_pairs(videos: list[Video]) -> list[dict]:
    """For each video the first frame as source and every frame (the first included) as target."""
    return [{"source_image": v.rel(0), "target_image": v.rel(t)} for v in videos for t in range(len(v.frames))]


test_pairs.__test__ = False  # not a pytest test
