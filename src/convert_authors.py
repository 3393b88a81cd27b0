"""Turn the FPDM authors' released checkpoints into this project's folders.

    python -m src.convert_authors --checkpoint=fusion/last.ckpt --out=weights/fpdm_fusion_model
    python -m src.convert_authors --checkpoint=diffusion/last.ckpt --out=weights/fpdm_pipeline

The authors release a stage-1 model (their ``FusionModel``) and a stage-2 model (their ``FPDM``),
both PyTorch Lightning ``last.ckpt`` files. The kind is recognised by the file's tensors:

- stage 1 -> a fusion-model folder exactly as B1 exports it (``FusionModel.save_pretrained``:
  what B2's ``--fusion_model`` takes);
- stage 2 -> a complete pipeline folder exactly as B2 exports it (``FPDMPipeline.save_pretrained``:
  what C1, C2, ``python -m src.transfer`` and ``FPDMPipeline.from_pretrained`` take, and B2's
  ``--init_pipeline`` fine-tunes). The stage-2 file holds every weight (VAE, DINOv2 and the
  stage-1 model included), so nothing is downloaded.

Every tensor of the checkpoint is mapped or skipped for a stated reason (a module stored under
two names, the optimizer state); every tensor of the output is filled; all mismatches (missing,
unexpected, wrong shapes) are listed at once, and nothing is written unless all is well. The file
is read with ``src.util.lightning_checkpoint`` (no code in it runs; memory-mapped, the optimizer state
never read) and the weights are written straight from the mapped file.

Architecture configs (the checkpoint stores weights, not configs): ``--pretrained_model``,
``--source_encoder``, ``--fusion_encoder`` (a folder or a hub id already in the Hugging Face
cache) when given; else the ids the checkpoint's hyperparameters name, when they are on this
machine; else the configs this project ships for the paper's models (SD2-1, DINOv2-large, CLIP
ViT-L/14). The sizes of the new heads come from the tensors themselves. The pipeline's geometry
and sampling defaults come from the hyperparameters (``model_img_size`` is (width, height)).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import dataset_spec
from .util.lightning_checkpoint import Checkpoint, CheckpointError, LazyTensor, read_checkpoint
from .models import CONFIG_DIR, shipped_config

STAGES = ("auto", "1", "2")
# The authors' model is DeepFashion's: their dataset draws its training poses on DeepFashion's pose canvas.
AUTHORS_DATASET = "deepfashion"
FUSION_DROPOUT = 0.5         # the authors' combiner
FUSION_MLP_DROPOUT = 0.2     # the authors' class-embedding MLP

# (authors' prefix, component, this project's prefix): first match wins.
STAGE2_PREFIXES = (
    ("vae.", "vae", ""),
    ("unet.class_embedding.net.", "fusion_mlp", "net."),
    ("unet.", "unet", ""),
    ("fusion_model.img_encoder.", "fusion_model", "encoder.model."),
    ("fusion_model.combiner.", "fusion_model", "combiner."),
    ("src_image_encoder.", "source_encoder", "model."),
    ("sd_model.srcimage_proj_model.net.", "source_mlp", "net."),
    ("sd_model.pose_t_proj.", "pose_encoder", "embedding."),
)
STAGE1_PREFIXES = (
    ("img_encoder.", "fusion_model", "encoder.model."),
    ("combiner.", "fusion_model", "combiner."),
)
# A module the authors registered under a second name: (duplicate prefix, original prefix).
STAGE2_DUPLICATES = (("sd_model.unet.", "unet."), ("fusion_model.pose_encoder.", "fusion_model.img_encoder."))
STAGE1_DUPLICATES = (("pose_encoder.", "img_encoder."),)
# Renamed layers: the authors' combiner names its projections after the pose ("kpt") and the
# image; transformers 5 renamed DINOv2's attention weights.
RENAMES = {
    "fusion_model": (("combiner.kpt_projection_layer.", "combiner.pose_projection."),
                     ("combiner.image_projection_layer.", "combiner.source_projection.")),
    "source_encoder": ((".attention.attention.query.", ".attention.q_proj."),
                       (".attention.attention.key.", ".attention.k_proj."),
                       (".attention.attention.value.", ".attention.v_proj."),
                       (".attention.output.dense.", ".attention.o_proj.")),
}


class ConversionError(ValueError):
    """The checkpoint does not convert; the message lists every problem."""


# ---------------------------------------------------------------------------------------------
# which file, which tensors where


def detect_stage(ckpt: Checkpoint) -> str:
    keys = ckpt.state_dict.keys()
    if any(k.startswith(("sd_model.", "src_image_encoder.")) for k in keys):
        return "2"
    if any(k.startswith("combiner.") for k in keys) and any(k.startswith("img_encoder.") for k in keys):
        return "1"
    sample = ", ".join(sorted({k.split(".")[0] for k in keys})[:8]) or "none"
    raise ConversionError(f"{ckpt.path}: neither an FPDM stage-1 (img_encoder.*, combiner.*) nor a stage-2 "
                          f"(sd_model.*, src_image_encoder.*, unet.*) checkpoint; its modules: {sample}")


@dataclass
class Plan:
    """Where each tensor goes: ``targets[component][key] = source key``; ``skipped`` holds the
    tensors deliberately left out with their reason; ``problems`` what does not map."""

    targets: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _rename(component: str, key: str) -> str:
    for old, new in RENAMES.get(component, ()):
        key = key.replace(old, new)
    return key


def plan_mapping(ckpt: Checkpoint, stage: str) -> Plan:
    prefixes, duplicates = (STAGE2_PREFIXES, STAGE2_DUPLICATES) if stage == "2" else (STAGE1_PREFIXES,
                                                                                     STAGE1_DUPLICATES)
    state = ckpt.state_dict
    plan = Plan()
    for key, tensor in state.items():
        dup = next(((d, o) for d, o in duplicates if key.startswith(d)), None)
        if dup is not None:
            original = dup[1] + key[len(dup[0]):]
            other = state.get(original)
            if other is None:
                plan.problems.append(f"{key}: stored under a second name, but {original} is missing")
            elif not tensor.same_view(other) and not torch.equal(ckpt.materialize(tensor), ckpt.materialize(other)):
                plan.problems.append(f"{key}: should be the same tensor as {original}, but differs")
            else:
                plan.skipped[key] = f"the same tensors as {dup[1]}* (one module stored under two names)"
            continue
        rule = next(((p, c, t) for p, c, t in prefixes if key.startswith(p)), None)
        if rule is None:
            plan.problems.append(f"{key}: unexpected tensor (no place for it in this project's model)")
            continue
        prefix, component, target = rule
        name = _rename(component, target + key[len(prefix):])
        if component == "source_encoder" and name.startswith("model.visual_projection."):
            plan.skipped[key] = "the source condition uses the last layer's tokens, not the projection"
            continue
        plan.targets.setdefault(component, {})[name] = key
    return plan


# ---------------------------------------------------------------------------------------------
# architecture configs


def _local_folder(name: str | None) -> Path | None:
    """A folder for a path or a hub id already in the Hugging Face cache; None if neither."""
    if not name:
        return None
    path = Path(os.path.expanduser(str(name)))
    if path.is_dir():
        return path
    if path.is_absolute() or str(name).startswith((".", "~")) or str(name).count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a valid id): not on this machine
        return None


@dataclass
class Configs:
    unet: dict
    vae: dict
    scheduler: dict
    clip: dict
    clip_normalisation: dict
    dinov2: dict | None
    dinov2_normalisation: dict
    sources: dict[str, str]


def _resolve(option: str, given: str | None, named: str | None, read, shipped: str):
    """(config, where it came from): the option's folder/id, else the hyperparameters' id if
    local, else the shipped config."""
    if given:
        folder = _local_folder(given)
        if folder is None:
            raise ConversionError(f"--{option}={given}: neither a folder nor a hub id in the Hugging Face cache "
                                  f"(the converter needs only its config files); pass a local folder, or leave "
                                  f"--{option} out to use the config shipped in {CONFIG_DIR}/{shipped}.json")
        try:
            return read(folder), f"--{option}={given}"
        except (OSError, ValueError, KeyError) as e:
            raise ConversionError(f"--{option}={given}: no readable config ({e})") from None
    folder = _local_folder(named)
    if folder is not None:
        try:
            return read(folder), f"{named} (named by the checkpoint, found locally)"
        except (OSError, ValueError, KeyError):
            pass
    return None, f"{CONFIG_DIR.name}/{shipped}.json (shipped with this project)"


def resolve_configs(hp: dict, stage: str, pretrained_model: str | None = None, source_encoder: str | None = None,
                    fusion_encoder: str | None = None) -> Configs:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, Dinov2Config

    from .models.clip_encoder import _hf_config_dict
    from .models.source_encoder import _config_dict
    from .util.weights import read_normalisation

    def sd2(folder: Path):
        return (dict(UNet2DConditionModel.load_config(str(folder), subfolder="unet")),
                dict(AutoencoderKL.load_config(str(folder), subfolder="vae")),
                dict(DDPMScheduler.load_config(str(folder), subfolder="scheduler")))

    def clip(folder: Path):
        return _hf_config_dict(CLIPVisionConfig.from_pretrained(str(folder))), read_normalisation(str(folder))

    def dinov2(folder: Path):
        return _config_dict(Dinov2Config.from_pretrained(str(folder))), read_normalisation(str(folder))

    sources = {}
    clip_found, sources["fusion_encoder"] = _resolve(
        "fusion_encoder", fusion_encoder, hp.get("fusion_encoder_path") or hp.get("img_encoder_path"), clip,
        "clip_vit_large_patch14_vision")
    clip_config, clip_norm = clip_found or (shipped_config("clip_vit_large_patch14_vision"), {})
    if stage == "1":
        return Configs({}, {}, {}, clip_config, clip_norm, None, {}, sources)
    sd2_found, sources["pretrained_model"] = _resolve(
        "pretrained_model", pretrained_model, hp.get("pretrained_model_name_or_path"), sd2, "sd2_{unet,vae,scheduler}")
    unet, vae, scheduler = sd2_found or (shipped_config("sd2_unet"), shipped_config("sd2_vae"), shipped_config("sd2_scheduler"))
    dino_found, sources["source_encoder"] = _resolve(
        "source_encoder", source_encoder, hp.get("src_encoder_path"), dinov2, "dinov2_large")
    dino_config, dino_norm = dino_found or (shipped_config("dinov2_large"), {})
    return Configs(unet, vae, scheduler, clip_config, clip_norm, dino_config, dino_norm, sources)


# ---------------------------------------------------------------------------------------------
# building the output on the meta device, then filling it from the file


def _shape(ckpt: Checkpoint, key: str, dim: int) -> int:
    tensor = ckpt.state_dict.get(key)
    if tensor is None:
        raise ConversionError(f"{ckpt.path}: {key} is missing (needed to size the model)")
    return tensor.shape[dim]


def _fusion_model(ckpt: Checkpoint, configs: Configs, prefix: str):
    from .models.fusion import FusionModel

    encoder_config = {"backend": "transformers", "clip_config": configs.clip,
                      "source": f"converted from {ckpt.path.name}", **configs.clip_normalisation}
    return FusionModel(encoder_config=encoder_config,
                       projection_dim=_shape(ckpt, f"{prefix}combiner.kpt_projection_layer.weight", 0),
                       hidden_dim=_shape(ckpt, f"{prefix}combiner.combiner_layer.weight", 0), dropout=FUSION_DROPOUT)


def _hp_size(hp: dict, key: str, default):
    value = hp.get(key)
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) and len(value) == 2 else default


def build_stage1(ckpt: Checkpoint, configs: Configs) -> dict:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return {"fusion_model": _fusion_model(ckpt, configs, "")}


def build_stage2(ckpt: Checkpoint, configs: Configs) -> tuple[dict, dict]:
    """The pipeline's components with empty weights, and the pipeline's config values."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from .models.heads import FusionMLP, SourceMLP
    from .models.pose_encoder import PoseEncoder
    from .models.source_encoder import SourceEncoder

    hp = ckpt.hyper_parameters
    if hp.get("class_embed_type", "mlp") != "mlp" or hp.get("fusion_image_encoder", True) is not True:
        raise ConversionError(f"{ckpt.path}: trained with class_embed_type={hp.get('class_embed_type')!r}, "
                              f"fusion_image_encoder={hp.get('fusion_image_encoder')!r}; FPDM's final model "
                              "(and this converter) uses the fusion embedding through an 'mlp' class embedding")
    backend = {"dino": "dinov2", "clip": "clip"}.get(str(hp.get("src_encoder_type", "dino")))
    if backend != "dinov2":
        raise ConversionError(f"{ckpt.path}: source encoder type {hp.get('src_encoder_type')!r}; the converter "
                              "handles the final configuration, DINOv2 ('dino')")
    spec = dataset_spec(AUTHORS_DATASET)
    width, height = _hp_size(hp, "model_img_size", spec.model_size[::-1])
    source_size = _hp_size(hp, "src_encoder_size", (512, 512))[0]
    unet_config = dict(configs.unet)
    if unet_config.get("class_embed_type") not in (None, "identity"):
        raise ConversionError(f"the UNet config of {configs.sources['pretrained_model']} has a class embedding "
                              f"({unet_config['class_embed_type']}); an SD2 UNet config is needed")
    unet_config["class_embed_type"] = "identity"
    pose = "sd_model.pose_t_proj."
    pose_channels = [_shape(ckpt, f"{pose}conv_in.weight", 0)]
    i = 1
    while f"{pose}blocks.{i}.weight" in ckpt.state_dict:
        pose_channels.append(_shape(ckpt, f"{pose}blocks.{i}.weight", 0))
        i += 2
    mlp = "sd_model.srcimage_proj_model.net."
    fusion_mlp = "unet.class_embedding.net."
    with init_empty_weights(include_buffers=False):
        components = {
            "vae": AutoencoderKL.from_config(configs.vae),
            "unet": UNet2DConditionModel.from_config(unet_config),
            "pose_encoder": PoseEncoder(out_channels=_shape(ckpt, f"{pose}conv_out.weight", 0),
                                        conditioning_channels=_shape(ckpt, f"{pose}conv_in.weight", 1),
                                        block_out_channels=tuple(pose_channels)),
            "source_mlp": SourceMLP(in_dim=_shape(ckpt, f"{mlp}0.weight", 1),
                                    hidden_dim=_shape(ckpt, f"{mlp}0.weight", 0),
                                    out_dim=_shape(ckpt, f"{mlp}4.weight", 0),
                                    dropout=float(hp.get("proj_drop_rate", 0.2))),
            "fusion_mlp": FusionMLP(in_dim=_shape(ckpt, f"{fusion_mlp}0.weight", 1),
                                    hidden_dim=_shape(ckpt, f"{fusion_mlp}0.weight", 0),
                                    out_dim=_shape(ckpt, f"{fusion_mlp}3.weight", 0), dropout=FUSION_MLP_DROPOUT),
            "source_encoder": SourceEncoder(backend="dinov2", model_config=configs.dinov2, image_size=source_size,
                                            source=f"converted from {ckpt.path.name}",
                                            **configs.dinov2_normalisation),
            "fusion_model": _fusion_model(ckpt, configs, "fusion_model."),
        }
    components["scheduler"] = DDPMScheduler.from_config(configs.scheduler)
    pipeline_config = dict(
        height=height, width=width, source_size=source_size,
        fusion_size=int(components["fusion_model"].encoder.image_size), pose_draw_size=spec.pose_draw_size,
        pose_format=spec.pose_format,
        sampling={"num_inference_steps": int(hp.get("num_inference_steps", 20)),
                  "guidance_scale": float(hp.get("guidance_scale", 2.0)), "scheduler": "ddpm",
                  "seed": int(hp.get("seed_number", 7))})
    return components, pipeline_config


