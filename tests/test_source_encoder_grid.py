"""DINOv2 position grid of the source encoder: "scale_factor" (transformers 4.40's resampling, which
the released FPDM weights learned with) against "size" (the installed transformers' own rule)."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from src.models.source_encoder import SourceEncoder

# The network learns a 4x4 grid (32 px, patch 8) and is fed 48 px images: a 6x6 grid.
LEARNED, FED, PATCH = 32, 48, 8


def rand(*shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2 - 1


def pair(fed=FED, learned=LEARNED):
    """The same tiny random network under both rules."""
    torch.manual_seed(0)
    old = SourceEncoder.tiny(image_size=fed, model_image_size=learned, position_grid="scale_factor")
    new = SourceEncoder.tiny(image_size=fed, model_image_size=learned, position_grid="size")
    new.load_state_dict(old.state_dict())
    return old, new


def by_hand(enc, pixels):
    """DINOv2's forward written out, the position grid resampled by a scale factor as in 4.40."""
    emb = enc.model.embeddings
    patches = F.conv2d(pixels, emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias,
                       stride=PATCH).flatten(2).transpose(1, 2)
    g, n, dim = LEARNED // PATCH, pixels.shape[-1] // PATCH, enc.width
    grid = emb.position_embeddings[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((n + 0.1) / g, (n + 0.1) / g), mode="bicubic", align_corners=False)
    positions = torch.cat([emb.position_embeddings[:, :1], grid.permute(0, 2, 3, 1).reshape(1, n * n, dim)], 1)
    h = torch.cat([emb.cls_token.expand(len(pixels), -1, -1), patches], 1) + positions
    for layer in enc.model.encoder.layer:
        h = layer(h)
    return enc.model.layernorm(h)


def test_scale_factor_follows_the_4_40_rule_and_differs_from_size():
    old, new = pair()
    x = rand(2, 3, 40, 56)
    tokens = old(x)
    assert tokens.shape == (2, 1 + 6 * 6, 32)
    with torch.no_grad():
        expected = by_hand(old, old.preprocess(x))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)
    assert (tokens - new(x)).abs().max() > 1e-3


def test_size_is_the_installed_transformers_rule():
    _, new = pair()
    plain = Dinov2Model(Dinov2Config(**{k: v for k, v in new.config.model_config.items() if k != "model_type"}))
    plain.load_state_dict(new.model.state_dict())
    plain.eval()
    x = rand(2, 3, FED, FED)
    with torch.no_grad():
        expected = plain(pixel_values=new.preprocess(x)).last_hidden_state
    torch.testing.assert_close(new(x), expected, atol=1e-6, rtol=1e-6)


def test_a_matching_grid_is_not_resampled_by_either_rule():
    old, new = pair(fed=LEARNED)
    x = rand(2, 3, 64, 64)
    assert torch.equal(old(x), new(x))
    with torch.no_grad():
        raw = old.model.embeddings.interpolate_pos_encoding(torch.zeros(1, 17, 32), LEARNED, LEARNED)
    assert torch.equal(raw, old.model.embeddings.position_embeddings)


def test_the_rule_survives_save_and_load(tmp_path):
    old, new = pair()
    x = rand(1, 3, FED, FED)
    for enc, name in ((new, "size"), (old, "scale_factor")):
        enc.save_pretrained(tmp_path / name)
        again = SourceEncoder.from_pretrained(tmp_path / name)
        assert again.config.position_grid == name
        assert torch.equal(again(x), enc(x))
    # A folder saved before the setting existed loads with the default, 4.40's rule.
    config = tmp_path / "size" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "position_grid"}))
    assert torch.equal(SourceEncoder.from_pretrained(tmp_path / "size")(x), old(x))


def test_the_config_value_decides_at_forward_time_and_clip_ignores_it():
    old, new = pair()
    x = rand(1, 3, FED, FED)
    new.register_to_config(position_grid="scale_factor")
    assert torch.equal(new(x), old(x))
    clip = {grid: SourceEncoder.tiny("clip", image_size=FED, model_image_size=LEARNED, position_grid=grid)
            for grid in ("scale_factor", "size")}
    clip["size"].load_state_dict(clip["scale_factor"].state_dict())
    assert torch.equal(clip["size"](x), clip["scale_factor"](x))
    with pytest.raises(ValueError, match="position_grid"):
        SourceEncoder.tiny(position_grid="bilinear")
