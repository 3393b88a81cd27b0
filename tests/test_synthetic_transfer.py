"""The synthetic pose-transfer benchmark: its learned tiny autoencoder keeps the figures' clothing
colours (a short training run on a few figures), and its runner at the test budget (too small to
learn: whether FPDM beats copying the source is the demo's test, tests/test_demo.py) runs every
step, writes every method with C2's and the exact scores, the VAE ceiling row, and replaces its
README section in place; its ablations sample the trained pipeline with a condition zeroed."""

import json

import numpy as np
import pytest
import torch

from bench import synthetic_transfer
from src.evaluate import handoff
from src.data import load_pairs
from src.evaluate.generate import generate_pairs
from src.util.images import load_rgb
from src.models.sd2 import load_vae
from src.models.tiny_autoencoder import latent_scaling_factor, save_tiny_sd2, tiny_vae
from src.synthetic.autoencoder import load_images, pair_file_images, reconstruct, to_uint8, train_tiny_vae
from src.train.stage2 import make_tiny_pipeline
from src.util.scripts import run_script
from src.synthetic.figures import clothing_colour_error, make_synthetic_dataset

SECTION = "## Synthetic pose-transfer benchmark"
SIZE = 32
TOLERANCE = 12.0  # mean absolute error of a garment's mean colour, 0-255 per channel


def one_chroma_axis(images: list[np.ndarray]) -> list[np.ndarray]:
    """The colour loss the autoencoder showed when under-trained: every hue decoded onto the
    purple-green axis (a red shirt turns purple), i.e. the red-blue opponent axis dropped."""
    axis = np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0)
    out = []
    for image in images:
        x = image.astype(np.float64)
        x -= (x @ axis)[..., None] * axis
        out.append(x.clip(0, 255).round().astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    make_synthetic_dataset(root, n_identities=3, poses_per_identity=2, test_identities=0, width=SIZE, height=SIZE,
                           min_clothing_distance=120, patterns=("plain",))
    rels = pair_file_images(root, "train_pairs_data.json")
    return root, rels, load_images([root / r for r in rels])


def test_reconstructions_keep_garment_colours(figures, tmp_path):
    root, rels, images = figures
    torch.manual_seed(0)
    vae, stats = train_tiny_vae(images, steps=200, batch_size=len(images), block_out_channels=(16, 32, 32),
                                log=lambda *_: None)
    recon = to_uint8(reconstruct(vae, images))
    error = clothing_colour_error(recon, root, rels)
    assert error < TOLERANCE, error
    # the check has teeth: the failure it guards against, and an untrained autoencoder, exceed it
    assert clothing_colour_error(one_chroma_axis(recon), root, rels) > TOLERANCE
    untrained = to_uint8(reconstruct(tiny_vae(SIZE, block_out_channels=(16, 32, 32)), images))
    assert clothing_colour_error(untrained, root, rels) > TOLERANCE

    # what B2 loads: the folder's VAE decodes the same, with latents of unit scale
    folder = save_tiny_sd2(vae, tmp_path / "sd2", stats=stats)
    loaded = load_vae(str(folder))
    assert to_uint8(reconstruct(loaded, images))[0].tolist() == recon[0].tolist()
    factor = loaded.config.scaling_factor
    assert factor == pytest.approx(stats["scaling_factor"]) and factor == pytest.approx(
        latent_scaling_factor(loaded, images))
    with torch.no_grad():
        latents = loaded.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(1)) * factor
    assert 0.8 < float(latents.std()) < 1.25


@pytest.mark.slow
def test_runner_writes_results_grid_and_readme_section(tmp_path):
    out, results, readme = tmp_path / "run", tmp_path / "results", tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n## Before\n\nkept\n\n{SECTION}\n\nstale figures\n\n## After\n\nkept too\n")
    r = run_script("bench/synthetic_transfer.py", "--preset=test", f"--out_dir={out}", f"--results_dir={results}",
                   f"--readme={readme}", capture=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((results / "synthetic.json").read_text())
    methods = report["methods"]
    assert list(methods) == ["fpdm", "vae_ceiling"]
    pairs = report["data"]["benchmark_pairs"]
    for name, row in methods.items():
        assert row["count"] == pairs > 0, name
        for key in ("ssim", "psnr", "pose_iou", "appearance_accuracy"):
            assert row[key] is not None, (name, key)
    # the autoencoder's reconstruction of the target is no copy of it
    assert methods["vae_ceiling"]["psnr"] < 99
    assert report["vae"]["colour_error_test"] > 0 and report["vae"]["psnr_test"] > 0
    assert (results / "synthetic_grid.png").is_file()

    text = readme.read_text()
    assert "stale figures" not in text and "kept\n" in text and text.rstrip().endswith("kept too")
    section = text[text.index(SECTION):text.index("## After")]
    assert "| VAE ceiling (target reconstructed) |" in section and "| FPDM |" in section
    assert "garment-colour error" in section


def test_an_ablation_is_the_pipelines_samples_with_that_condition_zeroed(samples_root, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic_transfer, "num_inference_steps", 2)
    size = (synthetic_transfer.image_size, synthetic_transfer.image_size)
    pipe = make_tiny_pipeline(tmp_path / "sd2", height=size[0], width=size[1])
    conv = pipe.pose_encoder.embedding.conv_out.weight  # zero-initialised: give the pose some weight
    conv.data = torch.randn(conv.shape, generator=torch.Generator().manual_seed(3)) * 0.05
    pipe.set_progress_bar_config(disable=True)
    pairs = load_pairs(samples_root, "test_pairs_data.json")[:2]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))

    synthetic_transfer.generate_variant(pipe, samples_root, str(tmp_path / "pairs.json"), tmp_path / "no_pose",
                                        ("pose",))
    common = dict(size=size, eval_size=size, draw_size=synthetic_transfer.pose_draw_size, dataset="deepfashion",
                  num_inference_steps=2, seed=synthetic_transfer.seed, show_progress=False)
    generate_pairs(pipe, samples_root, pairs, tmp_path / "expected", drop_conditions=("pose",), **common)
    generate_pairs(pipe, samples_root, pairs, tmp_path / "full", **common)
    assert [m["target_image"] for m in json.loads((tmp_path / "no_pose" / "manifest.json").read_text())] == [
        p["target_image"] for p in pairs]
    for pair in pairs:
        name = f"{handoff.size_name(size)}/{handoff.output_name(pair)}"
        variant, expected, full = (np.asarray(load_rgb(tmp_path / d / name), dtype=np.int16)
                                   for d in ("no_pose", "expected", "full"))
        assert np.abs(variant - expected).max() <= 1
        assert np.abs(variant - full).mean() > 0.2
