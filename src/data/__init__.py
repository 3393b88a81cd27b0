"""Datasets: what every dataset shares, and one module per dataset.

``pairs``: pair files, the problems-list errors (``ProblemsError``, ``DatasetError``) and the
checks that report every problem at once. ``fusion_views``: how each image reaches the fusion
model. ``deepfashion``: the DeepFashion layout, its check, its pose images, the paper's sizes
and the Datasets of both stages. Sizes are (height, width) everywhere.
The image helpers ``load_rgb``, ``to_tensor`` and ``to_pil`` live in ``src.images``.
"""

from .deepfashion import (
    EVAL_SIZE,
    MODEL_SIZE,
    PHOTO_SIZE,
    POSE_DRAW_SIZE,
    DiffusionDataset,
    FusionDataset,
    check_dataset,
    draw_pose_resized,
    pose_image_path,
    pose_path,
    stage2_pose,
    target_pose_image,
)
from .fusion_views import FUSION_VIEWS, fusion_input
from .pairs import (
    PAIR_KEYS,
    DatasetError,
    ProblemsError,
    check_image,
    image_path,
    load_pairs,
    read_pair_file,
    relative_stem,
)

__all__ = [
    # shared
    "PAIR_KEYS", "DatasetError", "ProblemsError", "check_image", "image_path", "load_pairs",
    "read_pair_file", "relative_stem", "FUSION_VIEWS", "fusion_input",
    # DeepFashion
    "EVAL_SIZE", "MODEL_SIZE", "PHOTO_SIZE", "POSE_DRAW_SIZE", "DiffusionDataset", "FusionDataset",
    "check_dataset", "draw_pose_resized", "pose_image_path", "pose_path", "stage2_pose", "target_pose_image",
]
