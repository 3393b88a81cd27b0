"""B2: stage 2, the SD2 UNet conditioned on the target pose, the source appearance and the fusion embedding.

    accelerate launch B2.train_Diffusion_model.py --dataset_root=data/deepfashion --fusion_model=logs/B1/fusion_model --out_dir=logs/B2
    python B2.train_Diffusion_model.py --preset=tiny --dataset_root=PATH --out_dir=OUT     # CPU smoke run
    python B2.train_Diffusion_model.py ... --resume=latest                                 # continue a run
    accelerate launch B2.train_Diffusion_model.py --init_pipeline=logs/B2/pipeline ...      # fine-tune a pipeline
    accelerate launch B2.train_Diffusion_model.py --config=configs/phoenix.py ...                  # PHOENIX-2014T
    accelerate launch B2.train_Diffusion_model.py --config=configs/market1501.py ...               # Market-1501

Trains the UNet, the pose encoder, the source MLP and the fusion MLP; the VAE, the source encoder
(DINOv2) and the stage-1 fusion model stay frozen. Loss: MSE on the scheduler's prediction
target (epsilon or v, from the SD2 folder's scheduler config), with noise offset and each
condition dropped independently (zeroed where it enters the UNet): all of it in
src/train/stage2.py (training_loss). Logs images/s and, on a GPU of known peak, MFU.

Writes OUT/pipeline/ (FPDMPipeline.save_pretrained: what C1 loads; EMA weights when use_ema),
OUT/validation/step-<N>.png (source | target pose | ground truth | generated),
OUT/checkpoints/checkpoint-<step>/ (rotated), OUT/tensorboard/ and OUT/B2_config.json.
SIGTERM or Ctrl-C saves a checkpoint and exits; --resume=latest continues where it stopped.
batch_size is per process: the effective batch is batch_size x gradient_accumulation_steps x processes.

Disk: before the first step B2 prints what the run will write (a checkpoint: the trained weights
+ AdamW's two moments (+ EMA); up to checkpoints_total_limit + 1 of them at once, since the newest
is written before the oldest is deleted; the exported pipeline) and stops with one line when
out_dir's disk lacks it. At the paper's size: 10.4 GB a checkpoint, 6.27 GB the pipeline, 41.8 GB
at the peak with checkpoints_total_limit = 3 (README, "Disk and threads").
CPU threads: without a GPU, `accelerate launch` gives each process one thread (OMP_NUM_THREADS=1);
B2 then says so: pass --num_cpu_threads_per_process=N to accelerate launch, or run it with python.

The dataset's sizes and augmentations (target_size, pose_draw_size, jitter_sigma, flip_prob left
at None) are its DatasetSpec's (src.data): PHOENIX-2014T's are in src/data/phoenix_datasets.py,
Market-1501's in src/data/market.py (--config=configs/market1501.py).
The 256x176 setting of the paper: --config=configs/deepfashion_256x176.py (target, source size
and source scales at half size).

Fine-tuning a trained pipeline: --init_pipeline=DIR (a folder FPDMPipeline.save_pretrained
wrote: B2's OUT/pipeline, or the authors' released model converted to that layout) starts from
DIR instead of SD2 + B1 + new heads: its UNet, pose encoder, source MLP and fusion MLP are
trained on (their dropout rates kept), its VAE, source encoder and fusion model stay frozen, its
scheduler config gives the prediction type. pretrained_model, source_encoder, source_backend,
fusion_model, pose_channels, mlp_hidden_dim and mlp_dropout are then not used. The geometry
(target_size, source_size, fusion_size, pose_draw_size) is the folder's, except the values you
set (with a preset, a --config file or --name=value, even to the header's own value): those are
yours, so a model can be fine-tuned at another size (another source_size re-sizes the source
encoder's input). The log line says which value came from where; B2_config.json records the
values used. The folder's keypoint format must be the dataset's. A resumed run must name the
same folder (its frozen models come from there).
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
dataset = "deepfashion"                    # "deepfashion", "phoenix" or "market" (src.data.DATASETS)
dataset_root = "data/deepfashion"
train_pairs = "train_pairs_data.json"
val_pairs = "test_pairs_data.json"
out_dir = "logs/B2"
pretrained_model = "stabilityai/stable-diffusion-2-1"  # SD2-family hub id or folder; "tiny" = tiny random SD2
source_encoder = "facebook/dinov2-large"   # hub id or folder (DINOv2, or a CLIP vision tower); "tiny"
source_backend = ""                        # "" = as the checkpoint says; "dinov2" or "clip"
fusion_model = "logs/B1/fusion_model"      # the B1 export; "tiny" = random tiny model (smoke runs only)
init_pipeline = ""                         # "" = the three above + new heads; a pipeline folder = fine-tune it
                                           #   (its sizes unless you set them: see "Fine-tuning" above)
target_size = None                         # (height, width) of target image and pose; None = the dataset's model size
source_size = 512                          # the source, square, as the source encoder sees it (1297 DINOv2 tokens)
fusion_size = 224                          # the fusion model's inputs: source and target pose squashed
pose_draw_size = None                      # poses are drawn at this size, then resized to target_size; None = the dataset's
source_scales = (256, 512)                 # the source is squashed to one of these at random, then to
                                           #   source_size (augmentation); none above source_size
flip_prob = None                           # None = the dataset's (PHOENIX: 0, signing is not mirror-symmetric)
identity_prob = 0.05
jitter_sigma = None                        # keypoint noise in pixels at pose_draw_size; None = the dataset's
pose_channels = (16, 32, 96, 256)          # pose encoder (ControlNet conditioning embedding)
mlp_hidden_dim = 768                       # source MLP: width -> 768 -> cross_attention_dim
mlp_dropout = 0.2                          # dropout of the source MLP and of the fusion MLP (768 -> 768 -> 1280)
lr = 1e-4                                  # AdamW; the base of the per-epoch schedule below
lr_warmup_epochs = 5                       # epoch e < 5: lr * (e + 1) / 5            (the authors' WarmupStepLR,
lr_step_epochs = 50                        # then lr * lr_gamma ** ((e - 5) // 50):    set once per epoch)
lr_gamma = 0.1
weight_decay = 0.0
adam_epsilon = 1e-8
max_grad_norm = 0.0                        # 0 = no clipping (the authors'); e.g. 1.0 clips
batch_size = 42                            # per process
gradient_accumulation_steps = 3
epochs = 100
max_steps = -1                             # > 0: train exactly this many steps, overriding `epochs`
noise_offset = 0.1
drop_pose = 0.2                            # condition dropout rates (independent)
drop_source = 0.2
drop_fusion = 0.2
seed = 7
mixed_precision = "auto"                   # auto = bf16 on GPU, fp32 on CPU; or no/bf16/fp16
gradient_checkpointing = False
use_ema = False
ema_decay = 0.9999
sdpa = True                                # PyTorch scaled-dot-product attention
tf32 = True                                # TF32 matmuls on Ampere+ GPUs
channels_last = False
compile = False                            # torch.compile the UNet
checkpointing_steps = 2000
checkpoints_total_limit = 3
resume = ""                                # "", "latest" or a checkpoint folder
validation_steps = 2000                    # grid + validation loss every N steps (0 = only at the end)
validation_pairs = 4                       # rows of the validation grid (first pairs of val_pairs)
validation_loss_pairs = 64                 # val pairs for the fixed-noise validation loss
validation_inference_steps = 20
validation_guidance_scale = 2.0
validation_scheduler = "ddpm"
num_workers = 8
cache_dataset = False                      # keep decoded samples in memory (small datasets only)
log_every = 10
# -----------------------------------------------------------------------------------------------
# tiny's sizes are per dataset: a quarter of its model size (Market-1501's 128x64: half, so the
# latent keeps a few pixels); poses drawn on a canvas small enough for the CPU and large enough
# that the lines survive the resize (PHOENIX, Market: their own frames).
PRESETS = {
    "tiny": {"pretrained_model": "tiny", "source_encoder": "tiny", "fusion_model": "tiny",
             "target_size": {"deepfashion": (128, 88), "phoenix": (80, 64), "market": (64, 32)}, "source_size": 64, "fusion_size": 64,
             "pose_draw_size": {"deepfashion": (256, 176), "phoenix": None, "market": None},
             "source_scales": (32, 64), "pose_channels": (8, 8, 16, 16), "mlp_hidden_dim": 32,
             "lr": 1e-3, "lr_warmup_epochs": 0, "batch_size": 4, "gradient_accumulation_steps": 1, "epochs": 20,
             "checkpointing_steps": 20, "checkpoints_total_limit": 2, "validation_steps": 50,
             "validation_pairs": 2, "validation_loss_pairs": 8, "validation_inference_steps": 5,
             "num_workers": 0, "cache_dataset": False, "log_every": 5},
}

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

from src.config import as_config_error, changed_values, configure, save_config  # noqa: E402

# torch, diffusers and the project's models are imported inside the functions, after configure():
# --help and a bad option answer at once instead of after seconds of imports.


def data_spec():
    """The chosen dataset's declaration: its sizes, augmentations, DiffusionDataset and check_dataset."""
    from src.data import dataset_spec

    return as_config_error(dataset_spec, dataset)


