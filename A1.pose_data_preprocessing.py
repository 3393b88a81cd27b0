"""A1: keypoints -> pose images, PATN conversion and dataset checks.

    python A1.pose_data_preprocessing.py --dataset_root=PATH
    python A1.pose_data_preprocessing.py --dataset_root=PATH --patn_dir=DIR   # full benchmark
    python A1.pose_data_preprocessing.py --config=configs/phoenix.py --phoenix_root=PHOENIX-2014-T \
        --keypoints=DIR_OR_PICKLE                                             # PHOENIX-2014T
    python A1.pose_data_preprocessing.py --config=configs/market1501.py --market_root=Market-1501-v15.09.15 \
        --patn_dir=DIR                                                        # Market-1501

Validates the dataset (every problem listed at once, nothing written when one is found), then
renders PATH/pose_img/<rel>.jpg for every PATH/pose/<rel>.txt at the size of PATH/img/<rel>.jpg.
Outputs newer than their inputs are skipped, so a rerun only does what is left.

PHOENIX mode (see src/data/phoenix.py): checks the release and the keypoint pickles in one pass
(every problem listed, nothing written), links PATH/img to the release's frames (no copy), writes
PATH/pose/<split>/<video>/imagesNNNN.txt (133 lines "x y" in frame pixels, "nan nan" = missing)
and PATH/pose_img/<split>/<video>/imagesNNNN.jpg, then train_pairs_data.json (random pairs within
training videos) and test_pairs_data.json (first frame -> every frame of each test video).

Market-1501 mode (see src/data/market.py): checks the release's bounding_box_{train,test} photos
and PATN's market-{annotation,pairs}-{train,test}.csv in one pass (every problem listed, nothing
written), links PATH/img to the release (no copy), writes PATH/pose/bounding_box_<split>/<name>.txt
(18 rows "x y" in photo pixels), their 128x64 renders in PATH/pose_img/ and PATN's pairs.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
dataset_root = "data/deepfashion"        # holds img/, pose/ and the pair files
pair_files = ["train_pairs_data.json", "test_pairs_data.json"]
patn_dir = ""                            # folder of PATN's fashion-resize-{annotation,pairs}-{train,test}.csv
                                         #   (Market-1501: market-{annotation,pairs}-{train,test}.csv)
check_images = True                      # decode every image during validation
workers = 8                              # parallel render processes
force = False                            # re-render even when outputs are up to date
jpeg_quality = 100
dataset = "deepfashion"                  # "deepfashion", "phoenix" or "market" (src.data.DATASETS)
# PHOENIX-2014T (dataset = "phoenix")
phoenix_root = ""                        # the release: features/fullFrame-210x260px, annotations/manual
keypoints = ""                           # MSKA folder/pickle(s) Phoenix-2014T.{split} (comma-separated) or TwoStream-SLR pickle
phoenix_splits = ["train", "test"]       # dev is unused by the paper
phoenix_check_frames = "sample"          # decode "all" frames, a "sample" (first/middle/last), or "none"
score_threshold = None                   # points scoring below it drawn as missing; None = keep all (authors)
stick_width = 1                          # ellipse half-width of the 133-point links: 3-px strokes, nearest to
                                         # the authors' GIFs' 1-2 px lines (0 would be 1-px lines, lost on resize)
train_pairs_count = 100000               # the paper's 100,000 random training pairs
train_videos = 0                         # use only the first N training videos (0 = all)
test_videos = 0                          # use only the first N test videos (0 = all: 642 videos, 64,627 pairs)
pairs_seed = 0
# Market-1501 (dataset = "market"; patn_dir above holds its CSV files)
market_root = ""                         # Market-1501-v15.09.15: bounding_box_train/, bounding_box_test/
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"workers": 2}}

from pathlib import Path  # noqa: E402

from src.config import as_config_error, configure, save_config  # noqa: E402

# The project's modules (torch, OpenCV) are imported inside main(), after configure(): --help and
# a bad option answer at once instead of after seconds of imports.


def main_phoenix(cfg):
    from src.data.preprocess import preprocess_phoenix

    if not phoenix_root or not keypoints:
        raise SystemExit("config error: dataset=phoenix needs --phoenix_root=<release folder> and --keypoints=<pickle or folder>")
    root = Path(dataset_root)
    stats = preprocess_phoenix(
        phoenix_root, keypoints, root, splits=tuple(phoenix_splits), check_frames=phoenix_check_frames,
        score_threshold=score_threshold, stick_width=stick_width, train_pairs_count=train_pairs_count,
        train_videos=train_videos, test_videos=test_videos, pairs_seed=pairs_seed, workers=workers,
        force=force, quality=jpeg_quality)
    save_config(cfg, root / "pose_img", "A1_config.json")
    print(f"PHOENIX: {stats} -> {root}")


def main_market(cfg):
    from src.data.preprocess import preprocess_market

    if not market_root or not patn_dir:
        raise SystemExit("config error: dataset=market needs --market_root=<Market-1501-v15.09.15> and "
                         "--patn_dir=<folder of market-{annotation,pairs}-{train,test}.csv>")
    root = Path(dataset_root)
    stats = preprocess_market(market_root, patn_dir, root, check_images=check_images, workers=workers,
                              force=force, quality=jpeg_quality)
    save_config(cfg, root / "pose_img", "A1_config.json")
    print(f"Market-1501: {stats} -> {root}")


def main(cfg):
    from src.data import dataset_spec

    spec = as_config_error(dataset_spec, dataset)
    if dataset == "phoenix":
        return main_phoenix(cfg)
    if dataset == "market":
        return main_market(cfg)
    from src.data.preprocess import convert_patn, pose_jobs, render_pose_images

    root = Path(dataset_root)
    if patn_dir:
        print("converted PATN annotations:", convert_patn(patn_dir, root))
    extra = tuple(f"./img/{Path(photo).relative_to(root / 'img').as_posix()}" for _, photo, _ in pose_jobs(root))
    counts = spec.check_dataset(root, pair_files, check_images=check_images, workers=workers, extra_images=extra)
    print(f"dataset ok: {counts}")
    stats = render_pose_images(root, workers=workers, force=force, quality=jpeg_quality)
    save_config(cfg, root / "pose_img", "A1_config.json")
    print(f"pose images: {stats} -> {root / 'pose_img'}")


if __name__ == "__main__":
    main(configure(globals(), presets=PRESETS))
