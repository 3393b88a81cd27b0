"""PHOENIX-2014T: the 133-point renderer, the keypoint pickles and their restricted reader, the
up-front check, the pairs, and A1's PHOENIX mode end to end on the synthetic signing set."""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.pairs import DatasetError, load_pairs, relative_stem
from src.data.phoenix import (
    UnsafePickleError,
    check_phoenix,
    corpus_csv,
    frames_dir,
    safe_load_pickle,
    test_pairs,
    train_pairs,
)
from src.pose import wholebody133
from src.data.preprocess import preprocess_phoenix
from src.synthetic.signing import write_synthetic_signing, write_twostream_pickle
from src.util.scripts import run_script

H, W_ = wholebody133.FRAME_SIZE


# ---------------------------------------------------------------------------------------------
# renderer


def test_palette_equals_the_seeded_numpy_call_and_leaves_the_global_rng_alone():
    state = np.random.get_state()
    ours = wholebody133.palette_bgr()
    after = np.random.get_state()
    assert state[0] == after[0] and (state[1] == after[1]).all() and state[2:] == after[2:]
    np.random.seed(777)
    reference = np.random.choice(np.arange(256), 399).reshape(133, 3)
    np.random.set_state(state)
    assert (ours == reference).all()
    assert wholebody133.COLORS_BGR[0] == tuple(int(v) for v in reference[0])
    assert wholebody133.COLORS_BGR[1] == tuple(int(v) for v in reference[1])


def test_link_list_has_both_defects_fixed():
    assert len(wholebody133.AUTHORS_ITEMS) == 117 and len(wholebody133.LINKS) == 120
    pairs = {(a, b): c for a, b, c in wholebody133.LINKS}
    # the mouth's bracket slip is three links of the slip's colour
    for link in ((83, 72), (72, 84), (88, 78)):
        assert pairs[link] == wholebody133.MOUTH_SLIP_ITEM == 77
    assert all(len(link) == 3 for link in wholebody133.LINKS)
    # both hands have 20 links, the right one with the restored (132, 131)
    left = [(a, b) for a, b, _ in wholebody133.LINKS if 92 <= a <= 112 and 92 <= b <= 112]
    right = [(a, b) for a, b, _ in wholebody133.LINKS if 113 <= a <= 133 and 113 <= b <= 133]
    assert len(left) == len(right) == 20 and (132, 131) in right
    assert {tuple(sorted((a + 21, b + 21))) for a, b in left} == {tuple(sorted(p)) for p in right}


def test_flip_permutation_swaps_hands_and_is_an_involution():
    perm = np.array(wholebody133.FLIP_PERMUTATION)
    assert (perm[perm] == np.arange(133)).all()
    assert perm[91] == 112 and perm[132] == 111 and perm[5] == 6 and perm[23] == 39 and perm[0] == 0


def _blend(c):
    return np.array([round(0.6 * v) for v in c[::-1]], dtype=np.uint8)   # 0.4*black + 0.6*colour, RGB


def _two_point_pose(a, b, pa, pb):
    kp = np.full((133, 2), np.nan)
    kp[a], kp[b] = pa, pb
    return kp


@pytest.mark.parametrize("link", [(132, 131), (72, 84), (96, 95)])   # right/left hand, face (1-based)
def test_hand_and_face_links_are_drawn_at_their_pixels(link):
    a, b = link[0] - 1, link[1] - 1
    colour = next(c for x, y, c in wholebody133.LINKS if (x, y) == link)
    img = wholebody133.draw_pose(_two_point_pose(a, b, (60.0, 100.0), (100.0, 100.0)), H, W_)
    assert img.shape == (H, W_, 3) and img.dtype == np.uint8
    assert (img[100, 80] == _blend(wholebody133.COLORS_BGR[colour])).all()      # middle of the link
    assert (img[99, 80] == img[100, 80]).all() and not img[103, 80].any()
    # one end missing: no link, the present point still drawn
    kp = _two_point_pose(a, b, (60.0, 100.0), (100.0, 100.0))
    kp[b] = np.nan
    img = wholebody133.draw_pose(kp, H, W_)
    assert not img[100, 80].any() and (img[100, 60] == np.array(wholebody133.COLORS_BGR[a][::-1])).all()
    assert not img[100, 100].any()


