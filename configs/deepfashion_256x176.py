"""DeepFashion at 256x176, the paper's second setting: the same file for all five scripts.

    accelerate launch B2.train_Diffusion_model.py --config=configs/deepfashion_256x176.py --fusion_model=... --out_dir=logs/B2_256x176
    python B2.train_Diffusion_model.py --preset=tiny --config=configs/deepfashion_256x176.py ...   # smoke run
    accelerate launch C1.test_Diffusion_model.py --config=configs/deepfashion_256x176.py --pipeline=logs/B2_256x176/pipeline --out_dir=logs/C1_256x176
    python C2.eval.caculate_metrics.py --config=configs/deepfashion_256x176.py --generated=logs/C1_256x176

The 512x352 recipe at half size: the target and its pose at 256x176, the source at 256 px (DINOv2
sees 1 + 18x18 = 325 tokens instead of 1297) and fed at half or full resolution as at 512
(scales (256, 512) there; the authors' repository ships only that configuration). Scales above
the source size would only add a resize: B2 refuses them. Everything else (batch, schedule,
augmentations, the pose canvas) is the 512x352 recipe, DeepFashion's declaration
(src/data/deepfashion.py).

B2 reads the sizes; A1, B1, C1 and C2 take only the dataset from here. B1 is the same at both
sizes (its inputs are 224 px): one fusion model serves both. C1 writes at the pipeline's size,
which is then also DeepFashion's evaluation size, and C2 scores that one size. The sizes here
win over a preset given before the file (the later wins): --preset=tiny --config=<this file>
is a run of tiny models at this size.
"""
dataset = "deepfashion"
dataset_root = "data/deepfashion"
target_size = (256, 176)
source_size = 256
source_scales = (128, 256)
pose_draw_size = None    # DeepFashion's pose canvas, as at 512x352 (None: the dataset's, also under tiny)
