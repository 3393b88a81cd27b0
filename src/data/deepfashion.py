"""DeepFashion: the layout under a dataset root, its check, its pose images and the torch
Datasets of both stages.

Layout under a dataset root::

    img/<rel>.jpg   pose/<rel>.txt   pose_img/<rel>.jpg   {train,test}_pairs_data.json

``pose/`` holds 18-point keypoints in the annotation frame (``src.pose.openpose18``),
``pose_img/`` A1's renders of them at the photo's size. Sizes are (height, width); every
image tensor a Dataset returns is float (3, H, W) in [-1, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..images import load_rgb, to_tensor
from ..pose.keypoints import PoseFileError, hflip_keypoints, jitter_keypoints
from ..pose.openpose18 import (
    FLIP_PERMUTATION,
    check_frame,
    draw_pose,
    draw_pose_from_frame,
    frame_to_pixels,
    read_keypoints,
)
from .fusion_views import fusion_input
from .pairs import check_image, check_pairs_and_images, image_path, load_pairs, relative_stem

# The paper's sizes, (height, width): the photos, the model (B2 and C1), the evaluation size
# (C2 also scores at MODEL_SIZE), and the canvas stage-2 target poses are drawn on before being
# resized to the model size.
PHOTO_SIZE = (1101, 750)
MODEL_SIZE = (512, 352)
EVAL_SIZE = (256, 176)
POSE_DRAW_SIZE = (550, 375)


def pose_path(root: str | Path, image_rel: str) -> Path:
    return Path(root) / "pose" / relative_stem(image_rel).with_suffix(".txt")


def pose_image_path(root: str | Path, image_rel: str) -> Path:
    return Path(root) / "pose_img" / relative_stem(image_rel).with_suffix(".jpg")


def check_dataset(root: str | Path, pair_files: list[str], check_images: bool = True,
                  workers: int = 8, extra_images: tuple[str, ...] = ()) -> dict:
    """Check pair files, images (decoded when ``check_images``) and pose files in one pass; raise
    DatasetError listing every problem. ``extra_images`` ('./img/...' paths) are checked with
    their pose files too. Returns counts (pairs per file, images, points kept outside the frame)."""
    root = Path(root)

    def check_one(rel: str) -> tuple[list[str], int]:
        problems = []
        if check_images:
            problem = check_image(image_path(root, rel))
            if problem:
                problems.append(problem)
        try:
            outside = check_frame(read_keypoints(pose_path(root, rel)))
        except PoseFileError as e:
            problems.append(str(e))
            outside = 0
        return problems, outside

    counts, outside_per_image = check_pairs_and_images(root, pair_files, check_one, extra_images=extra_images,
                                                       workers=workers)
    outside = sum(outside_per_image)
    if outside:
        warnings.warn(f"{root}: {outside} keypoint(s) lie slightly outside the annotation frame; kept as valid")
    counts["points_outside_frame"] = outside
    return counts


# ---------------------------------------------------------------------------------------------
# pose images


def target_pose_image(root: Path, rel: str, size: tuple[int, int]) -> Image.Image:
    """The A1 pose render of an image when it exists, else drawn now from its keypoints.
    ``size`` is the (height, width) of the photo."""
    rendered = pose_image_path(root, rel)
    if rendered.is_file():
        return load_rgb(rendered)
    return Image.fromarray(draw_pose_from_frame(read_keypoints(pose_path(root, rel)), *size))


def draw_pose_resized(kp_draw: np.ndarray, draw_size: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """Draw pixel keypoints on a canvas of ``draw_size`` (height, width), then resize bicubic to
    ``size`` (height, width): how stage 2 sees a target pose in training and in sampling."""
    (dh, dw), (h, w) = draw_size, size
    image = Image.fromarray(draw_pose(kp_draw, dh, dw))
    return image if (dh, dw) == (h, w) else image.resize((w, h), Image.BICUBIC)


def stage2_pose(kp_frame: np.ndarray, size: tuple[int, int], draw_size: tuple[int, int]) -> Image.Image:
    """The stage-2 target pose image of annotation-frame keypoints, without augmentation."""
    return draw_pose_resized(frame_to_pixels(kp_frame, *draw_size), draw_size, size)


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
        pose = target_pose_image(self.root, pair["target_image"], (target.height, target.width))
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

    With ``train=True`` the training augmentations apply: target keypoints jittered by
    ``jitter_sigma`` pixels at ``pose_draw_size``, a joint horizontal flip with probability
    ``flip_prob``, identity pairs with probability ``identity_prob`` and the source fed at a
    random one of ``source_scales`` (downscaled, then back to ``source_size``).
    The fusion model gets the (flipped) source and the very pose render the UNet gets, jittered
    and flipped, both squashed to ``fusion_size`` (``fusion_input``).
    """

    def __init__(self, dataset_root: str | Path, pair_file: str, target_size=MODEL_SIZE,
                 source_size: int = 512, fusion_size: int = 224, pose_draw_size=POSE_DRAW_SIZE,
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

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        train = self.train
        source_rel = pair["source_image"]
        if train and rng.random() < self.identity_prob:
            source_rel = pair["target_image"]
        source = load_rgb(image_path(self.root, source_rel))
        target = load_rgb(image_path(self.root, pair["target_image"]))
        kp = read_keypoints(pose_path(self.root, pair["target_image"]))
        flip = train and rng.random() < self.flip_prob

        dh, dw = self.pose_draw_size
        kp_draw = frame_to_pixels(kp, dh, dw)
        if flip:
            source = source.transpose(Image.FLIP_LEFT_RIGHT)
            target = target.transpose(Image.FLIP_LEFT_RIGHT)
            kp_draw = hflip_keypoints(kp_draw, dw, FLIP_PERMUTATION)
        if train and self.jitter_sigma > 0:
            kp_draw = jitter_keypoints(kp_draw, self.jitter_sigma, rng)
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
