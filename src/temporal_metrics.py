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
  * Distance: ``src.metrics.frechet_distance`` of (mean, covariance) of the two feature sets
    (``src.metrics.feature_statistics``); at least 2 clips a set. FVD on few clips is biased
    high and only comparable between runs with the same number of clips.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .videos import to_rgb_array
from .weights import WeightsNotFoundError

FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
OCCLUSION_ALPHA = 0.01  # |b + f'|^2 <= ALPHA (|b|^2 + |f'|^2) + BETA
OCCLUSION_BETA = 0.5

I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
DEFAULT_I3D_DIR = Path("weights") / "i3d"
I3D_SIZE = 224
I3D_KWARGS = dict(rescale=False, resize=False, return_features=True)
CLIP_LENGTH = 16

WARPING_PROTOCOL = (
    "flow of the ground-truth video: OpenCV Farneback on grayscale uint8 frames "
    f"({', '.join(f'{k}={v}' for k, v in FARNEBACK_PARAMS.items())}); backward flow t+1 -> t warps frame t "
    "onto t+1 (cv2.remap, bilinear); valid pixels: source inside the frame and forward-backward consistent "
    f"(|b + f'|^2 <= {OCCLUSION_ALPHA} (|b|^2 + |f'|^2) + {OCCLUSION_BETA}); error: mean squared difference "
    "over valid pixels and channels, [0, 1] pixel values, mean over consecutive pairs; warping_error_real: "
    "the same on the ground truth (the floor)")
TCD_PROTOCOL = ("mean over t of | mean|g_{t+1} - g_t| - mean|r_{t+1} - r_t| |, "
                "means over pixels and channels, [0, 1] pixel values")
FVD_PROTOCOL = (f"TorchScript I3D ({I3D_FILE}, StyleGAN-V's) called with {I3D_KWARGS}; non-overlapping "
                f"{CLIP_LENGTH}-frame clips, frames resized (bilinear) to shorter side {I3D_SIZE} and centre-"
                f"cropped to {I3D_SIZE}x{I3D_SIZE}, values in [-1, 1]; Frechet distance of the feature "
                "mean and covariance (src.metrics.frechet_distance)")


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


