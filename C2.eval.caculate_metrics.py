"""C2: SSIM, SSIM-256, PSNR, LPIPS and FID of a generated test set (the peers' protocol), pose
accuracy (PCK) where the photo pose estimator is installed, on videos (PHOENIX-2014T) the temporal
figures: warping error, temporal consistency difference and FVD, and on Market-1501 SSIM and LPIPS
inside the target pose's mask (Mask-SSIM, Mask-LPIPS).

    python C2.eval.caculate_metrics.py --generated=logs/C1 --dataset_root=data/deepfashion
    python C2.eval.caculate_metrics.py --generated=logs/C1 --fid_reference=test --fid_backbone=pytorch-fid
    python C2.eval.caculate_metrics.py --generated=path/to/their_outputs --dataset_root=data/deepfashion --naming=names
    python C2.eval.caculate_metrics.py --config=configs/phoenix.py --generated=logs/C1_phoenix --i3d=weights/i3d
    python C2.eval.caculate_metrics.py --config=configs/market1501.py --generated=logs/C1_market

Each figure's protocol, and what C2 reads, checks and writes, is described once: README.md,
"Faithfulness" (the table and the paragraphs after it; "Scoring another method's published
outputs" for a folder without C1's manifest.json) and, for videos, "PHOENIX-2014T". In short:
every input is checked before anything is computed (all problems listed at once), then C2 writes
<generated>/metrics.json (one block per evaluation size, each with its protocol, which names C1's
video consistency options as the manifest records them), C2_config.json beside it, and prints a
Markdown row per size.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
generated = "logs/C1"                     # folder holding manifest.json (written by C1), or named images
dataset = "deepfashion"                   # "deepfashion", "phoenix" or "market" (src.data.DATASETS): its pose format decides PCK
naming = "auto"                           # auto: manifest.json if present, else names; manifest; names (see above)
test_pairs = "test_pairs_data.json"       # naming "names": the pairs whose images <generated> must hold
dataset_root = "data/deepfashion"         # ground truth: <dataset_root>/<target_image>
eval_sizes = None                         # None: the sizes every generated image comes in (C1: model and evaluation
                                          # size); "dataset": the dataset's evaluation size; or a list of (height,
                                          # width), e.g. [(256, 176), (512, 352)] (a size the images lack is made by
                                          # resizing them bicubically, and says so)
fid_reference = "train"                   # train: all train_pairs images (PIDM/CFLD/PCDMs); test: the evaluated pairs' ground truth (FPDM script)
train_pairs = "train_pairs_data.json"
fid_backbone = "torchvision"              # torchvision (peers' tables) or pytorch-fid
fid_cache = "~/.cache/fpdm/fid_stats"     # reference statistics cache ("" = none)
lpips_backbone_random = False             # True: random AlexNet (offline tests only, numbers meaningless)
batch_size = 32
num_workers = 4                           # DataLoader workers (they also compute SSIM/PSNR)
device = "auto"                           # auto = cuda if available
check_images = True                       # decode every generated and ground-truth image before computing
expected_count = -1                       # manifest entries / test pairs expected (e.g. 8570); -1 = no check
pose_accuracy = "auto"                    # PCK: auto = where mediapipe is installed (else null); on = required; off
temporal = "auto"                         # warping error, TCD, FVD: auto = when the pairs form videos; on = required; off
i3d = "weights/i3d"                       # folder holding i3d_torchscript.pt (FVD)
fvd = "auto"                              # auto: where the I3D weights are (else null with the reason); on: required
method = "FPDM"                           # name in the Markdown row
out = ""                                  # default <generated>/metrics.json
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"eval_sizes": "dataset", "fid_reference": "test", "fid_backbone": "pytorch-fid",
                    "lpips_backbone_random": True, "batch_size": 4, "num_workers": 0, "fid_cache": "",
                    # the tiny preset's synthetic stick figures are no people for the pose estimator
                    "pose_accuracy": "off"}}
# PCK compares the photo estimator's 18 body points with the target's: only that keypoint format has them.
PCK_POSE_FORMAT = "openpose18"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from src.config import as_config_error, configure, save_config  # noqa: E402


def data_spec():
    """The chosen dataset's declaration: its evaluation size and keypoint format."""
    from src.data import dataset_spec

    return as_config_error(dataset_spec, dataset)


