"""PHOENIX-2014T: its declaration (``SPEC``), the dataset check and the torch Datasets of both
stages, on the dataset root A1's PHOENIX mode writes (see ``src.data.phoenix``)::

    img -> <release>/features/fullFrame-210x260px    frames, 210 wide x 260 high
    pose/<split>/<video>/imagesNNNN.txt             133 lines "x y" in frame pixels, "nan nan" = missing
    pose_img/<split>/<video>/imagesNNNN.jpg         A1's 133-point renders at the frame's size
    train_pairs_data.json, test_pairs_data.json

B1 and B2 choose it with ``dataset = "phoenix"`` and their training loops do not change. Sizes are
(height, width); every image tensor is float (3, H, W) in [-1, 1].

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

from ..pose import wholebody133
from ..pose.keypoints import PoseFileError
from .pairs import check_pairs_and_images, pose_path
from .spec import DatasetSpec
from .stages import DiffusionPairs, FusionTriplets

FRAME_SIZE = wholebody133.FRAME_SIZE            # (260, 210)


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


class PhoenixFusionDataset(FusionTriplets):
    """Stage 1 on PHOENIX: the pose is A1's 133-point render (drawn from the keypoints when it
    is missing)."""

    dataset = "phoenix"


class PhoenixDiffusionDataset(DiffusionPairs):
    """Stage 2 on PHOENIX: 133-point poses, drawn at the frame's size; flip off and jitter 0.5 px
    by default (see the module docstring)."""

    dataset = "phoenix"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.train and self.flip_prob > 0:
            warnings.warn(f"PHOENIX with flip_prob={self.flip_prob}: signing is not mirror-symmetric (a mirrored "
                          "frame is another signer's hand use); the dataset's default keeps flips off")


# Stage 2's model size: near the frame's 260:210 (1.238) aspect, valid for the SD2 UNet. 320x256
# (1.25) is a multiple of 64 both ways, so the 1/8 latent (40x32) halves cleanly through the
# UNet's three down-samplings (40x32 -> 20x16 -> 10x8 -> 5x4); it is the smallest such size
# above the frame (x1.23). 256x208 would give a 26-wide latent that cannot halve three times.
# C1 also writes, and C2 scores, frames at the release's own size, and poses are drawn on it.
SPEC = DatasetSpec(
    name="phoenix", pose_format="wholebody133", photo_size=FRAME_SIZE, model_size=(320, 256),
    eval_size=FRAME_SIZE, pose_draw_size=FRAME_SIZE, jitter_sigma=0.5, flip_prob=0.0,
    test_pairs_are_videos=True, check_dataset=check_dataset, FusionDataset=PhoenixFusionDataset,
    DiffusionDataset=PhoenixDiffusionDataset,
)
