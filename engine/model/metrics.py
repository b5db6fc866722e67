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
- pose distance: mean distance between joints seen in both poses, divided by body height
  ("pose distance" in Chan et al., "Everybody Dance Now", 2019).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from engine.wire.joints import VISIBLE, body_height

PSNR_CAP = 100.0
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


def keypoint_box(kp: np.ndarray, size: int, margin: float = 0.15) -> tuple[int, int, int, int] | None:
    """The dancer's box (x0, y0, x1, y1), end-exclusive, from visible joints of (J, 3) keypoints.

    Grown by `margin` x the box's larger side on every side (limbs and hair reach past the joints)
    and clipped to the size x size image; None when no joint is seen.
    """
    seen = kp[:, 2] >= VISIBLE
    if not seen.any():
        return None
    xy = kp[seen, :2]
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    grow = margin * max(x1 - x0, y1 - y0, 1.0)
    box = (math.floor(x0 - grow), math.floor(y0 - grow), math.ceil(x1 + grow) + 1, math.ceil(y1 + grow) + 1)
    x0, y0, x1, y1 = (int(np.clip(v, 0, size)) for v in box)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def box_masks(keypoints: np.ndarray, size: int, margin: float = 0.15) -> torch.Tensor:
    """(N, J, 3) keypoints -> bool masks (N, size, size) of the dancer's box (whole image if unseen)."""
    masks = torch.zeros((len(keypoints), size, size), dtype=torch.bool)
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
