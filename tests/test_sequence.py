"""Sequential (temporal) inference: lanes and warm-up, Predictor.render against frames generated one by
one by hand, continuing from a previous request, and the in-process `render` command on a temporal run.

Tiny untrained runs (64 px, ngf 8) on the default CPU backend (OpenVINO: a frame never depends on the
batch it shares, so sequential and batched frames are compared exactly).
"""

from __future__ import annotations

import os
import subprocess

import cv2
import numpy as np
import pytest

from engine.model.predictor import Framed, Predictor
from engine.model.sequence import MIN_LANE, Previous, Sequence, lane_count
from engine.model.temporal import WARMUP, condition_uint8
from engine.wire.joints import NUM_JOINTS
from tests.conftest import PYTHON, ROOT, make_tiny_run, standing_pose

SOURCE = (1280, 720)


def dance(n: int) -> np.ndarray:
    """(n, J, 3) keypoints of a body stepping side to side and raising an arm in a 1280 x 720 image."""
    kp = np.repeat((standing_pose(256) * np.float32([1.6, 1.6, 1]) + np.float32([500, 250, 0]))[None], n, axis=0)
    t = np.arange(n, dtype=np.float32)
    kp[:, :, 0] += (np.sin(t / 5) * 150)[:, None]
    kp[:, 6, 1] -= np.abs(np.sin(t / 3)) * 60
    return kp


@pytest.fixture(scope="module")
def temporal_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("temporal") / "run", temporal=True)


@pytest.fixture(scope="module")
def temporal(temporal_run):
    return Predictor(temporal_run, "cpu")


def by_hand(predictor: Predictor, framed: Framed, begin: int, stop: int, previous: Previous | None = None):
    """Frames [begin, stop) generated strictly one by one, each conditioned on the one before
    (condition_uint8), starting cold or from `previous`: {index: crop}."""
    out = {}
    rgba, crop = (None, None) if previous is None else (previous.rgba[None], previous.crop[None])
    for i in range(begin, stop):
        x = condition_uint8(framed.skeletons(i, i + 1), rgba, crop, framed.crops[i:i + 1])
        rgba, crop = predictor.generate(x), framed.crops[i:i + 1]
        out[i] = rgba[0]
    return out


def run_all(predictor: Predictor, sequence: Sequence) -> dict[int, np.ndarray]:
    out = {}
    for kept in predictor.generate_sequence(sequence):
        for k, crop in kept:
            assert k not in out
            out[k] = crop
    return out


# --- the schedule -------------------------------------------------------------------------------

def test_lane_count():
    assert lane_count(1000, 16, temporal=False) == 1
    assert lane_count(MIN_LANE - 1, 16, temporal=True) == 1
    assert lane_count(5 * MIN_LANE + 3, 16, temporal=True) == 5
    assert lane_count(1000, 4, temporal=True) == 4


