"""The temporal model's one fact: how the previous frame enters the generator ("Everybody Dance Now").

    x = condition(skeletons, previous, previous_crops, crops)    # (B, 7, S, S) in [-1, 1]: G's input
    y = G(x)                                                     # (B, 4, S, S): this frame, RGB + alpha

A temporal generator sees the skeleton (3 channels) and its own previous output (RGBA, 4 channels),
moved from the previous frame's crop into this frame's: crops follow the dancer, so a still
wall must stay still under a moving crop. What falls outside the previous crop is blank, and a
first frame (or one after a cut, or the first of a cold live preview) sees BLANK all over: black
and transparent, which is what uint8 zeros mean in every backend. Training (engine.model.pix2pix)
and inference (engine.model.sequence) call the same `condition`, on the device and on the CPU.

A crop is (cx, cy, side) in canvas pixels (engine.data.framing): crop pixel u of S maps to
x = cx + ((u + 0.5) / S * 2 - 1) * side / 2, so the sampling grid from this crop into the previous
one is an affine map in normalized coordinates, which F.affine_grid takes as it is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.model.tensors import to_model, to_uint8

SKELETON_CHANNELS = 3
PREVIOUS_CHANNELS = 4                     # RGB + alpha, straight
INPUT_CHANNELS = SKELETON_CHANNELS + PREVIOUS_CHANNELS
WARMUP = 4                                # frames generated (and dropped) before a range's first, to settle it


def in_channels(temporal: bool) -> int:
    """The generator's input channels: the skeleton, and with the temporal model its previous output."""
    return INPUT_CHANNELS if temporal else SKELETON_CHANNELS


def start_as_single_frame(generator: nn.Module) -> None:
    """Zero a new temporal generator's first-layer weights on its previous-frame channels, so it starts
    as a single-frame generator and learns to use its previous output as training finds it useful (as
    ControlNet's zero convolutions do). Randomly initialised, those channels feed G its own untrained
    output back as noise: in 120 tiny steps its matte reached 0.2-0.45 of the mask against 0.56-0.65."""
    first = next(m for m in generator.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        first.weight[:, SKELETON_CHANNELS:] = 0


def crop_theta(previous_crops: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices: normalized coordinates of this crop -> those of the previous crop."""
    px, py, ps = previous_crops.unbind(-1)
    cx, cy, s = crops.unbind(-1)
    theta = torch.zeros(len(crops), 2, 3, dtype=crops.dtype, device=crops.device)
    theta[:, 0, 0] = theta[:, 1, 1] = s / ps
    theta[:, 0, 2] = 2 * (cx - px) / ps
    theta[:, 1, 2] = 2 * (cy - py) / ps
    return theta


def warp_previous(previous: torch.Tensor, previous_crops: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Previous outputs (B, 4, S, S) in [-1, 1], each in its own crop -> the same in this frame's crop.

    Bilinear, and BLANK (-1: black, transparent) where this crop reaches beyond the previous one."""
    theta = crop_theta(previous_crops.float(), crops.float()).to(previous.dtype)
    grid = F.affine_grid(theta, list(previous.shape), align_corners=False)
    # Sample (y + 1): zero padding is then exactly BLANK once shifted back.
    return F.grid_sample(previous + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def condition(skeletons: torch.Tensor, previous: torch.Tensor | None, previous_crops: torch.Tensor | None,
              crops: torch.Tensor | None) -> torch.Tensor:
    """The temporal generator's input (B, 7, S, S) in [-1, 1]: skeletons (B, 3, S, S) in [-1, 1] and the
    previous outputs (B, 4, S, S) in [-1, 1] moved into these crops; previous None: a cold start (BLANK)."""
    if previous is None:
        blank = torch.full((len(skeletons), PREVIOUS_CHANNELS, *skeletons.shape[2:]), -1.0,
                           dtype=skeletons.dtype, device=skeletons.device)
        return torch.cat([skeletons, blank], 1)
    return torch.cat([skeletons, warp_previous(previous, previous_crops, crops)], 1)


def condition_uint8(skeletons: np.ndarray, previous: np.ndarray | None, previous_crops: np.ndarray | None,
                    crops: np.ndarray | None) -> np.ndarray:
    """`condition` for the backends' uint8 NHWC: skeletons (N, S, S, 3), previous RGBA (N, S, S, 4) or None
    -> (N, S, S, 7) uint8. Rows of `previous` that are all zero stay BLANK whatever their crops."""
    skeletons = np.ascontiguousarray(skeletons, np.uint8)
    if previous is None:
        return np.concatenate([skeletons, np.zeros((*skeletons.shape[:3], PREVIOUS_CHANNELS), np.uint8)], -1)
    prev = to_model(torch.from_numpy(np.ascontiguousarray(previous, np.uint8)).permute(0, 3, 1, 2))
    warped = warp_previous(prev, torch.as_tensor(np.asarray(previous_crops, np.float32)),
                           torch.as_tensor(np.asarray(crops, np.float32)))
    warped = to_uint8(warped).permute(0, 2, 3, 1).numpy()
    return np.concatenate([skeletons, warped], -1)
