"""Checkpoints in the FPDM authors' exact Lightning format, with random weights, for the tests and
for measuring the converter at full size (``python bench/authors_format.py --size=full``).

The writer knows the authors' layout from their code, not from this project's converter: their
module names (``sd_model.pose_t_proj``, ``combiner.kpt_projection_layer``, ...), the modules
stored under two names (``sd_model.unet`` is ``unet``; ``fusion_model.pose_encoder`` is
``fusion_model.img_encoder``; in stage 1 ``pose_encoder`` is ``img_encoder``), DINOv2's attention
names of transformers 4.40 (``attention.attention.query`` ...), Lightning's top-level entries
and AdamW state for every trainable tensor, and the hyperparameters as a pickled omegaconf
``DictConfig`` (``hparams_type`` its class), as ``save_hyperparameters(config)`` leaves them.

    python bench/authors_format.py --size=full --out=/tmp/authors   # ~3.4 GB stage 1, ~13 GB stage 2
    /usr/bin/time -v python -m src.convert_authors --checkpoint=/tmp/authors/stage2.ckpt --out=/tmp/fpdm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DINOV2_440_NAMES = (("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
                    ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."))


def configs(size: str) -> dict:
    """Architecture configs of the networks: "full" (the shipped paper-size ones) or "tiny"."""
    from src.models import shipped_config
    from src.models.clip_encoder import tiny_encoder_config
    from src.models.sd2 import tiny_sd2_configs
    from src.models.source_encoder import tiny_model_config

    if size == "full":
        read = shipped_config
        return {"unet": read("sd2_unet"), "vae": read("sd2_vae"), "scheduler": read("sd2_scheduler"),
                "clip": read("clip_vit_large_patch14_vision"), "dinov2": read("dinov2_large"),
                "pose_channels": (16, 32, 96, 256), "mlp_hidden": 768, "model_img_size": [352, 512],
                "src_encoder_size": [512, 512]}
    tiny = tiny_sd2_configs(prediction_type="v_prediction")
    return {"unet": tiny["unet"], "vae": tiny["vae"], "scheduler": tiny["scheduler"],
            "clip": tiny_encoder_config("transformers")["clip_config"], "dinov2": tiny_model_config("dinov2"),
            "pose_channels": (8, 8, 16, 16), "mlp_hidden": 24, "model_img_size": [48, 64],
            "src_encoder_size": [32, 32]}


def _clean(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_") and k != "model_type"}


def _mlp(dims, layer_norm: bool) -> nn.Sequential:
    """The authors' MLPs: Linear, GELU, Dropout, [LayerNorm,] Linear, Dropout."""
    d_in, d_hidden, d_out = dims
    middle = [nn.LayerNorm(d_hidden)] if layer_norm else []
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(0.2), *middle,
                         nn.Linear(d_hidden, d_out), nn.Dropout(0.2))


def _combiner(dim: int, projection: int, hidden: int) -> dict[str, torch.Tensor]:
    layers = {"kpt_projection_layer": nn.Linear(dim, projection), "image_projection_layer": nn.Linear(dim, projection),
              "combiner_layer": nn.Linear(2 * projection, hidden), "output_layer": nn.Linear(hidden, dim),
              "dynamic_scalar.0": nn.Linear(2 * projection, hidden), "dynamic_scalar.3": nn.Linear(hidden, 1)}
    return {f"{name}.{p}": t.detach() for name, layer in layers.items() for p, t in layer.state_dict().items()}


