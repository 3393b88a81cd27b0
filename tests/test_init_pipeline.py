"""B2 --init_pipeline: fine-tuning a complete FPDM pipeline folder (src.train.stage2.load_pipeline_to_train).

B2 runs in-process (``cli(argv)`` of a freshly loaded copy of the script, so its header globals
start clean each time): a run costs a few seconds instead of the ~10 s of a subprocess's imports.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from src.train.stage2 import FROZEN_COMPONENTS, PIPELINE_COMPONENTS, TRAINED_COMPONENTS, make_tiny_pipeline
from src.util.scripts import load_script, reset_accelerate

WEIGHTED = [c for c in PIPELINE_COMPONENTS if c != "scheduler"]


def run_b2(*args):
    """B2's command line, in this process, its SystemExit raised (run_script would make it an exit
    status, and these tests match its message)."""
    script, _ = load_script("B2.train_Diffusion_model.py")
    try:
        script.cli(list(args))
    finally:
        reset_accelerate()


def b2_args(samples_root, folder, out, *extra):
    # no preset: the tiny preset would set the geometry, which then overrides the folder's
    return [f"--init_pipeline={folder}", f"--dataset_root={samples_root}", f"--out_dir={out}",
            "--fusion_model=/nonexistent/B1/fusion_model", "--pretrained_model=/nonexistent/sd21",  # not used
            "--mlp_dropout=0.3", "--batch_size=2", "--gradient_accumulation_steps=1", "--lr_warmup_epochs=0",
            "--source_scales=(16, 32)", "--validation_steps=0", "--validation_pairs=0", "--validation_loss_pairs=1",
            "--checkpointing_steps=100", "--num_workers=0", "--mixed_precision=no", *extra]


@pytest.fixture(scope="module")
def init_folder(tmp_path_factory):
    """A tiny pipeline at 64x48 (source 32, fusion 32, poses drawn at 128x96), every weight moved
    off its initial value and the MLP dropout rates off the defaults, saved as B2 exports."""
    root = tmp_path_factory.mktemp("init")
    pipe = make_tiny_pipeline(root / "sd2", height=64, width=48, source_size=32, fusion_size=32,
                              pose_draw_size=(128, 96), seed=3)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name in WEIGHTED:
            for p in getattr(pipe, name).parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    for name, rate in (("source_mlp", 0.1), ("fusion_mlp", 0.05)):
        mlp = getattr(pipe, name)
        mlp.register_to_config(dropout=rate)
        for m in mlp.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = rate
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def weights(folder, component):
    """Every tensor of a component's folder, by file and name (the source encoder keeps its
    network's weights in network/model.safetensors)."""
    root = Path(folder) / component
    return {f"{f.relative_to(root)}:{k}": v for f in sorted(root.rglob("*.safetensors")) for k, v in load_file(f).items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_pipeline_is_the_start_and_only_trainable_parts_train(samples_root, init_folder, tmp_path):
    # lr 0, one step: the export is the folder, bit for bit, at the folder's geometry and dropout
    out = tmp_path / "lr0"
    run_b2(*b2_args(samples_root, init_folder, out, "--lr=0.0", "--max_steps=1"))
    for name in WEIGHTED:
        assert same(weights(init_folder, name), weights(out / "pipeline", name)), name
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert (index["height"], index["width"], index["source_size"], index["fusion_size"], index["pose_draw_size"]) == (
        64, 48, 32, 32, [128, 96])
    for name, rate in (("source_mlp", 0.1), ("fusion_mlp", 0.05)):  # the folder's, not --mlp_dropout
        assert json.loads((out / "pipeline" / name / "config.json").read_text())["dropout"] == rate
    saved = json.loads((out / "B2_config.json").read_text())
    assert saved["target_size"] == [64, 48] and saved["init_pipeline"] == str(init_folder.resolve())
    assert not (out / "tiny_sd2").exists()

    # a real lr, two steps, a source_size set on the command line: the trainable parts moved,
    # the frozen ones did not; the folder's geometry except the source size
    out = tmp_path / "trained"
    run_b2(*b2_args(samples_root, init_folder, out, "--lr=1e-3", "--max_steps=2", "--source_size=48",
                    "--drop_pose=0.0", "--drop_source=0.0", "--drop_fusion=0.0"))
    for name in TRAINED_COMPONENTS:
        assert not same(weights(init_folder, name), weights(out / "pipeline", name)), name
    for name in FROZEN_COMPONENTS:
        assert same(weights(init_folder, name), weights(out / "pipeline", name)), name
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert (index["height"], index["width"], index["source_size"]) == (64, 48, 48)
    assert json.loads((out / "pipeline" / "source_encoder" / "config.json").read_text())["image_size"] == 48


def test_resume_of_an_init_pipeline_run_is_exact(samples_root, init_folder, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    run_b2(*b2_args(samples_root, init_folder, full, "--lr=1e-3", "--max_steps=4"))
    run_b2(*b2_args(samples_root, init_folder, parts, "--lr=1e-3", "--max_steps=2"))
    # resuming without the folder would restore the weights on other frozen models: refused
    with pytest.raises(SystemExit, match="was trained with .*init_pipeline="):
        run_b2(*b2_args(samples_root, "", parts, "--lr=1e-3", "--max_steps=4", "--resume=latest"))
    run_b2(*b2_args(samples_root, init_folder, parts, "--lr=1e-3", "--max_steps=4", "--resume=latest"))
    assert [p.name for p in (parts / "checkpoints").iterdir()] == ["checkpoint-2", "checkpoint-4"]
    for name in WEIGHTED:
        assert same(weights(full / "pipeline", name), weights(parts / "pipeline", name)), name
    assert not same(weights(init_folder, "unet"), weights(full / "pipeline", "unet"))


@pytest.mark.parametrize("damage", ["no model_index.json", "no unet/", "wholebody133 poses"])
def test_incomplete_or_mismatched_folder_stops_before_writing(samples_root, init_folder, tmp_path, capsys, damage):
    folder = tmp_path / "broken"
    shutil.copytree(init_folder, folder)
    if damage == "no model_index.json":
        (folder / "model_index.json").unlink()
    elif damage == "no unet/":
        shutil.rmtree(folder / "unet")
    else:
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "pose_format": "wholebody133"}))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_b2(*b2_args(samples_root, folder, out, "--max_steps=1"))
    if damage == "wholebody133 poses":
        message = str(e.value.code)
        assert "wholebody133" in message and "openpose18" in message and str(folder) in message
    else:
        assert e.value.code == 1
        message = capsys.readouterr().err
        assert "Traceback" not in message and str(folder) in message
        missing = message.split("missing: ")[1].splitlines()[0]
        assert missing == ("model_index.json" if damage == "no model_index.json" else "unet/")
        assert message.rstrip().endswith("pass a complete pipeline folder: --init_pipeline=PATH")
    assert not out.exists()  # nothing written


def test_resume_refuses_values_that_change_the_model_or_data_and_allows_the_others(samples_root, tmp_path):
    out = tmp_path / "run"
    common = ["--preset=tiny", f"--dataset_root={samples_root}", f"--out_dir={out}", "--batch_size=2",
              "--validation_steps=0", "--validation_pairs=0", "--validation_loss_pairs=1", "--checkpointing_steps=1"]
    run_b2(*common, "--max_steps=1")
    with pytest.raises(SystemExit, match=r"was trained with lr=0.001 \(now 0.002\), target_size=\[128, 88\] "
                                         r"\(now \[64, 48\]\); .*start a new out_dir"):
        run_b2(*common, "--max_steps=2", "--resume=latest", "--target_size=(64, 48)", "--lr=2e-3")
    assert not (out / "checkpoints" / "checkpoint-2").exists()
    run_b2(*common, "--max_steps=2", "--resume=latest", "--log_every=1", "--num_workers=0")  # may change
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
