"""Cross-frame attention: a training-free link between the frames of a video generated together.

The UNet's self-attention (``attn1`` of each transformer block) of every frame also attends to
the keys and values of an anchor frame of the same batch, as training-free video methods do
(some replace a frame's keys by the anchor's; here the anchor's are added, so a frame keeps its
own). Appearance the anchor has settled (clothes, face, background) then pulls
each frame towards the same answer. ``CrossFrameAttnProcessor`` wraps the processor the layer
had (diffusers' own, SDPA by default) and only widens its key/value sequence: the attention
arithmetic stays diffusers'.

A frame anchored to itself attends to its own keys twice, each with half the weight: its output
is the frame's own (the property the tests check), so the first frame of a video, whose anchor
it is, comes out as frame-by-frame generation makes it.

Anchors are batch indices of the frames as the pipeline holds them (B items). Under guidance
the UNet sees the branches stacked ([u; f] or [u; s; f], B each): a frame's anchor is taken in
its own branch, so the unconditional prediction of a frame attends to the unconditional one of
its anchor, never to a conditioned one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..config import CROSS_FRAME_ANCHORS

SELF_ATTENTION = "attn1.processor"   # diffusers' name of a transformer block's self-attention processor


def anchor_indices(videos: list, mode: str) -> list[int]:
    """For a batch whose items are frames (``videos``: each item's video key, a video's frames
    adjacent and in order), each item's anchor index: "first" the video's first item in the
    batch, "previous" the item before it in the same video, "off" itself. A video's first item
    is its own anchor."""
    if mode not in CROSS_FRAME_ANCHORS:
        raise ValueError(f"cross_frame_attention={mode!r}: choose one of {', '.join(CROSS_FRAME_ANCHORS)}")
    anchors = []
    for i, video in enumerate(videos):
        start = i > 0 and videos[i - 1] == video
        if mode == "first":
            anchors.append(anchors[i - 1] if start else i)
        elif mode == "previous":
            anchors.append(i - 1 if start else i)
        else:
            anchors.append(i)
    return anchors


class CrossFrameAttnProcessor:
    """An attention processor of a self-attention layer whose key/value sequence is the frame's
    own tokens followed by its anchor's (``anchors``: one batch index per frame, see the module
    docstring); ``inner`` (the layer's previous processor) computes the attention."""

    def __init__(self, inner, anchors: torch.Tensor):
        self.inner = inner
        self.anchors = anchors

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        frames = self.anchors.numel()
        branches, rest = divmod(hidden_states.shape[0], frames)
        if rest:
            raise ValueError(f"cross-frame attention: a batch of {hidden_states.shape[0]} is no whole number of "
                             f"guidance branches of {frames} frames")
        anchors = self.anchors.to(hidden_states.device)
        index = (anchors[None] + frames * torch.arange(branches, device=hidden_states.device)[:, None]).reshape(-1)
        context = torch.cat([hidden_states, hidden_states[index]], dim=1)
        return self.inner(attn, hidden_states, context, attention_mask, *args, **kwargs)


@contextmanager
def cross_frame_attention(unet, anchors):
    """Within the block, every self-attention layer of ``unet`` also attends to each frame's
    anchor (``anchors``: a batch index per frame); the layers' processors are restored after."""
    original = unet.attn_processors
    anchors = torch.as_tensor(list(anchors), dtype=torch.long)
    unet.set_attn_processor({name: CrossFrameAttnProcessor(p, anchors) if name.endswith(SELF_ATTENTION) else p
                             for name, p in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


__all__ = ["CrossFrameAttnProcessor", "anchor_indices", "cross_frame_attention"]
