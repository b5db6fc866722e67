"""The sidebar panel of the 3D viewport (tab "pix2dance"): settings, mapping, actions, status.

Panels only draw `scene.pix2dance` and call operators; they never talk to the engine (drawing
must be instant). Sub-panels: Engine, Bone mapping, Render, Mocap.
"""

from __future__ import annotations

import bpy

from ._engine import joints
from .preferences import get_prefs


class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "pix2dance"


class PIX2DANCE_PT_main(_Sidebar, bpy.types.Panel):
    bl_label = "pix2dance"
    bl_idname = "PIX2DANCE_PT_main"

    def draw(self, context):
        s = context.scene.pix2dance
        layout = self.layout
        col = layout.column()
        col.prop(s, "armature")
        col.prop(s, "camera")
        if s.camera is None and context.scene.camera is not None:
            col.label(text=f"Using the scene camera: {context.scene.camera.name}", icon="INFO")
        # Status line: connected, model, last error.
        box = layout.box()
        icon = "CHECKMARK" if s.connected else "QUESTION"
        box.label(text=s.status or "Not connected yet", icon=icon)
        box.label(text=f"Model: {s.model or 'engine first'}")
        if s.warning:
            box.label(text=s.warning, icon="INFO")
        if s.guesses:
            box.label(text=f"{s.guesses} frames are guesses: poses she never danced (timeline markers)",
                      icon="ERROR")
        if s.last_error:
            row = box.row()
            row.alert = True
            row.label(text=s.last_error, icon="ERROR")
        row = layout.row(align=True)
        row.operator("pix2dance.preview_frame", icon="IMAGE_DATA")
        row.prop(s, "live_preview", toggle=True, icon="PLAY")
        layout.operator("pix2dance.render_to_sequencer", icon="SEQUENCE")


class PIX2DANCE_PT_engine(_Sidebar, bpy.types.Panel):
    bl_label = "Engine"
    bl_parent_id = "PIX2DANCE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.pix2dance
        layout = self.layout
        layout.prop(s, "engine_address")
        if not s.engine_address:
            layout.label(text=f"Default: {get_prefs(context).address}")
        row = layout.row(align=True)
        row.prop(s, "model")
        row.operator_menu_enum("pix2dance.pick_model", "model", text="", icon="DOWNARROW_HLT")
        layout.operator("pix2dance.test_connection", icon="LINKED")
        layout.prop(s, "preview_background")


class PIX2DANCE_UL_mapping(bpy.types.UIList):
    """Mapping rows: joint -> bone (searched in the armature) and where along it."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        arm = context.scene.pix2dance.armature
        row = layout.row(align=True)
        row.alert = not item.bone and item.joint in REQUIRED
        split = row.split(factor=0.35, align=True)
        split.label(text=item.joint)
        sub = split.row(align=True)
        if arm is not None and arm.type == "ARMATURE":
            sub.prop_search(item, "bone", arm.data, "bones", text="")
        else:
            sub.prop(item, "bone", text="")
        sub.prop(item, "at", text="")
        sub.label(text=item.how or "-")          # name, structure, geometry (auto-map) or hand


REQUIRED = set(joints.CORE)  # joints a render refuses to go without


class PIX2DANCE_PT_mapping(_Sidebar, bpy.types.Panel):
    bl_label = "Bone mapping"
    bl_parent_id = "PIX2DANCE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.pix2dance
        layout = self.layout
        row = layout.row()
        row.operator("pix2dance.auto_map", icon="BONE_DATA")
        if s.mapping_preset:
            row.label(text=f"Preset: {s.mapping_preset}")
        layout.template_list("PIX2DANCE_UL_mapping", "", s, "mapping", s, "mapping_index", rows=6)
        if not len(s.mapping):
            layout.label(text="No mapping yet: Auto-map fills it", icon="INFO")
            return
        unmapped = [r.joint for r in s.mapping if not r.bone]
        if unmapped:
            col = layout.column(align=True)
            col.label(text=f"Missing ({len(unmapped)}):", icon="ERROR")
            for i in range(0, len(unmapped), 3):
                col.label(text=", ".join(unmapped[i:i + 3]))


class PIX2DANCE_PT_render(_Sidebar, bpy.types.Panel):
    bl_label = "Render"
    bl_parent_id = "PIX2DANCE_PT_main"

    def draw(self, context):
        s = context.scene.pix2dance
        layout = self.layout
        layout.prop(s, "output_dir")
        row = layout.row(align=True)
        row.prop(s, "frame_start")
        row.prop(s, "frame_end")
        row.operator("pix2dance.use_scene_range", text="", icon="TIME")
        row = layout.row(align=True)
        row.prop(s, "scene_underneath")
        sub = row.row(align=True)
        sub.active = s.scene_underneath
        sub.prop(s, "show_rig_meshes")
        layout.prop(s, "chunk")


class PIX2DANCE_PT_mocap(_Sidebar, bpy.types.Panel):
    bl_label = "Mocap"
    bl_parent_id = "PIX2DANCE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.operator("pix2dance.retarget_bvh", icon="IMPORT")
        layout.label(text="Or pick an imported BVH armature above and Auto-map it.")


CLASSES = (PIX2DANCE_UL_mapping, PIX2DANCE_PT_main, PIX2DANCE_PT_engine, PIX2DANCE_PT_mapping,
           PIX2DANCE_PT_render, PIX2DANCE_PT_mocap)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
