"""Pair lists, dataset validation and the torch Datasets of both stages.

Layout under a dataset root (SPEC 1)::

    img/<rel>.jpg   pose/<rel>.txt   pose_img/<rel>.jpg   {train,test}_pairs_data.json

A pair file is a JSON list of {"source_image": "./img/<rel>.jpg", "target_image": "./img/<rel>.jpg"}.
Every image tensor a Dataset returns is float (3, H, W) in [-1, 1].
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile
from torch.utils.data import Dataset

from . import pose as P

PAIR_KEYS = ("source_image", "target_image")


class DatasetError(SystemExit):
    """Every problem found in a dataset, one line each; exits the script with status 1."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"dataset check failed with {len(self.problems)} problem(s):\n{lines}")


# ---------------------------------------------------------------------------------------------
# paths and pair files


def relative_stem(image_rel: str) -> Path:
    """'./img/MEN/x/01_1_front.jpg' -> 'MEN/x/01_1_front' (the path shared by img/, pose/, pose_img/)."""
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
    pairs, problems = read_pair_file(Path(root) / pair_file)
    if problems:
        raise DatasetError(problems)
    return pairs


# ---------------------------------------------------------------------------------------------
# images


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image fully decoded as RGB; grayscale, palette, CMYK and RGBA are converted
    (transparency composited on white)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


def check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Return ((width, height), None) for a usable image, else (None, problem)."""
    if not path.is_file():
        return None, f"{path}: image missing"
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            size = im.size
            if im.format == "JPEG":
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
            im.convert("RGB")
        return size, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "unreadable"
        return None, f"{path}: image {kind} ({e})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (3, H, W) in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """float (3, H, W) in [-1, 1] -> PIL RGB."""
    arr = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP-style: bicubic resize of the shortest edge to ``size``, then a central square crop."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


# How each image reaches the fusion model (the authors' preparation). A pose is always squashed
# to the square: a centre crop would cut the head and feet off a tall render. Stage 1's photos go
# through CLIP's processor (shortest edge, centre crop); stage 2 and sampling squash the source.
FUSION_VIEWS = {"pose": "squash", "stage1_photo": "crop", "source": "squash"}


def fusion_input(image: Image.Image | torch.Tensor, size: int, kind: str) -> torch.Tensor:
    """The fusion model's input (3, size, size) in [-1, 1] of a PIL image or a (3, H, W) tensor in
    [-1, 1]; ``kind`` is a key of ``FUSION_VIEWS`` and decides crop or squash for B1, B2, C1
    and the pipeline alike."""
    if kind not in FUSION_VIEWS:
        raise ValueError(f"unknown fusion input kind {kind!r}; choose one of {', '.join(FUSION_VIEWS)}")
    crop = FUSION_VIEWS[kind] == "crop"
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        return to_tensor(resize_crop(image, size) if crop else image.resize((size, size), Image.BICUBIC))
    x = image.float()[None]
    if crop:
        from .models.clip_encoder import clip_resize

        return clip_resize(x, size)[0]
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0]


# ---------------------------------------------------------------------------------------------
# validation


def validate_dataset(root: str | Path, pair_files: list[str], check_images: bool = True,
                     workers: int = 8, extra_images: tuple[str, ...] = ()) -> dict:
    """Check pair files, images and pose files in one pass; raise DatasetError listing every
    problem. ``extra_images`` ('./img/...' paths) are checked with their pose files too.
    Returns counts (pairs per file, images, points kept outside the frame)."""
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset root not found"])
    counts: dict = {"pairs": {}}
    images: set[str] = set(extra_images)
    for pf in pair_files:
        pairs, file_problems = read_pair_file(root / pf)
        problems += file_problems
        counts["pairs"][pf] = len(pairs)
        for pair in pairs:
            images.update(pair[k] for k in PAIR_KEYS)
    images_sorted = sorted(images)

    def check(rel: str) -> list[str]:
        found = []
        if check_images:
            _, problem = check_image(image_path(root, rel))
            if problem:
                found.append(problem)
        try:
            kp = P.read_keypoints(pose_path(root, rel))
            found.append(("outside", P.check_frame(kp)))
        except P.PoseFileError as e:
            found.append(str(e))
        return found

    outside = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for result in pool.map(check, images_sorted):
            for item in result:
                if isinstance(item, tuple):
                    outside += item[1]
                else:
                    problems.append(item)
    if problems:
        raise DatasetError(problems)
    if outside:
        warnings.warn(f"{root}: {outside} keypoint(s) lie slightly outside the annotation frame; kept as valid")
    counts.update(images=len(images_sorted), points_outside_frame=outside)
    return counts


# ---------------------------------------------------------------------------------------------
# pose images


def target_pose_image(root: Path, rel: str, size: tuple[int, int]) -> Image.Image:
    """The A1 pose render of an image when it exists, else drawn now from its keypoints.
    ``size`` is the (width, height) of the photo."""
    rendered = pose_image_path(root, rel)
    if rendered.is_file():
        return load_rgb(rendered)
    kp = P.read_keypoints(pose_path(root, rel))
    return Image.fromarray(P.draw_pose_from_frame(kp, size[1], size[0]))


def draw_pose_resized(kp_draw: np.ndarray, draw_size: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """Draw pixel keypoints on a canvas of ``draw_size`` (height, width), then resize bicubic to
    ``size`` (height, width): how stage 2 sees a target pose in training and in sampling."""
    (dh, dw), (h, w) = draw_size, size
    image = Image.fromarray(P.draw_pose(kp_draw, dh, dw))
    return image if (dh, dw) == (h, w) else image.resize((w, h), Image.BICUBIC)


def stage2_pose(kp_frame: np.ndarray, size: tuple[int, int], draw_size: tuple[int, int]) -> Image.Image:
    """The stage-2 target pose image of annotation-frame keypoints, without augmentation."""
    dh, dw = draw_size
    return draw_pose_resized(P.frame_to_pixels(kp_frame, dw, dh), draw_size, size)


# ---------------------------------------------------------------------------------------------
# datasets


class FusionDataset(Dataset):
    """Stage 1: (source, target pose, target) as the fusion model sees them (``fusion_input``):
    source and target through CLIP's crop, the pose (A1's render at the photo's size) squashed."""

    def __init__(self, dataset_root: str | Path, pair_file: str, image_size: int = 224):
        self.root = Path(dataset_root)
        self.pairs = load_pairs(self.root, pair_file)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        source = load_rgb(image_path(self.root, pair["source_image"]))
        target = load_rgb(image_path(self.root, pair["target_image"]))
        pose = target_pose_image(self.root, pair["target_image"], target.size)
        s = self.image_size
        return {
            "source": fusion_input(source, s, "stage1_photo"),
            "pose": fusion_input(pose, s, "pose"),
            "target": fusion_input(target, s, "stage1_photo"),
            "index": index,
        }


