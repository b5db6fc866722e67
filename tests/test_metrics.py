"""Metrics against known values: identical images, analytic SSIM of flat images, PSNR of a known error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model import metrics
from engine.wire.joints import INDEX
from tests.conftest import standing_pose


def images(seed: int = 0, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_identical_images_score_perfectly():
    a = images()
    assert torch.allclose(metrics.ssim(a, a), torch.ones(2), atol=1e-6)
    assert torch.equal(metrics.psnr(a, a), torch.full((2,), metrics.PSNR_CAP))
    assert torch.equal(metrics.l1(a, a), torch.zeros(2))


def test_flat_images_match_the_ssim_formula():
    """Two flat images: variance and covariance vanish, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)."""
    a, b = torch.full((1, 3, 24, 24), 0.2), torch.full((1, 3, 24, 24), 0.6)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert float(metrics.ssim(a, b)) == pytest.approx(expected, rel=1e-5)


def test_psnr_and_l1_of_a_known_error():
    a = torch.zeros(1, 3, 16, 16)
    b = torch.full((1, 3, 16, 16), 0.1)
    assert float(metrics.psnr(a, b)) == pytest.approx(20.0, abs=1e-4)    # MSE 0.01 -> 20 dB
    assert float(metrics.l1(a, b)) == pytest.approx(0.1, abs=1e-6)


def test_more_noise_scores_worse():
    a = images(1, n=1, size=48)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(a.shape, generator=g)
    scores = [(float(metrics.ssim(a, (a + s * noise).clamp(0, 1))), float(metrics.psnr(a, (a + s * noise).clamp(0, 1))))
              for s in (0.02, 0.1, 0.3)]
    ssims, psnrs = zip(*scores)
    assert 1 > ssims[0] > ssims[1] > ssims[2] and 100 > psnrs[0] > psnrs[1] > psnrs[2]
    # SSIM is symmetric and bounded
    b = (a + 0.1 * noise).clamp(0, 1)
    assert float(metrics.ssim(a, b)) == pytest.approx(float(metrics.ssim(b, a)), abs=1e-6)
    assert -1 <= float(metrics.ssim(a, 1 - a)) <= 1


def test_masks_restrict_to_a_region():
    a = torch.zeros(1, 3, 20, 20)
    b = a.clone()
    b[..., :10, :] = 0.5                                           # error only in the top half
    top = torch.zeros(20, 20, dtype=torch.bool)
    top[:10] = True
    assert float(metrics.l1(a, b, top)) == pytest.approx(0.5)
    assert float(metrics.l1(a, b, ~top)) == 0
    assert float(metrics.l1(a, b)) == pytest.approx(0.25)
    assert float(metrics.psnr(a, b, ~top)) == metrics.PSNR_CAP


def test_flicker_measures_frame_to_frame_change_and_skips_clip_breaks():
    frames = torch.zeros(4, 3, 8, 8)
    frames[1] = 0.1
    frames[3] = 0.9                                               # a cut between 2 and 3
    assert metrics.flicker(frames) == pytest.approx((0.1 + 0.1 + 0.9) / 3)
    assert metrics.flicker(frames, np.array([False, False, True])) == pytest.approx(0.1)
    assert metrics.flicker(frames[:1]) == 0.0


def test_pose_distance_is_relative_to_body_height():
    target = standing_pose(256)
    shifted = target.copy()
    shifted[:, 0] += 10
    h = 150.0
    assert metrics.pose_distance(target, target, h) == 0
    assert metrics.pose_distance(shifted, target, h) == pytest.approx(10 / h)
    assert metrics.pose_distance(shifted, target) > 0                 # default height: the target's
    unseen = shifted.copy()
    unseen[:, 2] = 0
    assert metrics.pose_distance(unseen, target, h) is None


def test_keypoint_box_covers_the_dancer_and_stays_in_the_image():
    kp = standing_pose(64)
    x0, y0, x1, y1 = metrics.keypoint_box(kp, 64)
    xs, ys = kp[:, 0], kp[:, 1]
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    kp[INDEX["left_wrist"], 0] = 500                             # a joint outside the image
    assert metrics.keypoint_box(kp, 64)[2] == 64
    kp[:, 2] = 0
    assert metrics.keypoint_box(kp, 64) is None
    assert bool(metrics.box_masks(kp[None], 64).all())           # unseen: the whole image


def test_to_unit_converts_uint8_hwc():
    a = np.zeros((2, 4, 5, 3), np.uint8)
    a[..., 1] = 255
    t = metrics.to_unit(a)
    assert t.shape == (2, 3, 4, 5) and float(t[:, 1].min()) == 1.0 and float(t[:, 0].max()) == 0.0


def test_alpha_iou_thresholds_both_mattes_at_half():
    a = torch.zeros(2, 10, 10)
    b = torch.zeros(2, 10, 10)
    a[0, :, :5] = 0.9                                 # frame 0: left half vs the left 4 columns + a faint rest
    b[0, :, :4] = 0.6
    b[0, :, 4:] = 0.4                                 # below 0.5: not the dancer
    assert metrics.alpha_iou(a, b) == pytest.approx((0.8 + 1.0) / 2)     # frame 1: both empty, they agree
    assert metrics.alpha_iou(np.ones((1, 4, 4)), np.zeros((1, 4, 4))) == 0.0
    with pytest.raises(ValueError):
        metrics.alpha_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def test_box_in_a_wide_frame():
    kp = standing_pose(256)
    kp[:, 0] += 200                                   # in a 480 x 256 frame, right of the square
    box = metrics.keypoint_box(kp, (480, 256))
    assert box is not None and box[2] > 256 and box[3] <= 256
    masks = metrics.box_masks(kp[None], (480, 256))
    assert masks.shape == (1, 256, 480) and masks[0, box[1]:box[3], box[0]:box[2]].all()
