"""What a render reply's frames are: their size, and their bytes in the requested format.

    width, height = frame_size(request, predictor)     # what the server checks against its memory bound
    data = encode(image, request)                      # (H, W, 3 | 4) uint8 -> PNG, JPEG or raw bytes
"""

from __future__ import annotations

from engine.wire import protocol


def frame_size(request: protocol.RenderRequest, predictor) -> tuple[int, int]:
    """(width, height) of the frames a request gets back (at least the model's square, which is held too)."""
    if request.placement == "source":
        return max(request.source_size[0], predictor.size), max(request.source_size[1], predictor.size)
    if request.placement == "dancer":
        return predictor.stage["width"], predictor.stage["height"]
    side = max(request.size or predictor.size, predictor.size)
    return side, side


def encode(image, request: protocol.RenderRequest) -> bytes:
    """One (H, W, 3 | 4) uint8 RGB(A) frame -> the requested format (and size, for the bare crop)."""
    import cv2
    if request.placement == "crop" and request.size and request.size != image.shape[0]:
        shrink = request.size < image.shape[0]
        image = cv2.resize(image, (request.size, request.size),
                           interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if request.format == "raw":
        return image.tobytes()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR)
    if request.format == "png":
        # A lone frame is a live preview, which waits on this: stored, not compressed (about 1.5 ms
        # at 256 px, 200 KB). A sequence is compressed fast (about 5 ms, 50-80 KB: a third of the
        # default's time) while the next batch runs.
        level = 0 if len(request.frames) == 1 else 1
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, level,
                                              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    else:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, request.quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {request.format} image")
    return data.tobytes()
