"""Video in and out with PyAV (FFmpeg): probe a file, sample its frames by timestamp, write a video.

    info = probe("dance.mp4")                     # VideoInfo(width, height, fps, frames, duration)
    for t, rgb in sample("dance.mp4", fps=10):    # t in seconds, rgb (H, W, 3) uint8, upright
        ...
    codec = write_video("out.mp4", frames, fps=10)   # "h264"; .mov: "prores4444"; then plays_in(codec)
    with VideoWriter("out.mov", fps=10) as w:         # the same, frame by frame; RGBA frames keep alpha
        w.write(rgba)

Reading. Times are presentation timestamps (PTS), so B-frames (decoded out of order) and variable
frame rates come out right. Sampling at `fps` first reads the packets' timestamps (demuxing only,
a few ms), picks the frames it keeps, then decodes: packets of frames it does not keep are decoded
only when other frames need them (the decoder skips non-reference frames), and a gap with a
keyframe in it is crossed by seeking. Only kept frames are converted to arrays. A display matrix
(phones film portrait as rotated landscape) is applied, so frames come out as the video plays.
A file that is missing, a folder or not a video is a one-line `UserError`; a truncated or damaged
one gives what can be decoded, with a warning that says how much.

Writing. .mp4/.m4v: H.264 (libx264, yuv420p, +faststart): plays in browsers, QuickTime, phones.
.mov: ProRes 4444 (prores_ks), with an alpha channel when the frames are RGBA. .avi: Motion JPEG.
RGBA frames going to a format without alpha are composited over black. Files are written to a
temporary name and renamed when complete.

OpenCV keeps drawing and image maths; its video paths are gone. Its wheel's FFmpeg writes no
H.264 (only MPEG-4 Part 2, which browsers and phones do not play) and no ProRes or alpha, and its
reader hides presentation timestamps, skips no frame and cannot say how much of a damaged file it
read. PyAV's wheel carries libx264 and prores_ks, and it reads as fast (bench/decode.py).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from engine.errors import UserError

log = logging.getLogger(__name__)

# Rates outside this range are treated as the container lying.
_SANE_FPS = (1.0, 1000.0)
_FALLBACK_FPS = 30.0
# Packets a seek must skip to be worth it: it drains the decoder's pipeline (reordering, threads).
SEEK_GAP = 8



@dataclass(frozen=True)
class VideoInfo:
    """What a video says about itself (frames and duration may be estimates; see `probe`)."""
    width: int          # as displayed (after rotation)
    height: int
    fps: float
    frames: int
    duration: float     # seconds


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its number in the video (presentation order), its time, the image upright."""
    index: int
    t: float            # seconds from the first frame
    bgr: np.ndarray     # (H, W, 3) uint8, BGR (what OpenCV drawing and writing take)


# --- reading ------------------------------------------------------------------------------------

def _open(path: str | os.PathLike):
    """(container, video stream), or a UserError saying why the file cannot be read as a video."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"video not found: {path}")
    if not path.is_file():
        raise UserError(f"not a video file: {path} is a folder")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read video: {path} (permission denied)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"not a video (FFmpeg cannot read it: {_reason(e)}): {path}") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"not a video (no video stream): {path}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"        # frame and slice threads
    return container, stream


def _reason(e: BaseException) -> str:
    return (getattr(e, "strerror", None) or str(e)).splitlines()[0][:80]


def _nominal_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    return fps if math.isfinite(fps) and _SANE_FPS[0] <= fps <= _SANE_FPS[1] else 0.0


def _upright(frame, image: np.ndarray) -> np.ndarray:
    """The image as it is displayed: the display matrix's rotation (degrees counter-clockwise) applied."""
    turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _converter(pixels: str):
    """frame -> upright uint8 array in `pixels` ("bgr24", "rgb24"). One reformatter for a whole clip:
    it keeps its swscale context (frame.to_ndarray builds one per frame, 9 times slower at 320 x 240)."""
    reformatter = VideoReformatter()
    return lambda frame: _upright(frame, reformatter.reformat(frame, format=pixels).to_ndarray())


@dataclass
class _Packet:
    pts: int            # presentation time, in the stream's time base
    dts: int | None
    key: bool


