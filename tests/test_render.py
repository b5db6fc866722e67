"""`pix2dance render` end to end, as a user runs it: a real process per command, outputs read back.

Sources: a CMU BVH from ../shared, a .blend built here with bpy, a real video (lite MediaPipe
model) and a dataset-style .npz; in-process and through a real engine process on loopback. Bad
inputs end with exit status 2, one line, and no output left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import PYTHON, ROOT, STAGE_SIZE, make_tiny_run, sample, standing_pose

W, H = STAGE_SIZE   # the tiny run's stage: its dancer's own video frame


def pix2dance(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([PYTHON, "-m", "engine.cli", "render", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return frames


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit 2; the last thing printed is one line naming the problem; no traceback, no bpy chatter."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("pix2dance render: error: "), result.stderr
    assert fragment in lines[-1], lines[-1]
    assert "Traceback" not in result.stderr + result.stdout
    assert not result.stdout.strip(), result.stdout


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "keypoints.npz"
    kp = np.stack([standing_pose(256) for _ in range(30)])
    kp[:, :, 0] += (np.sin(np.arange(30) / 4) * 20)[:, None]
    np.savez(path, keypoints=kp, size=256, fps=10.0)
    return path


@pytest.fixture(scope="module")
def blend(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("blend") / "rig.blend"
    subprocess.run([PYTHON, "-m", "tests.blend_rig", str(path)], cwd=ROOT, check=True, capture_output=True)
    return path


# --- each source, 20 frames -----------------------------------------------------------------------

def test_render_npz_to_mp4_and_png_frames(tiny_run, npz, tmp_path):
    out = tmp_path / "npz.mp4"
    r = pix2dance(tiny_run, "--motion", npz, "--out", out, "--frames", "5:24", "--png", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    frames = read_video(out)
    assert len(frames) == 20 and frames[0].shape == (H, W, 3)           # "dancer": in her own frame
    pngs = sorted((tmp_path / "npz_frames").glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["000005.png", "000006.png"] and len(pngs) == 20
    assert "wrote 20 frames" in r.stderr and "h264" in r.stderr and "browsers" in r.stderr  # the codec, where it plays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]                  # no temp left


def test_render_bvh_resampled(tiny_run, tmp_path):
    pytest.importorskip("engine.rig.retarget")
    out = tmp_path / "bvh.mp4"
    r = pix2dance(tiny_run, "--motion", sample("mocap/cmu_131_01_dance.bvh"), "--out", out,
                  "--fps", "10", "--frames", "1:20", "--device", "cpu", "--side-by-side")
    assert r.returncode == 0, r.stderr
    frames = read_video(out)
    assert len(frames) == 20 and frames[0].shape == (H, H + W, 3)       # the skeleton panel, then her frame
    skeleton_panel = frames[0][:, :H]
    assert skeleton_panel.max() > 100 and (skeleton_panel.max(axis=2) < 20).mean() > 0.6   # a skeleton on black
    assert "parsing bvh" not in r.stderr + r.stdout                                        # bpy kept quiet


def test_render_blend(tiny_run, blend, tmp_path):
    out = tmp_path / "frames"
    r = pix2dance(tiny_run, "--motion", blend, "--out", out, "--frames", "1:20", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 20 and pngs[0].name == "000001.png"
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (480, 640, 4)   # "source": the camera's frame, RGBA
    assert not (tmp_path / "frames.mp4").exists()


def test_render_video_side_by_side(tiny_run, pose_model, tmp_path):
    out = tmp_path / "video.mp4"
    r = pix2dance(tiny_run, "--motion", sample("video/dancer_room.mp4"), "--out", out, "--frames", "1:20",
                  "--side-by-side", "--pose-model", pose_model, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    frames = read_video(out)
    assert len(frames) == 20 and frames[0].shape == (H, H + W, 3)
    assert frames[0][:, :H].std() > 20             # the source video frame, not a black skeleton panel


# --- through a running engine -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(run: Path, log: Path):
    """A real engine process serving `run` on a free loopback port, ready: yields its address."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    with open(log, "w") as f:
        proc = subprocess.Popen([PYTHON, "-m", "engine.cli", "serve", str(run), "--bind", address, "--device", "cpu"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        from engine.wire.client import Client
        deadline = time.monotonic() + 60
        with Client(address, timeout=2.0) as c:
            while True:
                try:
                    c.ping()
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"engine did not start: {log.read_text()}")
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("served") / "tiny")
    with serving(run, tmp_path_factory.mktemp("log") / "serve.log") as address:
        yield run, address


