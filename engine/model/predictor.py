"""A trained dancer, ready to serve: keypoints from any source image in, the dancer placed in a frame out.

    p = Predictor("runs/anna")                       # device and backend "auto": torch on cuda, else OpenVINO
    out = p.render(kp, source_size=(1920, 1080), placement="source", alpha=True, fps=24)
    out.frames, out.placements                       # (N, H, W, 4) uint8 straight alpha; (N, 2, 3) crop -> frame
    frames = p.predict(kp, source_size=(1920, 1080)) # the same path, frames only (placement "crop")

The path is the one training used, in three steps the server runs apart (it batches `generate`
across requests):
1. `frame`: the pose goes into the canvas: the source image itself ("crop", "source"), or the
   dancer's own video frame, moved there by global pose normalization ("dancer": normalize.to_dancer,
   the only place normalization happens). A person-centred crop (engine.data.framing) follows the
   body, smoothed over the sequence when its fps is known; the skeleton is drawn in it.
2. `generate`: the generator turns the drawings into RGBA crops, max_batch at a time, on a backend
   (backends.py: torch, or OpenVINO on a CPU). Its inputs come from a `Sequence` (engine.model.sequence):
   for a temporal run (one that sees its previous output) the frames of a sequence go in order, in
   contiguous lanes that each advance one frame a batch; for any other run, in order, a batch at a time.
3. `place`: each crop goes where its pose was (engine.model.compose): the bare crop, or placed into
   the canvas, composited over a background (the dancer's plate, an image, black) or kept RGBA.
Runs from before mattes (3 output channels, one fixed room crop) still serve the bare crop, normalized
into the dancer's square as they were trained; they cannot place or give alpha.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data import framing, normalize, skeleton
from engine.data.pairs import read_rgb
from engine.errors import UserError
from engine.model import compose
from engine.model.backends import load_backend, resolve_backend
from engine.model.novelty import Repertoire
from engine.model.runs import STAGE_PLATE, read_config, temporal
from engine.model.sequence import Previous, Sequence, lane_count
from engine.model.temporal import WARMUP, in_channels
from engine.wire.joints import NUM_JOINTS
from engine.wire.protocol import PLACEMENTS

log = logging.getLogger(__name__)

# Keypoints farther out than this (pixels) are treated as unseen: garbage in must not overflow.
FAR = 1e6


def sanitize(keypoints: np.ndarray) -> np.ndarray:
    """A float32 copy where non-finite or absurdly far joints are unseen (visibility 0, at 0, 0)."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    bad = ~np.isfinite(kp).all(axis=-1) | (np.abs(np.nan_to_num(kp[..., :2])) > FAR).any(axis=-1)
    kp[bad] = 0.0
    return kp


