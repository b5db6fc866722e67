"""Predictor: a run directory in, keypoints from any source image in, the dancer's frames out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.data import normalize, skeleton
from engine.errors import UserError
from engine.wire.joints import INDEX, JOINTS, ankle_y, body_height, body_stats
from engine.model.predictor import Predictor, sanitize
from tests.conftest import make_tiny_run, standing_pose


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor(tiny_run, "cpu")


@pytest.fixture(scope="module")
def old_predictor(tmp_path_factory):
    """A run from before mattes: the pose normalized into the dancer's square (tests/test_placement.py: the stage)."""
    return Predictor(make_tiny_run(tmp_path_factory.mktemp("old") / "old", channels=3), "cpu")


def source_clip(n: int = 6) -> np.ndarray:
    """Another, taller body (x1.6) standing elsewhere in a 1280 x 720 image, stepping sideways."""
    kp = standing_pose(256) * np.array([1.6, 1.6, 1.0], np.float32) + np.array([500, 250, 0], np.float32)
    clip = np.repeat(kp[None], n, axis=0)
    clip[:, :, 0] += np.linspace(-200, 200, n)[:, None]
    clip[:, INDEX["right_wrist"], 1] -= np.linspace(0, 60, n)     # and raising an arm
    return clip


def test_predict_is_normalize_draw_generate(old_predictor):
    predictor = old_predictor
    kp = source_clip(3)
    frames = predictor.predict(kp, (1280, 720), "frame")
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    moved = normalize.to_dancer(kp, "frame", (1280, 720), predictor.stats, predictor.stats_size, 64)
    drawn = np.stack([skeleton.draw(k, 64) for k in moved])
    np.testing.assert_array_equal(predictor.skeletons(kp, (1280, 720), "frame"), drawn)
    with torch.inference_mode():
        x = torch.from_numpy(drawn).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = predictor.generator(x)
    expected = ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(frames.astype(int) - expected).max() <= 1
    assert len(np.unique(frames.reshape(3, -1), axis=0)) == 3      # distinct poses, distinct frames


def test_batch_size_does_not_change_a_frame(tiny_run):
    kp = source_clip(5)
    one = Predictor(tiny_run, "cpu", max_batch=1).predict(kp, (1280, 720))
    four = Predictor(tiny_run, "cpu", max_batch=4).predict(kp, (1280, 720))
    assert np.abs(one.astype(int) - four).max() <= 1                 # instance norm: per-frame statistics


@pytest.mark.parametrize("mode", ["frame", "clip"])
def test_normalization_matches_the_dancers_feet_and_height(predictor, mode):
    clip = source_clip(6)
    stats = body_stats(clip) if mode == "clip" else None
    out = predictor.normalize(clip, (1280, 720), mode, stats)
    scale = predictor.size / predictor.stats_size
    target = predictor.stats
    assert abs(body_stats(clip)["height"] - target["height"]) > 50                # really another body
    for pose in out:
        assert body_height(pose) == pytest.approx(target["height"] * scale, rel=0.02)
        assert ankle_y(pose) == pytest.approx(target["ankle_y"] * scale, abs=0.5)
    if mode == "clip":          # one transform for the clip: the sideways step survives, scaled
        xs = out[:, INDEX["mid_hip"], 0]
        assert xs[-1] - xs[0] == pytest.approx(400 * target["height"] / body_stats(clip)["height"] * scale, rel=0.02)
    else:                       # each pose alone: every frame is centred on the dancer
        np.testing.assert_allclose(out[:, INDEX["mid_hip"], 0], target["center_x"] * scale, atol=0.5)


def test_mode_none_leaves_keypoints_as_they_are(predictor):
    kp = source_clip(2) * np.array([0.1, 0.1, 1.0], np.float32)     # already in a 64 px dancer space
    out = predictor.normalize(kp, (64, 64), "none")
    np.testing.assert_array_equal(out, kp)
    half = predictor.normalize(kp * np.array([2, 2, 1], np.float32), (128, 128), "none")
    np.testing.assert_allclose(half, kp, atol=1e-5)                  # only the image size is rescaled


def test_garbage_keypoints_become_unseen_joints(predictor):
    kp = source_clip(1)
    kp[0, INDEX["nose"]] = (np.nan, 3, 1)
    kp[0, INDEX["left_wrist"]] = (1e30, -1e30, 1)
    kp[0, INDEX["right_wrist"]] = (np.inf, 10, 1)
    clean = sanitize(kp)
    for name in ("nose", "left_wrist", "right_wrist"):
        assert tuple(clean[0, INDEX[name]]) == (0, 0, 0)
    assert np.isfinite(predictor.normalize(kp, (1280, 720))).all()
    assert predictor.predict(kp, (1280, 720)).shape == (1, 64, 64, 3)
    everything_wrong = np.full((2, len(JOINTS), 3), np.nan, np.float32)
    assert predictor.predict(everything_wrong, (100, 100)).shape == (2, 64, 64, 3)


def test_bad_shapes_and_modes_are_value_errors(predictor):
    with pytest.raises(ValueError):
        predictor.predict(np.zeros((2, 5, 3), np.float32), (64, 64))
    with pytest.raises(ValueError):
        predictor.predict(source_clip(1), (64, 64), mode="sideways")
    with pytest.raises(ValueError):
        predictor.generate(np.zeros((1, 32, 32, 3), np.uint8))
    assert predictor.predict(np.zeros((0, len(JOINTS), 3), np.float32), (64, 64)).shape == (0, 64, 64, 3)


def test_name_is_the_folder_unless_config_names_it(tmp_path):
    run = make_tiny_run(tmp_path / "anna", size=32)
    p = Predictor(run, "cpu")
    assert (p.name, p.size, p.describe()["precision"], p.describe()["joints"]) == ("anna", 32, "fp32", list(JOINTS))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "name": "Anna B."}))
    assert Predictor(run, "cpu").name == "Anna B."


def test_devices(tmp_path):
    with pytest.raises(UserError):
        Predictor(tmp_path / "missing", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="cuda"):
            Predictor(make_tiny_run(tmp_path / "r", size=32), "cuda")