def take_dataset_values(cfg: dict) -> None:
    """The sizes and augmentations left at None are the dataset's, into the globals and ``cfg`` (the
    saved config records the values used)."""
    spec = data_spec()
    theirs = {"target_size": spec.model_size, "pose_draw_size": spec.pose_draw_size,
              "jitter_sigma": spec.jitter_sigma, "flip_prob": spec.flip_prob}
    taken = {k: v for k, v in theirs.items() if cfg[k] is None}
    globals().update(taken)
    cfg.update(taken)


GEOMETRY_NAMES = ("target_size", "source_size", "fusion_size", "pose_draw_size")
UNUSED_WITH_INIT_PIPELINE = ("pretrained_model", "source_encoder", "source_backend", "fusion_model", "pose_channels",
                             "mlp_hidden_dim", "mlp_dropout")


def names_set_by_user(cfg: dict, names, argv=None) -> set:
    """Which of ``names`` a preset, a --config file or a --name=value set, even to the header's
    own value: the same arguments applied again to the header with those names unset (None)."""
    probe = {k: globals()[k] for k in cfg if k != "preset"}
    probe.update(dict.fromkeys(names))
    given = configure(probe, presets=PRESETS, argv=argv, quiet=True)
    return {k for k in names if given[k] is not None}


def take_init_pipeline(cfg: dict, user_set: set) -> str:
    """--init_pipeline: check the folder and its keypoint format before anything is written, take
    its geometry except the values in ``user_set`` (into the globals and ``cfg``, so the saved
    config records the sizes used) and return the log line."""
    from src.train.stage2 import check_pipeline_folder, folder_geometry

    folder = folder_geometry(check_pipeline_folder(init_pipeline))
    pose_format = data_spec().pose_format
    if folder.pose_format != pose_format:
        raise SystemExit(f"error: init_pipeline {init_pipeline} was trained on {folder.pose_format} poses, "
                         f"dataset={dataset!r} has {pose_format} poses")
    theirs = {"target_size": (folder.height, folder.width), "source_size": folder.source_size,
              "fusion_size": folder.fusion_size, "pose_draw_size": folder.pose_draw_size}
    taken = {k: v for k, v in theirs.items() if k not in user_set and v is not None}
    mine = {k: cfg[k] for k in GEOMETRY_NAMES if k not in taken}
    globals().update(taken)
    cfg.update(taken, init_pipeline=str(Path(init_pipeline).expanduser().resolve()))
    parts = [f"from the folder: {', '.join(f'{k}={v!r}' for k, v in taken.items()) or 'nothing'}"]
    if mine:
        parts.append("yours: " + ", ".join((f"{k}: the dataset's" if v is None else f"{k}={v!r}")
                                           + (f" (the folder's {theirs[k]!r})" if theirs[k] != v else "")
                                           for k, v in mine.items()))
    return (f"init_pipeline {cfg['init_pipeline']}: fine-tuning its UNet, pose encoder, source MLP and fusion MLP; "
            f"its VAE, source encoder and fusion model frozen; geometry {'; '.join(parts)}; "
            f"not used: {', '.join(UNUSED_WITH_INIT_PIPELINE)}")


