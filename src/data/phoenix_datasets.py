"""PHOENIX-2014T: the torch Datasets of both stages and the dataset check, reading the dataset
root A1's PHOENIX mode writes (see ``src.data.phoenix``)::

    img -> <release>/features/fullFrame-210x260px    frames, 210 wide x 260 high
    pose/<split>/<video>/imagesNNNN.txt             133 lines "x y" in frame pixels, "nan nan" = missing
    pose_img/<split>/<video>/imagesNNNN.jpg         A1's 133-point renders at the frame's size
    train_pairs_data.json, test_pairs_data.json

The module has the interface of ``src.data.deepfashion`` (``FusionDataset``, ``DiffusionDataset``,
``check_dataset``, the same item keys), so B1 and B2 choose it with ``dataset = "phoenix"`` and
their training loops do not change. Sizes are (height, width); every image tensor is float
(3, H, W) in [-1, 1].

Differences from DeepFashion, and why:

* keypoints are the 133 COCO-WholeBody points in pixels of the 260x210 frame (no annotation
  frame with margins), drawn with the 133-point renderer (``src.pose.wholebody133``);
* the stage-2 pose is drawn at ``pose_draw_size``, by default the frame itself, then resized
  to the model size, as DeepFashion's is;
* horizontal flip is OFF by default (``flip_prob=0``): a signer's dominant hand and the
  one-handed signs are not mirror-symmetric, so a mirrored frame is a different (often wrong)
  sign. The authors' repository has no PHOENIX pipeline (only an unused 133-point renderer), so
  there is nothing of theirs to follow here; the flip still works (hands, face and body swapped
  by ``FLIP_PERMUTATION``) for whoever turns it on, with a warning;
* keypoint jitter stays on, by default 0.5 px at the frame size: about the same fraction of the
  picture's height as DeepFashion's 1 px at its 550-high drawing canvas (1 x 260 / 550);
* identity pairs and the source scale augmentation are as DeepFashion's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..util.images import load_rgb, resize
from ..pose import wholebody133
from ..pose.keypoints import PoseFileError, resize_keypoints
from .deepfashion import pose_image_path, pose_path
from .pairs import check_pairs_and_images
from .stages import DiffusionPairs, FusionTriplets

FRAME_SIZE = wholebody133.FRAME_SIZE            # (260, 210): the frames, the evaluation size (C2)
# Stage 2's model size: near the frame's 260:210 (1.238) aspect, valid for the SD2 UNet. 320x256
# (1.25) is a multiple of 64 both ways, so the 1/8 latent (40x32) halves cleanly through the
# UNet's three down-samplings (40x32 -> 20x16 -> 10x8 -> 5x4); it is the smallest such size
# above the frame (x1.23). 256x208 would give a 26-wide latent that cannot halve three times.
MODEL_SIZE = (320, 256)
EVAL_SIZE = FRAME_SIZE               # C1 also writes, and C2 scores, frames at the release's own size
POSE_FORMAT = "wholebody133"
TEST_PAIRS_ARE_VIDEOS = True            # each test video's first frame is the source of all its frames
POSE_DRAW_SIZE = FRAME_SIZE          # stage-2 poses are drawn at the frame's own size, then resized
JITTER_SIGMA = 0.5                   # pixels at POSE_DRAW_SIZE (see the module's docstring)


def stick_width_at(draw_size: tuple[int, int]) -> int:
    """The renderer's stick width scaled from the frame's height to a canvas ``draw_size`` high."""
    return max(1, round(wholebody133.STICK_WIDTH * draw_size[0] / FRAME_SIZE[0]))


def draw_pose_resized(kp_draw: np.ndarray, draw_size: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """Draw 133 pixel keypoints on a canvas of ``draw_size``, then resize bicubic to ``size``."""
    (dh, dw), (h, w) = draw_size, size
    image = Image.fromarray(wholebody133.draw_pose(kp_draw, dh, dw, stick_width_at(draw_size)))
    return image if (dh, dw) == (h, w) else resize(image, size)


def stage2_pose(kp: np.ndarray, size: tuple[int, int], draw_size: tuple[int, int] = POSE_DRAW_SIZE,
                frame_size: tuple[int, int] = FRAME_SIZE) -> Image.Image:
    """The stage-2 pose image of frame-pixel keypoints, without augmentation."""
    return draw_pose_resized(resize_keypoints(kp, frame_size, draw_size), draw_size, size)


def drawn_pose(root: Path, image_rel: str, size: tuple[int, int], draw_size: tuple[int, int]) -> Image.Image:
    """A frame's stage-2 pose from its keypoint file, drawn at ``draw_size`` and resized to ``size``."""
    return stage2_pose(wholebody133.read_keypoints(pose_path(root, image_rel)), size, draw_size)


