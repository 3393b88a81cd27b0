"""Evaluation metrics of C2: SSIM, SSIM-256, PSNR, LPIPS and FID at each evaluation size, pose
accuracy (``src.evaluate.pose_accuracy``) and the temporal figures of videos
(``src.evaluate.temporal``) where asked for.

The protocol, the peers' (PIDM, CFLD, PCDMs, the FPDM authors), is described once, in the README's
Faithfulness table: each metric's row names its function here (``ssim``, ``ssim_256``, ``psnr``,
``build_lpips``, ``InceptionPool``, ``frechet_distance``, ``load_eval_image``). Every block of
metrics.json records it (``protocol``, from the ``*_PROTOCOL`` constants below).

C2's generated images are found through ``<generated>/manifest.json`` (written by C1) or, without
one, by their file names (``src.evaluate.handoff``); ``check_generated`` checks them all before
``score_generated`` computes anything.

Nothing is downloaded: a missing weight file ends in a one-line ``WeightsNotFoundError``
(``src.util.weights.require_checkpoint``) that names the file, where to put it and its download URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data import read_pair_file
from ..util.devices import resolve_device, without_tf32
from ..util.fileio import atomic_path
from .handoff import (EvalEntry, ManifestError, consistency_used, generated_entries, image_sources, parse_size,
                      resize_note, scored_sizes, resolve_temporal, size_name, video_problems)
from ..util.images import load_rgb, resize
from . import pose_accuracy as pa
from .pose_mask import (MASK_LPIPS_PROTOCOL, MASK_PROTOCOL, MASK_SSIM_PROTOCOL, masked_lpips_input, masked_ssim,
                        pose_mask)
from . import temporal as tm
from ..util.errors import first_line
from ..util.weights import WeightsNotFoundError, require_checkpoint

FID_BACKBONES = ("torchvision", "pytorch-fid")
FID_REFERENCES = ("train", "test")
FEATURE_DIM = 2048
FVD_MODES = ("auto", "on")
ALWAYS_ASKED = ("lpips", "fid")   # no setting turns them off: a null one is a failed request

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE
TV_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
TV_INCEPTION_URL = "https://download.pytorch.org/models/" + TV_INCEPTION_FILE

SSIM_WINDOW = 51
SSIM_PROTOCOL = "skimage structural_similarity, RGB in [0,1], win_size=51, channel_axis=2, data_range=1"
SSIM_256_PROTOCOL = ("skimage structural_similarity, RGB 0-255 as float64, gaussian_weights=True, sigma=1.5, "
                     "use_sample_covariance=False, channel_axis=2, "
                     "data_range=generated.max()-generated.min() (of the generated image)")
PSNR_PROTOCOL = "skimage peak_signal_noise_ratio, RGB in [0,1], data_range=1"
VIDEOS_PROTOCOL = ("a video is the pairs sharing one source image, named after its targets' folder below img "
                   "(<split>/<video>), frames ordered by the number ending the target's file name, read at the "
                   "evaluation size (bicubic)")
FID_BACKBONE_PROTOCOL = {
    "torchvision": "the peers' InceptionV3 wrapper (PIDM, CFLD, PCDMs, FPDM authors): torchvision ImageNet "
                   "Inception-v3 (inception_v3_google-0cc3c7bd), transform_input=False, blocks Conv2d_1a_3x3, "
                   "Conv2d_2a_3x3, Conv2d_2b_3x3, MaxPool2d(3, 2), Conv2d_3b_1x1, Conv2d_4a_3x3, MaxPool2d(3, 2), "
                   "Mixed_5b..Mixed_7c, AdaptiveAvgPool2d(1) -> 2048-d; input [0,1] resized by "
                   "F.interpolate(size=(299, 299), mode='bilinear', align_corners=False), then per channel "
                   "x * (std/0.5) + (mean-0.5)/0.5 with ImageNet mean (0.485, 0.456, 0.406), "
                   "std (0.229, 0.224, 0.225); no ImageNet normalisation before",
    "pytorch-fid": "pytorch-fid TF-ported FID Inception (pt_inception-2015-12-05), bilinear resize to 299, "
                   "inputs in [-1,1], 2048-d pool features",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


# ---------------------------------------------------------------------------------------------
# images and per-pair metrics


def load_eval_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array (H, W, 3) at the evaluation size, resized (``src.util.images.resize``) if needed."""
    try:
        im = load_rgb(path)
    except Exception as e:  # noqa: BLE001 - any decoding failure names the file
        raise RuntimeError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    h, w = size
    if im.size != (w, h):
        im = resize(im, size)
    return np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy in the loaders)


