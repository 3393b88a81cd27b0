"""`make demo`: the whole pipeline on the embedded default, a synthetic dataset, with the tiny
preset on the CPU: synthetic data -> A1 -> B1 -> B2 -> C1 -> C2. Each step runs the numbered
script exactly as a researcher would; a step whose result is already there is skipped, so a
second `make demo` only repeats what is missing (delete logs/demo to start over).

The models are tiny and start from random weights (no pretrained SD2, CLIP or DINOv2), so the
demo shows that every stage runs and hands its result to the next, not image quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "logs" / "demo"
DATA = RUN / "data"
B1_OUT, B2_OUT, C1_OUT = RUN / "B1", RUN / "B2", RUN / "C1"
B1_STEPS = 300
B2_STEPS = 150


def step(title: str, done: Path | None, *args: str) -> None:
    command = f"python {' '.join(args)}"
    if done is not None and done.exists():
        print(f"\n=== {title}: already done ({done.relative_to(ROOT)}), skipped: {command}", flush=True)
        return
    print(f"\n=== {title}: {command}", flush=True)
    t = time.time()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
    print(f"=== {title} done in {time.time() - t:.0f}s", flush=True)


def main() -> None:
    start = time.time()
    if not (DATA / "synthetic_meta.json").is_file():
        print("synthetic demo data:", make_synthetic_dataset(DATA, n_identities=8, poses_per_identity=4,
                                                              test_identities=2, width=176, height=256))
    data = f"--dataset_root={DATA}"
    step("A1 pose images", None, "A1.pose_data_preprocessing.py", "--preset=tiny", data)
    step("B1 fusion model", B1_OUT / "fusion_model", "B1.train_Fusion_model.py", "--preset=tiny", data,
         f"--out_dir={B1_OUT}", f"--max_steps={B1_STEPS}")
    step("B2 diffusion model", B2_OUT / "pipeline", "B2.train_Diffusion_model.py", "--preset=tiny", data,
         f"--fusion_model={B1_OUT / 'fusion_model'}", f"--out_dir={B2_OUT}", f"--max_steps={B2_STEPS}")
    step("C1 generate the test pairs", None, "C1.test_Diffusion_model.py", "--preset=tiny", data,
         f"--pipeline={B2_OUT / 'pipeline'}", f"--out_dir={C1_OUT}")
    step("C2 metrics", None, "C2.eval.caculate_metrics.py", "--preset=tiny", data, f"--generated={C1_OUT}")

    b1 = json.loads((B1_OUT / "metrics.json").read_text())
    print(f"\ndemo finished in {time.time() - start:.0f}s")
    print(f"  dataset:           {DATA}")
    print(f"  stage 1 retrieval: {json.dumps(b1.get('train', b1))}")
    print(f"  pipeline:          {B2_OUT / 'pipeline'}")
    print(f"  grid:              {C1_OUT / 'grids' / 'grid_000.png'}")
    print(f"  metrics:           {C1_OUT / 'metrics.json'}")


if __name__ == "__main__":
    main()
