"""Tests for engine.data.framing (the person-centred crop) and engine.data.plate (the background plate)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from engine.data import framing
from engine.data.plate import build_plate, spread
from engine.wire.joints import INDEX, body_height
from tests.conftest import standing_pose


def rotated(kp: np.ndarray, degrees: float, about=(128.0, 128.0)) -> np.ndarray:
    out = kp.copy()
    a = np.radians(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out[:, :2] = (kp[:, :2] - about) @ r.T + about
    return out


def test_crop_is_sized_by_the_body_and_centred_on_the_torso():
    kp = standing_pose()
    (cx, cy, side), = framing.person_crops(kp[None])
    assert side == pytest.approx(framing.DEFAULT.side * body_height(kp), rel=1e-5)
    hip, neck = kp[INDEX["mid_hip"], :2], kp[INDEX["neck"], :2]
    assert (cx, cy) == pytest.approx(tuple(hip + framing.DEFAULT.centre_up * (neck - hip)), abs=1e-4)
    in_crop = framing.to_crop(kp[None], np.array([[cx, cy, side]]), 128)[0]
    assert in_crop[:, :2].min() >= 0 and in_crop[:, :2].max() <= 128     # the whole dancer is inside
    extent = in_crop[:, 1].max() - in_crop[:, 1].min()
    # and fills most of the square: nose to toe is 1.28 body heights, 61% of DEFAULT's 2.1
    assert extent > 0.6 * 128


def test_a_run_is_framed_as_it_recorded_and_an_unrecorded_one_as_runs_were_made():
    kp = standing_pose()
    assert framing.Framing.of({"size": 64}) == framing.LEGACY == framing.Framing(1.8, 0.25)   # no "framing"
    recorded = framing.Framing.of({"framing": {"side": 2.5, "centre_up": 0.1}})
    assert recorded == framing.Framing(2.5, 0.1)
    assert framing.Framing.of({"framing": asdict(framing.DEFAULT)}) == framing.DEFAULT        # as dataset.json holds it
    (lx, ly, legacy), = framing.person_crops(kp[None], framing=framing.LEGACY)
    (dx, dy, default), = framing.person_crops(kp[None])
    assert default / legacy == pytest.approx(framing.DEFAULT.side / 1.8, rel=1e-5) and default != legacy
    assert (lx, ly) == pytest.approx((dx, dy))                                          # same centre_up
    (_, ry, rside), = framing.person_crops(kp[None], 10, recorded)
    assert rside == pytest.approx(2.5 * body_height(kp), rel=1e-5)
    hip, neck = kp[INDEX["mid_hip"], 1], kp[INDEX["neck"], 1]
    assert ry == pytest.approx(hip + 0.1 * (neck - hip), abs=1e-3)
    # the same pose lands on different crop pixels: a run framed at 1.8 must be fed 1.8 crops
    in_legacy = framing.to_crop(kp[None], np.array([[lx, ly, legacy]]), 64)[0]
    in_default = framing.to_crop(kp[None], np.array([[dx, dy, default]]), 64)[0]
    assert np.abs(in_legacy[:, 1] - in_default[:, 1]).max() > 3
    with pytest.raises(ValueError, match="positive side"):
        framing.Framing.of({"framing": {"side": 0, "centre_up": 0.25}})


def test_upside_down_and_bigger_dancers_keep_their_framing():
    kp = standing_pose()
    (_, _, side), = framing.person_crops(kp[None])
    (_, _, side_flipped), = framing.person_crops(rotated(kp, 180)[None])
    assert side_flipped == pytest.approx(side, rel=1e-4)                 # a handstand does not shrink her
    big = kp.copy()
    big[:, :2] *= 2
    (_, _, side_big), = framing.person_crops(big[None])
    assert side_big == pytest.approx(2 * side, rel=1e-4)
    # In crop pixels the two sizes draw the same picture.
    small_in = framing.to_crop(kp[None], framing.person_crops(kp[None]), 64)
    big_in = framing.to_crop(big[None], framing.person_crops(big[None]), 64)
    assert np.abs(small_in - big_in).max() < 1e-3


def test_crouching_does_not_change_the_scale_much():
    kp = standing_pose()
    crouch = kp.copy()
    legs = [INDEX[f"{s}_{p}"] for s in ("left", "right") for p in ("knee", "ankle", "toe", "heel")]
    crouch[[j for j in range(len(kp)) if j not in legs], 1] += 50           # hips and all above drop 50 px
    for side, out in (("left", 1), ("right", -1)):                         # thighs forward, shins back down
        hip = crouch[INDEX[f"{side}_hip"], :2]
        knee = hip + (38 * out, 10)
        ankle = knee + (-30 * out, 26)
        crouch[INDEX[f"{side}_knee"], :2] = knee
        for part in ("ankle", "toe", "heel"):
            crouch[INDEX[f"{side}_{part}"], :2] += ankle - kp[INDEX[f"{side}_ankle"], :2]
    (_, _, s_stand), = framing.person_crops(kp[None])
    (_, _, s_crouch), = framing.person_crops(crouch[None])
    box = lambda k: k[:, 1].max() - k[:, 1].min()
    assert box(crouch) < 0.8 * box(kp)                  # a bounding box would shrink
    assert s_crouch > 0.85 * s_stand                    # limb lengths do not


def test_smoothing_steadies_a_jittery_track_and_fills_gaps():
    rng = np.random.default_rng(0)
    track = np.stack([standing_pose() for _ in range(60)])
    track[:, :, :2] += rng.normal(0, 3, (60, 1, 2))                      # MediaPipe-like jitter of the whole body
    track[20, :, 2] = 0                                                  # a frame with no body
    raw = framing.person_crops(track)                                    # no fps: each pose on its own
    smooth = framing.person_crops(track, fps=10)
    assert np.isfinite(smooth).all()
    assert np.diff(smooth[:, 0]).std() < 0.5 * np.diff(raw[:, 0]).std()
    with pytest.raises(ValueError, match="no frame shows"):
        framing.person_crops(np.zeros((3, len(INDEX), 3), np.float32))


def test_placement_inverts_the_crop_and_crop_image_samples_the_right_place():
    crop = np.array([100.0, 80.0, 50.0])
    m, p = framing.crop_matrix(crop, 64), framing.placement(crop, 64)
    pt = np.array([90.0, 70.0, 1.0])
    back = p @ np.append(m @ pt, 1.0)
    assert back == pytest.approx(pt[:2])
    image = np.zeros((120, 160, 3), np.uint8)
    image[70:90, 90:110] = 255                                           # a white square around the centre
    tile = framing.crop_image(image, crop, 64)
    assert tile[32, 32].tolist() == [255, 255, 255] and tile[2, 2].tolist() == [0, 0, 0]
    edge = framing.crop_image(image, np.array([5.0, 5.0, 40.0]), 32)    # half outside the frame: black there
    assert edge[:8, :8].max() == 0


def test_plate_recovers_the_room_behind_a_moving_dancer():
    rng = np.random.default_rng(1)
    room = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    frames, masks = [], []
    for i in range(12):
        f, m = room.copy(), np.zeros((48, 64), np.float32)
        x = 4 + 4 * i
        f[10:40, x:x + 8] = (200, 30, 30)
        m[10:40, x:x + 8] = 1.0
        frames.append(f)
        masks.append(m)
    plate = build_plate(np.stack(frames), np.stack(masks))
    assert plate.image is not None and plate.uncovered == 0
    assert np.abs(plate.image.astype(int) - room).max() <= 1
    assert spread(500, 60).size == 60 and spread(5, 60).tolist() == [0, 1, 2, 3, 4]


def test_a_moving_camera_gets_no_plate():
    rng = np.random.default_rng(2)
    world = rng.integers(0, 255, (48, 200, 3), dtype=np.uint8)
    frames = np.stack([world[:, 6 * i:6 * i + 64] for i in range(12)])        # the camera pans
    masks = np.zeros(frames.shape[:3], np.float32)
    plate = build_plate(frames, masks)
    assert plate.image is None and "moves" in plate.reason


def test_a_placed_crop_lands_where_the_pose_was_and_composites_over_the_plate():
    from engine.model.compose import fit_background, over, place
    crop = np.array([100.0, 60.0, 40.0])                    # a 40 px square around (100, 60) of a 160 x 120 frame
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (255, 0, 0, 255)                     # an opaque red dancer in the middle of the crop
    layer = place(rgba, framing.placement(crop, 32), (160, 120))
    assert layer.shape == (120, 160, 4)
    ys, xs = np.nonzero(layer[..., 3] > 127)
    assert (xs.mean(), ys.mean()) == pytest.approx((100, 60), abs=1.0)
    assert xs.max() - xs.min() + 1 == pytest.approx(20, abs=2)   # 16 of 32 crop px = 20 of 40 frame px
    assert layer[60, 100].tolist() == [255, 0, 0, 255] and layer[5, 5, 3] == 0
    plate = np.full((120, 160, 3), 90, np.uint8)
    rgb = over(layer, plate)
    assert rgb[60, 100].tolist() == [255, 0, 0] and rgb[5, 5].tolist() == [90, 90, 90]
    edge = rgb[60, xs.min() - 1:xs.max() + 2, 0]
    assert edge.min() >= 90                                  # no dark fringe from the transparent black
    assert fit_background(np.zeros((10, 40, 3), np.uint8), (160, 120)).shape == (120, 160, 3)


def test_a_chunk_with_its_context_is_framed_as_the_whole_sequence():
    from engine.wire import protocol
    assert framing.REACH_S <= protocol.CONTEXT_S
    rng = np.random.default_rng(3)
    track = np.stack([standing_pose() for _ in range(200)])
    track[:, :, :2] *= (1 + 0.3 * np.sin(np.arange(200) / 15))[:, None, None]      # she comes and goes
    track[:, :, :2] += rng.normal(0, 2, (200, 1, 2))
    fps, reach = 24.0, int(np.ceil(protocol.CONTEXT_S * 24.0))
    whole = framing.person_crops(track, fps)
    a, b = 80, 96
    part = framing.person_crops(track[a - reach:b + reach], fps)[reach:reach + b - a]
    np.testing.assert_allclose(part, whole[a:b], rtol=1e-5, atol=1e-3)
