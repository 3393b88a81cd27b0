"""`make demo-phoenix`: the PHOENIX-2014T path end to end on the CPU, trained long enough to put
the signer's hands where the pose says, on the project's own synthetic signing set written in
the official release's layout with MSKA-format keypoint pickles: release -> A1 (PHOENIX mode) ->
tiny autoencoder -> B1 -> B2 -> C1 (per-video MP4/GIF) -> C2 (per-frame metrics and the temporal
figures) -> hand-region error. Each numbered step runs the script's command line exactly as a
researcher runs it on the real release, with the tiny preset and configs/phoenix.py, in this
process (``src.synthetic.demo.step``); a step whose result is there is skipped (delete the run
folder, logs/demo_phoenix, to start over).

    python -m src.synthetic.demo_phoenix                  # into logs/demo_phoenix
    python -m src.synthetic.demo_phoenix --out_dir=DIR    # elsewhere
    python -m src.synthetic.demo_phoenix --b2_steps=150   # a smaller budget (tests/test_demo_phoenix.py)

What makes a few CPU minutes enough is what makes `make demo` learn (``src.synthetic.demo``): an
autoencoder trained on the frames first, latents 1/4 of tiny's PHOENIX size (80x64), most of
the time given to B2. The signers are simple (one figure, its clothes and colours fixed; the
videos differ in where it stands and how its arms and fingers move), so what B2 has to learn is
the pose. The demo ends by scoring the hands against the known answer
(``src.synthetic.signing.HandScorer``: the hand-region error) next to copying the source frame.
"""

from __future__ import annotations

# ---- hyperparameters: edit here, or override with --name=value
out_dir = "logs/demo_phoenix"
vae_steps = 300                         # the autoencoder's training steps
b2_steps = 300                          # B2's steps: with vae_steps, what the demo's few CPU minutes buy
# -----------------------------------------------------------------------------------------------

import json
import time
from pathlib import Path

from .demo import ROOT, autoencoder, claim, shown, step

SIZE = (80, 64)                 # tiny's PHOENIX model size (the 320x256 model size / 4)
VIDEOS = {"train": 24, "test": 3}
FRAMES = (12, 20)               # (min, max) frames a video
TRAIN_PAIRS = 2000
VAE_CHANNELS = (16, 32, 32)     # latents 1/4 of the image (20x16): a hand is 3-6 px at 80x64
POSE_CHANNELS = (8, 16, 16)     # one stride-2 step per VAE downsampling: pose features at the latent size
B1_STEPS = 20
B2_BATCH_SIZE = 16
STRIP_ROWS = 6                  # frames of the first test video in the frame strip
TEMPORAL_FIGURES = ("warping_error", "warping_error_real", "temporal_consistency_difference", "fvd")
PRESETS = ("--preset=tiny", f"--config={ROOT / 'configs' / 'phoenix.py'}")   # every numbered step's


def settings(videos: dict, vae: int, b2: int) -> dict:
    """What decides a trained model: a run folder holds one set of them."""
    return {"size": SIZE, "videos": videos, "frames": FRAMES, "train_pairs": TRAIN_PAIRS,
            "vae_channels": VAE_CHANNELS, "pose_channels": POSE_CHANNELS, "vae_steps": vae,
            "b1_steps": B1_STEPS, "b2_steps": b2, "b2_batch_size": B2_BATCH_SIZE}


def train(run: str | Path, videos: dict, vae: int, b2: int) -> dict[str, Path]:
    """The synthetic release (``videos``: videos per split), A1, the autoencoder (``vae`` steps),
    B1 and B2 (``b2`` steps) under ``run``, each skipped where its result is there; returns the
    paths {"run", "release", "data", "pipeline"}. ``bench/signing_consistency.py`` trains with it too."""
    from .signing import write_synthetic_signing

    run = claim(run, settings(videos, vae, b2))
    release, data, sd2 = run / "PHOENIX-2014-T", run / "data", run / "sd2"
    b1_out, b2_out = run / "B1", run / "B2"
    if not (release / "keypoints").is_dir():
        written = write_synthetic_signing(release, videos=videos, frames=FRAMES, seed=0)
        print(f"synthetic signing release: {written['root']} "
              f"({sum(len(v) for v in written['videos'].values())} videos)", flush=True)
    dataset = f"--dataset_root={data}"
    step("A1 PHOENIX mode", data / "test_pairs_data.json", "A1.pose_data_preprocessing.py", *PRESETS, dataset,
         f"--phoenix_root={release}", f"--keypoints={release / 'keypoints'}", f"--train_pairs_count={TRAIN_PAIRS}")
    autoencoder(data, sd2, SIZE, vae, VAE_CHANNELS)
    step("B1 fusion model", b1_out / "fusion_model", "B1.train_Fusion_model.py", *PRESETS, dataset,
         f"--out_dir={b1_out}", f"--max_steps={B1_STEPS}", f"--image_size={SIZE[1]}", "--eval_max_pairs=100")
    step("B2 diffusion model", b2_out / "pipeline", "B2.train_Diffusion_model.py", *PRESETS, dataset,
         f"--pretrained_model={sd2}", f"--fusion_model={b1_out / 'fusion_model'}", f"--out_dir={b2_out}",
         f"--target_size=({SIZE[0]},{SIZE[1]})", f"--pose_channels={POSE_CHANNELS}", f"--max_steps={b2}",
         f"--batch_size={B2_BATCH_SIZE}", f"--checkpointing_steps={b2}", f"--validation_steps={b2}")
    return {"run": run, "release": release, "data": data, "pipeline": b2_out / "pipeline"}


