"""Test helpers around `engine.rig.projection` that production code does not need.

    world_to_ndc(points, camera_params(scene, cam))   # a plain numpy world_to_camera_view, to compare
    rest_pose_stats(scene, arm, cam, mapping)          # joints.body_stats of the rest pose through a camera
"""

from __future__ import annotations

import numpy as np

from engine.rig import projection
from engine.wire import joints


def world_to_ndc(points: np.ndarray, cam: dict) -> np.ndarray:
    """(N, 3) world points -> (N, 3) like world_to_camera_view: x, y in 0..1 across the camera
    frame (0, 0 bottom left), z the depth along the view axis (negative behind the camera)."""
    pts = np.asarray(points, np.float64)
    local = pts @ cam["inv"][:3, :3].T + cam["inv"][:3, 3]
    z = -local[:, 2]
    (x0, x1), (y0, y1) = cam["x"], cam["y"]
    if cam["ortho"]:
        s = np.ones_like(z)
    else:
        # world_to_camera_view scales the frame corners to the point's depth: v * z / -v.z
        s = z / -cam["frame_z"]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (local[:, 0] - x0 * s) / ((x1 - x0) * s)
        y = (local[:, 1] - y0 * s) / ((y1 - y0) * s)
    if not cam["ortho"]:
        at_eye = z == 0.0
        x[at_eye], y[at_eye] = 0.5, 0.5
    return np.stack([x, y, z], axis=1)


def rest_pose_stats(scene, armature, camera, mapping: dict) -> dict | None:
    """joints.body_stats of the rest pose seen through the camera (pixels of the render), or None
    when the body is not seen. The armature is back in its pose afterwards."""
    import bpy
    data = armature.data
    old = data.pose_position
    try:
        data.pose_position = "REST"
        bpy.context.view_layer.update()
        kp = projection.project(scene, armature, camera, mapping)
    finally:
        data.pose_position = old
        bpy.context.view_layer.update()
    return joints.body_stats([kp.tolist()])