def test_render_through_the_engine_matches_in_process(engine, npz, tmp_path):
    run, address = engine
    here, there = tmp_path / "here", tmp_path / "there"
    r = pix2dance(run, "--motion", npz, "--out", here, "--frames", "1:20", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = pix2dance(run, "--motion", npz, "--out", there, "--frames", "1:20", "--engine", address, "--side-by-side")
    assert r.returncode == 0, r.stderr
    a, b = sorted(here.glob("*.png")), sorted(there.glob("*.png"))
    assert len(a) == len(b) == 20
    for pa, pb in zip(a[::5], b[::5]):
        local, remote = cv2.imread(str(pa)), cv2.imread(str(pb))
        assert remote.shape == (H, H + W, 3)
        # normalized and framed once, in the engine, exactly as in-process: the same frames
        assert np.abs(local.astype(int) - remote[:, H:].astype(int)).max() <= 2


def test_a_temporal_run_renders_the_same_through_the_engine(npz, tmp_path):
    """A temporal run: the engine carries the sequence across the client's chunks (16 frames each) as
    in-process rendering generates it whole (30 frames: one lane), frame after frame."""
    run = make_tiny_run(tmp_path / "temporal", temporal=True)
    here, there = tmp_path / "here", tmp_path / "there"
    r = pix2dance(run, "--motion", npz, "--out", here, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    with serving(run, tmp_path / "serve.log") as address:
        r = pix2dance(run, "--motion", npz, "--out", there, "--engine", address)
    assert r.returncode == 0, r.stderr
    a, b = sorted(here.glob("*.png")), sorted(there.glob("*.png"))
    assert len(a) == len(b) == 30
    for pa, pb in zip(a, b):
        local, remote = cv2.imread(str(pa), cv2.IMREAD_UNCHANGED), cv2.imread(str(pb), cv2.IMREAD_UNCHANGED)
        # exactly: a chunk started over (even warmed up on its context) would be 1-2 levels off
        np.testing.assert_array_equal(local, remote, err_msg=pa.name)


def test_engine_errors_are_one_line(engine, npz, tmp_path):
    run, address = engine
    r = pix2dance(tmp_path / "nobody", "--motion", npz, "--out", tmp_path / "x.mp4", "--engine", address)
    assert_one_line_error(r, "has no model 'nobody'")
    dead = f"tcp://127.0.0.1:{_free_port()}"
    r = pix2dance(run, "--motion", npz, "--out", tmp_path / "x.mp4", "--engine", dead, "--timeout", "2")
    assert_one_line_error(r, "no reply from the pix2dance engine")
    assert "within 2 s" in r.stderr
    assert not (tmp_path / "x.mp4").exists()


# --- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_exit_2_with_one_line_and_no_output(tiny_run, npz, tmp_path, pose_model):
    out = tmp_path / "out.mp4"
    (tmp_path / "motion.txt").write_text("not a motion")
    assert_one_line_error(pix2dance(tiny_run, "--motion", tmp_path / "motion.txt", "--out", out),
                          "unknown motion file type '.txt'")
    broken = tmp_path / "broken.bvh"
    text = sample("mocap/cmu_skeleton_example.bvh").read_text()
    broken.write_text(text[: len(text) // 2])               # cut mid-motion: Blender would half-import it
    assert_one_line_error(pix2dance(tiny_run, "--motion", broken, "--out", out), "not a valid BVH file")
    assert_one_line_error(pix2dance(tiny_run, "--motion", npz, "--out", out, "--frames", "20:40"),
                          "beyond the end")
    assert_one_line_error(pix2dance(tiny_run, "--motion", tmp_path / "missing.npz", "--out", out), "not found")
    from engine.data.video import write_video
    write_video(tmp_path / "nobody.mp4", (np.full((96, 128, 3), 30, np.uint8) for _ in range(6)), fps=10)
    assert_one_line_error(pix2dance(tiny_run, "--motion", tmp_path / "nobody.mp4", "--out", out,
                                    "--pose-model", pose_model), "no person found")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("missing", ["armature", "camera"])
def test_blend_without_armature_or_camera(tiny_run, tmp_path, missing):
    path = tmp_path / f"no_{missing}.blend"
    subprocess.run([PYTHON, "-m", "tests.blend_rig", str(path), f"--no-{missing}"], cwd=ROOT, check=True,
                   capture_output=True)
    r = pix2dance(tiny_run, "--motion", path, "--out", tmp_path / "out")
    assert_one_line_error(r, f"has no {missing}")
    assert "Info:" not in r.stderr and "Read blend" not in r.stderr + r.stdout    # bpy's chatter stayed out
    assert not (tmp_path / "out").exists()


def test_a_failure_mid_render_leaves_nothing_under_the_final_names(tiny_run, npz, tmp_path, monkeypatch):
    """The generator fails on the third chunk: no mp4, no PNG folder, no temporary files left."""
    from engine import render
    from engine.model.predictor import Predictor
    calls = {"n": 0}
    real = Predictor.generate

    def flaky(self, skeletons):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("GPU fell off the bus")
        return real(self, skeletons)

    monkeypatch.setattr(Predictor, "generate", flaky)
    with pytest.raises(RuntimeError, match="fell off"):
        render.run(tiny_run, npz, tmp_path / "out.mp4", png=True, device="cpu", quiet=True, chunk=4)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []
    # and the same render without the failure writes both, whole
    monkeypatch.setattr(Predictor, "generate", real)
    result = render.run(tiny_run, npz, tmp_path / "out.mp4", png=True, device="cpu", quiet=True, chunk=4)
    assert result.frames == 30 and len(read_video(tmp_path / "out.mp4")) == 30
    assert len(list((tmp_path / "out_frames").glob("*.png"))) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out_frames"]


def test_openvino_on_cuda_is_refused_in_one_line(tiny_run, npz, tmp_path):
    r = pix2dance(tiny_run, "--motion", npz, "--out", tmp_path / "x.mp4", "--backend", "openvino", "--device", "cuda")
    assert_one_line_error(r, "--backend openvino runs on the CPU")
    assert not (tmp_path / "x.mp4").exists()


def test_backends_render_the_same_frames(tiny_run, npz, tmp_path):
    outs = {}
    for backend in ("torch", "openvino"):
        outs[backend] = tmp_path / backend
        r = pix2dance(tiny_run, "--motion", npz, "--out", outs[backend], "--frames", "1:6", "--backend", backend)
        assert r.returncode == 0, r.stderr
    for a, b in zip(sorted(outs["torch"].glob("*.png")), sorted(outs["openvino"].glob("*.png"))):
        assert np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(b))).max() <= 1
