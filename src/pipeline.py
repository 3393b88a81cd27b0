"""FPDMPipeline: source photo + target pose -> that person in that pose.

Components (one self-contained folder with ``save_pretrained`` / ``from_pretrained``, weights in
safetensors): ``vae``, ``unet`` (a standard diffusers UNet2DConditionModel with the identity
class embedding), ``scheduler``, ``pose_encoder``, ``source_mlp``, ``fusion_mlp``,
``source_encoder`` and ``fusion_model`` (stage 1). The config records the geometry: output
``height`` x ``width``, ``source_size`` (the square source the source encoder sees, 512) and
``fusion_size`` (the fusion model's square inputs, 224), ``pose_draw_size`` (where B2
drew its target poses before resizing them to the output size: its dataset's canvas) and ``pose_format``
(the keypoint format of its dataset: "openpose18" for DeepFashion, "wholebody133" for
PHOENIX-2014T), so keypoint targets are drawn as B2 drew them; ``sampling`` the default steps,
guidance and sampler (a converted authors' model records theirs).

Per call: each network's view of the inputs is made as in training (``src.models.views``:
``source_views``, ``pose_views``: the source squashed to ``source_size`` and from there to ``fusion_size``, each
pose view resized straight from the full pose image); the source encoder's tokens (through the
source MLP) and the fusion embedding f(source, target pose) are computed once; the pose encoder
runs once; then every denoising step evaluates the guidance branches in **one** batched UNet call,

    e_u: no pose, no source tokens, no fusion      e_s: pose + source tokens, no fusion
    e_f: all three conditions
    e = e_u + g * (e_s - e_u) + g_f * (e_f - e_s)      (g_f = g unless fusion_guidance_scale is set)

With one scale (g_f = g, the authors' setting) this is e_u + g * (e_f - e_u): e_s cancels, so
only e_u and e_f are evaluated, two thirds of the UNet work; e_s only for a separate g_f.

and the scheduler's ``step`` turns the combined prediction (epsilon or v, from the scheduler's
config) into the next latents. ``guidance_scale == 1`` (and no separate g_f) evaluates e_f only.
``drop_conditions=("fusion",)`` (or "source", "pose") zeroes a condition in every branch, as
training's condition dropout does: the ablations of the synthetic benchmark.

What depends on the source alone (its source-encoder tokens and the fusion model's embedding
of it) is an ``EncodedSource`` (``encode_source``); passed as ``source_image`` it is reused, so
one source generated in many poses (every frame of a video) is encoded once.

Seeds: ``seeds=[...]`` (one int per item) gives each item its own generator for the initial
noise and for the noise of stochastic samplers, so an image does not depend on the batch it is
generated in. Items given one seed start from one noise and draw the same per-step noise (C1's
``shared_noise``: the frames of a video).

Videos: ``cross_frame_anchors=[...]`` (a batch index per item) makes each item's UNet
self-attention also attend to its anchor item's keys and values, within each guidance branch
(``src.models.cross_frame_attention``); an item anchored to itself is generated as without it.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    ImagePipelineOutput,
    UniPCMultistepScheduler,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .models.views import fusion_input, pose_views, source_views
from .pose.keypoints import resize_keypoints
from .pose import render as pose_render
from .util.images import resize
# The custom components' modules are imported here on purpose: a saved pipeline records each
# component under its full module path (e.g. "src.models.pose_encoder"), and diffusers only
# resolves such names from modules already imported (it never imports what a folder names).
# src.models.conditioning is the path that folders saved before the model split record.
from .models import conditioning  # noqa: F401
from .models.cross_frame_attention import cross_frame_attention
from .models.denoiser import CONDITIONS, Conditions, FPDMDenoiser
from .models.fusion import FusionModel  # noqa: F401
from .models.heads import FusionMLP, SourceMLP, time_embedding_dim  # noqa: F401
from .models.pose_encoder import PoseEncoder  # noqa: F401
from .models.source_encoder import SourceEncoder  # noqa: F401

# The authors' sampling: 20 DDPM steps at guidance 2.0 (a pipeline's config ``sampling`` overrides).
SAMPLING_DEFAULTS = {"num_inference_steps": 20, "guidance_scale": 2.0, "scheduler": "ddpm"}

SCHEDULERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def make_scheduler(name, config):
    """A fresh sampler by name (ddpm, ddim, dpm++, unipc) from a scheduler config (betas,
    prediction type and timestep spacing carry over); a scheduler object is returned as is."""
    if not isinstance(name, str):
        return name
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls, extra = SCHEDULERS[key]
    return cls.from_config(config, **extra)


def combine_guidance(e_u: torch.Tensor, e_s: torch.Tensor, e_f: torch.Tensor, guidance_scale: float,
                     fusion_guidance_scale: float | None = None) -> torch.Tensor:
    """The disentangled guidance of three predictions: e_u + g (e_s - e_u) + g_f (e_f - e_s), g_f = g
    by default."""
    g_f = guidance_scale if fusion_guidance_scale is None else fusion_guidance_scale
    return e_u + guidance_scale * (e_s - e_u) + g_f * (e_f - e_s)


def check_drop_conditions(names) -> tuple[str, ...]:
    """Condition names to zero at sampling time, checked: a subset of ``CONDITIONS``."""
    names = (names,) if isinstance(names, str) else tuple(names or ())
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"drop_conditions: unknown condition(s) {unknown}; choose among {', '.join(CONDITIONS)}")
    return names


def guidance_conditions(conditions: Conditions, three_branches: bool = True) -> Conditions:
    """The guidance branches of a batch of conditions, stacked along dim 0: [u; s; f] (3B), or
    [u; f] (2B) when ``three_branches`` is False (one scale for both terms: e_s cancels)."""
    unconditional = conditions.dropped(pose=True, source=True, fusion=True)
    if not three_branches:
        return Conditions.cat([unconditional, conditions])
    return Conditions.cat([unconditional, conditions.dropped(fusion=True), conditions])


# ---------------------------------------------------------------------------------------------
# inputs


def _as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return list(x)
    if isinstance(x, np.ndarray) and (x.ndim == 4 or (x.ndim == 3 and x.shape[-1] == 2)):
        return list(x)  # a batch of images, or of (K, 2) keypoint arrays
    return [x]


def _is_keypoints(x) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 2


def _as_image(item, what: str):
    """A PIL RGB image of a PIL image or an HxWx3 uint8 array; a (3, H, W) tensor in [-1, 1] as is."""
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[-1] != 3:
            raise ValueError(f"{what}: expected an HxWx3 uint8 array, got shape {item.shape}")
        return Image.fromarray(item.astype(np.uint8))
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise ValueError(f"{what}: expected a (3, H, W) tensor in [-1, 1], got shape {tuple(item.shape)}")
        return item.float()
    raise TypeError(f"{what}: unsupported input type {type(item).__name__}")


def _resized_tensor(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]


def _pose_views(item, size: tuple[int, int], fusion_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pose encoder's input, fusion model's input) of a pose image of any supported kind: each
    resized straight from the image given (``pose_views``; tensors: bilinear / bicubic)."""
    image = _as_image(item, "target_pose")
    if isinstance(image, Image.Image):
        return pose_views(image, size, fusion_size)
    return _resized_tensor(image, size), fusion_input(image, fusion_size, "pose")


