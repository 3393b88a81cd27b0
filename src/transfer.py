"""One-command pose transfer on your own photos.

    python -m src.transfer --pipeline=logs/B2/pipeline --source=me.jpg \\
        --target=pose_photo.jpg --target=openpose.json --target=pose.txt --out=out.png

Each ``--target`` is one of:
- a photo of a person: its pose is estimated offline (``src.pose.estimator``, needs
  ``pip install --no-deps -r requirements-pose.txt``);
- a rendered pose image (OpenPose colours on black, as A1 draws them): used as it is;
- a pose file (``src.pose.formats``): OpenPose JSON (BODY_18/COCO or BODY_25), COCO-17 JSON
  (COCO annotations, mmpose) or ``.npy`` (DWPose), or the project's keypoint txt (256x256
  annotation frame).
Photo or pose image is told apart by content (a pose image is mostly black); ``--target_kind``
overrides it. Keypoints are scaled to the pipeline's own output size (``pipe.config.height`` x
``width``; photos and pose images are squashed to it, so keypoints scale per axis the same way).
The pixel coordinates of a JSON/npy pose file belong to the image the pose was taken from: its
size comes from ``--target_size=HxW``, else the file's ``canvas_height``/``canvas_width``, else the
source photo's size (right when the pose came from a photo of the same shape). A txt needs no
size (it is in the annotation frame).

Outputs, written atomically: one target -> ``out.png`` and ``out_strip.png`` (source | target pose
| result, at the output size); several -> ``out_0.png``, ``out_0_strip.png``, ``out_1.png``, ...
in the order of the targets. ``--seeds`` is one seed for every target or one per target.

From Python the same function: ``transfer(pipe, source, target_or_list, ...)`` returns one
``TransferResult`` (image, pose_image, strip, keypoints, kind) per target.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .util.fileio import atomic_save_image
from .evaluate.handoff import parse_size
from .util.images import comparison_grid, load_rgb
from .pose.formats import IMAGE_EXTENSIONS, openpose_canvas_size, read_pose
from .pose.keypoints import PoseFileError, resize_keypoints

TARGET_KINDS = ("auto", "photo", "pose_image", "pose_file")
# A rendered pose image: at least this share of pixels near black (max channel below 40).
POSE_IMAGE_BLACK_SHARE = 0.6


@dataclass
class TransferResult:
    image: Image.Image            # the generated person, at the pipeline's output size
    pose_image: Image.Image       # the target pose as the pipeline saw it
    strip: Image.Image            # source | target pose | result
    keypoints: np.ndarray | None  # (18, 2) pixels at the output size; None for a pose image
    kind: str                     # "photo", "pose_image" or "pose_file"
    target: str                   # what was passed


def looks_like_pose_image(image: Image.Image) -> bool:
    """A rendered pose (coloured sticks on black) rather than a photo."""
    arr = np.asarray(image.convert("RGB").resize((64, 64)))
    return float((arr.max(axis=-1) < 40).mean()) >= POSE_IMAGE_BLACK_SHARE


def detect_target_kind(target, kind: str = "auto") -> str:
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
    if kind != "auto":
        return kind
    if isinstance(target, np.ndarray) and target.ndim == 2 and target.shape[-1] == 2:
        return "keypoints"
    if isinstance(target, Image.Image):
        return "pose_image" if looks_like_pose_image(target) else "photo"
    path = Path(target)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: target image missing")
        return "pose_image" if looks_like_pose_image(load_rgb(path)) else "photo"
    return "pose_file"


def target_pose(target, out_size: tuple[int, int], kind: str = "auto", source_size: tuple[int, int] | None = None,
                target_size: tuple[int, int] | None = None, person: int = 0, threshold: float | None = None,
                estimator=None):
    """One target -> (what the pipeline takes: (18, 2) keypoints in pixels of ``out_size`` or a
    pose image, kind). ``estimator``: a ``PoseEstimator`` to reuse for photos."""
    kind = detect_target_kind(target, kind)
    if kind == "keypoints":
        return np.asarray(target, dtype=np.float64), "keypoints"
    if kind == "pose_image":
        image = target if isinstance(target, Image.Image) else load_rgb(target)
        return image.convert("RGB"), kind
    if kind == "photo":
        from .pose.estimator import PoseEstimator

        image = target if isinstance(target, Image.Image) else load_rgb(target)
        name = "<target photo>" if isinstance(target, Image.Image) else str(target)
        if estimator is None:
            with PoseEstimator() as est:
                kp = est(image, name)
        else:
            kp = estimator(image, name)
        return resize_keypoints(kp, (image.height, image.width), out_size), kind
    path = Path(target)
    if path.suffix.lower() == ".txt":
        return read_pose(path, image_size=out_size, person=person, threshold=threshold), kind
    pose_size = target_size or openpose_canvas_size(path) or source_size
    return read_pose(path, image_size=out_size, person=person, threshold=threshold, pose_size=pose_size), kind


def transfer(pipe, source, target, seeds=7, steps: int = 20, guidance_scale: float = 2.0, scheduler: str = "ddpm",
             target_kind: str = "auto", target_size=None, person: int = 0, threshold: float | None = None,
             ) -> list[TransferResult]:
    """The source person (path or PIL) in each target pose (one target or a list: photo, pose
    image, pose file, or (18, 2) keypoints in pixels of the output size), at the pipeline's own
    size. ``seeds``: one int, or one per target. Returns one ``TransferResult`` per target."""
    out_size = (int(pipe.config.height), int(pipe.config.width))
    source_image = source if isinstance(source, Image.Image) else load_rgb(source)
    source_image = source_image.convert("RGB")
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    if not targets:
        raise ValueError("no target given")
    seed_list = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if len(seed_list) == 1:
        seed_list = seed_list * len(targets)
    if len(seed_list) != len(targets):
        raise ValueError(f"{len(seed_list)} seeds for {len(targets)} targets; give one seed or one per target")
    kinds = [detect_target_kind(t, target_kind) for t in targets]
    estimator = None
    if "photo" in kinds:
        from .pose.estimator import PoseEstimator

        estimator = PoseEstimator()
    if isinstance(target_size, str):
        target_size = parse_size(target_size)
    try:
        poses = [target_pose(t, out_size, k, (source_image.height, source_image.width), target_size, person,
                             threshold, estimator) for t, k in zip(targets, kinds)]
    finally:
        if estimator is not None:
            estimator.close()
    results = []
    for t, (pose, kind), seed in zip(targets, poses, seed_list):
        image = pipe(source_image, pose, num_inference_steps=steps, guidance_scale=guidance_scale,
                     scheduler=scheduler, seeds=[seed]).images[0]
        if isinstance(pose, np.ndarray):
            pose_image, keypoints = pipe.draw_target_pose(pose, *out_size), pose
        else:
            pose_image, keypoints = pose.resize((out_size[1], out_size[0]), Image.BICUBIC), None
        strip = comparison_grid([[source_image, pose_image, image]], out_size)
        results.append(TransferResult(image, pose_image, strip, keypoints, kind,
                                      t if isinstance(t, (str, Path)) else f"<{type(t).__name__}>"))
    return results


def output_paths(out: str | Path, count: int) -> list[tuple[Path, Path]]:
    """(image, strip) paths: ``out.png`` + ``out_strip.png`` for one target, ``out_<i>.png`` +
    ``out_<i>_strip.png`` for several."""
    out = Path(out)
    suffix = out.suffix or ".png"
    stems = [out.stem] if count == 1 else [f"{out.stem}_{i}" for i in range(count)]
    return [(out.with_name(s + suffix), out.with_name(f"{s}_strip{suffix}")) for s in stems]


def save_results(results: list[TransferResult], out: str | Path) -> list[Path]:
    written = []
    for result, (image_path, strip_path) in zip(results, output_paths(out, len(results))):
        image_path.parent.mkdir(parents=True, exist_ok=True)
        written += [atomic_save_image(image_path, result.image), atomic_save_image(strip_path, result.strip)]
    return written


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import SCHEDULERS

    p = argparse.ArgumentParser(prog="python -m src.transfer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pipeline", required=True, help="FPDM pipeline folder (what B2 writes) or hub id")
    p.add_argument("--source", required=True, help="photo of the person to show")
    p.add_argument("--target", required=True, action="append",
                   help="target pose, repeatable: a photo, a rendered pose image, an OpenPose/COCO JSON, "
                        "a .npy keypoint array or a keypoint txt")
    p.add_argument("--out", default="out.png", help="output PNG; several targets -> OUT_0.png, OUT_1.png, ...; "
                                                    "each with OUT[_i]_strip.png (source | pose | result)")
    p.add_argument("--seeds", default="7", help="one seed, or comma-separated seeds, one per target")
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--guidance_scale", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--scheduler", default="ddpm", choices=sorted(SCHEDULERS), help="sampler")
    p.add_argument("--target_kind", default="auto", choices=TARGET_KINDS,
                   help="what every --target is; auto: by extension, and photo vs pose image by content")
    p.add_argument("--target_size", default=None,
                   help="HxW of the image a JSON/npy target's pixel coordinates refer to (default: the "
                        "file's canvas size, else the source photo's size)")
    p.add_argument("--person", type=int, default=0, help="which person of a multi-person pose file")
    p.add_argument("--threshold", type=float, default=None,
                   help="confidence below which a pose-file point is missing (default: 0.05 OpenPose, 0.3 COCO)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a capable GPU, else float32), float32, ...")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .util.devices import resolve_device, resolve_dtype
    from .evaluate.generate import load_pipeline
    from .pose.estimator import EstimatorNotInstalled, NoPersonError
    from .util.weights import WeightsNotFoundError

    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        target_size = None if args.target_size is None else parse_size(args.target_size)
        device = resolve_device(args.device)
        pipe = load_pipeline(args.pipeline, resolve_dtype(args.dtype, device), device)
        pipe.set_progress_bar_config(disable=True)
        results = transfer(pipe, args.source, args.target, seeds=seeds, steps=args.steps,
                           guidance_scale=args.guidance_scale, scheduler=args.scheduler,
                           target_kind=args.target_kind, target_size=target_size, person=args.person,
                           threshold=args.threshold)
        written = save_results(results, args.out)
    except (PoseFileError, NoPersonError, EstimatorNotInstalled, WeightsNotFoundError, FileNotFoundError,
            ValueError) as e:
        if isinstance(e, WeightsNotFoundError):
            e.option = "pipeline"  # the only weights this command loads
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r, (image_path, strip_path) in zip(results, output_paths(args.out, len(results))):
        print(f"{r.target} ({r.kind}) -> {image_path} (strip {strip_path})")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
