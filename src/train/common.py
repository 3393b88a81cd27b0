"""Training utilities shared by the stage-1 and stage-2 scripts (Hugging Face accelerate).

- ``make_accelerator``: mixed precision ("auto" = bf16 on a CUDA GPU that has it, fp32 on the
  CPU), gradient accumulation, TensorBoard under ``<out_dir>/tensorboard`` when installed.
- ``make_dataloader`` + ``epoch_batches``: the sample order is a function of (seed, epoch) only,
  so a resumed run sees exactly the batches an uninterrupted one would.
- ``save_checkpoint`` / ``resolve_resume`` / ``load_checkpoint``: ``accelerator.save_state``
  into ``<out_dir>/checkpoints/checkpoint-<step>``, written to a hidden temporary folder and
  renamed into place (an interrupted save never damages the previous checkpoint), oldest ones
  rotated out; ``resume="latest"`` or a path restores weights, optimizer, RNG states, the step
  counter and the position in the epoch.
- ``StopSignal``: SIGTERM / Ctrl-C ask the loop to save a checkpoint and exit cleanly.
- ``check_finite``: a NaN/inf loss stops training with a clear message; nothing is saved, so the
  last checkpoint stays the last good one.
- ``Throughput``: images per second over recent steps.
- ``checkpoint_size`` / ``plan_disk``: the disk a run needs (checkpoints from the model's
  tensors, their rotation, the export), printed at the start; a disk that lacks it stops the run
  before anything is written.

A typical loop::

    accelerator = make_accelerator(out_dir, mixed_precision, grad_accum)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    if (path := resolve_resume(resume, out_dir)):
        state = load_checkpoint(accelerator, path)
    with StopSignal() as stop:
        while state.epoch < epochs:
            for batch in epoch_batches(accelerator, loader, state):
                with accelerator.accumulate(model):
                    ...
                state.batch_in_epoch += 1
                if accelerator.sync_gradients:
                    state.global_step += 1
                    if stop.should_stop(accelerator): save_checkpoint(...); exit
            state.next_epoch()
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from ..util.fileio import atomic_dir, atomic_write_json

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"


class CheckpointError(SystemExit):
    """A resume request that cannot be honoured; exits with its one-line message."""

    def __init__(self, message: str):
        super().__init__(f"checkpoint error: {message}")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# accelerator


def resolve_mixed_precision(value: str = "auto") -> str:
    """accelerate's ``mixed_precision`` of a script's value: "auto" as ``src.util.devices.resolve_dtype``
    decides (bf16 on a CUDA GPU that has it, else "no", fp32); also "no"/"fp32", "bf16", "fp16"."""
    from ..util.devices import resolve_dtype

    v = str(value).lower()
    if v == "auto":
        return "bf16" if resolve_dtype("auto") == torch.bfloat16 else "no"
    if v in ("no", "fp32", "none", ""):
        return "no"
    if v in ("bf16", "fp16"):
        return v
    raise ValueError(f"mixed_precision={value!r}: use 'auto', 'no' (fp32), 'bf16' or 'fp16'")


def tensorboard_available() -> bool:
    try:
        from accelerate.utils import is_tensorboard_available

        return bool(is_tensorboard_available())
    except ImportError:  # pragma: no cover
        return False


def make_accelerator(out_dir: str | Path, mixed_precision: str = "auto", gradient_accumulation_steps: int = 1,
                     log_with: str | None = "tensorboard", cpu: bool = False):
    """An Accelerator whose project folder is ``out_dir`` (TensorBoard logs in ``out_dir/tensorboard``).
    Several processes on a machine without a GPU (``torchrun --nproc_per_node 2`` on the CPU)
    run as multi-CPU data parallel over gloo."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out_dir = Path(out_dir)
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cpu = True
    if log_with == "tensorboard" and not tensorboard_available():
        log_with = None
    config = ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "tensorboard"))
    return Accelerator(
        mixed_precision=resolve_mixed_precision(mixed_precision) if not cpu else "no",
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_config=config,
        cpu=cpu,
    )


def init_trackers(accelerator, name: str, config: dict) -> None:
    """Start the trackers with the scalar part of ``config`` as hyperparameters."""
    if accelerator.log_with:
        hparams = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(name, config=hparams)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) the same on every process."""
    from accelerate.utils import set_seed

    set_seed(seed)


# ---------------------------------------------------------------------------------------------
# data order


class EpochSampler(Sampler):
    """Indices 0..n-1, shuffled by a generator seeded from (seed, epoch) alone."""

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0):
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


def make_dataloader(dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                    drop_last: bool = False) -> DataLoader:
    """A DataLoader with a reproducible order; its own generator keeps the global RNG (dropout)
    untouched by iteration, so resuming restores it exactly."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), shuffle, seed),
        num_workers=num_workers, drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
    )


