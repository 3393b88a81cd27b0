"""C1's job: generate every pair of a pair file with an FPDMPipeline, resumably.

Each pair gets its own seed, derived from the run seed and the pair's file names, so an image
depends neither on the batch size nor on the order of the pairs. Images are written atomically
and skipped when already there, so an interrupted run is finished by running it again.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from . import data as D
from . import pose as P
from .fileio import atomic_save_image, atomic_write_json
from .weights import WeightsNotFoundError, looks_like_path, weights_not_found


def load_pipeline(name: str, dtype: torch.dtype, device):
    """An FPDMPipeline folder written by B2 (or a hub id holding one), or the clear error."""
    from .pipeline import FPDMPipeline

    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not (folder / "model_index.json").is_file():
            raise WeightsNotFoundError(f"{name}: not an FPDM pipeline folder (no model_index.json); "
                                       "pass --pipeline=OUT/pipeline, the folder B2 writes")
    try:
        return FPDMPipeline.from_pretrained(name, dtype=dtype).to(device)
    except (OSError, ValueError) as e:
        if looks_like_path(name):
            raise
        raise weights_not_found("FPDM pipeline", name, "pipeline", reason=str(e)) from None


def flat_name(image_rel: str) -> str:
    """'./img/MEN/Tees_Tanks/id_1/01_1_front.jpg' -> 'MEN-Tees_Tanks-id_1-01_1_front'."""
    return D.relative_stem(image_rel).as_posix().replace("/", "-")


def output_name(pair: dict) -> str:
    """One file name per (source, target) pair: '<source>_2_<target>.png' with '/' -> '-'."""
    return f"{flat_name(pair['source_image'])}_2_{flat_name(pair['target_image'])}.png"


def pair_seed(seed: int, pair: dict) -> int:
    return zlib.crc32(f"{seed}|{pair['source_image']}|{pair['target_image']}".encode()) & 0x7FFFFFFF


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# How C1 renders a test pose. "pose_img": A1's render, drawn at the photo's own size (750x1101
# for DeepFashion), resized to the model size, as the authors' C1 reads it: their numbers need
# it, though its lines are thinner than the training renders. "draw": drawn at the training
# drawing size, then resized, as B2 draws its targets (self-consistent).
TEST_POSES = ("pose_img", "draw")


def test_pose(root: Path, image_rel: str, size: tuple[int, int], draw_size: tuple[int, int],
              mode: str = "pose_img") -> Image.Image:
    """The target pose of a test image at the model ``size`` (height, width), per ``mode``."""
    if mode == "pose_img":
        with Image.open(D.image_path(root, image_rel)) as im:
            photo_size = im.size
        return D.target_pose_image(root, image_rel, photo_size).resize((size[1], size[0]), Image.BICUBIC)
    if mode == "draw":
        return D.stage2_pose(P.read_keypoints(D.pose_path(root, image_rel)), size, draw_size)
    raise ValueError(f"test_pose={mode!r}: choose one of {', '.join(TEST_POSES)}")


def pair_inputs(root: Path, pair: dict, size: tuple[int, int], draw_size: tuple[int, int],
                pose_mode: str = "pose_img") -> tuple[Image.Image, Image.Image]:
    """(source photo, target pose at the model size); the fusion model sees that same pose."""
    source = D.load_rgb(D.image_path(root, pair["source_image"]))
    return source, test_pose(root, pair["target_image"], size, draw_size, pose_mode)


def comparison_grid(rows: list[list[Image.Image]], cell: tuple[int, int]) -> Image.Image:
    """Rows of images (source | pose | ground truth | generated) resized into one grid."""
    h, w = cell
    grid = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(im.convert("RGB").resize((w, h), Image.BICUBIC), (j * w, i * h))
    return grid


def generate_pairs(pipe, root: str | Path, pairs: list[dict], out_dir: str | Path, *,
                   size=(512, 352), eval_size=(256, 176), draw_size=(550, 375), batch_size: int = 16,
                   seed: int = 7, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                   scheduler: str = "ddpm", pose_mode: str = "pose_img", show_progress: bool = True) -> dict:
    """Generate the pairs missing under ``out_dir``; returns counts."""
    root, out_dir = Path(root), Path(out_dir)
    size, eval_size = tuple(size), tuple(eval_size)
    todo = [p for p in pairs
            if not ((out_dir / size_name(size) / output_name(p)).is_file()
                    and (out_dir / size_name(eval_size) / output_name(p)).is_file())]
    bar = tqdm(total=len(todo), desc="generate", unit="img", disable=not show_progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        inputs = [pair_inputs(root, p, size, draw_size, pose_mode) for p in batch]
        images = pipe(
            source_image=[i[0] for i in inputs],
            target_pose=[i[1] for i in inputs],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            seeds=[pair_seed(seed, p) for p in batch],
            height=size[0],
            width=size[1],
            output_type="pil",
        ).images
        for pair, image in zip(batch, images):
            name = output_name(pair)
            atomic_save_image(out_dir / size_name(eval_size) / name,
                              image.resize((eval_size[1], eval_size[0]), Image.BICUBIC))
            atomic_save_image(out_dir / size_name(size) / name, image)
        bar.update(len(batch))
    bar.close()
    return {"pairs": len(pairs), "generated": len(todo), "skipped": len(pairs) - len(todo)}


def write_manifest(out_dir: str | Path, pairs: list[dict], size=(512, 352), eval_size=(256, 176)) -> Path:
    """``manifest.json``: one entry per pair with ``generated`` (relative to ``out_dir``, at the
    model size), ``generated_<eval size>``, and the pair's ``source_image`` / ``target_image``."""
    out_dir = Path(out_dir)
    entries = [{
        "generated": f"{size_name(size)}/{output_name(p)}",
        f"generated_{size_name(eval_size)}": f"{size_name(eval_size)}/{output_name(p)}",
        "source_image": p["source_image"],
        "target_image": p["target_image"],
    } for p in pairs]
    return atomic_write_json(out_dir / "manifest.json", entries)


def write_grids(root: str | Path, pairs: list[dict], out_dir: str | Path, size=(512, 352),
                draw_size=(550, 375), num_grids: int = 2, rows: int = 4, pose_mode: str = "pose_img") -> list[Path]:
    """A few PNG grids (source | target pose | ground truth | generated) of the first pairs."""
    root, out_dir = Path(root), Path(out_dir)
    cell = (256, 176)
    paths = []
    for g in range(num_grids):
        chunk = pairs[g * rows:(g + 1) * rows]
        if not chunk:
            break
        grid_rows = []
        for p in chunk:
            source, pose = pair_inputs(root, p, size, draw_size, pose_mode)
            truth = D.load_rgb(D.image_path(root, p["target_image"]))
            generated = Image.open(out_dir / size_name(size) / output_name(p))
            grid_rows.append([source, pose, truth, generated])
        paths.append(atomic_save_image(out_dir / "grids" / f"grid_{g:03d}.png", comparison_grid(grid_rows, cell)))
    return paths


def split_for_process(pairs: list[dict], index: int, count: int) -> list[dict]:
    """This process's share of the pairs under ``accelerate launch`` (every count-th pair)."""
    return pairs[index::count]


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
