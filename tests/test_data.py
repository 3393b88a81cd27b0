import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import src.data
from src.data import PAIR_KEYS, DatasetError, ProblemsError, load_pairs, pose_path
from src.data.deepfashion import SPEC as DEEPFASHION
from src.data.deepfashion import DiffusionDataset, FusionDataset, check_dataset
from src.models.views import fusion_input, source_views
from src.pose.render import PoseFormat
from src.util.images import comparison_grid, load_rgb, resize, to_pil, to_tensor
from src.pose.openpose18 import COLORS_BGR, draw_pose_from_frame, read_keypoints
from src.data.preprocess import convert_patn, unflatten_name
from src.synthetic.figures import make_synthetic_dataset
from src.util.scripts import run_script

PAIRS = ["train_pairs_data.json", "test_pairs_data.json"]


@pytest.fixture
def samples_copy(samples_root, tmp_path):
    dst = tmp_path / "df"
    shutil.copytree(samples_root, dst, ignore=shutil.ignore_patterns("pose_img"))
    return dst


def test_clean_samples_pass_the_dataset_check(samples_root):
    counts = check_dataset(samples_root, PAIRS)
    assert counts["pairs"] == {PAIRS[0]: 5, PAIRS[1]: 5} and counts["images"] >= 10


def test_dataset_check_reports_every_fault_at_once(samples_copy):
    root = samples_copy
    test_pairs = json.loads((root / PAIRS[1]).read_text())
    imgs = sorted({p[k] for p in test_pairs for k in PAIR_KEYS})
    # images: one missing, one garbage, one truncated; a grayscale and an RGBA one that must pass
    (root / imgs[0]).unlink()
    (root / imgs[1]).write_bytes(b"not an image at all")
    data = (root / imgs[2]).read_bytes()
    (root / imgs[2]).write_bytes(data[: len(data) // 2])
    Image.open(root / imgs[3]).convert("L").save(root / imgs[3], format="JPEG")
    Image.open(root / imgs[4]).convert("RGBA").save(root / imgs[4], format="PNG")
    # poses: one missing, one 17 rows, one non-finite, one far outside the frame
    train_pairs = json.loads((root / PAIRS[0]).read_text())
    others = sorted({p[k] for p in train_pairs for k in PAIR_KEYS} - set(imgs))
    poses = [pose_path(root, r) for r in others[:4]]
    poses[0].unlink()
    poses[1].write_text("1 2\n" * 17)
    poses[2].write_text("1 2\n" * 17 + "inf 4\n")
    poses[3].write_text("100 100\n" * 17 + "100 2000\n")
    # a second pair file with a pair lacking a key, and a third that is not JSON
    (root / "extra.json").write_text(json.dumps([{"source_image": "./img/a.jpg"}]))
    (root / "broken.json").write_text("[{")
    (root / "empty.json").write_text("[]")
    with pytest.raises(DatasetError) as err:
        check_dataset(root, PAIRS + ["extra.json", "broken.json", "empty.json"])
    text = str(err.value)
    expected = [
        f"{root / imgs[0]}: image missing",
        f"{root / imgs[1]}: image unreadable",
        f"{root / imgs[2]}: image truncated",
        f"{poses[0]}: pose file missing",
        f"{poses[1]}: expected 18 rows",
        f"{poses[2]}: non-finite",
        f"{poses[3]}: joint 17 (l_ear)",
        f"{root / 'extra.json'}: pair 0 must have",
        f"{root / 'broken.json'}: not valid JSON",
        f"{root / 'empty.json'}: empty pair list",
    ]
    for line in expected:
        assert line in text, line
    assert len(err.value.problems) == len(expected)
    assert str(root / imgs[3]) not in text and str(root / imgs[4]) not in text


def test_deepfashion_sizes_are_the_papers(samples_root):
    assert DEEPFASHION.photo_size == (1101, 750) and DEEPFASHION.model_size == (512, 352)
    assert DEEPFASHION.eval_size == (256, 176) and DEEPFASHION.pose_draw_size == (550, 375)
    photos = {Image.open(p).size for p in (samples_root / "img").rglob("*.jpg")}
    assert photos == {DEEPFASHION.photo_size[::-1]}  # PIL sizes are (width, height)
    ds = DiffusionDataset(samples_root, "test_pairs_data.json")
    assert (ds.target_size, ds.pose_draw_size) == (DEEPFASHION.model_size, DEEPFASHION.pose_draw_size)
    assert (ds.jitter_sigma, ds.flip_prob) == (1.0, 0.5)  # the authors' augmentations


def test_no_dataset_is_a_package_default():
    assert src.data.dataset_spec("deepfashion") is DEEPFASHION
    assert DEEPFASHION.FusionDataset is FusionDataset and DEEPFASHION.DiffusionDataset is DiffusionDataset
    for name in ("MODEL_SIZE", "EVAL_SIZE", "POSE_DRAW_SIZE", "PHOTO_SIZE", "check_dataset", "DiffusionDataset"):
        assert not hasattr(src.data, name), name
    with pytest.raises(ValueError, match="dataset='mnist': expected one of deepfashion, phoenix"):
        src.data.dataset_spec("mnist")


def test_problems_error_lists_every_problem_and_exits_with_status_1():
    err = DatasetError(["a.json: pair file missing", "b.jpg: image missing"])
    assert isinstance(err, ProblemsError) and isinstance(err, SystemExit)
    assert err.problems == ["a.json: pair file missing", "b.jpg: image missing"]
    # a string code: Python prints it to stderr and exits with status 1
    assert err.code == str(err) == ("dataset check failed with 2 problem(s):\n"
                                    "  a.json: pair file missing\n  b.jpg: image missing")
    assert str(ProblemsError(["x"], "C2 input check")).startswith("C2 input check failed with 1 problem(s):")


def test_target_pose_without_a1_render_is_drawn_at_the_photo_height_and_width(samples_root):
    rel = load_pairs(samples_root, "test_pairs_data.json")[0]["target_image"]
    kp = read_keypoints(pose_path(samples_root, rel))
    pose = DEEPFASHION.target_pose_image(samples_root, rel, (1101, 750))
    assert pose.size == (750, 1101)
    assert np.array_equal(np.asarray(pose), draw_pose_from_frame(kp, 1101, 750))


def test_tensor_round_trip_and_comparison_grid_cells():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 4, 3), dtype=np.uint8))
    x = to_tensor(image)
    assert x.shape == (3, 6, 4) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert np.array_equal(np.asarray(to_pil(x)), np.asarray(image))
    grid = comparison_grid([[image, image, image], [image]], (20, 10))  # cells of (height, width)
    assert grid.size == (30, 40)
    assert grid.getpixel((29, 39)) == (255, 255, 255)  # a short row leaves white cells


