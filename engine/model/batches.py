"""Training data on the device: a dataset split as uint8 tensors, the data order, the jitter.

    info = dataset_info("data/alice")                        # dataset.json, checked (format 2)
    split = load_split("data/alice", "train", size=256)      # Split: skeletons, frames, masks, backgrounds
    idx = batch_indices(seed, step, len(split), batch, rank, world)
    x = jitter(x, zoom, shift)                               # the same crop for all stacked images
    crops = jittered_crops(crops, zoom, shift)               # the part of each crop the jitter kept
    kp = drop_limbs(keypoints, limbs)                        # vid2vid's limb dropping: limbs[i] of LIMBS, or -1

Each pair also knows its predecessor: split.previous[i] is the pair sampled just before it from
the same clip (-1 where there is none: a clip's first, or after frames without a dancer), so the
temporal model trains on consecutive pairs (engine.model.pix2pix), each in its own crop (split.crops).

Each pair's background is what the generated dancer is composited over in training: the plate
crop where its clip has a plate (the room without her, exact), else the real frame itself (then
only the colour under her matte is judged).

Data order is a pure function of (seed, step, rank): epoch e visits a permutation seeded by
(seed, e), and rank r of W takes its slice of each global batch, as DistributedSampler would. So
a resumed run sees exactly the batches the uninterrupted run would have, with no sampler state.
The jitter is the paper's scale-and-crop (one random zoom and crop per pair, applied identically
to skeleton and frame by sampling both through one affine grid); no mirroring, which would swap
the left/right colours of the skeleton.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.model.runs import read_json
from engine.wire.joints import BONE_INDEX, JOINTS


FORMAT = 2          # the dataset format training and evaluation read (engine.data.dataset.FORMAT)


@dataclass
class Split:
    """One split of a dataset, in memory: uint8 tensors (N, C, S, S) and (N, J, 3) keypoints in pixels of S.

    skeletons and frames RGB, masks (N, 1, S, S) 0-255 (the dancer), backgrounds RGB (plate crops,
    or the frames where the clip has none). crops (N, 3) float32: each pair's crop (cx, cy, side) in
    its source video's pixels; previous (N,) int64: the index of the pair just before it in its clip, or -1.
    """
    skeletons: torch.Tensor
    frames: torch.Tensor
    masks: torch.Tensor
    backgrounds: torch.Tensor
    keypoints: np.ndarray
    crops: np.ndarray
    previous: np.ndarray

    def __len__(self) -> int:
        return len(self.skeletons)


def dataset_info(root: str | Path) -> dict:
    """DATASET/dataset.json, checked for what training and evaluation need (size, counts, stats)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{root} is not a dataset folder (no dataset.json); build one with `pix2dance dataset`")
    info = read_json(path, ("size", "counts", "stats"))
    if int(info.get("format", 1)) < FORMAT:
        raise UserError(f"{root} was built by an older pix2dance (fixed room crop); rebuild it with pix2dance dataset")
    if "joints" in info and list(info["joints"]) != list(JOINTS):
        raise UserError(f"{path} was built with another joint set; rebuild it with this version")
    if not info["stats"]:
        raise UserError(f"{path} has no body statistics (no usable frames)")
    return info


def load_split(root: str | Path, split: str, size: int) -> Split:
    """A dataset split as uint8 tensors at `size` px (skeletons redrawn at that size, the images resized)."""
    import cv2

    from engine.data.pairs import load_masks, load_pairs, load_plates, load_rows
    from engine.data.skeleton import draw_batch
    skeletons, frames, keypoints = load_pairs(root, split)
    rows = load_rows(root, split)
    previous = predecessors(rows["source"], rows["time"], float(dataset_info(root)["fps"]))
    masks = load_masks(root, split)
    plates, has_plate = load_plates(root, split)
    backgrounds = np.where(has_plate[:, None, None, None], plates, frames)
    keypoints = np.asarray(keypoints, np.float32).copy()
    if len(frames) and frames.shape[1] != size:
        # Redraw rather than resize the skeletons: line widths must match what inference draws.
        scale = size / frames.shape[1]
        keypoints[..., :2] *= scale
        skeletons = draw_batch(keypoints, size)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resize = lambda images: np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in images])  # noqa: E731
        frames, masks, backgrounds = resize(frames), resize(masks), resize(backgrounds)
    to_chw = lambda a, c: torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, size, size, c).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return Split(to_chw(skeletons, 3), to_chw(frames, 3), to_chw(masks, 1), to_chw(backgrounds, 3), keypoints,
                 np.asarray(rows["crops"], np.float32).reshape(-1, 3), previous)


