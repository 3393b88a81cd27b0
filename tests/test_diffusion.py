"""Stage 2 models: SD2 loading (every pretrained weight kept, clear message when missing), the
source encoder, the pose encoder / source MLP, and the denoiser's wiring of the three conditions
into a standard diffusers UNet; the training objective; a tiny model that learns one pair."""

import json
import time

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from src.models.denoiser import Conditions, FPDMDenoiser
from src.models.heads import FusionMLP, SourceMLP
from src.models.pose_encoder import PoseEncoder
from src.models.sd2 import DEFAULT_SD2, load_scheduler, load_sd2, load_unet, make_tiny_sd2
from src.models.source_encoder import BACKENDS, SourceEncoder, tiny_model_config
from src.train.stage2 import diffusion_loss, drop_masks, make_tiny_pipeline, prediction_target
from src.util.weights import WeightsNotFoundError

FUSION_DIM = 32  # the tiny fusion model's embedding width


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory):
    return make_tiny_sd2(tmp_path_factory.mktemp("sd2") / "tiny_sd2")


@pytest.fixture(scope="session")
def tiny_sd2_v(tmp_path_factory):
    return make_tiny_sd2(tmp_path_factory.mktemp("sd2v") / "tiny_sd2_v", prediction_type="v_prediction")


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def make_denoiser(folder, seed=0) -> FPDMDenoiser:
    torch.manual_seed(seed)
    return make_tiny_pipeline(folder, seed=seed).denoiser()


def inputs(batch=2, seed=0, h=64, w=48):
    """noisy latents, timesteps, pose images, source tokens, fusion embeddings."""
    return (torch.randn(batch, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(seed)),
            torch.tensor([500, 20, 900, 3][:batch]), rand(batch, 3, h, w, seed=seed + 1),
            torch.randn(batch, 17, 32, generator=torch.Generator().manual_seed(seed + 2)),
            torch.nn.functional.normalize(torch.randn(batch, FUSION_DIM,
                                                      generator=torch.Generator().manual_seed(seed + 3)), dim=-1))


def one_training_step(denoiser, seed=0, lr=1e-2):
    x, t, pose, tokens, fusion = inputs(seed=seed)
    opt = torch.optim.Adam([p for p in denoiser.parameters() if p.requires_grad], lr=lr)
    from diffusers import DDPMScheduler

    loss = diffusion_loss(denoiser, DDPMScheduler(), x, pose, tokens, fusion,
                          generator=torch.Generator().manual_seed(seed))
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


# ---------------------------------------------------------------------------------------------
# SD2 loading


