"""C1's job: generate every pair of a pair file with an FPDMPipeline, resumably.

The geometry comes from the pipeline: its config records the output ``height`` x ``width`` and
the ``pose_draw_size`` B2 drew its target poses at (``pipeline_geometry``). Each pair gets its
own seed, derived from the run seed and the pair's file names, so an image depends neither on
the batch size nor on the order of the pairs. Images are written atomically, under the names
and folders of ``src.evaluate.handoff`` (what C2 reads), and skipped when already there, so an
interrupted run is finished by running it again.

Pairs are generated grouped by source, and each source is encoded once (``EncodedSource``)
for all its pairs: on PHOENIX-2014T a test video's first frame is the source of every frame,
so a video costs one source encoding, not one per frame. ``dataset`` names the dataset
(``src.data.DATASETS``): its keypoint files and renderer give the test poses. For a dataset
whose test pairs are videos, ``write_videos`` then writes each video's MP4 and GIF.

Video consistency options (``consistency``, ``src.evaluate.handoff.CONSISTENCY_DEFAULTS``: off,
frame by frame as in the paper): ``shared_noise`` gives every frame of a video the video's seed
(``frame_seed``), so each starts from one noise and draws one per-step noise; ``cross_frame_attention``
("first" or "previous") generates a video's frames together (``video_chunks``), each attending to
its anchor frame (``src.models.cross_frame_attention``). A video longer than a batch is
generated in chunks, each after the first led by its anchor (the first frame, or the frame
before the chunk) generated again and not written.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..config import changed_values
from ..models.cross_frame_attention import anchor_indices
from ..data import DatasetSpec, dataset_spec, image_path
from ..util.fileio import atomic_save_image, atomic_write_json
from .handoff import CONSISTENCY_DEFAULTS, check_output_names, group_videos, output_name, size_name, video_name
from ..util.images import comparison_grid, load_rgb, resize
from ..util.weights import WeightsNotFoundError, looks_like_path, weights_not_found


def load_pipeline(name: str, dtype: torch.dtype, device):
    """An FPDMPipeline folder written by B2 (or a hub id holding one), or the clear error."""
    from ..pipeline import FPDMPipeline

    if looks_like_path(name):
        folder = Path(name).expanduser()
        if folder.is_file() and folder.suffix == ".ckpt":
            raise WeightsNotFoundError(f"{name}: a Lightning checkpoint, not a pipeline folder; convert the authors' "
                                       f"stage-2 file first: python -m src.convert_authors --checkpoint={name} "
                                       "--out=weights/fpdm_pipeline", "pipeline", "weights/fpdm_pipeline",
                                       "then pass the converted folder")
        if not (folder / "model_index.json").is_file():
            raise WeightsNotFoundError(f"{name}: not an FPDM pipeline folder (no model_index.json)", "pipeline",
                                       "OUT/pipeline", "pass the folder B2 writes")
    try:
        return FPDMPipeline.from_pretrained(name, dtype=dtype).to(device)
    except (OSError, ValueError) as e:
        if looks_like_path(name):
            raise
        raise weights_not_found("FPDM pipeline", name, "pipeline", reason=str(e)) from None


def pipeline_geometry(config, spec: DatasetSpec, size=None,
                      pose_draw_size=None) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, pose drawing size), both (height, width): the values given, else the
    pipeline ``config``'s (``height`` x ``width``; ``pose_draw_size``, where B2 drew its target
    poses, or the dataset's for a pipeline saved before the config recorded it: B2 drew there)."""
    size = tuple(size) if size else (config.height, config.width)
    draw = tuple(pose_draw_size or config.pose_draw_size or spec.pose_draw_size)
    return size, draw


def pair_seed(seed: int, pair: dict) -> int:
    return zlib.crc32(f"{seed}|{pair['source_image']}|{pair['target_image']}".encode()) & 0x7FFFFFFF


