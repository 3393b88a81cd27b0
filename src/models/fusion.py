"""Stage 1: the fusion embedding.

One shared CLIP image encoder E embeds the source image s, the rendered target pose p and the
target image t: the **raw** projected embeddings (``image_embeds``, not L2-normalised), because
the combiner's residual mixes them into f at their own scale, as the authors' model does.
A combiner after CLIP4Cir fuses (s, p) into f; only f is normalised:

    ps = drop(relu(Ls(s)))    pp = drop(relu(Lp(p)))    c = cat(pp, ps)
    h = drop(relu(Lc(c)))     lam = sigmoid(Linear(2P->H), ReLU, Dropout, Linear(H->1))(c)
    f = normalize(Lo(h) + lam * p + (1 - lam) * s)

B1 trains it with the loss in ``src.train.stage1``. ``FusionModel`` is a diffusers
ModelMixin/ConfigMixin: ``save_pretrained`` writes safetensors + config.json, and
``from_pretrained`` rebuilds the architecture from the saved encoder config (random weights, no
hub access) before loading the saved weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .clip_encoder import DEFAULT_HUB_ID, ImageEncoder, build_encoder, load_encoder, tiny_encoder_config


class Combiner(nn.Module):
    """CLIP4Cir combiner: (source embedding s, pose embedding p) -> unit-norm fusion f."""

    def __init__(self, embed_dim: int = 768, projection_dim: int = 768, hidden_dim: int = 768,
                 dropout: float = 0.5):
        super().__init__()
        self.source_projection = nn.Linear(embed_dim, projection_dim)   # Ls
        self.pose_projection = nn.Linear(embed_dim, projection_dim)     # Lp
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)  # Lc
        self.output_layer = nn.Linear(hidden_dim, embed_dim)            # Lo
        self.dropout_source = nn.Dropout(dropout)
        self.dropout_pose = nn.Dropout(dropout)
        self.dropout_combined = nn.Dropout(dropout)
        self.dynamic_scalar = nn.Sequential(
            nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1), nn.Sigmoid(),
        )

    def forward(self, source: torch.Tensor, pose: torch.Tensor, return_lambda: bool = False):
        dtype = self.output_layer.weight.dtype
        source, pose = source.to(dtype), pose.to(dtype)
        ps = self.dropout_source(F.relu(self.source_projection(source)))
        pp = self.dropout_pose(F.relu(self.pose_projection(pose)))
        c = torch.cat([pp, ps], dim=-1)
        h = self.dropout_combined(F.relu(self.combiner_layer(c)))
        lam = self.dynamic_scalar(c)
        f = F.normalize(self.output_layer(h) + lam * pose + (1 - lam) * source, dim=-1)
        return (f, lam.squeeze(-1)) if return_lambda else f


class FusionModel(ModelMixin, ConfigMixin):
    """Shared CLIP encoder + combiner.

    ``encoder_config`` is the encoder's own config dict (see ``clip_encoder``); it holds the
    backend and the architecture, so loading never needs the hub.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, encoder_config: dict | None = None, projection_dim: int = 768, hidden_dim: int = 768,
                 dropout: float = 0.5):
        super().__init__()
        encoder_config = encoder_config or tiny_encoder_config("transformers")
        self.encoder: ImageEncoder = build_encoder(encoder_config)
        self.combiner = Combiner(self.encoder.embed_dim, projection_dim, hidden_dim, dropout)

    # -- construction

    @classmethod
    def from_clip(cls, name: str = DEFAULT_HUB_ID, backend: str = "transformers", pretrained: str | None = None,
                  projection_dim: int = 768, hidden_dim: int = 768, dropout: float = 0.5) -> "FusionModel":
        """Real CLIP weights (hub id / folder for transformers; model name + tag or file for
        open_clip), combiner freshly initialised. Raises WeightsNotFoundError when absent."""
        encoder = load_encoder(name, backend=backend, pretrained=pretrained)
        model = cls(encoder_config=encoder.config, projection_dim=projection_dim, hidden_dim=hidden_dim,
                    dropout=dropout)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    @classmethod
    def tiny(cls, backend: str = "transformers", dropout: float = 0.5, projection_dim: int | None = None,
             hidden_dim: int | None = None, **encoder_kwargs) -> "FusionModel":
        """Tiny random-weight model for tests and demos (D = P = H = 32 by default)."""
        config = tiny_encoder_config(backend, **encoder_kwargs)
        d = config.get("embed_dim") or config["clip_config"]["projection_dim"]
        return cls(encoder_config=config, projection_dim=projection_dim or d, hidden_dim=hidden_dim or d,
                   dropout=dropout)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Build every module for real before loading (the encoder keeps non-persistent buffers).
        kwargs.setdefault("low_cpu_mem_usage", False)
        return super().from_pretrained(*args, **kwargs)

    # -- embeddings

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw projected CLIP embeddings (B, D) of images in [-1, 1] (see ``src.data.fusion_input``
        for the view each kind of image gets)."""
        return self.encoder(images).float()

    def encode_many(self, *image_sets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``encode`` of several image batches (sizes may differ) through E as one batch."""
        pixels = torch.cat([self.encoder.preprocess(x) for x in image_sets])
        emb = self.encoder.embed_pixels(pixels).float()
        return emb.split([x.shape[0] for x in image_sets])

    def fuse(self, source_images: torch.Tensor, pose_images: torch.Tensor) -> torch.Tensor:
        """Fusion embedding f (B, D), unit norm, of source images and rendered target poses."""
        s, p = self.encode_many(source_images, pose_images)
        return self.combiner(s, p)

    def forward(self, source: torch.Tensor, pose: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        """Embeddings of one batch: raw ``source``, ``pose`` and (if given) ``target`` (B, D), and
        the unit-norm ``fusion``. The three image sets go through E as one batch."""
        images = [source, pose] + ([target] if target is not None else [])
        emb = self.encode_many(*images)
        f = self.combiner(emb[0], emb[1])
        out = {"source": emb[0], "pose": emb[1], "fusion": f}
        if target is not None:
            out["target"] = emb[2]
        return out


__all__ = ["Combiner", "FusionModel"]
