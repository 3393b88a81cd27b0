import numpy as np
import pytest

from src.pose.keypoints import PoseFileError, hflip_keypoints, jitter_keypoints, resize_keypoints, swap_permutation
from src.pose.openpose18 import (
    FLIP_PERMUTATION,
    check_frame,
    draw_pose,
    draw_pose_from_frame,
    format_keypoints,
    frame_to_pixels,
    parse_keypoints,
    pixels_to_frame,
    read_keypoints,
)


def sample_kp():
    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(45, 210, 18), rng.uniform(10, 245, 18)], axis=1)
    kp[[3, 16]] = np.nan
    return kp


def test_parse_and_format_round_trip_keeps_missing():
    kp = sample_kp()
    back = parse_keypoints(format_keypoints(kp))
    assert np.isnan(back[[3, 16]]).all()
    np.testing.assert_allclose(back[~np.isnan(kp)], kp[~np.isnan(kp)], rtol=1e-5)


def test_parse_rejects_bad_shapes_and_values():
    with pytest.raises(PoseFileError, match="17 rows"):
        parse_keypoints("1 2\n" * 17, "a.txt")
    with pytest.raises(PoseFileError, match="a.txt"):
        parse_keypoints("1 2 3\n" * 18, "a.txt")
    with pytest.raises(PoseFileError, match="non-finite"):
        parse_keypoints("1 2\n" * 17 + "nan 3\n", "a.txt")


def test_frame_check_keeps_margin_points_and_rejects_far_ones():
    kp = np.full((18, 2), 100.0)
    kp[0] = (20.0, 100.0)   # in the 40 px margin
    kp[1] = (256.0, 256.0)  # on the border
    assert check_frame(kp) == 2
    kp[2] = (900.0, 10.0)
    with pytest.raises(PoseFileError, match="r_shoulder"):
        check_frame(kp, "x.txt")


def test_frame_to_pixels_maps_known_points_and_back():
    kp = np.array([[40.0, 0.0], [216.0, 256.0], [128.0, 128.0]] + [[np.nan, np.nan]] * 15)
    px = frame_to_pixels(kp, 1101, 750)
    np.testing.assert_allclose(px[0], [0, 0])
    np.testing.assert_allclose(px[1], [750, 1101])
    np.testing.assert_allclose(px[2], [(128 - 40) * 750 / 176, 1101 / 2])
    assert np.isnan(px[3:]).all()
    np.testing.assert_allclose(pixels_to_frame(px, 1101, 750)[:3], kp[:3])


def test_flip_twice_is_identity_and_swaps_sides():
    kp = frame_to_pixels(sample_kp(), 512, 352)
    once = hflip_keypoints(kp, 352, FLIP_PERMUTATION)
    np.testing.assert_allclose(once[5], [351 - kp[2, 0], kp[2, 1]])  # l-shoulder <- mirrored r-shoulder
    assert np.isnan(once[6]).all()  # r-elbow (3) was missing -> l-elbow slot after swap
    twice = hflip_keypoints(once, 352, FLIP_PERMUTATION)
    np.testing.assert_array_equal(np.isnan(twice), np.isnan(kp))
    np.testing.assert_allclose(twice[~np.isnan(kp)], kp[~np.isnan(kp)])


def test_flip_of_any_number_of_points_follows_its_swap_table():
    kp = np.array([[1.0, 2.0], [10.0, 3.0], [np.nan, np.nan], [4.0, 5.0]])
    swap = swap_permutation(4, [(0, 1)])
    assert swap == [1, 0, 2, 3]
    out = hflip_keypoints(kp, 20, swap)
    np.testing.assert_allclose(out[[0, 1, 3]], [[9, 3], [18, 2], [15, 5]])
    assert np.isnan(out[2]).all()


def test_resize_and_jitter_keep_missing():
    kp = sample_kp()
    r = resize_keypoints(kp, (1101, 750), (512, 352))
    np.testing.assert_allclose(r[0], kp[0] * [352 / 750, 512 / 1101])
    j = jitter_keypoints(kp, 1.0, np.random.default_rng(0))
    assert np.isnan(j[[3, 16]]).all()
    d = (j - kp)[~np.isnan(kp).any(1)]
    assert 0.5 < d.std() < 1.5


def test_renderer_joint_colours_at_joint_pixels():
    kp = np.full((18, 2), np.nan)
    kp[0] = (30, 30)      # nose alone: no limb touches it
    kp[17] = (100, 100)   # l-ear alone
    img = draw_pose(kp, 128, 128)
    assert tuple(img[30, 30]) == (0, 0, 255)          # BGR (255,0,0) -> pure blue in RGB
    assert tuple(img[100, 100]) == (85, 0, 255)       # last palette entry
    assert tuple(img[30, 35]) == (0, 0, 0)            # radius 4: 5 px away is background
    assert tuple(img[30, 34]) == (0, 0, 255)


def test_renderer_limb_between_joints_and_skipped_limbs():
    kp = np.full((18, 2), np.nan)
    kp[1] = (20, 64)   # neck
    kp[2] = (100, 64)  # r-shoulder: limb 1 = (2,3) joins them, colour 0
    img = draw_pose(kp, 128, 128).astype(int)
    mid = img[64, 60]
    # limb colour (255,0,0) BGR blended 0.6 over black -> RGB (0, 0, 153)
    assert tuple(mid) == (0, 0, 153)
    assert tuple(img[64 + 4, 60]) != (0, 0, 0) and tuple(img[64 + 6, 60]) == (0, 0, 0)
    kp[2] = np.nan     # a missing joint: its limb is skipped, the neck circle stays
    img = draw_pose(kp, 128, 128)
    assert img[64, 60].sum() == 0 and tuple(img[64, 20]) == (0, 85, 255)


