"""Datasets: what every dataset shares, and one module per dataset.

``pairs``: the layout under a dataset root, pair files, the problems-list errors
(``ProblemsError``, ``DatasetError``) and the checks that report every problem at once.
``spec``: ``DatasetSpec``, what a dataset declares (keypoint format, sizes, augmentation
defaults, whether its test pairs are videos, its check, the Datasets of both stages, built on
``stages``). ``deepfashion``, ``phoenix_datasets`` and ``market`` each fill one in (their
``SPEC``); ``phoenix`` reads the PHOENIX-2014T release for A1, ``market`` Market-1501's with
PATN's files. A script finds a dataset's spec by name
(``dataset_spec``). How images reach the networks is ``src.models.views``; keypoint formats and
their renderers are ``src.pose``. Sizes are (height, width) everywhere.
"""

import importlib

from .pairs import (
    PAIR_KEYS,
    DatasetError,
    ProblemsError,
    check_image,
    image_path,
    load_pairs,
    pose_image_path,
    pose_path,
    read_pair_file,
    relative_stem,
)
from .spec import DatasetSpec

# name -> the module (in this package) whose SPEC declares it
DATASETS = {"deepfashion": "deepfashion", "phoenix": "phoenix_datasets", "market": "market"}


def dataset_spec(name: str) -> DatasetSpec:
    """The ``DatasetSpec`` of a dataset by its name in ``DATASETS``."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}")
    return importlib.import_module(f".{DATASETS[name]}", __name__).SPEC


__all__ = [
    "DATASETS", "DatasetSpec", "dataset_spec",
    "PAIR_KEYS", "DatasetError", "ProblemsError", "check_image", "image_path", "load_pairs", "pose_image_path",
    "pose_path", "read_pair_file", "relative_stem",
]
