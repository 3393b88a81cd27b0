"""The authors' released checkpoints -> this project's folders (src.convert_authors), read safely
(src.util.lightning_checkpoint). The checkpoints are written in the authors' exact format by
bench/authors_format.py (their module names, duplicated modules, DINOv2 names of transformers
4.40, AdamW state, an omegaconf DictConfig as hyperparameters), tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench import authors_format
from src.convert_authors import ConversionError, convert
from src.util.images import resize
from src.util.lightning_checkpoint import CheckpointError, UnsafeCheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))
OPENAI = (np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711]))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Both checkpoints and hub-layout config folders of the same tiny architectures."""
    from transformers import CLIPVisionConfig, Dinov2Config

    from src.models.sd2 import make_tiny_sd2

    root = tmp_path_factory.mktemp("authors")
    cfg = authors_format.configs("tiny")
    make_tiny_sd2(root / "sd2", prediction_type="v_prediction")
    CLIPVisionConfig(**authors_format._clean(cfg["clip"])).save_pretrained(root / "clip")
    Dinov2Config(**authors_format._clean(cfg["dinov2"])).save_pretrained(root / "dino")
    ids = {"pretrained_model_name_or_path": str(root / "sd2"), "src_encoder_path": str(root / "dino"),
           "fusion_encoder_path": str(root / "clip")}
    state2 = authors_format.write(2, root / "stage2.ckpt", ids=ids, seed=1)
    state1 = authors_format.write(1, root / "stage1.ckpt", ids=ids, seed=2)
    return {"root": root, "cfg": cfg, "stage1": state1, "stage2": state2}


@pytest.fixture(scope="module")
def pipeline(made):
    from src.pipeline import FPDMPipeline

    summary = convert(made["root"] / "stage2.ckpt", made["root"] / "pipeline")
    return FPDMPipeline.from_pretrained(made["root"] / "pipeline"), summary


# ---------------------------------------------------------------------------------------------
# the reference: the authors' computation from the raw tensors, with stock modules


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class RawModel:
    """The authors' stage-2 model rebuilt from their raw tensors with stock diffusers and
    transformers modules and the formulas of their code, not with this project's classes."""

    def __init__(self, state: dict, cfg: dict):
        from diffusers import UNet2DConditionModel
        from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

        clean = authors_format._clean
        self.unet = UNet2DConditionModel.from_config({**cfg["unet"], "class_embed_type": "identity"}).eval()
        unet_state = {k: v for k, v in _sub(state, "unet.").items() if not k.startswith("class_embedding.")}
        self.unet.load_state_dict(unet_state)
        self.class_mlp = _sub(state, "unet.class_embedding.net.")
        self.pose = ControlNetConditioningEmbedding(cfg["unet"]["block_out_channels"][0], 3,
                                                    tuple(cfg["pose_channels"])).eval()
        self.pose.load_state_dict(_sub(state, "sd_model.pose_t_proj."))
        self.src_mlp = _sub(state, "sd_model.srcimage_proj_model.net.")
        self.dino = Dinov2Model(Dinov2Config(**clean(cfg["dinov2"]))).eval()
        renamed = {}
        for k, v in _sub(state, "src_image_encoder.").items():
            for new, old in authors_format.DINOV2_440_NAMES:
                k = k.replace(old, new)
            renamed[k] = v
        self.dino.load_state_dict(renamed)
        self.clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clean(cfg["clip"]))).eval()
        self.clip.load_state_dict(_sub(state, "fusion_model.img_encoder."))
        self.combiner = _sub(state, "fusion_model.combiner.")

    def class_embedding(self, f):
        h = F.gelu(F.linear(f, self.class_mlp["0.weight"], self.class_mlp["0.bias"]))
        return F.linear(h, self.class_mlp["3.weight"], self.class_mlp["3.bias"])

    def source_tokens(self, dino_pixels):
        m = self.src_mlp
        h = F.gelu(F.linear(self.dino(pixel_values=dino_pixels).last_hidden_state, m["0.weight"], m["0.bias"]))
        h = F.layer_norm(h, h.shape[-1:], m["3.weight"], m["3.bias"])
        return F.linear(h, m["4.weight"], m["4.bias"])

    def fusion(self, clip_source, clip_pose):
        c = self.combiner
        s = self.clip(pixel_values=clip_source).image_embeds
        p = self.clip(pixel_values=clip_pose).image_embeds
        pp = F.relu(F.linear(p, c["kpt_projection_layer.weight"], c["kpt_projection_layer.bias"]))
        ps = F.relu(F.linear(s, c["image_projection_layer.weight"], c["image_projection_layer.bias"]))
        both = torch.cat([pp, ps], -1)
        h = F.relu(F.linear(both, c["combiner_layer.weight"], c["combiner_layer.bias"]))
        lam = torch.sigmoid(F.linear(F.relu(F.linear(both, c["dynamic_scalar.0.weight"], c["dynamic_scalar.0.bias"])),
                                     c["dynamic_scalar.3.weight"], c["dynamic_scalar.3.bias"]))
        return F.normalize(F.linear(h, c["output_layer.weight"], c["output_layer.bias"]) + lam * p + (1 - lam) * s,
                           dim=-1)

    def noise_prediction(self, latents, t, pose01, tokens, fusion):
        residual = self.pose(pose01)
        hook = self.unet.conv_in.register_forward_hook(lambda m, a, out: out + residual)
        try:
            return self.unet(latents, t, encoder_hidden_states=tokens,
                             class_labels=self.class_embedding(fusion)).sample
        finally:
            hook.remove()


