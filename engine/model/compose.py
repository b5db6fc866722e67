"""Placing a generated RGBA crop into an output frame, and compositing it over a background.

    layer = place(rgba, placement, (width, height))      # (H, W, 4) uint8, straight alpha, zero elsewhere
    rgb = over(layer, background)                        # (H, W, 3) uint8: the dancer over the plate/scene

`placement` is the (2, 3) affine from crop pixels to output pixels (`engine.data.framing.placement`,
possibly followed by a move into another frame). Warping is done on premultiplied colour, so the
dancer's soft edge does not pick up the black outside her matte.
"""

from __future__ import annotations

import numpy as np


def place(rgba: np.ndarray, placement: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """(S, S, 4) uint8 straight-alpha crop -> (H, W, 4) uint8 straight alpha in the output frame."""
    import cv2
    width, height = out_size
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    premultiplied = np.concatenate([rgba[..., :3].astype(np.float32) * alpha, alpha * 255.0], axis=-1)
    warped = cv2.warpAffine(premultiplied, np.asarray(placement, np.float64), (width, height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = warped[..., 3:4]
    colour = np.where(a > 0.5, warped[..., :3] * 255.0 / np.maximum(a, 1e-6), 0.0)
    return np.concatenate([colour, a], axis=-1).round().clip(0, 255).astype(np.uint8)


def over(layer: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """(H, W, 4) straight alpha over an (H, W, 3) background (None: black) -> (H, W, 3) uint8."""
    a = layer[..., 3:4].astype(np.float32) / 255.0
    base = np.zeros(layer.shape[:2] + (3,), np.float32) if background is None else background.astype(np.float32)
    return (layer[..., :3].astype(np.float32) * a + base * (1.0 - a)).round().clip(0, 255).astype(np.uint8)


def fit_background(image: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """An (h, w, 3) background image scaled to fill (width, height), centred and cropped, never stretched."""
    import cv2
    width, height = out_size
    h, w = image.shape[:2]
    s = max(width / w, height / h)
    scaled = cv2.resize(image, (max(width, round(w * s)), max(height, round(h * s))),
                        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    y, x = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[y:y + height, x:x + width, :3])
