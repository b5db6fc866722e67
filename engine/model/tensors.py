"""The generator's pixel range: uint8 images <-> float tensors in [-1, 1] (the tanh output's range).

    x = to_model(skeletons_uint8)       # (N, 3, S, S) uint8 -> float32 in [-1, 1], same device
    frames = to_uint8(G(x))             # [-1, 1] -> uint8, rounded and clipped

Layout is the caller's: both work elementwise on any shape, so an (N, H, W, C) view permuted to
(N, C, H, W) stays a view.
"""

from __future__ import annotations

import torch


def to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Float [-1, 1] (any dtype) -> uint8 [0, 255], rounded to nearest and clipped."""
    return y.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