def test_tiny_sd2_folder_has_the_hub_layout(tiny_sd2):
    for sub, cfg in (("unet", "config.json"), ("vae", "config.json"), ("scheduler", "scheduler_config.json")):
        assert (tiny_sd2 / sub / cfg).is_file()
    assert (tiny_sd2 / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tiny_sd2 / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    vae_cfg = json.loads((tiny_sd2 / "vae" / "config.json").read_text())
    assert len(vae_cfg["block_out_channels"]) == 4  # latents at 1/8 as in SD
    unet_cfg = json.loads((tiny_sd2 / "unet" / "config.json").read_text())
    assert unet_cfg["class_embed_type"] is None  # a plain SD2-style UNet, like the real download


def test_loading_keeps_every_pretrained_weight(tiny_sd2):
    parts = load_sd2(str(tiny_sd2))
    pretrained = UNet2DConditionModel.from_pretrained(tiny_sd2, subfolder="unet").state_dict()
    loaded = parts.unet.state_dict()
    assert set(loaded) == set(pretrained)  # the identity class embedding adds no weights
    for k, v in pretrained.items():
        assert torch.equal(loaded[k], v), k
    assert parts.unet.config.class_embed_type == "identity"
    vae = AutoencoderKL.from_pretrained(tiny_sd2, subfolder="vae").state_dict()
    assert all(torch.equal(parts.vae.state_dict()[k], v) for k, v in vae.items())
    assert not any(p.requires_grad for p in parts.vae.parameters())
    assert parts.prediction_type == "epsilon"


def test_identity_class_embedding_adds_class_labels_to_the_time_embedding(tiny_sd2):
    base = UNet2DConditionModel.from_pretrained(tiny_sd2, subfolder="unet").eval()
    unet = load_unet(str(tiny_sd2)).eval()
    x, t, _, tokens, _ = inputs()
    width = unet.time_embedding.linear_2.out_features
    extra = torch.randn(2, width)
    base.time_embedding.register_forward_hook(lambda m, a, o: o + extra)  # the same sum, done by hand
    with torch.no_grad():
        ref = base(x, t, encoder_hidden_states=tokens).sample
        out = unet(x, t, encoder_hidden_states=tokens, class_labels=extra).sample
        zero = unet(x, t, encoder_hidden_states=tokens, class_labels=torch.zeros(2, width)).sample
        plain = UNet2DConditionModel.from_pretrained(tiny_sd2, subfolder="unet").eval()(
            x, t, encoder_hidden_states=tokens).sample
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(zero, plain, atol=1e-6)  # zero class labels: the pretrained UNet's output


def test_a_trained_unet_loads_as_saved(tiny_sd2, tmp_path):
    unet = load_unet(str(tiny_sd2))
    unet.conv_in.weight.data.normal_()
    unet.save_pretrained(tmp_path / "trained" / "unet")
    for sub in ("vae", "scheduler"):
        (tmp_path / "trained" / sub).symlink_to(tiny_sd2 / sub)
    again = load_unet(str(tmp_path / "trained"))
    assert again.config.class_embed_type == "identity"
    assert torch.equal(again.conv_in.weight, unet.conv_in.weight)


def test_v_prediction_comes_from_the_scheduler_config(tiny_sd2_v):
    assert load_sd2(str(tiny_sd2_v)).prediction_type == "v_prediction"


def test_missing_sd2_folder_gives_the_clear_message(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        load_sd2(str(tmp_path / "absent"))
    msg = str(e.value)
    assert "does not exist" in msg and f"hf download {DEFAULT_SD2}" in msg and "--pretrained_model" not in msg
    assert e.value.weights == "sd2"  # B2 names its option for these (test_b2_missing_weights_...)
    # a folder without the hub layout
    (tmp_path / "partial" / "vae").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError, match="unet/"):
        load_sd2(str(tmp_path / "partial"))
    # a hub id that is not on this machine (tests run offline)
    with pytest.raises(WeightsNotFoundError) as e:
        load_sd2("stabilityai/stable-diffusion-2-1")
    assert "hf download stabilityai/stable-diffusion-2-1" in str(e.value)
    assert "Traceback" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# source encoder


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_encoder_tokens_resize_and_frozen(backend, tmp_path):
    torch.manual_seed(0)
    enc = SourceEncoder.tiny(backend)
    tokens = enc(rand(2, 3, 64, 64))
    assert tokens.shape == (2, enc.num_tokens(), enc.width) == (2, 17, 32)
    assert enc(rand(2, 3, 50, 30)).shape == tokens.shape  # any input size
    x = rand(1, 3, 32, 32)
    expected = enc.model(pixel_values=((x + 1) / 2 - enc.mean) / enc.std).last_hidden_state
    assert torch.allclose(enc(x), expected, atol=1e-5)  # own mean/std, all last-layer tokens
    enc.train()
    assert not enc.training and not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())
    enc.save_pretrained(tmp_path / "enc")
    again = SourceEncoder.from_pretrained(tmp_path / "enc")
    assert torch.equal(again(x), enc(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_source_encoder_loads_a_transformers_folder_with_its_normalisation(backend, tmp_path):
    torch.manual_seed(0)
    enc = SourceEncoder.tiny(backend)
    enc.model.save_pretrained(tmp_path / "hf")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    loaded = SourceEncoder.load(str(tmp_path / "hf"), image_size=32)
    assert loaded.config.backend == backend
    assert torch.allclose(loaded.mean.flatten(), torch.tensor(mean))
    x = rand(1, 3, 32, 32)
    enc.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
    enc.std.copy_(torch.tensor(std).view(1, 3, 1, 1))
    assert torch.allclose(loaded(x), enc(x), atol=1e-6)
    other = "clip" if backend == "dinov2" else "dinov2"
    with pytest.raises(ValueError, match="checkpoint"):
        SourceEncoder.load(str(tmp_path / "hf"), backend=other)


def test_source_encoder_missing_weights_message(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        SourceEncoder.load(str(tmp_path / "dinov2"))
    assert "hf download facebook/dinov2-large" in str(e.value) and e.value.weights == "source_encoder"
    with pytest.raises(WeightsNotFoundError, match="facebook/dinov2-large"):
        SourceEncoder.load("facebook/dinov2-large")


def test_source_encoder_sees_the_source_at_512_without_a_crop(tiny_sd2):
    from src.train.stage2 import build_pipeline

    torch.manual_seed(0)
    # DINOv2's patch 14 on a small random network; the pipeline's default source size decides
    patch14 = SourceEncoder(backend="dinov2", model_config=tiny_model_config("dinov2", patch_size=14, image_size=518))
    pipe = build_pipeline(str(tiny_sd2), patch14, "tiny")
    assert pipe.config.source_size == 512 and pipe.source_encoder.config.image_size == 512
    source = pipe.prepare_inputs(torch.rand(3, 600, 400) * 2 - 1, torch.zeros(3, 512, 352))["source"]
    assert source.shape == (1, 3, 512, 512)  # squashed to the square, nothing cut
    tokens = pipe.source_encoder(source)
    assert tokens.shape[1] == pipe.source_encoder.num_tokens() == 1 + 36 * 36 == 1297
    # the tiny preset, same rule at its own size: 64 px with patch 8
    tiny = make_tiny_pipeline(tiny_sd2, source_size=64)
    assert tiny.source_encoder(torch.zeros(1, 3, 64, 64)).shape[1] == 1 + 8 * 8


def test_default_source_encoder_config_is_dinov2_large_width():
    cfg = tiny_model_config("dinov2", width=1024, layers=1, heads=16, patch_size=14, image_size=224)
    assert cfg["hidden_size"] == 1024 and cfg["model_type"] == "dinov2"


# ---------------------------------------------------------------------------------------------
# pose encoder and source MLP


def test_pose_encoder_defaults_shapes_and_zero_init():
    enc = PoseEncoder()
    assert list(enc.config.block_out_channels) == [16, 32, 96, 256]
    assert enc.config.out_channels == 320 and enc.downscale_factor == 8
    out = enc(rand(2, 3, 64, 48))
    assert out.shape == (2, 320, 8, 6)
    assert torch.count_nonzero(out) == 0  # last conv starts at zero
    strides = [m.stride[0] for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides.count(2) == 3


def test_source_mlp_defaults():
    mlp = SourceMLP()
    assert (mlp.config.in_dim, mlp.config.hidden_dim, mlp.config.out_dim, mlp.config.dropout) == (1024, 768, 1024, 0.2)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 768), (768, 1024)]
    assert mlp(torch.randn(2, 5, 1024)).shape == (2, 5, 1024)


def test_source_mlp_has_the_authors_layer_order():
    layers = list(SourceMLP().net)
    assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Dropout, torch.nn.LayerNorm,
                                         torch.nn.Linear, torch.nn.Dropout]
    assert layers[2].p == 0.2 and layers[5].p == 0.2 and layers[3].normalized_shape == (768,)


def test_fusion_mlp_has_the_authors_layers_and_default_init():
    torch.manual_seed(0)
    mlp = FusionMLP()
    layers = list(mlp.net)
    assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Dropout, torch.nn.Linear,
                                         torch.nn.Dropout]
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, torch.nn.Linear)] == [(768, 768),
                                                                                                  (768, 1280)]
    assert layers[2].p == 0.2 and layers[4].p == 0.2
    # PyTorch's default init (no zeroed layer): weights bounded by 1/sqrt(fan_in), none all zero
    for m in (layers[0], layers[3]):
        bound = 1 / m.in_features ** 0.5
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    mlp.eval()
    x = torch.randn(3, 768)
    expected = layers[3](torch.nn.functional.gelu(layers[0](x)))
    assert torch.allclose(mlp(x), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# wiring


def test_zero_pose_path_leaves_the_unet_output_unchanged_at_init(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    x, t, pose, tokens, fusion = inputs()
    with torch.no_grad():
        out = den(x, t, pose, tokens, fusion)
        plain = den.unet(x, t, encoder_hidden_states=den.source_mlp(tokens), class_labels=den.fusion_mlp(fusion)).sample
        other = den(x, t, rand(2, 3, 64, 48, seed=9), tokens, fusion)
    assert torch.equal(out, plain) and torch.equal(out, other)


def test_after_one_step_pose_and_fusion_change_the_output(tiny_sd2):
    den = make_denoiser(tiny_sd2)
    x, t, pose, tokens, fusion = inputs(seed=5)
    den.train()
    one_training_step(den)
    den.eval()
    with torch.no_grad():
        out = den(x, t, pose, tokens, fusion)
        pose_diff = (den(x, t, -torch.ones_like(pose), tokens, fusion) - out).abs().max()
        pose_path = (den(x, t, pose, tokens, fusion, drop_pose=True) - out).abs().max()
        fusion_diff = (den(x, t, pose, tokens, -fusion) - out).abs().max()
    # (a freshly initialised conv stack maps different images to nearly the same features, so
    # the pose itself matters little until training; the path is open)
    assert pose_diff > 1e-6 and pose_path > 1e-3 and fusion_diff > 1e-4


def test_fusion_embedding_enters_through_the_fusion_mlp(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    seen = []
    den.fusion_mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    added = []
    den.unet.class_embedding.register_forward_hook(lambda m, a, o: added.append(o.clone()))
    x, t, pose, tokens, fusion = inputs()
    with torch.no_grad():
        a = den(x, t, pose, tokens, fusion)
        b = den(x, t, pose, tokens, fusion.roll(1, dims=0))
        mlp_out = den.fusion_mlp(fusion)
    assert torch.equal(seen[0], fusion)
    assert torch.allclose(added[0], mlp_out)  # the identity class embedding passes the MLP output on
    assert (a - b).abs().max() > 1e-4


def test_source_tokens_reach_cross_attention(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    seen = []
    attn2 = [m for n, m in den.unet.named_modules() if n.endswith("attn2")]
    assert attn2
    for m in attn2:
        m.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].clone()),
                                    with_kwargs=True)
    x, t, pose, tokens, fusion = inputs()
    with torch.no_grad():
        a = den(x, t, pose, tokens, fusion)
        states = den.source_mlp(tokens)
        b = den(x, t, pose, tokens * 0.5 + 1, fusion)
    assert len(seen) == 2 * len(attn2)
    assert all(torch.equal(s, states) for s in seen[:len(attn2)])
    assert (a - b).abs().max() > 1e-4


def test_condition_dropout_zeroes_each_condition_where_it_enters(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    torch.nn.init.normal_(den.pose_encoder.embedding.conv_out.weight, std=0.1)
    got = {}
    den.unet.conv_in.register_forward_hook(lambda m, a, o: got.__setitem__("pose", m._fpdm_pose_residual.clone()))
    den.fusion_mlp.register_forward_pre_hook(lambda m, a: got.__setitem__("fusion", a[0].clone()))
    attn2 = next(m for n, m in den.unet.named_modules() if n.endswith("attn2"))
    attn2.register_forward_pre_hook(lambda m, a, kw: got.__setitem__("source", kw["encoder_hidden_states"].clone()),
                                    with_kwargs=True)
    x, t, pose, tokens, fusion = inputs()
    masks = {"pose": torch.tensor([True, False]), "source": torch.tensor([False, True]),
             "fusion": torch.tensor([True, True])}
    with torch.no_grad():
        out = den(x, t, pose, tokens, fusion, drop_pose=masks["pose"], drop_source=masks["source"],
                  drop_fusion=masks["fusion"])
        full = den.encode_conditions(pose, tokens, fusion)
    assert torch.count_nonzero(got["pose"][0]) == 0 and torch.equal(got["pose"][1], full.pose_features[1])
    assert torch.equal(got["source"][0], full.encoder_hidden_states[0]) and torch.count_nonzero(got["source"][1]) == 0
    assert torch.count_nonzero(got["fusion"]) == 0
    # the same as zeroing the conditions by hand
    by_hand = Conditions(full.pose_features * torch.tensor([0.0, 1.0]).view(2, 1, 1, 1),
                         full.encoder_hidden_states * torch.tensor([1.0, 0.0]).view(2, 1, 1),
                         torch.zeros_like(fusion))
    with torch.no_grad():
        assert torch.allclose(out, den.denoise(x, t, by_hand), atol=1e-6)
    # no residual is left behind for a plain UNet call
    assert den.unet.conv_in._fpdm_pose_residual is None


def test_unet_stays_a_standard_diffusers_unet(tiny_sd2, tmp_path):
    den = make_denoiser(tiny_sd2)
    den2 = FPDMDenoiser(den.unet, den.pose_encoder, den.source_mlp, den.fusion_mlp)  # a second wrapper: one hook
    assert len(den.unet.conv_in._forward_hooks) == 1 and den2.unet is den.unet
    den.unet.save_pretrained(tmp_path / "unet")
    again = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert set(again.state_dict()) == set(den.unet.state_dict())


def test_width_mismatch_is_a_clear_error(tiny_sd2):
    den = make_denoiser(tiny_sd2)
    with pytest.raises(ValueError, match="cross-attention"):
        FPDMDenoiser(den.unet, den.pose_encoder, SourceMLP(32, 32, 64), den.fusion_mlp)
    with pytest.raises(ValueError, match="conv_in"):
        FPDMDenoiser(den.unet, PoseEncoder(out_channels=16, block_out_channels=(8, 8, 8, 8)), den.source_mlp,
                     den.fusion_mlp)
    with pytest.raises(ValueError, match="time embedding"):
        FPDMDenoiser(den.unet, den.pose_encoder, den.source_mlp, FusionMLP(32, 32, 64))


def test_performance_switches_keep_the_output(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    torch.nn.init.normal_(den.pose_encoder.embedding.conv_out.weight, std=0.1)
    x, t, pose, tokens, fusion = inputs()
    with torch.no_grad():
        ref = den(x, t, pose, tokens, fusion)
        den.set_sdpa(False)
        assert torch.allclose(den(x, t, pose, tokens, fusion), ref, atol=1e-5)
        den.set_sdpa(True)
        den.set_channels_last(True)
        assert torch.allclose(den(x, t, pose, tokens, fusion), ref, atol=1e-5)
        den.set_channels_last(False)
    den.train()
    den.source_mlp.eval()  # no dropout, to compare the gradients
    den.fusion_mlp.eval()
    loss_plain = den(x, t, pose, tokens, fusion).square().mean()
    loss_plain.backward()
    g_plain = den.pose_encoder.embedding.conv_out.weight.grad.clone()
    den.zero_grad()
    den.set_gradient_checkpointing(True)
    assert den.unet.is_gradient_checkpointing
    loss_ckpt = den(x, t, pose, tokens, fusion).square().mean()
    loss_ckpt.backward()
    assert torch.allclose(loss_ckpt, loss_plain, atol=1e-6)
    assert torch.allclose(den.pose_encoder.embedding.conv_out.weight.grad, g_plain, atol=1e-5)


def test_compiled_unet_keeps_the_pose_hook(tiny_sd2):
    den = make_denoiser(tiny_sd2).eval()
    torch.nn.init.normal_(den.pose_encoder.embedding.conv_out.weight, std=0.1)
    x, t, pose, tokens, fusion = inputs()
    black = -torch.ones_like(pose)
    with torch.no_grad():
        ref, ref_black = den(x, t, pose, tokens, fusion), den(x, t, black, tokens, fusion)
        den.compile_unet(backend="eager")  # dynamo tracing without code generation (CPU, no compiler)
        assert torch.allclose(den(x, t, pose, tokens, fusion), ref, atol=1e-6)
        assert torch.allclose(den(x, t, black, tokens, fusion), ref_black, atol=1e-6)
    assert set(den.unet.state_dict()) == set(UNet2DConditionModel.from_pretrained(tiny_sd2, subfolder="unet")
                                             .state_dict()) | {k for k in den.unet.state_dict()
                                                               if k.startswith("class_embedding.")}


# ---------------------------------------------------------------------------------------------
# training objective


def test_prediction_target_epsilon_and_v(tiny_sd2, tiny_sd2_v):
    latents, noise, t = torch.randn(2, 4, 8, 6), torch.randn(2, 4, 8, 6), torch.tensor([10, 700])
    eps = load_scheduler(str(tiny_sd2))
    assert torch.equal(prediction_target(eps, latents, noise, t), noise)
    v = load_scheduler(str(tiny_sd2_v))
    a = v.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = a.sqrt() * noise - (1 - a).sqrt() * latents
    assert torch.allclose(prediction_target(v, latents, noise, t), expected, atol=1e-5)


def test_diffusion_loss_is_mse_on_the_target_and_drop_masks(tiny_sd2):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler()
    latents, noise, t = torch.randn(2, 4, 8, 6), torch.randn(2, 4, 8, 6), torch.tensor([10, 700])

    class Oracle(torch.nn.Module):  # predicts the noise exactly from the noisy latents
        def forward(self, noisy, timesteps, *args, **kw):
            a = sched.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
            return (noisy - a.sqrt() * latents) / (1 - a).sqrt()

    loss = diffusion_loss(Oracle(), sched, latents, None, torch.zeros(2, 1, 1), None, noise=noise, timesteps=t)
    assert loss < 1e-8
    masks = drop_masks(10000, {"pose": 0.2, "source": 0.2, "fusion": 0.2}, torch.Generator().manual_seed(0))
    for m in masks.values():
        assert m.dtype == torch.bool and abs(m.float().mean().item() - 0.2) < 0.02
    assert (masks["pose"] != masks["source"]).any()  # independent


def test_noise_offset_adds_a_per_channel_constant():
    from diffusers import DDPMScheduler

    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, noisy, timesteps, *args, **kw):
            seen["noisy"] = noisy
            return torch.zeros_like(noisy)

    sched = DDPMScheduler()
    latents = torch.zeros(64, 4, 8, 8)
    t = torch.full((64,), 999)
    diffusion_loss(Spy(), sched, latents, None, torch.zeros(64, 1, 1), None, timesteps=t, noise_offset=1.0,
                   generator=torch.Generator().manual_seed(0))
    channel_means = seen["noisy"].mean(dim=(2, 3))
    assert channel_means.std() > 0.5  # per (item, channel) offsets of std 1 (vs ~0.125 without)


# ---------------------------------------------------------------------------------------------
# learning


def test_tiny_model_overfits_one_pair(tiny_sd2):
    torch.manual_seed(0)
    pipe = make_tiny_pipeline(tiny_sd2)
    den = pipe.denoiser()
    sched = pipe.scheduler
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 48), indexing="ij")
    target = torch.stack([xx, yy, xx * yy])[None]  # a smooth image
    with torch.no_grad():
        latents = pipe.vae.encode(target).latent_dist.mean * pipe.vae.config.scaling_factor
        source = rand(1, 3, 64, 64, seed=1)
        pose = rand(1, 3, 64, 48, seed=2)
        tokens = pipe.source_encoder(source)
        fusion = pipe.fusion_model.eval().fuse(source, pose)
    g = torch.Generator().manual_seed(123)
    n_eval = 16
    eval_noise = torch.randn(n_eval, *latents.shape[1:], generator=g)
    eval_t = torch.linspace(20, 980, n_eval).long()

    def eval_loss():
        den.eval()
        with torch.no_grad():
            loss = diffusion_loss(den, sched, latents.expand(n_eval, -1, -1, -1), pose.expand(n_eval, -1, -1, -1),
                                  tokens.expand(n_eval, -1, -1), fusion.expand(n_eval, -1), noise=eval_noise,
                                  timesteps=eval_t).item()
        den.train()
        return loss

    start = eval_loss()
    opt = torch.optim.AdamW([p for p in den.parameters() if p.requires_grad], lr=2e-3)
    batch, t0 = 8, time.time()
    for step in range(120):
        loss = diffusion_loss(den, sched, latents.expand(batch, -1, -1, -1), pose.expand(batch, -1, -1, -1),
                              tokens.expand(batch, -1, -1), fusion.expand(batch, -1), noise_offset=0.1, generator=g)
        loss.backward()
        opt.step()
        opt.zero_grad()
    end = eval_loss()
    print(f"overfit one pair: loss {start:.4f} -> {end:.4f} in {time.time() - t0:.0f}s")
    assert end < 0.5 * start, (start, end)


