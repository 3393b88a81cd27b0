"""PHOENIX-2014T training data: the Datasets of both stages on A1's output for the synthetic
signing set, their check, and B1 and B2's tiny runs with the phoenix preset end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.pairs import DatasetError, load_pairs, relative_stem
from src.data.phoenix_datasets import (
    MODEL_SIZE,
    PhoenixDiffusionDataset,
    PhoenixFusionDataset,
    check_dataset,
    stage2_pose,
)
from src.pose import wholebody133
from src.synthetic_signing import write_synthetic_signing

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["train_pairs_data.json", "test_pairs_data.json"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2",
            "PYTHONPATH": str(ROOT)}


def _run(script, *args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def phoenix_root(tmp_path_factory):
    """The synthetic signing release (3 train, 1 test video of 4-5 frames) through A1's PHOENIX mode."""
    base = tmp_path_factory.mktemp("phoenix_training")
    release = write_synthetic_signing(base / "release", videos={"train": 3, "test": 1}, frames=(4, 5), seed=1)
    out = base / "data"
    r = _run("A1.pose_data_preprocessing.py", "--dataset=phoenix", f"--phoenix_root={release['root']}",
             f"--keypoints={release['keypoints_dir']}", f"--dataset_root={out}", "--train_pairs_count=12",
             "--workers=1", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_check_passes_then_lists_every_problem_at_once(phoenix_root, tmp_path):
    counts = check_dataset(phoenix_root, PAIRS, workers=1)
    assert counts["pairs"]["train_pairs_data.json"] == 12 and counts["images"] > 0
    # a copy whose img link points at the same frames, with three faults
    root = tmp_path / "broken"
    root.mkdir()
    (root / "img").symlink_to((phoenix_root / "img").resolve())
    pairs = load_pairs(phoenix_root, "test_pairs_data.json")
    shutil.copytree(phoenix_root / "pose", root / "pose")
    stem_a, stem_b = relative_stem(pairs[0]["target_image"]), relative_stem(pairs[1]["target_image"])
    (root / "pose" / stem_a.with_suffix(".txt")).unlink()                         # missing pose file
    (root / "pose" / stem_b.with_suffix(".txt")).write_text("1 2\n" * 18)        # wrong shape
    bad = dict(pairs[2], target_image="./img/test/no_such_video/images0001.png")  # missing frame
    (root / "test_pairs_data.json").write_text(json.dumps(pairs[:2] + [bad]))
    with pytest.raises(DatasetError) as e:
        check_dataset(root, ["test_pairs_data.json", "train_pairs_data.json"], workers=1)
    text = str(e.value)
    assert "train_pairs_data.json: pair file missing" in text
    assert str(stem_a.with_suffix(".txt")) in text and "expected 133 rows" in text
    assert "no_such_video/images0001.png: image missing" in text


def test_fusion_dataset_items(phoenix_root):
    ds = PhoenixFusionDataset(phoenix_root, "train_pairs_data.json", image_size=32)
    item = ds[0]
    assert set(item) == {"source", "pose", "target", "index"}
    for key in ("source", "pose", "target"):
        assert item[key].shape == (3, 32, 32) and item[key].min() >= -1 and item[key].max() <= 1
    assert item["pose"].max() > -1  # the render is not empty


def test_diffusion_dataset_items_sizes_and_no_flip_by_default(phoenix_root):
    kw = dict(target_size=(64, 48), source_size=32, fusion_size=24, source_scales=(16, 32), seed=0)
    ds = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", **kw)
    assert ds.flip_prob == 0 and ds.pose_draw_size == wholebody133.FRAME_SIZE and MODEL_SIZE == (320, 256)
    item = ds[1]
    assert set(item) == {"target", "target_pose", "source", "fusion_source", "fusion_pose", "index"}
    assert item["target"].shape == item["target_pose"].shape == (3, 64, 48)
    assert item["source"].shape == (3, 32, 32)
    assert item["fusion_source"].shape == item["fusion_pose"].shape == (3, 24, 24)

    # without jitter the training pose is the plain render, unflipped, for every index and epoch
    plain = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", jitter_sigma=0.0, **kw)
    for epoch in range(3):
        plain.set_epoch(epoch)
        for i in range(len(plain)):
            kp = wholebody133.read_keypoints(phoenix_root / "pose" / relative_stem(plain.pairs[i]["target_image"]).with_suffix(".txt"))
            expected = np.asarray(stage2_pose(kp, (64, 48)), dtype=np.float32) / 127.5 - 1
            got = plain[i]["target_pose"].permute(1, 2, 0).numpy()
            assert np.abs(got - expected).max() < 1e-5
    # with flip forced on the target is mirrored (and a warning says flips are off by design)
    with pytest.warns(UserWarning, match="mirror"):
        flipped = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", jitter_sigma=0.0, flip_prob=1.0,
                                          identity_prob=0.0, **{k: v for k, v in kw.items()})
    test_set = PhoenixDiffusionDataset(phoenix_root, "train_pairs_data.json", train=False, **kw)
    assert torch.allclose(flipped[0]["target"], test_set[0]["target"].flip(-1), atol=1e-6)


def test_b1_and_b2_tiny_phoenix_end_to_end(phoenix_root, tmp_path):
    from src.models.fusion import FusionModel
    from src.pipeline import FPDMPipeline

    b1 = tmp_path / "B1"
    r = _run("B1.train_Fusion_model.py", "--preset=tiny", "--preset=phoenix", f"--dataset_root={phoenix_root}",
             f"--out_dir={b1}", "--max_steps=2", "--batch_size=4", "--eval_max_pairs=4", "--eval_at_start=False")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert '"dataset": "phoenix"' in (b1 / "B1_config.json").read_text()
    FusionModel.from_pretrained(b1 / "fusion_model")

    b2 = tmp_path / "B2"
    r = _run("B2.train_Diffusion_model.py", "--preset=tiny", "--preset=phoenix", f"--dataset_root={phoenix_root}",
             f"--fusion_model={b1 / 'fusion_model'}", f"--out_dir={b2}", "--target_size=(64, 48)", "--max_steps=2",
             "--batch_size=2", "--validation_pairs=0", "--validation_loss_pairs=2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    config = (b2 / "B2_config.json").read_text()
    assert '"flip_prob": 0.0' in config and '"dataset": "phoenix"' in config
    pipe = FPDMPipeline.from_pretrained(b2 / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.config.height, pipe.config.width) == (64, 48)
    img = pipe(torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 48) * 2 - 1, num_inference_steps=2,
               seeds=[0], output_type="np").images
    assert img.shape == (1, 64, 48, 3)