def frame_seed(seed: int, pair: dict, shared_noise: bool = False) -> int:
    """The seed of a pair's image: ``pair_seed``, or with ``shared_noise`` one seed for all the
    frames of its video (its source and the targets' folder, as ``group_videos`` makes videos)."""
    if not shared_noise:
        return pair_seed(seed, pair)
    return pair_seed(seed, {"source_image": pair["source_image"], "target_image": video_name(pair["target_image"])})


def video_chunks(pairs: list[dict], batch_size: int, anchor: str) -> list[tuple[list[dict], int]]:
    """(frames, context) batches that keep each video's frames together, in frame order, for
    cross-frame attention to ``anchor`` ("first", "previous"): a video's first chunk holds up
    to ``batch_size`` frames; each later chunk is led by ``context`` = 1 frame generated only as
    the anchor of the rest (the video's first frame, or the frame before the chunk), then up to
    ``batch_size - 1`` new frames (at least one). Chunks depend on the video alone, so a rerun
    makes the same ones."""
    chunks = []
    for video in group_videos(pairs)[0]:
        frames = video.entries
        chunks.append((frames[:max(batch_size, 1)], 0))
        step = max(batch_size - 1, 1)
        for start in range(len(chunks[-1][0]), len(frames), step):
            lead = frames[0] if anchor == "first" else frames[start - 1]
            chunks.append(([lead, *frames[start:start + step]], 1))
    return chunks


# How C1 renders a test pose. "pose_img": A1's render, drawn at the photo's own size (750x1101
# for DeepFashion), resized to the model size, as the authors' C1 reads it: their numbers need
# it, though its lines are thinner than the training renders. "draw": drawn at the training
# drawing size, then resized, as B2 draws its targets (self-consistent).
TEST_POSES = ("pose_img", "draw")


def test_pose_render(root: Path, image_rel: str, draw_size: tuple[int, int], mode: str = "pose_img", *,
                     dataset: str) -> Image.Image:
    """The full render of a test image's target pose, per ``mode`` (A1's render at the photo's size,
    or drawn at ``draw_size``): the pipeline resizes each network's view from it, as training does."""
    spec = dataset_spec(dataset)
    if mode == "pose_img":
        with Image.open(image_path(root, image_rel)) as im:
            width, height = im.size
        return spec.target_pose_image(root, image_rel, (height, width))
    if mode == "draw":
        return spec.drawn_pose(root, image_rel, tuple(draw_size), tuple(draw_size))
    raise ValueError(f"test_pose={mode!r}: choose one of {', '.join(TEST_POSES)}")


def test_pose(root: Path, image_rel: str, size: tuple[int, int], draw_size: tuple[int, int],
              mode: str = "pose_img", *, dataset: str) -> Image.Image:
    """The target pose of a test image as the pose encoder sees it, at the model ``size``."""
    return resize(test_pose_render(root, image_rel, draw_size, mode, dataset=dataset), tuple(size))


def pair_inputs(root: Path, pair: dict, draw_size: tuple[int, int], pose_mode: str = "pose_img", *,
                dataset: str) -> tuple[Image.Image, Image.Image]:
    """(source photo, full target pose render): what C1 gives the pipeline for a pair."""
    source = load_rgb(image_path(root, pair["source_image"]))
    return source, test_pose_render(root, pair["target_image"], draw_size, pose_mode, dataset=dataset)


def grouped_by_source(pairs: list[dict]) -> list[dict]:
    """The pairs reordered so that pairs of one source are adjacent (sources in order of first
    appearance, pairs in their order within a source)."""
    groups: dict[str, list[dict]] = {}
    for p in pairs:
        groups.setdefault(p["source_image"], []).append(p)
    return [p for group in groups.values() for p in group]


