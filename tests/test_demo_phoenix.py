"""`make demo-phoenix` learns: the hand-region error (``src.synthetic.signing.HandScorer``) against
a computation by hand, and the real demo, run into a temporary folder, putting the hands where
the pose says better than copying the source frame does, with the temporal figures beside. The
signing benchmark (bench/signing_consistency.py) runs on the same trained model: one module, so
that a pytest-xdist worker trains it once (`make test` distributes whole files)."""

import json

import numpy as np
import pytest

from src.data import load_pairs
from src.data.preprocess import preprocess_phoenix
from src.pose.wholebody133 import FRAME_SIZE
from src.synthetic.signing import HandScorer, hand_mask, make_video, write_synthetic_signing
from src.util.scripts import run_script
from src.util.videos import gif_info

SECTION = "## Signing benchmark: video consistency"


@pytest.fixture(scope="module")
def signing_root(tmp_path_factory):
    """A1's dataset root of a small signing set (one test video of 6 frames)."""
    base = tmp_path_factory.mktemp("hand_scorer")
    release = write_synthetic_signing(base / "release", videos={"train": 1, "test": 1}, frames=(6, 6), seed=4)
    preprocess_phoenix(release["root"], release["keypoints_dir"], base / "data", train_pairs_count=4, workers=1,
                       log=lambda *a: None)
    return base / "data"


@pytest.fixture(scope="module")
def demo_phoenix_run(tmp_path_factory):
    """`make demo-phoenix` at half its autoencoder and B2 steps (the suite's time), run once for the
    demo's test and the signing benchmark's: (run folder, the run's captured output)."""
    run = tmp_path_factory.mktemp("demo_phoenix") / "run"
    r = run_script("src.synthetic.demo_phoenix", f"--out_dir={run}", "--vae_steps=150", "--b2_steps=150", capture=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run, r


def test_hand_mask_covers_the_drawn_hands():
    frames, kps = make_video(np.random.default_rng(0), 1)
    mask = hand_mask(kps[0], FRAME_SIZE)
    points = np.round(kps[0][91:133, :2]).astype(int)
    assert mask[points[:, 1], points[:, 0]].all()
    assert (frames[0][mask].mean(0) > 150).all()         # skin under the mask, not the dark clothes
    assert 0 < mask.mean() < 0.05                          # the hands only
    small = hand_mask(kps[0], (80, 64))
    assert small.shape == (80, 64) and small.any()


def test_hand_error_of_truth_is_zero_of_a_blank_frame_its_hand_computation(signing_root):
    pairs = load_pairs(signing_root, "test_pairs_data.json")
    scorer = HandScorer(signing_root, pairs, (80, 64))
    assert scorer.score(scorer.targets) == {"hand_error": 0.0, "count": 6, "per_pair": [0.0] * 6}
    blank = np.full((80, 64, 3), 128, np.uint8)
    scored = scorer.score([blank] * len(pairs))
    by_hand = [np.abs(t.astype(float) - 128)[z].mean() for t, z in zip(scorer.targets, scorer.zones)]
    assert scored["per_pair"] == pytest.approx(by_hand) and scored["hand_error"] > 40
    copy = scorer.score(scorer.sources())
    assert copy["per_pair"][0] == 0.0                      # the first frame is its own source
    assert all(e > 0 for e in copy["per_pair"][1:]) and copy["hand_error"] > 20
    with pytest.raises(ValueError):
        scorer.score([blank[:40]] * len(pairs))


@pytest.mark.slow
def test_demo_phoenix_beats_copy_source_on_the_hands(demo_phoenix_run):
    """At half the autoencoder and B2 steps of `make demo-phoenix` (the suite's time): measured on
    this machine, hand-region error 38.1 and 39.9 in two runs against 31.7 at the full budget,
    copy-source 75.6."""
    run, r = demo_phoenix_run
    scores = json.loads((run / "scores.json").read_text())
    hand = scores["hand_error"]
    assert hand["fpdm"] < 0.6 * hand["copy_source"], scores
    temporal = scores["temporal"]
    for name in ("warping_error", "warping_error_real", "temporal_consistency_difference"):
        assert isinstance(temporal[name], float), scores
    assert "fvd" in temporal and scores["pairs"] > 0 and (run / "frame_strip.png").is_file()
    assert len(list((run / "C1" / "videos").rglob("*_generated.gif"))) == scores["videos"]
    assert f"FPDM {hand['fpdm']:.1f}, copy-source {hand['copy_source']:.1f}" in r.stdout


@pytest.mark.slow
def test_signing_benchmark_scores_every_option_on_the_demos_model(demo_phoenix_run, tmp_path):
    """bench/signing_consistency.py at its test preset, in the demo's run folder: the model is the
    demo's, every option generated and scored, the JSON, the GIF and the README section."""
    run, _ = demo_phoenix_run
    results, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\n## Before\n\nkept\n\n{SECTION}\n\nstale figures\n")
    r = run_script("bench/signing_consistency.py", "--preset=test", f"--out_dir={run}", f"--results_dir={results}",
                   f"--readme={readme}", capture=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "B2 diffusion model: already done" in r.stdout      # the demo's model, not trained again
    report = json.loads((results / "signing.json").read_text())
    options = report["options"]
    assert list(options) == ["frame_by_frame", "shared_noise+previous"]
    frames = report["data"]["frames"]
    assert report["data"]["videos"] == 2 and frames > 0
    floor = report["ground_truth_warping_error"]
    for name, row in options.items():
        for key in ("ssim", "psnr", "lpips", "hand_error", "change_from_frame_by_frame", "warping_error",
                    "temporal_consistency_difference", "seconds_per_frame"):
            assert isinstance(row[key], float), (name, key)
        assert row["warping_error_real"] == floor                 # one ground truth, one floor
        assert row["c2_protocol"]["consistency"] == row["c1_options"]
        assert row["closer_to_floor"] == pytest.approx(
            (options["frame_by_frame"]["warping_error"] - row["warping_error"])
            / (options["frame_by_frame"]["warping_error"] - floor))
    assert options["frame_by_frame"]["closer_to_floor"] == options["frame_by_frame"]["change_from_frame_by_frame"] == 0
    assert options["shared_noise+previous"]["change_from_frame_by_frame"] > 0     # other noise, other frames
    pairs = json.loads((run / "data" / "benchmark_pairs_data.json").read_text())
    first_video = sum(p["source_image"] == pairs[0]["source_image"] for p in pairs)
    count, (height, width), _ = gif_info(results / "signing.gif")
    assert count == first_video and width == 210 * (4 + (report["best"] is not None))
    text = readme.read_text()
    assert "stale figures" not in text and "kept\n" in text
    assert "| frame by frame (the paper) |" in text and report["verdict"] in text
    assert "| shared noise + cross-frame attention to the previous frame |" in text
