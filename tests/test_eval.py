"""Evaluation: a trained tiny run on the small real-video dataset gives every field and a playable report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest
import torch

from engine import cli
from engine.model import batches, evaluate, metrics, train
from engine.errors import UserError
from tests.tiny_dataset import tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory, pose_model) -> Path:
    return tiny_dataset(tmp_path_factory, pose_model)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("eval") / "run"
    train.run(train.TrainConfig(steps=60, ngf=8, batch=2, seed=0), data, out, device="cpu", quiet=True,
              checkpoint_every=60, val_every=60)
    torch.set_num_threads(threads)
    return out


def test_eval_writes_every_field_a_video_and_a_report(trained, data, pose_model, tmp_path):
    out = tmp_path / "report"
    result = evaluate.run(trained, data, out, split="val", device="cpu", pose_model=pose_model, quiet=True)
    saved = json.loads((out / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for field in evaluate.FIELDS:
        assert field in saved, field
    n = json.loads((data / "dataset.json").read_text())["counts"]["val"]
    assert saved["frames"] == n and saved["step"] == 60
    for key in ("ssim", "box_ssim"):
        assert -1 <= saved[key] <= 1
    for key in ("psnr", "box_psnr", "l1", "box_l1", "flicker"):
        assert math.isfinite(saved[key]), key
    assert 0 < saved["l1"] < 1 and saved["psnr"] > 5
    assert 0 <= saved["detection_rate"] <= 1
    # an early model: either no person (pose_error null) or a finite distance, never an error
    assert saved["pose_error"] is None or saved["pose_error"] >= 0
    assert (saved["pose_error"] is None) == (saved["detection_rate"] == 0)
    # the detector finds the dancer in the real frames, close to the training keypoints
    assert saved["detection_rate_real"] > 0.5 and saved["pose_error_real"] < 0.3

    cap = cv2.VideoCapture(str(out / "side_by_side.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert ok and frames == n and first.shape[1] == 3 * first.shape[0]      # skeleton | real | generated
    report = (out / "report.md").read_text()
    assert "SSIM" in report and "side_by_side.mp4" in report and f"{saved['ssim']:.4f}" in report
    pictures = sorted(p.name for p in out.glob("samples_*.png"))
    assert pictures and all(name in report for name in pictures)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp folder left


def test_eval_cli_errors_are_one_line(trained, data, tmp_path, capsys):
    code = cli.main(["eval", str(tmp_path / "nope"), "--data", str(data), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and "not a run directory" in capsys.readouterr().err
    code = cli.main(["eval", str(trained), "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and "not a dataset folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_pose_scores_without_any_person_is_null_not_an_error():
    import numpy as np
    from tests.conftest import standing_pose
    targets = np.stack([standing_pose(64)] * 3)
    assert metrics.pose_scores([None, None, None], targets, 30.0) == (None, 0.0)
    error, rate = metrics.pose_scores([targets[0], None, None], targets, 30.0)
    assert error == 0.0 and rate == pytest.approx(1 / 3)


def test_missing_split_is_a_user_error(trained, data, tmp_path, monkeypatch):
    import numpy as np
    empty = torch.zeros(0, 3, 64, 64, dtype=torch.uint8)
    monkeypatch.setattr(batches, "load_split", lambda *a, **k: batches.Split(empty, empty, np.zeros((0, 23, 3), np.float32)))
    with pytest.raises(UserError, match="no val pairs"):
        evaluate.run(trained, data, tmp_path / "r", device="cpu", quiet=True)


def test_demo_and_eval_report_the_same_pose_error_on_the_same_frames(trained, data, pose_model, tmp_path):
    """`pix2dance eval` and the demo's scoring (engine.demo.unseen.score) measure pose error one way.

    The same frames go through both: the run's generated val frames, the real val frames (the
    demo's "true renders") and the val keypoints, at the dataset's fps and body height.
    """
    from engine.demo import unseen
    from engine.model.pix2pix import generate
    from engine.model.runs import load_generator
    code = cli.main(["eval", str(trained), "--data", str(data), "--out", str(tmp_path / "report"),
                     "--device", "cpu", "--pose-model", str(pose_model), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "report" / "eval.json").read_text())

    info = batches.dataset_info(data)
    split = batches.load_split(data, "val", 64)
    G, _ = load_generator(trained)
    hwc = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    generated = hwc(generate(G, split.skeletons, torch.device("cpu")))
    demo = unseen.score(generated, hwc(split.frames), split.keypoints, pose_model, float(info["fps"]),
                        evaluate.body_height_of(info, 64))
    assert demo["pose_error"] == report["pose_error"] and demo["detection_rate"] == report["detection_rate"]
    assert demo["pose_error_true_render"] == report["pose_error_real"] is not None
    assert demo["detection_rate_true_render"] == report["detection_rate_real"]
    assert demo["ssim"] == pytest.approx(report["ssim"]) and demo["l1"] == pytest.approx(report["l1"])
