"""Frozen source-appearance encoder of stage 2 (the source condition).

``encoder(images)`` takes images in [-1, 1] at any size, resizes them (bicubic, antialiased) to
the square resolution ``image_size`` (the pipeline's ``source_size``, 512 as the authors),
applies the encoder's own mean/std and returns **every** output token of the last layer,
``last_hidden_state`` (B, N, width): class token first, then the patch tokens; the position
embeddings are interpolated to the grid. The source is a square image (the dataset feeds it at
512x512), so the resize keeps the whole image, no crop.

Position grid (DINOv2 only): DINOv2-large learned a 37x37 grid (518 px) and sees a 36x36 one at
512 px, so its position embeddings are resampled (bicubic). ``position_grid="scale_factor"`` (the
default) resamples as transformers 4.40 did, which the released FPDM weights were trained with:
``scale_factor=((n + 0.1) / g, ...)`` for an n x n patch grid and a g x g learned one, with no
resampling when the grids already match. ``"size"`` keeps the installed transformers' own rule
(resample to the target size). The two give different embeddings (``bench/dinov2_position_grid.py``).

Backends, one interface
- ``"dinov2"``: transformers ``AutoModel`` of a DINOv2 checkpoint (default
  ``facebook/dinov2-large``, width 1024; 1 + 36x36 = 1297 tokens at 512 px with patch 14).
- ``"clip"``:   transformers ``CLIPVisionModel`` (e.g. ``openai/clip-vit-large-patch14``).

``SourceEncoder`` is a diffusers ModelMixin/ConfigMixin: its config holds the backend, the
transformers config of the network, the resolution and the normalisation, so a pipeline folder
rebuilds it without the hub. ``SourceEncoder.load(name)`` reads real weights (hub id or local
folder; a missing one raises ``WeightsNotFoundError`` with the download command);
``SourceEncoder.tiny()`` builds a very small random network for tests and the tiny preset.
The encoder is frozen: no gradients, and it stays in eval mode.

Saved folder: ``config.json`` (this class's config) and ``network/``, the network as transformers'
own ``save_pretrained`` writes it (``config.json``, ``model.safetensors``): the checkpoint layout
of the hub's ``facebook/dinov2-large``, which every transformers version reads
(``Dinov2Model.from_pretrained(".../source_encoder/network")`` works without this repository).
transformers 5 renamed DINOv2's attention weights inside the model (``attention.q_proj``, was
``attention.attention.query``) and converts both ways when loading and saving; a state dict
taken from the module directly would carry the installed version's names. Folders saved before
``network/`` existed (weights in ``diffusion_pytorch_model.safetensors`` under transformers
5.23's names) still load, with transformers 5 only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..util.weights import WeightsNotFoundError, looks_like_path, read_normalisation, weights_not_found

BACKENDS = ("dinov2", "clip")
DEFAULT_SOURCE_ENCODER = "facebook/dinov2-large"
DEFAULT_HUB_IDS = {"dinov2": DEFAULT_SOURCE_ENCODER, "clip": "openai/clip-vit-large-patch14"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_NORMALISATION = {"dinov2": (IMAGENET_MEAN, IMAGENET_STD), "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)}
_DROP_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype")
NETWORK_FOLDER = "network"  # the transformers network inside a saved SourceEncoder folder
POSITION_GRIDS = ("scale_factor", "size")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown source encoder backend {backend!r}; choose one of {BACKENDS}")


def _config_class(backend: str):
    from transformers import CLIPVisionConfig, Dinov2Config

    return {"dinov2": Dinov2Config, "clip": CLIPVisionConfig}[backend]


def _model_class(backend: str):
    from transformers import CLIPVisionModel, Dinov2Model

    return {"dinov2": Dinov2Model, "clip": CLIPVisionModel}[backend]


def _config_dict(hf_config) -> dict:
    d = hf_config.to_diff_dict()
    for k in _DROP_CONFIG_KEYS:
        d.pop(k, None)
    d["model_type"] = hf_config.model_type
    return d


def _check_position_grid(position_grid: str) -> None:
    if position_grid not in POSITION_GRIDS:
        raise ValueError(f"unknown position_grid {position_grid!r}; choose one of {POSITION_GRIDS}")


def scale_factor_position_grid(position_embeddings: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embeddings (1, 1 + g*g, dim) of a learned g x g grid (class token first) -> (1, 1 + h*w, dim)
    for an h x w patch grid, resampled with transformers 4.40's rule: bicubic by the scale factor
    ``(h + 0.1) / g, (w + 0.1) / g`` (align_corners=False, in float32).

    A scale factor is not the same resampling as a target size: with a scale factor torch maps
    output to input coordinates by 1 / scale_factor, not by g / h. The 0.1 keeps floor(g * scale)
    from landing one below h through rounding."""
    h, w = grid
    g = math.sqrt(position_embeddings.shape[1] - 1)
    dim = position_embeddings.shape[-1]
    class_pos = position_embeddings[:, :1]
    patch_pos = position_embeddings[:, 1:].reshape(1, int(g), int(g), dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic",
                              align_corners=False).to(position_embeddings.dtype)
    if patch_pos.shape[-2:] != (h, w):
        raise ValueError(f"position grid resampled to {tuple(patch_pos.shape[-2:])}, expected {(h, w)}")
    return torch.cat((class_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, dim)), dim=1)


