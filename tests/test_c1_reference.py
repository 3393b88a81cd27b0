"""C1 on the shared samples gives the images it gave before the package move (issue 23): the tiny
random pipeline of make_tiny_pipeline's default seed at 128x88, poses drawn at 256x176, C1's tiny
preset. tests/data/c1_reference/ holds that run's five 128x88 outputs (random weights: this
project's own images); they are matched by pair through C1's manifest, as C2 reads it, so a change
of C1's file names is no failure and a changed image is. On the machine that made them the match is
exact; two grey levels are allowed for another CPU's float rounding (the matrix kernels differ by
instruction set), far below what any change of the inputs, the sampler or the saving does."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from src.evaluate import handoff
from src.train.stage2 import make_tiny_pipeline
from src.util.scripts import run_script

REFERENCE = Path(__file__).parent / "data" / "c1_reference"
SIZE = (128, 88)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_c1_on_the_shared_samples_gives_the_reference_images(samples_root, tmp_path):
    make_tiny_pipeline(tmp_path / "sd2", height=SIZE[0], width=SIZE[1], pose_draw_size=(256, 176)).save_pretrained(
        tmp_path / "pipeline")
    out = tmp_path / "C1"
    r = run_script("C1.test_Diffusion_model.py", "--preset=tiny", f"--pipeline={tmp_path / 'pipeline'}",
                   f"--dataset_root={samples_root}", f"--out_dir={out}", capture=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    size = handoff.size_name(SIZE)
    entries, problems = handoff.generated_entries(out, samples_root, [size])
    assert not problems, problems
    generated = {(e.source_image, e.target_image): e.generated[size] for e in entries}
    references = json.loads((REFERENCE / "pairs.json").read_text())
    assert sorted(generated) == sorted((p["source_image"], p["target_image"]) for p in references)
    for p in references:
        got, want = pixels(generated[p["source_image"], p["target_image"]]), pixels(REFERENCE / p["image"])
        assert got.shape == want.shape == (*SIZE, 3)
        assert np.abs(got - want).max() <= 2, (p["image"], np.abs(got - want).max())
