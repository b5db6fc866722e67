"""Video in and out with OpenCV: probe a file, sample its frames by timestamp, write an mp4.

    info = probe("dance.mp4")                     # VideoInfo(width, height, fps, frames, duration)
    for t, rgb in sample("dance.mp4", fps=10):    # t in seconds, rgb (H, W, 3) uint8
        ...
    codec = write_video("out.mp4", frames, fps=10)   # 'avc1' (H.264) where OpenCV can, else 'mp4v'
    with VideoWriter("out.mp4", fps=10) as w:         # the same, frame by frame
        w.write(rgb)

Sampling decodes only what it needs: `grab()` advances past a frame without converting it, and
`retrieve()` converts only the frames kept. Containers lie about frame counts and rates, so the
time of each frame comes from the decoder's position (CAP_PROP_POS_MSEC) while that is sane
(finite, increasing), and from the frame index over the nominal rate otherwise. Every problem with
the user's file (missing, not a video, unreadable) is a `UserError` with one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# FFmpeg's own log ("moov atom not found" on a bad file) would break the CLI's one-line errors.
# OpenCV reads this when its FFmpeg backend first starts, so it works even after `import cv2`.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from engine.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

# Rates outside this range are treated as the container lying.
_SANE_FPS = (1.0, 1000.0)
_FALLBACK_FPS = 30.0


@dataclass(frozen=True)
class VideoInfo:
    """What a video says about itself (frames and duration may be estimates; see `probe`)."""
    width: int
    height: int
    fps: float
    frames: int
    duration: float  # seconds


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its number in the video, its time, and the image as OpenCV gives it."""
    index: int
    t: float            # seconds
    bgr: np.ndarray     # (H, W, 3) uint8, BGR


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV logs a WARN/ERROR when a file will not open or an encoder is missing: we say it better."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(level)


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    """An opened capture, or a UserError saying why the file cannot be read as a video."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"video not found: {path}")
    if not path.is_file():
        raise UserError(f"not a video file: {path} is a folder")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read video: {path} (permission denied)")
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened() or cap.get(cv2.CAP_PROP_FRAME_WIDTH) <= 0:
        cap.release()
        raise UserError(f"not a video (OpenCV cannot decode it): {path}")
    return cap


def _nominal_fps(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not math.isfinite(fps) or not _SANE_FPS[0] <= fps <= _SANE_FPS[1]:
        return 0.0
    return float(fps)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, rate, frame count and duration of a video; decodes its first frame to be sure it is one.

    When the container gives no usable count or rate, the frames are counted by grabbing them all
    (slow only for those broken files) and a rate of 30 is assumed.
    """
    cap = _open(path)
    try:
        if not cap.grab():
            raise UserError(f"not a video (no frame can be decoded): {path}")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = _nominal_fps(cap) or _FALLBACK_FPS
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if not math.isfinite(frames) or frames <= 0:
            frames = 1
            while cap.grab():
                frames += 1
        frames = int(frames)
    finally:
        cap.release()
    return VideoInfo(width, height, fps, frames, frames / fps)


def frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[Frame]:
    """Sample a video at `fps` frames per second by timestamp (every frame when fps is None).

    For each target time k / fps the first frame within half a source frame of it is kept, so a
    29.97 fps clip sampled at 10 gives the frames nearest 0.0, 0.1, 0.2 s, ... Frames in between
    are grabbed (decoded, never converted). A source slower than `fps` gives each frame once.
    """
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UserError(f"sampling rate must be a positive number, got {fps}")
    cap = _open(path)
    try:
        nominal = _nominal_fps(cap) or _FALLBACK_FPS
        half = 0.5 / nominal
        step = 1.0 / fps if fps else 0.0
        target = 0.0
        prev_t = -math.inf
        use_msec = True
        index = -1
        while cap.grab():
            index += 1
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if use_msec else math.nan
            # POS_MSEC is the decoded frame's presentation time; it must rise, or we stop trusting it.
            if not (math.isfinite(t) and t >= 0 and t > prev_t):
                if use_msec and index > 0:
                    log.debug("%s: frame times stopped rising at frame %d; using index / fps", path, index)
                use_msec = False
                t = prev_t + 1.0 / nominal if index > 0 else 0.0
            prev_t = t
            if fps and t + half < target:
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                if index == 0:
                    raise UserError(f"not a video (no frame can be decoded): {path}")
                log.warning("%s: frame %d could not be decoded; stopping there", path, index)
                break
            yield Frame(index, t, bgr)
            if fps:
                while target <= t + half:
                    target += step
        if index < 0:
            raise UserError(f"not a video (no frame can be decoded): {path}")
    finally:
        cap.release()