def test_missing_points_zero_inf_and_nan_are_skipped():
    raw = np.zeros((133, 3))
    raw[:, 2] = 1.0
    raw[5, :2], raw[7, :2] = (40, 50), (60, 50)           # the l-shoulder / l-elbow link
    raw[9, :2] = (np.inf, 30)
    raw[10, :2] = (np.nan, 30)
    raw[11, :2] = (0, 30)
    kp, bad = wholebody133.to_keypoints(raw)
    assert bad == 131 - 0 and np.isnan(kp[9]).all() and np.isfinite(kp[[5, 7]]).all()
    img = wholebody133.draw_pose(kp, H, W_)
    assert img[:, 70:].sum() == 0 and img[:45].sum() == 0     # nothing but the one link
    # a score threshold drops low points without counting them as bad coordinates
    raw[7, 2] = 0.1
    kp2, bad2 = wholebody133.to_keypoints(raw, score_threshold=0.5)
    assert bad2 == bad and np.isnan(kp2[7]).all()


def test_fixed_render_matches_a_reference_from_hand_computed_geometry():
    # l-shoulder (point 5) at (40, 50), l-elbow (point 7) at (60, 50): the authors' item (6, 8),
    # colour 3, stick width 1. Hand geometry: radius-2 circles are the diamonds |dx|+|dy| <= 2;
    # the ellipse of half-axes (10, 1) at (50, 50) covers row 50 for x 40..60 and rows 49 and 51
    # for x 41..59 (its 1-degree vertices round to y = +-1 from 31 to 149 degrees).
    kp = _two_point_pose(5, 7, (40.0, 50.0), (60.0, 50.0))
    ref = np.zeros((H, W_, 3), dtype=np.float64)
    for i, (cx, cy) in ((5, (40, 50)), (7, (60, 50))):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                if abs(dx) + abs(dy) <= 2:
                    ref[cy + dy, cx + dx] = wholebody133.COLORS_BGR[i][::-1]
    colour = np.array(wholebody133.COLORS_BGR[3][::-1], dtype=np.float64)
    for y, (x0, x1) in ((49, (41, 59)), (50, (40, 60)), (51, (41, 59))):
        ref[y, x0:x1 + 1] = np.floor(0.4 * ref[y, x0:x1 + 1] + 0.6 * colour + 0.5)
    got = wholebody133.draw_pose(kp, H, W_, stick_width=1)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1   # rounding of the 0.4/0.6 blend
    assert (got != 0).any(axis=2).sum() == (ref != 0).any(axis=2).sum()


# ---------------------------------------------------------------------------------------------
# synthetic set, pickles, check


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("phoenix_release")
    return write_synthetic_signing(root, videos={"train": 4, "dev": 1, "test": 2}, frames=(5, 7), seed=3)


@pytest.fixture
def release(synthetic, tmp_path):
    """A private copy of the synthetic release to damage."""
    dst = tmp_path / "release"
    shutil.copytree(synthetic["root"], dst)
    return {"root": dst, "keypoints_dir": dst / "keypoints",
            "pickles": {s: dst / "keypoints" / p.name for s, p in synthetic["pickles"].items()},
            "videos": synthetic["videos"]}


def test_synthetic_set_has_the_release_layout(synthetic):
    root = synthetic["root"]
    for split in ("train", "dev", "test"):
        assert corpus_csv(root, split).read_text().startswith("name|video|start|end|speaker|orth|translation\n")
        for name, T in synthetic["videos"][split].items():
            frames = sorted((frames_dir(root) / split / name).glob("images*.png"))
            assert len(frames) == T and frames[0].name == "images0001.png"
            with Image.open(frames[0]) as im:
                assert im.size == (210, 260) and im.mode == "RGB"
    data = safe_load_pickle(synthetic["pickles"]["train"])
    key = next(iter(data))
    assert key.startswith("train/") and set(data[key]) == {"name", "gloss", "text", "num_frames", "keypoint"}
    assert isinstance(data[key]["keypoint"], torch.Tensor) and data[key]["keypoint"].shape[1:] == (133, 3)
    # deterministic from the seed, and the hands move
    kp = data[key]["keypoint"].numpy()
    assert np.abs(kp[1:, 91:, :2] - kp[:-1, 91:, :2]).max() > 1
    assert np.isfinite(kp).all() and (kp[:, :, :2] != 0).all()


