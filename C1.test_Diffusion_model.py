"""C1: generate the test set with a trained FPDM pipeline.

    python C1.test_Diffusion_model.py --pipeline=logs/B2/pipeline --dataset_root=data/deepfashion --out_dir=OUT
    accelerate launch C1.test_Diffusion_model.py ...      # pairs split across GPUs

The output size and the pose drawing size are the pipeline's (what B2 trained at, recorded in
its config) unless given. Writes OUT/<H>x<W>/<source>_2_<target>.png at the model size and at
the evaluation size (one folder when the two are equal), OUT/manifest.json (what C2 reads) and a
few comparison grids under OUT/grids/. Images already written are skipped, so an interrupted run
is finished by running it again.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
pipeline = "logs/B2/pipeline"              # FPDMPipeline folder written by B2
dataset_root = "data/deepfashion"
test_pairs = "test_pairs_data.json"
out_dir = "logs/C1"
num_inference_steps = 20                   # the authors' 20 denoising steps
guidance_scale = 2.0
scheduler = "ddpm"                         # ddpm (the authors'), ddim, dpm++, unipc
seed = 7                                   # each pair's seed derives from this and its file names
size = None                                # (height, width) of the output; None = the pipeline's
eval_size = (256, 176)                     # also written, for the 256x176 table
test_pose = "pose_img"                     # pose_img: A1's render at the photo's size, resized (the authors' C1,
                                           # needed for their numbers); draw: drawn at pose_draw_size as in B2
pose_draw_size = None                      # (height, width) for test_pose = "draw"; None = the pipeline's (B2's)
batch_size = 16
dtype = "auto"                             # auto = bf16 on CUDA, fp32 on CPU; or fp32/bf16/fp16
compile = False                            # torch.compile the UNet
max_pairs = -1                             # -1 = all
num_grids = 2
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"batch_size": 8, "num_grids": 1}}

from pathlib import Path  # noqa: E402

from src.config import configure, save_config  # noqa: E402


def main(cfg: dict) -> None:
    # Imported here, after configure(): --help and config errors answer at once, without the
    # seconds that importing torch and diffusers takes.
    import torch
    from accelerate import PartialState

    from src import generate
    from src.data import check_dataset, load_pairs
    from src.devices import resolve_dtype
    from src.handoff import size_name, write_manifest
    from src.weights import exit_on_missing_weights

    if test_pose not in generate.TEST_POSES:
        raise SystemExit(f"error: test_pose={test_pose!r}; choose one of {', '.join(generate.TEST_POSES)}")
    state = PartialState()
    out = Path(out_dir)
    check_dataset(dataset_root, [test_pairs])
    pairs = load_pairs(dataset_root, test_pairs)
    pairs = pairs if max_pairs < 0 else pairs[:max_pairs]
    with exit_on_missing_weights():
        pipe = generate.load_pipeline(pipeline, resolve_dtype(dtype, state.device), state.device)
    if compile:
        pipe.unet = torch.compile(pipe.unet)
    model_size, draw_size = generate.pipeline_geometry(pipe.config, size, pose_draw_size)
    eval_hw = tuple(eval_size)
    cfg.update(size=model_size, pose_draw_size=draw_size)  # the saved config records the sizes used
    if state.is_main_process:
        print(f"output {size_name(model_size)}, evaluation {size_name(eval_hw)}, "
              f"test poses: {test_pose} (drawn at {size_name(draw_size)} for 'draw')")
    counts = generate.generate_pairs(
        pipe, dataset_root, generate.split_for_process(pairs, state.process_index, state.num_processes), out,
        size=model_size, eval_size=eval_hw, draw_size=draw_size, batch_size=batch_size, seed=seed,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scheduler=scheduler,
        pose_mode=test_pose, show_progress=state.is_local_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        manifest = write_manifest(out, pairs, model_size, eval_hw)
        grids = generate.write_grids(dataset_root, pairs, out, model_size, draw_size, num_grids, pose_mode=test_pose)
        save_config(cfg, out, "C1_config.json")
        print(f"generated {counts}; manifest: {manifest}")
        for g in grids:
            print(f"grid: {g}")


if __name__ == "__main__":
    main(configure(globals(), presets=PRESETS))
