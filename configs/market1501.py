"""Market-1501 at 128x64, the field's low-resolution benchmark: the same file for all five scripts.

    python A1.pose_data_preprocessing.py --config=configs/market1501.py --market_root=Market-1501-v15.09.15 --patn_dir=data/patn
    accelerate launch B1.train_Fusion_model.py --config=configs/market1501.py --out_dir=logs/B1_market
    accelerate launch B2.train_Diffusion_model.py --config=configs/market1501.py --fusion_model=logs/B1_market/fusion_model --out_dir=logs/B2_market
    accelerate launch C1.test_Diffusion_model.py --config=configs/market1501.py --pipeline=logs/B2_market/pipeline --out_dir=logs/C1_market
    python C2.eval.caculate_metrics.py --config=configs/market1501.py --generated=logs/C1_market

The model size (128x64: a 16x8 latent that SD2's UNet halves evenly to 2x1), the pose canvas and
stick width, the flip (on) and the jitter are Market-1501's declaration, with their reasons
(src/data/market.py, src/pose/market18.py): B2 takes them for the values it leaves at None, and
--preset=tiny after this file (presets and files apply in the order given) makes its base model,
batch and source sizes tiny's, at tiny's Market size: --config=configs/market1501.py --preset=tiny.
"""
dataset = "market"
dataset_root = "data/market1501"
# B2: the base model and batch of the FPDM authors' Market configuration (b1/c1.fpdm-market1501.yaml
# in earlier versions of their repository): SD2-1-base, trained at 512 px with epsilon prediction,
# where SD2-1 is the 768-px v-prediction model; 100 epochs is B2's default already. batch_size is
# also B1's (the authors' file is stage 1's), C1's and C2's (64 images of 128x64 are small).
pretrained_model = "stabilityai/stable-diffusion-2-1-base"
batch_size = 64
gradient_accumulation_steps = 1
# The source, 128x64, is squashed to 256x256 for DINOv2 (1 + 18x18 = 325 tokens; 512 px would be
# 1297 tokens of an 8x upsampled photo), fed at 128 (its own height) or 256 at random: the recipe's
# half/full scale augmentation, as in configs/deepfashion_256x176.py.
source_size = 256
source_scales = (128, 256)
# C2: the peers' protocol (PIDM, CFLD, PCDMs): 128x64, FID against the training images, and SSIM
# and LPIPS also inside the target pose's mask (the dataset declares pose_masks). PCK is off by
# itself: the estimator's keypoints are DeepFashion's format.
eval_sizes = "dataset"
fid_reference = "train"
# Market's file names end in a number (0002_c1s1_000451_03), which "auto" would take for frame
# numbers of videos; its pairs are pairs of photos.
temporal = "off"