# ---------------------------------------------------------------------------------------------
# the B2 script


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from src.synthetic.figures import make_synthetic_dataset

    root = tmp_path_factory.mktemp("b2data") / "data"
    make_synthetic_dataset(root, n_identities=3, poses_per_identity=3, test_identities=1, width=88, height=128)
    return root


def run_b2(*args):
    from src.util.scripts import run_script

    return run_script("B2.train_Diffusion_model.py", *args, capture=True)


def test_b2_tiny_trains_validates_checkpoints_and_exports(synthetic_root, tmp_path):
    from src.pipeline import FPDMPipeline

    out = tmp_path / "B2"
    r = run_b2("--preset=tiny", f"--dataset_root={synthetic_root}", f"--out_dir={out}", "--max_steps=6",
               "--checkpointing_steps=2", "--validation_steps=3", "--batch_size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-6"]  # rotated
    assert (out / "validation" / "step-0000003.png").is_file() and (out / "validation" / "step-0000006.png").is_file()
    assert (out / "B2_config.json").is_file() and any((out / "tensorboard").rglob("events.*"))
    pipe = FPDMPipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.height == 128 and pipe.config.width == 88
    img = pipe(torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 128, 88) * 2 - 1, num_inference_steps=2,
               seeds=[0], output_type="np").images
    assert img.shape == (1, 128, 88, 3)


