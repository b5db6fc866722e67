"""Evaluation: a trained tiny run on the small real-video dataset, rendered by self-reenactment in the
source frame, gives every field, the plate's scores beside them, the frames as PNGs and a playable report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine import cli
from engine.data import pairs
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
    result = evaluate.run(trained, data, out, split="val", device="cpu", pose_model=pose_model, quiet=True,
                          backend="torch")
    saved = json.loads((out / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for field in evaluate.FIELDS:
        assert field in saved, field
        if field != "frames":
            assert field in saved["plate"], field                            # the empty plate, scored alike
    info = json.loads((data / "dataset.json").read_text())
    n = info["counts"]["val"]
    assert saved["frames"] == n and saved["step"] == 60
    assert (trained / "repertoire.npz").is_file() and saved["novelty"]["frames"] == n    # every frame scored
    assert saved["novelty"]["spearman_box_l1"] is None or -1 <= saved["novelty"]["spearman_box_l1"] <= 1
    src = info["sources"][0]
    assert saved["source"] == {"video": src["video"], "width": src["width"], "height": src["height"], "background": "plate"}
    assert saved["placement"] == "source" and saved["normalization"] == "none"
    assert 0 <= saved["alpha_iou"] <= 1 and saved["plate"]["alpha_iou"] == 0
    assert saved["beats_plate"] == (saved["box_ssim"] > saved["plate"]["box_ssim"])
    # the composites, at the source resolution, named by their frame in the decoded video
    rows = pairs.load_rows(data, "val")
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in sorted(rows["frame_index"])]
    first = cv2.imread(str(out / "frames" / f"{rows['frame_index'][0]:06d}.png"))
    assert first.shape == (src["height"], src["width"], 3)
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
    assert ok and frames == n and first.shape[1] == 2 * first.shape[0]      # real | generated (576 x 576 each)
    report = (out / "report.md").read_text()
    assert "SSIM" in report and "side_by_side.mp4" in report and f"{saved['ssim']:.4f}" in report
    assert f"{saved['plate']['box_ssim']:.4f}" in report
    assert ("beats the empty plate" in report) == saved["beats_plate"]
    assert ("does not beat the empty plate" in report) == (not saved["beats_plate"])
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
    real = batches.dataset_info
    monkeypatch.setattr(batches, "dataset_info", lambda root: {**real(root), "counts": {"train": 5, "val": 0}})
    with pytest.raises(UserError, match="no val pairs"):
        evaluate.run(trained, data, tmp_path / "r", device="cpu", quiet=True, backend="torch")


def test_a_run_from_before_mattes_is_refused(data, tmp_path):
    from tests.conftest import make_tiny_run
    old = make_tiny_run(tmp_path / "old", channels=3)
    with pytest.raises(UserError, match="before mattes"):
        evaluate.run(old, data, tmp_path / "r", device="cpu", quiet=True, backend="torch")
    assert not (tmp_path / "r").exists()


def test_demo_and_eval_report_the_same_pose_error_on_the_same_frames(trained, data, pose_model, tmp_path):
    """`pix2dance eval` and the demo's scoring (engine.demo.unseen.score) measure pose error one way.

    The same frames go through both: the composites eval wrote, the real held-out frames at the
    source resolution (the demo's "true renders") and the source keypoints, at the dataset's fps
    and the clip's body height.
    """
    import numpy as np

    from engine.data import video
    from engine.demo import unseen
    from engine.wire.joints import body_stats
    code = cli.main(["eval", str(trained), "--data", str(data), "--out", str(tmp_path / "report"),
                     "--device", "cpu", "--pose-model", str(pose_model), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "report" / "eval.json").read_text())

    info = batches.dataset_info(data)
    rows = pairs.load_rows(data, "val")
    generated = np.stack([pairs.read_rgb(tmp_path / "report" / "frames" / f"{i:06d}.png") for i in rows["frame_index"]])
    wanted = set(rows["frame_index"].tolist())
    real = np.stack([cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB) for f in video.frames(info["sources"][0]["video"], info["fps"])
                     if f.index in wanted])
    kp = rows["source_keypoints"]
    demo = unseen.score(generated, real, kp, pose_model, float(info["fps"]), body_stats(list(kp))["height"])
    assert demo["pose_error"] == pytest.approx(report["pose_error"]) and demo["detection_rate"] == report["detection_rate"]
    assert demo["pose_error_true_render"] == pytest.approx(report["pose_error_real"])
    assert report["pose_error_real"] is not None
    assert demo["detection_rate_true_render"] == report["detection_rate_real"]
    assert demo["ssim"] == pytest.approx(report["ssim"]) and demo["l1"] == pytest.approx(report["l1"])


def test_novelty_is_correlated_with_the_error_by_rank():
    novelty = np.array([0.1, 0.5, np.nan, 0.3, 0.9])
    worse = evaluate.novelty_vs_error(novelty, np.array([0.01, 0.05, 0.2, 0.03, 0.2]))
    assert worse == {"spearman_box_l1": 1.0, "mean": 0.45, "frames": 4}
    assert evaluate.novelty_vs_error(np.full(5, np.nan), np.zeros(5)) is None
