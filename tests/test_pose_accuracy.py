"""C2's pose accuracy (PCK): the definition against hand computations, C2 on the ground-truth
images used as generated ones (PCK = its own ceiling), and the off / not-installed behaviour."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.evaluate import handoff, metrics
from src.evaluate import pose_accuracy as pa
from src.pose import estimator as est_mod
from test_metrics import make_generated, run_c2

NAN = math.nan
H, W = 100, 80  # thresholds: 0.05 * 100 = 5 px, 0.1 * 100 = 10 px


def keypoints(points: dict) -> np.ndarray:
    """(18, 2) with the given joints set, the others missing."""
    kp = np.full((18, 2), NAN)
    for j, xy in points.items():
        kp[j] = xy
    return kp


# ---------------------------------------------------------------------------------------------
# the definition


def test_pck_equals_hand_computation():
    target = keypoints({
        0: (40, 10),    # pred 3 px off          -> correct at 0.05 and 0.1
        1: (40, 20),    # pred 5 px off (3, 4)   -> correct at both (distance <= alpha * H)
        2: (30, 20),    # pred 8 px off          -> correct at 0.1 only
        3: (25, 35),    # pred 10 px off (6, 8)  -> correct at 0.1 only
        4: (20, 50),    # pred 12 px off         -> wrong at both
        5: (50, 20),    # pred missing           -> counted, wrong
        6: (90, 30),    # outside the image (x > W): not counted
        7: (10, -2),    # outside the image (y < 0): not counted
        # 8 missing in the target, present in the prediction: not counted
    })
    pred = keypoints({0: (43, 10), 1: (43, 24), 2: (30, 28), 3: (31, 43), 4: (20, 62),
                      6: (90, 30), 7: (10, -2), 8: (40, 60)})
    correct, counted = pa.pck_counts(pred, target, H, W)
    assert counted == 6
    assert correct.tolist() == [2, 4]
    scores, n = pa.pck([pred], [target], H, W)
    assert n == 6 and scores[0.05] == pytest.approx(2 / 6) and scores[0.1] == pytest.approx(4 / 6)

    # no person found: every counted point is wrong
    correct, counted = pa.pck_counts(None, target, H, W)
    assert counted == 6 and correct.tolist() == [0, 0]
    # the target itself: every counted point is right
    correct, counted = pa.pck_counts(target, target, H, W)
    assert counted == 6 and correct.tolist() == [6, 6]
    assert pa.counted_points(target, H, W).tolist() == [True] * 6 + [False] * 12


def test_pck_is_pooled_over_points():
    """Pair A: 6 counted points, 2 / 4 correct; pair B: 2 counted points, both correct at both
    thresholds; pair C: no person, 1 counted point. Pooled: (2 + 2 + 0) / 9 and (4 + 2 + 0) / 9
    (the mean of per-pair PCKs would be (1/3 + 1 + 0) / 3 and (2/3 + 1 + 0) / 3)."""
    t_a = keypoints({0: (40, 10), 1: (40, 20), 2: (30, 20), 3: (25, 35), 4: (20, 50), 5: (50, 20)})
    p_a = keypoints({0: (43, 10), 1: (43, 24), 2: (30, 28), 3: (31, 43), 4: (20, 62)})
    t_b = keypoints({9: (10, 90), 10: (70, 90)})
    p_b = keypoints({9: (11, 91), 10: (70, 90), 11: (5, 5)})
    t_c = keypoints({0: (40, 40)})
    scores, n = pa.pck([p_a, p_b, None], [t_a, t_b, t_c], H, W)
    assert n == 9
    assert scores[0.05] == pytest.approx(4 / 9) and scores[0.1] == pytest.approx(6 / 9)
    # a larger image height scales the thresholds: at H = 200 the 12 px error is within 0.1 * H
    scores, _ = pa.pck([p_a], [t_a], 200, W)
    assert scores[0.05] == pytest.approx(4 / 6) and scores[0.1] == pytest.approx(5 / 6)
    # nothing counted: None, not 0
    scores, n = pa.pck([p_a], [keypoints({})], H, W)
    assert n == 0 and scores == {0.05: None, 0.1: None}
    with pytest.raises(ValueError):
        pa.pck_counts(np.zeros((17, 2)), t_a, H, W)


def test_target_keypoints_in_evaluation_pixels(samples_root):
    from src.pose.openpose18 import frame_to_pixels, read_keypoints

    rel = json.loads((samples_root / "test_pairs_data.json").read_text())[0]["target_image"]
    txt = samples_root / "pose" / Path(rel).relative_to("img").with_suffix(".txt")
    for size in ((256, 176), (512, 352)):
        kp = pa.target_keypoints(samples_root, rel, size)
        assert np.array_equal(kp, frame_to_pixels(read_keypoints(txt), *size), equal_nan=True)


def test_result_keys_and_options(monkeypatch):
    assert pa.PCK_KEYS == ("pck_0.05", "pck_0.1", "pck_0.05_truth", "pck_0.1_truth")
    assert pa.resolve_pose_accuracy("off") == (False, "off (pose_accuracy='off')")
    assert pa.resolve_pose_accuracy(False)[0] is False
    with pytest.raises(ValueError, match="pose_accuracy='sometimes'"):
        pa.resolve_pose_accuracy("sometimes")
    monkeypatch.setattr(est_mod, "estimator_available", lambda: False)
    assert pa.resolve_pose_accuracy("auto") == (False, pa.NOT_INSTALLED_REASON)
    assert "pip install --no-deps -r requirements-pose.txt" in pa.NOT_INSTALLED_REASON

    def missing():
        raise est_mod.EstimatorNotInstalled("mediapipe not here; install it with: pip install ...")

    monkeypatch.setattr(est_mod, "import_mediapipe", missing)
    with pytest.raises(est_mod.EstimatorNotInstalled, match="pose_accuracy='on'"):
        pa.resolve_pose_accuracy("on")
    for text in ("PCK", "distance <= alpha * H", "0.05 and 0.1", "pooled over all counted points",
                 "MediaPipe", "ceiling"):
        assert text in pa.PCK_PROTOCOL, text


# ---------------------------------------------------------------------------------------------
# C2


def truth_as_generated(tmp_path: Path, samples_root: Path) -> Path:
    """A C1-like folder whose generated image of every test pair is its ground truth."""
    pairs = json.loads((samples_root / "test_pairs_data.json").read_text())
    out = tmp_path / "truth_gen"
    out.mkdir()
    entries = []
    for i, p in enumerate(pairs):
        shutil.copy(samples_root / p["target_image"], out / f"{i}.jpg")
        entries.append({"generated": f"{i}.jpg", **p})
    (out / "manifest.json").write_text(json.dumps(entries))
    return out


def test_c2_truth_as_generated_reaches_the_ceiling(tmp_path, samples_root):
    if not est_mod.estimator_available():
        pytest.skip("mediapipe not installed (pip install --no-deps -r requirements-pose.txt): no pose accuracy")
    gen = truth_as_generated(tmp_path, samples_root)
    # FID weights missing (empty TORCH_HOME): fast, and C2 ends with status 1 naming them after writing
    # the rest; pose accuracy "auto" (the default)
    r = run_c2(f"--generated={gen}", f"--dataset_root={samples_root}", "--eval_sizes=['256x176','512x352']",
               "--fid_backbone=torchvision", "--fid_reference=test", "--lpips_backbone_random=True",
               "--batch_size=5", "--num_workers=0", "--fid_cache=", torch_home=tmp_path / "empty_torch_home")
    assert r.returncode == 1 and "fid" in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
    res = json.loads((gen / "metrics.json").read_text())
    n_pairs = len(json.loads((samples_root / "test_pairs_data.json").read_text()))
    for name, block in res.items():
        for alpha in pa.PCK_THRESHOLDS:
            assert block[pa.pck_key(alpha)] == block[pa.pck_key(alpha, True)], (name, alpha)
        assert block["pck_0.1"] > 0.8 and block["pck_0.05"] <= block["pck_0.1"]
        assert block["pck_points"] > 10 * n_pairs and block["pck_no_person"] == block["pck_no_person_truth"] == 0
        p = block["protocol"]
        assert p["pose_accuracy"] == pa.PCK_PROTOCOL
        assert not any(k.startswith("pck") for k in p["null_reasons"])
        assert f"| FPDM | {name} (downscaled by C2 from 1101x750) |" in r.stdout and "PCK@0.1 (GT)" in r.stdout
        assert f"{block['pck_0.1']:.3f} ({block['pck_0.1_truth']:.3f})" in r.stdout


def test_pose_accuracy_off_and_not_installed(tmp_path, samples_root, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # FID null: fast
    gen = make_generated(tmp_path, samples_root, n=2)
    entries, reference = metrics.check_generated(gen, samples_root, ["128x88"], fid_reference="test",
                                                 pose_accuracy="off")
    kwargs = dict(fid_reference="test", lpips_random=True, batch_size=2, progress=False, dataset_root=samples_root)
    block = metrics.score_generated(entries, ["128x88"], reference, pose_accuracy="off", **kwargs)["128x88"]
    for k in (*pa.PCK_KEYS, *pa.COUNT_KEYS):
        assert block[k] is None, k
    for k in pa.PCK_KEYS:
        assert block["protocol"]["null_reasons"][k] == "off (pose_accuracy='off')"
    assert block["protocol"]["pose_accuracy"] is None and isinstance(block["ssim"], float)
    assert "PCK" not in metrics.markdown_table({"128x88": block})

    # "auto" without the estimator: null with the install command; "on" without it: an input problem
    monkeypatch.setattr(est_mod, "estimator_available", lambda: False)
    block = metrics.score_generated(entries, ["128x88"], reference, pose_accuracy="auto", **kwargs)["128x88"]
    assert block["pck_0.1"] is None and block["protocol"]["null_reasons"]["pck_0.1_truth"] == pa.NOT_INSTALLED_REASON

    def missing():
        raise est_mod.EstimatorNotInstalled("no mediapipe; install it with: pip install --no-deps -r requirements-pose.txt")

    monkeypatch.setattr(est_mod, "import_mediapipe", missing)
    with pytest.raises(handoff.ManifestError, match="pose_accuracy='on'"):
        metrics.check_generated(gen, samples_root, ["128x88"], fid_reference="test", pose_accuracy="on")


def test_missing_target_keypoints_is_an_input_problem(tmp_path, samples_root, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(samples_root, root)
    gen = make_generated(tmp_path, root, n=2)
    pair = json.loads((root / "test_pairs_data.json").read_text())[1]
    txt = root / "pose" / Path(pair["target_image"]).relative_to("img").with_suffix(".txt")
    txt.unlink()
    monkeypatch.setattr(est_mod, "import_mediapipe", lambda: None)  # "on" without loading mediapipe
    with pytest.raises(handoff.ManifestError) as e:
        metrics.check_generated(gen, root, ["256x176"], fid_reference="test", pose_accuracy="on")
    assert str(txt) in str(e.value) and "pose_accuracy" in str(e.value)
    # off: the keypoint files are not needed
    metrics.check_generated(gen, root, ["256x176"], fid_reference="test", pose_accuracy="off")