def sample(path: str | os.PathLike, fps: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(t seconds, RGB uint8 (H, W, 3)) for the frames nearest each multiple of 1 / fps."""
    for f in frames(path, fps):
        yield f.t, cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB)


# --- writing ------------------------------------------------------------------------------------

_CODECS = {".mp4": ("avc1", "mp4v"), ".m4v": ("avc1", "mp4v"), ".mov": ("avc1", "mp4v"), ".avi": ("MJPG",)}
_codec_ok: dict[str, bool] = {}


def codec_works(fourcc: str, suffix: str = ".mp4") -> bool:
    """Whether this OpenCV build can write `fourcc` into a `suffix` file (tried once, then cached)."""
    key = f"{fourcc}{suffix}"
    if key not in _codec_ok:
        with tempfile.TemporaryDirectory() as tmp, _quiet_opencv():
            probe_path = os.path.join(tmp, f"probe{suffix}")
            w = cv2.VideoWriter(probe_path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 64))
            ok = w.isOpened()
            if ok:
                w.write(np.zeros((64, 64, 3), np.uint8))
            w.release()
            _codec_ok[key] = ok and os.path.getsize(probe_path) > 0
    return _codec_ok[key]


def choose_codec(path: str | os.PathLike) -> str:
    """The best codec OpenCV can write for this file's suffix: H.264 where possible, else MPEG-4."""
    suffix = Path(path).suffix.lower()
    if suffix not in _CODECS:
        raise UserError(f"cannot write video {path}: use a .mp4, .mov, .m4v or .avi name")
    for fourcc in _CODECS[suffix]:
        if codec_works(fourcc, suffix):
            return fourcc
    raise UserError(f"this OpenCV build cannot write {suffix} video")


class VideoWriter:
    """Write RGB frames to a video file atomically: a temporary file, renamed on `close()`.

    The frame size is taken from the first frame; later frames of another size are resized to it.
    Used as a context manager, an exception discards the partial file. `codec` says what was used.
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str | None = None):
        if not (math.isfinite(fps) and fps > 0):
            raise UserError(f"video frame rate must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.codec = codec or choose_codec(self.path)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None

    def _start(self, width: int, height: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        os.close(fd)
        self._tmp = Path(name)
        # H.264 encoders refuse some sizes (odd ones): then the next codec for this suffix.
        fallbacks = _CODECS.get(self.path.suffix.lower(), ())
        for codec in [self.codec] + [c for c in fallbacks if c != self.codec]:
            with _quiet_opencv():
                self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), self.fps, (width, height))
            if self._writer.isOpened():
                self.codec = codec
                break
        else:
            self.discard()
            raise UserError(f"cannot write {self.path} at {width}x{height} with codec {self.codec}")
        self.size = (width, height)

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3); a grey (H, W) frame is accepted too."""
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3), got {rgb.shape}")
        if rgb.dtype != np.uint8:
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        if self._writer is None:
            self._start(rgb.shape[1], rgb.shape[0])
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> str:
        """Finish the file and move it to its final name; returns the codec used."""
        if self._writer is None:
            raise UserError(f"no frames to write to {self.path}")
        self._writer.release()
        self._writer = None
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.codec

    def discard(self) -> None:
        """Drop the partial file (after an error); the final name is never touched."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, codec: str | None = None) -> str:
    """Write RGB uint8 frames to `path` atomically and return the codec used ('avc1', 'mp4v', 'MJPG')."""
    with VideoWriter(path, fps, codec) as writer:
        for rgb in frames:
            writer.write(rgb)
    return writer.codec
