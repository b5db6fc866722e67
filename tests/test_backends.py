"""Backends: OpenVINO frames agree with torch's, and the IR cache beside the run is reused only when it can be trusted."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.model import backends
from engine.model.predictor import Predictor
from engine.model.runs import GENERATOR
from tests.conftest import make_tiny_run, standing_pose


def poses(n: int) -> np.ndarray:
    kp = np.repeat(standing_pose(256)[None], n, axis=0)
    kp[:, :, 0] += np.linspace(-40, 40, n)[:, None]
    return kp


def cache_files(run) -> list[str]:
    return sorted(p.name for p in (run / backends.CACHE).iterdir())


@pytest.fixture()
def run(tmp_path):
    return make_tiny_run(tmp_path / "tiny", size=64, ngf=8)


def test_openvino_frames_agree_with_torch_within_one_level(run):
    ov = Predictor(run, "cpu", backend="openvino", max_batch=4)
    pt = Predictor(run, "cpu", backend="torch")
    assert ov.describe()["backend"] == "openvino" and pt.describe()["backend"] == "torch"
    kp = poses(7)                              # batches of 4 and 3 (async queue) and single frames (latency)
    a, b = ov.predict(kp, (256, 256)), pt.predict(kp, (256, 256))
    assert a.shape == b.shape == (7, 64, 64, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).max() <= 1
    one = ov.predict(kp[:1], (256, 256))
    assert np.abs(one.astype(int) - b[:1]).max() <= 1


def test_a_frame_does_not_depend_on_the_batch_it_shares(run):
    p = Predictor(run, "cpu", backend="openvino", max_batch=4)
    skeletons = p.skeletons(poses(5), (256, 256))
    batched = p.generate(skeletons)                      # batches of 4 and 1
    alone = np.concatenate([p.generate(s[None]) for s in skeletons])
    np.testing.assert_array_equal(batched, alone)


def test_auto_is_openvino_on_a_cpu_and_openvino_refuses_cuda(run):
    if not torch.cuda.is_available():
        assert backends.resolve_backend("auto", "auto") == ("openvino", torch.device("cpu"))
    assert backends.resolve_backend("auto", "cpu")[0] == "openvino"
    assert backends.resolve_backend("openvino", "auto") == ("openvino", torch.device("cpu"))
    assert backends.resolve_backend("torch", "cpu") == ("torch", torch.device("cpu"))
    with pytest.raises(UserError, match="openvino runs on the CPU"):
        Predictor(run, "cuda", backend="openvino")


def test_the_cache_is_reused_and_rebuilt_when_the_weights_change(run, monkeypatch):
    converted = Predictor(run, "cpu", backend="openvino").predict(poses(3), (256, 256))
    digest = backends.sha256(run / GENERATOR)
    assert cache_files(run) == [f"{digest}.bin", f"{digest}.json", f"{digest}.xml"]
    manifest = json.loads((run / backends.CACHE / f"{digest}.json").read_text())
    assert manifest["weights_sha256"] == digest and manifest["format"] == backends.FORMAT

    def no_conversion(*args):
        raise AssertionError("converted (or even built the torch generator) although the cache was good")
    with monkeypatch.context() as m:
        m.setattr(backends, "convert", no_conversion)
        m.setattr(backends, "load_generator", no_conversion)
        p = Predictor(run, "cpu", backend="openvino")
        np.testing.assert_array_equal(p.predict(poses(3), (256, 256)), converted)   # the very same IR runs

    make_tiny_run(run, size=64, ngf=8, seed=1)                     # retrained: other weights
    new = backends.sha256(run / GENERATOR)
    assert new != digest
    p = Predictor(run, "cpu", backend="openvino")
    assert cache_files(run) == [f"{new}.bin", f"{new}.json", f"{new}.xml"]      # the stale entry is gone
    t = Predictor(run, "cpu", backend="torch")
    assert np.abs(p.predict(poses(2), (256, 256)).astype(int) - t.predict(poses(2), (256, 256))).max() <= 1


@pytest.mark.parametrize("damage", ["truncate_bin", "edit_xml", "other_openvino", "garbage_manifest", "resized_config"])
def test_a_damaged_cache_is_never_trusted(run, damage, caplog):
    reference = Predictor(run, "cpu", backend="torch").predict(poses(2), (256, 256))
    Predictor(run, "cpu", backend="openvino")
    digest = backends.sha256(run / GENERATOR)
    folder = run / backends.CACHE
    if damage == "truncate_bin":
        data = (folder / f"{digest}.bin").read_bytes()
        (folder / f"{digest}.bin").write_bytes(data[:len(data) // 2])
    elif damage == "edit_xml":
        text = (folder / f"{digest}.xml").read_text()
        (folder / f"{digest}.xml").write_text(text.replace("<layers>", "<layers><!-- edited -->", 1))
    elif damage == "other_openvino":
        manifest = json.loads((folder / f"{digest}.json").read_text())
        (folder / f"{digest}.json").write_text(json.dumps({**manifest, "openvino": "0.0.0"}))
    elif damage == "garbage_manifest":
        (folder / f"{digest}.json").write_text("{not json")
    else:                                   # the same weights, but the config now says another size
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "size": 32}))
        with pytest.raises(UserError, match="does not match its config"):
            Predictor(run, "cpu", backend="openvino")
        (run / "config.json").write_text(json.dumps(config))
        manifest = json.loads((folder / f"{digest}.json").read_text())
        (folder / f"{digest}.json").write_text(json.dumps({**manifest, "size": 32}))
    with caplog.at_level(logging.INFO, logger="engine.model.backends"):
        p = Predictor(run, "cpu", backend="openvino")
    assert "converting" in caplog.text
    assert np.abs(p.predict(poses(2), (256, 256)).astype(int) - reference).max() <= 1
    manifest = json.loads((folder / f"{digest}.json").read_text())
    assert manifest["bin_sha256"] == backends.sha256(folder / f"{digest}.bin")
    assert manifest["xml_sha256"] == backends.sha256(folder / f"{digest}.xml")
    assert manifest["openvino"] != "0.0.0"


def test_a_read_only_run_converts_in_memory(run, monkeypatch, caplog):
    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")
    monkeypatch.setattr(backends, "_store", read_only)
    with caplog.at_level(logging.WARNING, logger="engine.model.backends"):
        p = Predictor(run, "cpu", backend="openvino")
    assert "could not cache" in caplog.text
    cached = Predictor(run, "cpu", backend="openvino")          # _store is still off: converted again
    np.testing.assert_array_equal(p.predict(poses(2), (256, 256)), cached.predict(poses(2), (256, 256)))
