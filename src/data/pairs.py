"""What every dataset shares: the layout under its root, pair files, the problems-list errors and
the checks that report every problem at once.

Layout under a dataset root::

    img/<rel>.<ext>   pose/<rel>.txt   pose_img/<rel>.jpg   {train,test}_pairs_data.json

A pair file is a JSON list of {"source_image": "./img/<rel>.<ext>", "target_image": ...}; the
``<rel>`` without extension (``relative_stem``) names the image's keypoint file (``pose_path``, in
the dataset's keypoint format) and A1's render of it (``pose_image_path``).
"""

from __future__ import annotations

import warnings

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageFile

PAIR_KEYS = ("source_image", "target_image")


class ProblemsError(SystemExit):
    """Every problem found, one line each; exits the script with status 1.

    ``problems`` are the lines (each names the file and the fault); ``what`` names the check in
    the message, "<what> failed with N problem(s):" followed by the lines. Checks collect all
    their problems first and raise once, so one run shows everything to fix.
    """

    def __init__(self, problems: list[str], what: str = "check"):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{what} failed with {len(self.problems)} problem(s):\n{lines}")


class DatasetError(ProblemsError):
    """Every problem found in a dataset (pair files, images, pose files)."""

    def __init__(self, problems: list[str], what: str = "dataset check"):
        super().__init__(problems, what)


# ---------------------------------------------------------------------------------------------
# pair files


def relative_stem(image_rel: str) -> Path:
    """'./img/MEN/x/01_1_front.jpg' -> 'MEN/x/01_1_front' (the path an image's files share)."""
    parts = Path(image_rel).parts
    parts = parts[1:] if parts and parts[0] == "." else parts
    if not parts or parts[0] != "img":
        raise ValueError(f"{image_rel}: image paths in pair files start with ./img/")
    return Path(*parts[1:]).with_suffix("")


def image_path(root: str | Path, image_rel: str) -> Path:
    return Path(root) / image_rel


def pose_path(root: str | Path, image_rel: str) -> Path:
    return Path(root) / "pose" / relative_stem(image_rel).with_suffix(".txt")


def pose_image_path(root: str | Path, image_rel: str) -> Path:
    return Path(root) / "pose_img" / relative_stem(image_rel).with_suffix(".jpg")


def read_pair_file(path: str | Path) -> tuple[list[dict], list[str]]:
    """Return (pairs, problems) for a pair file; problems name the file and the fault."""
    path = Path(path)
    if not path.is_file():
        return [], [f"{path}: pair file missing"]
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [], [f"{path}: not valid JSON ({e})"]
    if not isinstance(data, list):
        return [], [f"{path}: expected a JSON list of pairs, got {type(data).__name__}"]
    if not data:
        return [], [f"{path}: empty pair list"]
    pairs, problems = [], []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in PAIR_KEYS):
            problems.append(f"{path}: pair {i} must have string keys {', '.join(PAIR_KEYS)}; got {item!r}"[:300])
            continue
        try:
            for k in PAIR_KEYS:
                relative_stem(item[k])
        except ValueError as e:
            problems.append(f"{path}: pair {i}: {e}")
            continue
        pairs.append({k: item[k] for k in PAIR_KEYS})
    return pairs, problems


def load_pairs(root: str | Path, pair_file: str) -> list[dict]:
    """The pairs of ``root/pair_file``, or DatasetError listing its problems."""
    pairs, problems = read_pair_file(Path(root) / pair_file)
    if problems:
        raise DatasetError(problems)
    return pairs


# ---------------------------------------------------------------------------------------------
# checks


def check_image(path: Path) -> str | None:
    """None for an image that decodes fully, else the problem (missing, truncated, unreadable)."""
    if not path.is_file():
        return f"{path}: image missing"
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
            im.convert("RGB")
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "unreadable"
        return f"{path}: image {kind} ({e})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def check_pairs_and_images(root: str | Path, pair_files: list[str],
                           check_pose: Callable[[str], tuple[list[str], int]], *, check_images: bool = True,
                           extra_images: tuple[str, ...] = (), workers: int = 8,
                           outside_note: str = "lie slightly outside the annotation frame") -> dict:
    """Read every pair file under ``root``; for each image they name and each of ``extra_images``
    ('./img/...' paths) decode it (when ``check_images``, ``check_image``) and run the dataset's
    ``check_pose(image_rel) -> (problems, points outside the frame)`` on its pose file, in
    ``workers`` threads. Raise DatasetError listing the problems of all files and images; else
    warn once about the points outside the frame (kept as valid: ``outside_note`` says why) and
    return counts {"pairs": {pair file: n}, "images": n, "points_outside_frame": n}."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset root not found"])
    problems: list[str] = []
    counts: dict = {"pairs": {}}
    images: set[str] = set(extra_images)
    for pf in pair_files:
        pairs, file_problems = read_pair_file(root / pf)
        problems += file_problems
        counts["pairs"][pf] = len(pairs)
        for pair in pairs:
            images.update(pair[k] for k in PAIR_KEYS)
    images_sorted = sorted(images)
    def check_one(rel: str) -> tuple[list[str], int]:
        image_problem = check_image(image_path(root, rel)) if check_images else None
        pose_problems, points_outside = check_pose(rel)
        return ([image_problem] if image_problem else []) + pose_problems, points_outside

    outside = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found, points_outside in pool.map(check_one, images_sorted):
            problems += found
            outside += points_outside
    if problems:
        raise DatasetError(problems)
    if outside:
        warnings.warn(f"{root}: {outside} keypoint(s) {outside_note}; kept as valid")
    counts.update(images=len(images_sorted), points_outside_frame=outside)
    return counts
