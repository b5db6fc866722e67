"""Tests for `pix2dance demo` (engine.demo.pipeline): the whole pipeline end to end in --quick mode, plus its parts.

The end-to-end test runs the real command in a subprocess, as `make demo` does: Blender renders the
synthetic dancer, the dataset is built from its video, a tiny generator trains, a real engine
server starts on a free loopback port, and the unseen dance is rendered through the client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.demo import pipeline as demo
from engine.demo import serving, unseen
from engine.data import video
from engine.errors import UserError
from engine.model import metrics
from engine.wire.joints import NUM_JOINTS
from tests.conftest import ROOT, make_tiny_run, standing_pose


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, pose_model):
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    env = dict(os.environ, PIX2DANCE_POSE_MODEL=str(pose_model), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--quick", "--out", str(out), "--device", "cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return out, proc


def test_quick_demo_end_to_end(quick_demo):
    out, proc = quick_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every output is there, and the summary says where.
    for name in ("side_by_side.mp4", "eval.json", "losses.png", "run/config.json", "run/generator.safetensors",
                 "dataset/dataset.json", "train_clip/clip.mp4", "test_clip/clip.mp4"):
        assert (out / name).is_file(), name
        if "/" not in name:
            assert str(out / name) in proc.stderr + proc.stdout
    # No temporary folder is left beside the output.
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    # Blender's C-side chatter (EGL warnings, "Saved:" lines) is held back.
    assert "EGL" not in proc.stderr and "Saved:" not in proc.stdout


def test_quick_demo_video_and_scores(quick_demo):
    out, proc = quick_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = demo.QUICK
    info = video.probe(out / "side_by_side.mp4")
    assert (info.width, info.height, info.frames) == (3 * s.panel, s.panel, s.test_frames)
    report = json.loads((out / "eval.json").read_text())
    for key in ("ssim", "psnr", "l1", "pose_error", "detection_rate", "flicker", "frames", "alpha_iou"):
        assert key in report, key
    assert report["frames"] == s.test_frames
    assert 0.0 < report["ssim"] < 1.0 and 5.0 < report["psnr"] < 60.0 and 0.0 < report["l1"] < 1.0
    # the dancer comes back with her matte, placed where her skeleton is, over the stage plate
    assert report["placement"] == "source" and report["background"] == "the run's stage plate"
    assert 0.3 < report["alpha_iou"] <= 1.0
    assert (out / "dataset" / "plates" / "000.png").is_file() and (out / "run" / "stage.png").is_file()
    # MediaPipe finds the dancer in the true renders, close to the exact skeleton: the truth is sound.
    assert report["detection_rate_true_render"] >= 0.5
    assert report["pose_error_true_render"] is not None and report["pose_error_true_render"] < 0.2
    assert set(report["seconds"]) >= {"synth", "dataset", "train", "render", "evaluate", "total"}
    losses = cv2.imread(str(out / "losses.png"))
    assert losses is not None and losses.std() > 0


def test_quick_demo_generated_panel_follows_the_skeleton(quick_demo):
    """The generated third of the video is not a constant picture: it changes with the pose."""
    out, proc = quick_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    panel = demo.QUICK.panel
    frames = np.stack([rgb for _, rgb in video.sample(out / "side_by_side.mp4")])
    generated = frames[:, :, 2 * panel:].astype(np.float32)
    assert generated.std(axis=0).mean() > 1.0
    # the dataset used Blender's exact alpha as the dancer's mask
    from engine.data import pairs
    from engine.demo import synth
    masks = pairs.load_masks(out / "dataset", "train")
    assert masks.shape[0] > 0 and set(np.unique(masks)) >= {0, 255}


def test_free_port_is_bindable():
    import socket
    port = serving.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_engine_server_stops_also_on_error(tmp_path):
    run = make_tiny_run(tmp_path / "tiny")
    with pytest.raises(RuntimeError, match="boom"):
        with serving.engine_server(run, "cpu") as address:
            from engine.wire.client import Client
            with Client(address, timeout=10) as c:
                assert c.info()["models"][0]["size"] == 64
            raise RuntimeError("boom")
    # The server is gone: its port is free again.
    import socket
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_engine_server_reports_a_bad_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="engine server stopped"):
        with serving.engine_server(tmp_path / "empty", "cpu"):
            pass


def test_pose_scores():
    kp = np.tile(standing_pose(256)[None], (2, 1, 1))
    # A detection equal to the truth scores 0; no detection in a frame lowers the rate.
    err, rate = metrics.pose_scores([kp[0], None], kp)
    assert err == pytest.approx(0.0) and rate == 0.5
    err, rate = metrics.pose_scores([None, None], kp)
    assert err is None and rate == 0.0


def test_side_by_side_layout():
    n, s = 3, 32
    sk, tr, ge = (np.full((n, s, s, 3), v, np.uint8) for v in (0, 100, 200))
    out = unseen.side_by_side(sk, tr, ge, panel=64)
    assert out.shape == (n, 64, 192, 3)
    # Each panel keeps its own picture (apart from the label in its top-left corner).
    assert out[:, 40:, :64].max() == 0 and (out[:, 40:, 64:128] == 100).all() and (out[:, 40:, 128:] == 200).all()


def test_offline_without_a_pose_model_gives_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PIX2DANCE_POSE_MODEL", str(tmp_path / "missing.task"))
    assert unseen.resolve_pose_model(quiet=True) is None


def test_image_scores_of_identical_frames():
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    kp = np.tile(standing_pose(32)[None], (2, 1, 1))
    assert kp.shape == (2, NUM_JOINTS, 3)
    scores = unseen.image_scores(frames, frames, kp)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-4) and scores["l1"] == 0.0 and scores["psnr"] >= 99
    assert scores["flicker"] == 0.0 and scores["flicker_generated"] == scores["flicker_true"] > 0.1


def test_flicker_is_generated_minus_true():
    """A dancer frozen on her first frame is smoother than life (< 0); one who jitters more flickers (> 0)."""
    rng = np.random.default_rng(1)
    truth = np.repeat(rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8), 4, 0)
    truth[1::2] = 255 - truth[1::2]                                   # every frame changes
    kp = np.tile(standing_pose(32)[None], (4, 1, 1))
    still = np.repeat(truth[:1], 4, 0)                                 # frozen on the first frame
    frozen = unseen.image_scores(still, truth, kp)
    assert frozen["flicker_generated"] == 0.0 and frozen["flicker_true"] > 0.1
    assert frozen["flicker"] == pytest.approx(-frozen["flicker_true"])
    jitter = unseen.image_scores(truth, still, kp)                     # against a true dance that stands still
    assert jitter["flicker_true"] == 0.0 and jitter["flicker"] > 0.1


def test_demo_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...")
    with pytest.raises(UserError, match="did not write"):
        demo.run(precious, quick=True, quiet=True)
    assert (precious / "chapter1.tex").read_text() == "..."
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        demo.run(tmp_path / "file", quick=True, quiet=True)
