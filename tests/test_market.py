"""Market-1501: A1's Market mode on a synthetic release in the official layout with PATN-format
CSVs (poses, renders, pairs, and every bad input listed with nothing written), the Datasets of
both stages, C2's masked metrics against a hand computation, and B1 -> B2 -> C1 -> C2 tiny runs
with configs/market1501.py end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from src.data.market import SPEC as MARKET
from src.data.market import MarketDiffusionDataset, check_dataset
from src.data.pairs import load_pairs, relative_stem
from src.data.preprocess import preprocess_market
from src.evaluate import metrics
from src.evaluate.pose_mask import masked_ssim, pose_mask
from src.pose import market18, openpose18
from src.pose.render import MARKET18
from src.synthetic.market import write_synthetic_market
from src.util.scripts import run_script

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["train_pairs_data.json", "test_pairs_data.json"]
MARKET_CONFIG = f"--config={ROOT / 'configs' / 'market1501.py'}"


def _run(script, *args):
    return run_script(script, *args, capture=True)


def _a1(release, out, *extra):
    return _run("A1.pose_data_preprocessing.py", MARKET_CONFIG, f"--market_root={release['market_root']}",
                f"--patn_dir={release['patn_dir']}", f"--dataset_root={out}", "--workers=1", *extra)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """2 training identities and 1 test identity, 3 photos each: 12 train and 6 test pairs."""
    return write_synthetic_market(tmp_path_factory.mktemp("market") / "release", {"train": 2, "test": 1}, 3, seed=2)


@pytest.fixture(scope="module")
def market_root(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("market_data") / "data"
    r = _a1(release, out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "'pairs': {'train_pairs_data.json': 12, 'test_pairs_data.json': 6}" in r.stdout
    return out


def test_a1_writes_pixel_poses_thin_renders_and_patn_pairs(release, market_root):
    assert (market_root / "img").is_symlink()
    assert (market_root / "img").resolve() == Path(release["market_root"]).resolve()
    counts = check_dataset(market_root, PAIRS, workers=1)
    assert counts["pairs"] == {"train_pairs_data.json": 12, "test_pairs_data.json": 6} and counts["images"] == 9
    pairs = load_pairs(market_root, "test_pairs_data.json")
    assert pairs[0]["source_image"].startswith("./img/bounding_box_test/")
    # the pose file holds PATN's (y, x) as pixel "x y"; the CSV's -1 stays missing
    rows = (Path(release["patn_dir"]) / "market-annotation-test.csv").read_text().splitlines()[1:]
    name, ys, xs = rows[0].split(":")
    kp = market18.read_keypoints(market_root / "pose" / "bounding_box_test" / name.replace(".jpg", ".txt"))
    for (x, y), py, px in zip(kp, json.loads(ys), json.loads(xs)):
        assert (np.isnan(x) and px == -1) or (x, y) == (px, py)
    # the render: 128x64, A1's JPEG of the 128x64 drawing with 1-px stick half-width (3-px strokes),
    # against DeepFashion's 4-px widths on the same canvas
    render = np.asarray(Image.open(market_root / "pose_img" / "bounding_box_test" / name), dtype=np.int16)
    drawn = MARKET18.draw_array(kp, (128, 64))
    assert render.shape == (128, 64, 3) and np.abs(render - drawn).mean() < 4  # JPEG chroma of 3-px strokes
    assert market18.stick_width_at((128, 64)) == 1 and market18.stick_width_at((256, 128)) == 2
    thick = openpose18.draw_pose(kp, 128, 64)
    assert 0 < (drawn.max(axis=2) > 0).sum() < 0.5 * (thick.max(axis=2) > 0).sum()
    # a rerun finds every output fresh
    stats = preprocess_market(release["market_root"], release["patn_dir"], market_root, workers=1, log=lambda _: None)
    assert (stats["pose_files_written"], stats["pose_images_rendered"]) == (0, 0)


def test_a1_lists_every_bad_input_at_once_and_writes_nothing(release, tmp_path):
    bad = {k: tmp_path / "release" / Path(release[k]).name for k in ("market_root", "patn_dir")}
    for key, path in bad.items():
        shutil.copytree(release[key], path)
    annotation = bad["patn_dir"] / "market-annotation-train.csv"
    lines = annotation.read_text().splitlines()
    name, ys, xs = lines[1].split(":")
    lines[1] = f"{name}:{json.dumps(json.loads(ys)[:17])}:{xs}"          # 17 keypoints
    lines.append(f"9999_c1s1_000001_00.jpg:{ys}:{xs}")                    # a name without an image
    annotation.write_text("\n".join(lines) + "\n")
    broken = lines[2].split(":")[0]
    (bad["market_root"] / "bounding_box_train" / broken).write_bytes(b"\xff\xd8 not a JPEG")  # unreadable
    out = tmp_path / "data"
    r = _a1({k: str(v) for k, v in bad.items()}, out)
    assert r.returncode == 1
    # the three faults, and the pairs of the photo whose row is unusable
    assert "Market-1501 check failed with 4 problem(s)" in r.stderr
    assert f"market-pairs-train.csv: {name} has no row in market-annotation-train.csv" in r.stderr
    assert "market-annotation-train.csv:2 keypoints_y: expected a list of 18 integers, got 17 values" in r.stderr
    assert "bounding_box_train/9999_c1s1_000001_00.jpg: image missing" in r.stderr
    assert f"bounding_box_train/{broken}: image unreadable" in r.stderr
    assert not out.exists()


def test_stage2_items_flip_on_and_poses_drawn_at_128x64(market_root):
    assert MARKET.model_size == MARKET.eval_size == MARKET.pose_draw_size == (128, 64)
    kw = dict(target_size=(64, 32), source_size=32, fusion_size=24, source_scales=(16, 32), seed=0)
    ds = MarketDiffusionDataset(market_root, "train_pairs_data.json", jitter_sigma=0.0, identity_prob=0.0, **kw)
    assert ds.flip_prob == 0.5 and MARKET.jitter_sigma == 0.25
    test_set = MarketDiffusionDataset(market_root, "train_pairs_data.json", train=False, **kw)
    flips = 0
    for i in range(len(ds)):
        item, plain = ds[i], test_set[i]
        assert item["target"].shape == item["target_pose"].shape == (3, 64, 32)
        flipped = torch.allclose(item["target"], plain["target"].flip(-1), atol=1e-6)
        flips += flipped
        assert flipped or torch.allclose(item["target"], plain["target"])
    assert 0 < flips < len(ds)
    # the test-time pose is the plain render at 128x64, resized
    kp = MARKET.keypoints(market_root, test_set.pairs[0]["target_image"])
    expected = np.asarray(MARKET18.stage2_pose(kp, (64, 32), (128, 64)), dtype=np.float32) / 127.5 - 1
    assert np.abs(test_set[0]["target_pose"].permute(1, 2, 0).numpy() - expected).max() < 1e-5


def test_masked_metrics_against_a_hand_computation():
    # one limb, neck (x 32, y 30) to right hip (x 32, y 90): PATN's mask is then the 8-px-wide
    # band between them with a disk of radius 4 on each end (the 5x5 closing adds nothing)
    kp = np.full((18, 2), np.nan)
    kp[1], kp[8] = (32, 30), (32, 90)
    r, c = np.mgrid[:128, :64]
    hand = (((r >= 30) & (r <= 90) & (c >= 28) & (c <= 36))
            | ((r - 30) ** 2 + (c - 32) ** 2 < 16) | ((r - 90) ** 2 + (c - 32) ** 2 < 16))
    mask = pose_mask(kp, (128, 64))
    assert mask.sum() == hand.sum() == 587 and (mask == hand).all()

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
    generated = np.clip(truth.astype(int) + rng.integers(-40, 41, truth.shape), 0, 255).astype(np.uint8)
    # Mask-SSIM (PATN): SSIM with Gaussian weights on the masked 0-255 images, outside black
    g, t = (generated * hand[..., None]).astype(np.float64), (truth * hand[..., None]).astype(np.float64)
    expected = structural_similarity(g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=2, data_range=g.max() - g.min())
    assert masked_ssim(generated, truth, mask) == pytest.approx(expected, abs=1e-12)
    # Mask-LPIPS (PIDM): LPIPS of (image / 127.5 - 1) * mask
    model = metrics.build_lpips(random_backbone=True)
    as_input = lambda a: torch.from_numpy((a / 127.5 - 1) * hand[..., None]).permute(2, 0, 1)[None].float()  # noqa: E731
    with torch.no_grad():
        expected = model(as_input(generated), as_input(truth)).item()
    got = metrics.lpips_distance(model, torch.from_numpy(generated)[None], torch.from_numpy(truth)[None],
                                 torch.from_numpy(mask)[None]).item()
    assert got == pytest.approx(expected, abs=1e-6)
    # what lies outside the mask does not count
    outside = np.where(hand[..., None], truth, 255 - truth)
    assert masked_ssim(outside, truth, mask) == pytest.approx(1.0)
    assert metrics.lpips_distance(model, torch.from_numpy(outside)[None], torch.from_numpy(truth)[None],
                                  torch.from_numpy(mask)[None]).item() == 0
    assert metrics.ssim_256(outside, truth) < 0.5


def test_tiny_b1_b2_c1_c2_end_to_end(market_root, tmp_path):
    from src.pipeline import FPDMPipeline

    b1 = tmp_path / "B1"
    r = _run("B1.train_Fusion_model.py", MARKET_CONFIG, "--preset=tiny", f"--dataset_root={market_root}",
             f"--out_dir={b1}", "--max_steps=2", "--batch_size=4", "--eval_max_pairs=4", "--eval_at_start=False")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert '"dataset": "market"' in (b1 / "B1_config.json").read_text()

    # tiny after the file: tiny's models, batch and source sizes instead of SD2-1-base's
    b2 = tmp_path / "B2"
    r = _run("B2.train_Diffusion_model.py", MARKET_CONFIG, "--preset=tiny", f"--dataset_root={market_root}",
             f"--fusion_model={b1 / 'fusion_model'}", f"--out_dir={b2}", "--max_steps=2", "--batch_size=2",
             "--validation_pairs=0", "--validation_loss_pairs=2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    config = json.loads((b2 / "B2_config.json").read_text())
    assert (config["flip_prob"], config["jitter_sigma"], config["dataset"]) == (0.5, 0.25, "market")
    pipe = FPDMPipeline.from_pretrained(b2 / "pipeline")
    assert (pipe.config.height, pipe.config.width) == (64, 32)  # tiny's Market size
    assert tuple(pipe.config.pose_draw_size) == (128, 64) and pipe.config.pose_format == "market18"

    c1 = tmp_path / "C1"
    r = _run("C1.test_Diffusion_model.py", MARKET_CONFIG, "--preset=tiny", f"--dataset_root={market_root}",
             f"--pipeline={b2 / 'pipeline'}", f"--out_dir={c1}", "--num_inference_steps=2", "--batch_size=6")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    manifest = json.loads((c1 / "manifest.json").read_text())
    assert len(manifest) == 6 and all("generated_128x64" in m for m in manifest)

    # the file after tiny: Market's protocol (FID against the training images) over tiny's test set
    r = _run("C2.eval.caculate_metrics.py", "--preset=tiny", MARKET_CONFIG, f"--dataset_root={market_root}",
             f"--generated={c1}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    results = json.loads((c1 / "metrics.json").read_text())
    assert list(results) == ["128x64"]
    block = results["128x64"]
    assert block["count"] == 6 and 0 < block["mask_ssim"] <= 1 and block["mask_lpips"] >= 0
    protocol = block["protocol"]
    assert protocol["fid_reference"] == "train" and protocol["fid_reference_count"] == 6
    assert "produce_ma_mask" in protocol["mask"] and "PATN" in protocol["mask_ssim"]
    assert "PIDM" in protocol["mask_lpips"]
    assert "| Mask-SSIM | Mask-LPIPS |" in r.stdout
    # the masks are the targets': C2's Mask-SSIM of the first pair, recomputed here
    first = manifest[0]
    kp = MARKET.keypoints(market_root, first["target_image"])
    g = metrics.load_eval_image(c1 / first["generated_128x64"], (128, 64))
    t = metrics.load_eval_image(market_root / first["target_image"], (128, 64))
    assert 0 <= masked_ssim(g, t, pose_mask(kp, (128, 64))) <= 1
    assert str(relative_stem(first["target_image"])).startswith("bounding_box_test/")
