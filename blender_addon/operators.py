"""The add-on's operators: what the panel's buttons and scripts call.

    bpy.ops.pix2dance.auto_map()                 # map the armature's bones to the canonical joints
    bpy.ops.pix2dance.test_connection()          # ping the engine, list its models
    bpy.ops.pix2dance.preview_frame()            # the dancer in the current frame's pose, over the camera view
    bpy.ops.pix2dance.render_to_sequencer()      # frame_start..frame_end -> RGBA PNGs -> an ALPHA_OVER strip
    bpy.ops.pix2dance.retarget_bvh(filepath=...) # a BVH's motion onto the armature

Operators that wait on the engine run a `jobs.Job` (connection.ConnectionJob, preview.PreviewJob,
render_job.RenderJob): modally in the UI (progress bar, status text, Esc cancels, Blender stays
responsive), or to completion in background mode (`blender -b`, bpy as a module), so a script
can call them and read the result. Every problem the user can fix
(no camera, unmapped joint, engine unreachable, ...) is an error report, never a traceback; from
a script, an error report makes the bpy.ops call raise RuntimeError with that message.

register() also hangs the add-on's hooks: the live preview's frame_change_post handler, a load_post
handler (new files get the preferences' engine address), and the live_preview switch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bpy
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import jobs, properties, render_job
from ._engine import automap, bvh, camera, retarget
from ._engine import mapping as bone_mapping
from .checks import checked_mapping, output_folder, rig_and_camera
from .connection import MODELS, ConnectionJob, connection_for
from .jobs import AddonError
from .preferences import get_prefs
from .preview import PreviewJob, current_pose_request, live_preview_switched, on_frame_change
from .render_job import RenderJob, RenderPlan

log = logging.getLogger(__name__)


# --- planning a render (main thread) -------------------------------------------------------------

def plan_render(scene) -> RenderJob:
    """A RenderJob for the scene's settings, every user-fixable problem checked first (AddonError)."""
    s = scene.pix2dance
    arm, cam = rig_and_camera(scene)
    m = checked_mapping(scene, arm)
    if s.frame_end < s.frame_start:
        raise AddonError(f"The frame range ends ({s.frame_end}) before it starts ({s.frame_start})")
    folder = output_folder(scene)
    if folder in render_job.RENDERING:
        raise AddonError(f"A render into {folder} is already running (Esc cancels it)")
    plan = RenderPlan(scene_name=scene.name, armature_name=arm.name, camera_name=cam.name, mapping=m,
                      frames=list(range(s.frame_start, s.frame_end + 1)), folder=folder,
                      connection=connection_for(scene), fps=scene.render.fps / scene.render.fps_base,
                      model=s.model.strip(), chunk=s.chunk, scene_underneath=s.scene_underneath,
                      show_rig_meshes=s.show_rig_meshes)
    return RenderJob(plan)


# --- running a job: modal in the UI, synchronous in background ---------------------------------