def load_eval_video(paths, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of image files at the evaluation size (``load_eval_image``)."""
    return np.stack([load_eval_image(p, size) for p in paths])


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """SSIM of two uint8 RGB images: [0, 1] floats, win_size 51, channel axis 2, data range 1."""
    return float(structural_similarity(generated / 255.0, truth / 255.0, win_size=SSIM_WINDOW, channel_axis=2,
                                       data_range=1.0))


def ssim_256(generated: np.ndarray, truth: np.ndarray) -> float:
    """"SSIM-256" of two uint8 RGB images: Gaussian weights (sigma 1.5), no sample covariance, on
    0-255 float64 values, data range = max - min of the generated image (the FPDM authors' and
    CFLD's code). A constant generated image has data range 0: SSIM-256 ~0 (NaN when the ground
    truth is constant too), as in their code."""
    g, t = generated.astype(np.float64), truth.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(structural_similarity(g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           channel_axis=2, data_range=float(g.max() - g.min())))


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """PSNR on [0, 1] floats, data range 1 (inf for identical images)."""
    if np.array_equal(generated, truth):
        return float("inf")
    return float(peak_signal_noise_ratio(truth / 255.0, generated / 255.0, data_range=1.0))


def pair_scores(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[SSIM, SSIM-256, PSNR] of one pair."""
    return np.array([ssim(generated, truth), ssim_256(generated, truth), psnr(generated, truth)])


class ImageFiles(Dataset):
    """uint8 (H, W, 3) tensors of image files at the evaluation size."""

    def __init__(self, paths, size: tuple[int, int]):
        self.paths, self.size = [Path(p) for p in paths], tuple(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(load_eval_image(self.paths[i], self.size))


class PairFiles(Dataset):
    """(generated, truth, [SSIM, SSIM-256, PSNR, Mask-SSIM], mask) per pair; the scores are
    computed in the loader's workers, so ``num_workers`` also parallelises SSIM. With
    ``mask_points`` (each pair's target keypoints in pixels of the evaluation size) the mask is
    the target pose's (``src.evaluate.pose_mask``), else all true and Mask-SSIM NaN."""

    def __init__(self, generated, truth, size: tuple[int, int], mask_points=None):
        if len(generated) != len(truth):
            raise ValueError(f"{len(generated)} generated images but {len(truth)} ground-truth images")
        self.generated, self.truth = [Path(p) for p in generated], [Path(p) for p in truth]
        self.size = tuple(size)
        self.mask_points = mask_points

    def __len__(self):
        return len(self.generated)

    def __getitem__(self, i):
        g = load_eval_image(self.generated[i], self.size)
        t = load_eval_image(self.truth[i], self.size)
        if self.mask_points is None:
            mask, masked = np.ones(self.size, dtype=bool), np.nan
        else:
            mask = pose_mask(self.mask_points[i], self.size)
            masked = masked_ssim(g, t, mask)
        scores = np.append(pair_scores(g, t), masked)
        return torch.from_numpy(g), torch.from_numpy(t), torch.from_numpy(scores), torch.from_numpy(mask)


def _loader(dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


# ---------------------------------------------------------------------------------------------
# LPIPS


def build_lpips(random_backbone: bool = False, device: str | torch.device = "cpu"):
    """``lpips.LPIPS(net="alex")``; the AlexNet backbone must be in the hub checkpoint folder
    unless ``random_backbone`` (a seeded random backbone that builds offline, for tests)."""
    import lpips

    if not random_backbone:
        require_checkpoint(ALEXNET_FILE, "LPIPS AlexNet backbone (torchvision)", ALEXNET_URL)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", category=UserWarning)  # lpips calls tv.alexnet(pretrained=...)
        torch.manual_seed(0)  # the random backbone is the same in every run
        model = lpips.LPIPS(net="alex", pnet_rand=random_backbone, verbose=False)
    return model.eval().requires_grad_(False).to(resolve_device(device))


def to_lpips_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def lpips_distance(model, generated: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair LPIPS (B,) of uint8 (B, H, W, 3) batches; with bool (B, H, W) ``masks``, Mask-LPIPS
    (``src.evaluate.pose_mask``)."""
    device = next(model.parameters()).device
    if masks is None:
        a, b = to_lpips_input(generated.to(device)), to_lpips_input(truth.to(device))
    else:
        masks = masks.to(device)
        a, b = masked_lpips_input(generated.to(device), masks), masked_lpips_input(truth.to(device), masks)
    return model(a, b).flatten().float().cpu()


# ---------------------------------------------------------------------------------------------
# Inception features and FID


@torch.no_grad()
def inception_blocks(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 2048) pool features of an Inception-v3 (torchvision's or pytorch-fid's FID Inception),
    run block by block (``INCEPTION_BLOCKS``: the stem convolutions with torchvision's two 3x3/2
    max-pools, Mixed_5b ... Mixed_7c, adaptive average pool), never through ``net.forward``: no
    ``transform_input``, no dropout, no classifier. ``x`` is the network's input as is."""
    for name in INCEPTION_BLOCKS:
        x = getattr(net, name)(x)
    return x.flatten(1)


class InceptionPool(torch.nn.Module):
    """uint8 (B, H, W, 3) images -> float32 (B, 2048) Inception-v3 pool features; the
    "torchvision" backbone computes exactly the peers' features (``FID_BACKBONE_PROTOCOL``)."""

    def __init__(self, backbone: str = "torchvision"):
        super().__init__()
        if backbone not in FID_BACKBONES:
            raise ValueError(f"fid_backbone {backbone!r}: expected one of {', '.join(FID_BACKBONES)}")
        self.backbone = backbone
        if backbone == "pytorch-fid":
            from pytorch_fid.inception import InceptionV3

            from .fid_weights import ensure_pytorch_fid_weights  # imported here: it imports this module

            self.weights = ensure_pytorch_fid_weights()  # present after this, so pytorch-fid never downloads
            self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]], resize_input=True,
                                   normalize_input=True)
        else:
            import torchvision

            path = require_checkpoint(TV_INCEPTION_FILE, "FID Inception-v3 (torchvision)", TV_INCEPTION_URL)
            # transform_input=False: only the blocks are run (inception_blocks), never net.forward
            net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                                  init_weights=False)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.weights = path
            self.net = net
            # the peers' input scaling of [0, 1] images, x * (std / 0.5) + (mean - 0.5) / 0.5, with
            # the constants computed in double precision as theirs are (Python floats)
            self.register_buffer("scale", torch.tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1))
            self.register_buffer("shift", torch.tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # always eval: batch norm statistics and no dropout

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).contiguous().float() / 255.0  # NCHW, as the peers' ToTensor batches
        if self.backbone == "pytorch-fid":
            return self.net(x)[0].flatten(1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return inception_blocks(self.net, x * self.scale + self.shift)


def build_inception(backbone: str = "torchvision", device: str | torch.device = "cpu") -> InceptionPool:
    return InceptionPool(backbone).to(resolve_device(device))


@torch.no_grad()
def inception_features(paths, size: tuple[int, int], model: InceptionPool, batch_size: int = 32,
                       num_workers: int = 0, progress: bool = True, desc: str = "features") -> np.ndarray:
    """(N, 2048) float64 pool features of image files at the evaluation size."""
    device = next(model.parameters()).device
    feats = []
    loader = _loader(ImageFiles(paths, size), batch_size, num_workers, device)
    with without_tf32():
        for batch in tqdm(loader, desc=desc, disable=not progress):
            feats.append(model(batch.to(device)).double().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _rounding_level(eigenvalues: np.ndarray) -> float:
    """The level below which an eigenvalue of a symmetric positive semidefinite matrix is rounding
    noise: numpy's ``matrix_rank`` tolerance (largest eigenvalue x size x machine epsilon)."""
    return max(float(eigenvalues[-1]), 0.0) * len(eigenvalues) * np.finfo(np.float64).eps


def _full_rank(sigma: np.ndarray) -> bool:
    w = np.linalg.eigvalsh(sigma)
    return bool(w[0] > _rounding_level(w))


def _psd_eigh(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eigh`` of a symmetric positive semidefinite matrix, eigenvalues at rounding level set to
    zero: rooted, a rounding error e would count as sqrt(e), far more than e."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    w[w <= _rounding_level(w)] = 0.0
    return w, v


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr sqrt(S1 S2) of two symmetric positive semidefinite matrices, exactly: the sum of the square
    roots of the eigenvalues of the symmetric S1^(1/2) S2 S1^(1/2), which S1 S2 shares, computed with
    ``eigh`` in an orthonormal basis of the span of S1 + S2 (it holds the ranges of both), so the
    matrices are as small as the images behind them."""
    w, v = _psd_eigh(s1 + s2)
    q = v[:, w > 0]
    if not q.shape[1]:
        return 0.0
    wa, va = _psd_eigh(q.T @ s1 @ q)
    root_a = (va * np.sqrt(wa)) @ va.T
    lam, _ = _psd_eigh(root_a @ (q.T @ s2 @ q) @ root_a)
    return float(np.sqrt(lam).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, features1=None) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)): the peers' FID, on sets of any size.

    When both covariances have full rank (more images than feature dimensions, as in the papers'
    tables), this is pytorch-fid's computation step for step: scipy's ``sqrtm`` of the product,
    retried with ``eps`` added to both diagonals when the root is not finite, an imaginary part
    dropped unless it is large (ValueError), so large-set figures are pytorch-fid's to the digit.

    A covariance of n images has rank n - 1 at most. With fewer images than dimensions (small
    test sets, FVD's few clips) S1 S2 is singular, and ``sqrtm``'s Schur recurrence divides by the
    roots of its cluster of zero eigenvalues: rounding then shapes the root, and the imaginary
    parts it leaves can be large. An earlier shortcut, ``sqrtm`` in the span of the two
    covariances, made that worse: on 5 generated images against their 5 targets it stopped with
    "imaginary component 1.55" where pytorch-fid's full-dimension ``sqrtm`` gives a number. FID
    needs only the trace of the root, so on rank-deficient sets the trace is computed exactly
    instead (``trace_sqrt_product``): the number pytorch-fid's full-dimension ``sqrtm`` gives, up
    to its rounding (1e-7 to 1e-6 of the covariance traces), real and finite for every set, and
    fast, since the eigenproblems are no larger than the images behind them.

    ``features1``, the (N, D) features behind (mu1, sigma1), makes a small first set cheaper still:
    with N - 1 < D, S1 = A^T A for A = centred features / sqrt(N - 1), and S1 S2 = A^T (A S2) has
    the nonzero eigenvalues of the N x N matrix A S2 A^T, so the root's trace comes from that
    matrix alone, without the D x D eigenproblems (seconds each at D = 2048)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    if features1 is not None and len(features1) - 1 < mu1.size:
        f1 = np.asarray(features1, np.float64)
        a = (f1 - f1.mean(axis=0)) / np.sqrt(len(f1) - 1)
        lam, _ = _psd_eigh(a @ s2 @ a.T)
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())
    if not (_full_rank(s1) and _full_rank(s2)):
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(s1, s2))

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the covariance root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _file_identity(path) -> tuple[str, int, int]:
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def stats_cache_key(paths, size: tuple[int, int], backbone: str, weights=None) -> str:
    """Hash of the sorted file list (absolute path, byte size, mtime), evaluation size, backbone,
    its protocol and its weights file (statistics of an earlier feature definition, or of other
    weights such as a test's random ones, are never reused)."""
    items = [_file_identity(p) for p in paths]
    blob = json.dumps({"version": 3, "backbone": backbone, "protocol": FID_BACKBONE_PROTOCOL.get(backbone),
                       "weights": _file_identity(weights) if weights else None,
                       "size": list(size), "files": sorted(items)})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference_statistics(paths, size: tuple[int, int], model: InceptionPool, cache_dir: str | Path | None = None,
                         batch_size: int = 32, num_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, info) of a reference image set; cached as ``fid_<backbone>_<HxW>_<key>.npz``
    in ``cache_dir`` (None: no cache). info: count, cache file, whether it was a cache hit."""
    info = {"count": len(paths), "cache": None, "cache_hit": False}
    cache = None
    if cache_dir:
        key = stats_cache_key(paths, size, model.backbone, model.weights)
        cache = Path(os.path.expanduser(str(cache_dir))) / f"fid_{model.backbone}_{size_name(size)}_{key}.npz"
        info["cache"] = str(cache)
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    info["cache_hit"] = True
                    return z["mu"], z["sigma"], info
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: recompute
    feats = inception_features(paths, size, model, batch_size, num_workers, progress,
                               desc=f"{size_name(size)} reference")
    mu, sigma = feature_statistics(feats)
    if cache is not None:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mu=mu, sigma=sigma, count=len(feats))
            os.chmod(tmp, 0o644)
    return mu, sigma, info


# ---------------------------------------------------------------------------------------------
# C2 inputs


def reference_files(fid_reference: str, entries: list[EvalEntry], dataset_root: str | Path,
                    train_pairs: str = "train_pairs_data.json") -> tuple[list[Path], list[str]]:
    """(reference image paths, problems): "train" = every source and target image of the training
    pairs (each once), "test" = the manifest's ground-truth target images (each once)."""
    root = Path(dataset_root)
    if fid_reference == "test":
        return list(dict.fromkeys(e.truth for e in entries)), []
    if fid_reference != "train":
        return [], [f"fid_reference={fid_reference!r}: expected one of {', '.join(FID_REFERENCES)}"]
    pairs, problems = read_pair_file(root / train_pairs)
    files = list(dict.fromkeys(root / p[k] for p in pairs for k in ("source_image", "target_image")))
    missing = [p for p in files if not p.is_file()]
    problems += [f"{p}: FID reference image (from {train_pairs}) missing" for p in missing[:20]]
    if len(missing) > 20:
        problems.append(f"... and {len(missing) - 20} more missing reference images")
    return files, problems


def check_generated(generated_dir: str | Path, dataset_root: str | Path, eval_sizes, *,
                    fid_reference: str = "train", train_pairs: str = "train_pairs_data.json",
                    fid_backbone: str = "torchvision", check_images: bool = True, expected_count: int = -1,
                    workers: int = 8, naming: str = "auto",
                    test_pairs: str = "test_pairs_data.json",
                    pose_accuracy="off", temporal: str = "off",
                    fvd: str = "auto") -> tuple[list[EvalEntry], list[Path]]:
    """Find C2's inputs and check everything before any metric: option values, the generated
    image of every pair and its ground truth (``src.evaluate.handoff.generated_entries``: manifest or
    file names per ``naming``, duplicated pairs or generated files, the expected count, image
    readability when ``check_images``), the FID reference files and, when ``pose_accuracy`` is on
    ("on", or "auto" with the estimator installed), the target keypoint files; "on" without the
    estimator is a problem too. With ``temporal`` "on" the pairs must form videos
    (``src.evaluate.handoff.resolve_temporal``), and whenever videos are scored each must be whole
    (``src.evaluate.handoff.video_problems``); ``fvd`` "on" needs videos too. ``eval_sizes``: a list of
    (height, width) or HxW (or one HxW, or comma-separated), or None / "auto" for the sizes every
    generated image comes in (``src.evaluate.handoff.held_sizes``); the entries hold the sizes chosen
    (``src.evaluate.handoff.scored_sizes``). Returns (entries, reference paths) or raises ManifestError
    listing every problem. Images are resized bicubically at evaluation time."""
    problems = []
    sizes = None
    if isinstance(eval_sizes, str):
        eval_sizes = None if eval_sizes == "auto" else [t.strip() for t in eval_sizes.split(",")]
    if eval_sizes is not None:
        sizes = []
        for s in eval_sizes:
            try:
                sizes.append(size_name(parse_size(s)))
            except ValueError as e:
                problems.append(f"eval_sizes: {e}")
        if not sizes and not problems:
            problems.append("eval_sizes is empty")
    if fvd not in FVD_MODES:
        problems.append(f"fvd={fvd!r}: expected one of {', '.join(FVD_MODES)}")
    if fid_backbone not in FID_BACKBONES:
        problems.append(f"fid_backbone={fid_backbone!r}: expected one of {', '.join(FID_BACKBONES)}")
    entries, found = generated_entries(generated_dir, dataset_root, sizes, naming=naming, test_pairs=test_pairs,
                                       expected_count=expected_count, check_images=check_images, workers=workers)
    problems += found
    small = [s for s in scored_sizes(entries) if min(parse_size(s)) < SSIM_WINDOW]
    if small:
        problems.append(f"eval size {', '.join(small)} is smaller than SSIM's {SSIM_WINDOW}-pixel window: "
                        f"ask for larger sizes with eval_sizes (e.g. [(256, 176)])")

    reference: list[Path] = []
    if fid_reference in FID_REFERENCES:
        reference, ref_problems = reference_files(fid_reference, entries, dataset_root, train_pairs)
        problems += ref_problems
    else:
        problems.append(f"fid_reference={fid_reference!r}: expected one of {', '.join(FID_REFERENCES)}")
    try:
        pose_on, _ = pa.resolve_pose_accuracy(pose_accuracy)
    except (ImportError, ValueError) as e:
        pose_on = False
        problems.append(first_line(e))
    if pose_on:
        problems += pa.check_pose_files(entries, dataset_root)
    videos, reason, found = resolve_temporal(temporal, entries)
    problems += found + (video_problems(videos, dataset_root) if videos else [])
    if fvd == "on" and not videos and not found:
        problems.append(f"fvd='on' needs videos, and none are scored: {reason}")
    if problems:
        raise ManifestError(problems)
    return entries, reference


# ---------------------------------------------------------------------------------------------
# evaluation


def _finite_or_none(x):
    return float(x) if x is not None and np.isfinite(x) else None


def small_set_warning(generated: int, reference: int, feature_dim: int) -> str | None:
    """Why an FID of sets smaller than the feature dimension is not comparable with the papers'
    tables (None when both sets are large enough): its covariances are rank-deficient and the
    estimate is biased upwards, more so the smaller the sets, while the tables score whole test sets."""
    if min(generated, reference) >= feature_dim:
        return None
    return (f"FID of {generated} generated and {reference} reference images, fewer than its {feature_dim} feature "
            f"dimensions: a small-set figure, biased upwards, not comparable with the papers' tables (whole test sets)")


def unmet_requests(results: dict, fvd: str = "auto") -> dict:
    """{metric: reason} of the metrics asked for that are null in some block of ``results``:
    LPIPS and FID always (``ALWAYS_ASKED``), FVD when ``fvd`` is "on". Pose accuracy, temporal
    figures and FVD at "auto" may be null with their reason."""
    unmet: dict = {}
    for r in results.values():
        reasons = r["protocol"]["null_reasons"]
        for key in ALWAYS_ASKED:
            if r[key] is None:
                unmet.setdefault(key, reasons.get(key, "not computed"))
        if fvd == "on" and (r["temporal"] or {}).get("fvd") is None:
            t = r["temporal"]
            unmet.setdefault("fvd", t["protocol"]["null_reasons"].get("fvd", "not computed") if t
                             else reasons.get("temporal", "no temporal figures"))
    return unmet


def score_generated(entries: list[EvalEntry], eval_sizes, reference: list[Path], *, fid_reference: str = "train",
                    fid_backbone: str = "torchvision", lpips_random: bool = False, batch_size: int = 32,
                    num_workers: int = 0, device: str = "auto", cache_dir: str | Path | None = None,
                    progress: bool = True, pose_accuracy="off", dataset_root: str | Path | None = None,
                    temporal: str = "off", i3d: str | Path | None = None, mask_points=None) -> dict:
    """C2's metrics of the generated images (``check_generated``'s entries and FID reference) per
    evaluation size: ``{"256x176": {"ssim", "ssim_256", "psnr", "lpips", "fid", "count",
    "temporal", "protocol"}, ...}``. A metric whose weights are missing is None, with the reason in
    ``protocol["null_reasons"]``; the others are still computed (``unmet_requests`` tells which
    nulls fail what was asked). The protocol also says how the images of each size were made
    (``generated_images``, ``resized_from``: ``src.evaluate.handoff.image_sources``), how many images FID
    saw (``fid_images``), ``fid_warning`` (``small_set_warning``, else None) and C1's video
    consistency options the manifest records (``consistency``, None when not recorded, and
    ``consistency_description``: ``src.evaluate.handoff.consistency_used``).

    ``temporal`` ("auto", "on", "off"; ``src.evaluate.handoff.resolve_temporal``): when the pairs form
    videos, ``temporal`` is ``src.evaluate.temporal.video_metrics`` of them at that size (FVD with
    the I3D network of the folder ``i3d``), read one video at a time by ``num_workers`` workers;
    otherwise None with the reason under ``null_reasons["temporal"]``. ``pose_accuracy`` ("auto",
    "on", "off") adds the PCK figures of ``src.evaluate.pose_accuracy`` (``PCK_KEYS``,
    ``pck_points``, ``pck_no_person(_truth)``; the target keypoints read from ``dataset_root``);
    off, or "auto" without the estimator, they are None with the reason in ``null_reasons`` under
    each of ``PCK_KEYS``.

    ``mask_points(entry, size)``, the target's keypoints in pixels of an evaluation size, adds
    ``mask_ssim`` and ``mask_lpips``: SSIM and LPIPS inside the target pose's mask, the peers'
    Market-1501 figures (``src.evaluate.pose_mask``)."""
    dev = resolve_device(device)
    null_reasons: dict = {}
    videos, temporal_reason, found = resolve_temporal(temporal, entries)
    if found:
        raise ManifestError(found)
    if not videos:
        null_reasons["temporal"] = temporal_reason
    pose_on, pose_reason = pa.resolve_pose_accuracy(pose_accuracy)
    if pose_on and dataset_root is None:
        raise ValueError("pose_accuracy needs dataset_root (the target keypoints <dataset_root>/pose/<rel>.txt)")
    estimator = None
    if pose_on:
        from ..pose.estimator import PoseEstimator

        estimator = PoseEstimator()
    else:
        null_reasons.update({k: pose_reason for k in pa.PCK_KEYS})
    lpips_model = inception = None
    try:
        lpips_model = build_lpips(lpips_random, dev)
    except (WeightsNotFoundError, OSError) as e:
        null_reasons["lpips"] = first_line(e)
    try:
        inception = build_inception(fid_backbone, dev)
    except (WeightsNotFoundError, OSError, RuntimeError) as e:
        null_reasons["fid"] = first_line(e)

    sources = image_sources(entries, [size_name(parse_size(s)) for s in eval_sizes], max(2, num_workers))
    consistency, consistency_words = consistency_used(entries)
    results = {}
    for s in eval_sizes:
        size = parse_size(s)
        name = size_name(size)
        reasons = dict(null_reasons)
        scores, dists, mask_dists, feats = [], [], [], []
        points = None if mask_points is None else [mask_points(e, size) for e in entries]
        loader = _loader(PairFiles([e.generated[name] for e in entries], [e.truth for e in entries], size, points),
                         batch_size, num_workers, dev)
        with without_tf32():
            for gen, truth, sc, masks in tqdm(loader, desc=f"{name} pairs", disable=not progress):
                scores.append(sc.numpy())
                if lpips_model is not None:
                    dists.append(lpips_distance(lpips_model, gen, truth).numpy())
                    if points is not None:
                        mask_dists.append(lpips_distance(lpips_model, gen, truth, masks).numpy())
                if inception is not None:
                    feats.append(inception(gen.to(dev)).double().cpu().numpy())
        scores = np.concatenate(scores)
        psnr_mean = float(np.mean(scores[:, 2]))
        if not np.isfinite(psnr_mean):
            reasons["psnr"] = f"{int(np.isinf(scores[:, 2]).sum())} generated image(s) identical to their ground truth (infinite PSNR)"
        if not np.isfinite(scores[:, 1]).all():
            reasons["ssim_256"] = (f"{int((~np.isfinite(scores[:, 1])).sum())} non-finite SSIM-256 value(s): constant "
                                   "generated and ground-truth images (data range generated max - min = 0)")
        fid = ref_info = fid_images = fid_warning = None
        if inception is not None:
            try:
                feats = np.concatenate(feats)
                mu_g, sigma_g = feature_statistics(feats)
                mu_r, sigma_r, ref_info = reference_statistics(reference, size, inception, cache_dir,
                                                               batch_size, num_workers, progress)
                fid_images = {"generated": len(entries), "reference": ref_info["count"], "feature_dim": len(mu_g)}
                fid_warning = small_set_warning(**fid_images)
                fid = frechet_distance(mu_g, sigma_g, mu_r, sigma_r, features1=feats)
            except (ValueError, RuntimeError) as e:  # too few images, unreadable reference image
                reasons["fid"] = first_line(e)
        lpips_mean = float(np.mean(np.concatenate(dists))) if dists else None
        for key, value in (("lpips", lpips_mean), ("fid", fid)):
            if value is not None and not np.isfinite(value):
                reasons[key] = f"non-finite value ({value})"
        temporal_block = None
        if videos:
            temporal_block = tm.video_metrics(
                [(v.name, [e.generated[name] for e in v.entries], [e.truth for e in v.entries]) for v in videos],
                i3d, load=partial(load_eval_video, size=size), device=dev, num_workers=num_workers,
                progress=progress, desc=f"{name} videos")
            temporal_block["protocol"]["videos"] = VIDEOS_PROTOCOL
        pose = pa.empty_result()
        if estimator is not None:
            pose = pa.pose_accuracy(entries, size, dataset_root, estimator, progress, desc=f"{name} pose accuracy")
            for k in pa.PCK_KEYS:
                if pose[k] is None:
                    reasons[k] = "no target keypoint inside the image"
        protocol = {
            "fid_reference": fid_reference,
            "fid_reference_description": ("training images (every source and target of the train pairs)"
                                          if fid_reference == "train" else "test ground-truth target images"),
            "fid_reference_count": len(reference),
            "fid_backbone": fid_backbone,
            "fid_backbone_description": FID_BACKBONE_PROTOCOL.get(fid_backbone),
            "fid_stats_cache": ref_info["cache"] if ref_info else None,
            "lpips": "alex (random backbone)" if lpips_random else "alex",
            "resize": "bicubic, Pillow < 13 pass order (horizontal, then vertical)",
            "size": name,
            "ssim": SSIM_PROTOCOL,
            "ssim_256": SSIM_256_PROTOCOL,
            "psnr": PSNR_PROTOCOL,
            "pose_accuracy": pa.PCK_PROTOCOL if estimator is not None else None,
            "generated_images": sources[name]["generated_images"],
            "resized_from": sources[name]["resized_from"],
            "fid_images": fid_images,
            "fid_warning": fid_warning,
            "consistency": consistency,
            "consistency_description": consistency_words,
            "null_reasons": reasons,
        }
        masked = {}
        if points is not None:
            masked = {"mask_ssim": _finite_or_none(np.mean(scores[:, 3])),
                      "mask_lpips": _finite_or_none(np.mean(np.concatenate(mask_dists))) if mask_dists else None}
            protocol.update(mask=MASK_PROTOCOL, mask_ssim=MASK_SSIM_PROTOCOL,
                            mask_lpips=MASK_LPIPS_PROTOCOL if lpips_model is not None else None)
            if lpips_model is None:
                reasons["mask_lpips"] = reasons["lpips"]
        results[name] = {
            "ssim": _finite_or_none(np.mean(scores[:, 0])),
            "ssim_256": _finite_or_none(np.mean(scores[:, 1])),
            "psnr": _finite_or_none(psnr_mean),
            "lpips": _finite_or_none(lpips_mean),
            "fid": _finite_or_none(fid),
            **masked,
            **pose,
            "count": len(entries),
            "temporal": temporal_block,
            "protocol": protocol,
        }
    if estimator is not None:
        estimator.close()
    return results


def markdown_table(results: dict, method: str = "FPDM") -> str:
    """README table: | method | size | SSIM | SSIM-256 | PSNR | LPIPS | FID |, one row per size, then
    | Mask-SSIM | Mask-LPIPS | when a block has the masked figures (Market-1501), | PCK@0.1 (GT) | (generated, ground-truth ceiling) when a block has pose accuracy, and
    | warping error (GT) | TCD | FVD | (the warping error with its ground-truth floor, the temporal
    consistency difference, FVD) when a block has temporal figures. A size whose images were
    resized from another size's says so in its cell ("512x352 (upscaled by C2 from 256x176)"), and
    images made with C1's video consistency options say which in the method's cell
    ("FPDM (shared noise)"); frame-by-frame or unrecorded ones leave it as given."""
    def fmt(v, digits):
        return "n/a" if v is None else f"{v:.{digits}f}"

    with_masks = any("mask_ssim" in r for r in results.values())
    with_pck = any(r.get("pck_0.1") is not None for r in results.values())
    with_temporal = any(r.get("temporal") for r in results.values())
    head, rule = "| method | size | SSIM | SSIM-256 | PSNR | LPIPS | FID |", "|---|---|---|---|---|---|---|"
    if with_masks:
        head, rule = head + " Mask-SSIM | Mask-LPIPS |", rule + "---|---|"
    if with_pck:
        head, rule = head + " PCK@0.1 (GT) |", rule + "---|"
    if with_temporal:
        head, rule = head + " warping error (GT) | TCD | FVD |", rule + "---|---|---|"
    lines = [head, rule]
    for name, r in results.items():
        note = resize_note(r["protocol"].get("resized_from") or [], r["count"], name)
        size = f"{name} ({note})" if note else name
        options = r["protocol"].get("consistency_description")
        label = f"{method} ({options})" if options not in (None, "frame by frame", "not recorded") else method
        row = (f"| {label} | {size} | {fmt(r['ssim'], 4)} | {fmt(r['ssim_256'], 4)} | {fmt(r['psnr'], 3)} "
               f"| {fmt(r['lpips'], 4)} | {fmt(r['fid'], 2)} |")
        if with_masks:
            row += f" {fmt(r.get('mask_ssim'), 4)} | {fmt(r.get('mask_lpips'), 4)} |"
        if with_pck:
            row += f" {fmt(r.get('pck_0.1'), 3)} ({fmt(r.get('pck_0.1_truth'), 3)}) |"
        if with_temporal:
            t = r.get("temporal") or {}
            row += (f" {fmt(t.get('warping_error'), 5)} ({fmt(t.get('warping_error_real'), 5)}) "
                    f"| {fmt(t.get('temporal_consistency_difference'), 4)} | {fmt(t.get('fvd'), 2)} |")
        lines.append(row)
    return "\n".join(lines)
