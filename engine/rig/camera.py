"""A camera that frames a rig's whole motion, from the front.

    cam = frame_camera(scene, armature, range(1, 200))      # perspective, the scene's camera now

Used where a motion comes without a camera (a BVH: `pix2dance render`, the add-on's import).
bpy, mathutils and numpy.
"""

from __future__ import annotations

import math

import numpy as np

from ..wire import joints

from . import projection
from .automap import auto_map

# Frames sampled at most to find a motion's extent (margin covers what falls between samples).
MAX_FRAMING_FRAMES = 300

def frame_camera(scene, armature, frames, mapping: dict | None = None, *, margin: float = 0.1,
                 lens: float = 50.0, name: str = "pix2dance camera"):
    """Add (or reuse, by name) a perspective camera in front of the armature that sees every mapped
    joint over the given frames, with `margin` (fraction of the frame) to spare; it becomes the
    scene camera. "Front": the horizontal body forward of the first frame. Returns the camera."""
    import bpy
    from mathutils import Matrix, Vector
    mapping = mapping or auto_map(armature)
    frames = sorted({int(math.floor(f + 1e-6)) for f in frames})
    if not frames:
        raise ValueError("no frames to frame the camera on")
    if len(frames) > MAX_FRAMING_FRAMES:  # evenly spread samples, first and last included
        pick = np.linspace(0, len(frames) - 1, MAX_FRAMING_FRAMES).round().astype(int)
        frames = [frames[i] for i in pick]
    world = projection.world_frames(scene, armature, mapping, frames)           # (N, J, 3)
    pts = world.reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise ValueError(f"{armature.name}: no mapped joints to frame")
    first = world[0]
    L, R = joints.INDEX, first
    fwd = None
    if np.isfinite(R[[L["left_shoulder"], L["right_shoulder"], L["left_hip"], L["right_hip"]]]).all():
        left = (R[L["left_shoulder"]] - R[L["right_shoulder"]]) + (R[L["left_hip"]] - R[L["right_hip"]])
        up = np.array([0.0, 0.0, 1.0])
        fwd = np.cross(left, up)
        fwd[2] = 0.0
    if fwd is None or np.linalg.norm(fwd) < 1e-9:
        fwd = np.array([0.0, -1.0, 0.0])
    fwd /= np.linalg.norm(fwd)
    up = np.array([0.0, 0.0, 1.0])
    right_cam = np.cross(-fwd, up)                 # camera's +X when looking along -fwd
    centre = (pts.max(axis=0) + pts.min(axis=0)) / 2
    rel = pts - centre
    cx, cy, cz = rel @ right_cam, rel @ up, rel @ fwd     # camera axes; cz towards the camera
    cam = bpy.data.objects.get(name)
    if cam is None or cam.type != "CAMERA":
        cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
        scene.collection.objects.link(cam)
    elif cam.name not in scene.objects:
        scene.collection.objects.link(cam)
    cam.data.type, cam.data.lens, cam.data.sensor_fit = "PERSP", lens, "AUTO"
    cam.data.shift_x = cam.data.shift_y = 0.0
    w, h = projection.render_size(scene)
    half = cam.data.sensor_width / 2 / lens            # tan of half the wider side's field of view
    tan_x, tan_y = (half, half * h / w) if w >= h else (half * w / h, half)
    keep = 1.0 - 2 * margin
    # Each point needs |x| / (dist - z) <= tan * keep (z: its offset towards the camera).
    dist = float(np.max(cz + np.maximum(np.abs(cx) / (tan_x * keep), np.abs(cy) / (tan_y * keep))))
    hz = float(np.abs(cz).max())
    dist = max(dist, hz * 1.5 + 1e-3)
    cam.matrix_world = Matrix.Identity(4)
    loc = centre + fwd * dist
    look = Matrix(np.stack([right_cam, up, fwd], axis=1).tolist())   # camera looks along its -Z
    cam.matrix_world = Matrix.Translation(Vector(loc.tolist())) @ look.to_4x4()
    cam.data.clip_start = max(1e-3, 0.05 * (dist - hz))
    cam.data.clip_end = max(cam.data.clip_end, 2 * (dist + hz))
    scene.camera = cam
    bpy.context.view_layer.update()
    return cam
