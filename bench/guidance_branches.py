"""C1's seconds per image with three guidance branches (the authors' arithmetic) and with two (the
default at one guidance scale: e_u + g (e_f - e_u), the same images up to floating-point noise),
measured in one run on this machine.

    python bench/guidance_branches.py                       # tiny (20 steps) and paper-size 256x176 (4 steps)

Random weights (speed does not depend on them), fp32, batch 1, DDPM; writes
bench/results/guidance_branches.json and prints a Markdown table.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.perf import SampleSettings, measure_sampling  # noqa: E402

CASES = [  # (name, model, (height, width), source size, fusion size, steps)
    ("tiny 64x48", "tiny", (64, 48), 64, 64, 20),
    ("paper size 256x176", "full", (256, 176), 256, 224, 4),
]


def main() -> None:
    rows = []
    for name, model, (h, w), source, fusion, steps in CASES:
        result = {}
        for branches in (3, None):
            settings = SampleSettings(batch=1, dtype="fp32", tf32=False, guidance_branches=branches)
            start = time.perf_counter()
            r = measure_sampling(settings, "cpu", model=model, height=h, width=w, source_size=source,
                                 fusion_size=fusion, steps=steps, warmup=1, iters=2)
            result["three" if branches == 3 else "two"] = r["s_per_image"]
            print(f"{name}, {'3' if branches == 3 else '2'} branches: {r['s_per_image']:.3f} s/image "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        rows.append({"case": name, "steps": steps, "s_per_image_three_branches": result["three"],
                     "s_per_image_two_branches": result["two"], "ratio": result["two"] / result["three"]})
    out = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "rows": rows}
    path = ROOT / "bench" / "results" / "guidance_branches.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("| case | steps | s/image, 3 branches | s/image, 2 branches | ratio |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['steps']} | {r['s_per_image_three_branches']:.3f} | "
              f"{r['s_per_image_two_branches']:.3f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
