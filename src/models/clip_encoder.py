"""CLIP image encoders behind one small interface, with two backends.

``encoder(images)`` takes images in [-1, 1] at any size, brings them to the encoder's own
resolution CLIP-style (bicubic, antialiased resize of the shortest side, central crop), applies
the encoder's mean/std normalisation and returns the projected embedding (B, embed_dim), not
normalised. ``encoder.tokens(images)`` returns every output token of the last layer (class token
first), ``encoder.patch_tokens(images)`` the patch tokens only.

Backends
- ``"transformers"``: ``CLIPVisionModelWithProjection`` (hub id such as
  ``openai/clip-vit-large-patch14`` or a local folder).
- ``"open_clip"``: the ``.visual`` tower of an OpenCLIP model (``ViT-L-14`` with a pretrained
  tag such as ``openai``, or a local checkpoint file).

Every encoder carries ``encoder.config``, a JSON-able dict from which ``build_encoder`` rebuilds
the same architecture with random weights and without any download; ``tiny_encoder_config``
gives a very small one for tests and demos. ``load_encoder`` loads real weights and raises
``WeightsNotFoundError`` with a clear message when they are not available.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..util.weights import WeightsNotFoundError, looks_like_path, read_normalisation, weights_not_found

BACKENDS = ("transformers", "open_clip")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_HUB_ID = "openai/clip-vit-large-patch14"


def clip_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shortest side to ``size`` (bicubic, antialiased) and crop the centre square."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    images = F.interpolate(images, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return images[..., top:top + size, left:left + size]


class ImageEncoder(nn.Module):
    """Common part: preprocessing and the interface. Subclasses implement ``_embed`` and
    ``_tokens`` on normalised pixels at ``image_size``."""

    backend: str = ""

    def __init__(self, config: dict):
        super().__init__()
        self.config = copy.deepcopy(config)
        mean = torch.tensor(config.get("image_mean", OPENAI_CLIP_MEAN), dtype=torch.float32)
        std = torch.tensor(config.get("image_std", OPENAI_CLIP_STD), dtype=torch.float32)
        # Constants, not weights: rebuilt from the config, so kept out of the state dict.
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    # -- sizes, filled in by subclasses
    image_size: int
    embed_dim: int
    width: int

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> normalised pixels at the encoder's resolution."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        dtype = self._dtype()
        x = clip_resize(images.float(), self.image_size)
        x = ((x + 1) / 2).clamp(0, 1)
        x = (x - self.mean.float()) / self.std.float()
        return x.to(dtype)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projected embedding (B, embed_dim), not normalised."""
        return self.embed_pixels(self.preprocess(images))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected embedding of already preprocessed pixels (see ``preprocess``)."""
        return self._embed(pixels)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """All output tokens of the last layer (B, 1 + num_patches, width), class token first."""
        return self._tokens(self.preprocess(images))

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the last layer (B, num_patches, width)."""
        return self.tokens(images)[:, 1:]

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        raise NotImplementedError

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# transformers backend


def _hf_config_dict(config) -> dict:
    d = config.to_diff_dict()
    d.pop("transformers_version", None)
    d.pop("_name_or_path", None)
    d.pop("architectures", None)
    return d


class HFCLIPEncoder(ImageEncoder):
    """``transformers.CLIPVisionModelWithProjection``; config key ``clip_config`` holds the
    ``CLIPVisionConfig`` as a dict."""

    backend = "transformers"

    def __init__(self, config: dict, model=None):
        super().__init__(config)
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if model is None:
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config["clip_config"]))
        self.model = model
        c = model.config
        self.image_size = int(c.image_size)
        self.embed_dim = int(c.projection_dim)
        self.width = int(c.hidden_size)

    def _embed(self, pixels):
        return self.model(pixel_values=pixels).image_embeds

    def _tokens(self, pixels):
        return self.model.vision_model(pixel_values=pixels).last_hidden_state

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()