def main(run: str | Path = out_dir) -> dict:
    """Run (or finish) the demo under ``run``; returns the scores it also writes to
    ``run/scores.json``."""
    from ..data import load_pairs
    from ..evaluate.handoff import video_name
    from ..pose.wholebody133 import FRAME_SIZE
    from ..util.fileio import atomic_save_image, atomic_write_json
    from .figures import pair_grid
    from .signing import HandScorer

    start = time.time()
    paths = train(run, VIDEOS, vae_steps, b2_steps)
    run, release, data = paths["run"], paths["release"], paths["data"]
    c1_out, dataset = run / "C1", f"--dataset_root={data}"
    step("C1 generate the test videos", None, "C1.test_Diffusion_model.py", *PRESETS, dataset,
         f"--pipeline={paths['pipeline']}", f"--out_dir={c1_out}")
    step("C2 metrics", None, "C2.eval.caculate_metrics.py", *PRESETS, dataset, f"--generated={c1_out}")

    pairs = load_pairs(data, "test_pairs_data.json")
    scorer = HandScorer(data, pairs, SIZE)
    fpdm, copy = scorer.score(scorer.generated(c1_out)), scorer.score(scorer.sources())
    metrics = json.loads((c1_out / "metrics.json").read_text())
    eval_size, block = next(iter(metrics.items()))
    temporal = {k: block.get("temporal", {}).get(k) for k in TEMPORAL_FIGURES}
    scores = {"pairs": len(pairs), "videos": len({video_name(p["target_image"]) for p in pairs}),
              "hand_error": {"fpdm": fpdm["hand_error"], "copy_source": copy["hand_error"]},
              "temporal": {"size": eval_size, **temporal},
              "ssim": block.get("ssim"), "psnr": block.get("psnr")}
    atomic_write_json(run / "scores.json", scores)
    first = [p for p in pairs if video_name(p["target_image"]) == video_name(pairs[0]["target_image"])]
    strip = atomic_save_image(run / "frame_strip.png", pair_grid(
        data, first, {"generated": c1_out}, SIZE, FRAME_SIZE, rows=STRIP_ROWS, cell=(130, 105),
        pose_format="wholebody133"))

    print(f"\nPHOENIX demo finished in {time.time() - start:.0f}s")
    print(f"  release (synthetic): {shown(release)}")
    print(f"  autoencoder:         {shown(run / 'sd2')} (reconstructions.png)")
    print(f"  pipeline:            {shown(paths['pipeline'])}")
    print(f"  frame strip:         {shown(strip)} (source | target pose | ground truth | generated)")
    print("  videos (source | pose | ground truth | generated; *_generated: the generated frames alone):")
    for video in sorted((c1_out / "videos").rglob("*.gif")):
        print(f"    {shown(video)}")
    figures = ", ".join(f"{k} {v:.4f}" for k, v in temporal.items() if isinstance(v, float))
    print(f"  C2 metrics ({eval_size}): {shown(c1_out / 'metrics.json')} (SSIM {block['ssim']:.3f}, "
          f"PSNR {block['psnr']:.2f}; temporal: {figures})")
    print(f"  hand-region error on the {len(pairs)} test frames (0-255, where the target's or the source's hands "
          f"lie): FPDM {fpdm['hand_error']:.1f}, copy-source {copy['hand_error']:.1f} ({shown(run / 'scores.json')})")
    return scores


if __name__ == "__main__":
    from ..config import configure

    main(configure(globals())["out_dir"])
