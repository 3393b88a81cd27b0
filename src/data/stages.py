"""The Datasets of both stages, for any dataset: each dataset module subclasses them, naming
itself in ``dataset``; its ``DatasetSpec`` gives the keypoint format, the renderer and the defaults.

``FusionTriplets`` (stage 1): (source, target pose, target) as the fusion model sees them.
``DiffusionPairs`` (stage 2): target image and its rendered pose at ``target_size`` (height,
width), the source at ``source_size`` square, and the fusion model's inputs at ``fusion_size``.
With ``train=True`` the training augmentations apply: target keypoints jittered by
``jitter_sigma`` pixels at ``pose_draw_size``, a joint horizontal flip with probability
``flip_prob``, identity pairs with probability ``identity_prob`` and the source fed at a random
one of ``source_scales`` (squashed to that square, then to ``source_size``). The fusion model gets
the (flipped) source at that scale and the very pose render the UNet gets, jittered and flipped,
both squashed to ``fusion_size`` (``source_views``, ``pose_views``: the pipeline prepares its
inputs with the same two functions). Augmentations are a function of (seed, epoch, index):
reproducible, resumable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..models.views import fusion_input, pose_views, source_views
from ..pose.keypoints import hflip_keypoints, jitter_keypoints
from ..util.images import load_rgb, resize, to_tensor
from .pairs import image_path, load_pairs


class DeclaredDataset:
    """A Dataset of a declared dataset: ``dataset`` names it in ``src.data.DATASETS``."""

    dataset: str = ""

    @property
    def spec(self):
        from . import dataset_spec

        return dataset_spec(self.dataset)


class FusionTriplets(DeclaredDataset, Dataset):
    """Stage 1's items: source and target through CLIP's crop, the pose render
    (``DatasetSpec.target_pose_image``) squashed (``fusion_input``)."""

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
        pose = self.spec.target_pose_image(self.root, pair["target_image"], (target.height, target.width))
        s = self.image_size
        return {
            "source": fusion_input(source, s, "stage1_photo"),
            "pose": fusion_input(pose, s, "pose"),
            "target": fusion_input(target, s, "stage1_photo"),
            "index": index,
        }


class DiffusionPairs(DeclaredDataset, Dataset):
    """Stage 2's items (see the module docstring); the sizes, ``jitter_sigma`` and ``flip_prob``
    left at None are the dataset's (its ``DatasetSpec``)."""

    def __init__(self, dataset_root: str | Path, pair_file: str, target_size=None, source_size: int = 512,
                 fusion_size: int = 224, pose_draw_size=None, train: bool = True, jitter_sigma: float | None = None,
                 flip_prob: float | None = None, identity_prob: float = 0.05, source_scales=(256, 512),
                 seed: int = 0):
        spec = self.spec
        self.root = Path(dataset_root)
        self.pairs = load_pairs(self.root, pair_file)
        self.target_size = tuple(target_size or spec.model_size)
        self.source_size = source_size
        self.fusion_size = fusion_size
        self.pose_draw_size = tuple(pose_draw_size or spec.pose_draw_size)
        self.train = train
        self.jitter_sigma = spec.jitter_sigma if jitter_sigma is None else jitter_sigma
        self.flip_prob = spec.flip_prob if flip_prob is None else flip_prob
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
        renderer = self.spec.renderer
        kp_draw = renderer.to_pixels(self.spec.keypoints(self.root, pair["target_image"]), self.pose_draw_size,
                                     (target.height, target.width))
        if train and rng.random() < self.flip_prob:
            source = source.transpose(Image.FLIP_LEFT_RIGHT)
            target = target.transpose(Image.FLIP_LEFT_RIGHT)
            kp_draw = hflip_keypoints(kp_draw, self.pose_draw_size[1], renderer.flip_permutation)
        if train and self.jitter_sigma > 0:
            kp_draw = jitter_keypoints(kp_draw, self.jitter_sigma, rng)
        render = renderer.draw(kp_draw, self.pose_draw_size, self.pose_draw_size)
        scale = int(rng.choice(self.source_scales)) if train and len(self.source_scales) > 1 else None
        src, fusion_source = source_views(source, self.source_size, self.fusion_size, scale)
        pose, fusion_pose = pose_views(render, self.target_size, self.fusion_size)
        return {
            "target": to_tensor(resize(target, self.target_size)),
            "target_pose": pose,
            "source": src,
            "fusion_source": fusion_source,
            "fusion_pose": fusion_pose,
            "index": index,
        }
