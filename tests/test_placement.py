"""Placement: the predictor puts the generated dancer where her pose is (crop, dancer, source), alpha and all,
in process and through the engine server (protocol v2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.data import framing
from engine.errors import UserError
from engine.model.predictor import Predictor
from engine.model.runs import STAGE_PLATE, save_generator
from engine.wire.joints import JOINTS, body_stats
from tests.conftest import standing_pose

STAGE = (160, 120)          # the dancer's own video frame


def make_matte_run(run_dir, size: int = 64, ngf: int = 8, seed: int = 0):
    """An untrained RGBA generator with a stage (her frame's size and statistics) and a plate."""
    import torch
    from engine.model.networks import Generator
    torch.manual_seed(seed)
    her = standing_pose(256) * np.float32([0.4, 0.4, 1])          # ~80 px tall in her 160 x 120 frame
    her[:, 0] += 30
    stats = body_stats([standing_pose(size)])
    config = {"size": size, "ngf": ngf, "joints": list(JOINTS), "stats": stats, "stats_size": size, "channels": 4,
              "stage": {"width": STAGE[0], "height": STAGE[1], "stats": body_stats([her])}}
    save_generator(run_dir, Generator(size=size, ngf=ngf, out_channels=4), config)
    plate = np.random.default_rng(seed).integers(0, 255, (STAGE[1], STAGE[0], 3), dtype=np.uint8)
    cv2.imwrite(str(run_dir / STAGE_PLATE), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR))
    return run_dir, plate


@pytest.fixture(scope="module")
def matte(tmp_path_factory):
    run, plate = make_matte_run(tmp_path_factory.mktemp("matte") / "anna")
    return Predictor(run, "cpu", backend="torch"), plate


def rig_poses(n: int = 3) -> np.ndarray:
    """A rig's poses in a 640 x 360 render: standing, walking right."""
    kp = np.stack([standing_pose(256) for _ in range(n)])
    kp[:, :, 0] += 200 + 10 * np.arange(n)[:, None]
    kp[:, :, 1] += 40
    return kp


def test_source_placement_puts_the_dancer_where_the_pose_is_at_its_size(matte):
    p, _ = matte
    kp = rig_poses()
    out = p.render(kp, (640, 360), placement="source", alpha=True, fps=24)
    assert out.frames.shape == (3, 360, 640, 4) and out.placements.shape == (3, 2, 3)
    crops = framing.person_crops(kp, 24)
    for frame, place, crop in zip(out.frames, out.placements, crops):
        centre = place @ np.array([32.0, 32.0, 1.0])             # the crop's centre lands on the body's centre
        assert centre == pytest.approx(crop[:2], abs=0.5)
        assert place[0, 0] == pytest.approx(crop[2] / 64)           # at the pose's size
        ys, xs = np.nonzero(frame[..., 3])
        edge = crop[2] / 64 + 1                                     # a crop pixel's footprint, and rounding
        assert xs.min() >= crop[0] - crop[2] / 2 - edge and xs.max() <= crop[0] + crop[2] / 2 + edge
        assert frame[5, 5, 3] == 0                                  # transparent away from the dancer
    rgb = p.render(kp, (640, 360), placement="source", fps=24).frames
    assert rgb.shape == (3, 360, 640, 3) and rgb[:, 5, 5].max() == 0     # composited over black


def test_dancer_placement_is_her_frame_over_her_plate(matte):
    p, plate = matte
    out = p.render(rig_poses(), (640, 360), mode="clip", placement="dancer", background=p.plate)
    assert out.frames.shape == (3, STAGE[1], STAGE[0], 3)
    np.testing.assert_array_equal(p.plate, plate)
    alpha = p.render(rig_poses(), (640, 360), mode="clip", placement="dancer", alpha=True).frames[..., 3]
    outside = alpha == 0
    assert outside.mean() > 0.3 and (alpha > 0).any()
    assert (out.frames[outside] == np.broadcast_to(plate, out.frames.shape)[outside]).all()
    centre = out.placements[:, :, :] @ np.array([32.0, 32.0, 1.0])
    assert (centre[:, 0] > 0).all() and (centre[:, 0] < STAGE[0]).all()    # moved into her frame


def test_crop_placement_and_what_the_run_tells_clients(matte):
    p, _ = matte
    assert p.describe()["alpha"] is True and p.describe()["stage"] == {"width": 160, "height": 120}
    rgba = p.render(rig_poses(2), (640, 360), alpha=True).frames
    assert rgba.shape == (2, 64, 64, 4)
    rgb = p.predict(rig_poses(2), (640, 360))
    expected = (rgba[..., :3].astype(np.float32) * rgba[..., 3:] / 255).round()
    assert np.abs(rgb.astype(int) - expected).max() <= 1             # the bare crop over black
    assert p.render(np.zeros((0, len(JOINTS), 3), np.float32), (640, 360), placement="source").frames.shape \
        == (0, 360, 640, 3)


def test_a_run_without_mattes_gives_only_the_bare_crop(tiny_run):
    p = Predictor(tiny_run, "cpu", backend="torch")
    assert p.describe()["alpha"] is False
    assert p.render(rig_poses(1), (640, 360)).frames.shape == (1, 64, 64, 3)
    with pytest.raises(UserError, match="before mattes"):
        p.render(rig_poses(1), (640, 360), placement="source")
    with pytest.raises(UserError, match="alpha"):
        p.render(rig_poses(1), (640, 360), alpha=True)


def test_the_engine_serves_placed_rgba_frames_with_their_placements(matte):
    from engine.demo.serving import engine_server
    from engine.wire.client import Client
    p, _ = matte
    kp = rig_poses(5)
    expected = p.render(kp, (640, 360), placement="source", alpha=True, fps=24)
    with engine_server(p.run_dir, "cpu") as address, Client(address, timeout=60) as c:
        assert c.info()["models"][0]["alpha"] is True
        frames = list(c.render("anna", kp, source_size=(640, 360), fmt="raw", chunk=5, placement="source",
                               alpha=True, fps=24))
        pngs = list(c.render("anna", kp[:2], source_size=(640, 360), placement="dancer", fps=24))
    assert [(f.width, f.height, f.channels) for f in frames] == [(640, 360, 4)] * 5
    got = np.stack([np.frombuffer(f.data, np.uint8).reshape(360, 640, 4) for f in frames])
    assert np.abs(got.astype(int) - expected.frames).max() <= 1      # the same path as in process (OpenVINO there)
    assert np.allclose([f.placement for f in frames], expected.placements.reshape(5, 6), atol=1e-3)
    dancer = cv2.imdecode(np.frombuffer(pngs[0].data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert dancer.shape == (STAGE[1], STAGE[0], 3) and (pngs[0].width, pngs[0].height) == STAGE
