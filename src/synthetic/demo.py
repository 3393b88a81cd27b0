"""`make demo`: the whole pipeline on a synthetic dataset, with the tiny preset on the CPU, trained
long enough to learn pose transfer: synthetic data -> A1 -> tiny autoencoder -> B1 -> B2 -> C1 ->
C2 -> pose IoU. Each numbered step runs the script's command line exactly as a researcher would
(in this process, ``src.util.scripts``: a subprocess per step would repeat the imports); a step
whose result is already there is skipped, so a second `make demo` only repeats what is missing
(delete the run folder, logs/demo, to start over).

    python -m src.synthetic.demo                      # into logs/demo
    python -m src.synthetic.demo --out_dir=DIR        # elsewhere
    python -m src.synthetic.demo --b2_steps=150       # a smaller budget (tests/test_demo.py)

No pretrained SD2, CLIP or DINOv2 reaches this project's machines, so every network starts from
random weights and the budget is a few CPU minutes. What makes that enough: plain-coloured
figures at 64x64, an autoencoder trained on them first (``src.synthetic.autoencoder``: the
tiny preset's random VAE decodes nothing recognisable), and most of the time given to B2. The
generated figures stand in the target pose; their clothing colours are only roughly right. The
demo ends by scoring pose against the known answer (``src.synthetic.figures.TransferScorer``: pose IoU,
the generated silhouette against the target's) next to copying the source.
"""

from __future__ import annotations

# ---- hyperparameters: edit here, or override with --name=value
out_dir = "logs/demo"
vae_steps = 400                         # the autoencoder's training steps
b2_steps = 300                          # B2's steps: with vae_steps, what the demo's few CPU minutes buy
# -----------------------------------------------------------------------------------------------

import json
import time
from pathlib import Path

from ..util.scripts import run_script

ROOT = Path(__file__).resolve().parents[2]
SIZE = (64, 64)                 # (height, width) of every image, model and evaluation alike
POSE_DRAW_SIZE = (128, 128)     # target poses drawn here, then resized: lines thick enough at 64 px
IDENTITIES, TEST_IDENTITIES, POSES = 60, 2, 4
VAE_CHANNELS = (16, 32, 32)     # latents 1/4 of the image (16x16): the figures' limbs are 2-3 px wide
POSE_CHANNELS = (8, 16, 16)     # one stride-2 step per VAE downsampling: pose features at the latent size
B1_STEPS = 100
B2_BATCH_SIZE = 16
GRID_ROWS = 8


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def step(title: str, done: Path | None, *args: str) -> None:
    """Run a numbered script (``args``: the script and its options) in this process, as its
    command line runs it, unless ``done`` exists."""
    command = f"python {' '.join(args)}"
    if done is not None and done.exists():
        print(f"\n=== {title}: already done ({shown(done)}), skipped: {command}", flush=True)
        return
    print(f"\n=== {title}: {command}", flush=True)
    t = time.time()
    if run_script(*args).returncode != 0:
        raise SystemExit(f"{title} failed: {command}")
    print(f"=== {title} done in {time.time() - t:.0f}s", flush=True)


def settings() -> dict:
    """What decides the demo's results: a run folder holds one set of them."""
    return {"size": SIZE, "pose_draw_size": POSE_DRAW_SIZE, "identities": IDENTITIES,
            "test_identities": TEST_IDENTITIES, "poses": POSES, "vae_channels": VAE_CHANNELS,
            "pose_channels": POSE_CHANNELS, "vae_steps": vae_steps, "b1_steps": B1_STEPS, "b2_steps": b2_steps,
            "b2_batch_size": B2_BATCH_SIZE}


def claim(run: str | Path, wanted: dict) -> Path:
    """The run folder ``run`` (a relative one lies under the repository) with the settings
    ``wanted`` recorded in it when new; stop when it holds a run made with others (a finished step
    of theirs would be skipped and mixed with these)."""
    from ..util.fileio import atomic_write_json

    run = Path(run) if Path(run).is_absolute() else ROOT / run
    stamp = run / "demo_settings.json"
    wanted = json.loads(json.dumps(wanted))
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return run
    if run.is_dir() and any(run.iterdir()):
        raise SystemExit(f"{run} holds a demo run made with other settings: delete it to start over")
    atomic_write_json(stamp, wanted)
    return run


def autoencoder(data: Path, sd2: Path, size: tuple[int, int], steps: int, channels: tuple[int, ...]) -> None:
    """The tiny autoencoder, trained on the training images of ``data`` into the SD2 folder ``sd2``
    B2 starts from, unless it is there."""
    if (sd2 / "vae_training.json").is_file():
        print(f"\n=== tiny autoencoder: already done ({shown(sd2)}), skipped", flush=True)
        return
    from .autoencoder import train_on_dataset

    print("\n=== tiny autoencoder (src.synthetic.autoencoder)", flush=True)
    t = time.time()
    train_on_dataset(data, sd2, size, steps=steps, block_out_channels=channels)
    print(f"=== tiny autoencoder done in {time.time() - t:.0f}s", flush=True)


