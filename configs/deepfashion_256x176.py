"""DeepFashion at 256x176, the paper's second setting: B2's values for it (a --config file).

    accelerate launch B2.train_Diffusion_model.py --config=configs/deepfashion_256x176.py --fusion_model=...
    python B2.train_Diffusion_model.py --preset=tiny --config=configs/deepfashion_256x176.py ...   # smoke run

The 512x352 recipe at half size: the target and its pose at 256x176, the source at 256 px (DINOv2
sees 1 + 18x18 = 325 tokens instead of 1297) and fed at half or full resolution as at 512
(scales (256, 512) there; the authors' repository ships only that configuration). Scales above
the source size would only add a resize: B2 refuses them. Everything else (batch, schedule,
augmentations, the 550x375 pose canvas) is the 512x352 recipe.

Only B2 reads this file (the other scripts do not know these names). B1 is the same at both sizes
(its inputs are 224 px): one fusion model serves both. C1 writes at the pipeline's size, which is
also DeepFashion's evaluation size, so it needs no setting; C2 scores that size with
--eval_sizes="['256x176']".
"""
target_size = (256, 176)
source_size = 256
source_scales = (128, 256)
# The authors' dataset draws every training pose on this canvas and resizes it to the model size,
# so the lines keep the same width relative to the figure at both sizes.
pose_draw_size = (550, 375)
out_dir = "logs/B2_256x176"
