"""C2 on PHOENIX-2014T: the videos of the test pairs (grouping, whole-video check) and the temporal
figures in metrics.json, through the script's own main() on a synthetic signing set of 2 test
videos of 16 frames (one FVD clip each: FVD needs two) written by A1's PHOENIX mode, with generated
folders laid out as C1 writes them (manifest, 320x256 model size, 260x210 evaluation size)."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.evaluate import handoff, metrics
from src.evaluate import temporal as tm
from src.evaluate.handoff import EvalEntry
from src.data.preprocess import preprocess_phoenix
from src.synthetic.signing import write_synthetic_signing
from src.util.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "C2.eval.caculate_metrics.py"
MODEL, EVAL = (320, 256), (260, 210)
EVAL_NAME = handoff.size_name(EVAL)
PHOENIX_CONFIG = f"--config={ROOT / 'configs' / 'phoenix.py'}"
FLICKER = 40


def load_c2(argv: list[str]):
    """The C2 script as a fresh module, configured by ``argv``: (module, cfg)."""
    return load_script(SCRIPT.name, argv)


def run_c2(root: Path, generated: Path, *args: str) -> dict:
    """C2 with configs/phoenix.py, offline weights (random LPIPS; FID's torchvision Inception absent,
    so FID is null at once and C2 ends in its one-line error naming the file, after writing the
    rest) and no I3D unless ``args`` give one; returns metrics.json."""
    module, cfg = load_c2([PHOENIX_CONFIG, f"--dataset_root={root}", f"--generated={generated}",
                           "--lpips_backbone_random=True", "--fid_backbone=torchvision", "--fid_cache=",
                           "--num_workers=0", "--batch_size=8", "--device=cpu", f"--i3d={generated / 'no_i3d'}",
                           *args])
    with pytest.raises(SystemExit) as e:
        module.main(cfg)
    if isinstance(e.value, handoff.ManifestError):
        raise e.value
    assert str(e.value.code).startswith("error: fid not computed") and metrics.TV_INCEPTION_FILE in str(e.value.code)
    return json.loads((generated / "metrics.json").read_text())


def read_frames(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def flicker(frames: np.ndarray) -> np.ndarray:
    out = frames.astype(np.int16)
    out[1::2] += FLICKER
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """{"root", "pairs", "videos": {"test/<name>": ground-truth frame paths in order}}."""
    base = tmp_path_factory.mktemp("c2_phoenix")
    release = write_synthetic_signing(base / "release", videos={"test": 2}, frames=(16, 16), seed=2)
    root = base / "data"
    preprocess_phoenix(release["root"], release["keypoints_dir"], root, splits=("test",), workers=1,
                       log=lambda *a: None)
    pairs = json.loads((root / "test_pairs_data.json").read_text())
    videos = {f"test/{name}": [root / "img" / "test" / name / f"images{t:04d}.png" for t in range(1, n + 1)]
              for name, n in release["videos"]["test"].items()}
    return {"root": root, "pairs": pairs, "videos": videos}


def write_generated(folder: Path, phoenix: dict, change=lambda frames: frames) -> Path:
    """C1's layout: manifest.json and each video's frames (``change`` applied) at both sizes."""
    handoff.write_manifest(folder, phoenix["pairs"], size=MODEL, eval_size=EVAL)
    by_target = {}
    for frames in phoenix["videos"].values():
        for path, frame in zip(frames, change(read_frames(frames))):
            by_target[path] = frame
    for pair in phoenix["pairs"]:
        frame = Image.fromarray(by_target[phoenix["root"] / pair["target_image"]])
        name = handoff.output_name(pair)
        for size in (MODEL, EVAL):
            path = folder / handoff.size_name(size) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            (frame if size == EVAL else frame.resize((size[1], size[0]), Image.BICUBIC)).save(path)
    return folder


def stand_in_i3d(folder: Path) -> Path:
    """A TorchScript network with the real I3D's call: (N, 3, T, 224, 224) -> (N, 6) features."""
    class TinyI3D(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            m = x.mean(dim=(3, 4))
            return torch.cat([m.mean(dim=2), m.std(dim=2)], dim=1)

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyI3D()).save(str(folder / tm.I3D_FILE))
    return folder


@pytest.fixture(autouse=True)
def no_fid_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


# ---------------------------------------------------------------------------------------------
# videos of the pairs


def _entry(source: str, target: str) -> EvalEntry:
    return EvalEntry(source, target, Path("data") / target)


