"""B1: stage 1, the fusion embedding (CLIP ViT-L/14 + CLIP4Cir combiner, contrastive).

    accelerate launch B1.train_Fusion_model.py --dataset_root=data/deepfashion --out_dir=logs/B1
    python B1.train_Fusion_model.py --preset=tiny --dataset_root=PATH --out_dir=OUT   # CPU smoke run
    python B1.train_Fusion_model.py ... --resume=latest                               # continue a run
    python B1.train_Fusion_model.py --config=configs/phoenix.py --out_dir=logs/B1_phoenix   # PHOENIX-2014T (A1's output)

Writes OUT/fusion_model/ (FusionModel.save_pretrained, what B2 loads), OUT/metrics.json (train
and validation retrieval top-1, top-5, mean rank and loss, before and after training),
OUT/checkpoints/checkpoint-<step>/ (rotated), OUT/tensorboard/ and OUT/B1_config.json.
SIGTERM or Ctrl-C saves a checkpoint and exits; --resume=latest continues exactly where it stopped.
Loss: the source-enhanced InfoNCE of src/train/stage1.py (fusion_loss); batch_size is per
process, and the contrastive negatives are those of the process's own batch.
Before the first step B1 prints the disk the run needs (checkpoints: weights + AdamW's two moments,
up to checkpoints_total_limit + 1 at once; the export) and stops with one line when out_dir's disk
lacks it. Without a GPU, `accelerate launch` gives each process one CPU thread (OMP_NUM_THREADS=1):
B1 then says so (pass --num_cpu_threads_per_process=N to accelerate launch, or run it with python).
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
dataset = "deepfashion"                    # "deepfashion", "phoenix" or "market" (src.data.DATASETS)
dataset_root = "data/deepfashion"
train_pairs = "train_pairs_data.json"
val_pairs = "test_pairs_data.json"
out_dir = "logs/B1"
encoder = "openai/clip-vit-large-patch14"  # hub id or folder (transformers); OpenCLIP model name; "tiny"
backend = "transformers"                   # "transformers" or "open_clip"
pretrained = "openai"                      # open_clip only: pretrained tag or checkpoint file
projection_dim = 768                       # combiner P
hidden_dim = 768                           # combiner H
dropout = 0.5
image_size = 224                           # fusion-model inputs: photos CLIP-cropped, the pose squashed (src.models.views)
batch_size = 48                            # per process
epochs = 5
lr = 1e-5                                  # AdamW
weight_decay = 1e-4
temperature = 0.07
l1_weight = 1e-4
max_grad_norm = 0.0                        # 0 = no clipping
mixed_precision = "auto"                   # auto = bf16 on GPU, fp32 on CPU; or no/bf16/fp16
gradient_accumulation_steps = 1
gradient_checkpointing = False             # trade compute for encoder activation memory
checkpointing_steps = 500
checkpoints_total_limit = 3
resume = ""                                # "", "latest" or a checkpoint folder
seed = 7
max_steps = -1                             # > 0: train exactly this many steps, overriding `epochs`
eval_max_pairs = 10000                     # evaluate on the first N pairs of each list (-1 = all)
eval_at_start = True                       # also record the metrics before training
val_every_epochs = 1
num_workers = 8
cache_dataset = False                      # keep decoded samples in memory (small datasets only)
log_every = 10
# -----------------------------------------------------------------------------------------------
# PHOENIX-2014T (configs/phoenix.py) trains the same model and schedule: its frames and A1's
# 133-point pose renders reach the fusion model as DeepFashion's photos and poses do.
PRESETS = {
    "tiny": {"encoder": "tiny", "projection_dim": 32, "hidden_dim": 32, "batch_size": 8, "epochs": 60,
             "lr": 5e-4, "weight_decay": 0.0, "checkpointing_steps": 10, "checkpoints_total_limit": 2,
             "num_workers": 0, "log_every": 5, "val_every_epochs": 10, "cache_dataset": True},
}

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

from src.config import as_config_error, configure, save_config  # noqa: E402

# torch and the project's models are imported inside the functions, after configure(): --help and
# a bad option answer at once instead of after seconds of imports.


def data_spec():
    """The chosen dataset's declaration: its FusionDataset and check_dataset."""
    from src.data import dataset_spec

    return as_config_error(dataset_spec, dataset)


