"""The denoiser of stage 2: an unmodified diffusers ``UNet2DConditionModel`` fed the three
conditions (``src.models.pose_encoder``, ``src.models.heads``):

- pose features are **added to the output of ``unet.conv_in``** (a forward hook on that conv;
  the UNet itself stays a standard diffusers UNet and saves as one),
- the source MLP's output is the UNet's ``encoder_hidden_states`` (cross-attention),
- the fusion MLP's output is the UNet's ``class_labels``; the UNet's class embedding is the
  identity (``class_embed_type="identity"``), so it is added to the timestep embedding as is.

Condition dropout (training, and the guidance branches of sampling) zeroes the pose features
added after ``conv_in``, the ``encoder_hidden_states`` after the source MLP, and the fusion
embedding **before** the fusion MLP (as the authors zero it; the MLP's biases still reach the
time embedding). Masks are per item; a dropped item's condition is multiplied by 0, so every
parameter stays in the graph (no unused parameters under DDP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .heads import FusionMLP, SourceMLP, time_embedding_dim
from .pose_encoder import PoseEncoder

CONDITIONS = ("pose", "source", "fusion")


# ---------------------------------------------------------------------------------------------
# the pose residual after conv_in


def _add_pose_residual(module: nn.Module, args, output: torch.Tensor):
    residual = getattr(module, "_fpdm_pose_residual", None)
    if residual is None:
        return None
    if residual.shape != output.shape:
        raise ValueError(f"pose features {tuple(residual.shape)} do not match the UNet's conv_in output "
                         f"{tuple(output.shape)}: the pose image must be 8x the latent size")
    return output + residual.to(output.dtype)


def install_pose_hook(unet) -> None:
    """Register (once per UNet) the forward hook that adds ``conv_in._fpdm_pose_residual``, when
    set, to the output of ``unet.conv_in``. The UNet's weights and config are untouched."""
    conv = unet.conv_in
    if getattr(conv, "_fpdm_pose_hook", None) is None:
        conv._fpdm_pose_residual = None
        conv._fpdm_pose_hook = conv.register_forward_hook(_add_pose_residual)


@dataclass
class Conditions:
    """The conditions after dropout: pose and source as they enter the UNet, the fusion
    embedding as it enters the fusion MLP."""

    pose_features: torch.Tensor | None   # (B, C0, h, w), added after conv_in
    encoder_hidden_states: torch.Tensor  # (B, N, cross_attention_dim)
    fusion: torch.Tensor                 # (B, fusion dim), the fusion MLP's input

    def dropped(self, pose: bool = False, source: bool = False, fusion: bool = False) -> "Conditions":
        """The same conditions with whole ones zeroed (all items): the guidance branches."""
        zero = lambda t, drop: t if (t is None or not drop) else torch.zeros_like(t)  # noqa: E731
        return Conditions(zero(self.pose_features, pose), zero(self.encoder_hidden_states, source),
                          zero(self.fusion, fusion))

    @staticmethod
    def cat(items: list["Conditions"]) -> "Conditions":
        def join(ts):
            if all(t is None for t in ts):
                return None
            if any(t is None for t in ts):
                raise ValueError("cannot join conditions with and without pose features")
            return torch.cat(ts)
        return Conditions(join([c.pose_features for c in items]), join([c.encoder_hidden_states for c in items]),
                          join([c.fusion for c in items]))


def _keep(drop: torch.Tensor | bool | None, batch: int, ref: torch.Tensor) -> torch.Tensor | None:
    """A (B,) keep factor (1 = keep, 0 = drop) from a drop mask, or None when nothing drops."""
    if drop is None or drop is False:
        return None
    if drop is True:
        drop = torch.ones(batch, dtype=torch.bool)
    drop = torch.as_tensor(drop, device=ref.device).reshape(-1)
    if drop.numel() != batch:
        raise ValueError(f"drop mask has {drop.numel()} entries for a batch of {batch}")
    return (~drop.bool()).to(ref.dtype)