def ground_truth_flows(real, occlusion: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """(backward flow t+1 -> t, valid mask of frame t+1) for each consecutive pair of a real video."""
    r = as_video(real)
    out = []
    for t in range(len(r) - 1):
        backward = optical_flow(r[t + 1], r[t])
        forward = optical_flow(r[t], r[t + 1]) if occlusion else None
        out.append((backward, valid_mask(backward, forward)))
    return out


def warping_errors(video, flows: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per consecutive pair: mean squared difference between frame t warped by the flow into
    t+1 and frame t+1, over valid pixels and channels, [0, 1] units (NaN where no pixel is valid)."""
    v = as_video(video).astype(np.float32) / 255.0
    if len(flows) != max(len(v) - 1, 0):
        raise ValueError(f"{len(flows)} flows for a video of {len(v)} frames")
    errors = np.full(len(flows), np.nan)
    for t, (backward, mask) in enumerate(flows):
        if not mask.any():
            continue
        sq = ((warp(v[t], backward) - v[t + 1]) ** 2).mean(axis=2)
        errors[t] = float(sq[mask].mean())
    return errors


def _mean_or_none(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def warping_error(generated, real, occlusion: bool = True) -> dict:
    """``{"warping_error", "warping_error_real", "pairs"}`` of one video: the generated video's
    warping error under the ground truth's flow and the same figure on the ground truth (the
    floor). None when the video has fewer than 2 frames (or no valid pixel)."""
    g, r = _pair(generated, real)
    flows = ground_truth_flows(r, occlusion)
    return {
        "warping_error": _mean_or_none(warping_errors(g, flows)),
        "warping_error_real": _mean_or_none(warping_errors(r, flows)),
        "pairs": len(flows),
        "valid_fraction": _mean_or_none([m.mean() for _, m in flows]),
    }


def temporal_consistency_difference(generated, real) -> float | None:
    """``mean_t | mean|g_{t+1} - g_t| - mean|r_{t+1} - r_t| |`` in [0, 1] units; None under 2 frames."""
    g, r = _pair(generated, real)
    if len(g) < 2:
        return None
    g = g.astype(np.float32) / 255.0
    r = r.astype(np.float32) / 255.0
    dg = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2, 3))
    dr = np.abs(np.diff(r, axis=0)).mean(axis=(1, 2, 3))
    return float(np.abs(dg - dr).mean())


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
    import torch

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


def preprocess_clips(clips: Sequence[np.ndarray], size: int = I3D_SIZE):
    """(N, 3, L, size, size) float tensor in [-1, 1]: each frame resized (bilinear, no
    antialias) to shorter side ``size`` (longer side rounded up) and centre-cropped."""
    import math

    import torch
    import torch.nn.functional as F

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


def i3d_features(model, videos, clip_length: int = CLIP_LENGTH, batch_size: int = 8,
                 device="cpu") -> tuple[np.ndarray, int]:
    """(features (N clips, D) float64, number of videos too short for one clip)."""
    import torch

    feats, batch, short = [], [], 0

    def flush():
        if batch:
            with torch.no_grad():
                out = model(preprocess_clips(batch).to(device), **I3D_KWARGS)
            feats.append(out.reshape(len(batch), -1).double().cpu().numpy())
            batch.clear()

    for video in videos:
        clips = video_clips(video, clip_length)
        short += not clips
        for c in clips:
            batch.append(c)
            if len(batch) >= batch_size:
                flush()
    flush()
    return (np.concatenate(feats) if feats else np.zeros((0, 0))), short


def fvd_from_features(generated: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance between the (mean, covariance) of two (N, D) feature sets."""
    from .metrics import feature_statistics, frechet_distance

    if len(generated) < 2 or len(real) < 2:
        raise ValueError(f"FVD needs at least 2 clips per set, got {len(generated)} generated and {len(real)} real")
    mu_g, sigma_g = feature_statistics(generated)
    mu_r, sigma_r = feature_statistics(real)
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


# ---------------------------------------------------------------------------------------------
# all figures


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def video_metrics(generated_videos, real_videos, i3d=None, *, names: Sequence[str] | None = None,
                  occlusion: bool = True, clip_length: int = CLIP_LENGTH, batch_size: int = 8,
                  device: str = "cpu") -> dict:
    """Temporal figures of generated videos against their ground truths (same order, same sizes).

    ``i3d``: a loaded TorchScript module, a folder holding ``i3d_torchscript.pt`` or the file
    itself; None looks in ``weights/i3d``. Returns ``{"videos": [{"name", "frames",
    "warping_error", "warping_error_real", "valid_fraction", "temporal_consistency_difference"},
    ...], "mean": {...same figures averaged over videos..., "fvd"}, "fvd", "count", "protocol"}``;
    a figure that cannot be computed is None, with the reason in ``protocol["null_reasons"]``."""
    generated_videos, real_videos = list(generated_videos), list(real_videos)
    if len(generated_videos) != len(real_videos):
        raise ValueError(f"{len(generated_videos)} generated videos but {len(real_videos)} ground-truth videos")
    names = list(names) if names is not None else [str(i) for i in range(len(real_videos))]
    if len(names) != len(real_videos):
        raise ValueError(f"{len(names)} names for {len(real_videos)} videos")

    per_video = []
    for name, g, r in zip(names, generated_videos, real_videos):
        g, r = _pair(g, r)
        we = warping_error(g, r, occlusion)
        per_video.append({
            "name": name,
            "frames": int(len(r)),
            "warping_error": we["warping_error"],
            "warping_error_real": we["warping_error_real"],
            "valid_fraction": we["valid_fraction"],
            "temporal_consistency_difference": temporal_consistency_difference(g, r),
        })

    null_reasons: dict = {}
    mean = {}
    for key in ("warping_error", "warping_error_real", "temporal_consistency_difference"):
        mean[key] = _mean_or_none([v[key] for v in per_video if v[key] is not None])
        if mean[key] is None:
            null_reasons[key] = "no video with at least 2 frames"

    fvd = None
    fvd_info = {"clip_length": clip_length, "generated_clips": 0, "real_clips": 0, "videos_too_short": 0}
    try:
        import torch

        dev = torch.device(device)
        model = i3d if (i3d is not None and not isinstance(i3d, (str, Path))) else load_i3d(i3d, dev)
        model = model.to(dev)
        f_gen, short_g = i3d_features(model, generated_videos, clip_length, batch_size, dev)
        f_real, _ = i3d_features(model, real_videos, clip_length, batch_size, dev)
        fvd_info.update(generated_clips=int(len(f_gen)), real_clips=int(len(f_real)), videos_too_short=int(short_g),
                        feature_dim=int(f_gen.shape[1]) if f_gen.size else None)
        fvd = fvd_from_features(f_gen, f_real)
        if not np.isfinite(fvd):
            null_reasons["fvd"] = "non-finite Frechet distance"
            fvd = None
    except (WeightsNotFoundError, ValueError, RuntimeError, OSError) as e:
        null_reasons["fvd"] = _reason(e)
        fvd = None
    mean["fvd"] = fvd

    return {
        "videos": per_video,
        "mean": mean,
        "fvd": fvd,
        "count": len(per_video),
        "protocol": {
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
