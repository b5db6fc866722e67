"""Render to Sequencer: the render job, from a checked plan to PNGs on disk and strips in the sequencer.

    plan = RenderPlan(scene_name=..., armature_name=..., camera_name=..., mapping=..., frames=[...],
                      folder=Path(...), connection=Connection(...), fps=24.0)  # operators.plan_render builds it
    job = RenderJob(plan).wait()      # or stepped by the operator's modal timer
    job.rendered, job.reused, job.strip, job.scene_strip, job.output, job.out_of_view, job.timings

The engine is asked for placement "source" with alpha (connection.output_for): each PNG is an RGBA
frame at the scene's render size, the dancer standing where the rig stands in the camera frame, and
the strip lays her ALPHA_OVER whatever lies below (with `scene_underneath`, the scene's own render).
Each PNG is recorded in the folder's manifest (sequencer.Manifest) with what it depends on: the
model (`model_key`), the bone mapping (`mapping_hash`), the pose (`pose_hash`), the placement and
alpha, so a rerun renders only frames that changed.

Each render job names a fresh sequence (protocol "Sequences"): a temporal model then continues
each chunk from the one before it on the same engine, and warms up the others on their context.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import jobs, sequencer
from ._engine import client as engine_client
from ._engine import joints, projection
from .checks import core_in_view
from .connection import Connection, Output, output_for, pick_model
from .jobs import AddonError
from .properties import settings_of

PROJECT_BATCH = 25      # poses projected per main-thread step in the UI (each costs a frame_set)


# --- the render job ----------------------------------------------------------------------------

# Callables run in the render worker after each PNG is written, as hook(job, frames_written):
# for scripts and tests (cancel after k frames, stop the engine mid-render). Empty normally.
AFTER_FRAME: list = []
# An engine answering "busy" (its queue full) is asked again this many times, waiting
# BUSY_WAIT s, then twice that, ... (at most 10 s) in between.
BUSY_RETRIES, BUSY_WAIT = 6, 0.5
# Output folders a render job is writing into now: a second render into one is refused.
RENDERING: set = set()
# Frames per request for a temporal model: the engine splits a request into lanes of at least 16
# frames (engine.model.sequence.MIN_LANE) that share its batches, so 64 fill a CPU engine's batch of 4.
TEMPORAL_CHUNK = 64


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
    fps: float = 24.0                 # the scene's frame rate: the engine smooths its framing over it
    model: str = ""                   # empty: the engine's first
    chunk: int = 8
    in_flight: int = 2
    scene_underneath: bool = False    # the scene's own render in the channel below the dancer
    show_rig_meshes: bool = False     # ... with the rig's meshes in it


class RenderJob(jobs.Job):
    """Render to Sequencer: project poses (main), render missing frames (worker), strips (main).

    Phases: project every frame of the range in slices (frame_set per pose), measure the clip's
    body statistics (joints.body_stats, sent with mode "clip"), hash each pose; the worker asks the
    engine for the frames whose PNG is missing or stale in the manifest and writes each PNG as it
    arrives; then (optionally) the scene's own render, and the strip(s). A cancel or an engine
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
        self.output: Output | None = None           # what the engine was asked for
        self.strip = None                           # the dancer's strip
        self.scene_strip = None                     # the scene underneath (scene_underneath)
        self.out_of_view: list[int] = []            # frames where the rig is partly out of view
        self.novelty: dict[int, float | None] = {}  # frame -> body heights from the dancer's repertoire
        self.threshold: float | None = None         # the model's: above it a frame is a guess
        self.timings: dict[str, float] = {}
        self.sequence = uuid.uuid4().hex            # this render's sequence id (a temporal model continues it)
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
                with jobs.no_live_preview(), (projection.skins_hidden(arm) if bpy.app.background else contextlib.nullcontext()):
                    kp = projection.project_frames(scene, arm, cam, plan.mapping, plan.frames[a:a + batch])
                parts.append(np.asarray(kp, np.float32))
                self.done = min(n, a + batch)
                if self.cancelled:
                    return
                yield
        finally:
            s = bpy.data.scenes.get(plan.scene_name)
            if s is not None and s.frame_current != original:
                with jobs.no_live_preview():
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
        if plan.scene_underneath:
            t0 = time.perf_counter()
            scene, arm, cam = self._objects()
            self.status, self.done, self.total = f"Rendering the scene ({scene.render.engine})", 0, len(plan.frames)
            hide = [] if plan.show_rig_meshes else sequencer.rig_meshes(arm)
            frames = sequencer.render_scene_frames(scene, cam, plan.frames, plan.folder / sequencer.SCENE_FOLDER, hide)
            try:
                while True:
                    with jobs.no_live_preview():
                        if next(frames, None) is None:
                            break
                    self.done += 1
                    if self.cancelled:
                        return
                    yield
            finally:
                with jobs.no_live_preview():
                    frames.close()      # restores the render settings and the frame
            self.timings["scene"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._make_strips()
        self.timings["strips"] = time.perf_counter() - t0
        self.status = self.summary()

    def _check_view(self) -> None:
        """AddonError when no mapped joint is in view in any frame; remember partly visible frames."""
        inside = core_in_view(self.keypoints, self.source_size)
        if not inside.any():
            raise AddonError(f"Armature {self.plan.armature_name!r} is out of the view of camera "
                             f"{self.plan.camera_name!r} in every frame {self.plan.frames[0]}-{self.plan.frames[-1]}")
        self.out_of_view = [f for f, ok in zip(self.plan.frames, inside.all(axis=1)) if not ok]

    def _make_strips(self) -> None:
        """The scene's render (when asked) and the dancer above it; a scene strip left from an earlier
        render goes when the option is off."""
        scene, _, _ = self._objects()
        plan = self.plan
        layers = [("dancer", f"pix2dance {self.model}", plan.folder)]
        if plan.scene_underneath:
            layers.insert(0, ("scene", "pix2dance scene", plan.folder / sequencer.SCENE_FOLDER))
        *under, self.strip = sequencer.replace_strips(scene, layers, plan.frames, tags=("scene",))
        self.scene_strip = under[0] if under else None

    def on_model(self, model: str, todo: int, reused: int, output: Output) -> None:
        self.model, self.reused, self.output, self.warning = model, reused, output, output.warning
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
        settings = settings_of(self.plan.scene_name)
        if settings is None:
            return
        if self.output is not None:
            settings.warning = self.warning
        scene = bpy.data.scenes.get(self.plan.scene_name)
        if scene is not None and self.novelty:
            settings.guesses = len(sequencer.mark_guesses(scene, self.novelty, self.threshold))
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
            output = output_for(model)
            self.threshold = model.get("novelty_threshold")
            entry_of = self._entries(model, output)
            todo = [i for i, f in enumerate(plan.frames) if not manifest.is_fresh(f, entry_of(i))]
            self.post("model", model["name"], len(todo), len(plan.frames) - len(todo), output)
            if not todo or self.cancelled:
                return
            plan.folder.mkdir(parents=True, exist_ok=True)
            index = {plan.frames[i]: i for i in todo}
            chunk = max(plan.chunk, TEMPORAL_CHUNK) if model.get("temporal") else plan.chunk
            pending, written, retries = todo, 0, 0
            while pending and not self.cancelled:
                stream = c.render(model["name"], np.ascontiguousarray(self.keypoints[pending]),
                                  source_size=self.source_size, mode="clip", source_stats=self.stats,
                                  frame_ids=[plan.frames[i] for i in pending], fmt="png", chunk=chunk,
                                  in_flight=plan.in_flight, joints=list(joints.JOINTS),
                                  placement=output.placement, alpha=output.alpha, fps=plan.fps,
                                  sequence=self.sequence)
                got: set[int] = set()
                try:
                    for frame in stream:
                        sequencer.write_atomic(plan.folder / sequencer.frame_name(frame.id), frame.data)
                        # The affine from the model's crop to this frame's pixels: where the dancer was put.
                        affine = list(frame.placement) if frame.placement else None
                        manifest.record(frame.id, {**entry_of(index[frame.id]), "affine": affine,
                                                   "novelty": frame.novelty})
                        got.add(frame.id)
                        written += 1
                        if written % chunk == 0:
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
            # Every frame's novelty, rendered now or vouched for by the manifest: marked on the timeline.
            self.novelty = {f: manifest.frames.get(str(f), {}).get("novelty") for f in plan.frames}
            try:
                manifest.save()
            finally:
                c.close()

    def _entries(self, model: dict, output: Output):
        """frame index -> the manifest entry its PNG depends on."""
        mhash = sequencer.mapping_hash(self.plan.mapping)
        key = sequencer.model_key(model)

        def entry(i: int) -> dict:
            return {"model": model["name"], "model_key": key, "mapping": mhash,
                    "pose": sequencer.pose_hash(self.keypoints[i], self.source_size),
                    "placement": output.placement, "alpha": output.alpha}
        return entry