def main(run: str | Path = out_dir) -> dict:
    """Run (or finish) the demo under ``run``; returns the pose scores it also writes to
    ``run/scores.json``."""
    from ..util.fileio import atomic_save_image, atomic_write_json
    from ..evaluate.handoff import size_name
    from .figures import TransferScorer, make_synthetic_dataset, pair_grid

    start = time.time()
    run = claim(run, settings())
    data, sd2, b1_out, b2_out, c1_out = run / "data", run / "sd2", run / "B1", run / "B2", run / "C1"
    size_arg, draw_arg = f"({SIZE[0]},{SIZE[1]})", f"({POSE_DRAW_SIZE[0]},{POSE_DRAW_SIZE[1]})"
    if not (data / "synthetic_meta.json").is_file():
        print("synthetic demo data:", make_synthetic_dataset(
            data, n_identities=IDENTITIES, poses_per_identity=POSES, test_identities=TEST_IDENTITIES,
            width=SIZE[1], height=SIZE[0], min_clothing_distance=120, patterns=("plain",)), flush=True)
    dataset = f"--dataset_root={data}"
    step("A1 pose images", None, "A1.pose_data_preprocessing.py", "--preset=tiny", dataset)
    autoencoder(data, sd2, SIZE, vae_steps, VAE_CHANNELS)
    step("B1 fusion model", b1_out / "fusion_model", "B1.train_Fusion_model.py", "--preset=tiny", dataset,
         f"--out_dir={b1_out}", f"--max_steps={B1_STEPS}", f"--image_size={SIZE[0]}", "--eval_max_pairs=256")
    step("B2 diffusion model", b2_out / "pipeline", "B2.train_Diffusion_model.py", "--preset=tiny", dataset,
         f"--pretrained_model={sd2}", f"--fusion_model={b1_out / 'fusion_model'}", f"--out_dir={b2_out}",
         f"--target_size={size_arg}", f"--source_size={SIZE[0]}", f"--fusion_size={SIZE[0]}",
         f"--pose_draw_size={draw_arg}", f"--pose_channels={POSE_CHANNELS}", f"--max_steps={b2_steps}",
         f"--batch_size={B2_BATCH_SIZE}", f"--checkpointing_steps={b2_steps}", f"--validation_steps={b2_steps}")
    step("C1 generate the test pairs", None, "C1.test_Diffusion_model.py", "--preset=tiny", dataset,
         f"--pipeline={b2_out / 'pipeline'}", f"--out_dir={c1_out}", f"--eval_size={size_arg}", "--test_pose=draw")
    step("C2 metrics", None, "C2.eval.caculate_metrics.py", "--preset=tiny", dataset, f"--generated={c1_out}",
         f"--eval_sizes=['{SIZE[0]}x{SIZE[1]}']")

    from ..data import load_pairs

    pairs = load_pairs(data, "test_pairs_data.json")
    scorer = TransferScorer(data, pairs, SIZE)
    fpdm, copy = scorer.score(scorer.generated(c1_out)), scorer.score(scorer.sources())
    scores = {"pairs": len(pairs), "pose_iou": {"fpdm": fpdm["pose_iou"], "copy_source": copy["pose_iou"]},
              "appearance_accuracy": {"fpdm": fpdm["appearance_accuracy"], "copy_source": copy["appearance_accuracy"],
                                      "candidates": fpdm["candidates"]}}
    atomic_write_json(run / "scores.json", scores)
    grid = atomic_save_image(run / "demo_grid.png", pair_grid(data, pairs, {"generated": c1_out}, SIZE, POSE_DRAW_SIZE,
                                                               rows=GRID_ROWS))
    metrics = json.loads((c1_out / "metrics.json").read_text())[f"{SIZE[0]}x{SIZE[1]}"]
    print(f"\ndemo finished in {time.time() - start:.0f}s")
    print(f"  dataset:       {data}")
    print(f"  autoencoder:   {sd2} (reconstructions.png)")
    print(f"  pipeline:      {b2_out / 'pipeline'}")
    print(f"  generated:     {c1_out / size_name(SIZE)}")
    print(f"  grid:          {grid} (source | target pose | ground truth | generated)")
    print(f"  C2 metrics:    {c1_out / 'metrics.json'} (SSIM {metrics['ssim']:.3f}, PSNR {metrics['psnr']:.2f})")
    print(f"  pose IoU on the {len(pairs)} test pairs (generated vs target silhouette): "
          f"FPDM {fpdm['pose_iou']:.3f}, copy-source {copy['pose_iou']:.3f} ({run / 'scores.json'})")
    return scores


if __name__ == "__main__":
    from ..config import configure

    main(configure(globals())["out_dir"])
