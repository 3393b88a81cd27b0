"""The two MLPs of stage 2 between a frozen encoder and the UNet.

- ``SourceMLP``: source-encoder tokens (1024) -> 768 -> UNet ``cross_attention_dim`` (1024):
  Linear, GELU, Dropout(0.2), LayerNorm, Linear, Dropout(0.2), the authors' layer order; its
  output is the UNet's ``encoder_hidden_states``.
- ``FusionMLP``: fusion embedding (768) -> 768 -> the UNet's time-embedding width (1280):
  Linear, GELU, Dropout(0.2), Linear, Dropout(0.2), PyTorch's default init (the authors'
  ``class_embed_type: 'mlp'``); its output is the UNet's ``class_labels``, added to the timestep
  embedding through the identity class embedding.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class SourceMLP(ModelMixin, ConfigMixin):
    """Source tokens (B, N, in_dim) -> cross-attention states (B, N, out_dim):
    Linear, GELU, Dropout, LayerNorm, Linear, Dropout."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, in_dim: int = 1024, hidden_dim: int = 768, out_dim: int = 1024, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, out_dim), nn.Dropout(dropout),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens.to(self.dtype))


class FusionMLP(ModelMixin, ConfigMixin):
    """Fusion embedding (B, in_dim) -> (B, out_dim), added to the UNet's timestep embedding:
    Linear, GELU, Dropout, Linear, Dropout."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, in_dim: int = 768, hidden_dim: int = 768, out_dim: int = 1280, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim), nn.Dropout(dropout),
        )

    def forward(self, fusion: torch.Tensor) -> torch.Tensor:
        return self.net(fusion.to(self.dtype))


def time_embedding_dim(unet) -> int:
    """Width of the UNet's timestep embedding (1280 for SD2): the fusion MLP's output."""
    return unet.time_embedding.linear_2.out_features


__all__ = ["FusionMLP", "SourceMLP", "time_embedding_dim"]
