"""The person-centred crop: a square that follows the dancer and is sized by her body, frame by frame.

    crops = person_crops(keypoints, fps)                 # (N, 3) rows (cx, cy, side) in source pixels, DEFAULT framing
    crops = person_crops(keypoints, fps, Framing.of(config))   # as a run (config.json) or dataset was framed
    kp_crop = to_crop(keypoints, crops, size)            # keypoints in pixels of the size x size crop
    tile = crop_image(frame, crops[i], size)             # the frame's crop, black outside the frame
    M = placement(crops[i], size)                        # (2, 3) affine: crop pixels -> source pixels

Why: one fixed crop of the whole room makes the generator spend its pixels on a room that never
changes (dancer_long: the dancer ~100 px tall in a 256 px crop). Here the dancer fills the square at
any size, so every pixel of the generator works on her.

- Scale comes from `joints.body_height` (neck to ankle along the body: torso + thigh + shin), which
  does not shrink when she crouches or turns upside down, unlike a bounding box. Frames where it is
  unseen borrow it from their neighbours.
- The centre is on the torso's axis, a little above the hips (`centre_up` of the way to the neck),
  so that raised arms and feet both fit; it follows that axis when she is upside down.
- How wide and where (`Framing`: side in body heights, centre_up) is recorded in dataset.json and a
  run's config.json, and everything that frames for a run frames as it was trained (`Framing.of`):
  changing DEFAULT reframes new datasets only. Runs from before it was recorded: LEGACY.
  DEFAULT's side, measured (issue 12; "cut": over 0.2% of her segmentation mask outside the square):
  dancer_room.mp4 at 10 fps, side 1.8 dropped 9 of 40 frames as "outside_crop" and cut her feet in
  all 31 it kept; 2.0 cut 12 of 40 (hands or feet); 2.1 cut 2 (the fingertips of raised hands, under
  0.6% of her); 2.2 none. dancer_long_320x240.mp4 at 3 fps: 1.8 dropped 1 and cut 27 of 141; 2.1 cut
  2 (at most 1.1% of her). A wider square spends more of its pixels on the room.
- Both are smoothed over time (a rolling median against MediaPipe's outliers, then a Gaussian), in
  seconds so that any sampling rate smooths alike. A single pose (live preview) is not smoothed.
The crop is a similarity transform (scale + translation), stored per frame, so a generated frame goes
back exactly where the pose was: `placement` is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.wire.joints import INDEX, VISIBLE, body_height


@dataclass(frozen=True)
class Framing:
    """How the square is laid on the body; dataset.json and config.json hold it as {"side", "centre_up"}."""
    side: float         # crop side in body heights (neck to ankle)
    centre_up: float    # crop centre: from the mid-hip this far towards the neck

    def __post_init__(self):
        if not (self.side > 0 and 0 <= self.centre_up <= 1):
            raise ValueError(f"framing needs a positive side and centre_up in [0, 1], got {self}")

    @classmethod
    def of(cls, config: dict) -> "Framing":
        """The framing a run's config.json or a dataset.json records; LEGACY when it records none."""
        recorded = config.get("framing")
        if recorded is None:
            return LEGACY
        return cls(float(recorded["side"]), float(recorded["centre_up"]))


LEGACY = Framing(side=1.8, centre_up=0.25)   # every run and dataset made before the framing was recorded
# New datasets: the smallest side that keeps the dancer whole in almost every frame (measured: see above).
DEFAULT = Framing(side=2.1, centre_up=0.25)
SCALE_WINDOW_S = 1.0    # rolling median of the body height over this many seconds
SCALE_SIGMA_S = 0.3     # then a Gaussian of this sigma
CENTRE_SIGMA_S = 0.1    # the centre follows the dancer closely: a light Gaussian only
TORSO_SHARE = 0.37      # neck-to-mid-hip as a share of body_height, when the legs are unseen
# How far (seconds) a pose can move another frame's crop: a chunk framed with this much of its
# neighbours on each side is framed exactly as the whole sequence (protocol.CONTEXT_S covers it).
REACH_S = SCALE_WINDOW_S / 2 + 3 * SCALE_SIGMA_S


