"""A1's jobs: convert the PATN annotation files of the full benchmark into the dataset layout,
and render every ``pose/**/*.txt`` into ``pose_img/**/*.jpg`` at its photo's size;
``preprocess_phoenix``, A1's PHOENIX-2014T mode, and ``preprocess_market``, its Market-1501 mode
(each: check everything, then pose files, pose images, pairs)."""

from __future__ import annotations

import csv
import json
import os
import re
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .pairs import DatasetError, pose_path
from ..util.fileio import atomic_save_image, atomic_write_json
from ..pose.wholebody133 import FRAME_SIZE as FRAME_SIZE_133
from ..pose.openpose18 import FRAME_OFFSET_X, NUM_JOINTS, draw_pose_from_frame, read_keypoints, write_keypoints

# fashionWOMENBlouses_Shirtsid0000153001_3back.jpg -> img/WOMEN/Blouses_Shirts/id_00001530/01_3_back.jpg
_FLAT_NAME = re.compile(r"^fashion(WOMEN|MEN)(.+?)id(\d{8})(\d+_\d+)([A-Za-z]+)\.jpg$")


def unflatten_name(name: str) -> str:
    """A PATN flattened file name to its './img/...' path."""
    m = _FLAT_NAME.match(name.strip())
    if not m:
        raise ValueError(f"{name!r} is not a flattened DeepFashion name like fashionMENTees_Tanksid0000404701_1front.jpg")
    gender, category, ident, number, view = m.groups()
    return f"./img/{gender}/{category}/id_{ident}/{number}_{view}.jpg"


def _int_list(text: str, where: str) -> list[int]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{where}: {text.strip()[:40]!r} is not a list of integers") from None
    if not isinstance(values, list) or len(values) != NUM_JOINTS:
        got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
        raise ValueError(f"{where}: expected a list of {NUM_JOINTS} integers, got {got}")
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a value is not an integer") from None


def parse_patn_annotations(path: str | Path, to_rel) -> tuple[dict[str, tuple[list[int], list[int]]], list[str]]:
    """PATN's ``name:keypoints_y:keypoints_x`` rows (18 ints each, -1 missing) -> ({'./img/...'
    path (``to_rel(name)``, which raises ValueError for a bad name): (ys, xs)}, problems), every
    problem of the file named with its line."""
    path = Path(path)
    out, problems = {}, []
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=":"))
    if not rows or [c.strip() for c in rows[0]] != ["name", "keypoints_y", "keypoints_x"]:
        return {}, [f"{path}: header must be name:keypoints_y:keypoints_x"]
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            if len(row) != 3:
                raise ValueError(f"{path}:{line}: expected 3 ':'-separated columns, got {len(row)}")
            rel = to_rel(row[0])
            ys = _int_list(row[1], f"{path}:{line} keypoints_y")
            xs = _int_list(row[2], f"{path}:{line} keypoints_x")
        except ValueError as e:
            problems.append(str(e) if str(e).startswith(str(path)) else f"{path}:{line}: {e}")
            continue
        out[rel] = (ys, xs)
    return out, problems


def parse_patn_pairs(path: str | Path, to_rel) -> tuple[list[dict], list[str]]:
    """PATN's ``from,to`` rows -> (pairs of './img/...' paths, problems)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or {"from", "to"} - {c.strip() for c in reader.fieldnames}:
            return [], [f"{path}: header must have columns from,to"]
        pairs, problems = [], []
        for line, row in enumerate(reader, start=2):
            try:
                pairs.append({"source_image": to_rel(row["from"]), "target_image": to_rel(row["to"])})
            except (ValueError, TypeError) as e:
                problems.append(f"{path}:{line}: {e}")
    return pairs, problems


def read_patn_annotations(path: str | Path) -> dict[str, np.ndarray]:
    """DeepFashion's PATN annotations (176x256 frame) -> annotation-frame keypoints (18, 2) keyed
    by './img/...' path, or DatasetError listing the file's problems."""
    rows, problems = parse_patn_annotations(path, unflatten_name)
    if problems:
        raise DatasetError(problems)
    out = {}
    for rel, (ys, xs) in rows.items():
        kp = np.full((NUM_JOINTS, 2), np.nan)
        for j, (x, y) in enumerate(zip(xs, ys)):
            if x != -1 and y != -1:
                kp[j] = (x + FRAME_OFFSET_X, y)
        out[rel] = kp
    return out


def read_patn_pairs(path: str | Path) -> list[dict]:
    pairs, problems = parse_patn_pairs(path, unflatten_name)
    if problems:
        raise DatasetError(problems)
    return pairs


