"""What every motion source gives: a `Motion`, and the frame arithmetic they share.

    total = frame_count(duration_s, fps)            # frames of a resampled source, both ends kept
    start, stop = select(total, (1, 40), fps, what) # --frames A:B (1-based, inclusive) -> a slice
    interpolate(kp, at)                             # keypoints at fractional frame positions
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from engine.errors import UserError


@dataclasses.dataclass
class Motion:
    """Keypoints from one source, ready for the engine (which normalizes them, once)."""
    keypoints: np.ndarray                 # (N, J, 3) float32, pixels of the source image
    source_size: tuple[int, int]          # (width, height) of that image
    fps: float                            # frames per second of `keypoints`
    mode: str = "clip"                    # normalization mode for the engine: "clip" or "none"
    source_stats: dict | None = None      # joints.body_stats of the source (mode "clip")
    first: int = 1                        # 1-based number of keypoints[0] in the resampled source
    images: np.ndarray | None = None      # (N, P, P, 3) uint8 source video frames, letterboxed (side-by-side)
    smoothed: bool = False                # temporal smoothing applied (video only)
    kind: str = ""                        # "blend", "bvh", "npz" or "video"

    def __len__(self) -> int:
        return len(self.keypoints)


def frame_count(duration_s: float, fps: float) -> int:
    """Frames of a source `duration_s` long (first to last frame) resampled at `fps`: both ends kept."""
    return int(math.floor(duration_s * fps + 1e-6)) + 1


def check_range(frames: tuple[int, int] | None) -> None:
    """UserError for a --frames range that is not 1-based or ends before it starts."""
    if frames is not None and (frames[0] < 1 or frames[1] < frames[0]):
        raise UserError(f"--frames {frames[0]}:{frames[1]}: frames are numbered from 1 and the range must "
                        "not end before it starts")


def select(total: int, frames: tuple[int, int] | None, fps: float, what: str) -> tuple[int, int]:
    """(start, stop) 0-based slice of `total` resampled frames for a 1-based inclusive range A:B."""
    if total <= 0:
        raise UserError(f"{what} has no frames")
    if frames is None:
        return 0, total
    check_range(frames)
    a, b = frames
    if b > total:
        raise UserError(f"--frames {a}:{b} asks beyond the end: {what} has {total} frames at {fps:g} fps (1:{total})")
    return a - 1, b


def check_exists(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"motion file not found: {path}")
    if not path.is_file():
        raise UserError(f"motion source is not a file: {path}")
    return path


def check_fps(fps: float | None) -> None:
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= 1000):
        raise UserError(f"--fps must be a positive number of frames per second, got {fps:g}")


def interpolate(kp: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Keypoints (N, J, 3) at fractional frame positions `at` (M,): linear, visibility the lower."""
    at = np.clip(np.asarray(at, dtype=np.float64), 0, len(kp) - 1)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, len(kp) - 1)
    w = (at - lo)[:, None, None].astype(np.float32)
    out = kp[lo] * (1 - w) + kp[hi] * w
    out[..., 2] = np.minimum(kp[lo, :, 2], kp[hi, :, 2])
    exact = w[:, 0, 0] < 1e-6
    out[exact] = kp[lo[exact]]
    return out.astype(np.float32)
