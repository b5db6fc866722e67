"""The add-on's settings: one PropertyGroup on each scene, `scene.pix2dance`.

    s = bpy.context.scene.pix2dance
    s.armature, s.camera = bpy.data.objects["Armature"], bpy.data.objects["Camera"]
    s.engine_address = "tcp://127.0.0.1:5555"     # empty: the preferences' default address
    s.frame_start, s.frame_end = 1, 100            # alone decide what Render to Sequencer renders
    s.scene_underneath, s.show_rig_meshes = True, False   # the set under the dancer, the rig's meshes left out
    bpy.ops.pix2dance.auto_map()                   # fills s.mapping (joint -> bone, at)

Everything here is saved in the .blend (the mapping included), so a scene renders the same way
when reopened. The mapping's Blender form is a CollectionProperty of joint/bone/at(/offset) rows;
its JSON form, which the rig layer uses, is `{"preset": name, "joints": {joint: {"bone": name,
"at": 0..1}}}`. `set_mapping` writes the rows; the one reader of them is the rig layer's
`mapping.saved_mapping(scene.pix2dance)`, which `pix2dance render` also uses on a saved .blend.

This module imports no other add-on module but `_engine`: everything else may import it.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, FloatProperty, FloatVectorProperty, IntProperty,
                       PointerProperty, StringProperty)

from ._engine import mapping as bone_mapping


# Blender 4.5+ warns when a path property is given a "//" (blend-relative) value without this flag.
BLEND_RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


def _is_armature(_self, obj) -> bool:
    return obj.type == "ARMATURE"


def _is_camera(_self, obj) -> bool:
    return obj.type == "CAMERA"


# Called as f(settings, context) when `live_preview` is switched. The preview module reacts (sends
# the current pose, or stops its worker); it imports this module, so operators.register hooks it in
# here, as into bpy.app.handlers, instead of this module importing it: the imports stay one-way.
LIVE_PREVIEW_SWITCHED: list = []


def _live_preview_changed(self, context) -> None:
    for hook in LIVE_PREVIEW_SWITCHED:
        hook(self, context)


class PIX2DANCE_PG_joint(bpy.types.PropertyGroup):
    """One row of the bone mapping: a canonical joint taken from a bone of the armature."""
    joint: StringProperty(name="Joint", description="Canonical joint of the pix2dance skeleton")
    bone: StringProperty(name="Bone", description="Bone of the armature this joint follows (empty: unmapped)",
                         update=lambda row, context: setattr(row, "how", "hand") if row.how != "hand" else None)
    how: StringProperty(name="How", description="How auto-map found this bone: name, structure or geometry; "
                        "hand when picked by hand")
    at: FloatProperty(name="At", min=0.0, max=1.0, default=0.0, subtype="FACTOR",
                      description="Where along the bone the joint sits: 0 at its head, 1 at its tail")
    # An explicit offset in the bone's rest-local axes (mapping files may carry one; kept as is).
    has_offset: BoolProperty(name="Has offset", default=False)
    offset: FloatVectorProperty(name="Offset", size=3, default=(0.0, 0.0, 0.0), subtype="TRANSLATION")


class PIX2DANCE_PG_settings(bpy.types.PropertyGroup):
    """Everything the add-on needs for one scene (scene.pix2dance)."""
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature,
                              description="The rig whose pose is sent to the dancer")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="The camera the rig is seen through (its render frame is the source image)")
    engine_address: StringProperty(
        name="Engine", default="",
        description="ZeroMQ address of a running `pix2dance serve` (empty: the default in the add-on's preferences)")
    model: StringProperty(name="Model", default="",
                          description="Dancer to render (empty: the engine's only or first model)")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", default="//pix2dance/", options=BLEND_RELATIVE,
                               description="Folder for the rendered frames (default: beside the .blend)")
    frame_start: IntProperty(name="Start", default=1, min=0,
                             description="First frame Render to Sequencer renders")
    frame_end: IntProperty(name="End", default=250, min=0,
                           description="Last frame Render to Sequencer renders (inclusive)")
    mapping: CollectionProperty(type=PIX2DANCE_PG_joint, name="Bone mapping")
    mapping_index: IntProperty(name="Active joint", default=0)
    mapping_preset: StringProperty(name="Preset", default="",
                                   description="The preset auto-mapping chose (informative)")
    scene_underneath: BoolProperty(
        name="Scene underneath", default=False,
        description="Also render the scene itself (the set, with its own render engine) over the same range, "
                    "as a strip in the channel below the dancer")
    show_rig_meshes: BoolProperty(
        name="Rig meshes", default=False,
        description="Keep the rig's own meshes in the scene render underneath (off: the dancer stands in for them)")
    live_preview: BoolProperty(name="Live preview", default=False, update=_live_preview_changed,
                               description="Send the pose to the engine whenever the frame changes")
    preview_background: BoolProperty(name="Show in camera", default=True,
                                     description="Show the preview as the camera's background image")
    chunk: IntProperty(name="Chunk", default=8, min=1, max=256,
                       description="Frames per request to the engine")
    status: StringProperty(name="Status", default="")
    last_error: StringProperty(name="Last error", default="")
    warning: StringProperty(name="Warning", default="",
                            description="What the last render or preview could not do as asked (one line)")
    connected: BoolProperty(name="Connected", default=False)
    guesses: IntProperty(name="Guesses", default=0, min=0,
                         description="Frames of the last render whose pose is outside the dancer's repertoire "
                                     "(marked on the timeline): their pictures are guesses")


CLASSES = (PIX2DANCE_PG_joint, PIX2DANCE_PG_settings)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.pix2dance = PointerProperty(type=PIX2DANCE_PG_settings)


def unregister() -> None:
    if hasattr(bpy.types.Scene, "pix2dance"):
        del bpy.types.Scene.pix2dance
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


def settings_of(scene_name: str):
    """scene.pix2dance of the scene called `scene_name`, or None when it is gone (jobs keep names, not IDs)."""
    scene = bpy.data.scenes.get(scene_name)
    return getattr(scene, "pix2dance", None) if scene is not None else None


# --- the mapping rows, written (mapping.saved_mapping reads them) ---------------------------------

def set_mapping(settings, mapping: dict) -> None:
    """Replace the scene's mapping rows: one row per mappable joint (canonical order; neck and mid_hip
    are derived, never mapped), mapped or not, so missing joints show as empty rows the user can fill."""
    settings.mapping.clear()
    found = mapping.get("joints", {})
    for name in bone_mapping.MAPPABLE:
        row = settings.mapping.add()
        row.joint = name
        entry = found.get(name) or {}
        row.bone = str(entry.get("bone") or "")
        row.how = str(mapping.get("how", {}).get(name) or "") if row.bone else ""
        row.at = float(entry.get("at") or 0.0)
        offset = entry.get("offset")
        row.has_offset = offset is not None
        if offset is not None:
            row.offset = [float(v) for v in offset]
    settings.mapping_preset = str(mapping.get("preset") or "")
    settings.mapping_index = 0

