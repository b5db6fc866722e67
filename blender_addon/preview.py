"""The dancer in one pose: Preview Frame, and the live preview while scrubbing or playing.

    request = current_pose_request(scene)      # main thread: the current frame's pose, checked
    PreviewJob(request).wait()                 # the Preview Frame operator's job
    live_preview().request(request)            # newest pose wins; replies shown by jobs.tick
    show_preview(scene, png, camera, front=True)   # the image 'pix2dance preview' (+ over the camera view)

The engine is asked for what Render to Sequencer asks (connection.output_for): an RGBA frame at the
render size with the dancer where the rig stands, shown in front of the camera view (the camera's
background image, display depth FRONT, fitted to the camera frame): looking through the camera, the
user sees her over the scene. A model without a matte gives its bare crop, shown behind, with a
warning in the panel. Rendered frames are kept (FRAMES, keyed by engine, model, pose and output):
a pose seen before is shown again without asking the engine to render it.

A temporal model draws each frame from its pose and the frame before (protocol "Sequences"): each
preview names the scene's sequence (an id made once per scene in this Blender session) and its
frame, and the engine continues from the last preview when the user steps forward by exactly one
frame, and starts cold otherwise (that rule is the engine's). Its frames depend on more than the
pose, so FRAMES does not keep them.

The live preview reacts to two Blender events, both hooked in by operators.register:
`on_frame_change` (frame_change_post) sends the new pose; `live_preview_switched` runs when
`scene.pix2dance.live_preview` is switched, through `properties.LIVE_PREVIEW_SWITCHED`.

Why that indirection: the property's update callback must reach this module, and this module
reads the settings (properties); were properties to import it, the two would import each other.
properties instead keeps a plain list of callables, like bpy.app.handlers, and imports nothing
of the add-on's jobs or operators. The add-on's imports then run one way:
properties, preferences, sequencer -> jobs -> connection, checks -> preview, render_job -> operators.
"""

from __future__ import annotations

import logging
import os
import queue
import uuid
from collections import OrderedDict
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import jobs, sequencer
from ._engine import joints, projection
from .checks import checked_mapping, core_in_view, rig_and_camera
from .connection import Connection, Output, connection_for, output_for, pick_model
from .jobs import AddonError
from .properties import settings_of

log = logging.getLogger(__name__)


# --- showing a preview image ---------------------------------------------------------------------

PREVIEW_IMAGE = "pix2dance preview"


def show_preview(scene, png: bytes, camera=None, front: bool = True) -> "bpy.types.Image":
    """Show PNG bytes as the Image datablock 'pix2dance preview', and as `camera`'s background image:
    in front of the scene (`front`: an RGBA frame at the render size, transparent around the dancer)
    or behind it (an opaque crop), fitted to the camera frame."""
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
        bg.alpha, bg.frame_method = 1.0, "FIT"
        bg.display_depth = "FRONT" if front else "BACK"
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
    """One pose for the engine, projected on the main thread (plain values: safe in the worker)."""
    scene_name: str
    frame: int
    keypoints: np.ndarray          # (J, 3) in source pixels
    source_size: tuple[int, int]
    model: str
    connection: Connection
    camera_name: str = ""
    sequence: str = ""             # the scene's preview sequence (sequence_id): a temporal model continues it
    sent: float = field(default_factory=time.monotonic)


_SEQUENCES: dict[str, str] = {}


def sequence_id(scene_name: str) -> str:
    """The scene's live-preview sequence id: made once per scene and Blender session."""
    return _SEQUENCES.setdefault(scene_name, uuid.uuid4().hex)


def current_pose_request(scene) -> PreviewRequest:
    """The current frame's pose, projected now (main thread), ready for the engine."""
    s = scene.pix2dance
    arm, cam = rig_and_camera(scene)
    m = checked_mapping(scene, arm)
    kp = projection.project(scene, arm, cam, m)
    w, h = (int(v) for v in projection.render_size(scene))
    if not core_in_view(kp, (w, h)).any():
        raise AddonError(f"Armature {arm.name!r} is out of the view of camera {cam.name!r} at frame {scene.frame_current}")
    return PreviewRequest(scene.name, scene.frame_current, kp, (w, h), s.model.strip(), connection_for(scene), cam.name,
                          sequence_id(scene.name))


class FrameCache:
    """PNGs of poses already rendered, the newest first to stay (any thread: locked)."""

    def __init__(self, max_frames: int = 64, max_bytes: int = 64 << 20):
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.max_frames or sum(map(len, self._items.values())) > self.max_bytes:
                self._items.popitem(last=False)


FRAMES = FrameCache()


@dataclass
class Rendered:
    """One pose's frame: the model that drew it, PNG bytes, what was asked, whether it was kept from before,
    and whether the engine drew it from the frame before (a temporal model's step forward)."""
    model: str
    png: bytes
    output: Output
    reused: bool = False
    warm: bool = False