def test_load_rgb_converts_modes(tmp_path):
    for mode in ("L", "RGBA", "CMYK", "P"):
        p = tmp_path / f"x_{mode}.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
        Image.new(mode, (8, 6)).save(p)
        im = load_rgb(p)
        assert im.mode == "RGB" and im.size == (8, 6)


def test_a1_renders_and_skips_then_refuses_bad_data_before_writing(samples_copy):
    args = ["A1.pose_data_preprocessing.py", f"--dataset_root={samples_copy}", "--workers=2"]
    run = run_script(*args, capture=True)
    assert run.returncode == 0, run.stderr
    outs = sorted((samples_copy / "pose_img").rglob("*.jpg"))
    assert len(outs) == len(list((samples_copy / "pose").rglob("*.txt")))
    one = outs[0]
    rel = one.relative_to(samples_copy / "pose_img")
    photo = Image.open(samples_copy / "img" / rel)
    assert Image.open(one).size == photo.size
    kp = read_keypoints((samples_copy / "pose" / rel).with_suffix(".txt"))
    ref = draw_pose_from_frame(kp, photo.size[1], photo.size[0]).astype(float)
    mse = ((np.asarray(Image.open(one), dtype=float) - ref) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 30
    mtime = one.stat().st_mtime_ns
    run = run_script(*args, capture=True)
    assert "'rendered': 0" in run.stdout and one.stat().st_mtime_ns == mtime

    shutil.rmtree(samples_copy / "pose_img")
    bad = sorted((samples_copy / "pose").rglob("*.txt"))[0]
    bad.write_text("1 2\n")
    run = run_script(*args, capture=True)
    assert run.returncode != 0
    assert f"{bad}: expected 18 rows" in run.stderr
    assert not (samples_copy / "pose_img").exists()


def test_patn_conversion_writes_pose_files_and_pair_lists(tmp_path):
    assert unflatten_name("fashionMENTees_Tanksid0000404701_1front.jpg") == \
        "./img/MEN/Tees_Tanks/id_00004047/01_1_front.jpg"
    assert unflatten_name("fashionWOMENBlouses_Shirtsid0000153001_4full.jpg") == \
        "./img/WOMEN/Blouses_Shirts/id_00001530/01_4_full.jpg"
    ys = list(range(10, 190, 10))
    xs = [-1] + list(range(20, 190, 10))
    names = ["fashionMENTees_Tanksid0000404701_1front.jpg", "fashionMENTees_Tanksid0000404701_2side.jpg"]
    for split in ("train", "test"):
        rows = ["name:keypoints_y:keypoints_x"] + [f"{n}: {ys}: {xs}" for n in names]
        (tmp_path / f"fashion-resize-annotation-{split}.csv").write_text("\n".join(rows) + "\n")
        (tmp_path / f"fashion-resize-pairs-{split}.csv").write_text(f",from,to\n0,{names[0]},{names[1]}\n")
    out = tmp_path / "root"
    counts = convert_patn(tmp_path, out)
    assert counts == {"train": {"poses": 2, "pairs": 1}, "test": {"poses": 2, "pairs": 1}}
    kp = read_keypoints(out / "pose/MEN/Tees_Tanks/id_00004047/01_2_side.txt")
    assert np.isnan(kp[0]).all()
    np.testing.assert_allclose(kp[1], [20 + 40, 20])
    pairs = json.loads((out / "test_pairs_data.json").read_text())
    assert pairs == [{"source_image": "./img/MEN/Tees_Tanks/id_00004047/01_1_front.jpg",
                      "target_image": "./img/MEN/Tees_Tanks/id_00004047/01_2_side.jpg"}]


def test_synthetic_dataset_is_deterministic_and_split_by_identity(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_identities=4, poses_per_identity=3, test_identities=1,
                               width=88, height=128, seed=3)
    make_synthetic_dataset(tmp_path / "b", n_identities=4, poses_per_identity=3, test_identities=1,
                           width=88, height=128, seed=3)
    assert a["train_pairs"] == 3 * 6 and a["test_pairs"] == 6
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    ids = lambda pf: {p["target_image"].split("/")[4] for p in json.loads((tmp_path / "a" / pf).read_text())}  # noqa: E731
    assert not ids("train_pairs_data.json") & ids("test_pairs_data.json")
    check_dataset(tmp_path / "a", PAIRS)


def test_fusion_dataset_items_are_square_inputs_in_range(samples_root):
    ds = FusionDataset(samples_root, "test_pairs_data.json", image_size=64)
    item = ds[0]
    for k in ("source", "pose", "target"):
        assert item[k].shape == (3, 64, 64) and item[k].dtype == torch.float32
        assert -1 <= item[k].min() and item[k].max() <= 1
    assert item["pose"].mean() < -0.5  # mostly black canvas
    assert (item["source"] - item["target"]).abs().mean() > 0.05


def test_diffusion_dataset_items_and_augmentations(samples_root):
    kw = dict(target_size=(128, 88), source_size=64, fusion_size=32, pose_draw_size=(256, 176))
    ds = DiffusionDataset(samples_root, "test_pairs_data.json", train=False, **kw)
    item = ds[1]
    assert item["target"].shape == (3, 128, 88) and item["target_pose"].shape == (3, 128, 88)
    assert item["source"].shape == (3, 64, 64)
    assert item["fusion_source"].shape == item["fusion_pose"].shape == (3, 32, 32)
    assert torch.equal(ds[1]["target_pose"], item["target_pose"])  # eval: deterministic

    flip = DiffusionDataset(samples_root, "test_pairs_data.json", train=True, flip_prob=1.0,
                            jitter_sigma=0.0, identity_prob=0.0, source_scales=(64,), **kw)[1]
    torch.testing.assert_close(flip["target"], item["target"].flip(-1), atol=2 / 127.5, rtol=0)
    same = DiffusionDataset(samples_root, "test_pairs_data.json", train=True, flip_prob=0.0,
                            jitter_sigma=0.0, identity_prob=1.0, source_scales=(64,), **kw)[1]
    tgt_as_src = DiffusionDataset(samples_root, "test_pairs_data.json", train=False, **kw)
    tgt_as_src.pairs = [{"source_image": p["target_image"], "target_image": p["target_image"]} for p in ds.pairs]
    assert torch.equal(same["source"], tgt_as_src[1]["source"])
    jit = DiffusionDataset(samples_root, "test_pairs_data.json", train=True, flip_prob=0.0,
                           jitter_sigma=3.0, identity_prob=0.0, source_scales=(64,), **kw)
    assert not torch.equal(jit[1]["target_pose"], item["target_pose"])
    assert torch.equal(jit[1]["target_pose"], jit[1]["target_pose"])  # same epoch, same draw
    jit.set_epoch(1)
    assert not torch.equal(jit[1]["target_pose"], DiffusionDataset(
        samples_root, "test_pairs_data.json", train=True, flip_prob=0.0, jitter_sigma=3.0,
        identity_prob=0.0, source_scales=(64,), **kw)[1]["target_pose"])


def face_point_colour_distances(pose: torch.Tensor, kp_frame: np.ndarray) -> list[float]:
    """For each face keypoint (nose, eyes, ears) present in the annotation frame: the distance
    from its palette colour to the nearest pixel colour in a 5x5 window around where the point
    lands in a squashed square input (0 = that exact colour; black is ~255-360 away)."""
    size = pose.shape[-1]
    rgb = np.array(COLORS_BGR, dtype=np.float64)[:, ::-1]
    image = ((pose + 1) * 127.5).permute(1, 2, 0).numpy()
    out = []
    for j in (0, 14, 15, 16, 17):
        if np.isnan(kp_frame[j]).any():
            continue
        x = int(round((kp_frame[j, 0] - 40) * size / 176))  # the 176x256 person frame, squashed
        y = int(round(kp_frame[j, 1] * size / 256))
        window = image[max(0, y - 2):y + 3, max(0, x - 2):x + 3].reshape(-1, 3)
        out.append(float(np.linalg.norm(window - rgb[j], axis=1).min()) if len(window) else 999.0)
    return out


def test_fusion_model_pose_input_keeps_the_face_points(samples_root):
    """The pose is squashed to the fusion model's square, never centre-cropped: a crop of the tall
    render cuts the head off most DeepFashion poses."""
    checked = 0
    for pair_file in PAIRS:
        stage1 = FusionDataset(samples_root, pair_file, image_size=224)
        stage2 = DiffusionDataset(samples_root, pair_file, train=False, fusion_size=224)
        for i, pair in enumerate(stage1.pairs):
            kp = read_keypoints(pose_path(samples_root, pair["target_image"]))
            for pose in (stage1[i]["pose"], stage2[i]["fusion_pose"]):
                distances = face_point_colour_distances(pose, kp)
                assert distances and max(distances) < 180, (pair["target_image"], distances)
                checked += 1
    assert checked == 2 * sum(len(load_pairs(samples_root, f)) for f in PAIRS)


def test_stage1_photos_are_cropped_and_stage2_inputs_squashed(samples_root):
    photo = load_rgb(samples_root / load_pairs(samples_root, "test_pairs_data.json")[0]["source_image"])
    w, h = photo.size
    cropped = fusion_input(photo, 64, "stage1_photo")
    expected = to_tensor(photo.crop((0, (h - w) // 2, w, (h - w) // 2 + w)).resize((64, 64), Image.BICUBIC))
    assert (cropped - expected).abs().mean() < 0.02  # CLIP's processor: shortest edge, centre crop
    squashed = fusion_input(photo, 64, "source")
    assert torch.equal(squashed, to_tensor(photo.resize((64, 64), Image.BICUBIC)))
    # tensors take the same view as PIL images
    as_tensor = fusion_input(to_tensor(photo), 64, "source")
    assert (as_tensor - squashed).abs().mean() < 0.02


def test_stage2_fusion_pose_is_the_unets_jittered_flipped_render(samples_root, monkeypatch):
    """Both pose views come straight from one render (the jittered, flipped one), as the authors'
    dataset resizes its drawn pose to the model size and, separately, to the fusion size."""
    kw = dict(target_size=(128, 88), source_size=64, fusion_size=64, pose_draw_size=(256, 176))
    ds = DiffusionDataset(samples_root, "test_pairs_data.json", train=True, flip_prob=1.0, jitter_sigma=3.0,
                          identity_prob=0.0, source_scales=(64,), **kw)
    renders = []
    draw = PoseFormat.draw

    def recording(renderer, kp, draw_size, size):
        renders.append(draw(renderer, kp, draw_size, size))
        return renders[-1]

    monkeypatch.setattr(PoseFormat, "draw", recording)
    item = ds[1]
    (render,) = renders
    assert render.size == (176, 256)
    assert torch.equal(item["fusion_pose"], to_tensor(resize(render, (64, 64))))
    assert torch.equal(item["target_pose"], to_tensor(resize(render, (128, 88))))
    unflipped = DiffusionDataset(samples_root, "test_pairs_data.json", train=False, **kw)[1]["fusion_pose"]
    assert (item["fusion_pose"] - unflipped).abs().mean() > 0.01


def test_source_views_squash_to_the_scale_then_to_each_size():
    photo = Image.fromarray((np.random.default_rng(0).random((110, 75, 3)) * 255).astype(np.uint8))
    src, fusion = source_views(photo, 64, 48, scale=32)
    square = resize(photo, (32, 32))
    assert torch.equal(src, to_tensor(resize(square, (64, 64))))
    assert torch.equal(fusion, to_tensor(resize(square, (48, 48))))
    assert not torch.equal(fusion, to_tensor(resize(photo, (48, 48))))