def _source_views(item, source_size: int, fusion_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source encoder's input, fusion model's input) of a source image (``source_views``)."""
    image = _as_image(item, "source_image")
    if isinstance(image, Image.Image):
        return source_views(image, source_size, fusion_size)
    square = _resized_tensor(image, (source_size, source_size))
    return square, fusion_input(square, fusion_size, "source")


@dataclass
class EncodedSource:
    """What generation needs of source images alone, computed once: ``tokens`` (B, N, C), the
    source encoder's output, and ``embeds`` (B, D), the fusion model's raw embedding of the
    source's fusion view (see ``FPDMPipeline.encode_source``)."""

    tokens: torch.Tensor
    embeds: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "EncodedSource":
        index = slice(index, index + 1) if isinstance(index, int) else index
        return EncodedSource(self.tokens[index], self.embeds[index])

    @staticmethod
    def cat(items: list["EncodedSource"]) -> "EncodedSource":
        return EncodedSource(torch.cat([i.tokens for i in items]), torch.cat([i.embeds for i in items]))

    def broadcast(self, batch: int) -> "EncodedSource":
        if len(self) == batch:
            return self
        if len(self) == 1:
            return EncodedSource(self.tokens.expand(batch, *self.tokens.shape[1:]),
                                 self.embeds.expand(batch, *self.embeds.shape[1:]))
        raise ValueError(f"source_image: {len(self)} encoded sources for a batch of {batch}")