def test_lanes_warm_up_on_the_frames_before_them_and_drop_them():
    framed = Framed(np.zeros((40, NUM_JOINTS, 3), np.float32), np.tile(np.float32([32, 32, 64]), (40, 1)), None, 16)
    seq = Sequence(framed, 8, 24, temporal=True, lanes=3, warmup=4)       # lanes [8, 16), [16, 24), [24, 32)
    batches, kept = [], []
    while not seq.done:
        indices = seq.take(8)
        assert seq.take(8) == []                          # every lane waits for its frame to be fed
        inputs = seq.inputs(indices)
        assert inputs.shape == (len(indices), 16, 16, 7)
        batches.append(indices)
        kept += seq.feed(indices, np.full((len(indices), 16, 16, 4), len(batches), np.uint8))
    # each batch advances every lane by one frame, each lane from WARMUP frames before its start
    assert batches[0] == [4, 12, 20] and batches[1] == [5, 13, 21] and batches[-1] == [15, 23, 31]
    assert len(batches) == 12 and sum(map(len, batches)) == 24 + 3 * 4
    assert sorted(k for k, _ in kept) == list(range(24))          # every kept frame once, warm-up never
    assert {k: int(o[0, 0, 0]) for k, o in kept}[0] == 5          # frame 8 is the lane's 5th: after 4 warm-up
    assert seq.last is not None and int(seq.last.rgba[0, 0, 0]) == 12 and not seq.warm

    # fewer frames before `first` than warmup: fewer warm-up frames; room: earlier lanes first
    seq = Sequence(framed, 2, 20, temporal=True, lanes=2, warmup=4)
    assert seq.take(1) == [0] and seq.take(5) == [8]
    with pytest.raises(ValueError, match="not taken"):
        seq.feed([3], np.zeros((1, 16, 16, 4), np.uint8))

    # a lane's warm-up generates frames the lane before keeps: here both generate frame 4 in one batch,
    # lane 0 from its frame 3 (kept), lane 1 cold (its first warm-up frame, dropped)
    seq = Sequence(framed, 4, 8, temporal=True, lanes=2, warmup=4)      # lanes [4, 8) from 0, [8, 12) from 4
    for i in range(4):
        assert seq.take(1) == [i]
        seq.inputs([i])
        assert seq.feed([i], np.full((1, 16, 16, 4), 9, np.uint8)) == []
    assert seq.take(2) == [4, 4]
    inputs = seq.inputs([4, 4])
    assert inputs[0, ..., 3:].max() == 9 and inputs[1, ..., 3:].max() == 0       # warm, then cold (BLANK)
    kept = seq.feed([4, 4], np.stack([np.full((16, 16, 4), v, np.uint8) for v in (1, 2)]))
    assert [(k, int(o[0, 0, 0])) for k, o in kept] == [(0, 1)]
    assert seq.take(2) == [5, 5]

    # non-temporal: in order, any number at a time, nothing dropped, 3 channels
    seq = Sequence(framed, 8, 24, temporal=False, lanes=3)
    assert seq.take(5) == [8, 9, 10, 11, 12] and seq.take(30) == list(range(13, 32)) and seq.take(4) == []
    assert not seq.done                                           # taken, not fed
    assert seq.inputs([8, 9, 10]).shape == (3, 16, 16, 3)


# --- against frames generated by hand -----------------------------------------------------------

def test_temporal_render_is_frame_after_frame(temporal):
    kp = dance(24)
    framed = temporal.frame(kp, SOURCE, placement="crop")
    rendered = temporal.render(kp, SOURCE, placement="crop", alpha=True)     # 24 frames: one lane, no warm-up
    hand = by_hand(temporal, framed, 0, 24)
    np.testing.assert_array_equal(rendered.frames, np.stack([hand[i] for i in range(24)]))
    cold = temporal.generate(condition_uint8(framed.skeletons(), None, None, None))
    assert np.abs(cold[5:].astype(int) - rendered.frames[5:]).max() > 0    # the previous frame matters


def test_a_later_lane_starts_as_from_its_warm_up(temporal):
    kp = dance(40)
    framed = temporal.frame(kp, SOURCE, placement="crop")
    seq = temporal.sequence(framed, lanes=2)
    assert seq.lanes == 2 and temporal.max_batch >= 2
    out = run_all(temporal, seq)
    assert sorted(out) == list(range(40))
    np.testing.assert_array_equal(out[0], by_hand(temporal, framed, 0, 1)[0])       # lane 0: cold at frame 0
    hand = by_hand(temporal, framed, 20 - WARMUP, 22)                               # lane 1: frames 20..39
    np.testing.assert_array_equal(out[20], hand[20])
    np.testing.assert_array_equal(out[21], hand[21])
    # lanes change only the warm-up: one lane's frame 20 is conditioned on its real 19, not a warm-up
    one = run_all(temporal, temporal.sequence(framed, lanes=1))
    np.testing.assert_array_equal(one[19], out[19])


def test_a_non_temporal_run_renders_as_before(tiny_run):
    predictor = Predictor(tiny_run, "cpu")
    assert not predictor.temporal and predictor.in_channels == 3
    kp = dance(11)
    framed = predictor.frame(kp, SOURCE, placement="crop")
    rendered = predictor.render(kp, SOURCE, placement="crop", alpha=True)
    np.testing.assert_array_equal(rendered.frames, predictor.generate(framed.skeletons()))