@dataclass
class Framed:
    """Step 1's result: the poses in the generator's square, and where each output goes.

    keypoints: (N, J, 3) in pixels of the size x size square the generator draws in.
    crops: (N, 3) person-centred crops (cx, cy, side) in canvas pixels; None for a run without mattes.
    canvas: (width, height) of the output frame; None for the bare crop.
    Skeletons are drawn a slice at a time (`skeletons(a, b)`), so a long sequence framed as a whole
    (its crop smoothed over all of it) never holds all its drawings at once.
    """
    keypoints: np.ndarray
    crops: np.ndarray | None
    canvas: tuple[int, int] | None
    size: int

    def __len__(self) -> int:
        return len(self.keypoints)

    def skeletons(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n, S, S, 3) uint8: frames [start, stop) drawn as in training."""
        return skeleton.draw_batch(self.keypoints[start:stop], self.size)

    def part(self, start: int, stop: int) -> "Framed":
        return Framed(self.keypoints[start:stop], None if self.crops is None else self.crops[start:stop],
                      self.canvas, self.size)


@dataclass
class Rendered:
    """Frames and, for each, its placement (the (2, 3) affine from crop pixels to frame pixels) and its
    novelty (body heights from the dancer's repertoire, engine.model.novelty); None where unknown."""
    frames: np.ndarray
    placements: np.ndarray | None
    novelty: np.ndarray | None = None


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
        self.alpha = int(self.config.get("channels", 3)) == 4          # a matte: every placement works
        self.out_channels = 4 if self.alpha else 3
        self.temporal = temporal(self.config)                          # G sees its previous output too
        self.in_channels = in_channels(self.temporal)
        self.stage = self.config.get("stage")                          # the dancer's own frame: width, height, stats
        plate = self.run_dir / STAGE_PLATE
        self.plate = read_rgb(plate) if self.alpha and plate.is_file() else None
        self.repertoire = Repertoire.load(self.run_dir) if self.alpha else None       # out-of-repertoire scores
        self.backend = load_backend(backend_name, self.run_dir, self.config, self.device,
                                    amp="off" if precision == "fp32" else "auto", channels_last=channels_last)

    @property
    def generator(self):
        """The torch module (with OpenVINO, loaded only when asked for)."""
        return self.backend.generator

    def warm_up(self) -> None:
        """Run one frame and one batch now (OpenVINO compiles each path on first use, cuDNN tunes)."""
        for n in sorted({1, min(2, self.max_batch)}):
            self.generate(np.zeros((n, self.size, self.size, self.in_channels), np.uint8))

    def describe(self) -> dict:
        """What `info` tells clients about this model."""
        return {"name": self.name, "size": self.size, "joints": self.joints, "stats": self.stats,
                "stats_size": self.stats_size, "device": str(self.device), "backend": self.backend.name,
                "precision": self.backend.precision, "alpha": self.alpha,
                "stage": {"width": self.stage["width"], "height": self.stage["height"]} if self.stage else None,
                "novelty_threshold": self.repertoire.threshold if self.repertoire else None,
                "framing": self.config.get("framing"),
                "temporal": self.temporal, "warmup": WARMUP if self.temporal else 0}

    def normalize(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                  source_stats: dict | None = None) -> np.ndarray:
        """A run without mattes: (N, J, 3) source pixels -> (N, J, 3) pixels of the dancer's size x size image."""
        kp = self._checked(keypoints)
        out = normalize.to_dancer(kp, mode, tuple(source_size), self.stats, self.stats_size, self.size, source_stats)
        return sanitize(out)

    def frame(self, keypoints, source_size: tuple[int, int], mode: str = "frame", source_stats: dict | None = None,
              *, placement: str = "crop", fps: float | None = None) -> Framed:
        """Step 1: (N, J, 3) keypoints in source pixels -> the drawn skeletons and where each frame goes."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if mode not in normalize.MODES:
            raise ValueError(f"normalization mode must be one of {normalize.MODES}, got {mode!r}")
        if not self.alpha:
            if placement != "crop":
                raise UserError(f"{self.run_dir} was trained before mattes: it gives only the bare crop "
                                f"(--placement crop), or retrain it")
            return Framed(self.normalize(keypoints, source_size, mode, source_stats), None, None, self.size)
        kp = self._checked(keypoints)
        canvas = tuple(int(v) for v in source_size)
        if placement == "dancer":            # into her own frame: her statistics are in its pixels
            side = max(self.stage["width"], self.stage["height"])
            kp = sanitize(normalize.to_dancer(kp, mode, canvas, self.stage["stats"], side, side, source_stats))
            canvas = (int(self.stage["width"]), int(self.stage["height"]))
        try:
            crops = framing.person_crops(kp, fps, framing.Framing.of(self.config)) if len(kp) else np.zeros((0, 3), np.float32)
        except ValueError:                   # no body anywhere: frame the canvas itself, nothing is drawn
            crops = np.tile(np.float32([canvas[0] / 2, canvas[1] / 2, max(canvas)]), (len(kp), 1))
        return Framed(framing.to_crop(kp, crops, self.size), crops, None if placement == "crop" else canvas, self.size)

    def skeletons(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                  source_stats: dict | None = None, *, placement: str = "crop", fps: float | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 skeleton images, framed and drawn as in training: the generator's input
        (a temporal run's sees its previous output beside them: Sequence.inputs)."""
        return self.frame(keypoints, source_size, mode, source_stats, placement=placement, fps=fps).skeletons()

    def sequence(self, framed: Framed, first: int = 0, count: int | None = None, previous: Previous | None = None,
                 lanes: int | None = None) -> Sequence:
        """Frames [first, first + count) of `framed` (count None: to its end) in the order this run's
        generator needs them; lanes None: as many as fill a batch (engine.model.sequence.lane_count)."""
        count = len(framed) - first if count is None else count
        lanes = lane_count(count, self.max_batch, self.temporal) if lanes is None else lanes
        return Sequence(framed, first, count, temporal=self.temporal, lanes=lanes, previous=previous)

    def generate_sequence(self, sequence: Sequence):
        """Run a sequence to its end, a batch of up to max_batch at a time: yields each batch's kept
        frames as a list of (k, crop), k in [0, count); lanes finish out of order."""
        while not sequence.done:
            indices = sequence.take(self.max_batch)
            yield sequence.feed(indices, self.generate(sequence.inputs(indices)))

    def generate(self, inputs: np.ndarray) -> np.ndarray:
        """Step 2: (N, S, S, in_channels) uint8 inputs (skeleton images, and for a temporal run the
        previous output: Sequence.inputs) -> (N, S, S, C) uint8 crops, max_batch at a time.

        C is 4 (RGB + straight alpha) for a run with mattes, 3 for one without."""
        inputs = np.ascontiguousarray(inputs, dtype=np.uint8)
        if inputs.ndim != 4 or inputs.shape[1:] != (self.size, self.size, self.in_channels):
            raise ValueError(f"inputs must have shape (N, {self.size}, {self.size}, {self.in_channels}), "
                             f"got {inputs.shape}")
        if not len(inputs):
            return np.zeros((0, self.size, self.size, self.out_channels), np.uint8)
        return np.concatenate([self.backend.run(inputs[start:start + self.max_batch])
                               for start in range(0, len(inputs), self.max_batch)])

    def place(self, images: np.ndarray, framed: Framed, *, alpha: bool = False,
              background: np.ndarray | None = None) -> Rendered:
        """Step 3: generated crops -> frames where the poses were.

        alpha: RGBA frames (straight alpha, the dancer's matte); else RGB composited over `background`
        ((H, W, 3) of the canvas, or None: black). A run without mattes returns its crops as they are.
        """
        if framed.crops is None:
            if alpha:
                raise UserError(f"{self.run_dir} was trained before mattes: it cannot give alpha")
            return Rendered(images, None)
        size = self.size
        if framed.canvas is None:            # the bare crop; its placement says where it was in the source
            frames = images if alpha else np.stack([compose.over(rgba, None) for rgba in images]) if len(images) \
                else np.zeros((0, size, size, 3), np.uint8)
        else:
            layers = [compose.place(rgba, framing.placement(crop, size), framed.canvas)
                      for rgba, crop in zip(images, framed.crops)]
            w, h = framed.canvas
            if not layers:
                frames = np.zeros((0, h, w, 4 if alpha else 3), np.uint8)
            else:
                frames = np.stack(layers if alpha else [compose.over(layer, background) for layer in layers])
        placements = np.stack([framing.placement(crop, size) for crop in framed.crops]) if len(framed.crops) \
            else np.zeros((0, 2, 3))
        novelty = self.repertoire.novelty(framed.keypoints, size) if self.repertoire else None
        return Rendered(frames, placements, novelty)

    def render(self, keypoints, source_size: tuple[int, int], mode: str = "frame", source_stats: dict | None = None,
               *, placement: str = "crop", alpha: bool = False, fps: float | None = None,
               background: np.ndarray | None = None) -> Rendered:
        """Steps 1-3: keypoints (N, J, 3) float32 in source pixels -> the dancer, placed, and each placement."""
        framed = self.frame(keypoints, source_size, mode, source_stats, placement=placement, fps=fps)
        images = np.zeros((len(framed), self.size, self.size, self.out_channels), np.uint8)
        for kept in self.generate_sequence(self.sequence(framed)):
            for k, crop in kept:
                images[k] = crop
        return self.place(images, framed, alpha=alpha, background=background)

    def predict(self, keypoints, source_size: tuple[int, int], mode: str = "frame",
                source_stats: dict | None = None) -> np.ndarray:
        """Keypoints (N, J, 3) in source pixels -> (N, S, S, 3) uint8 frames of the bare crop."""
        return self.render(keypoints, source_size, mode, source_stats).frames

    def _checked(self, keypoints) -> np.ndarray:
        kp = sanitize(keypoints)
        if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"keypoints must have shape (N, {NUM_JOINTS}, 3), got {kp.shape}")
        return kp

