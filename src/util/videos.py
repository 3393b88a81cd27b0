"""Video files of generated frames: MP4 (OpenCV, ``mp4v``) and GIF (PIL), both written atomically,
and the authors' four-panel layout ``source | pose | ground truth | generated``.

PHOENIX-2014T runs at 25 fps with 210x260 (width x height) frames; the authors' GIFs are 840x260,
four 210x260 panels side by side. Frames are RGB, given as PIL images or HxWx3 uint8 arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .fileio import atomic_path
from .images import resize
from ..pose.wholebody133 import FRAME_SIZE

DEFAULT_FPS = 25.0
MP4_FOURCC = "mp4v"


class VideoWriteError(RuntimeError):
    """A video file that could not be written (no frames, a writer that did not open, ...)."""


def to_rgb_array(frame) -> np.ndarray:
    """An HxWx3 uint8 RGB array from a PIL image or an array (HxW grey, HxWx3, HxWx4 or float in [0, 1])."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"), dtype=np.uint8).copy()
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        else:
            a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"a frame must be HxWx3 RGB, got shape {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])


def _frames_as_arrays(frames) -> list[np.ndarray]:
    arrays = [to_rgb_array(f) for f in frames]
    if not arrays:
        raise VideoWriteError("no frames to write")
    size = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != size:
            raise VideoWriteError(f"frame {i} is {a.shape[1]}x{a.shape[0]}, frame 0 is {size[1]}x{size[0]} (width x height)")
    return arrays


def write_mp4(path: str | Path, frames, fps: float = DEFAULT_FPS) -> Path:
    """Write RGB frames as an MP4 (OpenCV ``VideoWriter``, fourcc ``mp4v``) atomically.

    Raises ``VideoWriteError`` when there are no frames, the writer does not open (no codec /
    backend for the container) or the written file holds no frames."""
    import cv2

    path = Path(path)
    arrays = _frames_as_arrays(frames)
    h, w = arrays[0].shape[:2]
    with atomic_path(path) as tmp:  # the temporary name keeps the .mp4 suffix: OpenCV picks the container from it
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*MP4_FOURCC), float(fps), (w, h))
        if not writer.isOpened():
            raise VideoWriteError(f"OpenCV could not open an {MP4_FOURCC!r} MP4 writer for {path} "
                                  f"({w}x{h} at {fps} fps): this OpenCV build lacks the codec or a video backend")
        try:
            for a in arrays:
                writer.write(cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise VideoWriteError(f"OpenCV wrote no data for {path}")
        count, _ = mp4_info(tmp)
        if count <= 0:
            raise VideoWriteError(f"OpenCV wrote an MP4 without frames for {path} ({len(arrays)} given)")
    return path


def write_gif(path: str | Path, frames, fps: float = DEFAULT_FPS) -> Path:
    """Write RGB frames as a looping GIF (PIL) atomically, ``1000 / fps`` ms a frame.

    GIF stores durations in hundredths of a second, so 25 fps (40 ms) is exact; the authors'
    GIFs use 100 ms (``fps=10``). GIF holds at most 256 colours a frame (PIL quantises each).
    PIL merges a frame identical to the one before it into that frame (summing the durations),
    so a GIF of a still stretch plays the same but holds fewer frames than were given."""
    path = Path(path)
    images = [Image.fromarray(a) for a in _frames_as_arrays(frames)]
    duration = int(round(1000.0 / float(fps)))
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration,
                       loop=0, optimize=False, disposal=1)
    return path


def mp4_info(path: str | Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (height, width)) of a video file, counted by decoding every frame."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoWriteError(f"OpenCV cannot open the video {path}")
    count, size = 0, (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            size = frame.shape[:2]
    finally:
        cap.release()
    return count, (int(size[0]), int(size[1]))


def read_mp4(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video file as HxWx3 uint8 RGB."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoWriteError(f"OpenCV cannot open the video {path}")
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return frames


def gif_info(path: str | Path) -> tuple[int, tuple[int, int], list[int]]:
    """(frame count, (height, width), per-frame durations in ms) of a GIF."""
    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        durations = []
        for i in range(n):
            im.seek(i)
            durations.append(int(im.info.get("duration", 0)))
        return n, (im.height, im.width), durations


def _fit(frame, size: tuple[int, int]) -> np.ndarray:
    a = to_rgb_array(frame)
    h, w = size
    if a.shape[:2] != (h, w):
        a = np.asarray(resize(Image.fromarray(a), size), dtype=np.uint8)
    return a


def panel_frame(source, pose, truth, generated, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """One frame of the authors' layout: ``source | pose | ground truth | generated`` side by
    side, each panel resized (bicubic) to ``size`` (height, width) when it differs."""
    return np.concatenate([_fit(x, size) for x in (source, pose, truth, generated)], axis=1)


def panel_frames(source, poses: Sequence, truths: Sequence, *generated: Sequence,
                 size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """Frames of the authors' layout for a video: the one ``source`` frame in every frame, then
    pose t, ground truth t and generated t, one panel per sequence of ``generated`` (a second
    sequence sets two methods side by side); (h, (3 + n) w, 3) uint8 each (260x840 for PHOENIX
    with one)."""
    if not generated or len({len(poses), len(truths), *map(len, generated)}) != 1:
        raise ValueError(f"poses, ground truths and generated frames differ in number: "
                         f"{len(poses)}, {len(truths)}, {', '.join(str(len(g)) for g in generated) or 'none'}")
    src = _fit(source, size)
    return [np.concatenate([src, *(_fit(x, size) for x in frame)], axis=1)
            for frame in zip(poses, truths, *generated)]