def _scale_factor_interpolate_pos_encoding(module, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # Stands in for Dinov2Embeddings.interpolate_pos_encoding (same arguments): the grids are
    # compared as 4.40 did, since its resampling is not the identity on a matching grid.
    num_positions = module.position_embeddings.shape[1] - 1
    if embeddings.shape[1] - 1 == num_positions and height == width:
        return module.position_embeddings
    patch = module.config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    return scale_factor_position_grid(module.position_embeddings, (height // ph, width // pw))


@contextlib.contextmanager
def _no_transformers_bars():
    """transformers' per-file progress bars off for the block: one small file per save or load
    would add a bar line to every log."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def tiny_model_config(backend: str = "dinov2", width: int = 32, layers: int = 2, heads: int = 2,
                      patch_size: int = 8, image_size: int = 32) -> dict:
    """transformers config (as a dict) of a very small network of ``backend``."""
    _check_backend(backend)
    common = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  patch_size=patch_size, image_size=image_size)
    if backend == "clip":
        common.update(intermediate_size=4 * width, projection_dim=width)
    return _config_dict(_config_class(backend)(**common))


class SourceEncoder(ModelMixin, ConfigMixin):
    """Frozen image encoder -> all last-layer tokens (B, N, width).

    ``position_grid`` ("scale_factor" or "size", see the module docstring) chooses how DINOv2
    resamples its position embeddings to the input's patch grid; the clip backend ignores it
    (it keeps transformers' own interpolation)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, backend: str = "dinov2", model_config: dict | None = None, image_size: int = 512,
                 image_mean: list | tuple | None = None, image_std: list | tuple | None = None,
                 source: str = "random", position_grid: str = "scale_factor"):
        super().__init__()
        _check_backend(backend)
        _check_position_grid(position_grid)
        model_config = dict(model_config or tiny_model_config(backend))
        model_config.pop("model_type", None)
        self.model = _model_class(backend)(_config_class(backend)(**model_config))
        mean, std = DEFAULT_NORMALISATION[backend]
        mean = torch.tensor(image_mean if image_mean is not None else mean, dtype=torch.float32)
        std = torch.tensor(image_std if image_std is not None else std, dtype=torch.float32)
        # Constants rebuilt from the config, so kept out of the state dict.
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self._apply_position_grid()
        self.requires_grad_(False)
        self.eval()

    def _apply_position_grid(self) -> None:
        _check_position_grid(self.config.position_grid)
        if self.config.backend != "dinov2":
            return
        embeddings = self.model.embeddings
        # An instance attribute shadows the library's method; its forward stays the library's.
        if self.config.position_grid == "scale_factor":
            embeddings.interpolate_pos_encoding = functools.partial(_scale_factor_interpolate_pos_encoding, embeddings)
        else:
            embeddings.__dict__.pop("interpolate_pos_encoding", None)

    # -- construction

    @classmethod
    def tiny(cls, backend: str = "dinov2", image_size: int = 32, position_grid: str = "scale_factor",
             model_image_size: int | None = None, **kwargs) -> "SourceEncoder":
        """Tiny random-weight encoder (width 32, 2 layers, patch 8) for tests and demos. The network
        learns the grid of ``model_image_size`` (default ``image_size``: nothing to interpolate)."""
        model_config = tiny_model_config(backend, image_size=model_image_size or image_size, **kwargs)
        return cls(backend=backend, model_config=model_config, image_size=image_size, source="tiny",
                   position_grid=position_grid)

    @classmethod
    def load(cls, name: str = DEFAULT_SOURCE_ENCODER, backend: str | None = None, image_size: int = 512,
             position_grid: str = "scale_factor") -> "SourceEncoder":
        """Real weights from a hub id or local folder (``"tiny"``: the tiny random encoder).
        ``backend`` defaults to what the checkpoint's config says (dinov2 or clip)."""
        _check_position_grid(position_grid)
        if name == "tiny":
            return cls.tiny(backend or "dinov2", image_size=image_size, position_grid=position_grid)
        what = "source image encoder (DINOv2 / CLIP vision, transformers)"
        default = DEFAULT_HUB_IDS.get(backend or "dinov2", DEFAULT_SOURCE_ENCODER)
        path = os.path.expanduser(name)
        if looks_like_path(name) and not os.path.exists(path):
            raise weights_not_found(what, name, "source_encoder", hub_id=default)
        from transformers import AutoConfig

        try:
            hf_config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise weights_not_found(what, name, "source_encoder", hub_id=default if looks_like_path(name) else None,
                                    reason=str(e), default_hub_id=default) from None
        found = {"dinov2": "dinov2", "clip": "clip", "clip_vision_model": "clip"}.get(hf_config.model_type)
        if found is None:
            raise ValueError(f"{name}: model type {hf_config.model_type!r} is not a DINOv2 or CLIP checkpoint")
        backend = backend or found
        _check_backend(backend)
        if found != backend:
            raise ValueError(f"{name}: a {found} checkpoint, but backend={backend!r} was asked for")
        try:
            network = _model_class(backend).from_pretrained(path)
        except (OSError, ValueError) as e:
            raise weights_not_found(what, name, "source_encoder", hub_id=default if looks_like_path(name) else None,
                                    reason=str(e), default_hub_id=default) from None
        norm = read_normalisation(path)
        mean = norm.get("image_mean", DEFAULT_NORMALISATION[backend][0])
        std = norm.get("image_std", DEFAULT_NORMALISATION[backend][1])
        encoder = cls(backend=backend, model_config=_config_dict(network.config), image_size=image_size,
                      image_mean=list(mean), image_std=list(std), source=name, position_grid=position_grid)
        encoder.model.load_state_dict(network.state_dict())
        return encoder

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs) -> None:
        """``config.json`` and the network in transformers' checkpoint layout under ``network/``
        (see the module docstring); diffusers' saving options do not apply to it."""
        if not is_main_process:
            return
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_config(folder)
        with _no_transformers_bars():
            self.model.save_pretrained(folder / NETWORK_FOLDER)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """A folder ``save_pretrained`` wrote (or an older one, see the module docstring)."""
        folder = Path(os.path.expanduser(str(pretrained_model_name_or_path))) / (kwargs.get("subfolder") or "")
        if not (folder / NETWORK_FOLDER).is_dir():
            # Build the network for real (not on the meta device): it keeps non-persistent buffers.
            kwargs["low_cpu_mem_usage"] = False
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):  # the network is replaced by the saved one below
            encoder = cls.from_config(cls.load_config(folder))
        with _no_transformers_bars():
            network = _model_class(encoder.config.backend).from_pretrained(folder / NETWORK_FOLDER)
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        encoder.model = network.to(dtype) if dtype is not None else network
        encoder._apply_position_grid()
        encoder.requires_grad_(False)
        return encoder.eval()

    def train(self, mode: bool = True):
        """Frozen: always in eval mode."""
        return super().train(False)

    # -- encoding

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def num_tokens(self) -> int:
        """Tokens per image at ``image_size`` (class token + patches)."""
        return 1 + (self.config.image_size // self.model.config.patch_size) ** 2

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> normalised pixels at ``image_size`` x ``image_size``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        size = self.config.image_size
        x = images.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = ((x + 1) / 2).clamp(0, 1)
        x = (x - self.mean.float()) / self.std.float()
        return x.to(self.dtype)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """All last-layer tokens (B, N, width) of images in [-1, 1]."""
        kwargs = {}
        if self.config.backend == "clip" and self.config.image_size != self.model.config.image_size:
            kwargs["interpolate_pos_encoding"] = True  # DINOv2 interpolates by itself
        self._apply_position_grid()  # the config may have changed since construction (register_to_config)
        return self.model(pixel_values=self.preprocess(images), **kwargs).last_hidden_state


__all__ = [
    "BACKENDS", "DEFAULT_SOURCE_ENCODER", "NETWORK_FOLDER", "POSITION_GRIDS", "SourceEncoder", "WeightsNotFoundError",
    "scale_factor_position_grid", "tiny_model_config",
]
