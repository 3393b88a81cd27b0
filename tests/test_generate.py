"""C1: per-pair seeds, resumable generation, manifest and grids, through the script itself (in
this process; one test runs the real command line for its exit status)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.evaluate import generate, handoff
from src.data import load_pairs
from src.train.stage2 import make_tiny_pipeline
from src.util.scripts import run_script

ROOT = Path(__file__).resolve().parents[1]
C1 = "C1.test_Diffusion_model.py"
SIZE, EVAL = (64, 48), (32, 24)
COMMON = [f"--size={SIZE}", f"--eval_size={EVAL}", "--pose_draw_size=(256, 176)", "--num_inference_steps=3",
          "--num_grids=1"]


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A saved tiny pipeline whose zero-initialised pose path carries some weight."""
    tmp = tmp_path_factory.mktemp("c1")
    pipe = make_tiny_pipeline(tmp / "sd2", height=SIZE[0], width=SIZE[1])
    g = torch.Generator().manual_seed(3)
    pipe.pose_encoder.embedding.conv_out.weight.data = torch.randn(
        pipe.pose_encoder.embedding.conv_out.weight.shape, generator=g) * 0.05
    pipe.save_pretrained(tmp / "pipeline")
    return tmp / "pipeline"


def run_c1(pipeline_dir, samples_root, out, *extra):
    proc = run_script(C1, f"--pipeline={pipeline_dir}", f"--dataset_root={samples_root}", f"--out_dir={out}", *COMMON,
                      *extra, capture=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


class Interrupt(Exception):
    pass


class StopAfter:
    """The pipeline, interrupted (like Ctrl-C) when it is called for the (n+1)-th batch."""

    def __init__(self, pipe, n):
        self.pipe, self.n = pipe, n

    def __call__(self, **kw):
        if self.n == 0:
            raise Interrupt
        self.n -= 1
        return self.pipe(**kw)

    def __getattr__(self, name):  # everything else is the pipeline's
        return getattr(self.pipe, name)


def test_pair_names_and_seeds():
    pair = {"source_image": "./img/WOMEN/Dresses/id_1/01_1_front.jpg", "target_image": "img/WOMEN/Dresses/id_1/02_2_side.jpg"}
    # the FPDM authors' C1 names, which C2 reads without a manifest too
    assert handoff.output_name(pair) == "WOMENDressesid_101_1_front.jpg_2_WOMENDressesid_102_2_side.jpg.png"
    assert handoff.expected_names(pair)["authors"] == handoff.output_name(pair)
    clash = [{"source_image": "./img/a/bc.jpg", "target_image": "./img/x.jpg"},
             {"source_image": "./img/ab/c.jpg", "target_image": "./img/x.jpg"}]
    with pytest.raises(ValueError, match="get one file name abc.jpg_2_x.jpg.png"):
        handoff.check_output_names(clash)
    handoff.check_output_names(clash[:1] * 2)  # the same pair twice is one image
    assert generate.pair_seed(7, pair) == generate.pair_seed(7, dict(pair))
    assert generate.pair_seed(7, pair) != generate.pair_seed(8, pair)
    swapped = {"source_image": pair["target_image"], "target_image": pair["source_image"]}
    assert generate.pair_seed(7, pair) != generate.pair_seed(7, swapped)
    assert generate.split_for_process(list(range(7)), 1, 3) == [2, 3]  # contiguous: a video stays together
    assert sorted(sum((generate.split_for_process(list(range(7)), i, 3) for i in range(3)), [])) == list(range(7))


def test_interrupted_run_resumes_to_the_images_of_an_uninterrupted_run(pipeline_dir, samples_root, tmp_path):
    from src.pipeline import FPDMPipeline

    pairs = load_pairs(samples_root, "test_pairs_data.json")
    assert len(pairs) == 5

    # Uninterrupted, all five pairs in one batch.
    whole = tmp_path / "whole"
    run_c1(pipeline_dir, samples_root, whole, "--batch_size=5")

    # Interrupted after the first batch of two, then finished by the script with batches of three.
    resumed = tmp_path / "resumed"
    pipe = FPDMPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(Interrupt):
        generate.generate_pairs(StopAfter(pipe, 1), samples_root, pairs, resumed, size=SIZE, eval_size=EVAL,
                         draw_size=(256, 176), dataset="deepfashion", batch_size=2, num_inference_steps=3,
                         show_progress=False)
    written = sorted(p.name for p in (resumed / handoff.size_name(SIZE)).iterdir())
    assert written == sorted(handoff.output_name(p) for p in pairs[:2])  # nothing partial, no temp files
    stdout = run_c1(pipeline_dir, samples_root, resumed, "--batch_size=3")
    assert "'generated': 3, 'skipped': 2" in stdout

    for size in (SIZE, EVAL):
        names = sorted(p.name for p in (whole / handoff.size_name(size)).iterdir())
        assert names == sorted(handoff.output_name(p) for p in pairs)
        for name in names:
            a, b = pixels(whole / handoff.size_name(size) / name), pixels(resumed / handoff.size_name(size) / name)
            assert a.shape == (*size, 3)
            assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.999, name
    first = [pixels(whole / handoff.size_name(SIZE) / handoff.output_name(p)) for p in pairs]
    assert all(np.abs(first[0] - x).mean() > 1 for x in first[1:])  # the pairs' images differ

    manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest == json.loads((resumed / "manifest.json").read_text())
    assert [(m["source_image"], m["target_image"]) for m in manifest] == [
        (p["source_image"], p["target_image"]) for p in pairs]
    assert all((whole / m["generated"]).is_file() and (whole / m[f"generated_{handoff.size_name(EVAL)}"]).is_file()
               for m in manifest)
    grid = Image.open(whole / "grids" / "grid_000.png")
    assert grid.size == (4 * 176, 4 * 256)
    assert json.loads((whole / "C1_config.json").read_text())["batch_size"] == 5


def test_c1_takes_its_sizes_from_the_pipeline(samples_root, tmp_path):
    """A pipeline trained at 256x176 (the default evaluation size) with its own pose drawing
    size: C1 with no size flags writes one 256x176 folder and a manifest C2 reads, and draws the
    test poses ("draw") at the pipeline's pose_draw_size."""
    from src.data import pose_path
    from src.pose import read_keypoints
    from src.pose.render import OPENPOSE18

    size, draw = (256, 176), (300, 204)
    make_tiny_pipeline(tmp_path / "sd2", height=size[0], width=size[1], pose_draw_size=draw).save_pretrained(
        tmp_path / "pipeline")
    out = tmp_path / "out"
    proc = run_script(C1, "--preset=tiny", f"--pipeline={tmp_path / 'pipeline'}", f"--dataset_root={samples_root}",
                      f"--out_dir={out}", "--num_inference_steps=2", "--test_pose=draw", capture=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    pairs = load_pairs(samples_root, "test_pairs_data.json")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["256x176", "grids"]
    assert sorted(p.name for p in (out / "256x176").iterdir()) == sorted(handoff.output_name(p) for p in pairs)
    for p in pairs:
        with Image.open(out / "256x176" / handoff.output_name(p)) as im:
            assert im.size == (size[1], size[0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(m["generated"], m["generated_256x176"]) for m in manifest] == [
        (f"256x176/{handoff.output_name(p)}",) * 2 for p in pairs]
    entries, problems = handoff.generated_entries(out, samples_root, ["256x176", "512x352"])
    assert problems == [] and [e.generated["256x176"] for e in entries] == [
        out / "256x176" / handoff.output_name(p) for p in pairs]
    config = json.loads((out / "C1_config.json").read_text())
    assert config["size"] == list(size) and config["pose_draw_size"] == list(draw)

    # the grid's pose column (256x176 cells: the pose as is) is drawn at the pipeline's pose_draw_size
    grid = np.asarray(Image.open(out / "grids" / "grid_000.png").convert("RGB"))
    kp = read_keypoints(pose_path(samples_root, pairs[0]["target_image"]))
    pose_cell = grid[:size[0], size[1]:2 * size[1]]
    assert np.array_equal(pose_cell, np.asarray(OPENPOSE18.stage2_pose(kp, size, draw)))
    assert not np.array_equal(pose_cell, np.asarray(OPENPOSE18.stage2_pose(kp, size, size)))


def test_c1_refuses_a_bad_pair_file_before_loading_the_model(samples_root, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("img", "pose"):
        (root / name).symlink_to(Path(samples_root) / name)
    (root / "test_pairs_data.json").write_text("[{\"source_image\": \"img/missing.jpg\"}]")
    proc = run_script(C1, f"--pipeline={tmp_path / 'nowhere'}", f"--dataset_root={root}",
                      f"--out_dir={tmp_path / 'out'}", capture=True)
    assert proc.returncode != 0
    assert "test_pairs_data.json" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_c1_missing_pipeline_folder_is_one_clear_message(samples_root, tmp_path):
    cmd = [sys.executable, C1, f"--pipeline={tmp_path / 'B2' / 'pipeline'}",
           f"--dataset_root={samples_root}", f"--out_dir={tmp_path / 'out'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{tmp_path / 'B2' / 'pipeline'}: not an FPDM pipeline folder" in proc.stderr


def test_default_test_pose_is_a1s_render_at_the_photo_size_resized(samples_root, tmp_path):
    """The authors' C1 reads A1's pose image (drawn at 750x1101) and resizes it; "draw" draws at
    the training size instead, so its lines are thicker at the model size."""
    import shutil

    from src.data import image_path, pose_image_path, pose_path
    from src.pose import draw_pose_from_frame, read_keypoints
    from src.pose.render import OPENPOSE18

    root = tmp_path / "data"
    shutil.copytree(samples_root, root)
    pair = load_pairs(root, "test_pairs_data.json")[0]
    size, draw = (512, 352), (550, 375)
    with Image.open(image_path(root, pair["target_image"])) as im:
        photo = im.size
    kp = read_keypoints(pose_path(root, pair["target_image"]))
    a1_render = Image.fromarray(draw_pose_from_frame(kp, photo[1], photo[0]))
    # no pose_img/ yet: drawn at the photo size
    default = generate.test_pose(root, pair["target_image"], size, draw, dataset="deepfashion")
    expected = np.asarray(a1_render.resize((size[1], size[0]), Image.BICUBIC))
    assert np.array_equal(np.asarray(default), expected)
    saved = pose_image_path(root, pair["target_image"])  # A1's file, when present, is what is read
    saved.parent.mkdir(parents=True, exist_ok=True)
    a1_render.transpose(Image.FLIP_LEFT_RIGHT).save(saved, quality=100)
    from_file = generate.test_pose(root, pair["target_image"], size, draw, dataset="deepfashion")
    assert np.abs(np.asarray(from_file, np.int16) - np.asarray(
        a1_render.transpose(Image.FLIP_LEFT_RIGHT).resize((size[1], size[0]), Image.BICUBIC), np.int16)).mean() < 2
    drawn = generate.test_pose(root, pair["target_image"], size, draw, "draw", dataset="deepfashion")
    assert np.array_equal(np.asarray(drawn), np.asarray(OPENPOSE18.stage2_pose(kp, size, draw)))
    lit = lambda im: int((np.asarray(im).max(axis=2) > 128).sum())  # noqa: E731
    assert lit(drawn) > 1.3 * lit(default)  # thinner lines in the authors' test poses
    with pytest.raises(ValueError, match="test_pose"):
        generate.test_pose(root, pair["target_image"], size, draw, "other", dataset="deepfashion")


def test_generate_pairs_with_a_condition_dropped_gives_the_pipelines_ablated_images(pipeline_dir, samples_root,
                                                                                      tmp_path):
    from src.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    pairs = load_pairs(samples_root, "test_pairs_data.json")[:2]
    common = dict(size=SIZE, eval_size=SIZE, draw_size=(256, 176), dataset="deepfashion", batch_size=2,
                  num_inference_steps=2, show_progress=False)
    generate.generate_pairs(pipe, samples_root, pairs, tmp_path / "drop", drop_conditions=("pose",), **common)
    generate.generate_pairs(pipe, samples_root, pairs, tmp_path / "full", **common)
    for pair in pairs:
        source, pose = generate.pair_inputs(samples_root, pair, (256, 176), dataset="deepfashion")
        alone = pipe(source_image=source, target_pose=pose, num_inference_steps=2, height=SIZE[0], width=SIZE[1],
                     seeds=[generate.pair_seed(7, pair)], output_type="pil", drop_conditions=("pose",)).images[0]
        dropped = pixels(tmp_path / "drop" / handoff.size_name(SIZE) / handoff.output_name(pair))
        full = pixels(tmp_path / "full" / handoff.size_name(SIZE) / handoff.output_name(pair))
        assert np.abs(dropped - np.asarray(alone, dtype=np.int16)).max() <= 1
        assert np.abs(dropped - full).mean() > 0.2  # the pose (given weight by the fixture) was really zeroed


def test_c1_dtype_takes_torch_names_and_bad_options_are_one_line_before_any_work(tmp_path):
    from src.util.devices import resolve_dtype

    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16 and resolve_dtype("float32", "cpu") is torch.float32
    args = [f"--dataset_root={tmp_path / 'nowhere'}", f"--out_dir={tmp_path / 'out'}"]
    proc = run_script(C1, "--dtype=float64", *args, capture=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("config error: dtype='float64': choose one of auto, fp32")
    assert "nowhere" not in proc.stderr and not (tmp_path / "out").exists()  # stopped before the dataset check
    proc = run_script(C1, "--scheduler=euler", *args, capture=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        "config error: scheduler='euler': choose one of ddpm, ddim, dpm++, unipc")


def test_c1_gives_the_pipeline_the_full_render_and_shows_one_bar(pipeline_dir, samples_root, tmp_path, capsys):
    """Each network's view of the test pose is resized from A1's render at the photo's size (the
    fusion model's straight to its size, as the authors' C1), and the run shows one progress bar."""
    from src.pipeline import FPDMPipeline

    pipe = FPDMPipeline.from_pretrained(pipeline_dir)
    seen = []

    class Recorder(StopAfter):
        def __call__(self, **kw):
            seen.extend(p.size for p in kw["target_pose"])
            return self.pipe(**kw)

    pairs = load_pairs(samples_root, "test_pairs_data.json")[:2]
    capsys.readouterr()  # loading's own bar
    generate.generate_pairs(Recorder(pipe, 9), samples_root, pairs, tmp_path / "out", size=SIZE, eval_size=SIZE,
                            draw_size=(256, 176), dataset="deepfashion", batch_size=1, num_inference_steps=3,
                            show_progress=True)
    photos = [Image.open(samples_root / p["target_image"]).size for p in pairs]
    assert seen == photos and photos[0] == (750, 1101)
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "%|" in line]
    assert bars and all(line.startswith("generate") for line in bars)


def test_c1_rerun_with_other_settings_stops_and_the_same_settings_resume(pipeline_dir, samples_root, tmp_path):
    out = tmp_path / "out"
    run_c1(pipeline_dir, samples_root, out, "--max_pairs=2")
    folder = out / handoff.size_name(SIZE)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = run_script(C1, f"--pipeline={pipeline_dir}", f"--dataset_root={samples_root}", f"--out_dir={out}", *COMMON,
                      "--max_pairs=2", "--num_inference_steps=4", "--guidance_scale=3.0", capture=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "num_inference_steps: 3 -> 4" in message and "guidance_scale: 2.0 -> 3.0" in message
    assert "--overwrite=True" in message and "another --out_dir" in message
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing touched
    assert "'generated': 0, 'skipped': 2" in run_c1(pipeline_dir, samples_root, out, "--max_pairs=2")
    stdout = run_c1(pipeline_dir, samples_root, out, "--max_pairs=2", "--num_inference_steps=4", "--overwrite=True")
    assert "'generated': 2, 'skipped': 0" in stdout
    assert json.loads((out / generate.RUN_RECORD).read_text())["num_inference_steps"] == 4
    assert any(before[p.name] != p.read_bytes() for p in folder.iterdir())
