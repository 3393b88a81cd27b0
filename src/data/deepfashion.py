"""DeepFashion: its declaration (``SPEC``), its check and the torch Datasets of both stages.

``pose/`` holds 18-point keypoints in the annotation frame (``src.pose.openpose18``),
``pose_img/`` A1's renders of them at the photo's size (the layout: ``src.data.pairs``). Sizes
are (height, width); every image tensor a Dataset returns is float (3, H, W) in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

from ..pose.keypoints import PoseFileError
from ..pose.openpose18 import check_frame, read_keypoints
from .pairs import check_pairs_and_images, pose_path
from .spec import DatasetSpec
from .stages import DiffusionPairs, FusionTriplets


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


class FusionDataset(FusionTriplets):
    """Stage 1 on DeepFashion: the pose is A1's render at the photo's size."""

    dataset = "deepfashion"


class DiffusionDataset(DiffusionPairs):
    """Stage 2 on DeepFashion, with the authors' pose canvas and augmentations (``SPEC``)."""

    dataset = "deepfashion"


# The paper's sizes: its photos, its model (B2 and C1) and evaluation sizes (C2 also scores at
# the model size), and the canvas the authors' dataset draws every training pose on before
# resizing it to the model size, so the lines keep their width relative to the figure at any
# model size.
SPEC = DatasetSpec(
    name="deepfashion", pose_format="openpose18", photo_size=(1101, 750), model_size=(512, 352),
    eval_size=(256, 176), pose_draw_size=(550, 375), jitter_sigma=1.0, flip_prob=0.5,
    test_pairs_are_videos=False, check_dataset=check_dataset, FusionDataset=FusionDataset,
    DiffusionDataset=DiffusionDataset,
)