def test_both_pickle_formats_read_alike(release, tmp_path):
    mska = check_phoenix(release["root"], release["keypoints_dir"], check_frames="none")
    two = write_twostream_pickle(release["pickles"], tmp_path / "phoenix_twostream.pkl")
    raw = pickle.loads(two.read_bytes())
    assert "/" not in next(iter(raw)) and next(iter(raw.values()))["keypoints"].dtype == np.float16
    ts = check_phoenix(release["root"], two, check_frames="none")
    for split in ("train", "test"):
        assert [v.name for v in mska.videos[split]] == [v.name for v in ts.videos[split]]
        for a, b in zip(mska.videos[split], ts.videos[split]):
            assert np.allclose(a.keypoints, b.keypoints, atol=0.25)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "Phoenix-2014T.test"
    bad.write_bytes(pickle.dumps({"test/v": {"keypoint": _Payload(marker)}}))
    with pytest.raises(UnsafePickleError) as e:
        safe_load_pickle(bad)
    message = str(e.value)
    assert str(bad) in message and "system" in message and "\n" not in message
    assert not marker.exists()
    # in a check, it is one of the listed problems
    with pytest.raises(DatasetError) as e:
        check_phoenix(tmp_path, bad, splits=("test",))
    assert any("refused" in p for p in e.value.problems) and not marker.exists()
    # an ordinary numpy / torch payload passes
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"a": {"keypoints": np.ones((2, 133, 3), np.float16)},
                                 "b": {"keypoint": torch.ones(2, 133, 3), "num_frames": 2}}))
    data = safe_load_pickle(ok)
    assert data["a"]["keypoints"].shape == (2, 133, 3) and torch.equal(data["b"]["keypoint"], torch.ones(2, 133, 3))


def _rewrite_pickle(path, edit):
    data = safe_load_pickle(path)
    edit(data)
    path.write_bytes(pickle.dumps(data))


def test_check_lists_every_fault_at_once_and_writes_nothing(release, tmp_path):
    root = release["root"]
    train = list(release["videos"]["train"])
    test = list(release["videos"]["test"])
    shutil.rmtree(frames_dir(root) / "train" / train[0])                        # CSV video without frames

    def edit(data):
        k1, k2 = f"train/{train[1]}", f"train/{train[2]}"
        data[k1]["keypoint"] = data[k1]["keypoint"][:-1]                          # T differs
        data[k2]["keypoint"] = data[k2]["keypoint"][:, :17]                       # wrong shape
    _rewrite_pickle(release["pickles"]["train"], edit)
    (frames_dir(root) / "test" / test[0] / "images0001.png").write_bytes(b"not a png")   # unreadable
    corpus_csv(root, "dev").write_text("name|video|start|end|speaker|orth|translation\n")  # empty split
    out = tmp_path / "dataset"
    with pytest.raises(DatasetError) as e:
        preprocess_phoenix(root, release["keypoints_dir"], out, splits=("train", "dev", "test"), workers=1)
    problems = "\n".join(e.value.problems)
    assert len(e.value.problems) == 5, problems
    assert "has no frames" in problems and train[0] in problems
    assert "4 keypoint frames but 5" in problems or "keypoint frames but" in problems
    assert "(T, 133, 3)" in problems and train[2] in problems
    assert "images0001.png: image unreadable" in problems
    assert "split dev is empty" in problems
    assert not out.exists()


def test_inf_and_zero_points_are_counted_not_fatal(release, tmp_path, capsys):
    name = next(iter(release["videos"]["test"]))

    def edit(data):
        kp = data[f"test/{name}"]["keypoint"]
        kp[0, 100, 0] = float("inf")
        kp[1, 101, 1] = float("-inf")
        kp[2, 102, :2] = 0
    _rewrite_pickle(release["pickles"]["test"], edit)
    out = tmp_path / "dataset"
    stats = preprocess_phoenix(release["root"], release["keypoints_dir"], out, splits=("test",), workers=1)
    assert stats["missing_points"] == {"test": 3}
    assert "3 keypoints with a zero or non-finite coordinate" in capsys.readouterr().out
    rows = (out / "pose" / "test" / name / "images0001.txt").read_text().splitlines()
    assert len(rows) == 133 and rows[100] == "nan nan" and rows[0] != "nan nan"
    assert np.isnan(wholebody133.read_keypoints(out / "pose" / "test" / name / "images0002.txt")[101]).all()


