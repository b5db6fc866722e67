"""Tests for engine.model.novelty: out-of-repertoire scores in body heights."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import framing
from engine.model.novelty import Repertoire
from engine.wire.joints import INDEX
from tests.conftest import standing_pose


def arm_dance(n: int) -> np.ndarray:
    """n upright poses, arms swinging through a range: the dancer's repertoire, in source pixels."""
    kp = np.stack([standing_pose(256) for _ in range(n)])
    for i, a in enumerate(np.linspace(-0.6, 0.6, n)):
        for side, sign in (("right", -1), ("left", 1)):
            shoulder = kp[i, INDEX[f"{side}_shoulder"], :2]
            for part, length in (("elbow", 30), ("wrist", 60)):
                kp[i, INDEX[f"{side}_{part}"], :2] = shoulder + length * np.array([sign * np.sin(a), np.cos(a)])
    return kp


def in_crops(kp: np.ndarray, size: int = 64, how: framing.Framing = framing.DEFAULT) -> np.ndarray:
    return framing.to_crop(kp, framing.person_crops(kp, framing=how), size)


def test_training_poses_score_near_zero_and_an_upside_down_pose_scores_high(tmp_path):
    train = arm_dance(120)
    rep = Repertoire.from_crops(in_crops(train), 64, framing.DEFAULT.side)
    own = rep.novelty(in_crops(train[::7]), 64)
    assert own.max() < 0.05 and 0.15 <= rep.threshold < 0.3
    flipped = train[::30].copy()
    flipped[:, :, :2] = 256 - flipped[:, :, :2]                        # a handstand: the same pose upside down
    far = rep.novelty(in_crops(flipped), 64)
    assert far.min() > 0.5 and (far > rep.threshold).all()
    bigger = train[::30].copy()
    bigger[:, :, :2] *= 1.7                                            # size and place do not count
    assert rep.novelty(in_crops(bigger), 64).max() < 0.05
    rep.save(tmp_path)
    back = Repertoire.load(tmp_path)
    assert back.side == pytest.approx(framing.DEFAULT.side)
    assert back.threshold == pytest.approx(rep.threshold, rel=1e-5)
    assert np.allclose(back.novelty(in_crops(flipped), 64), far, atol=1e-3)
    assert Repertoire.load(tmp_path / "nothing") is None


def test_only_joints_seen_in_both_count():
    train = arm_dance(40)
    rep = Repertoire.from_crops(in_crops(train), 64, framing.DEFAULT.side)
    pose = train[5:6].copy()
    pose[0, INDEX["left_wrist"], :2] += 200                            # far off, but unseen: it does not count
    pose[0, INDEX["left_wrist"], 2] = 0
    assert rep.novelty(in_crops(pose), 64)[0] < 0.05
    nothing = pose.copy()
    nothing[..., 2] = 0
    assert np.isnan(rep.novelty(nothing, 64)[0])


def test_a_run_framed_at_1_8_scores_as_before_whatever_the_default(tmp_path):
    """Scores are in body heights of the run's own framing: a run trained on 1.8 crops (before the
    framing was recorded, LEGACY) and fed 1.8 crops scores as one trained and fed at DEFAULT."""
    train = arm_dance(120)
    flipped = train[::30].copy()
    flipped[:, :, :2] = 256 - flipped[:, :, :2]
    old = Repertoire.from_crops(in_crops(train, how=framing.LEGACY), 64, 1.8)
    new = Repertoire.from_crops(in_crops(train, how=framing.DEFAULT), 64, framing.DEFAULT.side)
    far_old = old.novelty(in_crops(flipped, how=framing.LEGACY), 64)
    np.testing.assert_allclose(far_old, new.novelty(in_crops(flipped), 64), rtol=1e-4)
    assert old.threshold == pytest.approx(new.threshold, rel=1e-4)
    # an old run's repertoire.npz has no side: it loads as LEGACY's 1.8, not as today's default
    np.savez_compressed(tmp_path / "repertoire.npz", poses=old.poses.astype(np.float16),
                        threshold=np.float32(old.threshold))
    back = Repertoire.load(tmp_path)
    assert back.side == 1.8
    np.testing.assert_allclose(back.novelty(in_crops(flipped, how=framing.LEGACY), 64), far_old, atol=1e-3)
    # read with the new default's side the same crops would score otherwise: the side matters
    wrong = Repertoire(back.poses, back.threshold, framing.DEFAULT.side)
    assert np.abs(wrong.novelty(in_crops(flipped, how=framing.LEGACY), 64) - far_old).max() > 0.05