def test_b2_missing_weights_end_with_a_message_not_a_traceback(synthetic_root, tmp_path):
    r = run_b2("--preset=tiny", f"--dataset_root={synthetic_root}", f"--out_dir={tmp_path / 'o'}",
               f"--pretrained_model={tmp_path / 'sd21'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "hf download stabilityai/stable-diffusion-2-1" in r.stderr and "--pretrained_model=" in r.stderr
    r = run_b2("--preset=tiny", f"--dataset_root={synthetic_root}", f"--out_dir={tmp_path / 'o'}",
               f"--fusion_model={tmp_path / 'B1' / 'fusion_model'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "B1.train_Fusion_model.py" in r.stderr
    assert "then pass its export: --fusion_model=logs/B1/fusion_model" in r.stderr


@pytest.mark.slow
def test_b2_resume_is_exact_and_sigterm_saves(synthetic_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from safetensors.torch import load_file

    common = ["--preset=tiny", f"--dataset_root={synthetic_root}", "--validation_steps=3", "--batch_size=2",
              "--checkpointing_steps=100"]
    assert run_b2(*common, f"--out_dir={tmp_path / 'a'}", "--max_steps=8").returncode == 0
    assert run_b2(*common, f"--out_dir={tmp_path / 'b'}", "--max_steps=5").returncode == 0
    r = run_b2(*common, f"--out_dir={tmp_path / 'b'}", "--max_steps=8", "--resume=latest")
    assert r.returncode == 0 and "resumed from" in r.stdout
    for sub in ("unet", "pose_encoder", "source_mlp"):
        a = load_file(tmp_path / "a" / "pipeline" / sub / "diffusion_pytorch_model.safetensors")
        b = load_file(tmp_path / "b" / "pipeline" / sub / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), sub

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "B2.train_Diffusion_model.py"), *common,
                             f"--out_dir={tmp_path / 'c'}", "--max_steps=100000", "--epochs=100000",
                             "--validation_steps=0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "c").glob("tensorboard/**/events.*")):
        time.sleep(0.5)
    time.sleep(5)  # a few training steps
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-2000:]
    assert "stopped at step" in output
    assert list((tmp_path / "c" / "checkpoints").glob("checkpoint-*/training_state.json"))


def test_warmup_step_lr_is_the_authors_per_epoch_schedule():
    from src.train.common import warmup_step_lr

    for e in range(100):
        expected = 1e-4 * (e + 1) / 5 if e < 5 else 1e-4 * 0.1 ** ((e - 5) // 50)
        assert warmup_step_lr(e, 1e-4) == pytest.approx(expected, rel=1e-12), e
    assert warmup_step_lr(3, 1e-4, warmup_epochs=0) == 1e-4 and warmup_step_lr(70, 1e-4, step_epochs=0) == 1e-4


def read_scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


@pytest.mark.slow
def test_b2_learning_rate_over_100_epochs_and_after_a_sigterm_resume_mid_warmup(synthetic_root, tmp_path):
    """B2's lr is the authors' per-epoch schedule, set from the epoch at every epoch start, so a
    run stopped by SIGTERM during warm-up and resumed follows the same curve."""
    import os
    import signal
    import subprocess
    import sys

    pairs = json.loads((synthetic_root / "train_pairs_data.json").read_text())[:2]
    (synthetic_root / "two_pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "B2"
    common = ["--preset=tiny", f"--dataset_root={synthetic_root}", "--train_pairs=two_pairs.json", "--batch_size=2",
              "--epochs=100", "--lr=1e-3", "--lr_warmup_epochs=5", "--lr_step_epochs=50", "--lr_gamma=0.1",
              "--validation_steps=0", "--validation_pairs=0", "--validation_loss_pairs=2", "--log_every=1",
              f"--out_dir={out}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "B2.train_Diffusion_model.py"), *common,
                             "--checkpointing_steps=1", "--checkpoints_total_limit=2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "checkpoint-1").is_dir():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "stopped at step" in output, output[-2000:]
    stopped = int(output.split("stopped at step ")[1].split(";")[0])
    assert stopped < 5  # one step per epoch: still warming up
    r = run_b2(*common, "--checkpointing_steps=1000", "--resume=latest")
    assert r.returncode == 0 and f"resumed from {out / 'checkpoints' / f'checkpoint-{stopped}'}" in r.stdout, r.stderr[-2000:]

    lr, epoch = read_scalars(out / "tensorboard", "lr"), read_scalars(out / "tensorboard", "epoch")
    assert sorted(lr) == list(range(1, 101))  # one optimiser step per epoch, every step logged
    by_epoch = {int(epoch[s]): lr[s] for s in lr}
    for e in (0, 4, 5, 54, 55, 99):
        expected = 1e-3 * (e + 1) / 5 if e < 5 else 1e-3 * 0.1 ** ((e - 5) // 50)
        assert by_epoch[e] == pytest.approx(expected, rel=1e-6), e
    for e in range(stopped, 5):  # the warm-up epochs after the resume
        assert by_epoch[e] == pytest.approx(1e-3 * (e + 1) / 5, rel=1e-6), e