# ---------------------------------------------------------------------------------------------
# pairs


def test_train_pairs_counts_determinism_and_same_video(synthetic):
    index = check_phoenix(synthetic["root"], synthetic["keypoints_dir"], check_frames="none")
    videos = index.videos["train"]
    a = train_pairs(videos, 500, seed=1)
    assert len(a) == 500 and a == train_pairs(list(reversed(videos)), 500, seed=1)
    assert a != train_pairs(videos, 500, seed=2)
    for p in a:
        s, t = Path(relative_stem(p["source_image"])), Path(relative_stem(p["target_image"]))
        assert s.parent == t.parent and s != t and s.parts[0] == "train"
    assert len({p["target_image"] for p in a}) == index.frames("train")   # every frame reached


def test_test_pairs_take_the_first_frame_as_source(synthetic):
    index = check_phoenix(synthetic["root"], synthetic["keypoints_dir"], check_frames="none")
    pairs = test_pairs(index.videos["test"])
    assert len(pairs) == sum(synthetic["videos"]["test"].values())
    for video in index.videos["test"]:
        mine = [p for p in pairs if f"/{video.name}/" in p["target_image"]]
        assert {p["source_image"] for p in mine} == {f"./img/test/{video.name}/images0001.png"}
        assert [p["target_image"] for p in mine] == [f"./img/test/{video.name}/images{t:04d}.png"
                                                     for t in range(1, len(video.frames) + 1)]
    one = check_phoenix(synthetic["root"], synthetic["keypoints_dir"], check_frames="none", max_videos={"test": 1})
    assert len(test_pairs(one.videos["test"])) == len(index.videos["test"][0].frames)


# ---------------------------------------------------------------------------------------------
# A1 end to end


def test_a1_phoenix_mode_end_to_end(synthetic, tmp_path):
    out = tmp_path / "phoenix"
    args = ["A1.pose_data_preprocessing.py", "--dataset=phoenix", f"--phoenix_root={synthetic['root']}",
            f"--keypoints={synthetic['keypoints_dir']}", f"--dataset_root={out}", "--train_pairs_count=40", "--workers=1"]
    run = run_script(*args, capture=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (out / "img").is_symlink() and (out / "img").resolve() == frames_dir(synthetic["root"]).resolve()
    train, test = load_pairs(out, "train_pairs_data.json"), load_pairs(out, "test_pairs_data.json")
    assert len(train) == 40 and len(test) == sum(synthetic["videos"]["test"].values())
    for pair in train[:5] + test:
        for key in ("source_image", "target_image"):
            stem = relative_stem(pair[key])
            assert (out / pair[key]).is_file()
            assert len((out / "pose" / stem.with_suffix(".txt")).read_text().splitlines()) == 133
            with Image.open(out / "pose_img" / stem.with_suffix(".jpg")) as im:
                assert im.size == (210, 260)
    # the saved pose image is the renderer's output for the pickle's keypoints
    video = next(iter(synthetic["videos"]["test"]))
    kp = safe_load_pickle(synthetic["pickles"]["test"])[f"test/{video}"]["keypoint"].numpy()
    expected = wholebody133.draw_pose(wholebody133.to_keypoints(kp[0])[0], H, W_)
    got = np.asarray(Image.open(out / "pose_img" / "test" / video / "images0001.jpg"), dtype=int)
    assert np.abs(got - expected).mean() < 2
    assert json.loads((out / "pose_img" / "A1_config.json").read_text())["dataset"] == "phoenix"
    # a rerun skips what is fresh
    run = run_script(*args, capture=True)
    assert run.returncode == 0 and "'pose_files_written': 0, 'pose_images_rendered': 0" in run.stdout