def test_previous_conditions_the_first_frame_and_last_is_the_last(temporal):
    kp = dance(20)
    framed = temporal.frame(kp, SOURCE, placement="crop")
    head = temporal.sequence(framed, 0, 8)
    first = run_all(temporal, head)
    assert head.last is not None
    np.testing.assert_array_equal(head.last.rgba, first[7])
    np.testing.assert_array_equal(head.last.crop, framed.crops[7])
    # the next request of the same sequence continues from it: as one sequence, no warm-up
    tail = temporal.sequence(framed, 8, 12, previous=head.last)
    assert tail.warm
    rest = run_all(temporal, tail)
    whole = by_hand(temporal, framed, 0, 20)
    for k in range(12):
        np.testing.assert_array_equal(rest[k], whole[8 + k])
    np.testing.assert_array_equal(tail.last.rgba, whole[19])
    # started cold at the same frame (no context before it): frame 8 differs
    cold = run_all(temporal, temporal.sequence(framed.part(8, 20), 0, 12))
    assert np.abs(cold[0].astype(int) - rest[0]).max() > 0


# --- the render command -------------------------------------------------------------------------

def test_render_buffers_at_most_a_batch_of_lanes(temporal, monkeypatch):
    """In-process render: chunks in frame order, equal to the Sequence's frames, and the frames waiting
    for an earlier lane stay under max_batch lanes' worth however long the motion."""
    from engine import render
    n = 300
    framed = temporal.frame(dance(n), SOURCE, placement="crop")
    fed, waiting = [0], []
    real = Predictor.generate_sequence

    def counting(self, sequence):
        for kept in real(self, sequence):
            fed[0] += len(kept)
            yield kept

    monkeypatch.setattr(Predictor, "generate_sequence", counting)
    frames, done = [], 0
    for start, crops in render._generated(temporal, framed, 4):
        assert start == done
        waiting.append(fed[0] - done)
        done += len(crops)
        frames.append(crops)
    assert done == n
    lanes = n // render.LANE
    assert max(waiting) <= temporal.max_batch * (n // lanes + 1) and max(waiting) < n // 2, (lanes, max(waiting))
    expected = run_all(temporal, temporal.sequence(framed, lanes=lanes))
    np.testing.assert_array_equal(np.concatenate(frames), np.stack([expected[k] for k in range(n)]))


def test_render_command_on_a_temporal_run(temporal_run, temporal, tmp_path):
    kp = dance(70)
    np.savez(tmp_path / "motion.npz", keypoints=kp, size=np.int32(SOURCE), fps=10.0)
    out = tmp_path / "frames"
    r = subprocess.run([PYTHON, "-m", "engine.cli", "render", str(temporal_run), "--motion", str(tmp_path / "motion.npz"),
                        "--out", str(out), "--placement", "crop", "--device", "cpu"], cwd=ROOT,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["000001.png", "000002.png"] and len(pngs) == 70
    from engine import motion
    m = motion.load(tmp_path / "motion.npz")
    assert lane_count(70, temporal.max_batch, True) > 1            # several lanes, finishing out of order
    expected = temporal.render(m.keypoints, m.source_size, m.mode, m.source_stats, placement="crop", alpha=True,
                               fps=m.fps).frames
    for png, rgba in zip(pngs, expected):
        got = cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        np.testing.assert_array_equal(got, rgba)


def test_eval_renders_a_temporal_run_frame_after_frame(temporal, tmp_path_factory, pose_model):
    """Self-reenactment (engine.model.evaluate) of a temporal run: the held-out frames generated in order,
    each conditioned on the one before, as by hand."""
    import json

    from engine.data import pairs
    from engine.model import evaluate
    from tests.tiny_dataset import tiny_dataset
    data = tiny_dataset(tmp_path_factory, pose_model)
    info = json.loads((data / "dataset.json").read_text())
    clip, = evaluate.render_clips(temporal, data, info, "val", quiet=True)
    rows = pairs.load_rows(data, "val")
    framed = temporal.frame(rows["source_keypoints"], (clip.width, clip.height), "none", placement="source",
                            fps=float(info["fps"]))
    hand = by_hand(temporal, framed, 0, len(framed))
    placed = temporal.place(np.stack([hand[i] for i in range(len(framed))]), framed, alpha=True)
    assert len(framed) >= 4
    np.testing.assert_array_equal(clip.alpha, placed.frames[..., 3])
