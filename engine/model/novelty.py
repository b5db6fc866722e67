"""Out-of-repertoire warnings: how far a pose is from the poses the dancer was trained on.

    rep = Repertoire.from_crops(train_keypoints_in_crop_px, size, framing.Framing.of(config).side)   # training
    rep.save(run_dir)                                               # RUN_DIR/repertoire.npz (side included)
    rep = Repertoire.load(run_dir)                                  # None for a run without one
    scores = rep.novelty(framed_keypoints, size)                    # (N,) in body heights
    scores > rep.threshold                                          # frames that are a guess

Poses are compared in the person-centred crop (engine.data.framing), where position and size are
already taken out, divided by the body height there: the crop is `side` body heights wide, the
framing the run was trained with, kept in repertoire.npz (one saved before it was: framing.LEGACY's).
So a score is a distance in units of body height whatever a run's framing. A frame's novelty is the
mean distance, over the joints seen in both poses, to its `K` nearest training poses. Orientation is
kept on purpose: an upside-down pose against an upright dancer is far from everything she did.

The threshold is measured on the training poses themselves: the 99th percentile of each one's
novelty against the others (leave one out), so about one training frame in a hundred would be
flagged, and a new pose must be further from her repertoire than almost any of her own; never less
than `FLOOR` (MediaPipe's own noise is about a tenth of a body height).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data import framing
from engine.wire.joints import VISIBLE

FILE = "repertoire.npz"
K = 3                     # nearest training poses averaged
MAX_POSES = 4000          # training poses kept (spread evenly): bounds memory and time per frame
CHUNK = 64                # query poses compared at once: (CHUNK, M, J) floats
FLOOR = 0.15              # the least threshold, in body heights: below it differences are pose-tracking noise


@dataclass
class Repertoire:
    poses: np.ndarray         # (M, J, 2) float32 in body heights, from the crop centre; nan where unseen
    threshold: float
    side: float               # the crop side in body heights the run was framed with: queries are scaled by it

    @classmethod
    def from_crops(cls, keypoints: np.ndarray, size: int, side: float) -> "Repertoire":
        """Training keypoints (M, J, 3) in pixels of their size x size person-centred crops, `side` body heights wide."""
        poses = _normalized(keypoints, size, side)
        if len(poses) > MAX_POSES:
            poses = poses[np.linspace(0, len(poses) - 1, MAX_POSES).round().astype(int)]
        if len(poses) <= K:
            return cls(poses, float("inf"), side)
        own = np.concatenate([_nearest(poses[i:i + CHUNK], poses, skip=np.arange(i, min(i + CHUNK, len(poses))))
                              for i in range(0, len(poses), CHUNK)])
        return cls(poses, max(FLOOR, float(np.nanpercentile(own, 99))), side)

    def novelty(self, keypoints: np.ndarray, size: int) -> np.ndarray:
        """(N,) novelty of poses (N, J, 3) in pixels of size x size person-centred crops; nan with no joints."""
        query = _normalized(keypoints, size, self.side)
        if not len(query):
            return np.zeros(0, np.float32)
        return np.concatenate([_nearest(query[i:i + CHUNK], self.poses) for i in range(0, len(query), CHUNK)])

    def save(self, run_dir: str | Path) -> None:
        from engine.atomic import atomic_file
        with atomic_file(Path(run_dir) / FILE) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, poses=self.poses.astype(np.float16), threshold=np.float32(self.threshold),
                                side=np.float32(self.side))

    @classmethod
    def load(cls, run_dir: str | Path) -> "Repertoire | None":
        path = Path(run_dir) / FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            side = float(data["side"]) if "side" in data.files else framing.LEGACY.side
            return cls(data["poses"].astype(np.float32), float(data["threshold"]), side)


def _normalized(keypoints: np.ndarray, size: int, side: float) -> np.ndarray:
    """(N, J, 3) crop pixels of a square `side` body heights wide -> (N, J, 2) body heights from its centre, nan where unseen."""
    kp = np.asarray(keypoints, np.float32).reshape(-1, *np.shape(keypoints)[-2:])
    height = size / side                                # a body height, in crop pixels
    xy = (kp[..., :2] - size / 2) / height
    return np.where(kp[..., 2:3] >= VISIBLE, xy, np.nan).astype(np.float32)


def _nearest(query: np.ndarray, poses: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Mean over joints seen in both of the distance to each pose; the mean of the K smallest, per query."""
    d = np.linalg.norm(query[:, None] - poses[None], axis=-1)          # (Q, M, J), nan where either is unseen
    seen = np.isfinite(d)
    counts = seen.sum(-1)
    mean = np.where(counts > 0, np.where(seen, d, 0).sum(-1) / np.maximum(counts, 1), np.inf)   # (Q, M)
    if skip is not None:
        mean[np.arange(len(query)), skip] = np.inf                       # leave each training pose out
    k = min(K, mean.shape[1])
    nearest = np.sort(np.partition(mean, k - 1, axis=1)[:, :k], axis=1)
    out = nearest.mean(axis=1)
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)
