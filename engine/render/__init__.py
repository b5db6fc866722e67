"""`pix2dance render`: a motion (.blend, .bvh, .npz, video) danced by a trained dancer, to video or PNGs.

    result = run("runs/anna", "dance.bvh", "out.mp4", fps=30, frames=(1, 40), side_by_side=True)
    result.frames, result.codec, result.seconds

The pipeline, in three overlapping stages so the generator is never kept waiting:
1. `engine.motion.load` turns the source into keypoints in its own image's pixels (all frames up
   front: rigs are projected in one pass, a video is analysed by MediaPipe and smoothed, which
   needs the whole track anyway), with the source's body statistics for "clip" normalization.
2. Inference in chunks. In-process (default): the Predictor frames the whole sequence once (its one
   normalization and framing path: the person-centred crop is smoothed over all of it); a thread
   generates it through one Sequence (engine.model.sequence: a temporal run frame after frame, in
   lanes that fill a batch) and hands chunks over in frame order; the main thread places each frame.
   With `engine="tcp://..."`: the same keypoints go to a running engine through
   `engine.wire.client.Client` (the add-on's client), which normalizes and places on its side; the
   chunks are named as one sequence, so a temporal model carries its frames from chunk to chunk.
3. A writer thread (`output.Writer`) encodes the video (`engine.data.video.VideoWriter`: H.264
   for .mp4, ProRes 4444 with alpha for .mov) and the PNG frames.

Placement (`--placement`): "dancer" (the default for video, BVH and .npz: the pose normalized into
the dancer's own frame, over her plate), "source" (the default for a .blend: where the pose is in the
source image, at its size, with alpha), "crop" (the bare person-centred square). The background
(`--background plate|none|FILE`) goes behind her in the video; PNG frames are her RGBA layer
(straight alpha, her matte). A run trained before mattes renders the bare crop, with a warning.

Output: OUT with a video suffix (.mp4, .mov, .m4v, .avi) is a video, and with `png` the frames also
go to the folder OUT_frames/ beside it; any other OUT is a folder of PNG frames only. PNGs are
named by their 1-based frame number in the resampled source (000001.png, ...). `report` writes one
row per frame (its placement, and its novelty where the run can measure it). Nothing half-written
is ever left under a final name: the video is written to a temporary file and the folder to a
temporary folder, both renamed when everything succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.model import compose
from engine.render import output
from engine.wire import protocol
from engine.wire.protocol import PLACEMENTS

log = logging.getLogger(__name__)

# Kept frames per lane of an in-process temporal render (once the motion is long enough to fill a
# batch with longer lanes): warm-up costs WARMUP / LANE more frames (1/8), and the frames waiting to
# come out in order are about max_batch lanes' (_generated).
LANE = 32


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


# --- inference back ends: each yields (frames (n, H, W, 3|4), placements (n, 2, 3), novelty (n,), panels),
#     the middle two None where unknown ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Look:
    """How the frames come out: where the dancer goes, and whether she comes as an RGBA layer."""
    placement: str                  # "crop", "dancer" or "source"
    alpha: bool                     # the run has a matte: layers are RGBA, composited over the backdrop here


def _local_chunks(predictor, motion, look: Look, chunk: int, side_by_side: bool) -> Iterator:
    """In-process: the sequence framed once (its crop smoothed over all of it), generated in a thread a
    chunk or two ahead of placing (the generator releases the GIL while placing runs here)."""
    from engine.data.prefetch import Prefetch
    framed = predictor.frame(motion.keypoints, motion.source_size, motion.mode, motion.source_stats,
                             placement=look.placement, fps=motion.fps)
    with Prefetch(_generated(predictor, framed, chunk), depth=2, name="pix2dance-generate") as ahead:
        for start, crops in ahead:
            stop = start + len(crops)
            placed = predictor.place(crops, framed.part(start, stop), alpha=look.alpha)
            panels = None
            if side_by_side:
                panels = motion.images[start:stop] if motion.images is not None else framed.skeletons(start, stop)
            yield placed.frames, placed.placements, placed.novelty, panels


def _generated(predictor, framed, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, crops (n, S, S, C)) in frame order, `chunk` frames at a time, from one Sequence over the
    whole framed motion.

    A temporal run's lanes advance together and finish out of order, so frames wait here for the
    earlier ones. Sequence.take serves the earliest unfinished lanes first, so at most max_batch lanes
    are under way and fewer than max_batch lanes' frames wait: about max_batch * LANE crops of
    S * S * 4 bytes (32 MB at 256 px with a CPU's batch of 4, 128 MB with cuda's 16), however long the
    motion. A non-temporal run has one lane in order: at most a chunk and a batch wait.
    """
    from engine.model.sequence import lane_count
    n = len(framed)
    lanes = max(lane_count(n, predictor.max_batch, predictor.temporal), n // LANE) if predictor.temporal else 1
    sequence = predictor.sequence(framed, lanes=lanes)
    waiting: dict[int, np.ndarray] = {}
    done = ready = 0                       # yielded: [0, done); generated without a gap: [0, ready)
    for kept in predictor.generate_sequence(sequence):
        waiting.update(kept)
        while ready < n and ready in waiting:
            ready += 1
        while ready - done >= chunk or (ready == n and done < n):
            stop = min(done + chunk, ready)
            yield done, np.stack([waiting.pop(k) for k in range(done, stop)])
            done = stop


def _engine_chunks(address: str, entry: dict, motion, look: Look, chunk: int, side_by_side: bool,
                   timeout: float) -> Iterator:
    """Through a running engine (normalization and placement happen there, once); raw frames back."""
    with _engine_errors(address):
        client = _connect(address, timeout)
    try:
        yield from _engine_frames(client, address, entry, motion, look, chunk, side_by_side)
    finally:
        client.close()


def _engine_frames(client, address: str, entry: dict, motion, look: Look, chunk: int, side_by_side: bool):
    with _engine_errors(address):
        panels_all = None
        if side_by_side:
            panels_all = motion.images if motion.images is not None else _engine_skeletons(entry, motion)
        ids = np.arange(len(motion)) + motion.first
        frames = client.render(entry["name"], motion.keypoints, source_size=tuple(motion.source_size), mode=motion.mode,
                               source_stats=motion.source_stats, frame_ids=ids.tolist(), fmt="raw", chunk=chunk,
                               placement=look.placement, alpha=look.alpha, fps=motion.fps,
                               sequence=uuid.uuid4().hex)     # one timeline: a temporal model carries it across chunks
        batch: list = []
        done = 0
        for frame in frames:
            batch.append(frame)
            if len(batch) == chunk:
                yield _engine_chunk(batch, panels_all, done)
                done += len(batch)
                batch = []
        if batch:
            yield _engine_chunk(batch, panels_all, done)


def _engine_chunk(batch: list, panels_all, done: int):
    """Frames from the client -> (frames, placements, novelty, panels) as the in-process path gives them."""
    images = np.stack([np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, f.channels) for f in batch])
    placements = None if batch[0].placement is None else np.stack([np.reshape(f.placement, (2, 3)) for f in batch])
    novelty = None if batch[0].novelty is None else np.array([f.novelty for f in batch], np.float32)
    return images, placements, novelty, None if panels_all is None else panels_all[done:done + len(batch)]


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
    """The skeletons to show beside an engine's frames, framed here as the model frames them (for display
    only; what the generator sees is normalized, framed and drawn by the engine, once)."""
    from engine.data import framing, normalize, skeleton
    size = int(entry["size"])
    if entry.get("alpha"):
        crops = framing.person_crops(motion.keypoints, motion.fps, framing.Framing.of(entry))   # as the engine frames it
        return skeleton.draw_batch(framing.to_crop(motion.keypoints, crops, size), size)
    kp = normalize.to_dancer(motion.keypoints, motion.mode, tuple(motion.source_size), entry["stats"],
                             int(entry["stats_size"]), size, motion.source_stats)
    return skeleton.draw_batch(kp, size)


