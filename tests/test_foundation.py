"""The canonical skeleton, drawing, normalization and the run format: the one source every side uses."""

import numpy as np
import pytest

from engine.wire import joints
from engine.data import normalize, skeleton
from engine.errors import UserError
from engine.model.runs import GENERATOR, load_generator
from tests.conftest import make_tiny_run, standing_pose


def test_joint_tables_are_consistent():
    assert len(set(joints.JOINTS)) == joints.NUM_JOINTS
    assert all(a in joints.INDEX and b in joints.INDEX for a, b, _ in joints.BONES)
    assert [joints.JOINTS[i] for i in joints.MIRROR] == [joints.mirror_name(n) for n in joints.JOINTS]
    assert len(joints.FROM_MEDIAPIPE) == joints.NUM_JOINTS
    # left and right limbs never share a colour
    left = {c for a, b, c in joints.BONES if "left" in b}
    right = {c for a, b, c in joints.BONES if "right" in b}
    assert not left & right


def test_draw_puts_wrists_and_ankles_where_they_are():
    kp = standing_pose(256)
    image = skeleton.draw(kp, 256)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    for name in ("left_wrist", "right_wrist", "left_ankle", "right_ankle"):
        x, y = kp[joints.INDEX[name], :2].astype(int)
        assert image[y, x].max() > 100, name
    assert image[5, 5].max() == 0


def test_facing_survives_rotation_and_hides_the_back_face():
    front = standing_pose(256)
    back = front.copy()
    back[:, 0] = 256 - back[:, 0]                      # seen from behind: left and right swap sides
    upside_down = front.copy()
    upside_down[:, :2] = 256 - upside_down[:, :2]      # rotated 180 degrees in the image plane
    assert skeleton.facing(front) > 0.9 and skeleton.facing(upside_down) > 0.9
    assert skeleton.facing(back) < -0.9
    nose = tuple(back[joints.INDEX["nose"], :2].astype(int))
    assert skeleton.draw(front, 256)[40, 128].max() > 0
    assert skeleton.draw(back, 256)[nose[1] - 4, nose[0]].max() == 0   # no face drawn on a back view


def test_invisible_joints_are_not_drawn():
    kp = standing_pose(256)
    kp[:, 2] = 0
    assert skeleton.draw(kp, 256).max() == 0


@pytest.mark.parametrize("mode", ["frame", "clip"])
def test_normalization_matches_feet_and_height(mode):
    target = standing_pose(256)
    stats = joints.body_stats([target])
    source = target.copy()
    source[:, :2] = source[:, :2] * 1.7 + (40, -30)   # a taller body elsewhere in a bigger image
    src_stats = joints.body_stats([source]) if mode == "clip" else None
    out = normalize.to_dancer(source[None], mode, (640, 480), stats, 256, 64, src_stats)[0]
    np.testing.assert_allclose(out[:, :2], target[:, :2] * 64 / 256, atol=1e-3)


def test_normalization_none_only_rescales():
    kp = standing_pose(128)
    out = normalize.to_dancer(kp[None], "none", (128, 128), {}, 256, 64)[0]
    np.testing.assert_allclose(out[:, :2], kp[:, :2] / 2)


def test_smoothing_cuts_jitter_without_lag():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    clean = np.zeros((200, joints.NUM_JOINTS, 3), np.float32)
    clean[..., 0] = (100 + 40 * np.sin(2 * np.pi * 0.8 * t))[:, None]
    clean[..., 1] = (120 + 30 * np.cos(2 * np.pi * 0.5 * t))[:, None]
    clean[..., 2] = 1
    noisy = clean.copy()
    noisy[..., :2] += rng.normal(0, 3, noisy[..., :2].shape)
    smoothed = normalize.smooth(noisy, fps=30)
    err = lambda a: np.abs(a[..., :2] - clean[..., :2]).mean()  # noqa: E731
    assert err(smoothed) < 0.5 * err(noisy)
    # no lag: the best alignment of the smoothed track with the clean one is at zero shift
    x, c = smoothed[:, 0, 0] - 100, clean[:, 0, 0] - 100
    shifts = {s: np.abs(np.roll(x, s)[10:-10] - c[10:-10]).mean() for s in range(-3, 4)}
    assert min(shifts, key=shifts.get) in (-1, 0, 1)


def test_run_round_trip_and_bad_checkpoints(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    generator, config = load_generator(run)
    assert config["size"] == 64 and not generator.training
    (run / GENERATOR).write_bytes((run / GENERATOR).read_bytes()[:200])      # truncated
    with pytest.raises(UserError, match="safetensors"):
        load_generator(run)
    (run / GENERATOR).write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError):
        load_generator(run)
    with pytest.raises(UserError, match="not a run directory"):
        load_generator(tmp_path / "nowhere")


def test_quiet_fds_holds_c_level_output_and_logs_it(capfd, caplog):
    import logging
    import os
    from engine.quiet import quiet_fds
    with caplog.at_level(logging.DEBUG, logger="engine.quiet"):
        with quiet_fds(what="libfoo") as held:
            os.write(1, b"from C on fd 1\n")
            os.write(2, b"from C on fd 2\n")
            print("from Python")
            held.terminal.write("a progress bar\n")
            assert "from C on fd 2" in held.text()
    out, err = capfd.readouterr()
    assert "from C" not in out + err and "from Python" not in out + err
    assert "a progress bar" in err
    assert "libfoo said" in caplog.text and "from C on fd 1" in caplog.text
    with quiet_fds(verbose=True):
        os.write(1, b"shown\n")
    assert "shown" in capfd.readouterr().out


def test_quiet_fds_replays_the_tail_when_the_block_fails(capfd, caplog):
    import os
    from engine.quiet import quiet_fds
    with pytest.raises(RuntimeError), quiet_fds(what="Blender", replay_on_error=True):
        os.write(2, b"why it failed\n")
        raise RuntimeError("render failed")
    assert "why it failed" not in capfd.readouterr().err
    assert any(r.levelname == "ERROR" and "why it failed" in r.getMessage() for r in caplog.records)
