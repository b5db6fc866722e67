"""`pix2dance render`: a motion (.blend, .bvh, .npz, video) danced by a trained dancer, to mp4 or PNGs.

    result = run("runs/anna", "dance.bvh", "out.mp4", fps=30, frames=(1, 40), side_by_side=True)
    result.frames, result.codec, result.seconds

The pipeline, in three overlapping stages so the generator is never kept waiting:
1. `engine.motion.load` turns the source into keypoints in its own image's pixels (all frames up
   front: rigs are projected in one pass, a video is analysed by MediaPipe and smoothed, which
   needs the whole track anyway), with the source's body statistics for "clip" normalization.
2. Inference in chunks. In-process (default): a drawing thread normalizes and draws skeleton
   chunks through the Predictor (its one normalization path) while the main thread runs the
   generator. With `engine="tcp://..."`: the same keypoints go to a running engine through
   `engine.wire.client.Client` (the add-on's client), which normalizes once, on its side.
3. A writer thread composes (side-by-side: the source, i.e. the video frame or the drawn skeleton,
   left of the dancer) and encodes the video (`engine.data.video.VideoWriter`: H.264 for .mp4,
   ProRes 4444 for .mov; the summary names the codec and what plays it) and the PNG frames.

Output: OUT with a video suffix (.mp4, .mov, .m4v, .avi) is a video, and with `png` the frames also
go to the folder OUT_frames/ beside it; any other OUT is a folder of PNG frames only. PNGs are
named by their 1-based frame number in the resampled source (000001.png, ...). Nothing
half-written is ever left under a final name: the video is written to a temporary file and the
folder to a temporary folder, both renamed when everything succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.wire import protocol

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi")
_DONE = object()


@dataclasses.dataclass
class RenderResult:
    """What a render wrote."""
    out: Path
    frames: int
    width: int
    height: int
    fps: float
    codec: str | None               # None when only PNG frames were written
    png_dir: Path | None
    seconds: float                  # wall time of the whole command
    motion_seconds: float           # of which: loading the motion (bpy, MediaPipe)
    source: str                     # motion kind: blend, bvh, npz, video
    model_seconds: float = 0.0      # of which: loading the generator (or asking the engine)


# --- small pipeline helpers ---------------------------------------------------------------------

class _Background:
    """Run `produce()` (a generator) in a thread; iterate its items here. Errors re-raise here."""

    def __init__(self, produce: Callable[[], Iterable], maxsize: int = 2, name: str = "pix2dance-stage"):
        self._q: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _run(self, produce) -> None:
        try:
            for item in produce():
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:      # noqa: BLE001 - handed to the consumer
            self._error = e
        finally:
            self._q.put(_DONE)

    def __iter__(self) -> Iterator:
        while True:
            item = self._q.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class _Writer:
    """A thread that composes and writes frames; `put` hands it a chunk, `close` finishes the files.

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
        import cv2

        from engine.data.video import VideoWriter
        try:
            if self.video_path is not None:
                self._writer = VideoWriter(self.video_path, self.fps)
            while True:
                chunk = self._q.get()
                if chunk is _DONE:
                    break
                if self._error is not None:
                    continue                      # drain after an error
                for rgb in chunk:
                    if self._writer is not None:
                        self._writer.write(rgb)
                    if self.png_dir is not None:
                        name = self.png_dir / f"{self.first + self.count:06d}.png"
                        if not cv2.imwrite(str(name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                           [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                            raise UserError(f"cannot write {name}")
                    self.size = (rgb.shape[1], rgb.shape[0])
                    self.count += 1
        except BaseException as e:          # noqa: BLE001 - re-raised in the caller's thread
            self._error = e
            while self._q.get() is not _DONE:
                pass

    def put(self, frames: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(frames)

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


def compose(generated: np.ndarray, source: np.ndarray | None) -> np.ndarray:
    """(N, S, S, 3) dancer frames, with (N, S, S, 3) source panels on the left when given."""
    if source is None:
        return generated
    return np.concatenate([source, generated], axis=2)


# --- inference back ends ------------------------------------------------------------------------

def _local_chunks(predictor, motion, chunk: int, side_by_side: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """In-process: (generated (n, S, S, 3), source panels or None) per chunk, drawing one chunk ahead."""
    kp = motion.keypoints

    def draw():
        for start in range(0, len(kp), chunk):
            skel = predictor.skeletons(kp[start:start + chunk], motion.source_size, motion.mode, motion.source_stats)
            yield start, skel

    stage = _Background(draw, maxsize=2, name="pix2dance-draw")
    try:
        for start, skel in stage:
            panels = None
            if side_by_side:
                panels = motion.images[start:start + len(skel)] if motion.images is not None else skel
            yield predictor.generate(skel), panels
    finally:
        stage.close()


def _engine_chunks(address: str, entry: dict, motion, chunk: int, side_by_side: bool,
                   timeout: float) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Through a running engine (normalization happens there, once); raw RGB frames back."""
    with _engine_errors(address):
        client = _connect(address, timeout)
    try:
        yield from _engine_frames(client, address, entry, motion, chunk, side_by_side)
    finally:
        client.close()


def _engine_frames(client, address: str, entry: dict, motion, chunk: int, side_by_side: bool):
    with _engine_errors(address):
        panels_all = None
        if side_by_side:
            panels_all = motion.images if motion.images is not None else _engine_skeletons(entry, motion)
        ids = np.arange(len(motion)) + motion.first
        frames = client.render(entry["name"], motion.keypoints, source_size=tuple(motion.source_size), mode=motion.mode,
                               source_stats=motion.source_stats, frame_ids=ids.tolist(), fmt="raw", chunk=chunk)
        batch: list[np.ndarray] = []
        done = 0
        for frame in frames:
            batch.append(np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3))
            if len(batch) == chunk:
                yield np.stack(batch), None if panels_all is None else panels_all[done:done + len(batch)]
                done += len(batch)
                batch = []
        if batch:
            yield np.stack(batch), None if panels_all is None else panels_all[done:done + len(batch)]


@contextlib.contextmanager
def _engine_errors(address: str):
    """The client's errors (engine gone, error reply, other protocol) as one-line UserErrors."""
    from engine.wire.client import ClientError, EngineError
    try:
        yield
    except EngineError as e:
        raise UserError(f"the engine at {address} refused the render: {e.message}") from None
    except ClientError as e:
        raise UserError(str(e).splitlines()[0]) from None


def _connect(address: str, timeout: float):
    from engine.wire.client import Client
    try:
        return Client(address, timeout=timeout)
    except ValueError as e:
        raise UserError(f"--engine {address}: {e}") from None


def _engine_skeletons(entry: dict, motion) -> np.ndarray:
    """The skeletons to show beside an engine's frames: drawn here with the model's statistics from
    `info` (for display only; what the generator sees is normalized and drawn by the engine, once)."""
    from engine.data import normalize, skeleton
    kp = normalize.to_dancer(motion.keypoints, motion.mode, tuple(motion.source_size), entry["stats"],
                             int(entry["stats_size"]), int(entry["size"]), motion.source_stats)
    return skeleton.draw_batch(kp, int(entry["size"]))


def _model_name(run: Path) -> str:
    """The name an engine serves RUN under: a local run's config "name", else its folder's name
    (as `serve` names it); RUN that is no local folder is taken as the model's name itself."""
    from engine.model.runs import read_config
    if (run / "config.json").is_file():
        return str(read_config(run).get("name") or run.resolve().name)
    return run.name or str(run)


# --- the command --------------------------------------------------------------------------------

def output_paths(out: Path, png: bool) -> tuple[Path | None, Path | None]:
    """(video path or None, PNG folder or None) for OUT and --png."""
    out = Path(out)
    if out.suffix.lower() in VIDEO_SUFFIXES + (".mkv", ".webm", ".gif"):   # the latter: a clear refusal
        return out, (out.with_name(out.stem + "_frames") if png else None)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder (use a .mp4 name for a video)")
    return None, out


def run(run_dir: str | Path, motion_path: str | Path, out: str | Path, *, fps: float | None = None,
        frames: tuple[int, int] | None = None, armature: str | None = None, camera: str | None = None,
        mapping: str | Path | None = None, engine: str | None = None, side_by_side: bool = False,
        png: bool = False, device: str = "auto", backend: str = "auto", pose_model: str | Path | None = None,
        verbose: bool = False, quiet: bool = False, chunk: int | None = None,
        engine_timeout: float = 10.0) -> RenderResult:
    """Render `motion_path` as the dancer of `run_dir` into `out`; see the module docstring."""
    from tqdm import tqdm

    from engine import motion as motion_mod
    t_start = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    motion_mod.precheck(motion_path, fps, mapping, frames)   # a bad motion file fails before the model loads
    video_path, png_dir = output_paths(out, png)
    if video_path is not None:
        from engine.data.video import choose_codec
        choose_codec(video_path)                      # an unwritable suffix fails before any work

    # The model first: a bad run fails before minutes of motion analysis. (Not in a thread beside
    # bpy: importing bpy while another thread loads torch weights deadlocks at times.)
    predictor, size, entry = None, None, None
    t0 = time.perf_counter()
    if engine is None:
        from engine.model.predictor import Predictor
        predictor = Predictor(run_dir, device=device, backend=backend)
        size = predictor.size
    else:
        entry = _engine_model(engine, _model_name(run_dir), engine_timeout)
        size = int(entry["size"])
    model_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    motion = motion_mod.load(motion_path, fps=fps, frames=frames, armature=armature, camera=camera,
                             mapping=mapping, pose_model=pose_model, verbose=verbose, quiet=quiet,
                             panel=size if side_by_side else None)
    motion_seconds = time.perf_counter() - t0
    n = len(motion)
    log.info("%s: %d frames at %g fps from %s (%dx%d source%s)", Path(motion_path).name, n, motion.fps,
             motion.kind, motion.source_size[0], motion.source_size[1], ", smoothed" if motion.smoothed else "")

    if predictor is not None:
        chunk = chunk or max(predictor.max_batch, 8)
        chunks = _local_chunks(predictor, motion, chunk, side_by_side)
    else:
        chunk = chunk or 16
        chunks = _engine_chunks(engine, entry, motion, chunk, side_by_side, engine_timeout)

    bar = tqdm(total=n, desc="render", unit="frame", disable=quiet)
    with atomic_dir(png_dir) if png_dir is not None else _nothing() as tmp_dir:
        writer = _Writer(video_path, tmp_dir, motion.fps, motion.first)
        try:
            for generated, panels in chunks:
                writer.put(compose(generated, panels))
                bar.update(len(generated))
            codec = writer.finish(n)
        except BaseException:
            writer.discard()
            raise
        finally:
            bar.close()
            if hasattr(chunks, "close"):
                chunks.close()
    width, height = writer.size
    seconds = time.perf_counter() - t_start
    result = RenderResult(out=out, frames=n, width=width, height=height, fps=motion.fps, codec=codec,
                          png_dir=png_dir, seconds=seconds, motion_seconds=motion_seconds, source=motion.kind,
                          model_seconds=model_seconds)
    where = f"{video_path} ({codec})" if video_path is not None else f"{png_dir}/"
    if video_path is not None and png_dir is not None:
        where += f" and {png_dir}/"
    log.info("wrote %d frames %dx%d at %g fps to %s in %.1f s (%.1f frames/s)", n, width, height, motion.fps,
             where, seconds, n / max(seconds, 1e-9))
    if codec is not None:
        from engine.data.video import plays_in
        log.info("  %s", plays_in(codec))
    return result


def _engine_model(address: str, model: str, timeout: float) -> dict:
    """The engine's description of `model` (name, size, stats, ...): checked before any work."""
    with _engine_errors(address):
        client = _connect(address, timeout)
        try:
            info = client.info()
        finally:
            client.close()
    try:
        return protocol.pick_model({m.get("name"): m for m in info.get("models", [])}, model)
    except protocol.ProtocolError as e:
        raise UserError(f"--engine {address}: {e.message}") from None


class _nothing:
    """A context manager yielding None (no PNG folder)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
