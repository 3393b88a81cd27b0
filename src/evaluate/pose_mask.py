"""The peers' masked metrics of Market-1501: SSIM and LPIPS inside the target pose's mask.

The mask is PATN's (``produce_ma_mask``, tool/pose_utils.py of tengteng95/Pose-Transfer; the same
function in PIDM's utils/metrics.py): on the target's 18 keypoints in pixels of the evaluation
image, a quadrilateral 2 x 4 px wide along each of 23 links (the 17 drawing limbs plus
neck-ears, hip-hip, hip-shoulder and ear-ear links, which close the torso and head), a disk of
radius 4 on every present point, then a 5x5 closing (dilation, then erosion). Both images are
multiplied by it:

* **Mask-SSIM** (PATN's getMetrics_market.py): SSIM-256's formula (Gaussian weights, sigma 1.5,
  no sample covariance, data range = max - min of the generated image) on the masked 0-255
  images, whose outside is black;
* **Mask-LPIPS** (PIDM's ``calculate_mask_lpips``): LPIPS (AlexNet) of the images in [-1, 1]
  multiplied by the mask, whose outside is 0 (mid grey).

The radii are pixels of PATN's 128x64 frame; at another evaluation size they stay 4 and 5 px.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.draw import disk, polygon
from skimage.morphology import dilation, erosion

# 1-based joint pairs, PATN's order: the 17 limbs of the renderer, then 2-17, 2-18, 9-12, 12-6, 9-3, 17-18
MASK_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
              (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (2, 17), (2, 18), (9, 12), (12, 6),
              (9, 3), (17, 18))
POINT_RADIUS = 4
CLOSING = np.ones((5, 5), dtype=bool)

MASK_PROTOCOL = ("target-pose mask of PATN/PIDM (produce_ma_mask): 23 links as quadrilaterals of half-width 4 px, "
                 "disks of radius 4 px on present points, 5x5 dilation then erosion, on the target's keypoints at "
                 "the evaluation size")
MASK_SSIM_PROTOCOL = ("PATN getMetrics_market.py: skimage structural_similarity of the masked 0-255 images (outside "
                      "black), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=2, "
                      "data_range=generated.max()-generated.min()")
MASK_LPIPS_PROTOCOL = ("PIDM calculate_mask_lpips: lpips AlexNet of (image / 127.5 - 1) * mask for both images "
                       "(outside 0); every pair counted (PIDM drops a last partial batch of 64)")


def pose_mask(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PATN's bool mask (H, W) of pixel keypoints ``kp`` (18, 2) as (x, y), NaN missing, for an
    image of (height, width) ``size``."""
    yx = np.asarray(kp, dtype=np.float64)[:, ::-1]
    present = ~np.isnan(yx).any(axis=1)
    mask = np.zeros(tuple(size), dtype=bool)
    for a, b in MASK_LIMBS:
        a, b = a - 1, b - 1
        if not (present[a] and present[b]):
            continue
        d = yx[a] - yx[b]
        length = np.linalg.norm(d)
        if length == 0:
            continue  # PATN divides by it (NaN corners, nothing drawn); the disks cover the point
        normal = POINT_RADIUS * np.array([-d[1], d[0]]) / length
        corners = np.array([yx[a] + normal, yx[a] - normal, yx[b] - normal, yx[b] + normal])
        rr, cc = polygon(corners[:, 0], corners[:, 1], shape=mask.shape)
        mask[rr, cc] = True
    for y, x in yx[present]:
        rr, cc = disk((y, x), POINT_RADIUS, shape=mask.shape)
        mask[rr, cc] = True
    return erosion(dilation(mask, CLOSING), CLOSING)


def masked_ssim(generated: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mask-SSIM of two uint8 RGB images: SSIM-256 of both multiplied by the bool mask."""
    from .metrics import ssim_256

    m = mask[..., None]
    return ssim_256(generated * m, truth * m)


def masked_lpips_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) images and bool (B, H, W) masks -> LPIPS input (B, 3, H, W), [-1, 1] x mask."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x * masks[:, None].to(x.dtype)
