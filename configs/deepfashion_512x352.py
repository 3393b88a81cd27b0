"""DeepFashion at 512x352, the paper's main setting: the same file for all five scripts.

    python A1.pose_data_preprocessing.py --config=configs/deepfashion_512x352.py
    accelerate launch B1.train_Fusion_model.py --config=configs/deepfashion_512x352.py --out_dir=logs/B1
    accelerate launch B2.train_Diffusion_model.py --config=configs/deepfashion_512x352.py --fusion_model=logs/B1/fusion_model --out_dir=logs/B2
    accelerate launch C1.test_Diffusion_model.py --config=configs/deepfashion_512x352.py --pipeline=logs/B2/pipeline --out_dir=logs/C1
    python C2.eval.caculate_metrics.py --config=configs/deepfashion_512x352.py --generated=logs/C1

These are the scripts' defaults: the sizes and augmentations are DeepFashion's declaration
(src/data/deepfashion.py), which B2 takes for the values it leaves at None. C1 writes at the model
size and at DeepFashion's evaluation size, and C2 scores both. The sizes here (None: the dataset's)
win over a preset given before the file (the later wins): --preset=tiny --config=<this file>
is a run of tiny models at this size.
"""
dataset = "deepfashion"
dataset_root = "data/deepfashion"
target_size = None
pose_draw_size = None
