"""Video files (MP4, GIF, the authors' four-panel layout) and the temporal figures of C2 on
PHOENIX: flow-based warping error, temporal consistency difference and FVD (its Fréchet part and
the I3D loading path, with a tiny stand-in TorchScript network)."""

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from src.evaluate import temporal as tm
from src.util import videos
from src.util.weights import WeightsNotFoundError

H, W = 260, 210


def moving_square(frames: int = 10, step: int = 3, seed: int = 0, size=(H, W)) -> np.ndarray:
    """A textured square translating ``step`` px a frame right and down over a textured static
    background: smooth random texture, so Farneback's flow is meaningful."""
    import cv2

    h, w = size
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.uniform(60, 140, (h, w, 3)).astype(np.float32), (0, 0), 3)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (60, 60, 3)).astype(np.float32), (0, 0), 2)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 200 + 40
    out = []
    for t in range(frames):
        f = bg.copy()
        y0, x0 = 60 + step * t, 40 + step * t
        f[y0:y0 + 60, x0:x0 + 60] = tex
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(out)


def flicker(video: np.ndarray, amount: int = 40) -> np.ndarray:
    out = video.astype(np.int16).copy()
    out[1::2] += amount
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- video files


def test_mp4_frame_count_size_and_content(tmp_path):
    frames = moving_square(12)
    path = videos.write_mp4(tmp_path / "v" / "gen.mp4", frames, fps=25)
    assert path.is_file()
    assert videos.mp4_info(path) == (12, (H, W))
    back = videos.read_mp4(path)
    assert len(back) == 12 and back[0].shape == (H, W, 3)
    assert np.abs(back[5].astype(float) - frames[5]).mean() < 12  # lossy, but the same picture
    assert [p.name for p in path.parent.iterdir()] == ["gen.mp4"]  # no temporary left


def test_mp4_accepts_pil_frames_and_rejects_bad_input(tmp_path):
    pil = [Image.fromarray(f) for f in moving_square(3)]
    assert videos.mp4_info(videos.write_mp4(tmp_path / "p.mp4", pil))[0] == 3
    with pytest.raises(videos.VideoWriteError, match="no frames"):
        videos.write_mp4(tmp_path / "e.mp4", [])
    with pytest.raises(videos.VideoWriteError, match="frame 1"):
        videos.write_mp4(tmp_path / "m.mp4", [np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 2, 3), np.uint8)])
    assert not (tmp_path / "e.mp4").exists() and not (tmp_path / "m.mp4").exists()


def test_gif_frame_count_size_duration_loop(tmp_path):
    path = videos.write_gif(tmp_path / "gen.gif", moving_square(7), fps=25)
    n, size, durations = videos.gif_info(path)
    assert (n, size) == (7, (H, W))
    assert set(durations) == {40}
    with Image.open(path) as im:
        assert im.info.get("loop") == 0
    n, _, durations = videos.gif_info(videos.write_gif(tmp_path / "slow.gif", moving_square(3), fps=10))
    assert n == 3 and set(durations) == {100}  # the authors' GIFs: 100 ms a frame
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.gif", "slow.gif"]


def test_panel_layout(tmp_path):
    truth = moving_square(5)
    poses = np.zeros_like(truth)
    generated = flicker(truth)
    frames = videos.panel_frames(truth[0], poses, truth, generated)
    assert len(frames) == 5 and all(f.shape == (H, 4 * W, 3) for f in frames)
    f = frames[3]
    assert np.array_equal(f[:, :W], truth[0])
    assert np.array_equal(f[:, W:2 * W], poses[3])
    assert np.array_equal(f[:, 2 * W:3 * W], truth[3])
    assert np.array_equal(f[:, 3 * W:], generated[3])
    # panels of another size are resized to the frame size
    small = [Image.fromarray(x).resize((105, 130)) for x in truth]
    frames = videos.panel_frames(small[0], small, truth, small)
    assert frames[0].shape == (H, 4 * W, 3)
    assert videos.mp4_info(videos.write_mp4(tmp_path / "panels.mp4", frames)) == (5, (H, 4 * W))
    with pytest.raises(ValueError, match="differ in number"):
        videos.panel_frames(truth[0], poses[:2], truth, generated)
    # two methods side by side: one more panel, in the order given
    two = videos.panel_frames(truth[0], poses, truth, generated, truth[::-1])
    assert two[1].shape == (H, 5 * W, 3) and np.array_equal(two[1][:, 3 * W:4 * W], generated[1])
    assert np.array_equal(two[1][:, 4 * W:], truth[3])
    with pytest.raises(ValueError, match="differ in number"):
        videos.panel_frames(truth[0], poses, truth, generated, truth[:4])


