"""Move poses from another body into the target dancer's space, and smooth poses from video.

Global pose normalization after "Everybody Dance Now" (Chan et al. 2019, section 3.3): a pose from
a rig, a mocap actor or another dancer is scaled and translated so that its body height and ankle
positions match the target dancer's statistics (`joints.body_stats`, saved in the dataset and the
run). The scale is interpolated between the source's far and near ankle positions, so a dancer
walking towards the camera grows as the target would. This runs in the engine only, once.

Modes (as a render request names them):
- "clip":  `source_stats` describe the whole source range (computed by the client or renderer);
- "frame": statistics of each pose alone, or `source_stats` of the rig's rest pose (live preview);
- "none":  keypoints are already in the dancer's space; only the image size is rescaled.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from engine.wire.joints import NUM_JOINTS, VISIBLE, ankle_y, body_height, body_stats

MODES = ("clip", "frame", "none")


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _transform(kp: np.ndarray, src: dict, tgt: dict) -> np.ndarray:
    """One pose (J, 3) from source pixels to target pixels, given both bodies' statistics."""
    ankle = ankle_y(kp)
    span = src["ankle_near"] - src["ankle_far"]
    if ankle is None or span < 0.05 * src["height"]:
        # One depth only (a single pose, or a dancer who stays put): match the medians.
        scale = tgt["height"] / src["height"]
        src_ankle = src["ankle_y"] if ankle is None else ankle
        dst_ankle = tgt["ankle_y"]
    else:
        t = float(np.clip((ankle - src["ankle_far"]) / span, 0.0, 1.0))
        scale = _lerp(tgt["height_far"] / src["height_far"], tgt["height_near"] / src["height_near"], t)
        src_ankle, dst_ankle = ankle, _lerp(tgt["ankle_far"], tgt["ankle_near"], t)
    out = kp.copy()
    out[:, 0] = (kp[:, 0] - src["center_x"]) * scale + tgt["center_x"]
    out[:, 1] = (kp[:, 1] - src_ankle) * scale + dst_ankle
    return out


def to_dancer(keypoints: np.ndarray, mode: str, source_size: tuple[int, int], target_stats: dict,
              target_size: int, out_size: int, source_stats: dict | None = None) -> np.ndarray:
    """Keypoints (N, J, 3) in pixels of a source image -> pixels of the dancer's out_size square.

    target_stats are in pixels of the dataset's target_size square; source_size is (width, height).
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must have shape (N, {NUM_JOINTS}, 3), got {kp.shape}")
    if mode not in MODES:
        raise ValueError(f"normalization mode must be one of {MODES}, got {mode!r}")
    if mode == "none":
        out = kp.copy()
        out[..., :2] *= out_size / max(source_size)
        return out
    if mode == "clip" and source_stats is None:
        source_stats = body_stats(kp)          # the batch is the clip
    out = np.empty_like(kp)
    for i, pose in enumerate(kp):
        src = source_stats if mode == "clip" else (body_stats([pose]) or source_stats)
        if src is None:                         # no body to measure: place it as-is, rescaled
            out[i] = pose
            out[i, :, :2] *= target_size / max(source_size)
        else:
            out[i] = _transform(pose, src, target_stats)
    out[..., :2] *= out_size / target_size
    return out


def smooth(keypoints: np.ndarray, fps: float, window_s: float = 0.4, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of a (N, J, 3) track from video, joint by joint.

    A window of about 0.4 s removes MediaPipe's frame-to-frame jitter while following
    real motion: a Savitzky-Golay filter fits a local polynomial, so it does not lag like a moving
    average. Runs of frames where a joint is unseen are filled by interpolation before filtering
    and keep their low visibility. Rigs are exact: do not smooth them.
    """
    kp = np.asarray(keypoints, dtype=np.float32).copy()
    n = len(kp)
    window = int(round(window_s * fps)) | 1          # odd
    window = min(window, n if n % 2 else n - 1)
    if window <= order:
        return kp
    frames = np.arange(n)
    for j in range(kp.shape[1]):
        seen = kp[:, j, 2] >= VISIBLE
        if seen.sum() < 2:
            continue
        for c in (0, 1):
            track = np.interp(frames, frames[seen], kp[seen, j, c])
            kp[:, j, c] = np.where(seen, savgol_filter(track, window, order), kp[:, j, c])
    return kp


def heights(keypoints: np.ndarray) -> np.ndarray:
    """Per-frame body height in pixels (nan where unseen): a helper for tests and reports."""
    return np.array([body_height(k) or np.nan for k in keypoints], dtype=np.float64)
