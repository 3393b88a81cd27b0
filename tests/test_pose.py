
import numpy as np
import pytest

from src import pose as P


def sample_kp():
    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(45, 210, 18), rng.uniform(10, 245, 18)], axis=1)
    kp[[3, 16]] = np.nan
    return kp


def test_parse_and_format_round_trip_keeps_missing():
    kp = sample_kp()
    back = P.parse_keypoints(P.format_keypoints(kp))
    assert np.isnan(back[[3, 16]]).all()
    np.testing.assert_allclose(back[~np.isnan(kp)], kp[~np.isnan(kp)], rtol=1e-5)


def test_parse_rejects_bad_shapes_and_values():
    with pytest.raises(P.PoseFileError, match="17 rows"):
        P.parse_keypoints("1 2\n" * 17, "a.txt")
    with pytest.raises(P.PoseFileError, match="a.txt"):
        P.parse_keypoints("1 2 3\n" * 18, "a.txt")
    with pytest.raises(P.PoseFileError, match="non-finite"):
        P.parse_keypoints("1 2\n" * 17 + "nan 3\n", "a.txt")


def test_frame_check_keeps_margin_points_and_rejects_far_ones():
    kp = np.full((18, 2), 100.0)
    kp[0] = (20.0, 100.0)   # in the 40 px margin
    kp[1] = (256.0, 256.0)  # on the border
    assert P.check_frame(kp) == 2
    kp[2] = (900.0, 10.0)
    with pytest.raises(P.PoseFileError, match="r_shoulder"):
        P.check_frame(kp, "x.txt")


def test_pixel_mapping_of_known_points():
    kp = np.array([[40.0, 0.0], [216.0, 256.0], [128.0, 128.0]] + [[np.nan, np.nan]] * 15)
    px = P.frame_to_pixels(kp, 750, 1101)
    np.testing.assert_allclose(px[0], [0, 0])
    np.testing.assert_allclose(px[1], [750, 1101])
    np.testing.assert_allclose(px[2], [(128 - 40) * 750 / 176, 1101 / 2])
    assert np.isnan(px[3:]).all()
    np.testing.assert_allclose(P.pixels_to_frame(px, 750, 1101)[:3], kp[:3])


def test_flip_twice_is_identity_and_swaps_sides():
    kp = P.frame_to_pixels(sample_kp(), 352, 512)
    once = P.hflip_keypoints(kp, 352)
    np.testing.assert_allclose(once[5], [351 - kp[2, 0], kp[2, 1]])  # l-shoulder <- mirrored r-shoulder
    assert np.isnan(once[6]).all()  # r-elbow (3) was missing -> l-elbow slot after swap
    twice = P.hflip_keypoints(once, 352)
    np.testing.assert_array_equal(np.isnan(twice), np.isnan(kp))
    np.testing.assert_allclose(twice[~np.isnan(kp)], kp[~np.isnan(kp)])


def test_resize_and_jitter_keep_missing():
    kp = sample_kp()
    r = P.resize_keypoints(kp, (1101, 750), (512, 352))
    np.testing.assert_allclose(r[0], kp[0] * [352 / 750, 512 / 1101])
    j = P.jitter_keypoints(kp, 1.0, np.random.default_rng(0))
    assert np.isnan(j[[3, 16]]).all()
    d = (j - kp)[~np.isnan(kp).any(1)]
    assert 0.5 < d.std() < 1.5


def test_renderer_joint_colours_at_joint_pixels():
    kp = np.full((18, 2), np.nan)
    kp[0] = (30, 30)      # nose alone: no limb touches it
    kp[17] = (100, 100)   # l-ear alone
    img = P.draw_pose(kp, 128, 128)
    assert tuple(img[30, 30]) == (0, 0, 255)          # BGR (255,0,0) -> pure blue in RGB
    assert tuple(img[100, 100]) == (85, 0, 255)       # last palette entry
    assert tuple(img[30, 35]) == (0, 0, 0)            # radius 4: 5 px away is background
    assert tuple(img[30, 34]) == (0, 0, 255)


def test_renderer_limb_between_joints_and_skipped_limbs():
    kp = np.full((18, 2), np.nan)
    kp[1] = (20, 64)   # neck
    kp[2] = (100, 64)  # r-shoulder: limb 1 = (2,3) joins them, colour 0
    img = P.draw_pose(kp, 128, 128).astype(int)
    mid = img[64, 60]
    # limb colour (255,0,0) BGR blended 0.6 over black -> RGB (0, 0, 153)
    assert tuple(mid) == (0, 0, 153)
    assert tuple(img[64 + 4, 60]) != (0, 0, 0) and tuple(img[64 + 6, 60]) == (0, 0, 0)
    kp[2] = np.nan     # a missing joint: its limb is skipped, the neck circle stays
    img = P.draw_pose(kp, 128, 128)
    assert img[64, 60].sum() == 0 and tuple(img[64, 20]) == (0, 85, 255)


def test_renderer_on_a_sample_file(samples_root):
    import cv2
    kp = P.read_keypoints(samples_root / "pose/MEN/Tees_Tanks/id_00004047/01_1_front.txt")
    img = P.draw_pose_from_frame(kp, 1101, 750)
    px = P.frame_to_pixels(kp, 750, 1101)
    # the shoulder-to-shoulder limb (2,6) has colour 1 = BGR (255,85,0); its centre pixel shows it
    a, b = px[1], px[5]
    c = ((a + b) / 2).astype(int)
    expected_rgb = np.array([0, 85, 255]) * 0.6
    assert np.abs(img[c[1], c[0]].astype(float) - expected_rgb).max() <= 60
    assert img.shape == (1101, 750, 3) and img.dtype == np.uint8
    assert cv2.countNonZero(img.sum(2).astype(np.uint8)) > 1000