def render_one(c, request: PreviewRequest) -> Rendered:
    """Render one pose with mode "frame" (each pose framed alone), or take it from FRAMES when this
    engine's model has drawn this pose before (a model trained again has another key; a temporal
    model's frame depends on the frame before, so it is never taken from FRAMES)."""
    model = pick_model(c.info(), request.model)
    output = output_for(model)
    temporal = bool(model.get("temporal"))
    key = (request.connection.address, sequencer.model_key(model),
           sequencer.pose_hash(request.keypoints, request.source_size), output.placement, output.alpha)
    png = None if temporal else FRAMES.get(key)
    if png is not None:
        return Rendered(model["name"], png, output, reused=True)
    kp = np.ascontiguousarray(request.keypoints[None], dtype=np.float32)
    (frame,) = c.render(model["name"], kp, source_size=request.source_size, mode="frame",
                        frame_ids=[request.frame], fmt="png", chunk=1, in_flight=1, joints=list(joints.JOINTS),
                        placement=output.placement, alpha=output.alpha, sequence=request.sequence or None)
    if not temporal:
        FRAMES.put(key, frame.data)
    return Rendered(model["name"], frame.data, output, warm=frame.warm)


class PreviewJob(jobs.Job):
    """One pose in, one frame shown: the Preview Frame operator."""
    name = "preview"

    def __init__(self, request: PreviewRequest):
        super().__init__()
        self.request = request
        self.image = None

    def work(self) -> None:
        c = self.request.connection.open()
        try:
            rendered = render_one(c, self.request)
        finally:
            c.close()
        self.post("image", rendered)

    def on_image(self, rendered: Rendered) -> None:
        scene = bpy.data.scenes.get(self.request.scene_name)
        if scene is None:
            return
        s = scene.pix2dance
        camera = bpy.data.objects.get(self.request.camera_name) if s.preview_background else None
        self.image = show_preview(scene, rendered.png, camera, front=rendered.output.alpha)
        self.status = f"Preview of frame {self.request.frame} ({rendered.model})"
        self.warning = s.warning = rendered.output.warning
        s.last_error = ""
        s.status = self.status

    def cleanup(self) -> None:
        settings = settings_of(self.request.scene_name)
        if settings is not None and self.error:
            settings.last_error = self.error


# --- live preview ------------------------------------------------------------------------------

class LivePreview:
    """A long-lived worker for scrubbing: only the newest pose waits to be sent, older ones are dropped.

    The frame-change handler calls `request` (main thread, cheap); the worker renders one pose at a
    time; `step` (from jobs.tick) shows a reply only if the scene is still on that frame (stale replies dropped).
    `sent` counts the poses the engine rendered, `reused` those FRAMES held already.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._pending: PreviewRequest | None = None
        self._stop = False
        self.results: queue.Queue = queue.Queue()
        self.sent = self.reused = self.shown = self.dropped = 0
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

    # --- what jobs.tick calls (main thread)
    def step(self) -> bool:
        """Show the replies that arrived; False once stopped (the timer lets go of it)."""
        if self._stop:
            return False
        self.handle_results()
        return True

    def abandon(self) -> None:
        """The add-on is going away: stop, and let the next live_preview() start afresh."""
        self.stop()
        if _live["preview"] is self:
            _live["preview"] = None

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
                    rendered = render_one(c, req)
                    if rendered.reused:
                        self.reused += 1
                    else:
                        self.sent += 1
                    self.results.put(("image", req, rendered, None))
                except Exception as e:
                    message = jobs.describe(e)
                    if message is None:  # a bug: log it, keep the worker alive for the next pose
                        log.exception("pix2dance: live preview failed")
                        self.results.put(("error", req, f"Internal error in the live preview: {e!r}", None))
                        continue
                    self.results.put(("error", req, message, None))
                    if c is not None:
                        c.close()
                    c = None          # a fresh socket next time (the engine may come back)
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
            show_preview(scene, a.png, camera, front=a.output.alpha)
            self.shown += 1
            settings.connected, settings.last_error, settings.warning = True, "", a.output.warning
            settings.status = (f"Live preview: frame {req.frame} ({a.model}, "
                               f"{'unchanged' if a.reused else f'{(time.monotonic() - req.sent) * 1000:.0f} ms'})")


def _animation_playing() -> bool:
    wm = bpy.context.window_manager
    return any(w.screen is not None and w.screen.is_animation_playing for w in getattr(wm, "windows", ()))


_live: dict = {"preview": None}


def live_preview() -> LivePreview:
    """The live-preview worker, started (and handed to the timer) on first use."""
    lp = _live["preview"]
    if lp is None or not lp.alive:
        lp = _live["preview"] = LivePreview()
    jobs.submit(lp)
    return lp


def stop_live_preview() -> None:
    lp = _live["preview"]
    _live["preview"] = None
    if lp is not None:
        lp.stop()


# --- the hooks: frame changes and the live_preview switch ------------------------------------------

@persistent
def on_frame_change(scene, depsgraph=None) -> None:
    """frame_change_post: send the new pose to the live-preview worker (cheap; never raises)."""
    s = getattr(scene, "pix2dance", None)
    if s is None or not s.live_preview or not jobs.live_preview_allowed():
        return
    try:
        request = current_pose_request(scene)
    except AddonError as e:
        s.last_error = str(e)
        return
    except Exception as e:  # a bug must not break playback
        log.exception("pix2dance: live preview failed at frame %s", scene.frame_current)
        s.last_error = f"Live preview failed: {e!r}"
        return
    live_preview().request(request)


def live_preview_switched(settings, context) -> None:
    """scene.pix2dance.live_preview was switched: show the current pose at once, or stop."""
    if settings.live_preview:
        on_frame_change(context.scene)
    else:
        stop_live_preview()