def _packets(container, stream, path) -> tuple[list[_Packet], bool]:
    """Every video packet's timestamps in decode order (no decoding), and whether reading stopped early."""
    found: list[_Packet] = []
    broken = False
    try:
        for p in container.demux(stream):
            if p.size == 0:            # the flush packet at the end
                continue
            pts = p.pts if p.pts is not None else p.dts
            found.append(_Packet(pts, p.dts, bool(p.is_keyframe)))
    except av.FFmpegError as e:
        log.debug("%s: demuxing stopped: %s", path, _reason(e))
        broken = True
    return found, broken


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size (as displayed), rate, frame count and duration; decodes its first frame to be sure it is one.

    The count is the container's, else the packets counted; the rate is the container's average
    rate, else 30. The duration is the stream's, else frames / fps.
    """
    container, stream = _open(path)
    try:
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError:
            first = None
        if first is None:
            raise UserError(f"not a video (no frame can be decoded): {path}")
        height, width = _upright(first, np.empty((first.height, first.width, 0), np.uint8)).shape[:2]
        fps = _nominal_fps(stream) or _FALLBACK_FPS
        frames = stream.frames
        if not frames or frames <= 0:
            container.seek(0)
            frames = max(1, len(_packets(container, stream, path)[0]))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if not (math.isfinite(duration) and duration > 0):
            duration = frames / fps
    finally:
        container.close()
    return VideoInfo(int(width), int(height), fps, int(frames), duration)


def _choose(times: list[float], fps: float | None, nominal: float) -> list[int]:
    """Indices (into `times`, sorted) of the frames kept when sampling at `fps`; all when None.

    For each target k / fps the first frame within half a source frame of it is kept, so a 29.97
    fps clip sampled at 10 gives the frames nearest 0.0, 0.1, 0.2 s, ... A source slower than
    `fps` gives each frame once.
    """
    if not fps:
        return list(range(len(times)))
    half, step, target, kept = 0.5 / nominal, 1.0 / fps, 0.0, []
    for i, t in enumerate(times):
        if t + half < target:
            continue
        kept.append(i)
        while target <= t + half:
            target += step
    return kept


def frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[Frame]:
    """Sample a video at `fps` frames per second by presentation time (every frame when fps is None).

    See the module docstring: only the kept frames are converted, non-reference frames nobody needs
    are not decoded, and long gaps are crossed by seeking to the keyframe before the next kept frame.
    """
    for index, t, bgr in _frames(path, fps, "bgr24"):
        yield Frame(index, t, bgr)


def sample(path: str | os.PathLike, fps: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(t seconds, RGB uint8 (H, W, 3)) for the frames nearest each multiple of 1 / fps."""
    for _, t, rgb in _frames(path, fps, "rgb24"):
        yield t, rgb


def _frames(path: str | os.PathLike, fps: float | None, pixels: str) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, t, image converted to `pixels`) for the kept frames: frames() and sample() share it."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UserError(f"sampling rate must be a positive number, got {fps}")
    container, stream = _open(path)
    try:
        yield from _sample(container, stream, Path(path), fps, pixels)
    finally:
        container.close()


def _sample(container, stream, path: Path, fps: float | None, pixels: str):
    packets, broken = _packets(container, stream, path)
    if not packets:
        raise UserError(f"not a video (no frame can be decoded): {path}")
    nominal = _nominal_fps(stream) or _FALLBACK_FPS
    base = stream.time_base or Fraction(1, 90000)
    order = sorted({p.pts for p in packets if p.pts is not None})       # presentation order
    if len(order) < len(packets):       # missing or repeated timestamps: the container lies
        log.debug("%s: unusable timestamps; frame times are index / fps", path)
        times = [i / nominal for i in range(len(packets))]
        yield from _in_decode_order(container, stream, path, _choose(times, fps, nominal), times, pixels)
        return
    times = [float((pts - order[0]) * base) for pts in order]
    kept = _choose(times, fps, nominal)
    wanted = {order[i]: i for i in kept}                # pts -> index in presentation order
    yield from _decode(container, stream, path, packets, wanted, times, pixels)
    _report(path, len(kept) - len(wanted), len(kept), times, broken, stream)


