"""Draw the canonical skeleton: keypoints in, the picture the generator sees out.

The one rule of the product lives here: training pairs (from video) and inference inputs (from a
rig, a BVH or another video) are drawn by this same code, so the generator always sees the same
kind of picture. Usage:

    image = draw(keypoints, size=256)   # keypoints (J, 3) in pixels of a size x size image
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.wire.joints import BONE_INDEX, BONES, FACE, INDEX, JOINT_COLOURS, NUM_JOINTS, VISIBLE

_FACE = np.array([INDEX[n] for n in FACE])
_L_SH, _R_SH, _L_HIP, _R_HIP = (INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
_NECK, _MID_HIP = INDEX["neck"], INDEX["mid_hip"]
_BONE_COLOURS = [c for _, _, c in BONES]

# sin of the angle between the body's left-right axis and its head-to-hip axis, in the image,
# below which the body is taken as seen from behind (between the two bounds: a profile view).
BACK_VIEW = -0.25


def facing(keypoints: np.ndarray) -> float:
    """+1 facing the camera, -1 back to it, ~0 in profile; nan when the torso is not seen.

    Uses the 2D cross product of the body's right-to-left axis with its neck-to-hip axis, which is
    invariant to in-plane rotation: an upside-down dancer facing the camera still gives +1.
    """
    kp = keypoints
    torso = [_L_SH, _R_SH, _L_HIP, _R_HIP]
    if np.any(kp[torso, 2] < VISIBLE):
        return float("nan")
    across = (kp[_L_SH, :2] - kp[_R_SH, :2]) + (kp[_L_HIP, :2] - kp[_R_HIP, :2])
    down = (kp[_L_HIP, :2] + kp[_R_HIP, :2] - kp[_L_SH, :2] - kp[_R_SH, :2]) / 2
    norm = float(np.linalg.norm(across) * np.linalg.norm(down))
    if norm < 1e-9:
        return float("nan")
    return float((across[0] * down[1] - across[1] * down[0]) / norm)


def hide_unseen_face(keypoints: np.ndarray) -> np.ndarray:
    """Zero the face points' visibility when the body is seen from behind (a copy, (J, 3))."""
    f = facing(keypoints)
    if f < BACK_VIEW:
        keypoints = keypoints.copy()
        keypoints[_FACE, 2] = 0.0
    return keypoints


def line_width(size: int) -> int:
    """Bone thickness in pixels for a size x size image (4 px at 256)."""
    return max(2, round(size / 64))


def draw(keypoints: np.ndarray, size: int) -> np.ndarray:
    """Render one skeleton, (J, 3) in pixels, as an RGB uint8 image of shape (size, size, 3).

    Bones are drawn where both ends are visible, each in its own colour on black; joints as dots.
    Face points seen from behind are not drawn (hide_unseen_face).
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must have shape ({NUM_JOINTS}, 3), got {keypoints.shape}")
    kp = hide_unseen_face(keypoints)
    image = np.zeros((size, size, 3), np.uint8)
    width = line_width(size)
    seen = (kp[:, 2] >= VISIBLE) & np.isfinite(kp[:, :2]).all(axis=1)
    # Sub-pixel positions: cv2 takes fixed-point coordinates with `shift` fractional bits.
    shift = 4
    points = np.round(np.nan_to_num(kp[:, :2]) * (1 << shift)).clip(-(1 << 26), 1 << 26).astype(np.int64)
    for (a, b), colour in zip(BONE_INDEX, _BONE_COLOURS):
        if seen[a] and seen[b]:
            cv2.line(image, tuple(map(int, points[a])), tuple(map(int, points[b])), colour, width, cv2.LINE_AA, shift)
    for j in np.flatnonzero(seen):
        cv2.circle(image, tuple(map(int, points[j])), (width * 3 // 4 + 1) << shift, JOINT_COLOURS[j], -1, cv2.LINE_AA, shift)
    return image


def draw_batch(keypoints: np.ndarray, size: int) -> np.ndarray:
    """(N, J, 3) keypoints -> (N, size, size, 3) uint8 skeleton images."""
    return np.stack([draw(k, size) for k in keypoints]) if len(keypoints) else np.zeros((0, size, size, 3), np.uint8)
