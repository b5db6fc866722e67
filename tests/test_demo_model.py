"""Tests for the committed demo model in assets/demo: it loads, it is small, and it dances.

The model is what `pix2dance serve` serves with no run directory (so the Blender add-on works out
of the box); these tests load it like serving does and render poses with it, directly and through
a real engine server started with no run directory.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from engine.demo.serving import engine_server
from engine.model import runs
from engine.model.predictor import Predictor
from tests.conftest import ROOT, standing_pose

ASSET = ROOT / "assets" / "demo"


def test_demo_model_is_small_fp16_and_documented():
    weights = ASSET / runs.GENERATOR
    assert weights.is_file() and (ASSET / "README.md").is_file()
    assert weights.stat().st_size < 6_000_000
    with safe_open(str(weights), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert dtypes == {"F16"}, dtypes
    config = json.loads((ASSET / runs.CONFIG).read_text())
    assert config["name"] == "demo"
    assert "dataset" not in config          # no path of the machine that trained it


def test_demo_model_loads_and_yields_a_frame():
    generator, config = runs.load_generator(ASSET, "cpu")
    assert not generator.training
    size = int(config["size"])
    predictor = Predictor(ASSET, "cpu")
    # A standing pose from a 256 px source, and the same pose with the arms raised: two frames.
    a = standing_pose(256)
    b = a.copy()
    for wrist, elbow in ((4, 3), (7, 6)):
        b[wrist, 1] -= 100
        b[elbow, 1] -= 50
    frames = predictor.predict(np.stack([a, b]), source_size=(256, 256), mode="frame")
    assert frames.shape == (2, size, size, 3) and frames.dtype == np.uint8
    assert frames.std() > 10                                  # a picture, not a flat colour
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1.0   # it follows the pose


def test_serve_with_no_run_dir_serves_the_demo_model():
    from engine.wire.client import Client
    with engine_server(None, "cpu") as address, Client(address, timeout=30) as client:
        model = client.info()["models"][0]
        assert model["name"] == "demo"
        frames = list(client.render("demo", standing_pose(256)[None], source_size=(256, 256), mode="frame"))
    assert len(frames) == 1 and frames[0].format == "png"
    assert (frames[0].width, frames[0].height) == (model["size"], model["size"])
    assert frames[0].data[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("missing", ["config.json", "generator.safetensors"])
def test_a_broken_copy_is_a_user_error(tmp_path, missing):
    import shutil
    copy = tmp_path / "demo"
    shutil.copytree(ASSET, copy)
    (copy / missing).unlink()
    with pytest.raises(runs.UserError):
        runs.load_generator(copy, "cpu")


def test_demo_model_has_a_matte_and_a_stage():
    config = json.loads((ASSET / runs.CONFIG).read_text())
    assert runs.channels(config) == 4 and (ASSET / runs.STAGE_PLATE).is_file() and (ASSET / runs.REPERTOIRE).is_file()
    predictor = Predictor(ASSET, "cpu", backend="torch")
    out = predictor.render(standing_pose(256)[None], (256, 256), "none", placement="source", alpha=True)
    alpha = out.frames[0, ..., 3]
    assert out.frames.shape == (1, 256, 256, 4) and 0.02 < (alpha > 127).mean() < 0.5   # she, not the room
    hip = standing_pose(256)[8, :2].astype(int)                                         # mid_hip
    assert alpha[hip[1], hip[0]] > 127