def test_videos_group_by_source_in_frame_number_order():
    entries = [_entry("./img/test/a/images1.png", f"./img/test/a/images{t}.png") for t in (10, 2, 1, 9)]
    entries += [_entry("./img/test/b/images1.png", f"./img/test/b/images{t}.png") for t in (2, 1)]
    videos, reasons = handoff.group_videos(entries)
    assert reasons == []
    assert [v.name for v in videos] == ["test/a", "test/b"]
    assert [handoff.frame_number(e.target_image) for e in videos[0].entries] == [1, 2, 9, 10]  # not 1, 10, 2, 9
    assert videos[1].source_image == "./img/test/b/images1.png"
    assert handoff.resolve_temporal("auto", entries)[1:] == (None, [])

    # DeepFashion's pairs: several targets per source in one folder, but views, not frame numbers
    fashion = [_entry("./img/MEN/Tees/id_1/01_1_front.jpg", f"./img/MEN/Tees/id_1/01_{v}.jpg")
               for v in ("2_side", "3_back")]
    videos, reason, problems = handoff.resolve_temporal("auto", fashion)
    assert videos == [] and problems == [] and "no frame number" in reason and "01_2_side.jpg" in reason
    _, _, problems = handoff.resolve_temporal("on", fashion)
    assert len(problems) == 1 and problems[0].startswith("temporal='on'") and "no frame number" in problems[0]
    # one target per source, and targets spread over two folders: both reasons at once
    spread = [_entry("./img/test/a/images1.png", "./img/test/a/images1.png"),
              _entry("./img/test/b/images1.png", "./img/test/c/images1.png")]
    _, _, problems = handoff.resolve_temporal("on", spread)
    assert len(problems) == 1 and "more than one target" in problems[0]
    _, _, problems = handoff.resolve_temporal("on", spread + [_entry("./img/test/b/images1.png",
                                                                     "./img/test/b/images2.png")])
    assert len(problems) == 1 and "several folders" in problems[0] and "./img/test/b/images1.png" in problems[0]
    assert handoff.resolve_temporal("off", entries) == ([], "off (temporal='off')", [])
    assert "expected one of" in handoff.resolve_temporal("yes", entries)[2][0]


# ---------------------------------------------------------------------------------------------
# C2 through main()


def test_phoenix_config_and_dataset():
    module, cfg = load_c2([PHOENIX_CONFIG])
    assert (module.temporal, module.i3d) == ("on", "weights/i3d")
    assert cfg["eval_sizes"] == "dataset" and cfg["dataset_root"] == "data/phoenix" and cfg["dataset"] == "phoenix"
    assert module.data_spec().eval_size == EVAL
    assert cfg["fid_reference"] == "test" and cfg["pose_accuracy"] == "off"
    # C2 takes the dataset like A1-C1 (it was an unknown name): PCK needs 18-point targets
    module, cfg = load_c2(["--dataset=phoenix"])
    assert cfg["dataset"] == "phoenix" and module.pose_accuracy_mode("wholebody133") == "off"
    assert module.pose_accuracy_mode("openpose18") == "auto"
    module, cfg = load_c2(["--dataset=phoenix", "--pose_accuracy=on"])
    with pytest.raises(SystemExit, match="pose_accuracy='on' but dataset='phoenix' has wholebody133 keypoints"):
        module.pose_accuracy_mode("wholebody133")
    module, cfg = load_c2(["--dataset=mnist"])
    with pytest.raises(SystemExit, match="config error: dataset='mnist'"):
        module.data_spec()
    default, _ = load_c2([])
    assert (default.temporal, default.i3d) == ("auto", "weights/i3d")


def test_copies_score_the_floor_and_fvd_is_null_without_i3d(phoenix, tmp_path, capsys):
    gen = write_generated(tmp_path / "copies", phoenix)
    res = run_c2(phoenix["root"], gen)
    assert set(res) == {EVAL_NAME}
    block = res[EVAL_NAME]
    assert block["count"] == len(phoenix["pairs"]) == sum(len(f) for f in phoenix["videos"].values())
    assert block["ssim"] == pytest.approx(1.0, abs=1e-9) and block["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert block["psnr"] is None and "infinite PSNR" in block["protocol"]["null_reasons"]["psnr"]
    assert block["fid"] is None and metrics.TV_INCEPTION_FILE in block["protocol"]["null_reasons"]["fid"]
    assert block["protocol"]["fid_reference"] == "test" and block["protocol"]["size"] == EVAL_NAME

    t = block["temporal"]
    assert t["count"] == 2 and t["frames"] == block["count"] == 32
    assert [v["name"] for v in t["videos"]] == list(phoenix["videos"])
    assert t["warping_error"] == t["warping_error_real"] > 0
    assert t["temporal_consistency_difference"] == 0.0
    for v in t["videos"]:
        truth = read_frames(phoenix["videos"][v["name"]])
        assert v["frames"] == len(truth)
        assert v["warping_error"] == v["warping_error_real"] == tm.warping_error(truth, truth)["warping_error_real"]
    assert t["fvd"] is None
    reason = t["protocol"]["null_reasons"]["fvd"]
    assert tm.I3D_FILE in reason and str(gen / "no_i3d") in reason and "\n" not in reason
    assert set(t["protocol"]["null_reasons"]) == {"fvd"} and "temporal" not in block["protocol"]["null_reasons"]
    assert "one source image" in t["protocol"]["videos"]

    out = capsys.readouterr().out
    assert "warping error (GT) | TCD | FVD |" in out
    assert f"| {t['warping_error']:.5f} ({t['warping_error_real']:.5f}) | 0.0000 | n/a |" in out
    assert f"fvd: null ({reason})" in out


def test_flicker_raises_warping_error_and_tcd_fvd_with_stand_in_network(phoenix, tmp_path):
    gen = write_generated(tmp_path / "flicker", phoenix, change=flicker)
    i3d = stand_in_i3d(tmp_path / "i3d")
    res = run_c2(phoenix["root"], gen, f"--i3d={i3d}", "--num_workers=1")
    t = res[EVAL_NAME]["temporal"]
    truths = [read_frames(f) for f in phoenix["videos"].values()]
    fakes = [flicker(f) for f in truths]

    for v, truth, fake in zip(t["videos"], truths, fakes):
        assert v["warping_error"] > 5 * v["warping_error_real"] > 0
        # the temporal consistency difference computed directly from the frames
        g, r = fake.astype(np.float64) / 255, truth.astype(np.float64) / 255
        dg, dr = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2, 3)), np.abs(np.diff(r, axis=0)).mean(axis=(1, 2, 3))
        assert v["temporal_consistency_difference"] == pytest.approx(np.abs(dg - dr).mean(), rel=1e-5)
    assert t["temporal_consistency_difference"] == pytest.approx(
        np.mean([v["temporal_consistency_difference"] for v in t["videos"]]))
    assert t["temporal_consistency_difference"] > 0.05  # about 40/255 a frame pair

    # FVD: the stand-in's features of one 16-frame clip per video, computed here from the files
    assert t["protocol"]["fvd_clips"] == {"clip_length": 16, "generated_clips": 2, "real_clips": 2,
                                          "videos_too_short": 0, "feature_dim": 6}
    model = tm.load_i3d(i3d)
    expected = tm.fvd_from_features(tm.i3d_features(model, fakes)[0], tm.i3d_features(model, truths)[0])
    assert t["fvd"] == pytest.approx(expected, rel=1e-6) and t["fvd"] > 0
    assert "fvd" not in t["protocol"]["null_reasons"]
    assert t["protocol"]["fvd_weights"] == str(i3d / tm.I3D_FILE)