def _model_name(run: Path) -> str:
    """The name an engine serves RUN under: a local run's config "name", else its folder's name
    (as `serve` names it); RUN that is no local folder is taken as the model's name itself."""
    from engine.model.runs import read_config
    if (run / "config.json").is_file():
        return str(read_config(run).get("name") or run.resolve().name)
    return run.name or str(run)


# --- the command --------------------------------------------------------------------------------

def run(run_dir: str | Path, motion_path: str | Path, out: str | Path, *, fps: float | None = None,
        frames: tuple[int, int] | None = None, armature: str | None = None, camera: str | None = None,
        mapping: str | Path | None = None, engine: str | None = None, side_by_side: bool = False,
        png: bool = False, device: str = "auto", backend: str = "auto", pose_model: str | Path | None = None,
        verbose: bool = False, quiet: bool = False, chunk: int | None = None, engine_timeout: float = 10.0,
        placement: str | None = None, background: str = "plate", report: str | Path | None = None) -> RenderResult:
    """Render `motion_path` as the dancer of `run_dir` into `out`; see the module docstring.

    placement None: "source" for a .blend, "dancer" otherwise. background: "plate", "none" or a FILE.
    """
    from tqdm import tqdm

    from engine import motion as motion_mod
    t_start = time.perf_counter()
    run_dir, out = Path(run_dir), Path(out)
    motion_mod.precheck(motion_path, fps, mapping, frames)   # a bad motion file fails before the model loads
    video_path, png_dir = output.output_paths(out, png)
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
        size, matte, plate = predictor.size, predictor.alpha, predictor.plate
        threshold = predictor.repertoire.threshold if predictor.repertoire else None
    else:
        entry = _engine_model(engine, _model_name(run_dir), engine_timeout)
        size, matte, plate = int(entry["size"]), bool(entry.get("alpha")), _local_plate(run_dir)
        threshold = entry.get("novelty_threshold")
    model_seconds = time.perf_counter() - t0
    look = Look(_placement(placement, Path(motion_path), matte, run_dir), matte)

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
        chunks = _local_chunks(predictor, motion, look, chunk, side_by_side)
    else:
        chunk = chunk or 16
        chunks = _engine_chunks(engine, entry, motion, look, chunk, side_by_side, engine_timeout)

    bar = tqdm(total=n, desc="render", unit="frame", disable=quiet)
    rows: list[dict] = []
    with atomic_dir(png_dir) if png_dir is not None else contextlib.nullcontext() as tmp_dir:
        writer = output.Writer(video_path, tmp_dir, motion.fps, motion.first)
        backdrop = None
        try:
            for layers, placements, novelty, panels in chunks:
                if backdrop is None:
                    canvas = (layers.shape[2], layers.shape[1])
                    backdrop = output.Backdrop.open(background if look.placement != "crop" or background != "plate"
                                                    else "none", canvas, plate)
                frames = layers
                if look.alpha and background != "none":       # the video: the dancer over her backdrop
                    frames = np.stack([compose.over(layer, backdrop.at(len(rows) + i)) for i, layer in enumerate(layers)])
                writer.put(output.side_by_side(frames, panels),
                           output.side_by_side(layers, panels) if frames is not layers else None)
                rows += _report_rows(motion, len(rows), placements, novelty, len(layers))
                bar.update(len(layers))
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
    if report is not None:
        output.write_report(Path(report), rows, threshold)
    _warn_novel(rows, threshold)
    where = f"{video_path} ({codec})" if video_path is not None else f"{png_dir}/"
    if video_path is not None and png_dir is not None:
        where += f" and {png_dir}/"
    log.info("wrote %d frames %dx%d at %g fps to %s in %.1f s (%.1f frames/s), placement %s%s", n, width, height,
             motion.fps, where, seconds, n / max(seconds, 1e-9), look.placement,
             f", background {background}" if look.alpha and look.placement != "crop" else "")
    if codec is not None:
        from engine.data.video import plays_in
        log.info("  %s", plays_in(codec))
    return result


