"""Build a small animated .blend with bpy for render tests: a Mixamo-named rig, a camera, keyframes.

    build_blend(path, frames=30, armature=True, camera=True)

The rig is a 1.75 m stick figure facing -Y (Blender's front view), its arms swinging and its hips
swaying over `frames` frames at 24 fps; the camera looks at it from the front. Run it in a process
of its own (`python -m tests.blend_rig OUT.blend [--no-armature] [--no-camera]`) or in-process.
"""

from __future__ import annotations

import math
import sys

# (name, parent, head, tail): left is +x for a figure facing -y.
BONES = (
    ("mixamorig:Hips", None, (0, 0, 0.95), (0, 0, 1.1)),
    ("mixamorig:Spine", "mixamorig:Hips", (0, 0, 1.1), (0, 0, 1.4)),
    ("mixamorig:Neck", "mixamorig:Spine", (0, 0, 1.4), (0, 0, 1.55)),
    ("mixamorig:Head", "mixamorig:Neck", (0, 0, 1.55), (0, 0, 1.75)),
)
for side, sx in (("Left", 1), ("Right", -1)):
    BONES += (
        (f"mixamorig:{side}Shoulder", "mixamorig:Spine", (0.03 * sx, 0, 1.4), (0.18 * sx, 0, 1.42)),
        (f"mixamorig:{side}Arm", f"mixamorig:{side}Shoulder", (0.18 * sx, 0, 1.42), (0.2 * sx, 0, 1.14)),
        (f"mixamorig:{side}ForeArm", f"mixamorig:{side}Arm", (0.2 * sx, 0, 1.14), (0.22 * sx, 0, 0.9)),
        (f"mixamorig:{side}Hand", f"mixamorig:{side}ForeArm", (0.22 * sx, 0, 0.9), (0.22 * sx, 0, 0.8)),
        (f"mixamorig:{side}UpLeg", "mixamorig:Hips", (0.1 * sx, 0, 0.95), (0.1 * sx, 0, 0.52)),
        (f"mixamorig:{side}Leg", f"mixamorig:{side}UpLeg", (0.1 * sx, 0, 0.52), (0.1 * sx, 0, 0.09)),
        (f"mixamorig:{side}Foot", f"mixamorig:{side}Leg", (0.1 * sx, 0, 0.09), (0.1 * sx, -0.12, 0.02)),
        (f"mixamorig:{side}ToeBase", f"mixamorig:{side}Foot", (0.1 * sx, -0.12, 0.02), (0.1 * sx, -0.2, 0.0)),
        (f"mixamorig:{side}Toe_End", f"mixamorig:{side}ToeBase", (0.1 * sx, -0.2, 0.0), (0.1 * sx, -0.25, 0.0)),
    )


def build_blend(path: str, frames: int = 30, armature: bool = True, camera: bool = True) -> str:
    """Write the test scene to `path` (save_as_mainfile) and return it."""
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 480, 100
    scene.frame_start, scene.frame_end = 1, frames
    if armature:
        data = bpy.data.armatures.new("Rig")
        rig = bpy.data.objects.new("Rig", data)
        scene.collection.objects.link(rig)
        bpy.context.view_layer.objects.active = rig
        bpy.ops.object.mode_set(mode="EDIT")
        for name, parent, head, tail in BONES:
            bone = data.edit_bones.new(name)
            bone.head, bone.tail = head, tail
            if parent:
                bone.parent = data.edit_bones[parent]
                bone.use_connect = False
        bpy.ops.object.mode_set(mode="OBJECT")
        for f in range(1, frames + 1):
            phase = 2 * math.pi * (f - 1) / frames
            for side, sx in (("Left", 1), ("Right", -1)):
                arm = rig.pose.bones[f"mixamorig:{side}Arm"]
                arm.rotation_mode = "XYZ"
                arm.rotation_euler = (0.0, 0.0, 0.0)
                arm.rotation_euler[2] = -0.8 * math.sin(phase) * sx   # about local z: in the frontal plane
                arm.keyframe_insert("rotation_euler", frame=f)
            hips = rig.pose.bones["mixamorig:Hips"]
            hips.location = (0.1 * math.sin(phase), 0.0, 0.0)          # local x: sideways
            hips.keyframe_insert("location", frame=f)
    if camera:
        cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
        scene.collection.objects.link(cam)
        cam.location = (0.0, -5.0, 0.9)
        cam.rotation_euler = (math.pi / 2, 0.0, 0.0)    # looking along +y, at the figure's front
        scene.camera = cam
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return str(path)


if __name__ == "__main__":
    args = sys.argv[1:]
    build_blend(args[0], armature="--no-armature" not in args, camera="--no-camera" not in args)
