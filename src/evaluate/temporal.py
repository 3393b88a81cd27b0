"""Temporal figures of generated videos against their ground-truth videos (PHOENIX-2014T), as
sign-language video generation work reports them beside the per-frame SSIM/PSNR/LPIPS/FID.

A video is a sequence of RGB frames (PIL images or HxWx3 uint8 arrays); a generated video and its
ground truth have the same number of frames and the same size. Pixel values are taken in [0, 1].

- **Warping error** (flow-based, after Lai et al. 2018, "Learning Blind Video Temporal
  Consistency"). The optical flow is computed on the *ground-truth* video only, so a generated
  video is judged by how well it follows the real motion:

  * flow: OpenCV Farneback (``cv2.calcOpticalFlowFarneback``) on the grayscale frames
    (``cv2.COLOR_RGB2GRAY``, uint8) with ``FARNEBACK_PARAMS``: ``pyr_scale=0.5`` (each pyramid
    level half the size of the one below), ``levels=3`` (pyramid levels besides the frame),
    ``winsize=15`` (averaging window, px), ``iterations=3`` (per level), ``poly_n=5`` (pixel
    neighbourhood of the polynomial expansion), ``poly_sigma=1.2`` (its Gaussian, as OpenCV
    advises for ``poly_n=5``), ``flags=0`` (no initial flow, box window);
  * backward flow ``b`` from real frame t+1 to real frame t, so that ``r_t(x + b(x)) ~ r_{t+1}(x)``;
    generated frame t is warped into frame t+1 as ``w_t(x) = g_t(x + b(x))`` (``cv2.remap``,
    bilinear);
  * valid pixels: ``x + b(x)`` inside the frame and, with ``occlusion=True`` (default), forward-
    backward consistent: with ``f`` the forward flow from t to t+1 and ``f'(x) = f(x + b(x))``,
    ``|b + f'|^2 <= 0.01 (|b|^2 + |f'|^2) + 0.5`` (the criterion of Sundaram et al. 2010, as in
    Ruder et al. 2016 and Lai et al. 2018); pixels failing it are occluded or disoccluded;
  * error of a pair: **mean squared difference** ``(w_t - g_{t+1})^2`` over the valid pixels and the
    three channels, values in [0, 1] (Lai et al.'s squared L2); a video's figure is the mean over
    its consecutive pairs.

  The same figure on the ground truth itself (``warping_error_real``: ``r_t`` warped onto
  ``r_{t+1}``) is the floor set by the flow's own errors, lighting and motion blur; it is
  reported beside it. A copy of the ground truth scores exactly the floor.

- **Temporal consistency difference**: ``mean_t | mean|g_{t+1} - g_t| - mean|r_{t+1} - r_t| |``,
  each inner mean over pixels and channels in [0, 1] units: 0 when the generated video changes as
  much as the real one from frame to frame, larger when it flickers or freezes.

- **FVD**: Fréchet distance between I3D feature statistics of generated and real clips.

  * Weights (one documented layout): the TorchScript I3D network that StyleGAN-V distributes
    and ``common_metrics_on_video_quality`` reuses, a file named ``i3d_torchscript.pt`` (``I3D_URL``)
    in a local folder (default ``weights/i3d``; a path to the file itself also works). Nothing is
    downloaded: a missing or unloadable file is a one-line ``WeightsNotFoundError`` and FVD is
    null with that reason, the other figures are still computed.
  * Call: ``model(x, rescale=False, resize=False, return_features=True)`` with ``x`` a float
    tensor (N, 3, T, 224, 224) in [-1, 1]; the output (N, 400 for the real network: the logits
    before the softmax) flattened per clip is the feature.
  * Clips: consecutive non-overlapping ``clip_length`` (16) frame clips of every video (a video of
    40 frames gives 2, the rest is dropped; shorter videos give none and are counted); each frame
    resized (bilinear, ``align_corners=False``) so its shorter side is 224, then centre-cropped
    to 224x224 (210x260 -> 224x278 -> 224x224).
  * Distance: ``src.evaluate.metrics.frechet_distance`` of (mean, covariance) of the two feature sets
    (``src.evaluate.metrics.feature_statistics``); at least 2 clips a set. FVD on few clips is biased
    high and only comparable between runs with the same number of clips.

``video_metrics`` computes all of them over a set of videos, one video at a time: a video's frames
are read (by a ``load`` function: C2 passes one that reads frame files at the evaluation size),
scored, their I3D clip features added to the running feature set (``ClipFeatures``) and dropped
before the next video is read, so memory holds a few videos, never the set (PHOENIX's test split is
642 videos, 64,627 frames). With ``num_workers`` the videos are read and their flow figures
computed in DataLoader workers (the flow figures take ~25 ms a frame on one CPU core); I3D runs in the main
process. The set's warping errors and temporal consistency difference are means over videos
(each video weighted alike), each video's figure being the mean over its consecutive frame pairs.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..util.devices import without_tf32
from ..util.videos import to_rgb_array
from ..util.errors import first_line
from ..util.weights import WeightsNotFoundError

FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
OCCLUSION_ALPHA = 0.01  # |b + f'|^2 <= ALPHA (|b|^2 + |f'|^2) + BETA
OCCLUSION_BETA = 0.5

I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
DEFAULT_I3D_DIR = Path("weights") / "i3d"
I3D_SIZE = 224
I3D_KWARGS = dict(rescale=False, resize=False, return_features=True)
CLIP_LENGTH = 16
FIGURES = ("warping_error", "warping_error_real", "temporal_consistency_difference")  # means over videos

WARPING_PROTOCOL = (
    "flow of the ground-truth video: OpenCV Farneback on grayscale uint8 frames "
    f"({', '.join(f'{k}={v}' for k, v in FARNEBACK_PARAMS.items())}); backward flow t+1 -> t warps frame t "
    "onto t+1 (cv2.remap, bilinear); valid pixels: source inside the frame and forward-backward consistent "
    f"(|b + f'|^2 <= {OCCLUSION_ALPHA} (|b|^2 + |f'|^2) + {OCCLUSION_BETA}); error: mean squared difference "
    "over valid pixels and channels, [0, 1] pixel values, mean over consecutive pairs; warping_error_real: "
    "the same on the ground truth (the floor)")
TCD_PROTOCOL = ("mean over t of | mean|g_{t+1} - g_t| - mean|r_{t+1} - r_t| |, "
                "means over pixels and channels, [0, 1] pixel values")
MEANS_PROTOCOL = "means over videos, each video's figure the mean over its consecutive frame pairs"
FVD_PROTOCOL = (f"TorchScript I3D ({I3D_FILE}, StyleGAN-V's) called with {I3D_KWARGS}; non-overlapping "
                f"{CLIP_LENGTH}-frame clips, frames resized (bilinear) to shorter side {I3D_SIZE} and centre-"
                f"cropped to {I3D_SIZE}x{I3D_SIZE}, values in [-1, 1]; Frechet distance of the feature "
                "mean and covariance (src.evaluate.metrics.frechet_distance)")


# ---------------------------------------------------------------------------------------------
# frames


def as_video(frames) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB array of a sequence of frames (or such an array)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.dtype == np.uint8 and frames.shape[-1] == 3:
        return frames
    arrays = [to_rgb_array(f) for f in frames]
    if not arrays:
        return np.zeros((0, 0, 0, 3), np.uint8)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"the frames of a video differ in size: {sorted(shapes)}")
    return np.stack(arrays)


def _pair(generated, real) -> tuple[np.ndarray, np.ndarray]:
    g, r = as_video(generated), as_video(real)
    if g.shape != r.shape:
        raise ValueError(f"generated video {g.shape} and ground truth {r.shape} differ (frames, height, width, 3)")
    return g, r


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _unit(frame: np.ndarray) -> np.ndarray:
    """One uint8 frame as float32 in [0, 1]: frames are converted one at a time, so a long video
    costs its uint8 size, not four times it."""
    return frame.astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# optical flow and warping


def optical_flow(frame_from: np.ndarray, frame_to: np.ndarray) -> np.ndarray:
    """Farneback flow (H, W, 2) (dx, dy) from one uint8 RGB frame to another:
    ``frame_from(x) ~ frame_to(x + flow(x))``."""
    import cv2

    return cv2.calcOpticalFlowFarneback(_gray(frame_from), _gray(frame_to), None, **FARNEBACK_PARAMS)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(x) = image(x + flow(x))`` (bilinear, border replicated); float32 or uint8 image."""
    import cv2

    map_x, map_y = _sample_grid(flow)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def valid_mask(backward: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """Pixels of frame t+1 whose backward flow lands inside frame t and, given the forward flow
    t -> t+1, pass the forward-backward consistency check (not occluded)."""
    h, w = backward.shape[:2]
    map_x, map_y = _sample_grid(backward)
    mask = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    if forward is not None:
        fwd = warp(forward.astype(np.float32), backward)  # f'(x) = f(x + b(x))
        gap = ((backward + fwd) ** 2).sum(axis=2)
        scale = (backward ** 2).sum(axis=2) + (fwd ** 2).sum(axis=2)
        mask &= gap <= OCCLUSION_ALPHA * scale + OCCLUSION_BETA
    return mask


def ground_truth_flow(real_t: np.ndarray, real_next: np.ndarray, occlusion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(backward flow t+1 -> t, valid mask of frame t+1) of two consecutive real frames."""
    backward = optical_flow(real_next, real_t)
    forward = optical_flow(real_t, real_next) if occlusion else None
    return backward, valid_mask(backward, forward)


def pair_warping_error(frame_t: np.ndarray, frame_next: np.ndarray, backward: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference between uint8 frame t warped by the flow into t+1 and frame t+1,
    over valid pixels and channels, [0, 1] units (NaN where no pixel is valid)."""
    if not mask.any():
        return float("nan")
    sq = ((warp(_unit(frame_t), backward) - _unit(frame_next)) ** 2).mean(axis=2)
    return float(sq[mask].mean())


def _mean_or_none(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def warping_error(generated, real, occlusion: bool = True) -> dict:
    """``{"warping_error", "warping_error_real", "pairs", "valid_fraction"}`` of one video: the
    generated video's warping error under the ground truth's flow and the same figure on the ground
    truth (the floor). Each pair's flow is computed once, used for both, and dropped. None when the
    video has fewer than 2 frames (or no valid pixel)."""
    g, r = _pair(generated, real)
    errors, floor, valid = [], [], []
    for t in range(len(r) - 1):
        backward, mask = ground_truth_flow(r[t], r[t + 1], occlusion)
        errors.append(pair_warping_error(g[t], g[t + 1], backward, mask))
        floor.append(pair_warping_error(r[t], r[t + 1], backward, mask))
        valid.append(mask.mean())
    return {
        "warping_error": _mean_or_none(errors),
        "warping_error_real": _mean_or_none(floor),
        "pairs": len(errors),
        "valid_fraction": _mean_or_none(valid),
    }


def temporal_consistency_difference(generated, real) -> float | None:
    """``mean_t | mean|g_{t+1} - g_t| - mean|r_{t+1} - r_t| |`` in [0, 1] units; None under 2 frames."""
    g, r = _pair(generated, real)
    if len(g) < 2:
        return None
    gaps = [abs(float(np.abs(_unit(g[t + 1]) - _unit(g[t])).mean()) - float(np.abs(_unit(r[t + 1]) - _unit(r[t])).mean()))
            for t in range(len(g) - 1)]
    return float(np.mean(gaps))


def video_figures(generated, real, occlusion: bool = True) -> dict:
    """The per-video figures: ``{"frames", "warping_error", "warping_error_real", "valid_fraction",
    "temporal_consistency_difference"}`` (None under 2 frames)."""
    g, r = _pair(generated, real)
    we = warping_error(g, r, occlusion)
    return {
        "frames": int(len(r)),
        "warping_error": we["warping_error"],
        "warping_error_real": we["warping_error_real"],
        "valid_fraction": we["valid_fraction"],
        "temporal_consistency_difference": temporal_consistency_difference(g, r),
    }


# ---------------------------------------------------------------------------------------------
# FVD


def i3d_file(location: str | Path | None = None) -> Path:
    """The I3D TorchScript file of a folder (``<folder>/i3d_torchscript.pt``) or a file path."""
    path = Path(location).expanduser() if location is not None else DEFAULT_I3D_DIR
    return path if path.suffix == ".pt" or path.is_file() else path / I3D_FILE


def i3d_not_found(path: Path, cause: str | None = None) -> WeightsNotFoundError:
    folder = path.parent
    text = (f"FVD I3D network (TorchScript): weights file {I3D_FILE} not found at {path}; download {I3D_URL} on a "
            f"machine with internet access and put it at {folder / I3D_FILE} (or pass --i3d=FOLDER holding it)")
    if cause:
        text = (f"FVD I3D network (TorchScript): {path} could not be loaded ({cause}); download {I3D_URL} again "
                f"and put it at {folder / I3D_FILE}")
    return WeightsNotFoundError(text)


def load_i3d(location: str | Path | None = None, device="cpu"):
    """The TorchScript I3D network from ``location`` (folder or file; default ``weights/i3d``), in
    eval mode on ``device``; a one-line ``WeightsNotFoundError`` when it is missing or unloadable."""
    path = i3d_file(location)
    if not path.is_file():
        raise i3d_not_found(path)
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as e:  # noqa: BLE001 - any load failure is a bad weights file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise i3d_not_found(path, f"{type(e).__name__}: {first[:200]}") from None
    return model.eval()


def video_clips(video, clip_length: int = CLIP_LENGTH) -> list[np.ndarray]:
    """Consecutive non-overlapping clips of ``clip_length`` frames ((L, H, W, 3) uint8 each)."""
    v = as_video(video)
    return [v[s:s + clip_length] for s in range(0, len(v) - clip_length + 1, clip_length)]


def preprocess_clips(clips: Sequence[np.ndarray], size: int = I3D_SIZE) -> torch.Tensor:
    """(N, 3, L, size, size) float tensor in [-1, 1]: each frame resized (bilinear, no
    antialias) to shorter side ``size`` (longer side rounded up) and centre-cropped."""
    x = torch.from_numpy(np.stack(clips)).float() / 255.0  # N, L, H, W, 3
    n, length, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(n * length, 3, h, w)
    scale = size / min(h, w)
    th, tw = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    top, left = (th - size) // 2, (tw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    x = x.reshape(n, length, 3, size, size).permute(0, 2, 1, 3, 4)
    return (x * 2.0 - 1.0).contiguous()


class ClipFeatures:
    """The I3D features of the clips of videos added one at a time (``add``), run through the
    network ``batch_size`` clips at a time; only the features are kept, never the frames."""

    def __init__(self, model, clip_length: int = CLIP_LENGTH, batch_size: int = 8, device="cpu"):
        self.model, self.clip_length, self.batch_size = model, clip_length, max(1, batch_size)
        self.device = torch.device(device)
        self.feats: list[np.ndarray] = []
        self.batch: list[np.ndarray] = []
        self.too_short = 0                     # videos shorter than one clip

    def add(self, video) -> None:
        clips = video_clips(video, self.clip_length)
        self.too_short += not clips
        for c in clips:
            self.batch.append(c)
            if len(self.batch) >= self.batch_size:
                self._flush()

    @torch.no_grad()
    def _flush(self) -> None:
        if not self.batch:
            return
        with without_tf32():  # full fp32 on GPUs, as the FID features: runs compare across machines
            out = self.model(preprocess_clips(self.batch).to(self.device), **I3D_KWARGS)
        self.feats.append(out.reshape(len(self.batch), -1).double().cpu().numpy())
        self.batch = []

    def features(self) -> np.ndarray:
        """(N clips, D) float64 features of every clip added."""
        self._flush()
        return np.concatenate(self.feats) if self.feats else np.zeros((0, 0))


def i3d_features(model, videos, clip_length: int = CLIP_LENGTH, batch_size: int = 8,
                 device="cpu") -> tuple[np.ndarray, int]:
    """(features (N clips, D) float64, number of videos too short for one clip)."""
    acc = ClipFeatures(model, clip_length, batch_size, device)
    for video in videos:
        acc.add(video)
    return acc.features(), acc.too_short


def fvd_from_features(generated: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance between the (mean, covariance) of two (N, D) feature sets."""
    from .metrics import feature_statistics, frechet_distance

    if len(generated) < 2 or len(real) < 2:
        raise ValueError(f"FVD needs at least 2 clips per set, got {len(generated)} generated and {len(real)} real")
    mu_g, sigma_g = feature_statistics(generated)
    mu_r, sigma_r = feature_statistics(real)
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r, features1=generated)


# ---------------------------------------------------------------------------------------------
# all figures, one video at a time


class VideoFigures(Dataset):
    """Item i: (name, ``video_figures``, generated frames, real frames) of video i, its frames read
    by ``load`` when the item is made (in a DataLoader worker, so reading and the flow figures run
    in parallel); the frames come back (as uint8 tensors) only when ``keep_frames``."""

    def __init__(self, videos: Sequence, load: Callable = as_video, occlusion: bool = True,
                 keep_frames: bool = False):
        self.videos, self.load, self.occlusion, self.keep_frames = videos, load, occlusion, keep_frames

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        name, generated, real = self.videos[i]
        g, r = _pair(self.load(generated), self.load(real))
        figures = video_figures(g, r, self.occlusion)
        if not self.keep_frames:
            return name, figures, None, None
        return name, figures, torch.from_numpy(g), torch.from_numpy(r)


def _as_is(item):
    return item


def _one_opencv_thread(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # the workers already share the cores out, one video each


def video_metrics(videos: Sequence, i3d=None, *, load: Callable = as_video, occlusion: bool = True,
                  clip_length: int = CLIP_LENGTH, batch_size: int = 8, device="cpu", num_workers: int = 0,
                  progress: bool = False, desc: str = "videos") -> dict:
    """Temporal figures of generated videos against their ground truths, one video at a time.

    ``videos``: a sequence of ``(name, generated, real)``, where ``generated`` and ``real`` are
    whatever ``load`` turns into a (T, H, W, 3) uint8 array: frames (the default, ``as_video``) or,
    e.g., lists of frame files; the two of a video must have the same number of frames and size.
    ``i3d``: a loaded TorchScript module, a folder holding ``i3d_torchscript.pt`` or the file itself;
    None looks in ``weights/i3d``. ``num_workers``: DataLoader workers (spawned: ``load`` and the
    items of ``videos`` must pickle) that read the videos and compute their flow figures, each
    holding at most two videos.

    Returns ``{"warping_error", "warping_error_real", "temporal_consistency_difference"`` (means over
    videos), ``"fvd", "count"`` (videos), ``"frames", "videos": [{"name", "frames", "warping_error",
    "warping_error_real", "valid_fraction", "temporal_consistency_difference"}, ...], "protocol"}``;
    a figure that cannot be computed is None, with the reason in ``protocol["null_reasons"]``."""
    null_reasons: dict = {}
    dev = torch.device(device)
    fvd_info = {"clip_length": clip_length, "generated_clips": 0, "real_clips": 0, "videos_too_short": 0,
                "feature_dim": None}
    generated_clips = real_clips = None
    try:
        model = i3d if (i3d is not None and not isinstance(i3d, (str, Path))) else load_i3d(i3d, dev)
        generated_clips = ClipFeatures(model.to(dev), clip_length, batch_size, dev)
        real_clips = ClipFeatures(model, clip_length, batch_size, dev)
    except (WeightsNotFoundError, RuntimeError, OSError) as e:
        null_reasons["fvd"] = first_line(e)

    dataset = VideoFigures(videos, load, occlusion, keep_frames=generated_clips is not None)
    # spawned workers: a forked one inherits OpenCV's thread pool without its threads and can hang
    # in the first OpenCV call that touches the pool
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_as_is,
                        worker_init_fn=_one_opencv_thread if num_workers else None,
                        multiprocessing_context="spawn" if num_workers else None)
    per_video = []
    for name, figures, g, r in tqdm(loader, desc=desc, total=len(dataset), unit="video", disable=not progress):
        per_video.append({"name": name, **figures})
        if generated_clips is not None:
            try:
                generated_clips.add(g.numpy())
                real_clips.add(r.numpy())
            except RuntimeError as e:  # the network refuses the clips: FVD null, the rest goes on
                null_reasons["fvd"] = first_line(e)
                generated_clips = real_clips = None

    means = {}
    for key in FIGURES:
        means[key] = _mean_or_none([v[key] for v in per_video if v[key] is not None])
        if means[key] is None:
            null_reasons[key] = "no video with at least 2 frames"

    fvd = None
    if generated_clips is not None:
        try:
            f_gen, f_real = generated_clips.features(), real_clips.features()
            fvd_info.update(generated_clips=int(len(f_gen)), real_clips=int(len(f_real)),
                            videos_too_short=int(generated_clips.too_short),
                            feature_dim=int(f_gen.shape[1]) if f_gen.size else None)
            fvd = fvd_from_features(f_gen, f_real)
            if not np.isfinite(fvd):
                null_reasons["fvd"], fvd = "non-finite Frechet distance", None
        except (ValueError, RuntimeError) as e:
            null_reasons["fvd"], fvd = first_line(e), None

    return {
        **means,
        "fvd": fvd,
        "count": len(per_video),
        "frames": int(sum(v["frames"] for v in per_video)),
        "videos": per_video,
        "protocol": {
            "means": MEANS_PROTOCOL,
            "warping_error": WARPING_PROTOCOL,
            "occlusion_mask": occlusion,
            "farneback": dict(FARNEBACK_PARAMS),
            "temporal_consistency_difference": TCD_PROTOCOL,
            "fvd": FVD_PROTOCOL,
            "fvd_weights": str(i3d_file(i3d)) if (i3d is None or isinstance(i3d, (str, Path))) else "module given",
            "fvd_clips": fvd_info,
            "null_reasons": null_reasons,
        },
    }