def _placement(asked: str | None, motion_path: Path, matte: bool, run_dir: Path) -> str:
    """The placement to render: the one asked for, else the source's default; a run without mattes: the crop."""
    if asked is not None and asked not in PLACEMENTS:
        raise UserError(f"--placement must be one of {', '.join(PLACEMENTS)}, got {asked!r}")
    if not matte:
        if asked not in (None, "crop"):
            raise UserError(f"{run_dir} was trained before mattes: it can render only --placement crop (retrain it "
                            f"on a dataset built by this pix2dance for dancer and source placement)")
        if asked is None:
            log.warning("%s was trained before mattes: rendering the bare crop", run_dir)
        return "crop"
    return asked or ("source" if motion_path.suffix.lower() == ".blend" else "dancer")


def _local_plate(run_dir: Path) -> np.ndarray | None:
    """The plate of a run folder on this machine (--engine renders composite here), if it has one."""
    from engine.model.runs import STAGE_PLATE
    path = Path(run_dir) / STAGE_PLATE
    if not path.is_file():
        return None
    from engine.data.pairs import read_rgb
    return read_rgb(path)


def _report_rows(motion, done: int, placements: np.ndarray | None, novelty: np.ndarray | None,
                 n: int) -> list[dict]:
    """--report rows for frames [done, done + n): frame number, source frame, novelty, placement.

    frame: the output's 1-based number (its PNG's name); source_frame: the same frame's number in the
    source as resampled (they differ only in name today: the render starts where --frames does)."""
    def score(i):
        return None if novelty is None or not np.isfinite(novelty[i]) else round(float(novelty[i]), 4)
    return [{"frame": motion.first + done + i, "source_frame": motion.first + done + i, "novelty": score(i),
             "placement": None if placements is None else np.round(placements[i], 4).tolist()} for i in range(n)]


def _warn_novel(rows: list[dict], threshold: float | None) -> None:
    """One line naming the frames whose pose is outside the dancer's repertoire (they are guesses)."""
    if threshold is None:
        return
    novel = [r["frame"] for r in rows if r["novelty"] is not None and r["novelty"] > threshold]
    if novel:
        shown = ", ".join(map(str, novel[:12])) + (f" and {len(novel) - 12} more" if len(novel) > 12 else "")
        log.warning("%d of %d frames have poses outside the dancer's repertoire (novelty above %.2f body heights): "
                    "%s", len(novel), len(rows), threshold, shown)


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