def _pixels(image: Image.Image, mean_std=None) -> torch.Tensor:
    """torchvision ToTensor (x / 255), then the processor's normalisation if given."""
    x = np.asarray(image, dtype=np.float32) / 255.0
    if mean_std is not None:
        x = (x - mean_std[0]) / mean_std[1]
    return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]


def _authors_inputs(source: Image.Image, pose: Image.Image, height: int, width: int, source_size: int,
                    fusion_size: int) -> dict:
    """What the authors' C1 feeds the networks (their dataset's resizes and processors)."""
    square = resize(source, (source_size, source_size))
    return {"dino": _pixels(square, IMAGENET), "clip_source": _pixels(resize(square, (fusion_size,) * 2), OPENAI),
            "clip_pose": _pixels(resize(pose, (fusion_size,) * 2), OPENAI),
            "pose01": _pixels(resize(pose, (height, width)))}


def _photo_and_pose(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """Tall images, so that squashing them takes Pillow 13's other pass order."""
    rng = np.random.default_rng(seed)
    photo = (rng.random((220, 75, 3)) * 255).astype(np.uint8)
    pose = np.zeros((220, 75, 3), np.uint8)
    pose[20:180:16, 10:60] = rng.integers(0, 255, (10, 50, 3))
    return Image.fromarray(photo), Image.fromarray(pose)


# ---------------------------------------------------------------------------------------------
# conversion


def test_stage2_denoiser_equals_the_raw_tensors_computation(made, pipeline):
    pipe, summary = pipeline
    raw = RawModel(made["stage2"], made["cfg"])
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 6, generator=g)
    t = torch.tensor([999, 401])
    pose = torch.rand(2, 3, 64, 48, generator=g)  # [0, 1], as the authors' pose encoder saw it
    dino = torch.randn(2, 3, 32, 32, generator=g)
    fusion = F.normalize(torch.randn(2, 32, generator=g), dim=-1)
    with torch.no_grad():
        expected = raw.noise_prediction(latents, t, pose, raw.source_tokens(dino), fusion)
        tokens = pipe.source_encoder.model(pixel_values=dino).last_hidden_state
        conditions = pipe.denoiser().encode_conditions(pose * 2 - 1, tokens, fusion)  # the project's [-1, 1]
        got = pipe.denoiser().denoise(latents, t, conditions)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert summary["stage"] == 2 and summary["tensors_mapped"] + summary["tensors_skipped"] == len(made["stage2"])
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert (pipe.config.height, pipe.config.width, pipe.config.source_size) == (64, 48, 32)
    assert pipe.config.sampling == {"num_inference_steps": 20, "guidance_scale": 2.0, "scheduler": "ddpm", "seed": 7}