class DiffusionDataset(Dataset):
    """Stage 2: target image and its rendered pose at ``target_size`` (height, width), the
    source at ``source_size`` square, and the fusion model's inputs at ``fusion_size``.

    With ``train=True`` the SPEC 1 augmentations apply: target keypoints jittered by
    ``jitter_sigma`` pixels at ``pose_draw_size``, a joint horizontal flip with probability
    ``flip_prob``, identity pairs with probability ``identity_prob`` and the source fed at a
    random one of ``source_scales`` (downscaled, then back to ``source_size``).
    The fusion model gets the (flipped) source and the very pose render the UNet gets, jittered
    and flipped, both squashed to ``fusion_size`` (``fusion_input``).
    """

    def __init__(self, dataset_root: str | Path, pair_file: str, target_size=(512, 352),
                 source_size: int = 512, fusion_size: int = 224, pose_draw_size=(550, 375),
                 train: bool = True, jitter_sigma: float = 1.0, flip_prob: float = 0.5,
                 identity_prob: float = 0.05, source_scales=(256, 512), seed: int = 0):
        self.root = Path(dataset_root)
        self.pairs = load_pairs(self.root, pair_file)
        self.target_size = tuple(target_size)
        self.source_size = source_size
        self.fusion_size = fusion_size
        self.pose_draw_size = tuple(pose_draw_size)
        self.train = train
        self.jitter_sigma = jitter_sigma
        self.flip_prob = flip_prob
        self.identity_prob = identity_prob
        self.source_scales = tuple(source_scales)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are a function of (seed, epoch, index): reproducible and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        rng = self._rng(index)
        train = self.train
        source_rel = pair["source_image"]
        if train and rng.random() < self.identity_prob:
            source_rel = pair["target_image"]
        source = load_rgb(image_path(self.root, source_rel))
        target = load_rgb(image_path(self.root, pair["target_image"]))
        kp = P.read_keypoints(pose_path(self.root, pair["target_image"]))
        flip = train and rng.random() < self.flip_prob

        dh, dw = self.pose_draw_size
        kp_draw = P.frame_to_pixels(kp, dw, dh)
        if flip:
            source = source.transpose(Image.FLIP_LEFT_RIGHT)
            target = target.transpose(Image.FLIP_LEFT_RIGHT)
            kp_draw = P.hflip_keypoints(kp_draw, dw)
        if train and self.jitter_sigma > 0:
            kp_draw = P.jitter_keypoints(kp_draw, self.jitter_sigma, rng)
        th, tw = self.target_size
        pose = draw_pose_resized(kp_draw, self.pose_draw_size, self.target_size)

        src = source.resize((self.source_size, self.source_size), Image.BICUBIC)
        if train and len(self.source_scales) > 1:
            scale = int(rng.choice(self.source_scales))
            if scale != self.source_size:
                src = source.resize((scale, scale), Image.BICUBIC).resize(
                    (self.source_size, self.source_size), Image.BICUBIC)
        return {
            "target": to_tensor(target.resize((tw, th), Image.BICUBIC)),
            "target_pose": to_tensor(pose),
            "source": to_tensor(src),
            "fusion_source": fusion_input(source, self.fusion_size, "source"),
            "fusion_pose": fusion_input(pose, self.fusion_size, "pose"),
            "index": index,
        }