# What may differ when a run is resumed: how long, how often, how fast. Every other value changes
# the model or the data, so a resume that changes it is refused.
MAY_CHANGE_ON_RESUME = (
    "resume", "max_steps", "epochs", "log_every", "checkpointing_steps", "checkpoints_total_limit",
    "validation_steps", "validation_pairs", "validation_loss_pairs", "validation_inference_steps",
    "validation_guidance_scale", "validation_scheduler", "num_workers", "cache_dataset", "compile",
    "gradient_checkpointing", "sdpa", "tf32", "channels_last", "preset", "config",
)


def check_resume_keeps_the_run(cfg: dict, out: Path) -> None:
    """A resumed run continues the run its checkpoints came from: its values (``B2_config.json``,
    read before it is overwritten) must be these, except ``MAY_CHANGE_ON_RESUME``."""
    from src.train import common as training

    saved = out / "B2_config.json"
    if not resume or not saved.is_file() or training.resolve_resume(resume, out) is None:
        return
    changed = changed_values(json.loads(saved.read_text()), cfg, MAY_CHANGE_ON_RESUME)
    if changed:
        what = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in changed.items())
        raise training.CheckpointError(
            f"{out} was trained with {what}; resume with the run's values or start a new out_dir (only "
            f"{', '.join(MAY_CHANGE_ON_RESUME)} may change on resume)")