class SourceCache:
    """Encoded sources of the batch being generated and of the one before: pairs come grouped
    by source, so a source is encoded once however many batches its pairs span. ``encoded``
    counts the sources encoded."""

    def __init__(self, pipe, root: Path):
        self.pipe, self.root = pipe, root
        self.items: dict = {}
        self.encoded = 0

    def batch(self, pairs: list[dict]):
        from ..pipeline import EncodedSource

        needed = list(dict.fromkeys(p["source_image"] for p in pairs))
        new = [s for s in needed if s not in self.items]
        if new:
            encoded = self.pipe.encode_source([load_rgb(image_path(self.root, s)) for s in new])
            self.items.update({s: encoded[i] for i, s in enumerate(new)})
            self.encoded += len(new)
        self.items = {s: self.items[s] for s in needed}
        return EncodedSource.cat([self.items[p["source_image"]] for p in pairs])


# What determines an image, recorded beside the images: a rerun with the same values resumes,
# one with other values stops before generating (it would mix two runs under one manifest).
RUN_RECORD = "C1_run.json"
# Settings the record gained later, with the value every run before them had: such a run resumes.
LATER_SETTINGS = {**CONSISTENCY_DEFAULTS, "cross_frame_batch": None}


class RunMismatchError(ValueError):
    """An output folder that holds images of other settings; the message names them."""


