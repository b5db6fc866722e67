"""A trained dancer, ready to serve: keypoints from any source image in, generated frames out.

    p = Predictor("runs/anna")                       # device and backend "auto": torch on cuda, else OpenVINO
    frames = p.predict(kp, source_size=(1920, 1080), mode="clip", source_stats=stats)   # (N, S, S, 3) uint8
    skel = p.skeletons(kp, source_size=(1920, 1080))  # the drawn inputs, for side-by-side output
    frames = p.generate(skel)                        # the generator alone, batched

The path is the one training used: normalize.to_dancer moves the pose into the dancer's space
(the only place normalization happens), skeleton.draw draws it, and the generator turns the
drawing into a frame. Inference runs in batches of at most `max_batch` on a backend (backends.py):
torch (on a GPU with mixed precision, bf16 where supported, else fp16, and channels_last) or
OpenVINO on a CPU; backend "auto" picks torch on CUDA and OpenVINO on a CPU. The server batches
frames from several requests through `generate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.data import normalize, skeleton
from engine.model.backends import load_backend, resolve_backend
from engine.model.runs import read_config
from engine.wire.joints import NUM_JOINTS

log = logging.getLogger(__name__)

# Keypoints farther out than this (pixels) are treated as unseen: garbage in must not overflow.
FAR = 1e6


def sanitize(keypoints: np.ndarray) -> np.ndarray:
    """A float32 copy where non-finite or absurdly far joints are unseen (visibility 0, at 0, 0)."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    bad = ~np.isfinite(kp).all(axis=-1) | (np.abs(np.nan_to_num(kp[..., :2])) > FAR).any(axis=-1)
    kp[bad] = 0.0
    return kp


class Predictor:
    """One run directory's generator on one device and backend.

    backend: "auto" (torch on cuda, OpenVINO on a CPU), "torch" or "openvino" (CPU only).
    precision: "auto" (bf16/fp16 autocast on cuda, fp32 elsewhere) or "fp32".
    channels_last: None = on for cuda. max_batch: frames per generator call (None: 16 cuda, 4 cpu).
    """

    def __init__(self, run_dir: str | Path, device: str = "auto", *, backend: str = "auto",
                 max_batch: int | None = None, precision: str = "auto", channels_last: bool | None = None):
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision must be 'auto' or 'fp32', got {precision!r}")
        self.run_dir = Path(run_dir)
        backend_name, self.device = resolve_backend(backend, device)
        self.config = read_config(self.run_dir)
        self.name = str(self.config.get("name") or self.run_dir.resolve().name)
        self.size = int(self.config["size"])
        self.stats = dict(self.config["stats"])
        self.stats_size = int(self.config["stats_size"])
        self.joints = list(self.config["joints"])
        self.max_batch = int(max_batch or (16 if self.device.type == "cuda" else 4))
        self.backend = load_backend(backend_name, self.run_dir, self.config, self.device,
                                    amp="off" if precision == "fp32" else "auto", channels_last=channels_last)

    @property
    def generator(self):
        """The torch module (with OpenVINO, loaded only when asked for)."""
        return self.backend.generator

    def warm_up(self) -> None:
        """Run one frame and one batch now (OpenVINO compiles each path on first use, cuDNN tunes)."""
        for n in sorted({1, min(2, self.max_batch)}):
            self.generate(np.zeros((n, self.size, self.size, 3), np.uint8))

    def describe(self) -> dict:
        """What `info` tells clients about this model."""
        return {"name": self.name, "size": self.size, "joints": self.joints, "stats": self.stats,
                "stats_size": self.stats_size, "device": str(self.device), "backend": self.backend.name,
                "precision": self.backend.precision}

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
        if not len(skeletons):
            return skeletons.copy()
        return np.concatenate([self.backend.run(skeletons[start:start + self.max_batch])
                               for start in range(0, len(skeletons), self.max_batch)])

    def predict(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                source_stats: dict | None = None) -> np.ndarray:
        """Keypoints (N, J, 3) float32 in source pixels -> (N, S, S, 3) uint8 RGB frames of the dancer."""
        return self.generate(self.skeletons(keypoints, source_size, mode, source_stats))