def _decode(container, stream, path: Path, packets: list[_Packet], wanted: dict, times: list[float], pixels: str):
    """Decode the frames whose pts are in `wanted` (popped as they come), seeking across long gaps.

    Goals are taken in decode order. When the keyframe a goal needs lies SEEK_GAP packets or more
    past the last packet sent, what the decoder holds is drained and the demuxer seeks to that
    keyframe (by its pts); everything between is never read. Packets of frames nobody wants are
    sent with skip_frame NONREF: the decoder drops them unless later frames refer to them.
    """
    position = {p.dts: n for n, p in enumerate(packets) if p.dts is not None}
    keys = [n for n, p in enumerate(packets) if p.key]
    goals = sorted(n for n, p in enumerate(packets) if p.pts in wanted)
    context, convert = stream.codec_context, _converter(pixels)
    decoded = seeks = 0

    def emit(frames):
        nonlocal decoded
        for frame in frames:
            decoded += 1
            i = wanted.pop(frame.pts, None)
            if i is not None:
                yield i, times[i], convert(frame)

    container.seek(0, stream=stream)
    demux, sent, seekable = container.demux(stream), -1, True
    try:
        for goal in goals:
            if packets[goal].pts not in wanted:
                continue                                # came out already
            key = _keyframe_before(keys, packets, goal)
            jumped = seekable and key - (sent + 1) >= SEEK_GAP
            if jumped:
                yield from emit(_drain(context))
                container.seek(packets[key].pts, stream=stream, backward=True)   # also flushes the decoder
                seeks += 1
                demux = container.demux(stream)
            while sent < goal:
                packet = next(demux, None)
                if packet is None:
                    return                              # the file ends early: _report says so
                if packet.size == 0:
                    continue
                at = position.get(packet.dts, sent + 1)
                if jumped and at > key:                 # the seek overshot: read from the start instead
                    seekable, jumped = False, False
                    container.seek(0, stream=stream)
                    demux, sent = container.demux(stream), -1
                    continue
                jumped, sent = False, at
                pts = packet.pts if packet.pts is not None else packet.dts
                context.skip_frame = "DEFAULT" if pts in wanted else "NONREF"
                try:
                    yield from emit(context.decode(packet))
                except av.FFmpegError as e:         # a damaged packet: the frames that need it are lost
                    log.debug("%s: packet at %s would not decode: %s", path, pts, _reason(e))
        yield from emit(_drain(context))
    finally:
        context.skip_frame = "DEFAULT"
        log.debug("%s: %d frames decoded of %d packets, %d seeks, for %d kept", path, decoded, len(packets), seeks,
                  len(goals) - len(wanted))


def _drain(context) -> list:
    """The frames a decoder still holds (B-frame reordering delay); it accepts packets again after a seek."""
    context.skip_frame = "DEFAULT"
    try:
        return list(context.decode(None))
    except av.FFmpegError:
        return []


def _keyframe_before(keys: list[int], packets: list[_Packet], goal: int) -> int:
    """Decode position of the keyframe to start from for the frame at decode position `goal`.

    The last keyframe at or before it; one earlier for a frame shown before its keyframe (an
    open GOP's leading B-frames refer back to the previous group).
    """
    at = bisect.bisect_right(keys, goal) - 1
    if at < 0:
        return 0
    if packets[goal].pts < packets[keys[at]].pts and at > 0:
        at -= 1
    return keys[at]


def _in_decode_order(container, stream, path: Path, kept: list[int], times: list[float], pixels: str):
    """For files without usable timestamps: decode everything, number frames as they come."""
    keep, convert = set(kept), _converter(pixels)
    container.seek(0, stream=stream)
    count = done = 0
    try:
        for frame in container.decode(stream):
            if count in keep:
                done += 1
                yield count, times[count], convert(frame)
            count += 1
    except av.FFmpegError as e:
        log.debug("%s: decoding stopped: %s", path, _reason(e))
    _report(path, done, len(kept), times, False, stream)


def _report(path: Path, done: int, expected: int, times: list[float], damaged: bool, stream) -> None:
    """No frame: a UserError. Less than the file says it holds: a warning that says how much was read."""
    if done == 0:
        raise UserError(f"not a video (no frame can be decoded): {path}")
    short = damaged or (stream.frames or 0) > len(times)
    if not short and done == expected:
        return
    problems = []
    if short:
        length = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        problems.append(f"it ends at {times[-1]:.1f} s" + (f" of {length:.1f} s" if length > times[-1] else ""))
    if done < expected:
        problems.append(f"{expected - done} of {expected} frames would not decode")
    log.warning("%s is truncated or damaged: %s; using the %d frames that decode", path, ", ".join(problems), done)


# --- writing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Codec:
    """How one suffix is written: the encoder, its pixel formats (without / with alpha), options."""
    name: str               # what write_video returns and the CLI prints
    encoder: str
    pix_fmt: str
    alpha_pix_fmt: str | None
    options: dict
    plays_in: str


_H264 = Codec("h264", "libx264", "yuv420p", None, {"crf": "18", "preset": "fast"},
              "H.264: plays in web browsers, QuickTime, phones, Blender and editors")
_PRORES = Codec("prores4444", "prores_ks", "yuv444p10le", "yuva444p10le", {"profile": "4", "vendor": "apl0"},
                "ProRes 4444 (with alpha where the frames have it): for editors (Resolve, Premiere, Final Cut, "
                "Blender's sequencer) and QuickTime; not browsers")