# ---------------------------------------------------------------------------- temporal figures


def test_flow_follows_the_moving_square():
    v = moving_square(2, step=3)
    backward = tm.optical_flow(v[1], v[0])  # from frame 1 back to frame 0: about (-3, -3) on the square
    inner = backward[63 + 15:63 + 45, 43 + 15:43 + 45]
    assert np.allclose(inner.reshape(-1, 2).mean(axis=0), [-3, -3], atol=0.5)


def test_warping_error_copy_and_flicker():
    truth = moving_square(10)
    copy = tm.warping_error(truth.copy(), truth)
    assert copy["warping_error"] == pytest.approx(copy["warping_error_real"])  # a copy scores the floor
    assert copy["warping_error"] < 2e-3  # ~0: the flow explains the real motion
    assert copy["pairs"] == 9 and copy["valid_fraction"] > 0.8
    flick = tm.warping_error(flicker(truth), truth)
    assert flick["warping_error_real"] == pytest.approx(copy["warping_error_real"])
    assert flick["warping_error"] > 10 * copy["warping_error"]
    assert flick["warping_error"] > 0.01  # (40/255)^2 ~ 0.025 per pair
    without = tm.warping_error(truth.copy(), truth, occlusion=False)
    assert without["valid_fraction"] >= copy["valid_fraction"]


def test_temporal_consistency_difference():
    truth = moving_square(8)
    assert tm.temporal_consistency_difference(truth.copy(), truth) == 0.0
    frozen = np.repeat(truth[:1], len(truth), axis=0)
    assert tm.temporal_consistency_difference(frozen, truth) > 1e-3
    assert tm.temporal_consistency_difference(flicker(truth), truth) > 0.05
    assert tm.temporal_consistency_difference(truth[:1], truth[:1]) is None
    # against the formula on whole videos
    g, r = flicker(truth).astype(np.float64) / 255, truth.astype(np.float64) / 255
    direct = np.abs(np.abs(np.diff(g, axis=0)).mean(axis=(1, 2, 3)) - np.abs(np.diff(r, axis=0)).mean(axis=(1, 2, 3)))
    assert tm.temporal_consistency_difference(flicker(truth), truth) == pytest.approx(direct.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="differ"):
        tm.temporal_consistency_difference(truth[:3], truth)


# ------------------------------------------------------------------------------------------ FVD


def test_fvd_frechet_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 8))
    b = rng.normal(0.3, 1.2, size=(60, 8))
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert tm.fvd_from_features(a, b) == pytest.approx(expected, rel=1e-6)
    assert tm.fvd_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 clips"):
        tm.fvd_from_features(a[:1], b)


def test_fvd_null_with_reason_when_no_weights(tmp_path):
    truth = [moving_square(4, seed=s) for s in range(2)]
    with pytest.raises(WeightsNotFoundError) as e:
        tm.load_i3d(tmp_path / "nothing")
    msg = str(e.value)
    assert "\n" not in msg and tm.I3D_FILE in msg and tm.I3D_URL in msg and str(tmp_path / "nothing") in msg
    videos = [(f"v{i}", v, v) for i, v in enumerate(truth)]
    res = tm.video_metrics(videos, i3d=tmp_path / "nothing")
    assert res["fvd"] is None
    assert res["protocol"]["null_reasons"]["fvd"] == msg
    assert res["temporal_consistency_difference"] == 0.0  # the rest is still computed
    assert res["warping_error"] == res["warping_error_real"] and res["count"] == 2 and res["frames"] == 8
    # an unreadable file is the same kind of null
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / tm.I3D_FILE).write_bytes(b"not a torchscript file")
    res = tm.video_metrics(videos, i3d=tmp_path / "bad")
    assert res["fvd"] is None and "could not be loaded" in res["protocol"]["null_reasons"]["fvd"]


