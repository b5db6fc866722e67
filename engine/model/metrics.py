"""Image and pose metrics for validation and evaluation: SSIM, PSNR, L1, flicker, pose distance.

All image metrics take float tensors (N, C, H, W) with values in [0, 1] (use `to_unit` on uint8
(N, H, W, C) arrays) and return one value per image, shape (N,). An optional `mask` (N, H, W) or
(H, W), bool or 0/1, restricts the mean to a region (the dancer's box in evaluation).

- SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1,
  computed per RGB channel and averaged over the channels (like skimage's `channel_axis` with
  `gaussian_weights=True`). The SSIM map is computed at every pixel with reflect padding, so that
  it can be averaged over any region; over the whole image this differs from the 'valid'-window
  reference only at the borders.
- PSNR in dB with data range 1; identical images give +inf in theory, here capped at `PSNR_CAP`
  (100 dB) so the number stays finite and JSON-ready.
- L1: mean absolute difference in [0, 1] units (multiply by 2 for the [-1, 1] units of the loss).
- flicker: mean absolute change between consecutive frames, in [0, 1] units.
- alpha IoU: intersection over union of two mattes, each thresholded at 0.5 (the generated alpha
  against the dancer's stored mask).
- pose distance: mean distance between joints seen in both poses, divided by body height
  ("pose distance" in Chan et al., "Everybody Dance Now", 2019).
- pose error: MediaPipe on each generated frame (upscaled to the detector's 256 px input when
  smaller), its most confident person against the input pose: the pose distance averaged over the
  frames where a person is found, with the detection rate beside it. The one measure behind
  `pix2dance eval` and `pix2dance demo`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.wire.joints import VISIBLE, body_height

PSNR_CAP = 100.0
DETECT_SIZE = 256          # MediaPipe's pose detector looks at 256 x 256 images
_K1, _K2 = 0.01, 0.03


def to_unit(images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) (or (H, W, C)) -> float32 (N, C, H, W) in [0, 1] on `device`."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.ndim == 3:
        t = t[None]
    return t.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized 1D Gaussian, shape (size,)."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x * x) / (2 * sigma * sigma))
    return w / w.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, C, H, W), reflect padding, same size out."""
    c, k = x.shape[1], window.numel()
    pad = k // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0,
             window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM, averaged over channels: (N, C, H, W) x2 -> (N, H, W)."""
    _check(a, b)
    a, b = a.double(), b.double()     # the variance terms cancel badly in float32
    w = gaussian_window(window_size, sigma, a.device, a.dtype)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_a, mu_b = _blur(a, w), _blur(b, w)
    var_a = _blur(a * a, w) - mu_a * mu_a
    var_b = _blur(b * b, w) - mu_b * mu_b
    cov = _blur(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.mean(1).float()


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM per image, (N,): 1 for identical images, lower as they differ."""
    return _masked_mean(ssim_map(a, b), mask)


def l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference per image, (N,), in the images' units."""
    _check(a, b)
    return _masked_mean((a.float() - b.float()).abs().mean(1), mask)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
         data_range: float = 1.0, cap: float = PSNR_CAP) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, (N,), capped at `cap` (identical images)."""
    _check(a, b)
    mse = _masked_mean(((a.double() - b.double()) ** 2).mean(1), mask)
    out = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-300))
    return out.clamp(max=cap).float()


def flicker(frames: torch.Tensor, breaks: np.ndarray | None = None) -> float:
    """Mean absolute change between consecutive frames (N, C, H, W) in [0, 1]; 0 for < 2 frames.

    breaks: optional bool (N - 1,), True where frames i and i + 1 are not consecutive (a new clip
    starts), so that those pairs are skipped.
    """
    if len(frames) < 2:
        return 0.0
    diffs = (frames[1:].float() - frames[:-1].float()).abs().mean(dim=(1, 2, 3))   # (N - 1,)
    if breaks is not None:
        keep = ~torch.as_tensor(np.asarray(breaks, bool), device=diffs.device)
        diffs = diffs[keep]
    return float(diffs.mean()) if len(diffs) else 0.0


def alpha_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, threshold: float = 0.5) -> float:
    """Mean IoU of two stacks of mattes (N, H, W) in [0, 1], each thresholded at `threshold`.

    Frames where both are empty count as 1 (they agree); the mean is over all frames."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (N, H, W) stacks of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not len(a):
        return float("nan")
    x, y = a > threshold, b > threshold
    inter = (x & y).sum(dim=(1, 2)).double()
    union = (x | y).sum(dim=(1, 2)).double()
    return float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())


