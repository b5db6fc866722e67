"""Placement: the predictor puts the generated dancer where her pose is (crop, dancer, source), alpha and all,
in process and through the engine server (protocol v2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.data import framing
from engine.errors import UserError
from engine.model.predictor import Predictor
from engine.model.runs import STAGE_PLATE
from engine.wire.joints import JOINTS
from tests.conftest import STAGE_SIZE, make_tiny_run, standing_pose

STAGE = STAGE_SIZE          # the dancer's own video frame


@pytest.fixture(scope="module")
def matte(tmp_path_factory):
    from engine.data.pairs import read_rgb
    run = make_tiny_run(tmp_path_factory.mktemp("matte") / "anna")
    return Predictor(run, "cpu", backend="torch"), read_rgb(run / STAGE_PLATE)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("old") / "old", channels=3)


def rig_poses(n: int = 3) -> np.ndarray:
    """A rig's poses in a 640 x 360 render: standing, walking right."""
    kp = np.stack([standing_pose(256) for _ in range(n)])
    kp[:, :, 0] += 200 + 10 * np.arange(n)[:, None]
    kp[:, :, 1] += 40
    return kp


def test_source_placement_puts_the_dancer_where_the_pose_is_at_its_size(matte):
    p, _ = matte
    kp = rig_poses()
    out = p.render(kp, (640, 360), placement="source", alpha=True, fps=24)
    assert out.frames.shape == (3, 360, 640, 4) and out.placements.shape == (3, 2, 3)
    crops = framing.person_crops(kp, 24)
    for frame, place, crop in zip(out.frames, out.placements, crops):
        centre = place @ np.array([32.0, 32.0, 1.0])             # the crop's centre lands on the body's centre
        assert centre == pytest.approx(crop[:2], abs=0.5)
        assert place[0, 0] == pytest.approx(crop[2] / 64)           # at the pose's size
        ys, xs = np.nonzero(frame[..., 3])
        edge = crop[2] / 64 + 1                                     # a crop pixel's footprint, and rounding
        assert xs.min() >= crop[0] - crop[2] / 2 - edge and xs.max() <= crop[0] + crop[2] / 2 + edge
        assert frame[5, 5, 3] == 0                                  # transparent away from the dancer
    rgb = p.render(kp, (640, 360), placement="source", fps=24).frames
    assert rgb.shape == (3, 360, 640, 3) and rgb[:, 5, 5].max() == 0     # composited over black


def test_dancer_placement_is_her_frame_over_her_plate(matte):
    p, plate = matte
    out = p.render(rig_poses(), (640, 360), mode="clip", placement="dancer", background=p.plate)
    assert out.frames.shape == (3, STAGE[1], STAGE[0], 3)
    np.testing.assert_array_equal(p.plate, plate)
    alpha = p.render(rig_poses(), (640, 360), mode="clip", placement="dancer", alpha=True).frames[..., 3]
    outside = alpha == 0
    # the crop (2.1 body heights around a dancer 120 px tall) covers most of her 320 x 240 frame, not all
    assert outside.mean() > 0.1 and (alpha > 0).any()
    assert (out.frames[outside] == np.broadcast_to(plate, out.frames.shape)[outside]).all()
    centre = out.placements[:, :, :] @ np.array([32.0, 32.0, 1.0])
    assert (centre[:, 0] > 0).all() and (centre[:, 0] < STAGE[0]).all()    # moved into her frame


def test_crop_placement_and_what_the_run_tells_clients(matte):
    p, _ = matte
    assert p.describe()["alpha"] is True and p.describe()["stage"] == {"width": STAGE[0], "height": STAGE[1]}
    rgba = p.render(rig_poses(2), (640, 360), alpha=True).frames
    assert rgba.shape == (2, 64, 64, 4)
    rgb = p.predict(rig_poses(2), (640, 360))
    expected = (rgba[..., :3].astype(np.float32) * rgba[..., 3:] / 255).round()
    assert np.abs(rgb.astype(int) - expected).max() <= 1             # the bare crop over black
    assert p.render(np.zeros((0, len(JOINTS), 3), np.float32), (640, 360), placement="source").frames.shape \
        == (0, 360, 640, 3)


def test_a_run_without_mattes_gives_only_the_bare_crop(old_run):
    p = Predictor(old_run, "cpu", backend="torch")
    assert p.describe()["alpha"] is False
    assert p.render(rig_poses(1), (640, 360)).frames.shape == (1, 64, 64, 3)
    with pytest.raises(UserError, match="before mattes"):
        p.render(rig_poses(1), (640, 360), placement="source")
    with pytest.raises(UserError, match="alpha"):
        p.render(rig_poses(1), (640, 360), alpha=True)