def _broadcast(items: list, batch: int, what: str) -> list:
    if len(items) == batch:
        return items
    if len(items) == 1:
        return items * batch
    raise ValueError(f"{what}: {len(items)} items for a batch of {batch}")


def _stack(tensors: list[torch.Tensor], what: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"{what}: images of different sizes {sorted(shapes)} in one batch")
    return torch.stack(tensors)


def check_widths(unet, pose_encoder, source_mlp, fusion_mlp, source_encoder, fusion_model) -> None:
    """Raise ValueError naming the first pair of components whose widths do not fit."""
    c = unet.config
    pairs = [
        ("fusion model embedding", getattr(fusion_model, "embed_dim", None), "fusion MLP input",
         fusion_mlp.config.in_dim),
        ("fusion MLP output", fusion_mlp.config.out_dim, "UNet time embedding", time_embedding_dim(unet)),
        ("source encoder width", getattr(source_encoder, "width", None), "source MLP input", source_mlp.config.in_dim),
        ("source MLP output", source_mlp.config.out_dim, "UNet cross_attention_dim", c.cross_attention_dim),
        ("pose encoder output", pose_encoder.config.out_channels, "UNet block_out_channels[0]",
         c.block_out_channels[0]),
    ]
    for a, va, b, vb in pairs:
        if va is not None and va != vb:
            raise ValueError(f"{a} ({va}) does not match {b} ({vb})")