def test_the_converted_pipeline_samples_as_the_authors_c1(made, pipeline):
    """One pair, seed 7, 20 DDPM steps, guidance 2: the authors' loop (one CPU generator for the
    initial latents and every step's noise, three branches with zeroed pose, source tokens and
    fusion vector) on their inputs, against the pipeline called on the photo and the pose image."""
    from diffusers import DDPMScheduler

    pipe, _ = pipeline
    raw = RawModel(made["stage2"], made["cfg"])
    photo, pose = _photo_and_pose()
    x = _authors_inputs(photo, pose, 64, 48, 32, 64)
    g_scale = 2.0
    with torch.no_grad():
        tokens = raw.source_tokens(x["dino"])
        fusion = raw.fusion(x["clip_source"], x["clip_pose"])
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(20)
        generator = torch.Generator().manual_seed(7)
        latents = torch.randn((1, 4, 8, 6), generator=generator) * scheduler.init_noise_sigma
        residual = torch.cat([torch.zeros_like(raw.pose(x["pose01"])), raw.pose(x["pose01"]), raw.pose(x["pose01"])])
        states = torch.cat([torch.zeros_like(tokens), tokens, tokens])
        fusions = torch.cat([torch.zeros_like(fusion), torch.zeros_like(fusion), fusion])
        hook = raw.unet.conv_in.register_forward_hook(lambda m, a, out: out + residual)
        for t in scheduler.timesteps:
            e_u, e_s, e_f = raw.unet(torch.cat([latents] * 3), t, encoder_hidden_states=states,
                                     class_labels=raw.class_embedding(fusions)).sample.chunk(3)
            e = e_u + g_scale * (e_s - e_u) + g_scale * (e_f - e_s)
            latents = scheduler.step(e, t, latents, generator=generator).prev_sample
        hook.remove()
    # steps, guidance and sampler left to the defaults the checkpoint's hyperparameters recorded
    got = pipe(photo, pose, seeds=[7], output_type="latent").images
    assert torch.allclose(got, latents, atol=1e-5), (got - latents).abs().max()


def test_stage1_folder_is_b1s_export_and_trains_in_b2(made, samples_root, tmp_path):
    from src.models.fusion import FusionModel

    summary = convert(made["root"] / "stage1.ckpt", tmp_path / "fusion_model")
    assert summary["stage"] == 1
    model = FusionModel.from_pretrained(tmp_path / "fusion_model").eval()
    raw = RawModel.__new__(RawModel)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    raw.clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**authors_format._clean(made["cfg"]["clip"]))).eval()
    raw.clip.load_state_dict(_sub(made["stage1"], "img_encoder."))
    raw.combiner = _sub(made["stage1"], "combiner.")
    g = torch.Generator().manual_seed(3)
    s_img, p_img = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    norm = lambda x: ((x + 1) / 2 - torch.tensor(OPENAI[0]).view(1, 3, 1, 1).float()) / torch.tensor(OPENAI[1]).view(1, 3, 1, 1).float()  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(model.fuse(s_img, p_img), raw.fusion(norm(s_img), norm(p_img)), atol=1e-5)
    from test_init_pipeline import run_b2

    out = tmp_path / "B2"
    run_b2("--preset=tiny", f"--dataset_root={samples_root}", f"--out_dir={out}",
           f"--fusion_model={tmp_path / 'fusion_model'}", "--max_steps=2", "--batch_size=2", "--validation_steps=0",
           "--validation_pairs=0", "--validation_loss_pairs=2", "--fusion_size=64", "--num_workers=0")
    trained = FusionModel.from_pretrained(out / "pipeline" / "fusion_model")
    for (k, a), b in zip(model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), k  # frozen in B2: the converted weights themselves


