"""Bone names read as words: the side they say and the body part they say, as hints for mapping.

    tokens("mixamorig:LeftUpLeg")      # ['left', 'up', 'leg']
    side_of("thigh.L")                 # 'left'
    stem("DEF-upper_arm.L.001")        # 'upper arm'

Names only ever break ties: auto-mapping trusts a rig's structure first (`automap`).
"""

from __future__ import annotations

import re

SIDE_WORDS = {"left", "right", "l", "r"}
NOISE_WORDS = {"def", "org", "mch", "bip", "bip01", "b", "j", "jnt", "joint", "bone", "mixamorig"}


def tokens(name: str) -> list[str]:
    """Lower-case words of a bone name: 'mixamorig:LeftUpLeg' -> ['left', 'up', 'leg'],
    'DEF-thigh.L.001' -> ['def', 'thigh', 'l', '001'], 'UpperArm_L' -> ['upper', 'arm', 'l']."""
    n = name.split(":")[-1]
    n = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", n)
    n = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", n)
    n = re.sub(r"([A-Za-z])([0-9])", r"\1 \2", n)
    return [t for t in re.split(r"[^a-z0-9]+", n.lower()) if t]


def side_of(name: str) -> str | None:
    """'left', 'right' or None from a bone name's words (Left/Right, L/R, .l/.r, _L/_R)."""
    t = tokens(name)
    if "left" in t or "l" in t:
        return "left"
    if "right" in t or "r" in t:
        return "right"
    return None


def stem(name: str) -> str:
    """A bone name without side, numbers and rig prefixes: 'DEF-upper_arm.L.001' -> 'upper arm'."""
    return " ".join(t for t in tokens(name) if t not in SIDE_WORDS and t not in NOISE_WORDS and not t.isdigit())


def is_eye(name: str) -> bool:
    return "eye" in tokens(name)
