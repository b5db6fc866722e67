"""Background work that never blocks Blender: a worker thread talks to the engine, the main thread
applies the results.

    job = RenderJob(plan)          # or ConnectionJob / PreviewJob
    job.step()                     # main thread, often (a modal operator's timer, or jobs.tick)
    job.cancel()                   # from anywhere: Esc, a script, a test
    job.wait()                     # background mode: step until finished
    job.finished, job.error, job.cancelled, job.status

A job's main-thread side is a generator (`main`): each `step` runs it up to its next `yield`, so
Blender-side work (projecting poses, rendering the rig, making strips) comes in slices short
enough for a responsive UI. Engine I/O and file writing happen in the worker thread (`work`),
which hands messages to the main thread through a queue; `step` drains the queue and calls
`on_<kind>(*args)`. Blender data is only touched in `main` and the `on_*` handlers.

`bpy.app.timers` drive jobs that no operator steps (the live preview): `tick` is the timer
callback. Background mode (bpy as a module, `blender -b`) never fires timers: scripts and tests
call `job.wait()` or `tick()` themselves.

Every engine failure ends a job with a one-line `error` (shown by the operator with
self.report), never a traceback in the UI. Quitting Blender never waits on a job: worker threads
are daemons, sockets have LINGER 0 and every engine call has a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
import zmq

from . import sequencer
from ._engine import client as engine_client
from ._engine import joints, projection

log = logging.getLogger(__name__)

INTERVAL = 0.05         # seconds between timer ticks while work is in flight
PROJECT_BATCH = 25      # poses projected per main-thread step in the UI (each costs a frame_set)

_quiet = {"depth": 0}


@contextlib.contextmanager
def no_live_preview():
    """While a job moves the scene through frames itself, the frame-change handler sends nothing."""
    _quiet["depth"] += 1
    try:
        yield
    finally:
        _quiet["depth"] -= 1


def live_preview_allowed() -> bool:
    return _quiet["depth"] == 0


class AddonError(Exception):
    """A problem the user can fix, in one line (becomes an operator's error report)."""


def describe(e: BaseException) -> str:
    """One line for a failed engine call."""
    if isinstance(e, engine_client.ProtocolMismatch):
        return f"Engine speaks another protocol version: {e}"
    if isinstance(e, engine_client.EngineUnavailable):
        return f"Engine unreachable or timed out: {e}"
    if isinstance(e, engine_client.EngineError):
        return f"Engine error ({e.code}): {e.message}"
    return f"Engine error: {e}"


@dataclass
class Connection:
    """How to reach the engine (plain values: safe to hand to a worker thread)."""
    address: str
    timeout: float = 10.0
    curve: tuple[str, str] | None = None

    def open(self) -> "engine_client.Client":
        return engine_client.Client(self.address, timeout=self.timeout, curve=self.curve)


def pick_model(info: dict, wanted: str) -> dict:
    """The model entry named `wanted`, or the engine's first one when `wanted` is empty."""
    models = info.get("models") or []
    if not models:
        raise AddonError("The engine serves no model")
    if not wanted:
        return models[0]
    for m in models:
        if m.get("name") == wanted:
            return m
    raise AddonError(f"The engine has no model {wanted!r} (it serves: {', '.join(m.get('name', '?') for m in models)})")


def model_key(model: dict) -> str:
    """A hash of what the engine says about a model (name, size, stats, and whatever else `info` adds,
    such as a weights digest): a model trained again on other data renders again. Where it runs
    (device, precision) does not count: the frames are the same dancer."""
    text = json.dumps({k: v for k, v in model.items() if k not in ("device", "precision")}, sort_keys=True,
                      default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def pose_hash(kp: np.ndarray, source_size: tuple[int, int]) -> str:
    """A hash of one pose (J, 3) in source pixels; rounded to 1/100 px so float noise does not count."""
    data = np.round(np.asarray(kp, np.float64), 2).astype("<f4").tobytes()
    return hashlib.sha1(data + f"{source_size[0]}x{source_size[1]}".encode()).hexdigest()[:16]


# --- the job machinery -------------------------------------------------------------------------

_every_job: "weakref.WeakSet[Job]" = weakref.WeakSet()   # to abandon them all on unregister


class Job:
    """Main-thread generator (`main`) + optional worker thread (`work`), stepped by its owner."""
    name = "job"

    def __init__(self):
        _every_job.add(self)
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker_done = False
        self._main = None
        self.finished = False
        self.error: str | None = None
        self.status = ""
        self.done, self.total = 0, 0          # progress in whatever unit the job counts

    # --- either thread
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop: the worker stops between frames, the main side at its next step."""
        self._cancel.set()

    def abandon(self) -> None:
        """Cancel and end the main side now (its owner is going away: operator cancelled, add-on
        unregistered); the worker, a daemon, stops on its own at its next check or timeout."""
        self.cancel()
        if not self.finished:
            self._finish()

    # --- worker side
    def work(self) -> None:
        """Runs in the worker thread; `post` messages to the main thread. No Blender data here."""

    def post(self, kind: str, *args) -> None:
        self._queue.put((kind, args))

    def _run_worker(self) -> None:
        try:
            self.work()
        except engine_client.ClientError as e:
            self.post("failed", describe(e))
        except AddonError as e:
            self.post("failed", str(e))
        except zmq.ZMQError as e:   # e.g. an address ZeroMQ cannot connect to
            self.post("failed", f"Cannot use engine address: {e}")
        except Exception as e:  # a bug: keep the traceback in the log, give the user one line
            log.exception("pix2dance: %s worker failed", self.name)
            self.post("failed", f"Internal error in the {self.name} worker: {e!r}")
        finally:
            self.post("_worker_end")

    # --- main-thread side
    def main(self):
        """Generator run on the main thread by `step`; by default just starts and awaits the worker."""
        self.start_worker()
        yield from self.await_worker()

    def start_worker(self) -> None:
        self._thread = threading.Thread(target=self._run_worker, name=f"pix2dance-{self.name}", daemon=True)
        self._thread.start()

    def await_worker(self):
        """Yield until the worker has ended, handling its messages in between."""
        while not self._worker_done:
            yield

    def on_failed(self, message: str) -> None:
        self.error = self.error or message

    def on__worker_end(self) -> None:
        self._worker_done = True

    def drain(self, timeout: float = 0.0) -> None:
        """Handle the worker's queued messages (waiting up to `timeout` for the first one)."""
        try:
            kind, args = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        while True:
            getattr(self, f"on_{kind}")(*args)
            try:
                kind, args = self._queue.get_nowait()
            except queue.Empty:
                return

    def step(self, timeout: float = 0.0) -> bool:
        """One slice of main-thread work; True while the job is not finished. Never raises."""
        if self.finished:
            return False
        if self._main is None:
            self._main = self.main()
        waiting = self._thread is not None and not self._worker_done
        try:
            self.drain(timeout if waiting else 0.0)
            if self.error:  # the worker failed (it has already left its work): end here
                raise StopIteration
            next(self._main)
        except StopIteration:
            self._finish()
        except AddonError as e:
            self.error = self.error or str(e)
            self._finish()
        except Exception as e:
            log.exception("pix2dance: %s failed", self.name)
            self.error = self.error or f"Internal error in {self.name}: {e!r}"
            self._finish()
        return not self.finished

    def _finish(self) -> None:
        if self._thread is not None and not self._worker_done:
            self.cancel()  # the main side ended early: stop the worker too (it is a daemon)
        self.finished = True
        try:
            if self._main is not None:
                self._main.close()   # runs the main side's finally blocks (frame restored, ...)
        except Exception:
            log.exception("pix2dance: ending %s", self.name)
        try:
            self.cleanup()
        except Exception:
            log.exception("pix2dance: cleaning up %s", self.name)

    def cleanup(self) -> None:
        """Main thread, once, however the job ended."""

    def wait(self, poll: float = 0.05, limit: float | None = None) -> "Job":
        """Step until finished (background mode and tests); `limit` seconds at most, then cancel."""
        start = time.monotonic()
        while self.step(poll):
            if limit is not None and time.monotonic() - start > limit and not self.cancelled:
                self.cancel()
        return self


# --- connection test ---------------------------------------------------------------------------

# Model names each engine address served when last asked (for the panel's model menu).
MODELS: dict[str, list[str]] = {}


class ConnectionJob(Job):
    """Ping the engine and read its info; the result goes to the scene's status line."""
    name = "connection test"

    def __init__(self, scene_name: str, connection: Connection):
        super().__init__()
        self.scene_name, self.connection = scene_name, connection
        self.info: dict | None = None
        self.latency = None

    def work(self) -> None:
        c = self.connection.open()
        try:
            latency = c.ping()
            self.post("info", latency, c.info())
        finally:
            c.close()

    def on_info(self, latency: float, info: dict) -> None:
        self.latency, self.info = latency, info
        names = [m.get("name", "?") for m in info.get("models", [])]
        MODELS[self.connection.address] = names
        self.status = (f"Connected to {info.get('server', 'an engine')} at {self.connection.address} "
                       f"({latency * 1000:.0f} ms); models: {', '.join(names) or 'none'}")

    def cleanup(self) -> None:
        settings = _settings(self.scene_name)
        if settings is None:
            return
        settings.connected = self.error is None and self.info is not None
        if self.error:
            settings.last_error = self.error
            settings.status = "Not connected"
        else:
            settings.last_error = ""
            settings.status = self.status


def _settings(scene_name: str):
    scene = bpy.data.scenes.get(scene_name)
    return getattr(scene, "pix2dance", None) if scene is not None else None


# --- showing a preview image ---------------------------------------------------------------------

PREVIEW_IMAGE = "pix2dance preview"


def show_preview(scene, png: bytes, camera=None) -> "bpy.types.Image":
    """Show PNG bytes as the Image datablock 'pix2dance preview' (and the camera's background)."""
    path = Path(tempfile.gettempdir()) / f"pix2dance-preview-{os.getpid()}.png"
    sequencer.write_atomic(path, png)
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(str(path))
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = str(path)
        image.reload()
    if camera is not None and camera.type == "CAMERA":
        cam = camera.data
        bg = next((b for b in cam.background_images if b.image == image), None)
        if bg is None:
            bg = cam.background_images.new()
            bg.image = image
            bg.alpha = 1.0
        cam.show_background_images = True
    _show_in_editors(image)
    return image


def _show_in_editors(image) -> None:
    """Image Editors showing nothing (or the preview) show the preview; 3D views redraw."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas if window.screen else ():
            if area.type == "IMAGE_EDITOR":
                space = area.spaces.active
                if not space.use_image_pin and (space.image is None or space.image == image):
                    space.image = image
                area.tag_redraw()
            elif area.type == "VIEW_3D":
                area.tag_redraw()


@dataclass
class PreviewRequest:
    scene_name: str
    frame: int
    keypoints: np.ndarray          # (J, 3) in source pixels
    source_size: tuple[int, int]
    model: str
    connection: Connection
    camera_name: str = ""
    sent: float = field(default_factory=time.monotonic)


def render_one(c, request: PreviewRequest) -> tuple[str, bytes]:
    """Render one pose with mode "frame" (live preview); (model name, PNG bytes)."""
    model = pick_model(c.info(), request.model)["name"]
    kp = np.ascontiguousarray(request.keypoints[None], dtype=np.float32)
    frames = list(c.render(model, kp, source_size=request.source_size, mode="frame", frame_ids=[request.frame],
                           fmt="png", chunk=1, in_flight=1, joints=list(joints.JOINTS)))
    return model, frames[0].data


class PreviewJob(Job):
    """One pose in, one frame shown: the Preview Frame operator."""
    name = "preview"

    def __init__(self, request: PreviewRequest):
        super().__init__()
        self.request = request
        self.image = None

    def work(self) -> None:
        c = self.request.connection.open()
        try:
            model, png = render_one(c, self.request)
        finally:
            c.close()
        self.post("image", model, png)

    def on_image(self, model: str, png: bytes) -> None:
        scene = bpy.data.scenes.get(self.request.scene_name)
        if scene is None:
            return
        camera = bpy.data.objects.get(self.request.camera_name) if scene.pix2dance.preview_background else None
        self.image = show_preview(scene, png, camera)
        self.status = f"Preview of frame {self.request.frame} ({model})"
        scene.pix2dance.last_error = ""
        scene.pix2dance.status = self.status

    def cleanup(self) -> None:
        settings = _settings(self.request.scene_name)
        if settings is not None and self.error:
            settings.last_error = self.error


# --- live preview ------------------------------------------------------------------------------

class LivePreview:
    """A long-lived worker for scrubbing: only the newest pose waits to be sent, older ones are dropped.

    The frame-change handler calls `request` (main thread, cheap); the worker renders one pose at a
    time; `tick` shows a reply only if the scene is still on that frame (stale replies dropped).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._pending: PreviewRequest | None = None
        self._stop = False
        self.results: queue.Queue = queue.Queue()
        self.sent = self.shown = self.dropped = 0
        self._last_sent = 0.0          # request time of the reply shown last
        self._thread = threading.Thread(target=self._run, name="pix2dance-live-preview", daemon=True)
        self._thread.start()

    def request(self, req: PreviewRequest) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1          # never sent: a newer pose replaces it
            self._pending = req
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        c, key = None, None
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    req, self._pending = self._pending, None
                try:
                    if c is None or key != req.connection:
                        if c is not None:
                            c.close()
                        c = None
                        c, key = req.connection.open(), req.connection
                    model, png = render_one(c, req)
                    self.sent += 1
                    self.results.put(("image", req, model, png))
                except (engine_client.ClientError, AddonError, zmq.ZMQError) as e:
                    msg = describe(e) if isinstance(e, engine_client.ClientError) else \
                        f"Cannot use engine address: {e}" if isinstance(e, zmq.ZMQError) else str(e)
                    self.results.put(("error", req, msg, None))
                    if c is not None:
                        c.close()
                    c = None          # a fresh socket next time (the engine may come back)
                except Exception as e:  # a bug: log it, keep the worker alive for the next pose
                    log.exception("pix2dance: live preview failed")
                    self.results.put(("error", req, f"Internal error in the live preview: {e!r}", None))
        finally:
            if c is not None:
                c.close()

    def handle_results(self) -> None:
        """Main thread: show the replies whose frame is still current, drop the rest."""
        while True:
            try:
                kind, req, a, b = self.results.get_nowait()
            except queue.Empty:
                return
            scene = bpy.data.scenes.get(req.scene_name)
            if scene is None:
                continue
            settings = scene.pix2dance
            if kind == "error":
                settings.last_error = a
                settings.connected = False
                continue
            if scene.frame_current != req.frame and not (_animation_playing() and req.sent > self._last_sent):
                # Stale: the frame has moved on. (During playback the newest reply is shown anyway,
                # a frame or two late: else a playing timeline would never show the dancer.)
                self.dropped += 1
                continue
            self._last_sent = req.sent
            camera = bpy.data.objects.get(req.camera_name) if settings.preview_background else None
            show_preview(scene, b, camera)
            self.shown += 1
            settings.connected, settings.last_error = True, ""
            settings.status = f"Live preview: frame {req.frame} ({a}, {(time.monotonic() - req.sent) * 1000:.0f} ms)"


def _animation_playing() -> bool:
    wm = bpy.context.window_manager
    return any(w.screen is not None and w.screen.is_animation_playing for w in getattr(wm, "windows", ()))


_live: dict = {"preview": None}
_active: list[Job] = []


def live_preview() -> LivePreview:
    """The live-preview worker, started on first use."""
    lp = _live["preview"]
    if lp is None or not lp.alive:
        lp = _live["preview"] = LivePreview()
    ensure_timer()
    return lp


def stop_live_preview() -> None:
    lp = _live["preview"]
    _live["preview"] = None
    if lp is not None:
        lp.stop()


# --- the timer ---------------------------------------------------------------------------------

def submit(job: Job) -> Job:
    """Run a job driven by the timer (no operator stepping it)."""
    _active.append(job)
    ensure_timer()
    return job


def tick() -> float | None:
    """The bpy.app.timers callback: step timer-driven jobs and show live-preview replies."""
    for job in list(_active):
        if not job.step():
            _active.remove(job)
    lp = _live["preview"]
    if lp is not None:
        lp.handle_results()
    return INTERVAL if (_active or lp is not None) else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=INTERVAL, persistent=True)


def shutdown() -> None:
    """Cancel everything (unregister): workers stop on their own, nothing waits on the engine."""
    for job in list(_every_job):
        job.abandon()
    _active.clear()
    stop_live_preview()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


# --- Render to Sequencer -----------------------------------------------------------------------

# Callables run in the render worker after each PNG is written, as hook(job, frames_written):
# for scripts and tests (cancel after k frames, stop the engine mid-render). Empty normally.
AFTER_FRAME: list = []
# An engine answering "busy" (its queue full) is asked again this many times, waiting
# BUSY_WAIT s, then twice that, ... (at most 10 s) in between.
BUSY_RETRIES, BUSY_WAIT = 6, 0.5
# Output folders a render job is writing into now: a second render into one is refused.
RENDERING: set = set()

@dataclass
class RenderPlan:
    """What a render needs, checked on the main thread by operators.plan_render (names, not IDs)."""
    scene_name: str
    armature_name: str
    camera_name: str
    mapping: dict
    frames: list[int]                 # consecutive scene frames, frame_start..frame_end
    folder: Path                      # absolute output folder
    connection: Connection
    model: str = ""                   # empty: the engine's first
    chunk: int = 8
    in_flight: int = 2
    rig_render: bool = False


class RenderJob(Job):
    """Render to Sequencer: project poses (main), render missing frames (worker), strips (main).

    Phases: project every frame of the range in slices (frame_set per pose), measure the clip's
    body statistics (joints.body_stats, sent with mode "clip"), hash each pose; the worker asks the
    engine for the frames whose PNG is missing or stale in the manifest and writes each PNG as it
    arrives; then (optionally) the rig's Workbench render, and the strip(s). A cancel or an engine
    failure keeps every PNG written so far, and the manifest that vouches for them.
    """
    name = "render"

    def __init__(self, plan: RenderPlan):
        super().__init__()
        self.plan = plan
        self.keypoints: np.ndarray | None = None     # (N, J, 3) float32
        self.source_size: tuple[int, int] = (0, 0)
        self.stats: dict | None = None
        self.model = ""
        self.rendered: list[int] = []               # frames the engine rendered this time
        self.reused = 0                             # frames the manifest vouched for
        self.strip = None
        self.rig_strip = None
        self.out_of_view: list[int] = []            # frames where the rig is partly out of view
        self.timings: dict[str, float] = {}
        self._claimed = False                       # holds its folder in RENDERING

    # --- main thread
    def _objects(self):
        scene = bpy.data.scenes.get(self.plan.scene_name)
        arm = bpy.data.objects.get(self.plan.armature_name)
        cam = bpy.data.objects.get(self.plan.camera_name)
        if scene is None or arm is None or cam is None:
            raise AddonError("The scene, armature or camera was deleted during the render")
        return scene, arm, cam

    def main(self):
        plan = self.plan
        if plan.folder in RENDERING:
            raise AddonError(f"A render into {plan.folder} is already running")
        RENDERING.add(plan.folder)
        self._claimed = True
        n = len(plan.frames)
        self.total, self.status = n, "Projecting poses"
        t0 = time.perf_counter()
        scene, arm, cam = self._objects()
        self.source_size = tuple(int(v) for v in projection.render_size(scene))
        original = scene.frame_current
        parts = []
        # Background mode has no UI to keep responsive: one slice (one frame restore) is quicker.
        batch = n if bpy.app.background else PROJECT_BATCH
        try:
            for a in range(0, n, batch):
                scene, arm, cam = self._objects()   # refetched each slice: the user may undo between
                with no_live_preview(), (projection.skins_hidden(arm) if bpy.app.background else contextlib.nullcontext()):
                    kp = projection.project_frames(scene, arm, cam, plan.mapping, plan.frames[a:a + batch])
                parts.append(np.asarray(kp, np.float32))
                self.done = min(n, a + batch)
                if self.cancelled:
                    return
                yield
        finally:
            s = bpy.data.scenes.get(plan.scene_name)
            if s is not None and s.frame_current != original:
                with no_live_preview():
                    s.frame_set(original)
        self.keypoints = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        self.timings["project"] = time.perf_counter() - t0
        self._check_view()
        self.stats = joints.body_stats(self.keypoints.tolist())
        if self.stats is None:
            raise AddonError(f"No full body (shoulders, hips, knees, ankles) in view in frames "
                             f"{plan.frames[0]}-{plan.frames[-1]}: frame the armature with the camera")
        self.done, self.status = 0, "Rendering"
        t0 = time.perf_counter()
        self.start_worker()
        yield from self.await_worker()
        self.timings["engine"] = time.perf_counter() - t0
        if self.error or self.cancelled:
            return
        if plan.rig_render:
            t0 = time.perf_counter()
            self.status, self.done = "Rendering the rig (Workbench)", 0
            scene, arm, cam = self._objects()
            frames = sequencer.render_rig_frames(scene, cam, plan.frames, plan.folder / sequencer.RIG_FOLDER)
            try:
                while True:
                    with no_live_preview():
                        if next(frames, None) is None:
                            break
                    self.done += 1
                    if self.cancelled:
                        return
                    yield
            finally:
                with no_live_preview():
                    frames.close()      # restores the render settings and the frame
            self.timings["rig"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._make_strips()
        self.timings["strips"] = time.perf_counter() - t0
        self.status = self.summary()

    def _check_view(self) -> None:
        """AddonError when no mapped joint is in view in any frame; remember partly visible frames."""
        kp = self.keypoints
        w, h = self.source_size
        core = [joints.INDEX[n] for n in joints.CORE]
        c = kp[:, core]
        inside = (c[..., 2] > 0) & (c[..., 0] >= 0) & (c[..., 0] < w) & (c[..., 1] >= 0) & (c[..., 1] < h)
        if not inside.any():
            raise AddonError(f"Armature {self.plan.armature_name!r} is out of the view of camera "
                             f"{self.plan.camera_name!r} in every frame {self.plan.frames[0]}-{self.plan.frames[-1]}")
        self.out_of_view = [f for f, ok in zip(self.plan.frames, inside.all(axis=1)) if not ok]

    def _make_strips(self) -> None:
        scene, _, _ = self._objects()
        plan = self.plan
        self.strip = sequencer.replace_image_strip(scene, "dancer", f"pix2dance {self.model}", plan.folder, plan.frames)
        if plan.rig_render:
            self.rig_strip = sequencer.replace_image_strip(scene, "rig", "pix2dance rig", plan.folder / sequencer.RIG_FOLDER,
                                                           plan.frames, avoid=(self.strip.channel,))
            sequencer.side_by_side(scene, self.strip, self.rig_strip)
        else:
            sequencer.remove_tagged(scene, "rig")

    def on_model(self, model: str, todo: int, reused: int) -> None:
        self.model, self.reused = model, reused
        self.total = todo
        self.status = f"Rendering {todo} frames with {model} ({reused} unchanged)"

    def on_busy(self, retries: int) -> None:
        self.status = f"Engine busy, trying again ({retries})"

    def on_frame(self, frame: int) -> None:
        self.rendered.append(frame)
        self.done = len(self.rendered)

    def cleanup(self) -> None:
        if self._claimed:
            RENDERING.discard(self.plan.folder)
        settings = _settings(self.plan.scene_name)
        if settings is None:
            return
        if self.error:
            settings.last_error = self.error
            settings.status = f"Render stopped: {len(self.rendered)} new frames kept"
        elif self.cancelled:
            settings.status = f"Render cancelled: {len(self.rendered)} new frames kept"
        else:
            settings.last_error = ""
            settings.connected = True
            settings.status = self.summary()

    def summary(self) -> str:
        n = len(self.plan.frames)
        return (f"Rendered {len(self.rendered)} of {n} frames with {self.model or '?'} "
                f"({self.reused} unchanged) into {self.plan.folder}")

    # --- worker thread
    def work(self) -> None:
        plan = self.plan
        c = plan.connection.open()
        manifest = sequencer.Manifest.load(plan.folder)
        try:
            model = pick_model(c.info(), plan.model)
            entry_of = self._entries(model)
            todo = [i for i, f in enumerate(plan.frames) if not manifest.is_fresh(f, entry_of(i))]
            self.post("model", model["name"], len(todo), len(plan.frames) - len(todo))
            if not todo or self.cancelled:
                return
            plan.folder.mkdir(parents=True, exist_ok=True)
            index = {plan.frames[i]: i for i in todo}
            pending, written, retries = todo, 0, 0
            while pending and not self.cancelled:
                stream = c.render(model["name"], np.ascontiguousarray(self.keypoints[pending]),
                                  source_size=self.source_size, mode="clip", source_stats=self.stats,
                                  frame_ids=[plan.frames[i] for i in pending], fmt="png", chunk=plan.chunk,
                                  in_flight=plan.in_flight, joints=list(joints.JOINTS))
                got: set[int] = set()
                try:
                    for frame in stream:
                        sequencer.write_atomic(plan.folder / sequencer.frame_name(frame.id), frame.data)
                        manifest.record(frame.id, entry_of(index[frame.id]))
                        got.add(frame.id)
                        written += 1
                        if written % plan.chunk == 0:
                            manifest.save()    # every chunk: a crash loses at most one chunk's records
                        self.post("frame", frame.id)
                        for hook in AFTER_FRAME:
                            hook(self, written)
                        if self.cancelled:
                            break
                    pending = []
                except engine_client.EngineError as e:
                    # "busy": the engine's queue is full (other clients); the protocol says try again later.
                    if e.code != "busy" or retries >= BUSY_RETRIES:
                        raise
                    retries += 1
                    pending = [i for i in pending if plan.frames[i] not in got]
                    self.post("busy", retries)
                    self._cancel.wait(min(BUSY_WAIT * 2 ** (retries - 1), 10.0))
                finally:
                    stream.close()
        finally:
            try:
                manifest.save()
            finally:
                c.close()

    def _entries(self, model: dict):
        """frame index -> the manifest entry its PNG depends on."""
        from .properties import mapping_hash
        mhash = mapping_hash(self.plan.mapping)
        key = model_key(model)

        def entry(i: int) -> dict:
            return {"model": model["name"], "model_key": key, "mapping": mhash,
                    "pose": pose_hash(self.keypoints[i], self.source_size)}
        return entry
