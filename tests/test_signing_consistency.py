"""bench/signing_consistency.py: its arithmetic (the share of the excess warping error an option
removes, the choice of the best option) against hand computations. The whole runner is tested in
tests/test_demo_phoenix.py, on the demo's trained model."""


import pytest

from src.util.scripts import load_script

@pytest.fixture(scope="module")
def bench():
    module, module.cfg = load_script("bench/signing_consistency.py", [])
    return module


def test_option_names_are_c1_options_and_their_labels_c2s(bench):
    assert bench.c1_options("frame_by_frame") == {"shared_noise": False, "cross_frame_attention": "off"}
    assert bench.c1_options("shared_noise+previous") == {"shared_noise": True, "cross_frame_attention": "previous"}
    assert bench.label("shared_noise+first") == "shared noise + cross-frame attention to the first frame"
    assert bench.label("frame_by_frame") == "frame by frame (the paper)"
    with pytest.raises(SystemExit, match="unknown"):
        bench.c1_options("shared_noise+latent_blending")


def test_closer_to_floor_and_the_best_option(bench):
    # frame by frame 0.010, floor 0.002: an option at 0.006 removes half the excess
    assert bench.closer_to_floor(0.006, 0.010, 0.002) == pytest.approx(0.5)
    assert bench.closer_to_floor(0.012, 0.010, 0.002) == pytest.approx(-0.25)
    assert bench.closer_to_floor(0.006, 0.002, 0.002) is None
    row = lambda share, ssim: {"closer_to_floor": share, "ssim_change": ssim}  # noqa: E731
    table = {"frame_by_frame": row(0.0, 0.0), "shared_noise": row(0.4, -0.005),
             "first": row(0.7, -0.02), "previous": row(-0.1, 0.0)}
    assert bench.best_option(table) == "shared_noise"      # "first" removes more, but costs 0.02 SSIM
    table["shared_noise+previous"] = row(0.405, -0.005)
    assert bench.best_option(table) == "shared_noise"      # no more than a point better: the simpler wins
    table["shared_noise+previous"] = row(0.42, -0.005)
    assert bench.best_option(table) == "shared_noise+previous"
    table["shared_noise"] = table["shared_noise+previous"] = row(0.4, -0.011)
    assert bench.best_option(table) is None
    assert "No option" in bench.verdict(table, None)