_MJPEG = Codec("mjpeg", "mjpeg", "yuvj420p", None, {"q:v": "3"}, "Motion JPEG: plays in VLC and Blender")
CODECS = {".mp4": _H264, ".m4v": _H264, ".mov": _PRORES, ".avi": _MJPEG}
_MUXER_OPTIONS = {".mp4": {"movflags": "+faststart"}, ".m4v": {"movflags": "+faststart"}}


def choose_codec(path: str | os.PathLike) -> str:
    """The codec written for this file's suffix ("h264", "prores4444", "mjpeg"); UserError for others."""
    suffix = Path(path).suffix.lower()
    if suffix not in CODECS:
        raise UserError(f"cannot write video {path}: use a .mp4, .mov, .m4v or .avi name")
    return CODECS[suffix].name


def plays_in(codec: str) -> str:
    """One line on what a written codec is and what plays it."""
    return next((c.plays_in for c in CODECS.values() if c.name == codec), codec)


class VideoWriter:
    """Write RGB or RGBA uint8 frames to a video file atomically: a temporary file, renamed on `close()`.

    The frame size is taken from the first frame (H.264 and its 4:2:0 colour need even sides: an
    odd side gets its last row or column repeated); later frames of another size are resized to it.
    Alpha is kept where the format has it (.mov), else composited over black. Used as a context
    manager, an exception discards the partial file. `codec` says what was used.
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str | None = None):
        if not (math.isfinite(fps) and fps > 0):
            raise UserError(f"video frame rate must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.codec = choose_codec(self.path)        # `codec` (an old fourcc) is ignored: one codec per suffix
        self.frames = 0
        self.size: tuple[int, int] | None = None    # (width, height) of the frames given
        self.alpha = False
        self._spec = CODECS[self.path.suffix.lower()]
        self._container = None
        self._stream = None
        self._tmp: Path | None = None

    def _start(self, width: int, height: int, alpha: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        os.close(fd)
        self._tmp = Path(name)
        spec = self._spec
        self.alpha = alpha and spec.alpha_pix_fmt is not None
        even = spec.pix_fmt.endswith("420p")
        self._coded = (width + (width % 2 if even else 0), height + (height % 2 if even else 0))
        try:
            self._container = av.open(str(self._tmp), "w", options=_MUXER_OPTIONS.get(self.path.suffix.lower(), {}))
            rate = Fraction(self.fps).limit_denominator(1001 * 1000)
            self._stream = self._container.add_stream(spec.encoder, rate=rate, options=dict(spec.options))
            self._stream.width, self._stream.height = self._coded
            self._stream.pix_fmt = spec.alpha_pix_fmt if self.alpha else spec.pix_fmt
            self._stream.codec_context.thread_count = 0
        except (av.FFmpegError, ValueError) as e:
            self.discard()
            raise UserError(f"cannot write {self.path} with {spec.encoder}: {_reason(e)}") from None
        self.size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 frame: RGB (H, W, 3), RGBA (H, W, 4, straight alpha) or grey (H, W)."""
        image = np.asarray(frame)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3) or (H, W, 4), got {image.shape}")
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        if self._container is None:
            self._start(image.shape[1], image.shape[0], image.shape[2] == 4)
        if (image.shape[1], image.shape[0]) != self.size:
            import cv2
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        if image.shape[2] == 4 and not self.alpha:      # over black
            image = (image[..., :3].astype(np.uint16) * image[..., 3:] // 255).astype(np.uint8)
        elif image.shape[2] == 3 and self.alpha:
            image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
        if self._coded != self.size:                    # odd sides: repeat the last row / column
            pad = ((0, self._coded[1] - self.size[1]), (0, self._coded[0] - self.size[0]), (0, 0))
            image = np.pad(image, pad, mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgba" if self.alpha else "rgb24")
        video_frame.pts = self.frames
        try:
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        except av.FFmpegError as e:
            raise UserError(f"cannot write {self.path}: {_reason(e)}") from None
        self.frames += 1

    def close(self) -> str:
        """Finish the file and move it to its final name; returns the codec used."""
        if self._container is None:
            self.discard()
            raise UserError(f"no frames to write to {self.path}")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except av.FFmpegError as e:
            self.discard()
            raise UserError(f"cannot write {self.path}: {_reason(e)}") from None
        self._container = None
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.codec

    def discard(self) -> None:
        """Drop the partial file (after an error); the final name is never touched."""
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None
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
    """Write RGB or RGBA uint8 frames to `path` atomically and return the codec used ("h264", ...)."""
    with VideoWriter(path, fps, codec) as writer:
        for image in frames:
            writer.write(image)
    return writer.codec