def check_source_scales() -> None:
    """The source is squashed to a scale and then to source_size: a scale above source_size only
    adds a resize (at source_size 256, scales (256, 512) lose the low-resolution half of the
    augmentation), so it is refused."""
    if not source_scales or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in source_scales):
        raise SystemExit(f"config error: source_scales={tuple(source_scales)!r}: give one or more sizes in pixels")
    above = [s for s in source_scales if s > source_size]
    if above:
        raise SystemExit(
            f"config error: source_scales={tuple(source_scales)!r} has {above} above source_size={source_size}: "
            f"the source is squashed to a scale and then to source_size, so use scales up to source_size, "
            f"e.g. --source_scales=({source_size // 2}, {source_size})")


def datasets():
    from torch.utils.data import Subset

    from src.train.common import MemoryCache

    DiffusionDataset = data_spec().DiffusionDataset

    common = dict(target_size=target_size, source_size=source_size, fusion_size=fusion_size,
                  pose_draw_size=pose_draw_size)
    train = DiffusionDataset(dataset_root, train_pairs, train=True, jitter_sigma=jitter_sigma, flip_prob=flip_prob,
                             identity_prob=identity_prob, source_scales=source_scales, seed=seed, **common)
    val = DiffusionDataset(dataset_root, val_pairs, train=False, **common)
    n_val = max(validation_pairs, validation_loss_pairs)
    val = Subset(val, range(min(n_val, len(val))))
    return train, (MemoryCache(train) if cache_dataset else train), val


