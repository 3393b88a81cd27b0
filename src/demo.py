"""`make demo`: the whole pipeline on the embedded default, a synthetic dataset, with the tiny
preset on the CPU. Each step runs the numbered script exactly as a researcher would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "logs" / "demo"
DATA = RUN / "data"


def step(title: str, *args: str) -> None:
    print(f"\n=== {title}: python {' '.join(args)}", flush=True)
    t = time.time()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
    print(f"=== {title} done in {time.time() - t:.0f}s", flush=True)


def main() -> None:
    start = time.time()
    if not (DATA / "synthetic_meta.json").is_file():
        print("synthetic demo data:", make_synthetic_dataset(DATA, n_identities=6, poses_per_identity=4,
                                                              test_identities=2, width=176, height=256))
    step("A1 pose images", "A1.pose_data_preprocessing.py", "--preset=tiny", f"--dataset_root={DATA}")
    print(f"\ndemo finished in {time.time() - start:.0f}s")
    print(f"  dataset:     {DATA}")
    print(f"  pose images: {DATA / 'pose_img'}")


if __name__ == "__main__":
    main()
