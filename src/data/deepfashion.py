"""DeepFashion: the layout under a dataset root, its check, its pose images and the torch
Datasets of both stages.

Layout under a dataset root::

    img/<rel>.jpg   pose/<rel>.txt   pose_img/<rel>.jpg   {train,test}_pairs_data.json

``pose/`` holds 18-point keypoints in the annotation frame (``src.pose.openpose18``),
``pose_img/`` A1's renders of them at the photo's size. Sizes are (height, width); every
image tensor a Dataset returns is float (3, H, W) in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..util.images import load_rgb, resize
from ..pose.keypoints import PoseFileError
from ..pose.openpose18 import (
    FLIP_PERMUTATION,
    check_frame,
    draw_pose,
    draw_pose_from_frame,
    frame_to_pixels,
    read_keypoints,
)
from .pairs import check_pairs_and_images, relative_stem
from .stages import DiffusionPairs, FusionTriplets

# The paper's sizes, (height, width): the photos, the model (B2 and C1), the evaluation size
# (C2 also scores at MODEL_SIZE), and the canvas stage-2 target poses are drawn on before being
# resized to the model size.
PHOTO_SIZE = (1101, 750)
MODEL_SIZE = (512, 352)
EVAL_SIZE = (256, 176)
POSE_DRAW_SIZE = (550, 375)
POSE_FORMAT = "openpose18"
TEST_PAIRS_ARE_VIDEOS = False


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

    def check_pose(rel: str) -> tuple[list[str], int]:
        try:
            return [], check_frame(read_keypoints(pose_path(root, rel)))
        except PoseFileError as e:
            return [str(e)], 0

    return check_pairs_and_images(root, pair_files, check_pose, check_images=check_images,
                                  extra_images=extra_images, workers=workers)


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
    return image if (dh, dw) == (h, w) else resize(image, size)


def stage2_pose(kp_frame: np.ndarray, size: tuple[int, int], draw_size: tuple[int, int]) -> Image.Image:
    """The stage-2 target pose image of annotation-frame keypoints, without augmentation."""
    return draw_pose_resized(frame_to_pixels(kp_frame, *draw_size), draw_size, size)


def drawn_pose(root: Path, image_rel: str, size: tuple[int, int], draw_size: tuple[int, int]) -> Image.Image:
    """An image's stage-2 pose from its keypoint file, drawn at ``draw_size`` and resized to ``size``."""
    return stage2_pose(read_keypoints(pose_path(root, image_rel)), size, draw_size)


# ---------------------------------------------------------------------------------------------
# datasets


class FusionDataset(FusionTriplets):
    """Stage 1 on DeepFashion: the pose is A1's render at the photo's size."""

    pose_image = staticmethod(target_pose_image)


def keypoints_at(root: Path, image_rel: str, photo_size: tuple[int, int], draw_size: tuple[int, int]) -> np.ndarray:
    """An image's 18 keypoints in pixels of a ``draw_size`` (height, width) canvas."""
    return frame_to_pixels(read_keypoints(pose_path(root, image_rel)), *draw_size)


class DiffusionDataset(DiffusionPairs):
    """Stage 2 on DeepFashion: poses drawn at 550x375 then resized to 512x352, jitter 1 px,
    joint flips with probability 0.5 (the authors' augmentations)."""

    DEFAULTS = {"target_size": MODEL_SIZE, "pose_draw_size": POSE_DRAW_SIZE, "jitter_sigma": 1.0, "flip_prob": 0.5}
    FLIP_PERMUTATION = FLIP_PERMUTATION
    keypoints_at = staticmethod(keypoints_at)
    draw = staticmethod(draw_pose_resized)