def test_hub_ids_of_the_hyperparameters_are_used_when_local_and_options_win(made, tmp_path):
    summary = convert(made["root"] / "stage2.ckpt", tmp_path / "p")
    assert "named by the checkpoint" in summary["configs"]["pretrained_model"]
    with pytest.raises(ConversionError, match="--source_encoder=nowhere/dinov2: neither a folder"):
        convert(made["root"] / "stage2.ckpt", tmp_path / "q", source_encoder="nowhere/dinov2")
    assert not (tmp_path / "q").exists()


def test_full_size_hyperparameters_fall_back_to_the_shipped_configs(made, tmp_path):
    """Without local configs, the shipped paper-size ones are used: the tiny tensors then do not
    fit, and every mismatch is listed at once, nothing written."""
    state = dict(made["stage2"])
    path = tmp_path / "hub_ids.ckpt"
    torch.save(authors_format.lightning_checkpoint(state, [], authors_format.hyper_parameters(2, made["cfg"]),
                                                   optimizer_state=False), path)
    with pytest.raises(ConversionError) as err:
        convert(path, tmp_path / "out")
    message = str(err.value)
    count = int(message.split(": ")[1].split(" ")[0])
    assert count > 1000 and "problem(s), nothing written" in message and "missing from the checkpoint" in message
    assert message.count("\n  ") == 41 and message.endswith(f"... and {count - 40} more")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# refused and broken files


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_a_command_is_refused_and_nothing_runs(made, tmp_path):
    marker = tmp_path / "ran"
    ckpt = authors_format.lightning_checkpoint(dict(made["stage1"]), [], {"lr": _Exploit(marker)},
                                               optimizer_state=False)
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt: refused: its pickle asks for (posix|os)\.system"):
        read_checkpoint(path)
    result = subprocess.run([sys.executable, "-m", "src.convert_authors", f"--checkpoint={path}",
                             f"--out={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "system" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_truncated_file_wrong_stage_and_missing_key_each_one_clear_error(made, tmp_path):
    data = (made["root"] / "stage2.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt: truncated or not a PyTorch checkpoint"):
        convert(tmp_path / "cut.ckpt", tmp_path / "a")
    with pytest.raises(ConversionError, match=r"stage1.ckpt: a stage-1 \(the fusion model, B1\) checkpoint, "
                                              r"but --stage=2"):
        convert(made["root"] / "stage1.ckpt", tmp_path / "b", stage="2")
    state = {k: v for k, v in made["stage2"].items() if k != "sd_model.pose_t_proj.blocks.2.bias"}
    path = tmp_path / "missing.ckpt"
    torch.save(authors_format.lightning_checkpoint(state, [], authors_format.hyper_parameters(
        2, made["cfg"], {"pretrained_model_name_or_path": str(made["root"] / "sd2"),
                         "src_encoder_path": str(made["root"] / "dino"),
                         "fusion_encoder_path": str(made["root"] / "clip")}), optimizer_state=False), path)
    with pytest.raises(ConversionError, match=r"1 problem\(s\), nothing written:\n  "
                                              r"pose_encoder.embedding.blocks.2.bias: missing from the checkpoint"):
        convert(path, tmp_path / "c")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_tensor_bytes_cut_short_are_found_before_writing(made, tmp_path):
    """A zip directory intact but a storage record shorter than its tensor: listed, nothing written."""
    src = made["root"] / "stage1.ckpt"
    dst = tmp_path / "short.ckpt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data/0"):
                data = data[: len(data) // 2]
            zout.writestr(info, data)
    with pytest.raises(ConversionError, match="holds .* bytes, fewer than its"):
        convert(dst, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reading_never_imports_omegaconf_or_lightning_and_skips_the_optimizer_state(made):
    code = ("import sys; from src.util.lightning_checkpoint import read_checkpoint; "
            f"c = read_checkpoint({str(made['root'] / 'stage2.ckpt')!r}); "
            "print(type(c.hyper_parameters).__name__, c.hyper_parameters['model_img_size'], "
            "len(c.top['optimizer_states'][0]['state']), "
            "[m for m in ('omegaconf', 'pytorch_lightning', 'lightning') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kind, *rest = result.stdout.split(" ", 1)
    assert kind == "dict" and "[48, 64]" in rest[0] and rest[0].strip().endswith("[]")


def test_lazy_tensors_read_the_right_bytes_and_shared_storages_are_one(made, tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    ckpt = {"state_dict": {"a": base, "b": base[1:, 2:4], "c": base.t(), "h": torch.ones(3, dtype=torch.bfloat16)},
            "hyper_parameters": {"x": 1}}
    torch.save(ckpt, tmp_path / "views.ckpt")
    with read_checkpoint(tmp_path / "views.ckpt") as c:
        for k, v in ckpt["state_dict"].items():
            assert torch.equal(c.materialize(c.state_dict[k]), v), k
        assert c.state_dict["a"].storage == c.state_dict["b"].storage


def test_a_checkpoint_given_as_a_pipeline_says_how_to_convert_it(made):
    from src.evaluate.generate import load_pipeline
    from src.util.weights import WeightsNotFoundError

    path = str(made["root"] / "stage2.ckpt")
    with pytest.raises(WeightsNotFoundError, match=f"{path}: a Lightning checkpoint.*src.convert_authors "
                                                   f"--checkpoint={path}"):
        load_pipeline(path, torch.float32, "cpu")


def test_b2_fine_tunes_the_converted_authors_pipeline(made, pipeline, samples_root, tmp_path):
    """--init_pipeline on the converted stage-2 folder: at lr 0 the export is the authors' model
    bit for bit, with their sizes, sampling defaults and DINOv2 position-grid rule."""
    from test_init_pipeline import b2_args, run_b2, weights

    folder = made["root"] / "pipeline"
    out = tmp_path / "B2"
    run_b2(*b2_args(samples_root, folder, out, "--lr=0.0", "--max_steps=1"))
    for name in ("vae", "unet", "pose_encoder", "source_mlp", "fusion_mlp", "source_encoder", "fusion_model"):
        a, b = weights(folder, name), weights(out / "pipeline", name)
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["sampling"] == pipeline[0].config.sampling and (index["height"], index["width"]) == (64, 48)
    assert json.loads((out / "pipeline" / "source_encoder" / "config.json").read_text())["position_grid"] == "scale_factor"


def test_attribute_dict_and_namespace_hyperparameters_become_plain_dicts(tmp_path, monkeypatch):
    """Lightning's AttributeDict (a dict subclass) and argparse.Namespace, as other Lightning
    modules save them, are rebuilt as dicts; their classes are never imported."""
    import argparse
    import types

    module = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__, AttributeDict.__qualname__ = module.__name__, "AttributeDict"
    module.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    hparams = AttributeDict(lr=1e-4, sizes=[352, 512], args=argparse.Namespace(seed_number=7, name="x"))
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": hparams}, tmp_path / "h.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", module.__name__):
        monkeypatch.delitem(sys.modules, name)
    with read_checkpoint(tmp_path / "h.ckpt") as c:
        assert c.hyper_parameters == {"lr": 1e-4, "sizes": [352, 512], "args": {"seed_number": 7, "name": "x"}}
        assert type(c.hyper_parameters) is dict and type(c.hyper_parameters["args"]) is dict