def validation_loss_and_grid(accelerator, pipe, denoiser, val_set, step, out):
    """Fixed-noise validation loss (all processes) and the image grid (main process)."""
    import numpy as np
    import torch

    from src.util.images import to_pil
    from src.util.fileio import atomic_save_image
    from src.util.images import comparison_grid
    from src.train.stage2 import diffusion_loss, frozen_conditions

    device = accelerator.device
    model = accelerator.unwrap_model(denoiser)
    was_training = model.training
    model.eval()
    losses = []
    n_loss = min(validation_loss_pairs, len(val_set))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, n_loss, batch_size):
            items = [val_set[i] for i in range(start, min(n_loss, start + batch_size))]
            batch = {k: torch.stack([it[k] for it in items]) for k in ("target", "target_pose", "source",
                                                                       "fusion_source", "fusion_pose")}
            latents, tokens, fusion = frozen_conditions(pipe, batch, device, sample=False)
            noise = torch.randn(latents.shape, generator=g).to(device)
            t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g).to(device)
            loss = diffusion_loss(model, pipe.scheduler, latents, batch["target_pose"].to(device), tokens, fusion,
                                  noise=noise, timesteps=t)
            losses.append(loss.item() * latents.shape[0])
    result = {"val/loss": sum(losses) / max(1, n_loss)}
    if accelerator.is_main_process and validation_pairs > 0:
        items = [val_set[i] for i in range(min(validation_pairs, len(val_set)))]
        with accelerator.autocast():
            images = pipe(torch.stack([it["source"] for it in items]), torch.stack([it["target_pose"] for it in items]),
                          fusion_pose=torch.stack([it["fusion_pose"] for it in items]),
                          num_inference_steps=validation_inference_steps, guidance_scale=validation_guidance_scale,
                          scheduler=validation_scheduler, seeds=[seed + i for i in range(len(items))],
                          height=target_size[0], width=target_size[1], output_type="pil").images
        rows = [[to_pil(it["source"]), to_pil(it["target_pose"]), to_pil(it["target"]), im]
                for it, im in zip(items, images)]
        grid = comparison_grid(rows, (target_size[0], target_size[1]))
        path = atomic_save_image(out / "validation" / f"step-{step:07d}.png", grid)
        result["grid"] = path
        try:
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("validation/grid", np.asarray(grid), step, dataformats="HWC")
        except (ValueError, AttributeError, ImportError):
            pass
    model.train(was_training)
    accelerator.wait_for_everyone()
    return result


