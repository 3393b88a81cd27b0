"""C1: generate the test set with a trained FPDM pipeline.

    python C1.test_Diffusion_model.py --pipeline=logs/B2/pipeline --dataset_root=data/deepfashion --out_dir=OUT
    accelerate launch C1.test_Diffusion_model.py ...      # pairs split across GPUs
    python C1.test_Diffusion_model.py --config=configs/phoenix.py --pipeline=logs/B2_phoenix/pipeline --out_dir=OUT

The output size and the pose drawing size are the pipeline's (what B2 trained at, recorded in
its config) unless given. Writes OUT/<H>x<W>/<source>_2_<target>.png (the FPDM authors' C1 names:
each image path after ./img with its "/" removed) at the model size and at the evaluation size
(one folder when the two are equal), OUT/manifest.json (what C2 reads) and a
few comparison grids under OUT/grids/. Images already written are skipped, so an interrupted run
is finished by running it again. Pairs sharing a source are generated together and the source
is encoded once for all of them. Without a GPU, `accelerate launch` gives each process one CPU
thread (OMP_NUM_THREADS=1): C1 then says so; run it with python, or pass
--num_cpu_threads_per_process=N to accelerate launch.

PHOENIX-2014T (``--config=configs/phoenix.py``): the test pairs are videos (each test video's first
frame is the source of every frame), so each video's source is encoded once; frames are written at
the model size and at the frames' own size (what C2 scores); then, per video,
OUT/videos/<split>/<video>.mp4 and .gif (each frame: source | pose | ground truth | generated,
side by side) and <video>_generated.mp4 / .gif (the generated frames alone), at 25 fps.

Video consistency, training-free, off by default (the paper generates frame by frame; README,
"Consistency options"): --shared_noise=True starts every frame of a video from one noise;
--cross_frame_attention=first (or previous) generates a video's frames together, each frame's
self-attention also attending to the video's first frame (or the frame before it). Both are
recorded in C1_run.json and in every manifest entry, so C2's report names them.
"""
# ---- hyperparameters: edit here, or override with --name=value / --config=file.py / --preset=NAME
pipeline = "logs/B2/pipeline"              # FPDMPipeline folder written by B2
dataset = "deepfashion"                    # "deepfashion", "phoenix" or "market" (src.data.DATASETS): poses and sizes
dataset_root = "data/deepfashion"
test_pairs = "test_pairs_data.json"
out_dir = "logs/C1"
num_inference_steps = 20                   # the authors' 20 denoising steps
guidance_scale = 2.0
scheduler = "ddpm"                         # ddpm (the authors'), ddim, dpm++, unipc
seed = 7                                   # each pair's seed derives from this and its file names
size = None                                # (height, width) of the output; None = the pipeline's
eval_size = None                           # (height, width) also written (C2 scores it); None = the dataset's
test_pose = "pose_img"                     # pose_img: A1's render at the photo's size, resized (the authors' C1,
                                           # needed for their numbers); draw: drawn at pose_draw_size as in B2
pose_draw_size = None                      # (height, width) for test_pose = "draw"; None = the pipeline's (B2's)
batch_size = 16
dtype = "auto"                             # auto = bf16 on CUDA, fp32 on CPU; or fp32/bf16/fp16 (or torch names)
compile = False                            # torch.compile the UNet
max_pairs = -1                             # -1 = all
overwrite = False                          # out_dir holds images of other settings: delete them (else C1 stops)
num_grids = 2
videos = "auto"                            # per-video MP4/GIF: auto = where test pairs are videos (PHOENIX); on; off
fps = 25.0                                 # PHOENIX-2014T's frame rate
shared_noise = False                       # videos: every frame starts from its video's noise (and per-step noise)
cross_frame_attention = "off"              # videos: off; first / previous: self-attention also attends to the
                                           # video's first frame / the frame before (frames batched per video)
# -----------------------------------------------------------------------------------------------
PRESETS = {"tiny": {"batch_size": 8, "num_grids": 1}}

from pathlib import Path  # noqa: E402

from src.config import as_config_error, configure, save_config  # noqa: E402


