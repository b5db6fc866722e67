"""The clean background plate of a clip: the room without the dancer, where the camera stands still.

    plate = build_plate(frames, masks)      # frames (N, H, W, 3) uint8, masks (N, H, W) float person mask
    if plate.image is None: log.info(plate.reason)     # a moving camera: no plate, said once

Per pixel, the median of the frames in which that pixel is not the dancer (her mask, grown by a
margin so her soft edge and shadow stay out); pixels she covers in every frame are filled from
their surroundings (cv2.inpaint) and counted. With a plate the background is exact, not generated.

A moving camera (or a cut, or lights that change) leaves the background itself varying: the plate's
residual against the frames' own background pixels is then large, and the clip gets no plate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_FRAMES = 60          # frames spread over the clip that vote for each pixel (memory: N x H x W x 3 bytes)
MASK_THRESHOLD = 0.2     # mask confidence above which a pixel is the dancer
GROW = 0.02              # grow the mask by this share of the frame's larger side (soft edges, shadows)
STILL_RESIDUAL = 12.0    # median absolute background difference (0-255) above which the camera moved
ROWS = 64                # median computed this many rows at a time, to bound memory on large frames


@dataclass(frozen=True)
class Plate:
    """A clip's plate (H, W, 3) uint8, or None with the reason; `residual` is the still-camera test's figure."""
    image: np.ndarray | None
    residual: float
    uncovered: float            # share of pixels the dancer covered in every frame (inpainted)
    reason: str = ""


def _grown(masks: np.ndarray) -> np.ndarray:
    import cv2
    person = (masks > MASK_THRESHOLD).astype(np.uint8)
    radius = max(1, int(round(GROW * max(masks.shape[1:]))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(m, kernel) for m in person]).astype(bool)


def spread(n: int, most: int = MAX_FRAMES) -> np.ndarray:
    """Indices of at most `most` frames spread evenly over n."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(int)) if n else np.zeros(0, int)


def _nan_median(block: np.ndarray) -> np.ndarray:
    """np.nanmedian over axis 0, by one sort (nan sorts last): ten times faster; nan where all are nan."""
    ordered = np.sort(block, axis=0)
    n = np.isfinite(ordered).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], 0)[0]
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[None], 0)[0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def build_plate(frames: np.ndarray, masks: np.ndarray) -> Plate:
    """The plate of one clip from its frames and the dancer's masks (both in the source frame's pixels)."""
    import cv2
    frames, masks = np.asarray(frames), np.asarray(masks, dtype=np.float32)
    if len(frames) < 3:
        return Plate(None, float("nan"), 1.0, "too few frames for a background plate")
    person = _grown(masks)
    n, h, w = person.shape
    plate = np.zeros((h, w, 3), np.uint8)
    seen = np.zeros((h, w), bool)
    for y in range(0, h, ROWS):                              # median over the frames where it is background
        block = frames[:, y:y + ROWS].astype(np.float32)
        block[person[:, y:y + ROWS]] = np.nan
        median = _nan_median(block)
        seen[y:y + ROWS] = np.isfinite(median).all(axis=-1)
        plate[y:y + ROWS] = np.nan_to_num(median).round().clip(0, 255).astype(np.uint8)
    uncovered = float(1.0 - seen.mean())
    if uncovered > 0.5:
        return Plate(None, float("nan"), uncovered, "the dancer covers most of the frame: no background plate")
    if uncovered > 0:
        plate = cv2.inpaint(plate, (~seen).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    background = ~person & seen[None]
    diffs = np.abs(frames.astype(np.int16) - plate[None].astype(np.int16)).mean(axis=-1)
    per_frame = np.array([np.median(d[b]) if b.any() else 0.0 for d, b in zip(diffs, background)])
    residual = float(np.percentile(per_frame, 75))
    if residual > STILL_RESIDUAL:
        return Plate(None, residual, uncovered,
                     f"the background moves (camera motion or a cut: residual {residual:.0f}/255): no plate")
    return Plate(plate, residual, uncovered)
