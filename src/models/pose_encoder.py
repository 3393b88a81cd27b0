"""The pose condition of stage 2: ControlNet's conditioning embedding (diffusers'
``ControlNetConditioningEmbedding``): channels 16, 32, 96, 256, three stride-2 steps, last conv
zero-initialised, out = the UNet's ``block_out_channels[0]`` (320) at latent size. Its output is
added after the UNet's ``conv_in`` (``src.models.denoiser``)."""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding


class PoseEncoder(ModelMixin, ConfigMixin):
    """Rendered pose image (B, 3, H, W) in [-1, 1] -> features (B, out_channels, H/8, W/8).

    The network sees the image in [0, 1]: the authors fed it torchvision's ``ToTensor`` output
    unnormalised, in training and at test, and their released weights expect that range."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, out_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: tuple | list = (16, 32, 96, 256)):
        super().__init__()
        self.embedding = ControlNetConditioningEmbedding(
            conditioning_embedding_channels=out_channels, conditioning_channels=conditioning_channels,
            block_out_channels=tuple(block_out_channels))

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, pose_images: torch.Tensor) -> torch.Tensor:
        return self.embedding(((pose_images.float() + 1) / 2).to(self.dtype))


__all__ = ["PoseEncoder"]