class TinyI3D(torch.nn.Module):
    """Stand-in with the real network's call signature: (N, 3, T, 224, 224) in [-1, 1] -> (N, 6)."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[3] == 224 and x.shape[4] == 224
        m = x.mean(dim=(3, 4))  # N, 3, T
        return torch.cat([m.mean(dim=2), m.std(dim=2)], dim=1)


def test_fvd_through_torchscript_file(tmp_path):
    folder = tmp_path / "i3d"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyI3D()).save(str(folder / tm.I3D_FILE))
    truth = [moving_square(16, seed=0), moving_square(33, seed=1), moving_square(5, seed=2)]
    generated = [flicker(v) for v in truth]
    t0 = time.time()
    res = tm.video_metrics(list(zip(["v0", "v1", "v2"], generated, truth)), i3d=folder)
    assert time.time() - t0 < 20
    info = res["protocol"]["fvd_clips"]
    assert info["generated_clips"] == info["real_clips"] == 3  # 1 + 2 (the 33rd frame dropped), the 5-frame video none
    assert info["videos_too_short"] == 1 and info["feature_dim"] == 6
    assert res["fvd"] is not None and res["fvd"] > 0
    assert "fvd" not in res["protocol"]["null_reasons"]
    # the same features computed here give the same distance
    model = tm.load_i3d(folder)
    fg, _ = tm.i3d_features(model, generated)
    fr, _ = tm.i3d_features(model, truth)
    assert res["fvd"] == pytest.approx(tm.fvd_from_features(fg, fr))
    same = tm.video_metrics([("v1", truth[1], truth[1])], i3d=folder / tm.I3D_FILE, occlusion=False)  # the file itself
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6)
    # per-video and mean figures
    assert [v["name"] for v in res["videos"]] == ["v0", "v1", "v2"]
    assert all(v["warping_error"] > v["warping_error_real"] for v in res["videos"])
    assert res["warping_error"] == pytest.approx(np.mean([v["warping_error"] for v in res["videos"]]))
    assert res["frames"] == 16 + 33 + 5 and [v["frames"] for v in res["videos"]] == [16, 33, 5]
    assert res["protocol"]["farneback"] == tm.FARNEBACK_PARAMS


def test_video_metrics_reads_each_video_when_it_is_scored(tmp_path):
    """Videos given as files: each is read by ``load`` (here in a DataLoader worker) only for its
    own item; the figures equal those of the same videos given in memory."""
    truth = [moving_square(6, seed=s) for s in range(3)]
    generated = [flicker(v) for v in truth]
    videos = []
    for i, (g, r) in enumerate(zip(generated, truth)):
        np.save(tmp_path / f"g{i}.npy", g)
        np.save(tmp_path / f"r{i}.npy", r)
        videos.append((f"v{i}", tmp_path / f"g{i}.npy", tmp_path / f"r{i}.npy"))
    from_files = tm.video_metrics(videos, i3d=tmp_path / "none", load=np.load, num_workers=1)
    in_memory = tm.video_metrics(list(zip(["v0", "v1", "v2"], generated, truth)), i3d=tmp_path / "none")
    assert from_files["videos"] == in_memory["videos"]
    for key in tm.FIGURES:
        assert from_files[key] == in_memory[key]
    for v, g, r in zip(from_files["videos"], generated, truth):
        assert v == {"name": v["name"], **tm.video_figures(g, r)}
    reads = []
    items = tm.VideoFigures(videos, load=lambda path: reads.append(path.name) or np.load(path))
    items[1]
    assert reads == ["g1.npy", "r1.npy"]


def test_preprocess_clips_shape_and_range():
    clip = moving_square(16)
    x = tm.preprocess_clips([clip, clip])
    assert tuple(x.shape) == (2, 3, 16, 224, 224)
    assert x.min() >= -1 and x.max() <= 1