class MemoryCache(torch.utils.data.Dataset):
    """Keeps the items of a deterministic dataset in memory after their first load (small
    datasets only: smoke runs and demos). Each DataLoader worker holds its own cache."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.items: dict = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if index not in self.items:
            self.items[index] = self.dataset[index]
        return self.items[index]


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, current epoch, batches of it consumed."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(**{k: int(d[k]) for k in ("global_step", "epoch", "batch_in_epoch")})


def epoch_batches(accelerator, dataloader, state: TrainState):
    """The prepared dataloader for ``state.epoch``, skipping the ``state.batch_in_epoch`` batches
    a resumed run has already trained on."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(state.epoch)
    if state.batch_in_epoch:
        return accelerator.skip_first_batches(dataloader, state.batch_in_epoch)
    return dataloader


# ---------------------------------------------------------------------------------------------
# checkpoints


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_step(path: str | Path) -> int | None:
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    try:
        return int(name[len(CHECKPOINT_PREFIX):])
    except ValueError:
        return None


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints (they hold the state file, which is written last), oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def rotate_checkpoints(out_dir: str | Path, total_limit: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``total_limit`` (None or <= 0 keeps all)."""
    if not total_limit or total_limit <= 0:
        return []
    ckpts = list_checkpoints(out_dir)
    removed = ckpts[:max(0, len(ckpts) - total_limit)]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def save_checkpoint(accelerator, out_dir: str | Path, state: TrainState, total_limit: int | None = None) -> Path:
    """``accelerator.save_state`` into ``checkpoints/checkpoint-<step>``, atomically; then rotate.
    Every process must call it (each writes its own RNG state)."""
    root = checkpoints_dir(out_dir)
    final = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = root / f".{final.name}.tmp"  # the same name on every process
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, state.to_dict())
        old = root / f".{final.name}.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        rotate_checkpoints(out_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def checkpoint_global_step(path: str | Path | None) -> int:
    """The step a checkpoint was saved at (its state file), 0 for None or an unreadable one."""
    if path is None:
        return 0
    try:
        return TrainState.from_dict(json.loads((Path(path) / STATE_FILE).read_text())).global_step
    except (OSError, ValueError, KeyError):
        return checkpoint_step(path) or 0


# ---------------------------------------------------------------------------------------------
# disk


def format_bytes(n: float) -> str:
    """Decimal units, three significant digits: '10.4 GB', '812 MB', '3.1 kB'."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def tensor_bytes(tensors) -> int:
    """Bytes of distinct tensors (a parameter tied under two names counts once, as safetensors
    stores it once); meta tensors count as their real size would."""
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def state_bytes(*modules) -> int:
    """Bytes of the modules' state dicts: what their ``save_pretrained`` (or a checkpoint) writes."""
    return sum(tensor_bytes(m.state_dict(keep_vars=True).values()) for m in modules)


@dataclass
class CheckpointSize:
    """One checkpoint's bytes: the model's weights, AdamW's two moments of every trained
    parameter (each the parameter's size and dtype) and, with EMA, one shadow copy of them."""

    weights: int
    optimizer: int
    ema: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.ema

    def describe(self) -> str:
        parts = f"weights {format_bytes(self.weights)} + AdamW {format_bytes(self.optimizer)}"
        if self.ema:
            parts += f" + EMA {format_bytes(self.ema)}"
        return f"{format_bytes(self.total)} ({parts})"


def checkpoint_size(model, trained, ema: bool = False) -> CheckpointSize:
    """What ``save_checkpoint`` writes for ``model`` (its whole state dict) trained by AdamW over
    ``trained`` (the parameters with gradients), with an EMA of them when ``ema``."""
    trained_bytes = tensor_bytes(trained)
    return CheckpointSize(weights=state_bytes(model), optimizer=2 * trained_bytes,
                          ema=trained_bytes if ema else 0)


def planned_checkpoints(start_step: int, total_steps: int, every: int) -> int:
    """Checkpoints a run from ``start_step`` to ``total_steps`` writes: every ``every`` steps and
    one at the end when the last step is not on that cadence."""
    if total_steps <= start_step:
        return 0
    if every <= 0:
        return 1
    return total_steps // every - start_step // every + (1 if total_steps % every else 0)


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:  # out_dir may not exist yet: its disk's
        folder = folder.parent
    return shutil.disk_usage(folder).free


@dataclass
class DiskPlan:
    """The disk a run needs under ``folder``: at most ``at_once`` checkpoints exist at a time (the
    newest is written before the oldest is deleted), ``kept`` remain at the end beside the export
    of ``export`` bytes; ``existing`` bytes of checkpoints are there already (and counted in
    both). ``needed`` is what must still be free; ``free`` what is."""

    folder: Path
    checkpoint: CheckpointSize
    export_name: str
    export: int
    total_limit: int
    at_once: int
    kept: int
    existing: int
    free: int

    @property
    def needed(self) -> int:
        c = self.checkpoint.total
        return max(0, max(self.at_once * c, self.kept * c + self.export) - self.existing)

    def _why(self) -> str:
        if self.total_limit and self.at_once > self.total_limit:
            return (f"up to {plural(self.at_once, 'checkpoint')} at once with checkpoints_total_limit="
                    f"{self.total_limit} (the newest is written before the oldest is deleted)")
        if self.total_limit:
            return f"{plural(self.at_once, 'checkpoint')} (checkpoints_total_limit={self.total_limit})"
        return f"{plural(self.at_once, 'checkpoint')} kept (checkpoints_total_limit=0: none deleted)"

    def line(self) -> str:
        return (f"disk: a checkpoint is {self.checkpoint.describe()}, the exported {self.export_name} "
                f"{format_bytes(self.export)}; {self._why()}: this run needs {format_bytes(self.needed)} more "
                f"under {self.folder}, {format_bytes(self.free)} free")

    def check(self) -> str:
        """The line to print, or SystemExit with one line when the disk lacks the space."""
        if self.needed > self.free:
            raise SystemExit(
                f"error: out_dir {self.folder} has {format_bytes(self.free)} free on its disk, this run needs "
                f"{format_bytes(self.needed)} ({self._why()}; a checkpoint is {self.checkpoint.describe()}, the "
                f"exported {self.export_name} {format_bytes(self.export)}): free space, lower "
                f"checkpoints_total_limit or choose another out_dir (stopped before the first step)")
        return self.line()


def plan_disk(out_dir: str | Path, checkpoint: CheckpointSize, export: int, total_limit: int | None,
              new_checkpoints: int, export_name: str = "model") -> DiskPlan:
    """The ``DiskPlan`` of a run writing ``new_checkpoints`` of ``checkpoint`` size, rotated to
    ``total_limit`` (None or <= 0 keeps all, as ``rotate_checkpoints``), then ``export`` bytes,
    into ``out_dir`` (which may hold checkpoints already, a resumed run's)."""
    folder = Path(out_dir)
    existing = list_checkpoints(folder)
    existing_bytes = sum(f.stat().st_size for p in existing for f in p.rglob("*") if f.is_file())
    limit = total_limit if total_limit and total_limit > 0 else 0
    total = len(existing) + new_checkpoints
    if limit and new_checkpoints:
        at_once, kept = min(total, max(len(existing), limit) + 1), min(total, limit)
    else:
        at_once = kept = total
    return DiskPlan(folder=folder, checkpoint=checkpoint, export_name=export_name, export=export, total_limit=limit,
                    at_once=at_once, kept=kept, existing=existing_bytes, free=_free_bytes(folder))


def clean_partial_checkpoints(out_dir: str | Path) -> None:
    """Remove temporary folders left by an interrupted save."""
    root = checkpoints_dir(out_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(f".{CHECKPOINT_PREFIX}"):
                shutil.rmtree(p, ignore_errors=True)


def resolve_resume(resume: str | None, out_dir: str | Path) -> Path | None:
    """"" -> None, refused (CheckpointError) when out_dir already holds checkpoints, so a rerun
    never overwrites a run's progress; "latest" -> the newest complete checkpoint under out_dir
    (None if there is none); a path -> that checkpoint folder (CheckpointError if it is not one)."""
    if not resume:
        if ckpts := list_checkpoints(out_dir):
            raise CheckpointError(f"{out_dir} already holds checkpoints (the newest: {ckpts[-1].name}); "
                                  "pass --resume=latest to continue that run, or choose another --out_dir")
        return None
    if resume == "latest":
        ckpts = list_checkpoints(out_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no {STATE_FILE}); "
                              f"use --resume=latest or a folder under {checkpoints_dir(out_dir)}")
    return path


def load_checkpoint(accelerator, path: str | Path) -> TrainState:
    """Restore model, optimizer, scheduler, RNG states and the accelerator's step into the
    prepared objects; return the saved TrainState."""
    path = Path(path)
    try:
        state = TrainState.from_dict(json.loads((path / STATE_FILE).read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable {STATE_FILE} ({e})") from None
    accelerator.load_state(str(path))
    return state


def save_pretrained_atomic(accelerator, model, path: str | Path) -> Path | None:
    """``save_pretrained`` of the unwrapped model into ``path`` as a whole (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(path) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp)
    accelerator.wait_for_everyone()
    return Path(path)


def main_process_check(accelerator, check, *args, **kwargs):
    """Run ``check`` (e.g. the dataset validation) on the main process only and share its
    outcome: a SystemExit it raises (DatasetError, ConfigError, ...) ends every process with the
    same message; otherwise every process gets its return value."""
    from accelerate.utils import broadcast_object_list

    outcome = [None, None]
    if accelerator.is_main_process:
        try:
            outcome = [check(*args, **kwargs), None]
        except SystemExit as e:
            outcome = [None, str(e.code) if e.code is not None else "failed"]
    if accelerator.num_processes > 1:
        outcome = broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise SystemExit(outcome[1])
    return outcome[0]


def replicas_in_sync(accelerator, model) -> bool:
    """True when every process holds exactly the same weights (checksums compared)."""
    params = [p.detach().double() for p in accelerator.unwrap_model(model).parameters()]
    checksum = torch.stack([torch.stack([p.sum(), p.square().sum()]) for p in params]).flatten()
    if accelerator.num_processes == 1:
        return True
    gathered = accelerator.gather(checksum.to(accelerator.device).unsqueeze(0))
    return bool((gathered == gathered[0]).all().item())


# ---------------------------------------------------------------------------------------------
# stop requests, loss guard, throughput


class StopSignal:
    """While active, SIGTERM and SIGINT (Ctrl-C) set ``requested`` instead of killing the run,
    so the loop can save a checkpoint and exit. A second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: saving a checkpoint and stopping "
              "(Ctrl-C again to stop at once)", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

    def should_stop(self, accelerator=None) -> bool:
        """True when a stop was requested on any process (collective when distributed)."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.gather(flag).max().item() > 0)


def plural(n: int, noun: str) -> str:
    """'1 step', '2 steps'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_rate(value: float) -> str:
    """A throughput readable at any speed: three significant digits below 100 (0.0123, 4.56, 78.9),
    whole numbers above."""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def total_steps(epochs: int, steps_per_epoch: int, max_steps: int = -1) -> tuple[int, str]:
    """(optimiser steps to train, why): ``max_steps`` when positive, overriding ``epochs`` (as
    diffusers' ``max_train_steps``; training then runs past ``epochs`` if needed), else
    ``epochs`` x ``steps_per_epoch``."""
    if max_steps > 0:
        return max_steps, f"max_steps={max_steps}, overriding epochs={epochs}"
    return epochs * steps_per_epoch, f"epochs={epochs} x {plural(steps_per_epoch, 'step')} per epoch"


def warmup_step_lr(epoch: int, lr: float, warmup_epochs: int = 5, step_epochs: int = 50,
                   gamma: float = 0.1) -> float:
    """The authors' stage-2 learning rate of an epoch (their WarmupStepLR, stepped once per epoch):
    ``lr * (epoch + 1) / warmup_epochs`` during warm-up, then ``lr * gamma ** ((epoch -
    warmup_epochs) // step_epochs)``; ``warmup_epochs=0`` skips the warm-up, ``step_epochs=0``
    never decays."""
    if epoch < warmup_epochs:
        return lr * (epoch + 1) / warmup_epochs
    return lr * gamma ** ((epoch - warmup_epochs) // step_epochs) if step_epochs > 0 else lr


def set_learning_rate(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: float, step: int, last_checkpoint: str | Path | None = None) -> None:
    """Raise NonFiniteLossError for a NaN/inf loss, naming the last good checkpoint."""
    if math.isfinite(loss):
        return
    where = f"the last good checkpoint is {last_checkpoint} (resume with --resume=latest)" \
        if last_checkpoint else "no checkpoint has been saved yet"
    raise NonFiniteLossError(
        f"loss is {loss} at step {step}; training stopped and nothing was saved: {where}. "
        "Try a lower learning rate or mixed_precision='no'.")


class Throughput:
    """Images per second over the last ``window`` updates (all processes together when the
    caller passes the global batch size)."""

    def __init__(self, window: int = 20):
        self.events: deque = deque(maxlen=window + 1)
        self.events.append((time.perf_counter(), 0))

    def update(self, images: int) -> float:
        self.events.append((time.perf_counter(), images))
        return self.rate

    @property
    def rate(self) -> float:
        if len(self.events) < 2:
            return 0.0
        elapsed = self.events[-1][0] - self.events[0][0]
        count = sum(n for _, n in list(self.events)[1:])
        return count / elapsed if elapsed > 0 else 0.0
