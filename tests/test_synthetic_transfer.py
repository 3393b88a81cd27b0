"""The synthetic pose-transfer benchmark at its small test budget: FPDM, trained from scratch on
the CPU, must put the figure in the target pose better than copying the source does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fpdm_beats_copy_source_on_pose_iou(tmp_path):
    out, results = tmp_path / "run", tmp_path / "results"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "synthetic_transfer.py"), "--preset=test",
                        f"--out_dir={out}", f"--results_dir={results}", "--readme="],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((results / "synthetic.json").read_text())
    methods = report["methods"]
    fpdm, copy = methods["fpdm"], methods["copy_source"]
    assert fpdm["count"] == copy["count"] == report["data"]["benchmark_pairs"] > 0
    assert fpdm["pose_iou"] > copy["pose_iou"] + 0.1, methods
    assert fpdm["ssim"] > copy["ssim"], methods
    assert report["vae"]["psnr_test"] > 18.0
    assert (results / "synthetic_grid.png").is_file()
