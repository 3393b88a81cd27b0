"""Shared training utilities: checkpoints (atomic, rotated), exact resume, signals, guards."""

import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from src.train import common as training


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def tiny_setup(out_dir, seed=0, init_seed=0, grad_accum=1, batch_size=4, lr=0.05):
    training.seed_everything(init_seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(42)
    x = torch.randn(22, 6, generator=g)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    accelerator = training.make_accelerator(out_dir, mixed_precision="auto", gradient_accumulation_steps=grad_accum,
                                     log_with=None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = training.make_dataloader(data, batch_size=batch_size, shuffle=True, seed=seed)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    training.seed_everything(seed)
    return accelerator, model, optimizer, loader


def train(out_dir, total_steps, stop_after=None, resume="", grad_accum=1, checkpoint_every=None, limit=None,
          init_seed=0):
    """Train to ``total_steps`` optimizer steps; with ``stop_after`` save a checkpoint there and stop."""
    accelerator, model, optimizer, loader = tiny_setup(out_dir, init_seed=init_seed, grad_accum=grad_accum)
    state = training.TrainState()
    path = training.resolve_resume(resume, out_dir)
    if path:
        state = training.load_checkpoint(accelerator, path)
    seen = []
    while state.global_step < total_steps:
        for x, y in training.epoch_batches(accelerator, loader, state):
            with accelerator.accumulate(model):
                loss = nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            seen.append(x[0, 0].item())
            state.batch_in_epoch += 1
            if accelerator.sync_gradients:
                state.global_step += 1
                training.check_finite(loss.item(), state.global_step)
                if checkpoint_every and state.global_step % checkpoint_every == 0:
                    training.save_checkpoint(accelerator, out_dir, state, limit)
                if state.global_step == stop_after:
                    training.save_checkpoint(accelerator, out_dir, state, limit)
                    return model, state, seen
                if state.global_step >= total_steps:
                    break
        else:
            state.next_epoch()
    return model, state, seen


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------


def test_mixed_precision_resolution():
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    assert training.resolve_mixed_precision("auto") == expected
    assert training.resolve_mixed_precision("fp32") == "no"
    assert training.resolve_mixed_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="mixed_precision"):
        training.resolve_mixed_precision("fp8")


def test_epoch_sampler_depends_on_seed_and_epoch_only():
    a, b = training.EpochSampler(10, seed=3), training.EpochSampler(10, seed=3)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    a.set_epoch(1)
    assert list(a) != list(b) and sorted(a) == list(range(10))
    assert list(training.EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
    torch.manual_seed(0)
    first = list(training.EpochSampler(10, seed=1))
    torch.manual_seed(99)
    assert list(training.EpochSampler(10, seed=1)) == first  # independent of the global RNG


def test_checkpoint_rotation_keeps_last_n(tmp_path):
    _, state, _ = train(tmp_path, total_steps=7, checkpoint_every=1, limit=3)
    ckpts = training.list_checkpoints(tmp_path)
    assert [training.checkpoint_step(p) for p in ckpts] == [5, 6, 7]
    assert training.resolve_resume("latest", tmp_path) == tmp_path / "checkpoints" / "checkpoint-7"
    with pytest.raises(training.CheckpointError, match=r"checkpoint-7\); pass --resume=latest"):
        training.resolve_resume("", tmp_path)  # a fresh start would overwrite this run's checkpoints
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert (ckpts[-1] / "training_state.json").is_file()
    assert list(ckpts[-1].glob("random_states_*.pkl")) and list(ckpts[-1].glob("model*.safetensors"))


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    accelerator, model, optimizer, loader = tiny_setup(tmp_path)
    first = training.save_checkpoint(accelerator, tmp_path, training.TrainState(global_step=1), total_limit=1)
    before = sorted(p.name for p in first.iterdir())

    def broken_save_state(output_dir, **kwargs):
        with open(os.path.join(output_dir, "model.safetensors"), "w") as f:
            f.write("half")  # a partial write, then the failure
        raise OSError("disk full")

    real = accelerator.save_state
    accelerator.save_state = broken_save_state
    with pytest.raises(OSError, match="disk full"):
        training.save_checkpoint(accelerator, tmp_path, training.TrainState(global_step=2), total_limit=1)
    # the old checkpoint is untouched and still the latest; the half-written one is not listed
    assert training.list_checkpoints(tmp_path) == [first]
    assert sorted(p.name for p in first.iterdir()) == before
    assert training.resolve_resume("latest", tmp_path) == first
    assert not (tmp_path / "checkpoints" / "checkpoint-2").exists()
    training.clean_partial_checkpoints(tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-1"]
    # a later save works and rotation then drops the old one
    accelerator.save_state = real
    second = training.save_checkpoint(accelerator, tmp_path, training.TrainState(global_step=2), total_limit=1)
    assert training.list_checkpoints(tmp_path) == [second]


@pytest.mark.parametrize("grad_accum,stop_after", [(1, 3), (1, 6), (2, 4)])
def test_resume_matches_uninterrupted_run(tmp_path, grad_accum, stop_after):
    # 22 samples / batch 4 = 6 batches an epoch: stop mid-epoch (3), at the epoch end (6) and,
    # with accumulation 2 (3 steps an epoch), in the second epoch (4)
    total = 10
    full, full_state, full_seen = train(tmp_path / "a", total, grad_accum=grad_accum)
    _, mid_state, first_seen = train(tmp_path / "b", total, stop_after=stop_after, grad_accum=grad_accum)
    assert mid_state.global_step == stop_after
    resumed, resumed_state, rest_seen = train(tmp_path / "b", total, resume="latest", grad_accum=grad_accum,
                                              init_seed=123)
    assert resumed_state == full_state
    assert first_seen + rest_seen == full_seen  # the same batches in the same order
    a, b = weights(full), weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_latest_without_checkpoints_and_bad_path(tmp_path):
    assert training.resolve_resume("", tmp_path) is None
    assert training.resolve_resume("latest", tmp_path) is None
    with pytest.raises(training.CheckpointError, match="not a checkpoint folder"):
        training.resolve_resume(str(tmp_path / "missing"), tmp_path)
    assert issubclass(training.CheckpointError, SystemExit)


def test_stop_signal_sets_flag_and_restores_handlers():
    previous = signal.getsignal(signal.SIGTERM)
    with training.StopSignal() as stop:
        assert not stop.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.should_stop() and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_check_finite_and_throughput():
    training.check_finite(1.5, step=3)
    with pytest.raises(training.NonFiniteLossError, match=r"loss is nan at step 7.*checkpoint-5"):
        training.check_finite(float("nan"), step=7, last_checkpoint="out/checkpoints/checkpoint-5")
    with pytest.raises(training.NonFiniteLossError, match="no checkpoint has been saved"):
        training.check_finite(float("inf"), step=1)
    meter = training.Throughput(window=3)
    assert meter.rate == 0.0
    for _ in range(5):
        rate = meter.update(8)
    assert rate > 0 and len(meter.events) == 4


def test_save_pretrained_atomic(tmp_path):
    from src.models.fusion import FusionModel

    accelerator = training.make_accelerator(tmp_path, log_with=None)
    model = accelerator.prepare(FusionModel.tiny("transformers"))
    training.save_pretrained_atomic(accelerator, model, tmp_path / "export")
    training.save_pretrained_atomic(accelerator, model, tmp_path / "export")  # overwrites as a whole
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    loaded = FusionModel.from_pretrained(tmp_path / "export")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_main_process_check_shares_result_or_exit(tmp_path):
    accelerator = training.make_accelerator(tmp_path, log_with=None)
    assert training.main_process_check(accelerator, lambda a, b=0: a + b, 2, b=3) == 5

    def failing():
        raise SystemExit("dataset check failed with 1 problem(s)")

    with pytest.raises(SystemExit, match="dataset check failed"):
        training.main_process_check(accelerator, failing)
    model = accelerator.prepare(nn.Linear(3, 2))
    assert training.replicas_in_sync(accelerator, model)


def test_memory_cache_loads_each_item_once():
    calls = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            calls.append(i)
            return {"x": torch.tensor([float(i)])}

    cache = training.MemoryCache(Counting())
    assert len(cache) == 3
    for _ in range(2):
        assert [cache[i]["x"].item() for i in range(3)] == [0.0, 1.0, 2.0]
    assert calls == [0, 1, 2]


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import stat

    from src.util.fileio import DIR_MODE, FILE_MODE, atomic_dir, atomic_write_json

    path = atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_dir(tmp_path / "export") as folder:
        (folder / "config.json").write_text("{}")
    assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == DIR_MODE
    mask = os.umask(0)
    os.umask(mask)
    assert (FILE_MODE, DIR_MODE) == (0o666 & ~mask, 0o777 & ~mask)  # as open()/mkdir() give, not tempfile's 0600/0700


def test_counts_and_rates_read_right_at_any_speed():
    from src.train import common as training

    assert training.plural(1, "step") == "1 step" and training.plural(3, "step") == "3 steps"
    assert [training.format_rate(v) for v in (0.0123, 0.04, 4.567, 78.94, 1234.4)] == [
        "0.0123", "0.04", "4.57", "78.9", "1234"]
    assert training.total_steps(2, 1)[1] == "epochs=2 x 1 step per epoch"
