"""Datasets: what every dataset shares, and one module per dataset.

``pairs``: pair files, the problems-list errors (``ProblemsError``, ``DatasetError``) and the
checks that report every problem at once. ``fusion_views``: how each image reaches the fusion
model. ``deepfashion``: the DeepFashion layout, its check, its pose images, the paper's sizes
and the Datasets of both stages; ``phoenix`` (the PHOENIX-2014T release and its pairs) and
``phoenix_datasets`` the same for PHOENIX-2014T. A script picks a dataset's module by name
(``dataset_module``); a pipeline finds the renderer of its keypoint format
(``pose_format_module``). Sizes are (height, width) everywhere.
The image helpers ``load_rgb``, ``to_tensor`` and ``to_pil`` live in ``src.util.images``.
"""

import importlib
from types import ModuleType

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
from .fusion_views import FUSION_VIEWS, fusion_input, pose_views, source_views
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

# Every dataset module has the same interface: POSE_FORMAT, MODEL_SIZE, EVAL_SIZE, POSE_DRAW_SIZE,
# TEST_PAIRS_ARE_VIDEOS, FusionDataset, DiffusionDataset, check_dataset, target_pose_image,
# drawn_pose, draw_pose_resized.
DATASETS = {"deepfashion": "src.data.deepfashion", "phoenix": "src.data.phoenix_datasets"}


def dataset_module(name: str) -> ModuleType:
    """The module of a dataset by its name in ``DATASETS``."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name])


def pose_format_module(pose_format: str) -> ModuleType:
    """The dataset module whose keypoints are in ``pose_format`` ("openpose18", "wholebody133"):
    the home of that format's stage-2 drawing."""
    for name in DATASETS:
        module = dataset_module(name)
        if module.POSE_FORMAT == pose_format:
            return module
    known = sorted({dataset_module(n).POSE_FORMAT for n in DATASETS})
    raise ValueError(f"pose_format={pose_format!r}: expected one of {', '.join(known)}")


__all__ = [
    "DATASETS", "dataset_module", "pose_format_module",
    # shared
    "PAIR_KEYS", "DatasetError", "ProblemsError", "check_image", "image_path", "load_pairs",
    "read_pair_file", "relative_stem", "FUSION_VIEWS", "fusion_input", "pose_views", "source_views",
    # DeepFashion
    "EVAL_SIZE", "MODEL_SIZE", "PHOTO_SIZE", "POSE_DRAW_SIZE", "DiffusionDataset", "FusionDataset",
    "check_dataset", "draw_pose_resized", "pose_image_path", "pose_path", "stage2_pose", "target_pose_image",
]