def load_hf_encoder(name: str) -> HFCLIPEncoder:
    from transformers import CLIPVisionModelWithProjection

    what = "CLIP image encoder (transformers)"
    if looks_like_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise weights_not_found(what, name, "clip_encoder", hub_id=DEFAULT_HUB_ID)
    from transformers.utils import logging as transformers_logging

    name = os.path.expanduser(name)
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report lists every unused text-tower tensor
    try:
        model, info = CLIPVisionModelWithProjection.from_pretrained(name, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:  # missing repo/folder/files, hub offline, wrong shapes
        raise weights_not_found(what, name, "clip_encoder", hub_id=DEFAULT_HUB_ID if looks_like_path(name) else None,
                                reason=str(e), default_hub_id=DEFAULT_HUB_ID) from None
    finally:
        transformers_logging.set_verbosity(level)
    if info.get("missing_keys"):
        missing = info["missing_keys"]
        raise weights_not_found(what, name, "clip_encoder", reason=f"not a CLIP vision tower: {len(missing)} of "
                                                                   f"its tensors are missing, e.g. {missing[0]}")
    unused = info.get("unexpected_keys") or []
    if unused:
        parts = ", ".join(sorted({k.split(".")[0] for k in unused}))
        print(f"{name}: {len(unused)} tensors of the checkpoint are not used by the image encoder ({parts}: the text "
              "tower of a full CLIP model)", file=sys.stderr)
    config = {
        "backend": "transformers",
        "clip_config": _hf_config_dict(model.config),
        "source": name,
        **read_normalisation(name),
    }
    return HFCLIPEncoder(config, model=model)


# ---------------------------------------------------------------------------------------------
# OpenCLIP backend


class OpenCLIPEncoder(ImageEncoder):
    """The ``.visual`` tower of an OpenCLIP model; config keys ``model_name``, ``embed_dim``,
    ``vision_cfg`` (OpenCLIP's CLIPVisionCfg as a dict) and ``quick_gelu``."""

    backend = "open_clip"

    def __init__(self, config: dict, visual=None):
        super().__init__(config)
        if visual is None:
            from open_clip.model import _build_vision_tower

            vision_cfg = dict(config["vision_cfg"], output_tokens=True)
            visual = _build_vision_tower(config["embed_dim"], vision_cfg, quick_gelu=config.get("quick_gelu", False))
        visual.output_tokens = True
        self.visual = visual
        size = config["vision_cfg"].get("image_size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.embed_dim = int(config["embed_dim"])
        self.width = int(config["vision_cfg"]["width"])

    def _embed(self, pixels):
        pooled, _ = self.visual(pixels)
        return pooled

    def _tokens(self, pixels):
        # VisionTransformer._pool applies ln_post to every token, then splits class/patch tokens.
        v = self.visual
        x = v.transformer(v._embeds(pixels))
        if not getattr(v, "final_ln_after_pool", False):
            x = v.ln_post(x)
        return x

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)


def _open_clip_download(model_name: str, tag: str | None) -> tuple[str | None, str]:
    """(download command, local file to pass as --pretrained) for an OpenCLIP tag."""
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag or "openai") or {}
    hf = (tag_cfg.get("hf_hub") or "").strip("/")
    if not hf:
        return None, "PATH"
    local = f"weights/{hf.split('/')[-1]}"
    return f"hf download {hf} --local-dir {local}", f"{local}/open_clip_pytorch_model.bin"