class JobOperator:
    """Mixin: `make_job(context)` builds a Job; it runs modally (Esc cancels) or, in background, to the end."""
    _job = None
    _timer = None

    def make_job(self, context) -> jobs.Job:
        raise NotImplementedError

    def finished(self, context, job: jobs.Job) -> set:
        """Report how the job ended; the operator's return value."""
        if job.error:
            self.report({"ERROR"}, job.error)
            return {"CANCELLED"}
        if job.cancelled:
            self.report({"WARNING"}, f"{job.name.capitalize()} cancelled")
            return {"CANCELLED"}
        if job.status:
            self.report({"INFO"}, job.status)
        if job.warning:
            self.report({"WARNING"}, job.warning)
        return {"FINISHED"}

    def execute(self, context):
        try:
            job = self.make_job(context)
        except AddonError as e:
            context.scene.pix2dance.last_error = str(e)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            job.wait()
            return self.finished(context, job)
        wm = context.window_manager
        self._job = job
        self._timer = wm.event_timer_add(jobs.INTERVAL, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1000)
        job.step()
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}      # Blender stays usable while the job runs
        job.step()
        wm = context.window_manager
        wm.progress_update(int(1000 * job.done / job.total) if job.total else 0)
        if context.workspace is not None:
            text = f"pix2dance: {job.status} {job.done}/{job.total}" if job.total else f"pix2dance: {job.status}"
            context.workspace.status_text_set(text + "  (Esc to cancel)")
        if not job.finished:
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        return self.finished(context, job)

    def cancel(self, context):  # Blender ends the operator (another file loaded, window closed)
        if self._job is not None:
            self._job.abandon()
        self._end_modal(context)

    def _end_modal(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()


# --- the operators -----------------------------------------------------------------------------

class PIX2DANCE_OT_auto_map(bpy.types.Operator):
    """Map the armature's bones to the pix2dance joints (by the skeleton's structure; names break ties)"""
    bl_idname = "pix2dance.auto_map"
    bl_label = "Auto-map bones"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = context.scene.pix2dance
        arm = s.armature
        if arm is None or arm.type != "ARMATURE":
            self.report({"ERROR"}, "No armature: pick one in the pix2dance panel")
            return {"CANCELLED"}
        try:
            m = automap.auto_map(arm)
        except ValueError as e:              # not a humanoid: auto-map says why
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        properties.set_mapping(s, m)
        missing = bone_mapping.required_missing(m)
        unmapped = bone_mapping.missing_joints(m)
        if missing:
            self.report({"WARNING"}, f"Mapped {len(m['joints'])} joints ({m.get('preset') or 'by hierarchy'}); "
                                     f"required still missing: {', '.join(missing)}")
        else:
            self.report({"INFO"}, f"Mapped {len(m['joints'])} joints ({m.get('preset') or 'by hierarchy'})"
                                  + (f"; unmapped: {', '.join(unmapped)}" if unmapped else ""))
        return {"FINISHED"}


class PIX2DANCE_OT_test_connection(JobOperator, bpy.types.Operator):
    """Ping the engine and list the dancers it serves"""
    bl_idname = "pix2dance.test_connection"
    bl_label = "Test connection"

    def make_job(self, context):
        return ConnectionJob(context.scene.name, connection_for(context.scene))


class PIX2DANCE_OT_preview_frame(JobOperator, bpy.types.Operator):
    """Show the dancer in the current frame's pose (as an image, and in front of the camera view)"""
    bl_idname = "pix2dance.preview_frame"
    bl_label = "Preview frame"

    def make_job(self, context):
        return PreviewJob(current_pose_request(context.scene))


class PIX2DANCE_OT_render_to_sequencer(JobOperator, bpy.types.Operator):
    """Render frame_start..frame_end as the dancer over the camera view into the output folder, as a sequencer strip (and the scene underneath)"""
    bl_idname = "pix2dance.render_to_sequencer"
    bl_label = "Render to Sequencer"

    def make_job(self, context):
        return plan_render(context.scene)

    def finished(self, context, job):
        result = super().finished(context, job)
        if job.out_of_view and not job.error:
            f = job.out_of_view
            self.report({"WARNING"}, f"The armature is partly out of view in {len(f)} frames ({f[0]}-{f[-1]})")
        return result


class PIX2DANCE_OT_use_scene_range(bpy.types.Operator):
    """Copy the scene's frame range into the pix2dance render range"""
    bl_idname = "pix2dance.use_scene_range"
    bl_label = "Use scene range"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = context.scene.pix2dance
        s.frame_start, s.frame_end = context.scene.frame_start, context.scene.frame_end
        return {"FINISHED"}


def _model_items(self, context):
    s = context.scene.pix2dance
    try:
        address = connection_for(context.scene).address
    except AddonError:
        address = ""
    names = MODELS.get(address, [])
    items = [("", "Engine's first model", "Use the engine's only or first model")]
    items += [(n, n, f"Dancer {n}") for n in names]
    if s.model and s.model not in names:
        items.append((s.model, s.model, "Set in this scene (not listed by the engine)"))
    return items


class PIX2DANCE_OT_pick_model(bpy.types.Operator):
    """Choose one of the engine's models (Test connection lists them)"""
    bl_idname = "pix2dance.pick_model"
    bl_label = "Pick model"
    bl_property = "model"
    bl_options = {"REGISTER", "UNDO"}

    model: EnumProperty(name="Model", items=_model_items)

    def execute(self, context):
        context.scene.pix2dance.model = self.model
        return {"FINISHED"}


class PIX2DANCE_OT_retarget_bvh(bpy.types.Operator):
    """Import a BVH and retarget its motion onto the scene's armature (baked to an action), or use the imported armature itself"""
    bl_idname = "pix2dance.retarget_bvh"
    bl_label = "Retarget BVH"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="BVH file", subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.bvh", options={"HIDDEN"})
    mode: EnumProperty(name="Use", default="RETARGET", items=(
        ("RETARGET", "Retarget onto the armature", "Bake the motion onto the armature in the pix2dance panel"),
        ("IMPORT", "The imported armature", "Keep the BVH's own armature, map its bones and render it")))
    set_range: BoolProperty(name="Set the render range", default=True,
                            description="Make frame_start..frame_end the motion's range")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath)) if self.filepath else None
        if path is None or not path.is_file():
            self.report({"ERROR"}, f"No BVH file at {self.filepath!r}")
            return {"CANCELLED"}
        try:
            message = bring_in_bvh(context.scene, path, self.mode, self.set_range)
        except AddonError as e:
            context.scene.pix2dance.last_error = str(e)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        context.scene.pix2dance.status = message
        self.report({"INFO"}, message)
        return {"FINISHED"}