def convert_patn(patn_dir: str | Path, dataset_root: str | Path) -> dict:
    """Write ``pose/**/*.txt`` and ``{train,test}_pairs_data.json`` from the PATN csv files."""
    patn_dir, root = Path(patn_dir), Path(dataset_root)
    counts = {}
    for split in ("train", "test"):
        ann = patn_dir / f"fashion-resize-annotation-{split}.csv"
        pairs_csv = patn_dir / f"fashion-resize-pairs-{split}.csv"
        missing = [str(p) for p in (ann, pairs_csv) if not p.is_file()]
        if missing:
            raise DatasetError([f"{p}: PATN file missing" for p in missing])
        keypoints = read_patn_annotations(ann)
        for rel, kp in keypoints.items():
            write_keypoints(pose_path(root, rel), kp)
        pairs = read_patn_pairs(pairs_csv)
        atomic_write_json(root / f"{split}_pairs_data.json", pairs)
        counts[split] = {"poses": len(keypoints), "pairs": len(pairs)}
    return counts


def pose_jobs(dataset_root: str | Path) -> list[tuple[Path, Path, Path]]:
    """(pose txt, photo, pose image) for every pose file under ``pose/``."""
    root = Path(dataset_root)
    jobs = []
    for txt in sorted((root / "pose").rglob("*.txt")):
        rel = txt.relative_to(root / "pose").with_suffix(".jpg")
        jobs.append((txt, root / "img" / rel, root / "pose_img" / rel))
    return jobs


def is_fresh(output: Path, *inputs: Path) -> bool:
    """True when ``output`` exists and is newer than every input."""
    if not output.is_file():
        return False
    t = output.stat().st_mtime
    return all(p.stat().st_mtime <= t for p in inputs)


def render_one(job: tuple[Path, Path, Path], quality: int = 100) -> None:
    txt, photo, out = job
    with Image.open(photo) as im:
        width, height = im.size
    canvas = draw_pose_from_frame(read_keypoints(txt), height, width)
    atomic_save_image(out, Image.fromarray(canvas), quality=quality)


def render_pose_images(dataset_root: str | Path, workers: int = 8, force: bool = False,
                       quality: int = 100) -> dict:
    """Render every pose file, skipping outputs newer than their inputs unless ``force``."""
    jobs = pose_jobs(dataset_root)
    todo = [j for j in jobs if force or not is_fresh(j[2], j[0], j[1])]
    if todo:
        if workers > 1 and len(todo) > 1:
            with get_context("spawn").Pool(min(workers, len(todo))) as pool:
                for _ in tqdm(pool.imap_unordered(_render_job, [(j, quality) for j in todo], chunksize=8),
                              total=len(todo), desc="pose images", unit="img"):
                    pass
        else:
            for job in tqdm(todo, desc="pose images", unit="img"):
                render_one(job, quality)
    return {"pose_files": len(jobs), "rendered": len(todo), "skipped": len(jobs) - len(todo)}


def _render_job(args):
    render_one(*args)


# ---------------------------------------------------------------------------------------------
# PHOENIX-2014T (see src/data/phoenix.py for the layout and formats)


def _img_link_problem(dataset_root: Path, target: Path) -> str | None:
    """The dataset root's ``img`` must be absent or already the link to the release's images."""
    link = dataset_root / "img"
    if not (link.exists() or link.is_symlink()):
        return None
    if link.is_symlink() and link.resolve() == target.resolve():
        return None
    return (f"{link}: exists and is not a link to {target}; remove it (A1 links the release's images "
            f"there, it never copies them)")


def _link_img(dataset_root: Path, target: Path) -> None:
    dataset_root.mkdir(parents=True, exist_ok=True)
    if not (dataset_root / "img").is_symlink():
        os.symlink(target, dataset_root / "img", target_is_directory=True)


def _phoenix_video_job(args) -> tuple[int, int]:
    from ..pose.wholebody133 import draw_pose, write_keypoints as write_133

    root, video, pickles, force, stick_width, quality = args
    written = rendered = 0
    for t, frame in enumerate(video.frames):
        stem = Path(video.split) / video.name / Path(frame).stem
        txt = root / "pose" / stem.with_suffix(".txt")
        jpg = root / "pose_img" / stem.with_suffix(".jpg")
        if force or not is_fresh(txt, *pickles):
            write_133(txt, video.keypoints[t])
            written += 1
        if force or not is_fresh(jpg, txt):
            h, w = FRAME_SIZE_133
            atomic_save_image(jpg, Image.fromarray(draw_pose(video.keypoints[t], h, w, stick_width)), quality=quality)
            rendered += 1
    return written, rendered


