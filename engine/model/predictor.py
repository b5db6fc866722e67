"""A trained dancer, ready to serve: keypoints from any source image in, generated frames out.

    p = Predictor("runs/anna")                       # device "auto": cuda when available
    frames = p.predict(kp, source_size=(1920, 1080), mode="clip", source_stats=stats)   # (N, S, S, 3) uint8
    skel = p.skeletons(kp, source_size=(1920, 1080))  # the drawn inputs, for side-by-side output
    frames = p.generate(skel)                        # the generator alone, batched

The path is the one training used: normalize.to_dancer moves the pose into the dancer's space
(the only place normalization happens), skeleton.draw draws it, and the generator turns the
drawing into a frame. Inference runs in batches of at most `max_batch` under torch.inference_mode;
on a GPU with mixed precision (bf16 where supported, else fp16) and channels_last memory layout.
The server batches frames from several requests through `generate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engine.data import normalize, skeleton
from engine.errors import UserError
from engine.wire.joints import NUM_JOINTS, VISIBLE
from engine.model.runs import load_generator

log = logging.getLogger(__name__)

# Keypoints farther out than this (pixels) are treated as unseen: garbage in must not overflow.
FAR = 1e6


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA GPU (use --device cpu)")
    return torch.device(device)


def sanitize(keypoints: np.ndarray) -> np.ndarray:
    """A float32 copy where non-finite or absurdly far joints are unseen (visibility 0, at 0, 0)."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    bad = ~np.isfinite(kp).all(axis=-1) | (np.abs(np.nan_to_num(kp[..., :2])) > FAR).any(axis=-1)
    kp[bad] = 0.0
    return kp


class Predictor:
    """One run directory's generator on one device.

    precision: "auto" (bf16/fp16 autocast on cuda, fp32 on cpu) or "fp32".
    channels_last: None = on for cuda. max_batch: frames per generator call (None: 16 cuda, 4 cpu).
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", *, max_batch: int | None = None,
                 precision: str = "auto", channels_last: bool | None = None):
        self.run_dir = Path(run_dir)
        self.device = resolve_device(device)
        self.generator, self.config = load_generator(self.run_dir, self.device)
        self.name = str(self.config.get("name") or self.run_dir.resolve().name)
        self.size = int(self.config["size"])
        self.stats = dict(self.config["stats"])
        self.stats_size = int(self.config["stats_size"])
        self.joints = list(self.config["joints"])
        cuda = self.device.type == "cuda"
        self.max_batch = int(max_batch or (16 if cuda else 4))
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision must be 'auto' or 'fp32', got {precision!r}")
        self.autocast_dtype = None
        if cuda and precision == "auto":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        if cuda:
            torch.backends.cudnn.benchmark = True    # few distinct batch shapes: tune each once
        if self.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)

    def describe(self) -> dict:
        """What `info` tells clients about this model."""
        return {"name": self.name, "size": self.size, "joints": self.joints, "stats": self.stats,
                "stats_size": self.stats_size, "device": str(self.device),
                "precision": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "fp32"}

    def normalize(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                  source_stats: dict | None = None) -> np.ndarray:
        """(N, J, 3) source pixels -> (N, J, 3) pixels of the dancer's size x size image."""
        kp = sanitize(keypoints)
        if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"keypoints must have shape (N, {NUM_JOINTS}, 3), got {kp.shape}")
        out = normalize.to_dancer(kp, mode, tuple(source_size), self.stats, self.stats_size, self.size, source_stats)
        return sanitize(out)

    def skeletons(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                  source_stats: dict | None = None) -> np.ndarray:
        """The generator's inputs: (N, S, S, 3) uint8 skeleton images, normalized and drawn as in training."""
        kp = self.normalize(keypoints, source_size, mode, source_stats)
        return skeleton.draw_batch(kp, self.size)

    def generate(self, skeletons: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 skeleton images -> (N, S, S, 3) uint8 RGB frames, max_batch at a time."""
        skeletons = np.ascontiguousarray(skeletons, dtype=np.uint8)
        if skeletons.ndim != 4 or skeletons.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"skeletons must have shape (N, {self.size}, {self.size}, 3), got {skeletons.shape}")
        out = np.empty_like(skeletons)
        for start in range(0, len(skeletons), self.max_batch):
            out[start:start + self.max_batch] = self._run(skeletons[start:start + self.max_batch])
        return out

    def predict(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                source_stats: dict | None = None) -> np.ndarray:
        """Keypoints (N, J, 3) float32 in source pixels -> (N, S, S, 3) uint8 RGB frames of the dancer."""
        return self.generate(self.skeletons(keypoints, source_size, mode, source_stats))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One generator call on (B, S, S, 3) uint8."""
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            # (B, H, W, C) -> (B, C, H, W): a permuted view, which is already channels_last in memory.
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            if not self.channels_last:
                x = x.contiguous()
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    y = self.generator(x)
            else:
                y = self.generator(x)
            # [-1, 1] -> uint8, (B, C, H, W) -> (B, H, W, C)
            y = y.float().add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
            return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()
