"""engine.data.pose: the MediaPipe -> canonical joint mapping, model path resolution (offline included),
and the real PoseLandmarker in VIDEO mode on a real clip."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from engine.data import pose, video
from engine.errors import UserError
from engine.wire.joints import CORE, INDEX, MEDIAPIPE_LANDMARKS, NUM_JOINTS, VISIBLE
from tests.conftest import sample

MP = {n: i for i, n in enumerate(MEDIAPIPE_LANDMARKS)}


def _landmarks(seed=0):
    rng = np.random.default_rng(seed)
    lm = np.zeros((33, 3), np.float32)
    lm[:, :2] = rng.uniform(0, 1, (33, 2))
    lm[:, 2] = rng.uniform(0, 1, 33)
    return lm


def test_from_mediapipe_maps_means_and_min_visibility():
    lm = _landmarks()
    kp = pose.from_mediapipe(lm, 200, 100)
    assert kp.shape == (NUM_JOINTS, 3) and kp.dtype == np.float32
    ls, rs = MP["left_shoulder"], MP["right_shoulder"]
    np.testing.assert_allclose(kp[INDEX["neck"], :2], (lm[ls, :2] + lm[rs, :2]) / 2 * (200, 100), rtol=1e-5)
    assert kp[INDEX["neck"], 2] == pytest.approx(min(lm[ls, 2], lm[rs, 2]))
    np.testing.assert_allclose(kp[INDEX["left_wrist"]], lm[MP["left_wrist"]] * (200, 100, 1), rtol=1e-5)
    np.testing.assert_allclose(kp[INDEX["right_toe"]], lm[MP["right_foot_index"]] * (200, 100, 1), rtol=1e-5)


def test_from_mediapipe_accepts_task_landmark_objects():
    lm = _landmarks(1)
    objects = [SimpleNamespace(x=float(x), y=float(y), z=0.0, visibility=float(v)) for x, y, v in lm]
    np.testing.assert_allclose(pose.from_mediapipe(objects, 64, 32), pose.from_mediapipe(lm, 64, 32), rtol=1e-6)
    with pytest.raises(ValueError):
        pose.from_mediapipe(lm[:30], 64, 32)


def test_resolve_model_order(tmp_path, monkeypatch, pose_model):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(pose.MODEL_ENV, raising=False)
    cached = tmp_path / "cache" / "pix2dance" / "pose_landmarker_lite.task"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert pose.resolve_model() == cached  # the cache, with no option and no variable
    monkeypatch.setenv(pose.MODEL_ENV, str(pose_model))
    assert pose.resolve_model() == pose_model  # the variable beats the cache
    assert pose.resolve_model(cached) == cached  # the option beats the variable
    with pytest.raises(UserError, match="not found.*--pose-model"):
        pose.resolve_model(tmp_path / "nope.task")
    monkeypatch.setenv(pose.MODEL_ENV, str(tmp_path / "gone.task"))
    with pytest.raises(UserError, match=pose.MODEL_ENV):
        pose.resolve_model()


def test_offline_download_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(pose.MODEL_ENV, raising=False)
    start = time.monotonic()
    # .invalid never resolves (RFC 2606): the same failure as being offline, on any machine.
    with pytest.raises(UserError, match="cannot download the pose model.*--pose-model") as e:
        pose.resolve_model(url="https://models.invalid/pose_landmarker_full.task", timeout=3)
    assert time.monotonic() - start < 15
    assert "\n" not in str(e.value)
    cache = tmp_path / "cache" / "pix2dance"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-downloaded


def test_estimator_finds_the_dancer_in_pixels(pose_model):
    path = sample("video/dancer_room.mp4")
    with pose.PoseEstimator(pose_model, num_poses=2) as est:
        found = [est.detect(rgb, t * 1000) for t, rgb in video.sample(path, fps=5)]
    assert est._landmarker is None  # closed on leaving the block
    assert sum(len(p) == 1 for p in found) >= len(found) - 1
    for people in found:
        for kp in people:
            assert kp.shape == (NUM_JOINTS, 3) and kp.dtype == np.float32
            seen = kp[kp[:, 2] >= VISIBLE]
            assert (seen[:, :2] > -5).all() and (seen[:, :2] < 581).all()  # pixels of a 576 x 576 frame
    core = np.array([INDEX[n] for n in CORE])
    assert np.mean([p[0][core, 2].min() >= VISIBLE for p in found if p]) > 0.8
    # standing dancer: ankles below the hips below the shoulders (y down)
    kp = next(p[0] for p in found if p)
    assert kp[INDEX["left_ankle"], 1] > kp[INDEX["left_hip"], 1] > kp[INDEX["left_shoulder"], 1]


def test_timestamps_are_forced_strictly_increasing(pose_model):
    frame = next(video.sample(sample("video/dancer_room.mp4"), fps=1))[1]
    with pose.PoseEstimator(pose_model) as est:
        est.detect(frame, 100.4)
        est.detect(frame, 100.2)  # same integer ms, then going back: MediaPipe would refuse both
        est.detect(frame, 50)
        assert est._last_ms == 102
        assert est.detect(np.zeros((120, 160, 3), np.uint8), 500) == []  # nobody in a black frame
    with pytest.raises(RuntimeError):
        est.detect(frame, 600)


def test_not_a_model_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a MediaPipe pose landmarker model"):
        with pose.PoseEstimator(bad):
            pass