def test_fvd_asked_for_without_i3d_exits_nonzero_after_writing(phoenix, tmp_path):
    gen = write_generated(tmp_path / "copies", phoenix)
    options = [PHOENIX_CONFIG, f"--dataset_root={phoenix['root']}", f"--generated={gen}", "--fvd=on",
               "--lpips_backbone_random=True", "--fid_cache=", "--num_workers=0", "--device=cpu"]
    module, cfg = load_c2([*options, f"--i3d={gen / 'no_i3d'}"])
    with pytest.raises(SystemExit) as e:
        module.main(cfg)
    message = str(e.value.code)
    assert message.startswith("error: fid, fvd not computed") and "\n" not in message
    assert tm.I3D_FILE in message and tm.I3D_URL in message and metrics.TV_INCEPTION_FILE in message
    t = json.loads((gen / "metrics.json").read_text())[EVAL_NAME]["temporal"]
    assert t["fvd"] is None and t["warping_error"] > 0

    module, cfg = load_c2([*options, "--temporal=off"])
    with pytest.raises(handoff.ManifestError, match="fvd='on' needs videos"):
        module.main(cfg)


def test_incomplete_videos_are_reported_before_anything_is_computed(phoenix, tmp_path):
    gen = write_generated(tmp_path / "holes", phoenix)
    manifest = json.loads((gen / "manifest.json").read_text())
    names = list(phoenix["videos"])
    dropped = next(i for i, e in enumerate(manifest) if e["target_image"].endswith(f"{names[0]}/images0005.png"))
    del manifest[dropped]                                                  # a frame of video 0 without a pair
    (gen / "manifest.json").write_text(json.dumps(manifest))
    lost = next(e for e in manifest if e["target_image"].endswith(f"{names[1]}/images0003.png"))
    (gen / lost[f"generated_{EVAL_NAME}"]).unlink()                       # video 1: a generated frame missing
    with pytest.raises(handoff.ManifestError) as e:
        run_c2(phoenix["root"], gen)
    text = str(e.value)
    assert text.startswith("C2 input check failed with 2 problem(s)")
    assert f"video {names[0]}: 1 of its" in text and "images0005.png" in text
    assert lost[f"generated_{EVAL_NAME}"] in text and "missing" in text
    assert not (gen / "metrics.json").exists()

    # the same pairs as DeepFashion evaluates them (one target per source) do not form videos:
    # "auto" scores frames only, configs/phoenix.py's "on" refuses
    single = [e for e in manifest if e["target_image"].endswith("images0001.png")]
    (gen / "manifest.json").write_text(json.dumps(single))
    res = run_c2(phoenix["root"], gen, "--temporal=auto")
    assert res[EVAL_NAME]["temporal"] is None and res[EVAL_NAME]["count"] == 2
    assert "do not form videos" in res[EVAL_NAME]["protocol"]["null_reasons"]["temporal"]
    with pytest.raises(handoff.ManifestError, match="temporal='on' but the evaluated pairs do not form videos"):
        run_c2(phoenix["root"], gen)
    shutil.rmtree(gen)
