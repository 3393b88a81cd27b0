"""Keypoints and pose renderers, one module per keypoint format.

``keypoints``: operations for any number of points (flip with a swap table, resize, jitter;
missing = NaN). ``openpose18``: DeepFashion's 18-point format (txt files in the 256x256
annotation frame, the OpenPose-style renderer). Sizes are (height, width) everywhere.
The names below are the 18-point ones the rest of ``src`` uses.
"""

from .keypoints import PoseFileError, hflip_keypoints, jitter_keypoints, resize_keypoints
from .openpose18 import (
    COLORS_BGR,
    FLIP_PERMUTATION,
    NUM_JOINTS,
    check_frame,
    draw_pose,
    draw_pose_from_frame,
    frame_to_pixels,
    pixels_to_frame,
    read_keypoints,
    write_keypoints,
)

__all__ = [
    "COLORS_BGR", "FLIP_PERMUTATION", "NUM_JOINTS", "PoseFileError", "check_frame", "draw_pose",
    "draw_pose_from_frame", "frame_to_pixels", "hflip_keypoints", "jitter_keypoints", "pixels_to_frame",
    "read_keypoints", "resize_keypoints", "write_keypoints",
]