def preprocess_phoenix(phoenix_root, keypoints, dataset_root, *, splits=("train", "test"),
                       check_frames: str = "sample", score_threshold=None, stick_width: int = 1,
                       train_pairs_count: int = 100_000, train_videos: int = 0, test_videos: int = 0,
                       pairs_seed: int = 0, workers: int = 8, force: bool = False, quality: int = 100,
                       log=print) -> dict:
    """A1's PHOENIX mode: check the release and the keypoints (every problem listed, nothing
    written), link ``dataset_root/img`` to the frames, write the pose files and pose images of
    every frame (fresh ones skipped), then the pair files. Returns the counts."""
    from .phoenix import check_phoenix, frames_dir, keypoint_files, test_pairs, train_pairs

    root = Path(dataset_root)
    target = frames_dir(phoenix_root).absolute()
    link_problem = _img_link_problem(root, target)
    max_videos = {"train": train_videos or None, "test": test_videos or None}
    try:
        index = check_phoenix(phoenix_root, keypoints, splits, check_frames=check_frames,
                              score_threshold=score_threshold, max_videos=max_videos)
    except DatasetError as e:
        raise DatasetError(e.problems + ([link_problem] if link_problem else []), "PHOENIX check") from None
    if link_problem:
        raise DatasetError([link_problem], "PHOENIX check")
    counts = {s: {"videos": len(v), "frames": index.frames(s)} for s, v in index.videos.items()}
    log(f"PHOENIX ok: {counts}")
    for split, n in index.missing_points.items():
        if n:
            log(f"warning: {split}: {n} keypoints with a zero or non-finite coordinate, drawn as missing")

    _link_img(root, target)
    pickles = keypoint_files(keypoints)
    settings = {"keypoints": [str(p.absolute()) for p in pickles],
                "keypoint_mtimes": [p.stat().st_mtime for p in pickles],
                "score_threshold": score_threshold, "stick_width": stick_width, "quality": quality}
    settings_file = root / "pose" / "phoenix_pose_settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        force = True   # other keypoints, threshold or stick width: every output is stale
    jobs = [(root, v, pickles, force, stick_width, quality) for s in splits for v in index.videos[s]]
    total = sum(len(v.frames) for _, v, *_ in jobs)
    written = rendered = 0
    with tqdm(total=total, desc="PHOENIX poses", unit="frame") as bar:
        if workers > 1 and len(jobs) > 1:
            with get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for job, (w, r) in zip(jobs, pool.imap(_phoenix_video_job, jobs)):
                    written, rendered = written + w, rendered + r
                    bar.update(len(job[1].frames))
        else:
            for job in jobs:
                w, r = _phoenix_video_job(job)
                written, rendered = written + w, rendered + r
                bar.update(len(job[1].frames))
    atomic_write_json(settings_file, settings)

    pairs = {}
    if "train" in splits:
        pairs["train_pairs_data.json"] = train_pairs(index.videos["train"], train_pairs_count, pairs_seed)
    if "test" in splits:
        pairs["test_pairs_data.json"] = test_pairs(index.videos["test"])
    for name, items in pairs.items():
        atomic_write_json(root / name, items)
    return {"splits": counts, "missing_points": index.missing_points, "frames": total,
            "pose_files_written": written, "pose_images_rendered": rendered,
            "pairs": {k: len(v) for k, v in pairs.items()}}


# ---------------------------------------------------------------------------------------------
# Market-1501 (see src/data/market.py for the layout and formats)


def preprocess_market(market_root, patn_dir, dataset_root, *, splits=("train", "test"), check_images: bool = True,
                      workers: int = 8, force: bool = False, quality: int = 100, log=print) -> dict:
    """A1's Market-1501 mode: check the release and PATN's files (every problem listed, nothing
    written), link ``dataset_root/img`` to the release, write the pose file and the 128x64 pose
    image of every annotated photo (fresh ones skipped), then PATN's pairs. Returns the counts."""
    from ..pose import market18
    from ..pose.render import MARKET18
    from .market import FRAME_SIZE, check_market

    root = Path(dataset_root)
    target = Path(market_root).absolute()
    link_problem = _img_link_problem(root, target)
    try:
        index = check_market(market_root, patn_dir, splits, check_images=check_images, workers=workers)
    except DatasetError as e:
        raise DatasetError(e.problems + ([link_problem] if link_problem else []), "Market-1501 check") from None
    if link_problem:
        raise DatasetError([link_problem], "Market-1501 check")
    log(f"Market-1501 ok: { {s: {'images': len(index.keypoints[s]), 'pairs': len(index.pairs[s])} for s in splits} }")
    if index.points_outside:
        log(f"warning: {index.points_outside} keypoint(s) lie slightly outside the 128x64 frame; kept as valid")

    _link_img(root, target)
    csvs = [Path(patn_dir) / f"market-annotation-{s}.csv" for s in splits]
    written = rendered = 0
    items = [(rel, kp) for s in splits for rel, kp in index.keypoints[s].items()]
    for rel, kp in tqdm(items, desc="Market poses", unit="img"):
        txt = pose_path(root, rel)
        jpg = root / "pose_img" / txt.relative_to(root / "pose").with_suffix(".jpg")
        if force or not is_fresh(txt, *csvs):
            market18.write_keypoints(txt, kp)
            written += 1
        if force or not is_fresh(jpg, txt):
            atomic_save_image(jpg, Image.fromarray(MARKET18.draw_array(kp, FRAME_SIZE)), quality=quality)
            rendered += 1
    pairs = {f"{s}_pairs_data.json": index.pairs[s] for s in splits}
    for name, items in pairs.items():
        atomic_write_json(root / name, items)
    return {"images": {s: len(index.keypoints[s]) for s in splits}, "pose_files_written": written,
            "pose_images_rendered": rendered, "points_outside_frame": index.points_outside,
            "pairs": {k: len(v) for k, v in pairs.items()}}
