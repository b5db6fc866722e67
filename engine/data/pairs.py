"""Reading a dataset folder back (the layout engine.data.dataset writes): keypoints and (skeleton, frame) pairs.

    skeletons, frames, keypoints = load_pairs("data/alice", "train")   # uint8 (N, S, S, 3) RGB x2, (N, J, 3)
    keypoints = load_keypoints("data/alice", "val")                    # float32 (N, J, 3) in crop pixels

Pairs are numbered per split in file order (train/skeleton/000000.png, train/frame/000000.png, ...);
keypoints.npz holds every kept frame with its split and number.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError

SPLITS = {"train": 0, "val": 1}      # the split codes of keypoints.npz


def read_rgb(path: Path) -> np.ndarray:
    """An image file (a dataset's PNG, a rendered frame) as (H, W, 3) uint8 RGB; UserError if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_keypoints(root, split: str) -> np.ndarray:
    """(N, J, 3) float32 keypoints of a split in crop pixels, in file order."""
    root = Path(root)
    if not (root / "keypoints.npz").is_file():
        raise UserError(f"not a dataset folder (no keypoints.npz): {root}")
    with np.load(root / "keypoints.npz", allow_pickle=False) as npz:
        mask = npz["split"] == SPLITS[split]
        order = np.argsort(npz["index"][mask], kind="stable")
        return npz["keypoints"][mask][order].astype(np.float32)


def load_pairs(root, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(skeletons, frames, keypoints) of a split: uint8 (N, S, S, 3) RGB twice, float32 (N, J, 3)."""
    root = Path(root)
    if split not in SPLITS:
        raise UserError(f"split must be train or val, got {split!r}")
    keypoints = load_keypoints(root, split)
    n = len(keypoints)
    size = json.loads((root / "dataset.json").read_text())["size"]
    skeletons = np.zeros((n, size, size, 3), np.uint8)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        skeletons[i] = read_rgb(root / split / "skeleton" / f"{i:06d}.png")
        frames[i] = read_rgb(root / split / "frame" / f"{i:06d}.png")
    return skeletons, frames, keypoints