def test_renderer_draws_a_sample_file_at_the_photo_size(samples_root):
    import cv2
    kp = read_keypoints(samples_root / "pose/MEN/Tees_Tanks/id_00004047/01_1_front.txt")
    img = draw_pose_from_frame(kp, 1101, 750)
    px = frame_to_pixels(kp, 1101, 750)
    # the shoulder-to-shoulder limb (2,6) has colour 1 = BGR (255,85,0); its centre pixel shows it
    a, b = px[1], px[5]
    c = ((a + b) / 2).astype(int)
    expected_rgb = np.array([0, 85, 255]) * 0.6
    assert np.abs(img[c[1], c[0]].astype(float) - expected_rgb).max() <= 60
    assert img.shape == (1101, 750, 3) and img.dtype == np.uint8
    assert cv2.countNonZero(img.sum(2).astype(np.uint8)) > 1000


# ---------------------------------------------------------------------------------------------
# one renderer per keypoint format (src.pose.render)


def _resized(canvas: np.ndarray, draw_size, size):
    """The stage-2 step the per-dataset functions shared: the canvas as an image, resized bicubic
    (``src.util.images.resize``) unless it already is ``size``."""
    from PIL import Image

    from src.util.images import resize

    image = Image.fromarray(canvas)
    return image if tuple(draw_size) == tuple(size) else resize(image, size)


def _wholebody_stick(draw_size):
    from src.pose import wholebody133

    return max(1, round(wholebody133.STICK_WIDTH * draw_size[0] / wholebody133.FRAME_SIZE[0]))


SIZES = [((512, 352), (550, 375)), ((256, 176), (550, 375)), ((128, 88), (256, 176)), ((80, 64), (260, 210)),
         ((64, 48), (64, 48)), ((320, 256), (130, 105))]


def test_each_format_renders_as_the_per_dataset_functions_it_replaced(samples_root, tmp_path):
    """``PoseFormat`` gives the images that deepfashion.py's and phoenix_datasets.py's
    target_pose_image / draw_pose_resized / stage2_pose / drawn_pose gave; those are written out
    here as they were, from the renderers' primitives."""
    from src.data import load_pairs, pose_image_path, pose_path
    from src.pose import wholebody133
    from src.pose.render import OPENPOSE18, WHOLEBODY133, pose_format

    assert pose_format("openpose18") is OPENPOSE18 and pose_format("wholebody133") is WHOLEBODY133
    with pytest.raises(ValueError, match="pose_format='coco17': expected one of openpose18, wholebody133"):
        pose_format("coco17")
    same = lambda a, b: np.array_equal(np.asarray(a), np.asarray(b))  # noqa: E731

    # DeepFashion: 18 points in the annotation frame, on the shared samples
    rel = load_pairs(samples_root, "test_pairs_data.json")[0]["target_image"]
    kp_frame = read_keypoints(pose_path(samples_root, rel))
    for size, draw in SIZES:
        kp_draw = frame_to_pixels(kp_frame, *draw)
        old_draw = _resized(draw_pose(kp_draw, *draw), draw, size)
        assert same(OPENPOSE18.draw(kp_draw, draw, size), old_draw)
        assert same(OPENPOSE18.stage2_pose(kp_frame, size, draw), old_draw)
        assert same(OPENPOSE18.drawn_pose(pose_path(samples_root, rel), size, draw), old_draw)
        no_render = tmp_path / "none.jpg"
        assert same(OPENPOSE18.target_pose_image(no_render, pose_path(samples_root, rel), size),
                    draw_pose_from_frame(kp_frame, *size))
    assert not pose_image_path(samples_root, rel).exists()

    # PHOENIX-2014T: 133 points in pixels of the 260x210 frame, some missing
    rng = np.random.default_rng(1)
    kp = np.stack([rng.uniform(0, 210, 133), rng.uniform(0, 260, 133)], axis=1)
    kp[[5, 40, 120]] = np.nan
    file = tmp_path / "images0001.txt"
    wholebody133.write_keypoints(file, kp)
    kp = wholebody133.read_keypoints(file)
    frame = wholebody133.FRAME_SIZE
    for size, draw in SIZES:
        kp_draw = resize_keypoints(kp, frame, draw)
        old_draw = _resized(wholebody133.draw_pose(kp_draw, *draw, _wholebody_stick(draw)), draw, size)
        assert same(WHOLEBODY133.draw(kp_draw, draw, size), old_draw)
        assert same(WHOLEBODY133.stage2_pose(kp, size, draw), old_draw)
        assert same(WHOLEBODY133.drawn_pose(file, size, draw), old_draw)
        at_photo = wholebody133.draw_pose(resize_keypoints(kp, frame, size), *size, _wholebody_stick(size))
        assert same(WHOLEBODY133.target_pose_image(tmp_path / "none.jpg", file, size), at_photo)
        # a photo of another size than the frame: its own pixels (how stage 2 reads a target)
        np.testing.assert_array_equal(WHOLEBODY133.to_pixels(kp, draw, (130, 105)),
                                      resize_keypoints(kp, (130, 105), draw))


def test_the_pipeline_depends_on_models_and_poses_only():
    """Importing the pipeline imports no dataset module: it finds its renderer in src.pose."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, src.pipeline; print(sorted(m for m in sys.modules if m == 'src.data' "
            "or m.startswith('src.data.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
