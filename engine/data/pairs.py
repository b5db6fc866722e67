"""Reading a dataset folder back (the layout engine.data.dataset writes): pairs, masks, plates, per-frame rows.

    skeletons, frames, keypoints = load_pairs("data/alice", "train")   # uint8 (N, S, S, 3) RGB x2, (N, J, 3)
    masks = load_masks("data/alice", "train")                          # uint8 (N, S, S), 255 = the dancer
    plates, has_plate = load_plates("data/alice", "train")             # uint8 (N, S, S, 3) plate crops, bool (N,)
    rows = load_rows("data/alice", "val")                              # keypoints.npz's arrays of the split
    keypoints = load_keypoints("data/alice", "val")                    # float32 (N, J, 3) in crop pixels

Pairs are numbered per split in file order (train/skeleton/000000.png, train/frame/000000.png,
train/mask/000000.png, ...); keypoints.npz holds every kept frame with its split and number, and
rows come back in file order. A plate crop is cut from the clip's plate with the frame's stored
crop, at load time (black where the clip has no plate).
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


def read_gray(path: Path) -> np.ndarray:
    """A single-channel image file (a dataset's mask) as (H, W) uint8; UserError if unreadable."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise UserError(f"cannot read image {path}")
    return gray


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"split must be train or val, got {split!r}")


def load_rows(root, split: str) -> dict[str, np.ndarray]:
    """keypoints.npz's per-frame arrays (keypoints, time, source, crops, ...) of a split, in file order."""
    root = Path(root)
    _check_split(split)
    if not (root / "keypoints.npz").is_file():
        raise UserError(f"not a dataset folder (no keypoints.npz): {root}")
    with np.load(root / "keypoints.npz", allow_pickle=False) as npz:
        mine = npz["split"] == SPLITS[split]
        order = np.argsort(npz["index"][mine], kind="stable")
        return {k: npz[k][mine][order] for k in npz.files if npz[k].ndim and len(npz[k]) == len(mine)}


def load_keypoints(root, split: str) -> np.ndarray:
    """(N, J, 3) float32 keypoints of a split in crop pixels, in file order."""
    return load_rows(root, split)["keypoints"].astype(np.float32)


def _size(root: Path) -> int:
    return int(json.loads((root / "dataset.json").read_text())["size"])


def load_pairs(root, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(skeletons, frames, keypoints) of a split: uint8 (N, S, S, 3) RGB twice, float32 (N, J, 3)."""
    root = Path(root)
    keypoints = load_keypoints(root, split)
    n, size = len(keypoints), _size(root)
    skeletons = np.zeros((n, size, size, 3), np.uint8)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        skeletons[i] = read_rgb(root / split / "skeleton" / f"{i:06d}.png")
        frames[i] = read_rgb(root / split / "frame" / f"{i:06d}.png")
    return skeletons, frames, keypoints


def load_masks(root, split: str = "train") -> np.ndarray:
    """The dancer's masks of a split, uint8 (N, S, S), 0-255, in file order."""
    root = Path(root)
    n, size = len(load_rows(root, split)["index"]), _size(root)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        masks[i] = read_gray(root / split / "mask" / f"{i:06d}.png")
    return masks


def read_plates(root) -> list[np.ndarray | None]:
    """Each source clip's plate, (H, W, 3) uint8 RGB, or None where its camera moved (dataset.json's order)."""
    root = Path(root)
    sources = json.loads((root / "dataset.json").read_text()).get("sources", [])
    return [read_rgb(root / s["plate"]) if s.get("plate") else None for s in sources]


def load_plates(root, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Each pair's plate crop, uint8 (N, S, S, 3) RGB (black where its clip has no plate), and bool (N,) has-plate."""
    from engine.data.framing import crop_image
    root = Path(root)
    rows, size = load_rows(root, split), _size(root)
    plates = read_plates(root)
    n = len(rows["index"])
    crops = np.zeros((n, size, size, 3), np.uint8)
    has = np.zeros(n, bool)
    for i, (source, crop) in enumerate(zip(rows["source"], rows["crops"])):
        plate = plates[int(source)]
        if plate is not None:
            crops[i] = crop_image(plate, crop, size)
            has[i] = True
    return crops, has