def _frame_measure(kp: np.ndarray, centre_up: float) -> tuple[float, float, float]:
    """(centre x, centre y, body height) of one pose; nan where it cannot be measured."""
    neck, hip = kp[INDEX["neck"]], kp[INDEX["mid_hip"]]
    height = body_height(kp)
    if neck[2] < VISIBLE or hip[2] < VISIBLE:
        return np.nan, np.nan, height if height else np.nan
    if not height:
        torso = float(np.hypot(*(neck[:2] - hip[:2])))
        height = torso / TORSO_SHARE if torso > 0 else np.nan
    centre = hip[:2] + centre_up * (neck[:2] - hip[:2])
    return float(centre[0]), float(centre[1]), float(height)


def _fill(values: np.ndarray) -> np.ndarray:
    """Interpolate the nan entries of a 1-D track from their neighbours (constant at the ends)."""
    seen = np.isfinite(values)
    if not seen.any():
        return values
    at = np.arange(len(values))
    return np.interp(at, at[seen], values[seen])


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.5 or len(values) < 2:
        return values
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, taps / taps.sum(), mode="valid")


def _rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    if window < 3 or len(values) < 3:
        return values
    half = window // 2
    padded = np.pad(values, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def person_crops(keypoints: np.ndarray, fps: float | None = None, framing: Framing = DEFAULT) -> np.ndarray:
    """(N, J, 3) keypoints of one continuous clip -> (N, 3) float32 crops (cx, cy, side) in its pixels.

    framing: DEFAULT for a new dataset; for a run, the one it was trained with (Framing.of(config)).

    fps None (or a single pose) means no smoothing: each pose framed on its own (live preview).
    Frames with no measurable body take their neighbours' crop; a clip with none at all raises
    ValueError.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    measures = np.array([_frame_measure(k, framing.centre_up) for k in kp], dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(measures).all(axis=1).any():
        raise ValueError("no frame shows enough of a body to frame (neck, hips and legs or torso)")
    cx, cy, height = (_fill(measures[:, i]) for i in range(3))
    if fps and len(kp) > 1:
        height = _gaussian(_rolling_median(height, int(round(SCALE_WINDOW_S * fps)) | 1), SCALE_SIGMA_S * fps)
        cx, cy = _gaussian(cx, CENTRE_SIGMA_S * fps), _gaussian(cy, CENTRE_SIGMA_S * fps)
    return np.stack([cx, cy, framing.side * height], axis=1).astype(np.float32)


def crop_matrix(crop, size: int) -> np.ndarray:
    """(2, 3) affine from source pixels to pixels of the size x size crop."""
    cx, cy, side = (float(v) for v in crop)
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]], np.float64)


def placement(crop, size: int) -> np.ndarray:
    """(2, 3) affine from pixels of the size x size crop back to source pixels: where the crop goes."""
    cx, cy, side = (float(v) for v in crop)
    s = side / size
    return np.array([[s, 0.0, cx - s * size / 2], [0.0, s, cy - s * size / 2]], np.float64)


def to_crop(keypoints: np.ndarray, crops: np.ndarray, size: int) -> np.ndarray:
    """(N, J, 3) keypoints in source pixels -> the same in each frame's crop pixels (visibility kept)."""
    kp = np.asarray(keypoints, dtype=np.float32).copy()
    crops = np.asarray(crops, dtype=np.float32).reshape(-1, 3)
    s = (size / crops[:, 2])[:, None]
    kp[..., 0] = (kp[..., 0] - crops[:, 0:1]) * s + size / 2
    kp[..., 1] = (kp[..., 1] - crops[:, 1:2]) * s + size / 2
    return kp


def crop_image(image: np.ndarray, crop, size: int, interpolation: int | None = None) -> np.ndarray:
    """The crop of an (H, W[, C]) image as (size, size[, C]), zero (black, transparent) outside the frame."""
    import cv2
    side = float(crop[2])
    if interpolation is None:
        interpolation = cv2.INTER_AREA if side > 1.5 * size else cv2.INTER_LINEAR
    if interpolation == cv2.INTER_AREA:         # warpAffine has no area filter: shrink first, then warp
        factor = size / side
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
        scaled = (crop[0] * small.shape[1] / w, crop[1] * small.shape[0] / h, side * small.shape[1] / w)
        return cv2.warpAffine(small, crop_matrix(scaled, size), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(image, crop_matrix(crop, size), (size, size), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
