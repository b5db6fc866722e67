"""Shared test fixtures: paths to the real media in ../shared, and a tiny untrained run.

Data from ../shared is referenced by path (PIX2DANCE_SAMPLES overrides ../shared/data). When it is
missing, tests that need it skip on a developer's machine but fail when CI is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("PIX2DANCE_SAMPLES", ROOT.parent / "shared" / "data"))
MODELS = Path(os.environ.get("PIX2DANCE_MODELS", ROOT.parent / "shared" / "models"))
PYTHON = sys.executable


def need(path: Path) -> Path:
    """The path if it exists; otherwise fail under CI, skip elsewhere."""
    if not path.exists():
        message = f"test data missing: {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def sample(relative: str) -> Path:
    """A file under ../shared/data, e.g. sample('video/dancer_room.mp4')."""
    return need(SAMPLES / relative)


@pytest.fixture(scope="session")
def pose_model() -> Path:
    """The lite MediaPipe pose model (fast enough for tests)."""
    return need(MODELS / "pose_landmarker_lite.task")


@pytest.fixture(scope="session")
def full_pose_model() -> Path:
    return need(MODELS / "pose_landmarker_full.task")


def standing_pose(size: int = 256):
    """A front-facing standing pose, (J, 3) in pixels of a size x size image: a known input."""
    import numpy as np
    from engine.wire.joints import INDEX, NUM_JOINTS
    at = {"nose": (128, 40), "neck": (128, 70), "right_shoulder": (108, 70), "left_shoulder": (148, 70),
          "right_elbow": (100, 100), "left_elbow": (156, 100), "right_wrist": (96, 130), "left_wrist": (160, 130),
          "mid_hip": (128, 140), "right_hip": (118, 140), "left_hip": (138, 140), "right_knee": (118, 180),
          "left_knee": (138, 180), "right_ankle": (118, 220), "left_ankle": (138, 220), "right_eye": (124, 36),
          "left_eye": (132, 36), "right_ear": (120, 38), "left_ear": (136, 38), "right_toe": (114, 228),
          "left_toe": (142, 228), "right_heel": (120, 224), "left_heel": (136, 224)}
    kp = np.ones((NUM_JOINTS, 3), np.float32)
    for name, xy in at.items():
        kp[INDEX[name], :2] = xy
    kp[:, :2] *= size / 256
    return kp


STAGE_SIZE = (320, 240)     # the tiny run's stage: the dancer's own video frame


def make_tiny_run(run_dir: Path, size: int = 64, ngf: int = 8, seed: int = 0, channels: int = 4,
                  temporal: bool = False) -> Path:
    """An untrained 4-channel generator (RGB + alpha) in a valid run directory, with a stage and its plate:
    for serving and rendering plumbing tests. channels=3: a run from before mattes (no stage, no plate).
    temporal: the generator also sees its previous output (engine.model.temporal)."""
    import cv2
    import numpy as np
    import torch
    from dataclasses import asdict
    from engine.data import framing
    from engine.model.networks import Generator
    from engine.model.runs import STAGE_PLATE, save_generator
    from engine.model.temporal import in_channels
    from engine.wire.joints import JOINTS, body_stats
    torch.manual_seed(seed)
    stats = body_stats([standing_pose(256)])
    width, height = STAGE_SIZE
    stage_pose = standing_pose(256) * 0.8 + np.float32([80, 10, 0])       # ~ 120 px tall in 320 x 240
    config = {"size": size, "ngf": ngf, "joints": list(JOINTS), "stats": stats, "stats_size": 256}
    run_dir.mkdir(parents=True, exist_ok=True)
    if channels == 3:
        save_generator(run_dir, Generator(size=size, ngf=ngf), config)
        return run_dir
    config.update(channels=4, stage={"width": width, "height": height, "stats": body_stats([stage_pose])},
                  framing=asdict(framing.DEFAULT), temporal=temporal)
    save_generator(run_dir, Generator(size=size, ngf=ngf, out_channels=4, in_channels=in_channels(temporal)), config)
    plate = np.zeros((height, width, 3), np.uint8)
    plate[:] = (90, 120, 150)
    plate[height // 2:] = (60, 70, 80)                                    # wall and floor
    cv2.imwrite(str(run_dir / STAGE_PLATE), plate)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tiny")
