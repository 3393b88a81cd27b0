"""`make demo-phoenix`: the PHOENIX-2014T path end to end on the CPU, on the project's own
synthetic signing set written in the official release's layout with MSKA-format keypoint
pickles: release -> A1 (PHOENIX mode) -> B1 -> B2 -> C1 (per-video MP4/GIF) -> C2 (per-frame
metrics and the temporal figures). Each step runs the numbered script exactly as a researcher
runs it on the real release, with the tiny preset and configs/phoenix.py (tiny's PHOENIX sizes:
a quarter of the model size); a step whose result is there is skipped (delete logs/demo_phoenix
to start over).

The networks are tiny and start from random weights, and train for a minute: the videos show
that every stage runs on signing video and hands its result to the next (frames, 133-point
poses, the four-panel videos, the temporal metrics), not what a trained model generates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .demo import step
from .signing import write_synthetic_signing

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "logs" / "demo_phoenix"
RELEASE = RUN / "PHOENIX-2014-T"
DATA = RUN / "data"
B1_OUT, B2_OUT, C1_OUT = RUN / "B1", RUN / "B2", RUN / "C1"
VIDEOS = {"train": 12, "test": 3}
FRAMES = (12, 20)
TRAIN_PAIRS = 500
B1_STEPS = 150
B2_STEPS = 100
PRESETS = ("--preset=tiny", f"--config={ROOT / 'configs' / 'phoenix.py'}")
TEMPORAL_FIGURES = ("warping_error", "warping_error_real", "temporal_consistency_difference", "fvd")


def main() -> None:
    start = time.time()
    if not (RELEASE / "keypoints").is_dir():
        written = write_synthetic_signing(RELEASE, videos=VIDEOS, frames=FRAMES, seed=0)
        print(f"synthetic signing release: {written['root']} "
              f"({sum(len(v) for v in written['videos'].values())} videos)")
    data = f"--dataset_root={DATA}"
    step("A1 PHOENIX mode", DATA / "test_pairs_data.json", "A1.pose_data_preprocessing.py", *PRESETS, data,
         f"--phoenix_root={RELEASE}", f"--keypoints={RELEASE / 'keypoints'}", f"--train_pairs_count={TRAIN_PAIRS}")
    step("B1 fusion model", B1_OUT / "fusion_model", "B1.train_Fusion_model.py", *PRESETS, data,
         f"--out_dir={B1_OUT}", f"--max_steps={B1_STEPS}", "--eval_max_pairs=100")
    step("B2 diffusion model", B2_OUT / "pipeline", "B2.train_Diffusion_model.py", *PRESETS, data,
         f"--fusion_model={B1_OUT / 'fusion_model'}", f"--out_dir={B2_OUT}", f"--max_steps={B2_STEPS}")
    step("C1 generate the test videos", None, "C1.test_Diffusion_model.py", *PRESETS, data,
         f"--pipeline={B2_OUT / 'pipeline'}", f"--out_dir={C1_OUT}")
    step("C2 metrics", None, "C2.eval.caculate_metrics.py", *PRESETS, data, f"--generated={C1_OUT}")

    metrics = json.loads((C1_OUT / "metrics.json").read_text())
    print(f"\nPHOENIX demo finished in {time.time() - start:.0f}s")
    print(f"  release (synthetic): {RELEASE}")
    print(f"  dataset root:        {DATA}")
    print(f"  pipeline:            {B2_OUT / 'pipeline'}")
    print(f"  metrics:             {C1_OUT / 'metrics.json'}")
    for size, block in metrics.items():
        temporal = block.get("temporal", {})
        figures = ", ".join(f"{k} {temporal[k]:.4f}" for k in TEMPORAL_FIGURES if isinstance(temporal.get(k), float))
        print(f"  temporal ({size}):  {figures}")
    print("  videos (source | pose | ground truth | generated; *_generated: the generated frames alone):")
    for video in sorted((C1_OUT / "videos").rglob("*.mp4")):
        print(f"    {video}")


if __name__ == "__main__":
    main()
