"""PHOENIX-2014T, the paper's sign-language setting: the same file for all five scripts.

    python A1.pose_data_preprocessing.py --config=configs/phoenix.py --phoenix_root=PHOENIX-2014-T --keypoints=keypoints/
    accelerate launch B1.train_Fusion_model.py --config=configs/phoenix.py --out_dir=logs/B1_phoenix
    accelerate launch B2.train_Diffusion_model.py --config=configs/phoenix.py --fusion_model=logs/B1_phoenix/fusion_model --out_dir=logs/B2_phoenix
    accelerate launch C1.test_Diffusion_model.py --config=configs/phoenix.py --pipeline=logs/B2_phoenix/pipeline --out_dir=logs/C1_phoenix
    python C2.eval.caculate_metrics.py --config=configs/phoenix.py --generated=logs/C1_phoenix --i3d=weights/i3d

The model size, the pose canvas, the flip (off) and the keypoint jitter are PHOENIX-2014T's
declaration, with their reasons (src/data/phoenix_datasets.py): B2 takes them for the values it
leaves at None, so --preset=tiny combines with this file as it is (tiny's PHOENIX sizes). The
rest is C2's protocol for videos.
"""
dataset = "phoenix"
dataset_root = "data/phoenix"
# C2 scores the frames' own size (the dataset's evaluation size), which C1 writes beside the model size.
eval_sizes = "dataset"
# The 827k training frames (13 times the 64,627 test frames) are no practical FID reference;
# the protocol block names the reference used.
fid_reference = "test"
# The photo estimator finds 18 body points; PHOENIX targets are 133 whole-body points, hands and
# face included.
pose_accuracy = "off"
temporal = "on"