def check_and_fill(ckpt: Checkpoint, plan: Plan, components: dict) -> None:
    """Every problem at once (unmapped, missing, unexpected, shape, unreadable); then every
    component's tensors assigned from the mapped file (no copy)."""
    problems = list(plan.problems)
    for name, module in components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        expected = module.state_dict()
        mapped = plan.targets.get(name, {})
        for key in sorted(set(expected) - set(mapped)):
            problems.append(f"{name}.{key}: missing from the checkpoint")
        for key in sorted(set(mapped) - set(expected)):
            problems.append(f"{mapped[key]}: no tensor {name}.{key} in this project's model")
        for key in sorted(set(mapped) & set(expected)):
            tensor: LazyTensor = ckpt.state_dict[mapped[key]]
            if tuple(tensor.shape) != tuple(expected[key].shape):
                problems.append(f"{mapped[key]}: shape {list(tensor.shape)}, but {name}.{key} is "
                                f"{list(expected[key].shape)}")
            else:
                why = ckpt.check(tensor)
                if why:
                    problems.append(f"{mapped[key]}: {why}")
    for name in sorted(set(plan.targets) - set(components)):
        problems.append(f"{name}: tensors for a component this kind of checkpoint does not have")
    if problems:
        shown = problems[:40]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ConversionError(f"{ckpt.path}: {len(problems)} problem(s), nothing written:\n  "
                              + "\n  ".join(shown) + more)
    for name, module in components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        tensors = {key: ckpt.materialize(ckpt.state_dict[src]) for key, src in plan.targets[name].items()}
        module.load_state_dict(tensors, strict=True, assign=True)
        left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
        if left:
            raise ConversionError(f"{name}: tensors left unfilled after loading: {left[:5]}")
        module.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------