def image_scores(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Mean SSIM, PSNR and L1 of (N, C, H, W) images in [0, 1] (within `mask` if given), as floats."""
    return {"ssim": float(ssim(a, b, mask).mean()), "psnr": float(psnr(a, b, mask).mean()),
            "l1": float(l1(a, b, mask).mean())}


def pose_distance(detected: np.ndarray, target: np.ndarray, height: float | None = None) -> float | None:
    """Mean distance between joints visible in both (J, 3) poses, over body height; None if unmeasurable.

    height defaults to the target's neck-to-ankle body height (joints.body_height).
    """
    detected, target = np.asarray(detected, np.float64), np.asarray(target, np.float64)
    if height is None:
        height = body_height(target)
    seen = (detected[:, 2] >= VISIBLE) & (target[:, 2] >= VISIBLE)
    if not height or height <= 0 or not seen.any():
        return None
    return float(np.linalg.norm(detected[seen, :2] - target[seen, :2], axis=1).mean() / height)


def detect_poses(images: np.ndarray, model: str | Path, fps: float, quiet: bool = True,
                 desc: str = "pose") -> list[np.ndarray | None]:
    """The most confident person in each RGB (N, S, S, 3) frame of a clip, (J, 3) in its pixels, or None.

    Frames smaller than DETECT_SIZE are upscaled (bicubic) first: the detector finds far fewer
    people in a 64 px frame blown up by its own resampling. The frames run as a video stream
    (MediaPipe's tracking) at `fps`.
    """
    import cv2
    from tqdm import tqdm

    from engine.data.pose import PoseEstimator
    scale = max(1.0, DETECT_SIZE / images.shape[1]) if len(images) else 1.0
    found: list[np.ndarray | None] = []
    with PoseEstimator(model, num_poses=1) as estimator:
        for i, image in enumerate(tqdm(images, desc=desc, unit="frame", disable=quiet, leave=False)):
            if scale > 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            people = estimator.detect(np.ascontiguousarray(image), i * 1000.0 / fps)
            if people:
                kp = people[0].copy()
                kp[:, :2] /= scale
                found.append(kp)
            else:
                found.append(None)
    return found


def pose_scores(found: list[np.ndarray | None], targets: np.ndarray,
                fallback_height: float | None = None) -> tuple[float | None, float]:
    """(mean pose distance over the frames with a person, or None; the share of frames with a person).

    Each frame's distance is over its target's body height, or `fallback_height` (the dataset's
    body height, in the same pixels) when the target's cannot be measured.
    """
    distances = []
    for kp, target in zip(found, targets):
        if kp is None:
            continue
        d = pose_distance(kp, target, body_height(target) or fallback_height)
        if d is not None:
            distances.append(d)
    rate = sum(kp is not None for kp in found) / max(1, len(found))
    return (float(np.mean(distances)) if distances else None), float(rate)


def pose_error(images: np.ndarray, targets: np.ndarray, model: str | Path, fps: float,
               fallback_height: float | None = None, quiet: bool = True,
               desc: str = "pose") -> tuple[float | None, float]:
    """Pose error of RGB frames (N, S, S, 3) against the poses they should show, (N, J, 3) in their
    pixels: (mean pose distance or None when no person is found; detection rate)."""
    return pose_scores(detect_poses(images, model, fps, quiet, desc), targets, fallback_height)


def keypoint_box(kp: np.ndarray, size: int | tuple[int, int], margin: float = 0.15) -> tuple[int, int, int, int] | None:
    """The dancer's box (x0, y0, x1, y1), end-exclusive, from visible joints of (J, 3) keypoints.

    Grown by `margin` x the box's larger side on every side (limbs and hair reach past the joints)
    and clipped to the image: size x size, or (width, height); None when no joint is seen.
    """
    width, height = (size, size) if np.ndim(size) == 0 else size
    seen = kp[:, 2] >= VISIBLE
    if not seen.any():
        return None
    xy = kp[seen, :2]
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    grow = margin * max(x1 - x0, y1 - y0, 1.0)
    box = (math.floor(x0 - grow), math.floor(y0 - grow), math.ceil(x1 + grow) + 1, math.ceil(y1 + grow) + 1)
    x0, x1 = (int(np.clip(v, 0, width)) for v in box[0::2])
    y0, y1 = (int(np.clip(v, 0, height)) for v in box[1::2])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def box_masks(keypoints: np.ndarray, size: int | tuple[int, int], margin: float = 0.15) -> torch.Tensor:
    """(N, J, 3) keypoints -> bool masks (N, H, W) of the dancer's box (whole image if unseen); size: S or (W, H)."""
    width, height = (size, size) if np.ndim(size) == 0 else size
    masks = torch.zeros((len(keypoints), height, width), dtype=torch.bool)
    for i, kp in enumerate(keypoints):
        box = keypoint_box(kp, size, margin)
        if box is None:
            masks[i] = True
        else:
            x0, y0, x1, y1 = box
            masks[i, y0:y1, x0:x1] = True
    return masks


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(N, H, W) -> (N,) mean over all pixels, or over the mask's pixels."""
    if mask is None:
        return values.mean(dim=(1, 2))
    m = mask.to(values.device, values.dtype)
    if m.ndim == 2:
        m = m.expand_as(values)
    return (values * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