def pose_accuracy_mode(pose_format: str) -> str:
    """``pose_accuracy``, except on a dataset whose keypoints are not the estimator's 18 body points:
    there "on" is a config error and "auto" is off, with a line saying why."""
    if pose_format == PCK_POSE_FORMAT or pose_accuracy == "off":
        return pose_accuracy
    why = f"dataset={dataset!r} has {pose_format} keypoints, PCK compares {PCK_POSE_FORMAT} ones"
    if pose_accuracy == "on":
        raise SystemExit(f"config error: pose_accuracy='on' but {why}; pass --pose_accuracy=off")
    print(f"pose_accuracy: off ({why})")
    return "off"


def target_mask_points(spec, entries):
    """``mask_points(entry, size)`` for score_generated: the target's keypoints in pixels of an
    evaluation size, every keypoint file read before any metric (ManifestError listing all the
    unreadable ones)."""
    from src.evaluate.handoff import ManifestError
    from src.pose.keypoints import PoseFileError

    keypoints, problems = {}, []
    for e in entries:
        try:
            keypoints[e.target_image] = spec.keypoints(dataset_root, e.target_image)
        except PoseFileError as err:
            problems.append(f"{err} (the target pose's mask of Mask-SSIM and Mask-LPIPS)")
    if problems:
        raise ManifestError(problems)
    return lambda e, size: spec.renderer.to_pixels(keypoints[e.target_image], tuple(size), spec.photo_size)


def main(cfg: dict) -> None:
    # Imported here, after configure(): --help and config errors answer at once, without the
    # seconds that importing torch, LPIPS and scikit-image takes.
    from src.util.fileio import atomic_write_json
    from src.evaluate.handoff import parse_size, resolve_naming, scored_sizes
    from src.evaluate.metrics import check_generated, markdown_table, score_generated, unmet_requests

    spec = data_spec()
    cfg["pose_accuracy"] = pck = pose_accuracy_mode(spec.pose_format)
    asked = [spec.eval_size] if eval_sizes == "dataset" else eval_sizes
    out_path = Path(out) if out else Path(generated) / "metrics.json"
    entries, reference = check_generated(generated, dataset_root, asked, fid_reference=fid_reference,
                                         train_pairs=train_pairs, fid_backbone=fid_backbone,
                                         check_images=check_images, expected_count=expected_count,
                                         workers=max(2, num_workers), naming=naming, test_pairs=test_pairs,
                                         pose_accuracy=pck, temporal=temporal, fvd=fvd)
    mask_points = target_mask_points(spec, entries) if spec.pose_masks else None
    found_by = resolve_naming(naming, generated)
    sizes = scored_sizes(entries)
    cfg["eval_sizes"] = [parse_size(s) for s in sizes]  # the saved config records the sizes scored
    chosen = " (the sizes every generated image comes in)" if eval_sizes in (None, "auto") else ""
    print(f"{len(entries)} pairs (found by {found_by}), evaluation sizes {', '.join(sizes)}{chosen}, "
          f"FID reference '{fid_reference}': {len(reference)} images")
    results = score_generated(entries, sizes, reference, fid_reference=fid_reference, fid_backbone=fid_backbone,
                              lpips_random=lpips_backbone_random, batch_size=batch_size, num_workers=num_workers,
                              device=device, cache_dir=fid_cache or None,
                              pose_accuracy=pck, dataset_root=dataset_root, temporal=temporal, i3d=i3d,
                              mask_points=mask_points)
    for r in results.values():
        r["protocol"]["generated_found_by"] = ("manifest.json" if found_by == "manifest" else
                                               f"file names ({test_pairs}: FPDM authors' C1 or PIDM naming)")
    atomic_write_json(out_path, results)
    save_config(cfg, out_path.parent, "C2_config.json")
    options = next(iter(results.values()))["protocol"]["consistency_description"]
    print(f"C1's video consistency options: {options}")
    for name, r in results.items():
        if r["protocol"]["resized_from"]:
            print(f"{name} images: {r['protocol']['generated_images']}")
        if r["protocol"]["fid_warning"]:
            print(f"warning: {name} {r['protocol']['fid_warning']}", file=sys.stderr)
        by_reason: dict = {}
        reasons = {**r["protocol"]["null_reasons"],
                   **(r["temporal"]["protocol"]["null_reasons"] if r["temporal"] else {})}
        for metric, reason in reasons.items():
            by_reason.setdefault(reason, []).append(metric)
        for reason, names in by_reason.items():
            print(f"{name} {', '.join(names)}: null ({reason})")
    print(f"metrics: {out_path}")
    print(markdown_table(results, method))
    unmet = unmet_requests(results, fvd)
    if unmet:
        raise SystemExit(f"error: {', '.join(unmet)} not computed, the rest is in {out_path}: "
                         + "; ".join(f"{metric}: {reason}" for metric, reason in unmet.items()))


if __name__ == "__main__":
    main(configure(globals(), presets=PRESETS))