# the command


def convert(checkpoint: str | Path, out: str | Path, stage: str = "auto", pretrained_model: str | None = None,
            source_encoder: str | None = None, fusion_encoder: str | None = None) -> dict:
    """Convert one released checkpoint into ``out`` (written atomically, replacing a previous
    conversion); returns the summary also written as ``out/conversion.json``."""
    from .util.fileio import atomic_dir

    if stage not in STAGES:
        raise ConversionError(f"--stage={stage}: choose one of {', '.join(STAGES)}")
    with read_checkpoint(checkpoint) as ckpt:
        found = detect_stage(ckpt)
        if stage != "auto" and stage != found:
            kinds = {"1": "stage-1 (the fusion model, B1)", "2": "stage-2 (the diffusion model, B2)"}
            raise ConversionError(f"{ckpt.path}: a {kinds[found]} checkpoint, but --stage={stage} asks for a "
                                  f"{kinds[stage]} one")
        plan = plan_mapping(ckpt, found)
        configs = resolve_configs(ckpt.hyper_parameters, found, pretrained_model, source_encoder, fusion_encoder)
        if found == "1":
            components, pipeline_config = build_stage1(ckpt, configs), None
        else:
            components, pipeline_config = build_stage2(ckpt, configs)
        check_and_fill(ckpt, plan, components)
        summary = {
            "checkpoint": str(ckpt.path), "bytes": ckpt.path.stat().st_size, "stage": int(found),
            "written_as": "FusionModel (B1's export)" if found == "1" else "FPDMPipeline (B2's export)",
            "lightning_version": ckpt.top.get("pytorch-lightning_version"), "epoch": ckpt.top.get("epoch"),
            "global_step": ckpt.top.get("global_step"), "configs": configs.sources,
            "tensors_mapped": sum(len(v) for v in plan.targets.values()),
            "tensors_skipped": len(plan.skipped),
            "skipped": _skip_summary(plan.skipped),
            "not_read": sorted(k for k in ckpt.top if k not in ("state_dict", "hyper_parameters")),
            "hyper_parameters": ckpt.hyper_parameters,
        }
        with atomic_dir(out) as tmp:
            if found == "1":
                components["fusion_model"].save_pretrained(tmp)
            else:
                from .pipeline import FPDMPipeline

                FPDMPipeline(**components, **pipeline_config).save_pretrained(tmp)
            (tmp / "conversion.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _skip_summary(skipped: dict[str, str]) -> dict[str, str]:
    """Skipped tensors grouped by reason: {reason: "N tensors, e.g. KEY"}."""
    groups: dict[str, list[str]] = {}
    for key, reason in skipped.items():
        groups.setdefault(reason, []).append(key)
    return {reason: f"{len(keys)} tensors, e.g. {keys[0]}" for reason, keys in groups.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m src.convert_authors", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the authors' stage-1 or stage-2 last.ckpt")
    p.add_argument("--out", required=True, help="folder to write (a fusion-model folder or a pipeline folder)")
    p.add_argument("--stage", default="auto", choices=STAGES, help="what the file must be (auto: recognised)")
    p.add_argument("--pretrained_model", default=None, help="SD2 folder or cached hub id for the UNet/VAE/scheduler "
                                                           "configs (default: the checkpoint's, else shipped)")
    p.add_argument("--source_encoder", default=None, help="DINOv2 folder or cached hub id for its config")
    p.add_argument("--fusion_encoder", default=None, help="CLIP folder or cached hub id for its config")
    return p


def main(argv=None) -> int:
    import time

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        summary = convert(args.checkpoint, args.out, args.stage, args.pretrained_model, args.source_encoder,
                          args.fusion_encoder)
    except (CheckpointError, ConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint}: stage {summary['stage']}, {summary['tensors_mapped']} tensors written, "
          f"{summary['tensors_skipped']} skipped (duplicates), optimizer state not read -> {args.out} "
          f"({summary['written_as']}) in {time.perf_counter() - start:.1f} s")
    for what, where in summary["configs"].items():
        print(f"  {what} config: {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