def load_open_clip_encoder(model_name: str, pretrained: str | None) -> OpenCLIPEncoder:
    import open_clip

    what = f"CLIP image encoder (OpenCLIP {model_name})"
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"unknown OpenCLIP model {model_name!r}; known: {', '.join(open_clip.list_models())}")
    tag_cfg = (open_clip.get_pretrained_cfg(model_name, pretrained) or {}) if pretrained else {}
    is_file = bool(pretrained) and os.path.isfile(os.path.expanduser(pretrained))
    if pretrained and not tag_cfg and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        download, local = _open_clip_download(model_name, None)
        raise weights_not_found(what, pretrained, "open_clip", download=download, local=local,
                                reason=f"not a checkpoint file nor a known tag (tags: {', '.join(tags)})")
    quick_gelu = bool(model_cfg.get("quick_gelu", False) or tag_cfg.get("quick_gelu", False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.ERROR)  # open_clip logs the failure itself; ours says it once
            model = open_clip.create_model(
                model_name, pretrained=os.path.expanduser(pretrained) if pretrained else None,
                force_quick_gelu=quick_gelu, require_pretrained=bool(pretrained))
    except (RuntimeError, OSError) as e:  # tag download failed (offline), unreadable file
        download, local = _open_clip_download(model_name, pretrained if tag_cfg else None)
        raise weights_not_found(what, f"{model_name} pretrained={pretrained}", "open_clip",
                                download=download, local=local, reason=str(e)) from None
    finally:
        logging.disable(logging.NOTSET)
    mean = tag_cfg.get("mean") or OPENAI_CLIP_MEAN
    std = tag_cfg.get("std") or OPENAI_CLIP_STD
    config = {
        "backend": "open_clip",
        "model_name": model_name,
        "embed_dim": int(model_cfg["embed_dim"]),
        "vision_cfg": dict(model_cfg["vision_cfg"]),
        "quick_gelu": quick_gelu,
        "image_mean": [float(v) for v in mean],
        "image_std": [float(v) for v in std],
        "source": f"{model_name}:{pretrained}" if pretrained else model_name,
    }
    return OpenCLIPEncoder(config, visual=model.visual)


# ---------------------------------------------------------------------------------------------
# construction


def tiny_encoder_config(backend: str = "transformers", image_size: int = 64, patch_size: int = 16,
                        width: int = 32, layers: int = 2, heads: int = 2, embed_dim: int = 32) -> dict:
    """A very small CLIP vision tower (random weights) for tests and demos."""
    if backend == "transformers":
        from transformers import CLIPVisionConfig

        c = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                             num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                             projection_dim=embed_dim)
        return {"backend": backend, "clip_config": _hf_config_dict(c), "source": "tiny"}
    if backend == "open_clip":
        return {
            "backend": backend, "model_name": "tiny", "embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width,
                           "head_width": width // heads, "patch_size": patch_size},
            "quick_gelu": True, "source": "tiny",
        }
    raise ValueError(f"unknown encoder backend {backend!r}; choose one of {BACKENDS}")


def build_encoder(config: dict) -> ImageEncoder:
    """The architecture described by ``config``, random weights, no download."""
    backend = config.get("backend")
    if backend == "transformers":
        return HFCLIPEncoder(config)
    if backend == "open_clip":
        return OpenCLIPEncoder(config)
    raise ValueError(f"unknown encoder backend {backend!r}; choose one of {BACKENDS}")


def load_encoder(name: str = DEFAULT_HUB_ID, backend: str = "transformers", pretrained: str | None = None
                 ) -> ImageEncoder:
    """Real weights. transformers: ``name`` is a hub id or folder. open_clip: ``name`` is a model
    name (``ViT-L-14``) and ``pretrained`` a tag (``openai``) or a checkpoint file.
    ``name="tiny"`` gives the tiny random-weight encoder of either backend."""
    if name == "tiny":
        return build_encoder(tiny_encoder_config(backend))
    if backend == "transformers":
        return load_hf_encoder(name)
    if backend == "open_clip":
        return load_open_clip_encoder(name, pretrained)
    raise ValueError(f"unknown encoder backend {backend!r}; choose one of {BACKENDS}")


__all__ = [
    "BACKENDS", "DEFAULT_HUB_ID", "ImageEncoder", "HFCLIPEncoder", "OpenCLIPEncoder", "WeightsNotFoundError",
    "build_encoder", "clip_resize", "load_encoder", "tiny_encoder_config",
]