def predecessors(source: np.ndarray, time: np.ndarray, fps: float) -> np.ndarray:
    """(N,) index of the pair sampled just before each one from the same clip (one sampling tick
    earlier, give or take half a tick), or -1: pairs are in file order, which is clip by clip in time."""
    source, time = np.asarray(source), np.asarray(time, np.float64)
    previous = np.full(len(time), -1, np.int64)
    if len(time) > 1:
        follows = (source[1:] == source[:-1]) & (np.abs(time[1:] - time[:-1] - 1 / fps) <= 0.5 / fps)
        previous[1:][follows] = np.flatnonzero(follows)
    return previous


def drop_limbs(keypoints: np.ndarray, limbs: np.ndarray) -> np.ndarray:
    """vid2vid's limb dropping: pose i of (N, J, 3) loses limb LIMBS[limbs[i]] (a bone and every joint
    below it: an arm from the shoulder, a hand from the wrist, the face from the nose...), none where
    limbs[i] is -1; so the generator learns to draw a frame whose skeleton misses a joint. A copy."""
    kp = np.array(keypoints, np.float32, copy=True)
    for i in np.flatnonzero(np.asarray(limbs) >= 0):
        kp[i, list(LIMBS[int(limbs[i])]), 2] = 0.0
    return kp


def _limbs() -> tuple[tuple[int, ...], ...]:
    """For each bone but the trunk's, its child joint and every joint below it."""
    children: dict[int, list[int]] = {}
    for a, b in BONE_INDEX:
        children.setdefault(a, []).append(b)

    def below(j: int) -> list[int]:
        return [j] + [k for c in children.get(j, []) for k in below(c)]
    return tuple(tuple(sorted(below(b))) for a, b in BONE_INDEX if (JOINTS[a], JOINTS[b]) != ("neck", "mid_hip"))


LIMBS = _limbs()


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The visiting order of epoch `epoch`: a permutation of range(n) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def batch_indices(seed: int, step: int, n: int, batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Sample indices (batch,) of this rank at `step`: slice `rank` of the global batch (batch x world)."""
    start = (step * world + rank) * batch               # position in the endless sequence of epochs
    q = torch.arange(start, start + batch)
    epochs, pos = q // n, q % n
    out = torch.empty(batch, dtype=torch.long)
    for e in epochs.unique().tolist():
        sel = epochs == e
        out[sel] = epoch_permutation(seed, e, n)[pos[sel]]
    return out


def jitter(x: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale-and-crop every image of (B, C, H, W): zoom (B,) >= 1, shift (B, 2) in [-1, 1] of the slack.

    One affine grid per sample, so the skeleton and the frame stacked in C move together. zoom and
    shift live on the CPU (no device sync for the test below); only the (B, 2, 3) matrices move.
    """
    zoom, shift = zoom.cpu(), shift.cpu()
    if bool((zoom == 1).all()):
        return x
    inv = 1.0 / zoom                                             # share of the image kept
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    theta[:, :, 2] = shift * (1 - inv)[:, None]                  # crop centre within the slack
    theta = theta.to(x.device, x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jittered_crops(crops: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The crops (B, 3) (cx, cy, side) that `jitter(x, zoom, shift)` leaves of images cut with `crops`:
    it keeps 1/zoom of the side, its centre moved by shift x the slack (in half sides)."""
    inv = (1 / zoom.cpu())[:, None].to(crops)
    shift = shift.cpu().to(crops)
    return torch.cat([crops[:, :2] + shift * (1 - inv) * crops[:, 2:] / 2, crops[:, 2:] * inv], 1)