def main(cfg: dict) -> None:
    # Imported here, after configure(): --help and config errors answer at once, without the
    # seconds that importing torch and diffusers takes.
    import torch
    from accelerate import PartialState

    from src.evaluate import generate
    from src.data import dataset_spec, load_pairs
    from src.util.devices import cpu_threads_note, resolve_dtype
    from src.evaluate.handoff import check_output_names, size_name, write_manifest
    from src.util.weights import exit_on_missing_weights

    if test_pose not in generate.TEST_POSES:
        raise SystemExit(f"error: test_pose={test_pose!r}; choose one of {', '.join(generate.TEST_POSES)}")
    if videos not in ("auto", "on", "off"):
        raise SystemExit(f"error: videos={videos!r}; choose auto, on or off")
    from src.pipeline import SCHEDULERS

    if scheduler.lower() not in SCHEDULERS:
        raise SystemExit(f"error: scheduler={scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    spec = as_config_error(dataset_spec, dataset)
    state = PartialState()
    if state.is_main_process and (note := cpu_threads_note(state.num_processes)):
        print(note)
    try:
        torch_dtype = resolve_dtype(dtype, state.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(out_dir)
    spec.check_dataset(dataset_root, [test_pairs])
    pairs = load_pairs(dataset_root, test_pairs)
    pairs = pairs if max_pairs < 0 else pairs[:max_pairs]
    try:
        check_output_names(pairs)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    with exit_on_missing_weights({"pipeline": "pipeline"}):
        pipe = generate.load_pipeline(pipeline, torch_dtype, state.device)
    if compile:
        pipe.unet = torch.compile(pipe.unet)
    if pipe.config.pose_format != spec.pose_format:
        raise SystemExit(f"error: {pipeline} was trained on {pipe.config.pose_format} poses, dataset={dataset!r} "
                         f"has {spec.pose_format} poses")
    model_size, draw_size = generate.pipeline_geometry(pipe.config, spec, size, pose_draw_size)
    eval_hw = tuple(eval_size or spec.eval_size)
    write_videos = spec.test_pairs_are_videos if videos == "auto" else videos == "on"
    consistency = {"shared_noise": shared_noise, "cross_frame_attention": cross_frame_attention.lower()}
    cfg.update(size=model_size, pose_draw_size=draw_size, eval_size=eval_hw,  # the saved config records the sizes used
               videos=write_videos)
    if state.is_main_process:
        print(f"output {size_name(model_size)}, evaluation {size_name(eval_hw)}, "
              f"test poses: {test_pose} (drawn at {size_name(draw_size)} for 'draw')")
    share = generate.split_for_process(pairs, state.process_index, state.num_processes,
                                       whole_videos=consistency["cross_frame_attention"] != "off")
    try:
        counts = generate.generate_pairs(
            pipe, dataset_root, share, out, size=model_size, eval_size=eval_hw, draw_size=draw_size,
            batch_size=batch_size, seed=seed,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, scheduler=scheduler,
            pose_mode=test_pose, dataset=dataset, show_progress=state.is_local_main_process, overwrite=overwrite,
            consistency=consistency)
    except generate.RunMismatchError as e:
        raise SystemExit(f"error: {e}") from None
    state.wait_for_everyone()
    if state.is_main_process:
        manifest = write_manifest(out, pairs, model_size, eval_hw, consistency)
        grids = generate.write_grids(dataset_root, pairs, out, model_size, draw_size, num_grids, pose_mode=test_pose,
                                     dataset=dataset)
        save_config(cfg, out, "C1_config.json")
        print(f"generated {counts}; manifest: {manifest}")
        for g in grids:
            print(f"grid: {g}")
        if write_videos:
            films = generate.write_videos(dataset_root, pairs, out, size=model_size, eval_size=eval_hw,
                                          draw_size=draw_size, pose_mode=test_pose, dataset=dataset, fps=fps)
            print(f"videos: {len(films)} under {out / 'videos'} (source | pose | ground truth | generated; "
                  f"*_generated: the generated frames alone)")


if __name__ == "__main__":
    main(configure(globals(), presets=PRESETS))