def _randomised(module: nn.Module) -> nn.Module:
    """Every parameter random at a scale that carries the input through (ControlNet's
    zero-initialised conv_out included), so a test sees what each input does."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, p[0].numel() ** -0.5 if p.ndim > 1 else 0.05)
    return module


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def stage1_state_dict(cfg: dict) -> tuple[dict, list[str]]:
    """(the FusionModel's state_dict, the keys AdamW trains)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**_clean(cfg["clip"])))
    clip_state = {k: v.detach() for k, v in clip.state_dict().items()}
    dim = clip.config.projection_dim
    state = {**_prefixed("img_encoder.", clip_state), **_prefixed("pose_encoder.", clip_state),
             **_prefixed("combiner.", _combiner(dim, dim, dim))}
    trained = [k for k in state if not k.startswith("pose_encoder.")]
    return state, trained


def stage2_state_dict(cfg: dict) -> tuple[dict, list[str]]:
    """(the FPDM module's state_dict, the keys AdamW trains: the UNet and the two heads)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
    from transformers import Dinov2Config, Dinov2Model

    unet = UNet2DConditionModel.from_config({**cfg["unet"], "class_embed_type": None})
    vae = AutoencoderKL.from_config(cfg["vae"])
    time_dim = unet.time_embedding.linear_2.out_features
    fusion_state, _ = stage1_state_dict(cfg)
    dim = fusion_state["img_encoder.visual_projection.weight"].shape[0]
    class_embedding = _mlp((dim, dim, time_dim), layer_norm=False)
    dino = Dinov2Model(Dinov2Config(**_clean(cfg["dinov2"])))
    dino_state = {}
    for k, v in dino.state_dict().items():
        for new, old in DINOV2_440_NAMES:
            k = k.replace(new, old)
        dino_state[k] = v.detach()
    source_mlp = _randomised(_mlp((dino.config.hidden_size, cfg["mlp_hidden"], unet.config.cross_attention_dim),
                                  layer_norm=True))
    pose = _randomised(ControlNetConditioningEmbedding(conditioning_embedding_channels=unet.config.block_out_channels[0],
                                                       conditioning_channels=3,
                                                       block_out_channels=tuple(cfg["pose_channels"])))
    unet_state = {**{k: v.detach() for k, v in unet.state_dict().items()},
                  **_prefixed("class_embedding.net.", {k: v.detach() for k, v in _randomised(class_embedding).state_dict().items()})}
    state = {
        **_prefixed("vae.", {k: v.detach() for k, v in vae.state_dict().items()}),
        **_prefixed("unet.", unet_state),
        **_prefixed("fusion_model.", fusion_state),
        **_prefixed("src_image_encoder.", dino_state),
        **_prefixed("sd_model.srcimage_proj_model.net.", {k: v.detach() for k, v in source_mlp.state_dict().items()}),
        **_prefixed("sd_model.pose_t_proj.", {k: v.detach() for k, v in pose.state_dict().items()}),
        **_prefixed("sd_model.unet.", unet_state),
    }
    trained = [k for k in state if k.startswith(("unet.", "sd_model.srcimage_proj_model.", "sd_model.pose_t_proj."))]
    return state, trained


def hyper_parameters(stage: int, cfg: dict, ids: dict | None = None):
    """The authors' config as their scripts build it, an omegaconf DictConfig (needs omegaconf)."""
    from omegaconf import OmegaConf

    ids = {"pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1", "src_encoder_path": "facebook/dinov2-large",
           "fusion_encoder_path": "openai/clip-vit-large-patch14", **(ids or {})}
    if stage == 1:
        return OmegaConf.create({"project_name": "deepfashion-fusion-CLIP-b48-p005-r10-epoch5-lr1e-5-wd1e-4",
                                 "batch_size": 48, "combiner_hidden_dim": 768, "max_epochs": 5, "lr": 1e-5,
                                 "weight_decay": 1e-4, "temperature": 0.07, "img_size": [224, 224],
                                 "lambda_l1": 1e-4, "encoder_type": "clip",
                                 "img_encoder_path": ids["fusion_encoder_path"], "phase": "train"})
    return OmegaConf.create({
        "project_name": "diffusion-deepfashion-clipdino-st1ep5-b42-cum3-size352-kptaug-spose-ablation6",
        "batch_size": 42, "lr": 1e-4, "accumulate_grad_batches": 3, "max_epochs": 100, "phase": "train",
        "model_img_size": list(cfg["model_img_size"]), "src_encoder_size": list(cfg["src_encoder_size"]),
        "input_s_img_size": list(cfg["src_encoder_size"]), "input_t_img_size": list(cfg["model_img_size"]),
        "guidance_scale": 2.0, "num_inference_steps": 20, "seed_number": 7, "noise_offset": 0.1,
        "module_drop_rate": 0.2, "pose_drop_rate": 0.2, "proj_drop_rate": 0.2, "src_encoder_type": "dino",
        "fusion_encoder_type": "clip", "fusion_image_encoder": True, "class_embed_type": "mlp",
        "patch_proj_in_dim": 1024, "hidden_dim": 768, "image_proj_in_dim": 768,
        "fusion_model_path": "./logs/deepfashion-fusion-CLIP-b48-p005-r10-epoch5-lr1e-5-wd1e-4/model0/last.ckpt",
        "trained_model_name": None, "unet_conv_in_kenel": 3, **ids})


def lightning_checkpoint(state: dict, trained: list[str], hparams, optimizer_state: bool = True) -> dict:
    """The dict Lightning's ModelCheckpoint saves: AdamW's exp_avg/exp_avg_sq for every trained
    tensor (a module under two names counted once, as ``parameters()`` does)."""
    unique = []
    seen = set()
    for k in trained:
        if id(state[k]) not in seen:
            seen.add(id(state[k]))
            unique.append(k)
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                                "amsgrad": False, "foreach": None, "maximize": False,
                                                "capturable": False, "differentiable": False, "fused": None,
                                                "initial_lr": 1e-4, "params": list(range(len(unique)))}]}
    if optimizer_state:
        for i, k in enumerate(unique):
            optimizer["state"][i] = {"step": torch.tensor(12345.0), "exp_avg": torch.full_like(state[k], 1e-3),
                                     "exp_avg_sq": torch.full_like(state[k], 1e-6)}
    return {
        "epoch": 99, "global_step": 12345, "pytorch-lightning_version": "2.2.1", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 12345},
                               "epoch_progress": {"total": {"ready": 100, "completed": 99}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                      "'every_n_epochs': 1, 'train_time_interval': None}": {
                          "monitor": "val_loss", "best_model_score": torch.tensor(0.1234),
                          "best_model_path": "logs/x/model0/epoch=98-step=12222.ckpt", "current_score": torch.tensor(0.2),
                          "dirpath": "logs/x/model0", "best_k_models": {"logs/x/model0/epoch=98.ckpt": torch.tensor(0.1)},
                          "kth_best_model_path": "logs/x/model0/epoch=98.ckpt", "kth_value": torch.tensor(0.1),
                          "last_model_path": "logs/x/model0/last.ckpt"}},
        "optimizer_states": [optimizer],
        "lr_schedulers": [{"warmup_steps": 5, "step_size": 50, "gamma": 0.1, "base_lr": 1e-4, "base_lrs": [1e-4],
                           "last_epoch": 99, "_step_count": 100, "_get_lr_called_within_step": False,
                           "_last_lr": [1e-5]}],
        "MixedPrecision": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 17},
        "hparams_name": "args", "hyper_parameters": hparams, "hparams_type": type(hparams),
    }


def write(stage: int, path: str | Path, size: str = "tiny", seed: int = 0, ids: dict | None = None,
          optimizer_state: bool = True) -> dict:
    """Write a stage-1 or stage-2 checkpoint in the authors' format; returns its state_dict."""
    cfg = configs(size)
    torch.manual_seed(seed)
    state, trained = stage1_state_dict(cfg) if stage == 1 else stage2_state_dict(cfg)
    ckpt = lightning_checkpoint(state, trained, hyper_parameters(stage, cfg, ids), optimizer_state)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="tiny", choices=("tiny", "full"))
    p.add_argument("--out", default="/tmp/authors_checkpoints")
    p.add_argument("--stage", default="both", choices=("1", "2", "both"))
    args = p.parse_args()
    for stage in (1, 2) if args.stage == "both" else (int(args.stage),):
        path = Path(args.out) / f"stage{stage}.ckpt"
        state = write(stage, path, args.size)
        print(f"{path}: {len(state)} state_dict keys, {path.stat().st_size / 2**30:.2f} GiB")
        del state


if __name__ == "__main__":
    main()