def make_dataset(pairs_file, max_pairs=-1):
    from torch.utils.data import Subset

    from src.train.common import MemoryCache

    ds = data_spec().FusionDataset(dataset_root, pairs_file, image_size=image_size)
    ds = Subset(ds, range(max_pairs)) if 0 <= max_pairs < len(ds) else ds
    return MemoryCache(ds) if cache_dataset else ds


def retrieval_metrics_of(accelerator, model, ds):
    import torch
    from torch.utils.data import DataLoader

    from src.train.stage1 import evaluate_retrieval

    loader = accelerator.prepare(DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                            generator=torch.Generator()))  # leaves the global RNG alone
    with accelerator.autocast():
        return evaluate_retrieval(accelerator.unwrap_model(model), loader, gather=accelerator.gather_for_metrics,
                               temperature=temperature, l1_weight=l1_weight)


def main(cfg):
    import torch
    from tqdm.auto import tqdm

    from src.train import common as training
    from src.util.devices import cpu_threads_note
    from src.util.fileio import atomic_write_json
    from src.models.fusion import FusionModel
    from src.train.stage1 import fusion_loss

    out = Path(out_dir)
    accelerator = training.make_accelerator(out, mixed_precision, gradient_accumulation_steps)
    if note := cpu_threads_note(accelerator.num_processes):
        accelerator.print(note)
    training.main_process_check(accelerator, data_spec().check_dataset, dataset_root, [train_pairs, val_pairs], workers=max(1, num_workers))
    training.seed_everything(seed)
    if encoder == "tiny":
        model = FusionModel.tiny(backend, dropout=dropout, projection_dim=projection_dim, hidden_dim=hidden_dim)
    else:
        model = FusionModel.from_clip(encoder, backend=backend, pretrained=pretrained if backend == "open_clip" else None,
                                      projection_dim=projection_dim, hidden_dim=hidden_dim, dropout=dropout)
    if gradient_checkpointing:
        model.encoder.set_gradient_checkpointing(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_set = make_dataset(train_pairs)
    train_eval_set = train_set if 0 > eval_max_pairs or eval_max_pairs >= len(train_set) \
        else make_dataset(train_pairs, eval_max_pairs)
    val_set = make_dataset(val_pairs, eval_max_pairs)
    drop_last = len(train_set) >= batch_size * accelerator.num_processes
    loader = training.make_dataloader(train_set, batch_size, shuffle=True, seed=seed, num_workers=num_workers,
                               drop_last=drop_last)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / gradient_accumulation_steps)
    total_steps, why = training.total_steps(epochs, steps_per_epoch, max_steps)
    accelerator.print(f"{training.plural(total_steps, 'step')} ({why}) of {batch_size} x "
                      f"{gradient_accumulation_steps} x "
                      f"{accelerator.num_processes} pairs")

    last_checkpoint = training.resolve_resume(resume, out)
    unwrapped = accelerator.unwrap_model(model)
    disk = training.plan_disk(
        out, training.checkpoint_size(unwrapped, [p for p in unwrapped.parameters() if p.requires_grad]),
        training.state_bytes(unwrapped), checkpoints_total_limit,
        training.planned_checkpoints(training.checkpoint_global_step(last_checkpoint), total_steps,
                                     checkpointing_steps), export_name="fusion model")
    accelerator.print(training.main_process_check(accelerator, disk.check))  # before anything is written

    if accelerator.is_main_process:
        save_config(cfg, out, "B1_config.json")
    training.init_trackers(accelerator, "B1", cfg)
    if accelerator.is_main_process:
        training.clean_partial_checkpoints(out)
    state = training.TrainState()
    if last_checkpoint:
        state = training.load_checkpoint(accelerator, last_checkpoint)
        accelerator.print(f"resumed from {last_checkpoint} at step {state.global_step}")
    elif resume:
        accelerator.print(f"no checkpoint under {training.checkpoints_dir(out)}: starting from scratch")

    metrics, initial_file = {}, out / "initial_metrics.json"
    if eval_at_start and state.global_step == 0:
        metrics["initial"] = {"train": retrieval_metrics_of(accelerator, model, train_eval_set),
                              "val": retrieval_metrics_of(accelerator, model, val_set)}
        accelerator.print(f"initial: {metrics['initial']}")
        accelerator.log({f"{s}/{k}": v for s in ("train", "val") for k, v in metrics["initial"][s].items()}, step=0)
        if accelerator.is_main_process:
            atomic_write_json(initial_file, metrics["initial"])
    elif initial_file.is_file():  # a resumed run reports the metrics its first part measured
        metrics["initial"] = json.loads(initial_file.read_text())

    meter = training.Throughput()
    bar = tqdm(total=total_steps, initial=state.global_step, desc="B1", disable=not accelerator.is_local_main_process)
    model.train()
    with training.StopSignal() as stop:
        while state.global_step < total_steps:
            for batch in training.epoch_batches(accelerator, loader, state):
                with accelerator.accumulate(model):
                    emb = model(batch["source"], batch["pose"], batch["target"])
                    loss, stats = fusion_loss(emb["target"], emb["source"], emb["fusion"], temperature, l1_weight)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state.batch_in_epoch += 1
                meter.update(3 * batch["source"].shape[0] * accelerator.num_processes)  # images through E
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                bar.update(1)
                loss_value = accelerator.reduce(loss.detach().float(), "mean").item()
                training.check_finite(loss_value, state.global_step, last_checkpoint)
                if state.global_step % log_every == 0 or state.global_step == 1:
                    top1 = accelerator.reduce(stats["top1"], "mean").item()
                    accelerator.log({"train/loss": loss_value, "train/batch_top1": top1,
                                     "lr": optimizer.param_groups[0]["lr"],
                                     "images_per_s": meter.rate, "epoch": state.epoch}, step=state.global_step)
                    bar.set_postfix(loss=f"{loss_value:.4f}", top1=f"{top1:.2f}",
                                    img_s=training.format_rate(meter.rate))
                stopping = stop.should_stop(accelerator)
                if state.global_step % checkpointing_steps == 0 or stopping:
                    last_checkpoint = training.save_checkpoint(accelerator, out, state, checkpoints_total_limit)
                if stopping:
                    accelerator.print(f"stopped at step {state.global_step}; checkpoint {last_checkpoint}; "
                                      "continue with --resume=latest")
                    accelerator.end_training()
                    return
                if state.global_step >= total_steps:
                    break
            else:  # the epoch ran to its end
                state.next_epoch()
                if state.epoch % val_every_epochs == 0:
                    val = retrieval_metrics_of(accelerator, model, val_set)
                    accelerator.log({f"val/{k}": v for k, v in val.items()}, step=state.global_step)
                    accelerator.print(f"epoch {state.epoch}: val {val}")
    bar.close()

    if last_checkpoint is None or training.checkpoint_step(last_checkpoint) != state.global_step:
        last_checkpoint = training.save_checkpoint(accelerator, out, state, checkpoints_total_limit)
    metrics.update(train=retrieval_metrics_of(accelerator, model, train_eval_set), val=retrieval_metrics_of(accelerator, model, val_set))
    metrics.update(step=state.global_step, epoch=state.epoch, num_processes=accelerator.num_processes,
                   replicas_in_sync=training.replicas_in_sync(accelerator, model))
    accelerator.log({f"final_{s}/{k}": v for s in ("train", "val") for k, v in metrics[s].items()},
                    step=state.global_step)
    training.save_pretrained_atomic(accelerator, model, out / "fusion_model")
    if accelerator.is_main_process:
        atomic_write_json(out / "metrics.json", metrics)
        print(f"train {metrics['train']}\nval {metrics['val']}\nfusion model: {out / 'fusion_model'}")
    accelerator.end_training()


if __name__ == "__main__":
    from src.train.common import NonFiniteLossError
    from src.util.weights import exit_on_missing_weights

    cfg = configure(globals(), presets=PRESETS)
    with exit_on_missing_weights({"clip_encoder": "encoder", "open_clip": "pretrained"}):
        try:
            main(cfg)
        except NonFiniteLossError as e:
            raise SystemExit(f"error: {e}") from None
