"""A1: keypoints -> pose images, PATN conversion and dataset checks.

    python A1.pose_data_preprocessing.py --dataset_root=PATH
    python A1.pose_data_preprocessing.py --dataset_root=PATH --patn_dir=DIR   # full benchmark

Validates the dataset (every problem listed at once, nothing written when one is found), then
renders PATH/pose_img/<rel>.jpg for every PATH/pose/<rel>.txt at the size of PATH/img/<rel>.jpg.
Outputs newer than their inputs are skipped, so a rerun only does what is left.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
dataset_root = "data/deepfashion"        # holds img/, pose/ and the pair files
pair_files = ["train_pairs_data.json", "test_pairs_data.json"]
patn_dir = ""                            # folder of fashion-resize-{annotation,pairs}-{train,test}.csv
check_images = True                      # decode every image during validation
workers = 8                              # parallel render processes
force = False                            # re-render even when outputs are up to date
jpeg_quality = 100
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"workers": 2}}

from pathlib import Path  # noqa: E402

from src.config import configure, save_config  # noqa: E402
from src.data import validate_dataset  # noqa: E402
from src.preprocess import convert_patn, pose_jobs, render_pose_images  # noqa: E402

if __name__ == "__main__":
    cfg = configure(globals(), presets=PRESETS)
    root = Path(dataset_root)
    if patn_dir:
        print("converted PATN annotations:", convert_patn(patn_dir, root))
    extra = tuple(f"./img/{Path(photo).relative_to(root / 'img').as_posix()}" for _, photo, _ in pose_jobs(root))
    counts = validate_dataset(root, pair_files, check_images=check_images, workers=workers, extra_images=extra)
    print(f"dataset ok: {counts}")
    stats = render_pose_images(root, workers=workers, force=force, quality=jpeg_quality)
    save_config(cfg, root / "pose_img", "A1_config.json")
    print(f"pose images: {stats} -> {root / 'pose_img'}")