def main(cfg, user_set: set = frozenset()):
    """Train; ``user_set``: the geometry names the user set (``names_set_by_user``), which an
    init_pipeline's geometry does not replace."""
    import torch
    from tqdm.auto import tqdm

    from src.train import common as training
    from src.util.devices import cpu_threads_note, enable_tf32
    from src.util.fileio import atomic_dir
    from src.models.sd2 import make_tiny_sd2
    from src.train.flops import training_mfu
    from src.train.stage2 import (
        Geometry, Heads, build_pipeline, disk_footprint, load_pipeline_to_train, training_loss,
    )

    out = Path(out_dir)
    init_line = take_init_pipeline(cfg, user_set) if init_pipeline else None  # before anything is written
    take_dataset_values(cfg)  # after the folder's geometry: the dataset's fills what neither gave
    check_source_scales()  # after the init_pipeline's geometry is taken: its source_size counts
    check_resume_keeps_the_run(cfg, out)
    accelerator = training.make_accelerator(out, mixed_precision, gradient_accumulation_steps)
    if note := cpu_threads_note(accelerator.num_processes):
        accelerator.print(note)
    training.main_process_check(accelerator, data_spec().check_dataset, dataset_root, [train_pairs, val_pairs],
                         workers=max(1, num_workers))
    training.seed_everything(seed)
    if tf32:
        enable_tf32()
    geometry = Geometry(height=target_size[0], width=target_size[1], source_size=source_size,
                        fusion_size=fusion_size, pose_draw_size=tuple(pose_draw_size) if pose_draw_size else None,
                        pose_format=data_spec().pose_format)
    if init_pipeline:
        accelerator.print(init_line)
        pipe = load_pipeline_to_train(init_pipeline, geometry=geometry)
    else:
        sd2 = pretrained_model
        if pretrained_model == "tiny":
            with accelerator.main_process_first():
                sd2 = str(make_tiny_sd2(out / "tiny_sd2"))
        heads = Heads(pose_channels=tuple(pose_channels), mlp_hidden_dim=mlp_hidden_dim, mlp_dropout=mlp_dropout,
                      fusion_mlp_dropout=mlp_dropout)
        pipe = build_pipeline(sd2, source_encoder, fusion_model, geometry=geometry, heads=heads,
                              source_backend=source_backend or None)
    pipe.set_progress_bar_config(disable=True)
    device = accelerator.device
    for frozen in (pipe.vae, pipe.source_encoder, pipe.fusion_model):
        frozen.requires_grad_(False).eval().to(device)  # fp32; run under autocast
    denoiser = pipe.denoiser()
    denoiser.set_sdpa(sdpa)
    if gradient_checkpointing:
        denoiser.set_gradient_checkpointing(True)
    if channels_last:
        denoiser.set_channels_last(True)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=adam_epsilon)

    train_ds, train_set, val_set = datasets()
    drop_last = len(train_set) >= batch_size * accelerator.num_processes
    loader = training.make_dataloader(train_set, batch_size, shuffle=True, seed=seed, num_workers=num_workers,
                               drop_last=drop_last)
    denoiser, optimizer, loader = accelerator.prepare(denoiser, optimizer, loader)
    if compile:
        accelerator.unwrap_model(denoiser).compile_unet()
    trained = [p for p in accelerator.unwrap_model(denoiser).parameters() if p.requires_grad]
    ema = None
    if use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trained, decay=ema_decay)
        ema.to(device)
        accelerator.register_for_checkpointing(ema)
    steps_per_epoch = math.ceil(len(loader) / gradient_accumulation_steps)
    total_steps, why = training.total_steps(epochs, steps_per_epoch, max_steps)
    rates = {"pose": drop_pose, "source": drop_source, "fusion": drop_fusion}

    def lr_of_epoch(epoch: int) -> float:
        return training.warmup_step_lr(epoch, lr, lr_warmup_epochs, lr_step_epochs, lr_gamma)

    last_checkpoint = training.resolve_resume(resume, out)
    checkpoint, export, _ = disk_footprint(pipe, ema=use_ema)
    disk = training.plan_disk(out, checkpoint, export, checkpoints_total_limit,
                              training.planned_checkpoints(training.checkpoint_global_step(last_checkpoint),
                                                           total_steps, checkpointing_steps), export_name="pipeline")
    accelerator.print(training.main_process_check(accelerator, disk.check))  # before anything is written

    if accelerator.is_main_process:
        save_config(cfg, out, "B2_config.json")
        training.clean_partial_checkpoints(out)
    training.init_trackers(accelerator, "B2", cfg)
    accelerator.print(f"prediction type {pipe.scheduler.config.prediction_type}; {sum(p.numel() for p in trained):,} "
                      f"trained parameters; {training.plural(total_steps, 'step')} ({why}) of {batch_size} x "
                      f"{gradient_accumulation_steps} x {accelerator.num_processes} pairs")
    mfu = training_mfu(pipe, device, accelerator.num_processes, rates, noise_offset)
    accelerator.print(mfu.note)
    state = training.TrainState()
    if last_checkpoint:
        has_ema = any(Path(last_checkpoint).glob("custom_checkpoint_*"))
        if has_ema != use_ema:
            raise training.CheckpointError(f"{last_checkpoint} was saved with use_ema={has_ema}; resume with "
                                    f"--use_ema={has_ema} or start a new out_dir")
        state = training.load_checkpoint(accelerator, last_checkpoint)
        accelerator.print(f"resumed from {last_checkpoint} at step {state.global_step}")
    elif resume:
        accelerator.print(f"no checkpoint under {training.checkpoints_dir(out)}: starting from scratch")

    def run_validation():
        if ema is not None:
            ema.store(trained)
            ema.copy_to(trained)
        result = validation_loss_and_grid(accelerator, pipe, denoiser, val_set, state.global_step, out)
        if ema is not None:
            ema.restore(trained)
        accelerator.log({"val/loss": result["val/loss"]}, step=state.global_step)
        accelerator.print(f"step {state.global_step}: val loss {result['val/loss']:.4f}"
                          + (f", grid {result['grid']}" if "grid" in result else ""))

    meter = training.Throughput()
    bar = tqdm(total=total_steps, initial=state.global_step, desc="B2", disable=not accelerator.is_local_main_process)
    denoiser.train()
    with training.StopSignal() as stop:
        while state.global_step < total_steps:
            train_ds.set_epoch(state.epoch)  # augmentations are a function of (seed, epoch, index)
            training.set_learning_rate(optimizer, lr_of_epoch(state.epoch))  # a function of the epoch: resumes exactly
            for batch in training.epoch_batches(accelerator, loader, state):
                with accelerator.accumulate(denoiser):
                    with accelerator.autocast():  # the whole loss: src/train/stage2.py, training_loss
                        loss = training_loss(pipe, denoiser, batch, device, rates, noise_offset)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state.batch_in_epoch += 1
                meter.update(batch["target"].shape[0] * accelerator.num_processes)
                if not accelerator.sync_gradients:
                    continue
                if ema is not None:
                    ema.step(trained)
                state.global_step += 1
                bar.update(1)
                loss_value = accelerator.reduce(loss.detach().float(), "mean").item()
                training.check_finite(loss_value, state.global_step, last_checkpoint)
                if state.global_step % log_every == 0 or state.global_step == 1:
                    utilisation = mfu.of(meter.rate)
                    accelerator.log({"train/loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                                     "images_per_s": meter.rate, "epoch": state.epoch,
                                     **({"mfu": utilisation} if utilisation is not None else {})},
                                    step=state.global_step)
                    bar.set_postfix(loss=f"{loss_value:.4f}", img_s=training.format_rate(meter.rate),
                                    **({"mfu": f"{utilisation:.1%}"} if utilisation is not None else {}))
                stopping = stop.should_stop(accelerator)
                if state.global_step % checkpointing_steps == 0 or stopping:
                    last_checkpoint = training.save_checkpoint(accelerator, out, state, checkpoints_total_limit)
                if stopping:
                    accelerator.print(f"stopped at step {state.global_step}; checkpoint {last_checkpoint}; "
                                      "continue with --resume=latest")
                    accelerator.end_training()
                    return
                if validation_steps > 0 and state.global_step % validation_steps == 0:
                    run_validation()
                if state.global_step >= total_steps:
                    break
            else:  # the epoch ran to its end
                state.next_epoch()
    bar.close()

    if last_checkpoint is None or training.checkpoint_step(last_checkpoint) != state.global_step:
        last_checkpoint = training.save_checkpoint(accelerator, out, state, checkpoints_total_limit)
    if validation_steps <= 0 or state.global_step % validation_steps != 0:
        run_validation()
    if ema is not None:
        ema.copy_to(trained)  # the exported pipeline carries the EMA weights
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(out / "pipeline") as tmp:
            pipe.save_pretrained(tmp)
        print(f"pipeline: {out / 'pipeline'} (step {state.global_step})")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def cli(argv=None):
    """The command line (``argv``: sys.argv[1:] by default): configure, then train."""
    from src.train.common import NonFiniteLossError
    from src.util.weights import exit_on_missing_weights

    cfg = configure(globals(), presets=PRESETS, argv=argv)
    user_set = names_set_by_user(cfg, GEOMETRY_NAMES, argv) if init_pipeline else set()
    options = {"sd2": "pretrained_model", "source_encoder": "source_encoder", "fusion_model": "fusion_model",
               "pipeline": "init_pipeline"}
    with exit_on_missing_weights(options):
        try:
            main(cfg, user_set)
        except NonFiniteLossError as e:
            raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    cli()