def pipeline_fingerprint(folder: str | Path | None) -> str | None:
    """sha256 over a pipeline folder's model_index.json, every component's config and each weight
    file's size with its first and last MiB: another pipeline (retrained, converted, another
    checkpoint) gives another value without reading gigabytes. None for an in-memory pipeline."""
    if not folder or not (Path(folder) / "model_index.json").is_file():
        return None
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".json":
            digest.update(rel.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin"):
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(1 << 20)
                f.seek(max(0, size - (1 << 20)))
                tail = f.read()
            digest.update(f"{rel}:{size}".encode() + head + tail)
    return digest.hexdigest()


def run_record(pipe, **settings) -> dict:
    """The values an image depends on: the pipeline (folder and fingerprint), its dtype, and the
    generation ``settings`` (sizes, test pose, seed, sampler, steps, guidance, ...)."""
    folder = pipe.config.get("_name_or_path") if hasattr(pipe, "config") else None
    return {"pipeline": str(Path(folder).resolve()) if folder else None,
            "pipeline_fingerprint": pipeline_fingerprint(folder), "dtype": str(pipe.dtype).replace("torch.", ""),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}


def check_run_record(out_dir: Path, record: dict, sizes: list[tuple[int, int]], overwrite: bool = False) -> None:
    """Resume only the same run: raise ``RunMismatchError`` when ``out_dir`` holds images of other
    settings (or of unrecorded ones), naming the differences; with ``overwrite`` those images go
    and the run starts anew. Then the record is written."""
    path = out_dir / RUN_RECORD
    images = [p for s in sizes for p in (out_dir / size_name(s)).glob("*.png")]
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None:
        old = {**LATER_SETTINGS, **old}
        changed = changed_values(old, record)
    else:
        changed = {"(no record)": (f"{len(images)} images made without a record of their settings", None)} \
            if images else {}
    if changed and not overwrite:
        what = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise RunMismatchError(f"{out_dir} holds images made with other settings ({what}); pass another "
                               f"--out_dir, or --overwrite=True to delete them and generate again")
    if changed:
        for p in images:
            p.unlink(missing_ok=True)
    atomic_write_json(path, record)


def generate_pairs(pipe, root: str | Path, pairs: list[dict], out_dir: str | Path, *,
                   size, eval_size, draw_size, dataset: str, batch_size: int = 16, seed: int = 7,
                   num_inference_steps: int = 20, guidance_scale: float = 2.0, scheduler: str = "ddpm",
                   pose_mode: str = "pose_img", show_progress: bool = True, drop_conditions: tuple[str, ...] = (),
                   overwrite: bool = False, consistency: dict | None = None) -> dict:
    """Generate the pairs missing under ``out_dir``, each written at ``eval_size`` (resized) and
    at the model ``size``, once when the two are the same; returns counts, ``sources_encoded``
    and ``context_frames`` (frames generated again as anchors, not written) among them.
    ``drop_conditions`` is the pipeline's (ablations: a condition zeroed); ``consistency`` the
    video options (``CONSISTENCY_DEFAULTS``'s keys, see the module docstring). Images of other
    settings already in ``out_dir`` stop it (``check_run_record``) unless ``overwrite``."""
    root, out_dir = Path(root), Path(out_dir)
    size, eval_size = tuple(size), tuple(eval_size)
    sizes = list(dict.fromkeys([eval_size, size]))
    check_output_names(pairs)
    options = {**CONSISTENCY_DEFAULTS, **(consistency or {})}
    if set(options) != set(CONSISTENCY_DEFAULTS):
        raise ValueError(f"consistency: unknown option(s) {sorted(set(options) - set(CONSISTENCY_DEFAULTS))}")
    anchor = options["cross_frame_attention"]
    anchor_indices(["check"], anchor)  # an unknown anchor fails before anything is written
    # file_names: images written under an earlier naming are another run's, not resumed.
    # cross_frame_batch: with the previous frame as anchor, where chunks start changes the frames.
    record = run_record(pipe, size=size, eval_size=eval_size, pose_draw_size=tuple(draw_size), test_pose=pose_mode,
                        dataset=dataset, file_names="authors", seed=seed, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, scheduler=scheduler, drop_conditions=list(drop_conditions),
                        **options, cross_frame_batch=batch_size if anchor == "previous" else None)
    check_run_record(out_dir, record, sizes, overwrite)

    def missing(p):
        return not all((out_dir / size_name(s) / output_name(p)).is_file() for s in sizes)

    if anchor == "off":
        todo = [p for p in grouped_by_source(pairs) if missing(p)]
        batches = [(todo[start:start + batch_size], 0) for start in range(0, len(todo), batch_size)]
    else:
        batches = [(frames, context) for frames, context in video_chunks(pairs, batch_size, anchor)
                   if any(missing(p) for p in frames[context:])]
    to_write = {output_name(p) for frames, context in batches for p in frames[context:] if missing(p)}
    sources = SourceCache(pipe, root)
    pipe.set_progress_bar_config(disable=True)  # one bar for the run, not one per batch of 20 steps
    bar = tqdm(total=len(to_write), desc="generate", unit="img", disable=not show_progress)
    context_frames = 0
    for batch, context in batches:
        images = pipe(
            source_image=sources.batch(batch),
            target_pose=[test_pose_render(root, p["target_image"], draw_size, pose_mode, dataset=dataset)
                         for p in batch],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            seeds=[frame_seed(seed, p, options["shared_noise"]) for p in batch],
            height=size[0],
            width=size[1],
            output_type="pil",
            drop_conditions=drop_conditions,
            cross_frame_anchors=None if anchor == "off" else anchor_indices([0] * len(batch), anchor),
        ).images
        written = 0
        for pair, image in list(zip(batch, images))[context:]:
            name = output_name(pair)
            if name not in to_write:
                continue  # a frame of a resumed chunk already written, generated again as its neighbours' context
            if eval_size != size:
                atomic_save_image(out_dir / size_name(eval_size) / name, resize(image, eval_size))
            atomic_save_image(out_dir / size_name(size) / name, image)
            written += 1
        context_frames += len(batch) - written
        bar.update(written)
    bar.close()
    return {"pairs": len(pairs), "generated": len(to_write), "skipped": len(pairs) - len(to_write),
            "sources_encoded": sources.encoded, "context_frames": context_frames}


def write_grids(root: str | Path, pairs: list[dict], out_dir: str | Path, size, draw_size, num_grids: int = 2,
                rows: int = 4, pose_mode: str = "pose_img", *, dataset: str) -> list[Path]:
    """A few PNG grids (source | target pose | ground truth | generated) of the first pairs, in
    cells of the dataset's evaluation size."""
    root, out_dir = Path(root), Path(out_dir)
    paths = []
    for g in range(num_grids):
        chunk = pairs[g * rows:(g + 1) * rows]
        if not chunk:
            break
        grid_rows = []
        for p in chunk:
            source, pose = pair_inputs(root, p, draw_size, pose_mode, dataset=dataset)
            truth = load_rgb(image_path(root, p["target_image"]))
            generated = Image.open(out_dir / size_name(size) / output_name(p))
            grid_rows.append([source, pose, truth, generated])
        grid = comparison_grid(grid_rows, dataset_spec(dataset).eval_size)
        paths.append(atomic_save_image(out_dir / "grids" / f"grid_{g:03d}.png", grid))
    return paths


def split_for_process(pairs: list[dict], index: int, count: int, whole_videos: bool = False) -> list[dict]:
    """This process's share of the pairs under ``accelerate launch``: one contiguous block, so
    that a source's pairs (a video's frames) mostly stay with one process and are encoded once;
    with ``whole_videos`` (cross-frame attention: a frame needs its anchor) a block of videos."""
    if whole_videos:
        return [p for video in split_for_process(group_videos(pairs)[0], index, count) for p in video.entries]
    n = len(pairs)
    return pairs[index * n // count:(index + 1) * n // count]



VIDEO_FILES = (".mp4", ".gif", "_generated.mp4", "_generated.gif")


def video_frames(root: Path, entries: list[dict], folders: list[Path], *, size, draw_size, dataset: str,
                 pose_mode: str = "pose_img") -> tuple:
    """What a video's panels show, for its pairs ``entries`` (in frame order): (source, poses,
    ground truths, one list of generated frames per folder of C1's layout), poses as C1 renders
    them and generated frames as written at ``size``."""
    source = load_rgb(image_path(root, entries[0]["source_image"]))
    poses = [test_pose(root, p["target_image"], size, draw_size, pose_mode, dataset=dataset) for p in entries]
    truths = [load_rgb(image_path(root, p["target_image"])) for p in entries]
    generated = [[load_rgb(Path(folder) / size_name(size) / output_name(p)) for p in entries] for folder in folders]
    return source, poses, truths, generated


def write_videos(root: str | Path, pairs: list[dict], out_dir: str | Path, *, size, eval_size, draw_size,
                 dataset: str, pose_mode: str = "pose_img", fps: float = 25.0,
                 show_progress: bool = True) -> list[Path]:
    """For each test video, from the frames generated at ``eval_size``: ``videos/<split>/<video>``
    + ``.mp4`` and ``.gif`` (each frame ``source | pose | ground truth | generated``, panels of
    ``eval_size``: the authors' layout) and ``_generated.mp4``, ``_generated.gif`` (the generated
    frames alone), at ``fps``. A video whose four files exist is skipped; files are written
    atomically. Returns the panel MP4s."""
    from ..util.videos import panel_frames, write_gif, write_mp4

    root, out_dir = Path(root), Path(out_dir)
    eval_size = tuple(eval_size)
    written = []
    videos, _ = group_videos(pairs)  # as C2 groups them; written as asked even where C2 would not score them
    for video in tqdm(videos, desc="videos", unit="video", disable=not show_progress):
        group = video.entries
        base = out_dir / "videos" / video.name
        files = [base.with_name(base.name + suffix) for suffix in VIDEO_FILES]
        written.append(files[0])
        if all(f.is_file() for f in files):
            continue
        source, poses, truths, (generated,) = video_frames(root, group, [out_dir], size=eval_size,
                                                          draw_size=draw_size, dataset=dataset, pose_mode=pose_mode)
        panels = panel_frames(source, poses, truths, generated, size=eval_size)
        write_mp4(files[0], panels, fps)
        write_gif(files[1], panels, fps)
        write_mp4(files[2], generated, fps)
        write_gif(files[3], generated, fps)
    return written
