"""The synthetic dancer on paper: its skeleton (bones in the rest pose), colours, and seeded dances.

    dance = make_dance(seed=0, choreography="train")      # "test": another random stream, unseen motion
    angles, turn, hip = dance_pose(dance, t=2.0)          # channel angles (C,), body turn, hip travel

bpy-free (numpy only), so choreographies are testable without Blender; engine.demo.synth builds
and renders the dancer in a Blender scene from these tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.errors import UserError

CHOREOGRAPHIES = ("train", "test")

# Rest pose, metres, dancer facing -Y (towards the camera), z up. Left is +X: the dancer's left
# appears on the right of the picture when they face us, as in a video.
# name: (head, tail, parent)
BONES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str | None]] = {
    "hips": ((0, 0, 0.95), (0, 0, 1.10), None),
    "spine": ((0, 0, 1.10), (0, 0, 1.28), "hips"),
    "chest": ((0, 0, 1.28), (0, 0, 1.50), "spine"),
    "neck": ((0, 0, 1.50), (0, 0, 1.60), "chest"),
    "head": ((0, 0, 1.60), (0, 0, 1.84), "neck"),
}
for _s, _x in (("L", 1.0), ("R", -1.0)):
    BONES.update({
        f"shoulder.{_s}": ((0.04 * _x, 0, 1.46), (0.19 * _x, 0, 1.46), "chest"),
        f"upper_arm.{_s}": ((0.19 * _x, 0, 1.46), (0.21 * _x, 0, 1.17), f"shoulder.{_s}"),
        f"forearm.{_s}": ((0.21 * _x, 0, 1.17), (0.22 * _x, -0.01, 0.91), f"upper_arm.{_s}"),
        f"hand.{_s}": ((0.22 * _x, -0.01, 0.91), (0.225 * _x, -0.01, 0.78), f"forearm.{_s}"),
        f"thigh.{_s}": ((0.10 * _x, 0, 0.95), (0.10 * _x, -0.01, 0.52), "hips"),
        f"shin.{_s}": ((0.10 * _x, -0.01, 0.52), (0.10 * _x, 0.01, 0.09), f"thigh.{_s}"),
        f"foot.{_s}": ((0.10 * _x, 0.01, 0.09), (0.10 * _x, -0.12, 0.03), f"shin.{_s}"),
        f"toe.{_s}": ((0.10 * _x, -0.12, 0.03), (0.10 * _x, -0.19, 0.03), f"foot.{_s}"),
    })
CONNECTED = {"spine", "chest", "neck", "head"} | {f"{b}.{s}" for b in ("upper_arm", "forearm", "hand", "shin", "foot", "toe") for s in "LR"}

# Colours (linear RGB). Left cool, right warm (like the skeleton drawing), trunk dark with a bright
# front, so a back view looks different from a front view.
SKIN, HAIR = (0.85, 0.55, 0.40), (0.10, 0.05, 0.02)
LEFT, LEFT_DARK = (0.05, 0.25, 0.90), (0.02, 0.08, 0.35)
RIGHT, RIGHT_DARK = (0.90, 0.08, 0.05), (0.35, 0.03, 0.02)
TORSO, CHEST_PATCH, PELVIS = (0.06, 0.08, 0.10), (1.00, 0.85, 0.05), (0.30, 0.06, 0.40)
FLOOR, SKY = (0.55, 0.55, 0.50), (0.62, 0.70, 0.80)
SOLE = 0.03          # height of the toe bone above the sole of the shoe, metres

# Pose channels: (bone, euler axis 0..2, low, high) in degrees. Signs follow the bones' local axes
# for roll 0 (see the module test): for a bone pointing down, +X swings it backwards (away from
# the camera), and +Z swings it towards -X (so a left arm abducts with -Z, a right arm with +Z).
CHANNELS: tuple[tuple[str, int, float, float], ...] = (
    ("upper_arm.L", 0, -110, 40), ("upper_arm.L", 2, -150, -5),
    ("upper_arm.R", 0, -110, 40), ("upper_arm.R", 2, 5, 150),
    ("forearm.L", 0, -120, 0), ("forearm.R", 0, -120, 0),
    ("thigh.L", 0, -60, 25), ("thigh.L", 2, -35, 0),
    ("thigh.R", 0, -60, 25), ("thigh.R", 2, 0, 35),
    ("shin.L", 0, 0, 90), ("shin.R", 0, 0, 90),
    ("foot.L", 0, -20, 25), ("foot.R", 0, -20, 25),
    ("spine", 1, -25, 25), ("spine", 2, -12, 12), ("spine", 0, -20, 10),
    ("chest", 1, -20, 20), ("head", 1, -35, 35), ("head", 0, -20, 20),
)


@dataclass
class Dance:
    """A seeded procedural choreography: per channel, a sum of sinusoids (Hz, phase, weight)."""
    freqs: np.ndarray           # (C, K) Hz
    phases: np.ndarray          # (C, K) radians
    weights: np.ndarray         # (C, K), each row sums to 1
    turn_speed: float           # whole-body turns per second (signed)
    turn_wobble: float          # extra turning sway, radians
    sway: float                 # sideways hip travel, metres


def make_dance(seed: int, choreography: str) -> Dance:
    """The choreography for (seed, 'train' | 'test'): the two never share a random stream."""
    if choreography not in CHOREOGRAPHIES:
        raise UserError(f"choreography must be one of {CHOREOGRAPHIES}, got {choreography!r}")
    rng = np.random.default_rng([seed, CHOREOGRAPHIES.index(choreography), 8])
    c, k = len(CHANNELS), 3
    weights = rng.uniform(0.2, 1.0, (c, k))
    return Dance(freqs=rng.uniform(0.15, 0.9, (c, k)), phases=rng.uniform(0, 2 * math.pi, (c, k)),
                 weights=weights / weights.sum(1, keepdims=True),
                 turn_speed=float(rng.choice([-1, 1]) * rng.uniform(0.08, 0.16)),
                 turn_wobble=float(rng.uniform(0.3, 0.8)),
                 sway=float(rng.uniform(0.1, 0.3)))


def dance_pose(dance: Dance, t: float) -> tuple[np.ndarray, float, tuple[float, float]]:
    """At time t seconds: channel angles (C,) in radians, body turn (radians), hip travel (x, y) m.

    The hips' height is not part of the dance: keyframe_dance keeps the feet on the floor.
    """
    wave = (dance.weights * np.sin(2 * math.pi * dance.freqs * t + dance.phases)).sum(1)   # (C,) in [-1, 1]
    # Sharpen towards the ends of each range a little, so extreme poses (arms up, deep knees) occur.
    wave = np.clip(1.3 * wave, -1, 1)
    lo = np.array([c[2] for c in CHANNELS])
    hi = np.array([c[3] for c in CHANNELS])
    angles = np.radians(lo + (hi - lo) * (wave + 1) / 2)
    turn = 2 * math.pi * dance.turn_speed * t + dance.turn_wobble * math.sin(2 * math.pi * 0.23 * t + dance.phases[0, 0])
    hip = (dance.sway * math.sin(2 * math.pi * 0.17 * t + dance.phases[1, 0]),
           0.15 * math.sin(2 * math.pi * 0.11 * t + dance.phases[2, 0]))
    return angles, turn, hip