def test_the_engine_serves_placed_rgba_frames_with_their_placements(matte):
    from engine.demo.serving import engine_server
    from engine.wire.client import Client
    p, _ = matte
    kp = rig_poses(5)
    expected = p.render(kp, (640, 360), placement="source", alpha=True, fps=24)
    with engine_server(p.run_dir, "cpu") as address, Client(address, timeout=60) as c:
        assert c.info()["models"][0]["alpha"] is True
        frames = list(c.render("anna", kp, source_size=(640, 360), fmt="raw", chunk=5, placement="source",
                               alpha=True, fps=24))
        pngs = list(c.render("anna", kp[:2], source_size=(640, 360), placement="dancer", fps=24))
    assert [(f.width, f.height, f.channels) for f in frames] == [(640, 360, 4)] * 5
    got = np.stack([np.frombuffer(f.data, np.uint8).reshape(360, 640, 4) for f in frames])
    assert np.abs(got.astype(int) - expected.frames).max() <= 1      # the same path as in process (OpenVINO there)
    assert np.allclose([f.placement for f in frames], expected.placements.reshape(5, 6), atol=1e-3)
    dancer = cv2.imdecode(np.frombuffer(pngs[0].data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert dancer.shape == (STAGE[1], STAGE[0], 3) and (pngs[0].width, pngs[0].height) == STAGE


# --- pix2dance render: placement, background, RGBA PNGs, the report --------------------------------

@pytest.fixture(scope="module")
def dance(tmp_path_factory):
    path = tmp_path_factory.mktemp("dance") / "keypoints.npz"
    kp = np.stack([standing_pose(256) for _ in range(12)]) * np.float32([0.5, 0.5, 1])   # ~75 px tall
    kp[:, :, 0] += 60 + (np.sin(np.arange(12) / 3) * 20)[:, None]
    kp[:, :, 1] += 60
    np.savez(path, keypoints=kp, size=256, fps=10.0)
    return path


def test_render_puts_her_in_her_frame_over_her_plate_with_rgba_pngs_and_a_report(matte, dance, tmp_path):
    import json
    from engine import render
    p, plate = matte
    out = tmp_path / "dance.mp4"
    result = render.run(p.run_dir, dance, out, png=True, device="cpu", backend="torch", quiet=True,
                        report=tmp_path / "report.json")
    assert (result.width, result.height, result.codec) == (*STAGE, "h264")        # "dancer": her frame
    pngs = sorted((tmp_path / "dance_frames").glob("*.png"))
    assert len(pngs) == 12 and pngs[0].name == "000001.png"
    rgba = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (STAGE[1], STAGE[0], 4) and rgba[..., 3].min() == 0 and rgba[..., 3].max() > 0
    rows = json.loads((tmp_path / "report.json").read_text())
    assert rows["threshold"] is None and [r["frame"] for r in rows["frames"]] == list(range(1, 13))
    assert np.array(rows["frames"][0]["placement"]).shape == (2, 3)
    import av
    with av.open(str(out)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    outside = rgba[..., 3] == 0
    assert np.abs(first[outside].astype(int) - plate[outside]).mean() < 6          # the plate behind her (H.264)


def test_render_background_none_keeps_alpha_in_a_mov_and_a_file_backdrop_fills_the_frame(matte, dance, tmp_path):
    import av
    from engine import render
    p, _ = matte
    render.run(p.run_dir, dance, tmp_path / "alpha.mov", placement="source", background="none", device="cpu",
               backend="torch", quiet=True)
    with av.open(str(tmp_path / "alpha.mov")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "prores" and "a" in stream.codec_context.pix_fmt   # yuva444p10le
        frame = next(container.decode(video=0)).to_ndarray(format="rgba")
    assert frame.shape == (256, 256, 4) and frame[..., 3].min() == 0                 # "source": the npz's 256 px
    wall = np.zeros((30, 40, 3), np.uint8)
    wall[:] = (0, 200, 0)
    cv2.imwrite(str(tmp_path / "wall.png"), cv2.cvtColor(wall, cv2.COLOR_RGB2BGR))
    render.run(p.run_dir, dance, tmp_path / "frames", placement="source", background=str(tmp_path / "wall.png"),
               device="cpu", backend="torch", quiet=True)
    corner = cv2.imread(str(tmp_path / "frames" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert corner.shape[-1] == 4 and corner[0, 0, 3] == 0                            # PNGs: her layer alone


def test_an_engine_serving_a_run_without_mattes_answers_no_alpha(old_run):
    from engine.demo.serving import engine_server
    from engine.wire.client import Client, EngineError
    with engine_server(old_run, "cpu") as address, Client(address, timeout=60) as c:
        for ask in ({"alpha": True}, {"placement": "source"}):
            with pytest.raises(EngineError) as e:
                list(c.render("old", rig_poses(1), source_size=(640, 480), joints=list(JOINTS), **ask))
            assert e.value.code == "no_alpha" and "without a matte" in e.value.message
        assert len(list(c.render("old", rig_poses(2), source_size=(640, 480)))) == 2     # the bare crop still works


def test_render_refuses_a_placement_an_old_run_cannot_give(old_run, dance, tmp_path):
    import subprocess
    from tests.conftest import PYTHON, ROOT
    r = subprocess.run([PYTHON, "-m", "engine.cli", "render", str(old_run), "--motion", str(dance), "--out",
                        str(tmp_path / "x.mp4"), "--placement", "source", "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "before mattes" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_the_report_scores_each_frame_against_the_dancers_repertoire(dance, tmp_path, caplog):
    import json
    from engine import render
    from engine.model.novelty import Repertoire
    run = make_tiny_run(tmp_path / "anna")
    moves = np.load(dance)["keypoints"]
    Repertoire.from_crops(framing.to_crop(moves, framing.person_crops(moves), 64), 64, framing.DEFAULT.side).save(run)
    upside_down = moves.copy()
    upside_down[:, :, :2] = 256 - upside_down[:, :, :2]
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, keypoints=np.concatenate([moves, upside_down]), size=256, fps=10.0)
    with caplog.at_level("WARNING"):
        render.run(run, mixed, tmp_path / "frames", placement="source", device="cpu", backend="torch", quiet=True,
                   report=tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    scores = np.array([r["novelty"] for r in report["frames"]])
    assert (scores[:12] < report["threshold"]).all() and (scores[12:] > report["threshold"]).all()
    assert np.median(scores[:12]) < 0.05           # her own moves: near zero (the turn at frame 12 blurs the crop)
    assert "12 of 24 frames have poses outside the dancer's repertoire" in caplog.text