class FPDMDenoiser(nn.Module):
    """UNet + pose encoder + source MLP + fusion MLP: the trainable part of stage 2.

    ``forward(noisy_latents, timesteps, pose_images, source_tokens, fusion_emb, drop_pose=None,
    drop_source=None, drop_fusion=None)`` returns the UNet's prediction (B, 4, h, w). Drop masks
    are (B,) booleans (True = drop that item's condition) or a single bool.
    ``encode_conditions`` + ``denoise`` split the same computation so a sampler computes the
    conditions once and runs only the UNet at every step.
    """

    def __init__(self, unet, pose_encoder: PoseEncoder, source_mlp: SourceMLP, fusion_mlp: FusionMLP):
        super().__init__()
        c = unet.config
        if c.class_embed_type != "identity":
            raise ValueError("the UNet needs class_embed_type='identity' for the fusion MLP's output "
                             "(load it with src.models.sd2.load_unet)")
        if fusion_mlp.config.out_dim != time_embedding_dim(unet):
            raise ValueError(f"fusion MLP gives {fusion_mlp.config.out_dim} features; the UNet's time embedding "
                             f"is {time_embedding_dim(unet)} wide")
        if pose_encoder.config.out_channels != c.block_out_channels[0]:
            raise ValueError(f"pose encoder gives {pose_encoder.config.out_channels} channels; the UNet's conv_in "
                             f"gives {c.block_out_channels[0]}")
        if source_mlp.config.out_dim != c.cross_attention_dim:
            raise ValueError(f"source MLP gives {source_mlp.config.out_dim}-d tokens; the UNet's cross-attention "
                             f"takes {c.cross_attention_dim}")
        self.unet = unet
        self.pose_encoder = pose_encoder
        self.source_mlp = source_mlp
        self.fusion_mlp = fusion_mlp
        install_pose_hook(unet)

    # -- conditions

    def encode_conditions(self, pose_images: torch.Tensor | None, source_tokens: torch.Tensor,
                          fusion_emb: torch.Tensor, drop_pose=None, drop_source=None, drop_fusion=None) -> Conditions:
        batch = source_tokens.shape[0]
        pose = None
        if pose_images is not None:
            pose = self.pose_encoder(pose_images)
            keep = _keep(drop_pose, batch, pose)
            if keep is not None:
                pose = pose * keep.view(-1, 1, 1, 1)
        states = self.source_mlp(source_tokens)
        keep = _keep(drop_source, batch, states)
        if keep is not None:
            states = states * keep.view(-1, 1, 1)
        fusion = fusion_emb.to(self.fusion_mlp.dtype)
        keep = _keep(drop_fusion, batch, fusion)
        if keep is not None:
            fusion = fusion * keep.view(-1, 1)
        return Conditions(pose, states, fusion)

    def denoise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditions: Conditions) -> torch.Tensor:
        conv = self.unet.conv_in
        conv._fpdm_pose_residual = conditions.pose_features
        try:
            return self.unet(noisy_latents, timesteps, encoder_hidden_states=conditions.encoder_hidden_states,
                             class_labels=self.fusion_mlp(conditions.fusion), return_dict=False)[0]
        finally:
            conv._fpdm_pose_residual = None

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, pose_images: torch.Tensor | None,
                source_tokens: torch.Tensor, fusion_emb: torch.Tensor, drop_pose=None, drop_source=None,
                drop_fusion=None) -> torch.Tensor:
        conditions = self.encode_conditions(pose_images, source_tokens, fusion_emb, drop_pose, drop_source,
                                            drop_fusion)
        return self.denoise(noisy_latents, timesteps, conditions)

    # -- performance switches

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def set_sdpa(self, enable: bool = True) -> None:
        """PyTorch scaled-dot-product attention (diffusers' default AttnProcessor2_0) or the
        plain attention processor."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        self.unet.set_attn_processor(AttnProcessor2_0() if enable else AttnProcessor())

    def set_channels_last(self, enable: bool = True) -> None:
        self.unet.to(memory_format=torch.channels_last if enable else torch.contiguous_format)

    def compile_unet(self, **kwargs) -> None:
        """torch.compile the UNet in place (``nn.Module.compile``: state-dict keys unchanged)."""
        self.unet.compile(**kwargs)


__all__ = ["CONDITIONS", "Conditions", "FPDMDenoiser", "install_pose_hook"]