@contextmanager
def eval_mode(*modules):
    """Modules in eval mode for the block (no dropout), their previous modes restored after."""
    modules = [m for m in modules if isinstance(m, torch.nn.Module)]
    flags = [[(sub, sub.training) for sub in m.modules()] for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for subs in flags:
            for sub, flag in subs:
                sub.training = flag


class FPDMPipeline(DiffusionPipeline):
    """Pose-guided person image synthesis with a fusion embedding (see the module docstring)."""

    model_cpu_offload_seq = "source_encoder->fusion_model->pose_encoder->source_mlp->fusion_mlp->unet->vae"

    def __init__(self, vae, unet, scheduler, pose_encoder, source_mlp, fusion_mlp, source_encoder, fusion_model,
                 source_size: int = 512, fusion_size: int = 224, height: int | None = None,
                 width: int | None = None,
                 pose_draw_size: tuple | list | None = None, pose_format: str = "openpose18",
                 sampling: dict | None = None):
        super().__init__()
        # Defaults for diffusers only (it takes an argument without one for a component); the output
        # size is the dataset's or the user's, never assumed.
        if not height or not width:
            raise ValueError(f"height={height!r}, width={width!r}: give the output size")
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, pose_encoder=pose_encoder,
                              source_mlp=source_mlp, fusion_mlp=fusion_mlp, source_encoder=source_encoder,
                              fusion_model=fusion_model)
        self.register_to_config(source_size=source_size, fusion_size=fusion_size, height=height, width=width,
                                pose_draw_size=list(pose_draw_size) if pose_draw_size else None,
                                pose_format=pose_format, sampling=dict(sampling) if sampling else None)
        pose_render.pose_format(pose_format)  # an unknown format fails here, not at the first drawing
        check_widths(unet, pose_encoder, source_mlp, fusion_mlp, source_encoder, fusion_model)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # -- pieces, usable on their own (training validation, tests)

    def denoiser(self) -> FPDMDenoiser:
        """The UNet + pose encoder + source MLP + fusion MLP as one module (shares the components)."""
        return FPDMDenoiser(self.unet, self.pose_encoder, self.source_mlp, self.fusion_mlp)

    def render_target_pose(self, keypoints: np.ndarray, height: int, width: int) -> Image.Image:
        """Pixel keypoints at the output size -> the full pose render as B2 drew it: the renderer
        of the config's ``pose_format`` at its ``pose_draw_size`` (keypoints scaled to it); at the
        output size when unset. Each network's view is resized from it (``pose_views``)."""
        draw = tuple(self.config.pose_draw_size or (height, width))
        renderer = pose_render.pose_format(self.config.pose_format)
        return renderer.draw(resize_keypoints(keypoints, (height, width), draw), draw, draw)

    def draw_target_pose(self, keypoints: np.ndarray, height: int, width: int) -> Image.Image:
        """The pose image the pose encoder sees: ``render_target_pose`` resized to the output size."""
        return resize(self.render_target_pose(keypoints, height, width), (height, width))

    def prepare_inputs(self, source_image, target_pose, fusion_pose=None, height: int | None = None,
                       width: int | None = None) -> dict:
        """Images of any supported kind -> tensors in [-1, 1]: ``source`` (B,3,S,S), ``pose``
        (B,3,H,W), ``fusion_source`` and ``fusion_pose`` (fusion-model inputs), each view made
        from the image given as in training (``source_views``, ``pose_views``); an
        ``EncodedSource`` passed as ``source_image`` comes back as ``encoded_source`` instead of
        the two source tensors."""
        height = height or self.config.height
        width = width or self.config.width
        fusion_size = self.config.fusion_size
        encoded = source_image if isinstance(source_image, EncodedSource) else None
        sources = [None] * len(encoded) if encoded is not None else _as_list(source_image)
        poses = _as_list(target_pose)
        batch = max(len(sources), len(poses))
        poses = _broadcast(poses, batch, "target_pose")
        renders = [self.render_target_pose(p, height, width) if _is_keypoints(p) else p for p in poses]
        views = [_pose_views(p, (height, width), fusion_size) for p in renders]
        out = {"pose": _stack([v[0] for v in views], "target_pose")}
        if encoded is not None:
            out["encoded_source"] = encoded.broadcast(batch)
        else:
            out.update(self._source_tensors(_broadcast(sources, batch, "source_image")))
        if fusion_pose is None:
            fusion_poses = [v[1] for v in views]
        else:
            fp = _broadcast(_as_list(fusion_pose), batch, "fusion_pose")
            fp = [self.render_target_pose(p, height, width) if _is_keypoints(p) else p for p in fp]
            fusion_poses = [_pose_views(p, (height, width), fusion_size)[1] for p in fp]
        out["fusion_pose"] = _stack(fusion_poses, "fusion_pose")
        return out

    def _source_tensors(self, sources: list) -> dict:
        views = [_source_views(x, self.config.source_size, self.config.fusion_size) for x in sources]
        return {"source": _stack([v[0] for v in views], "source_image"),
                "fusion_source": _stack([v[1] for v in views], "source_image")}

    @torch.no_grad()
    def encode_source(self, source_image) -> EncodedSource:
        """The source-only part of the conditions of source image(s) (any kind ``__call__``
        takes): pass it as ``source_image`` to generate the same source in many poses without
        encoding it again. Computed with every component in eval mode."""
        with eval_mode(self.source_encoder, self.fusion_model):
            return self._encode_source_tensors(self._source_tensors(_as_list(source_image)))

    def _encode_source_tensors(self, inputs: dict) -> EncodedSource:
        device = self._execution_device
        tokens = self.source_encoder(inputs["source"].to(device))
        embeds = self.fusion_model.encode(inputs["fusion_source"].to(device, self.fusion_model.dtype))
        return EncodedSource(tokens, embeds)

    @torch.no_grad()
    def encode_conditions(self, inputs: dict, denoiser: FPDMDenoiser | None = None) -> Conditions:
        """Conditions (no dropout) of prepared inputs: pose features, source-MLP states, fusion;
        the source encoded now unless ``inputs`` holds an ``encoded_source``."""
        device = self._execution_device
        denoiser = denoiser or self.denoiser()
        encoded = inputs.get("encoded_source")
        if encoded is None:
            encoded = self._encode_source_tensors(inputs)
        pose_embeds = self.fusion_model.encode(inputs["fusion_pose"].to(device, self.fusion_model.dtype))
        fusion = self.fusion_model.combiner(encoded.embeds.to(device), pose_embeds)
        return denoiser.encode_conditions(inputs["pose"].to(device, self.unet.dtype), encoded.tokens.to(device), fusion)

    @torch.no_grad()
    def fusion_embedding(self, fusion_source: torch.Tensor, fusion_pose: torch.Tensor) -> torch.Tensor:
        """f(source, target pose) (B, D) from the stage-1 model, in its own dtype."""
        return self.fusion_model.fuse(fusion_source.to(self.fusion_model.dtype), fusion_pose.to(self.fusion_model.dtype))

    @staticmethod
    def guided_prediction(denoiser, latents: torch.Tensor, t, conditions: Conditions, guidance_scale: float,
                          fusion_guidance_scale: float | None = None, scheduler=None) -> torch.Tensor:
        """One step's prediction. ``conditions`` are the 3B or 2B guidance branches
        (``guidance_conditions``) when guiding, else the B plain conditions."""
        n = conditions.fusion.shape[0] // latents.shape[0]
        model_in = torch.cat([latents] * n) if n > 1 else latents
        if scheduler is not None:
            model_in = scheduler.scale_model_input(model_in, t)
        timesteps = torch.as_tensor(t, device=latents.device).reshape(-1).expand(model_in.shape[0])
        pred = denoiser.denoise(model_in, timesteps, conditions)
        if n == 1:
            return pred
        if n == 2:
            if fusion_guidance_scale is not None and fusion_guidance_scale != guidance_scale:
                raise ValueError("a separate fusion_guidance_scale needs the three guidance branches")
            e_u, e_f = pred.chunk(2)
            return e_u + guidance_scale * (e_f - e_u)
        if n != 3:
            raise ValueError(f"conditions hold {n} branches per item; expected 1, 2 or 3")
        e_u, e_s, e_f = pred.chunk(3)
        return combine_guidance(e_u, e_s, e_f, guidance_scale, fusion_guidance_scale)

    def initial_latents(self, batch: int, height: int, width: int, generator=None, seeds=None,
                        dtype=None) -> tuple[torch.Tensor, object]:
        """(latents, generator): per-item generators when ``seeds`` is given."""
        if seeds is not None:
            seeds = list(seeds)
            if len(seeds) != batch:
                raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
            generator = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}")
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=self._execution_device,
                               dtype=dtype or self.unet.dtype)
        return latents, generator

    # -- generation

    @torch.no_grad()
    def __call__(self, source_image, target_pose, fusion_pose=None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, fusion_guidance_scale: float | None = None, scheduler=None,
                 generator: torch.Generator | list | None = None, seeds: list[int] | None = None,
                 height: int | None = None, width: int | None = None, output_type: str = "pil",
                 return_dict: bool = True, drop_conditions=(), guidance_branches: int | None = None,
                 cross_frame_anchors: list[int] | None = None):
        """Generate the source person(s) in the target pose(s).

        source_image: PIL image(s), HxWx3 uint8 array(s), (B,3,H,W)/(3,H,W) tensors in [-1, 1],
                      or an ``EncodedSource`` (``encode_source``: the source not encoded again).
        target_pose:  rendered pose image(s) (PIL, array, tensor in [-1, 1]) or keypoint arrays
                      (18, 2) / (B, 18, 2) in pixels of the output size (drawn as B2 drew
                      them, see ``draw_target_pose``); a single source or pose is broadcast.
        fusion_pose:  the pose image the fusion model sees; defaults to the target pose, as in
                      stage-2 training (squashed to ``fusion_size`` either way).
        num_inference_steps, guidance_scale, scheduler: default to the config's ``sampling``
                      (a converted authors' model records theirs), else 20, 2.0, "ddpm".
        scheduler:    "ddpm" (the authors'), "ddim", "dpm++", "unipc", or a scheduler object;
                      built from the pipeline scheduler's config.
        seeds:        one int per item (per-item generators); else ``generator``.
        output_type:  "pil", "np", "pt" (images in [0, 1]) or "latent".
        guidance_branches: None = two branches at one guidance scale, three with a separate
                      fusion scale; 3 evaluates the three at one scale too (the authors' arithmetic,
                      the same images up to floating-point noise, half again the UNet work).
        drop_conditions: names among "pose", "source", "fusion" to zero in every branch, as
                      condition dropout does in training (ablations: e.g. ("fusion",) samples
                      without the fusion embedding, so e_f = e_s).
        cross_frame_anchors: one batch index per item: the frame whose self-attention keys and
                      values the item's also attends to (its own index: none); see
                      ``src.models.cross_frame_attention.anchor_indices``.
        """
        drop = check_drop_conditions(drop_conditions)
        if guidance_branches not in (None, 2, 3):
            raise ValueError(f"guidance_branches={guidance_branches!r}: None, 2 or 3")
        defaults = {**SAMPLING_DEFAULTS, **(self.config.get("sampling") or {})}
        num_inference_steps = defaults["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance_scale = defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        scheduler = defaults["scheduler"] if scheduler is None else scheduler
        with eval_mode(*self.components.values()):
            return self._generate(source_image, target_pose, fusion_pose, num_inference_steps, guidance_scale,
                                  fusion_guidance_scale, scheduler, generator, seeds, height, width, output_type,
                                  return_dict, drop, guidance_branches, cross_frame_anchors)

    def _generate(self, source_image, target_pose, fusion_pose, num_inference_steps, guidance_scale,
                  fusion_guidance_scale, scheduler, generator, seeds, height, width, output_type, return_dict,
                  drop=(), guidance_branches=None, cross_frame_anchors=None):
        height = height or self.config.height
        width = width or self.config.width
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        denoiser = self.denoiser()
        inputs = self.prepare_inputs(source_image, target_pose, fusion_pose, height, width)
        batch = inputs["pose"].shape[0]
        conditions = self.encode_conditions(inputs, denoiser)
        if drop:
            conditions = conditions.dropped(**dict.fromkeys(drop, True))
        guided = guidance_scale != 1.0 or (fusion_guidance_scale is not None and fusion_guidance_scale != 1.0)
        if guided:
            separate = fusion_guidance_scale is not None and fusion_guidance_scale != guidance_scale
            if separate and guidance_branches == 2:
                raise ValueError("a separate fusion_guidance_scale needs the three guidance branches")
            conditions = guidance_conditions(conditions, three_branches=separate or guidance_branches == 3)

        sampler = make_scheduler(scheduler, self.scheduler.config)
        device = self._execution_device
        sampler.set_timesteps(num_inference_steps, device=device)
        latents, generator = self.initial_latents(batch, height, width, generator, seeds)
        latents = latents * sampler.init_noise_sigma
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(sampler.step).parameters else {}

        anchors = cross_frame_anchors
        if anchors is not None and (len(anchors) != batch or not all(0 <= int(a) < batch for a in anchors)):
            raise ValueError(f"cross_frame_anchors: {list(anchors)} is not one index below {batch} per item")
        with cross_frame_attention(self.unet, anchors) if anchors is not None else nullcontext():
            for t in self.progress_bar(sampler.timesteps):
                pred = self.guided_prediction(denoiser, latents, t, conditions, guidance_scale, fusion_guidance_scale,
                                              scheduler=sampler)
                latents = sampler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]

        if output_type == "latent":
            images = latents
        else:
            scaled = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            decoded = self.vae.decode(scaled, return_dict=False)[0]
            images = self.image_processor.postprocess(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


__all__ = [
    "EncodedSource", "FPDMPipeline", "SAMPLING_DEFAULTS", "SCHEDULERS", "check_drop_conditions", "check_widths", "combine_guidance", "eval_mode",
    "guidance_conditions", "make_scheduler",
]
