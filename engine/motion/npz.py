"""A dataset's keypoints.npz as a motion: `keypoints` (N, J, 3) in pixels of a `size` square, optional `fps`.

    motion = load(Path("keypoints.npz"), fps=None, frames=(1, 40))

Frames are played in the file's order (a dataset writes them in time order per source video, and
says so with `time` and `source` arrays when it has them); another --fps resamples by linear
interpolation in that order. Normalization is "clip", not "none": the file may come from another
dancer's dataset, and for the dancer's own it is the identity up to the statistics' rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.wire.joints import NUM_JOINTS, VISIBLE, body_stats

from .source import Motion, frame_count, interpolate, select

DEFAULT_FPS = 10.0        # the dataset builder's default sampling rate


def load(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None) -> Motion:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "keypoints" not in data:
                raise UserError(f"{path} has no 'keypoints' array (is it a dataset's keypoints.npz?)")
            kp = np.asarray(data["keypoints"], dtype=np.float32)
            size = data["size"] if "size" in data else None
            src_fps = float(data["fps"]) if "fps" in data else None
            order = _order(data)
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz file ({str(e).splitlines()[0]})") from None
    if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3) or len(kp) == 0:
        raise UserError(f"{path}: keypoints must be (N, {NUM_JOINTS}, 3) in canonical joint order, got {kp.shape}")
    if order is not None:
        kp = kp[order]
    if size is None:
        width, height = _extent(kp)
    else:
        size = np.atleast_1d(np.asarray(size)).astype(int).tolist()
        width, height = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    src_fps = src_fps if src_fps and src_fps > 0 else DEFAULT_FPS
    fps = fps or src_fps
    stats = body_stats(kp)
    if stats is None:
        raise UserError(f"{path}: no frame shows a whole body (shoulders, hips, knees, ankles)")
    total = frame_count((len(kp) - 1) / src_fps, fps)
    start, stop = select(total, frames, fps, str(path))
    at = np.arange(start, stop) * (src_fps / fps)          # positions in source frames
    return Motion(keypoints=interpolate(kp, at), source_size=(int(width), int(height)), fps=fps,
                  mode="clip", source_stats=stats, first=start + 1, kind="npz")


def _order(data) -> np.ndarray | None:
    """Play order (source, time) when the file says so, else None (file order)."""
    if "time" in data and "source" in data:
        return np.lexsort((np.asarray(data["time"]), np.asarray(data["source"])))
    return None


def _extent(kp: np.ndarray) -> tuple[int, int]:
    """An image size that holds every seen keypoint, for a file that does not say its size."""
    seen = kp[..., 2] >= VISIBLE
    xy = kp[..., :2][seen]
    if not len(xy):
        return 256, 256
    return int(np.ceil(xy[:, 0].max())) + 1, int(np.ceil(xy[:, 1].max())) + 1
