"""What a dataset is: ``DatasetSpec``, which each dataset module fills in once (its ``SPEC``).

Every dataset has the layout of ``src.data.pairs`` (images, keypoint files, A1's pose renders,
pair files) and differs only in what a spec holds: its keypoint format (which reads its
keypoint files and draws them, ``src.pose.render``), its sizes, the defaults of its stage-2
augmentations, whether its test pairs are videos, its check, the Datasets of both stages and
whether C2 scores inside pose masks.
Sizes are (height, width).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..pose.render import PoseFormat, pose_format
from .pairs import pose_image_path, pose_path

Size = tuple[int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's declaration. ``check_dataset(root, pair_files, check_images=True, workers=8,
    extra_images=())`` raises ``DatasetError`` listing every problem, else returns counts;
    ``FusionDataset(root, pair_file, image_size)`` and ``DiffusionDataset(root, pair_file, ...)``
    are stage 1's and stage 2's torch Datasets (``src.data.stages``)."""

    name: str
    pose_format: str                 # a key of src.pose.render.POSE_FORMATS
    photo_size: Size                 # the dataset's images
    model_size: Size                 # stage 2's output: B2 trains at it, C1 generates at it
    eval_size: Size                  # C1 also writes its images at it, C2 scores them there
    pose_draw_size: Size             # stage-2 target poses are drawn on this canvas, then resized
    jitter_sigma: float              # stage-2 keypoint noise, pixels at pose_draw_size
    flip_prob: float                 # stage-2 joint horizontal flip of source, target and pose
    test_pairs_are_videos: bool      # each test video's first frame is the source of all its frames
    check_dataset: Callable[..., dict]
    FusionDataset: type
    DiffusionDataset: type
    pose_masks: bool = False         # C2 also scores SSIM and LPIPS inside the target pose's mask
                                     # (src.evaluate.pose_mask): the peers' Market-1501 protocol

    @property
    def renderer(self) -> PoseFormat:
        return pose_format(self.pose_format)

    def keypoints(self, root: str | Path, image_rel: str) -> np.ndarray:
        """An image's keypoints as its file stores them."""
        return self.renderer.read_keypoints(pose_path(root, image_rel))

    def target_pose_image(self, root: str | Path, image_rel: str, size: Size) -> Image.Image:
        """A1's render of an image when it exists, else drawn now at ``size``, the photo's."""
        return self.renderer.target_pose_image(pose_image_path(root, image_rel), pose_path(root, image_rel), size)

    def drawn_pose(self, root: str | Path, image_rel: str, size: Size, draw_size: Size) -> Image.Image:
        """An image's stage-2 pose from its keypoint file, drawn at ``draw_size``, resized to ``size``."""
        return self.renderer.drawn_pose(pose_path(root, image_rel), size, draw_size)


__all__ = ["DatasetSpec"]