def bring_in_bvh(scene, path: Path, mode: str, set_range: bool) -> str:
    """Retarget a BVH onto the scene's armature, or import it as the armature; a one-line summary."""
    s = scene.pix2dance
    try:
        if mode == "IMPORT":
            arm = bvh.import_bvh(str(path), scene)
            first, last = bvh.motion_range(arm)
            s.armature = arm
            properties.set_mapping(s, automap.auto_map(arm))
            done = f"Imported {path.name} as {arm.name!r} (mapping: {s.mapping_preset or 'by hierarchy'})"
        else:
            arm = s.armature
            if arm is None or arm.type != "ARMATURE":
                raise AddonError("No armature to retarget onto: pick one in the pix2dance panel")
            target_mapping = checked_mapping(scene, arm)
            _, (first, last) = retarget.retarget_bvh(scene, str(path), arm, target_mapping)
            done = f"Retargeted {path.name} onto {arm.name!r}"
    except (ValueError, RuntimeError, OSError) as e:
        raise AddonError(f"Could not use {path.name}: {e}") from None
    if set_range:
        s.frame_start, s.frame_end = max(0, first), max(0, last)
    if s.camera is None and scene.camera is None:
        s.camera = camera.frame_camera(scene, arm, range(first, last + 1), bone_mapping.saved_mapping(s))
        done += f", camera {s.camera.name!r} added"
    return f"{done}: frames {first}-{last}"


# --- hooks: Blender's app handlers and the live_preview switch --------------------------------------

@persistent
def on_load(_path="", *_args) -> None:
    """load_post: scenes without an engine address get the preferences' default (new files)."""
    default = get_prefs().address
    for scene in bpy.data.scenes:
        s = getattr(scene, "pix2dance", None)
        if s is not None and not s.engine_address:
            s.engine_address = default


# (list, callable): each callable is appended to its list on register and removed on unregister.
HANDLERS = ((bpy.app.handlers.frame_change_post, on_frame_change), (bpy.app.handlers.load_post, on_load),
            (properties.LIVE_PREVIEW_SWITCHED, live_preview_switched))


CLASSES = (PIX2DANCE_OT_auto_map, PIX2DANCE_OT_test_connection, PIX2DANCE_OT_preview_frame,
           PIX2DANCE_OT_render_to_sequencer, PIX2DANCE_OT_use_scene_range, PIX2DANCE_OT_pick_model,
           PIX2DANCE_OT_retarget_bvh)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for handlers, fn in HANDLERS:
        _remove_handler(handlers, fn)
        handlers.append(fn)


def unregister() -> None:
    for handlers, fn in HANDLERS:
        _remove_handler(handlers, fn)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


def _remove_handler(handlers, fn) -> None:
    """Remove fn, or a stale copy of it from an earlier load of this module (same qualified name)."""
    for h in list(handlers):
        if h is fn or (getattr(h, "__module__", None) == fn.__module__ and h.__name__ == fn.__name__):
            handlers.remove(h)