def target_pose_image(root: Path, rel: str, size: tuple[int, int]) -> Image.Image:
    """A1's render of a frame when it exists, else drawn now from its pose file, at ``size``
    (the frame's (height, width)); keypoints are in pixels of the 260x210 frame."""
    rendered = pose_image_path(root, rel)
    if rendered.is_file():
        return load_rgb(rendered)
    kp = resize_keypoints(wholebody133.read_keypoints(pose_path(root, rel)), FRAME_SIZE, size)
    return Image.fromarray(wholebody133.draw_pose(kp, *size, stick_width_at(size)))


def check_dataset(root: str | Path, pair_files: list[str], check_images: bool = True,
                  workers: int = 8, extra_images: tuple[str, ...] = ()) -> dict:
    """Check pair files, frames (decoded when ``check_images``, through the ``img`` link) and
    133-point pose files in one pass; raise DatasetError listing every problem. A point more than
    one frame away from the frame is a problem; one slightly outside is kept and counted."""
    root = Path(root)
    h, w = FRAME_SIZE

    def check_pose(rel: str) -> tuple[list[str], int]:
        problems = []
        path = pose_path(root, rel)
        try:
            kp = wholebody133.read_keypoints(path)
        except PoseFileError as e:
            return [str(e)], 0
        x, y = kp[:, 0], kp[:, 1]
        with np.errstate(invalid="ignore"):
            far = (x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)
            outside = (x < 0) | (x > w) | (y < 0) | (y > h)
        if far.any():
            problems.append(f"{path}: {int(far.sum())} point(s) more than one frame outside the {w}x{h} frame")
        return problems, int(outside.sum())

    return check_pairs_and_images(root, pair_files, check_pose, check_images=check_images,
                                  extra_images=extra_images, workers=workers, outside_note="lie outside the frame (legs and feet below a signer usually do)")


# ---------------------------------------------------------------------------------------------
# datasets


class PhoenixFusionDataset(FusionTriplets):
    """Stage 1 on PHOENIX: the pose is A1's 133-point render (drawn from the keypoints when it
    is missing)."""

    pose_image = staticmethod(target_pose_image)


def keypoints_at(root: Path, image_rel: str, photo_size: tuple[int, int], draw_size: tuple[int, int]) -> np.ndarray:
    """A frame's 133 keypoints (frame pixels in the file) in pixels of a ``draw_size`` canvas."""
    return resize_keypoints(wholebody133.read_keypoints(pose_path(root, image_rel)), photo_size, draw_size)


class PhoenixDiffusionDataset(DiffusionPairs):
    """Stage 2 on PHOENIX: 133-point poses, drawn at the frame's size; flip off and jitter 0.5 px
    by default (see the module docstring)."""

    DEFAULTS = {"target_size": MODEL_SIZE, "pose_draw_size": POSE_DRAW_SIZE, "jitter_sigma": JITTER_SIGMA,
                "flip_prob": 0.0}
    FLIP_PERMUTATION = wholebody133.FLIP_PERMUTATION
    keypoints_at = staticmethod(keypoints_at)
    draw = staticmethod(draw_pose_resized)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.train and self.flip_prob > 0:
            warnings.warn(f"PHOENIX with flip_prob={self.flip_prob}: signing is not mirror-symmetric (a mirrored "
                          "frame is another signer's hand use); the phoenix preset keeps flips off")


# the interface of src.data.deepfashion, so that B1 and B2 pick a dataset by module
FusionDataset = PhoenixFusionDataset
DiffusionDataset = PhoenixDiffusionDataset

__all__ = [
    "EVAL_SIZE", "FRAME_SIZE", "MODEL_SIZE", "POSE_DRAW_SIZE", "POSE_FORMAT", "JITTER_SIGMA", "drawn_pose", "DiffusionDataset", "FusionDataset",
    "PhoenixDiffusionDataset", "PhoenixFusionDataset", "check_dataset", "draw_pose_resized", "stage2_pose",
    "stick_width_at", "target_pose_image",
]
