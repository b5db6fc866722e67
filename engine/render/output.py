"""What `pix2dance render` writes: the video and PNG frames (a writer thread), the background behind
the dancer, side-by-side panels, and the per-frame report.

    video, pngs = output_paths(out, png)       # (OUT.mp4 or None, a PNG folder or None)
    backdrop = Backdrop.open("plate", (w, h), plate)   # "plate" | "none" | an image or video FILE
    writer = Writer(video, png_tmp, fps, first); writer.put(frames, layers); writer.finish(n)

PNG frames are the dancer's layer: RGBA with straight alpha (her matte) where the run has one. The
video is that layer over the backdrop (a .mov keeps the alpha when the backdrop is "none"; an .mp4
composites over black). Nothing half-written is left: the writer's video is a temporary file
renamed by `finish`, and the PNG folder is the caller's temporary folder.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.errors import UserError
from engine.model import compose

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_DONE = object()


def output_paths(out: Path, png: bool) -> tuple[Path | None, Path | None]:
    """(video path or None, PNG folder or None) for OUT and --png."""
    out = Path(out)
    if out.suffix.lower() in VIDEO_SUFFIXES + (".mkv", ".webm", ".gif"):   # the latter: a clear refusal
        return out, (out.with_name(out.stem + "_frames") if png else None)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder (use a .mp4 name for a video)")
    return None, out


class Backdrop:
    """What the dancer is composited over in the video, frame by frame: `at(i)` -> (H, W, 3) uint8 or None.

    "plate": the run's clean plate (her room without her), scaled to the frame; none if the run has
    no plate (black). "none": nothing (transparent in .mov and PNG, black in .mp4). FILE: an image,
    or a video whose frames follow the render's (holding its last frame when it runs out), scaled to
    fill the frame.
    """

    def __init__(self, canvas: tuple[int, int], still: np.ndarray | None = None, video: Path | None = None):
        self.canvas, self.still, self._video = canvas, still, video
        self._frames, self._last, self._seen = None, None, -1

    @classmethod
    def open(cls, spec: str, canvas: tuple[int, int], plate: np.ndarray | None) -> "Backdrop":
        if spec == "none":
            return cls(canvas)
        if spec == "plate":
            return cls(canvas, None if plate is None else compose.fit_background(plate, canvas))
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--background {spec}: no such file (give plate, none, or an image or video)")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from engine.data.pairs import read_rgb
            return cls(canvas, compose.fit_background(read_rgb(path), canvas))
        from engine.data import video
        video.probe(path)                                   # not a video: the usual one-line error, now
        return cls(canvas, video=path)

    def at(self, index: int) -> np.ndarray | None:
        """The backdrop of output frame `index` (called in order, 0, 1, 2, ...)."""
        if self._video is None:
            return self.still
        from engine.data import video
        if self._frames is None:
            self._frames, self._seen = video.sample(self._video), -1
        while self._seen < index:
            item = next(self._frames, None)
            if item is None:                                # ran out: hold the last frame
                break
            self._last, self._seen = compose.fit_background(item[1], self.canvas), self._seen + 1
        return self._last


def side_by_side(frames: np.ndarray, panels: np.ndarray | None) -> np.ndarray:
    """(N, H, W, C) frames with (N, P, P, 3) source panels (scaled to H) on their left, when given."""
    if panels is None:
        return frames
    import cv2
    h = frames.shape[1]
    if panels.shape[1] != h:
        panels = np.stack([cv2.resize(p, (h, h), interpolation=cv2.INTER_AREA) for p in panels])
    if frames.shape[-1] == 4:                               # the panel is opaque
        panels = np.concatenate([panels, np.full(panels.shape[:3] + (1,), 255, np.uint8)], axis=-1)
    return np.concatenate([panels, frames], axis=2)


def write_report(path: Path, rows: list[dict], threshold: float | None) -> None:
    """--report FILE.json: one row per rendered frame (frame, source_frame, novelty, placement)."""
    with atomic_file(path) as tmp:
        limit = None if threshold is None else round(float(threshold), 4)
        tmp.write_text(json.dumps({"threshold": limit, "frames": rows}, indent=1) + "\n")


class Writer:
    """A thread that writes frames; `put` hands it a chunk, `finish` closes the files.

    Writes the video (VideoWriter, into a temp file until `finish`) and/or PNGs into png_dir (a
    temporary folder that the caller renames). An error in the thread re-raises in put/finish.
    """

    def __init__(self, video_path: Path | None, png_dir: Path | None, fps: float, first: int):
        self.video_path, self.png_dir, self.fps, self.first = video_path, png_dir, fps, first
        self.count = 0
        self.size: tuple[int, int] | None = None
        self.codec: str | None = None
        self._writer = None
        self._q: queue.Queue = queue.Queue(maxsize=3)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pix2dance-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from engine.data.video import VideoWriter
        try:
            if self.video_path is not None:
                self._writer = VideoWriter(self.video_path, self.fps)
            while True:
                item = self._q.get()
                if item is _DONE:
                    break
                if self._error is None:
                    self._write(*item)
        except BaseException as e:          # noqa: BLE001 - re-raised in the caller's thread
            self._error = e
            while self._q.get() is not _DONE:
                pass

    def _write(self, frames: np.ndarray, layers: np.ndarray | None) -> None:
        import cv2
        for i, frame in enumerate(frames):
            if self._writer is not None:
                self._writer.write(frame)
            if self.png_dir is not None:
                image = frame if layers is None else layers[i]
                name = self.png_dir / f"{self.first + self.count:06d}.png"
                code = cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR
                if not cv2.imwrite(str(name), cv2.cvtColor(image, code), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise UserError(f"cannot write {name}")
            self.size = (frame.shape[1], frame.shape[0])
            self.count += 1

    def put(self, frames: np.ndarray, layers: np.ndarray | None = None) -> None:
        """Video frames (N, H, W, 3|4), and the dancer's layers for the PNGs when they differ."""
        if self._error is not None:
            raise self._error
        self._q.put((frames, layers))

    def finish(self, expected: int) -> str | None:
        """Wait for the thread; if all `expected` frames were written, move the video to its final
        name. Returns the codec used (None: no video)."""
        self._q.put(_DONE)
        self._thread.join()
        if self._error is None and self.count != expected:
            self._error = RuntimeError(f"wrote {self.count} frames, expected {expected}")
        if self._error is not None:
            self.discard()
            raise self._error
        if self._writer is not None:
            self.codec = self._writer.close()
        return self.codec

    def discard(self) -> None:
        if self._thread.is_alive():
            self._q.put(_DONE)
            self._thread.join()
        if self._writer is not None:
            self._writer.discard()
