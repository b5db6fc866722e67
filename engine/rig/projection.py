"""Rig + camera -> canonical keypoints in render pixels (the add-on's and `engine.render`'s view).

    kp = project(scene, armature, camera, mapping)                  # (J, 3) float32, current frame
    kps = project_frames(scene, armature, camera, mapping, frames)  # (N, J, 3), frame_set per frame
    w, h = render_size(scene)                                       # resolution x percentage
    in_frame(kps, (w, h))                                           # (N, J) bool: in the picture

Rows are (x, y, visibility) in pixels of the scene's render, x right and y down (0 at the top), as
`bpy_extras.object_utils.world_to_camera_view` places them (perspective and orthographic), in the
order of joints.JOINTS. Visibility is 1 for a point in front of the camera and inside the frame
(plus a margin), 0 otherwise; face points are 0 as well when the head faces away from the camera,
so a rig turned around projects as a back view. Unmapped joints are (0, 0, 0); `neck` and `mid_hip`
are the midpoints of the shoulders and of the hips.

`Projector` does the per-rig work once (bone indices, rest-local points) and projects a frame with
one `foreach_get` of the pose matrices and a few numpy operations (well under 2 ms).
bpy, mathutils and numpy; the joints come from `anchors`.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..wire import joints

from . import anchors as anchors_mod
from .mapping import DERIVED

# A point this far outside the frame (fraction of its size) still counts as seen.
MARGIN = 0.05
# cos of the angle between the head's forward direction and the direction to the camera below
# which the face is hidden (slightly behind profile: a profile view keeps its face points).
FACE_AWAY = -0.25

_FACE_IDX = np.array([joints.INDEX[n] for n in joints.FACE])
_DERIVED = [(joints.INDEX[d], joints.INDEX[a], joints.INDEX[b]) for d, (a, b) in DERIVED.items()]


def render_size(scene) -> tuple[int, int]:
    """The render's pixel size: resolution x percentage."""
    r = scene.render
    pct = r.resolution_percentage / 100.0
    return max(1, int(r.resolution_x * pct)), max(1, int(r.resolution_y * pct))


def in_frame(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., J) bool of keypoints (..., J, 3): seen (visibility > 0) and inside the w x h picture.
    Stricter than visibility, which keeps points up to MARGIN outside the frame: this is "in view"
    for the user (a render or preview with nothing in view is refused)."""
    w, h = size
    kp = np.asarray(kp)
    x, y = kp[..., 0], kp[..., 1]
    return (kp[..., 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)


def _mat(m) -> np.ndarray:
    return np.array(m, dtype=np.float64)


def camera_params(scene, camera) -> dict:
    """What world_to_camera_view uses, as numpy: the inverse normalized camera matrix and the
    view frame's x/y bounds (at depth `frame_z` for perspective)."""
    if camera is None or camera.type != "CAMERA":
        raise ValueError("projection needs a camera object (set the scene's or the panel's camera)")
    inv = _mat(camera.matrix_world.normalized().inverted())
    frame = [v for v in camera.data.view_frame(scene=scene)[:3]]
    return {
        "inv": inv,
        "ortho": camera.data.type == "ORTHO",
        "x": (frame[2].x, frame[1].x),
        "y": (frame[1].y, frame[0].y),
        "frame_z": frame[0].z,
        "cam_pos": _mat(camera.matrix_world.translation),
        "cam_back": _mat(camera.matrix_world.to_3x3().normalized().col[2]),
    }


class Projector:
    """One rig's joints, ready to project frame after frame.

    armature: the armature object; mapping: the JSON mapping (mapping.py). Building it reads the
    rest pose once; `world_joints()` and `project()` then read only the current pose matrices
    (one foreach_get) and do a handful of small numpy operations.
    """

    def __init__(self, armature, mapping: dict):
        if armature is None or armature.type != "ARMATURE":
            raise ValueError("projection needs an armature object")
        self.armature = armature
        self.mapping = mapping
        anchors = anchors_mod.anchors(armature, mapping)
        names = [pb.name for pb in armature.pose.bones]
        index = {n: i for i, n in enumerate(names)}
        self.n_bones = len(names)
        keys = list(anchors)
        self.bone_idx = np.array([index[anchors[j][0]] for j in keys], np.int64)             # (K,)
        self.local = np.array([anchors[j][1] for j in keys], np.float64).reshape(-1, 3)       # (K, 3)
        # Joints as combinations of anchors: (J, K) rows of one 1 (a mapped joint), two 0.5
        # (neck, mid_hip) or zeros (unmapped), so one matrix product orders and derives them.
        self.combine = np.zeros((joints.NUM_JOINTS, len(keys)))
        for k, j in enumerate(keys):
            self.combine[joints.INDEX[j], k] = 1.0
        for d, a, b in _DERIVED:
            if self.combine[a].any() and self.combine[b].any():
                self.combine[d] = (self.combine[a] + self.combine[b]) / 2
        self.have = self.combine.any(axis=1)                                                   # (J,)
        self._buf = np.empty(self.n_bones * 16, np.float32)
        # The head's forward direction in the head bone's rest frame, from the rest body frame
        # (left x up: independent of bone rolls); the head bone is the nose's bone.
        self.head_bone = None
        self.nose = joints.INDEX["nose"]
        if "nose" in anchors:
            bone_name = anchors["nose"][0]
            _, _, fwd = anchors_mod.body_frame(armature, mapping)
            rest = armature.matrix_world @ armature.data.bones[bone_name].matrix_local
            f = rest.to_3x3().inverted() @ fwd
            self.head_bone = index[bone_name]
            self.head_fwd = np.array(f, np.float64)

    def pose_matrices(self) -> np.ndarray:
        """(B, 4, 4) armature-space pose matrices of all bones (current evaluated pose)."""
        self.armature.pose.bones.foreach_get("matrix", self._buf)
        # foreach_get gives matrices column by column
        return self._buf.reshape(self.n_bones, 4, 4).transpose(0, 2, 1).astype(np.float64)

    def _armature_joints(self, pose: np.ndarray) -> np.ndarray:
        """(J, 3) joint positions in armature space (zeros where unmapped)."""
        sel = pose[self.bone_idx]                                                  # (K, 4, 4)
        pts = np.einsum("kij,kj->ki", sel[:, :3, :3], self.local) + sel[:, :3, 3]  # (K, 3)
        return self.combine @ pts

    def world_joints(self, pose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(J, 3) world positions (nan where unmapped) and a (J,) bool of which are mapped."""
        pose = self.pose_matrices() if pose is None else pose
        world = _mat(self.armature.matrix_world)
        out = self._armature_joints(pose) @ world[:3, :3].T + world[:3, 3]
        out[~self.have] = np.nan
        return out, self.have.copy()

    def head_forward(self, pose: np.ndarray) -> np.ndarray | None:
        """World direction the face looks along, or None without a head bone."""
        if self.head_bone is None:
            return None
        rot = _mat(self.armature.matrix_world)[:3, :3] @ pose[self.head_bone, :3, :3]
        f = rot @ self.head_fwd
        n = np.linalg.norm(f)
        return f / n if n > 0 else None

    def project(self, scene, camera, size: tuple[int, int] | None = None) -> np.ndarray:
        """(J, 3) float32 keypoints of the current pose in render pixels (see the module doc)."""
        w, h = render_size(scene) if size is None else size
        cam = camera_params(scene, camera)
        pose = self.pose_matrices()
        world_m = _mat(self.armature.matrix_world)
        to_cam = cam["inv"] @ world_m                                             # armature -> camera
        local = self._armature_joints(pose) @ to_cam[:3, :3].T + to_cam[:3, 3]    # (J, 3) camera space
        z = -local[:, 2]
        (x0, x1), (y0, y1) = cam["x"], cam["y"]
        s = np.ones_like(z) if cam["ortho"] else z / -cam["frame_z"]
        safe = np.where(s == 0.0, 1.0, s)
        nx = (local[:, 0] - x0 * safe) / ((x1 - x0) * safe)
        ny = (local[:, 1] - y0 * safe) / ((y1 - y0) * safe)
        out = np.zeros((joints.NUM_JOINTS, 3), np.float32)
        out[:, 0] = nx * w
        out[:, 1] = (1.0 - ny) * h
        seen = (self.have & (z > 0) & (s != 0.0) & (nx >= -MARGIN) & (nx <= 1 + MARGIN)
                & (ny >= -MARGIN) & (ny <= 1 + MARGIN))
        out[:, 2] = seen
        out[~self.have, :2] = 0.0
        if self.head_bone is not None:
            fwd = world_m[:3, :3] @ (pose[self.head_bone, :3, :3] @ self.head_fwd)
            if cam["ortho"]:
                look = cam["cam_back"]
            else:
                look = cam["cam_pos"] - (world_m[:3, :3] @ (self._nose_arm(pose)) + world_m[:3, 3])
            denom = float(np.linalg.norm(fwd) * np.linalg.norm(look))
            if denom > 0 and float(fwd @ look) / denom < FACE_AWAY:
                out[_FACE_IDX, 2] = 0.0
        return out

    def _nose_arm(self, pose: np.ndarray) -> np.ndarray:
        """The nose (or, unmapped, the head bone's head) in armature space."""
        k = np.flatnonzero(self.combine[self.nose])
        if len(k):
            sel = pose[self.bone_idx[k[0]]]
            return sel[:3, :3] @ self.local[k[0]] + sel[:3, 3]
        return pose[self.head_bone, :3, 3]


def _check(scene, armature, camera):
    if armature is None or getattr(armature, "type", None) != "ARMATURE":
        raise ValueError("no armature to project (pick one in the pix2dance panel)")
    if camera is None or getattr(camera, "type", None) != "CAMERA":
        raise ValueError("no camera to project through (set the scene's camera or the panel's)")


def project(scene, armature, camera, mapping: dict) -> np.ndarray:
    """(J, 3) float32 keypoints of the scene's current frame in render pixels."""
    _check(scene, armature, camera)
    return Projector(armature, mapping).project(scene, camera)


def set_frame(scene, frame) -> None:
    """frame_set for a whole or fractional scene frame (fractions as a subframe)."""
    whole = math.floor(float(frame) + 1e-9)
    sub = float(frame) - whole
    if sub > 1e-9:
        scene.frame_set(int(whole), subframe=sub)
    else:
        scene.frame_set(int(whole))


def project_frames(scene, armature, camera, mapping: dict, frames) -> np.ndarray:
    """(N, J, 3) float32 keypoints for the given scene frames (frame_set each; a fractional
    frame is set as a subframe, so F-curves are sampled between keys; the scene goes back to its
    current frame afterwards)."""
    _check(scene, armature, camera)
    proj = Projector(armature, mapping)
    size = render_size(scene)
    frames = list(frames)
    out = np.zeros((len(frames), joints.NUM_JOINTS, 3), np.float32)
    current = scene.frame_current
    try:
        for i, f in enumerate(frames):
            set_frame(scene, f)
            out[i] = proj.project(scene, camera, size)
    finally:
        if scene.frame_current != current:
            scene.frame_set(current)
    return out


def world_frames(scene, armature, mapping: dict, frames) -> np.ndarray:
    """(N, J, 3) world joint positions for the given frames (nan where unmapped)."""
    proj = Projector(armature, mapping)
    out = np.full((len(frames), joints.NUM_JOINTS, 3), np.nan)
    current = scene.frame_current
    try:
        for i, f in enumerate(frames):
            set_frame(scene, f)
            out[i] = proj.world_joints()[0]
    finally:
        scene.frame_set(current)
    return out


@contextlib.contextmanager
def skins_hidden(armature):
    """Hide (hide_viewport) the meshes this armature deforms while poses are read: frame_set then
    skips their skinning (Xbot: about 6 ms -> 2 ms a frame), and a skin cannot move its own
    armature, so the projected joints are the same. Restored however the block ends. Used in
    background mode only: in the UI the skin would visibly blink."""
    import bpy
    skins = [o for o in bpy.data.objects if o.type == "MESH" and not o.hide_viewport
             and any(m.type == "ARMATURE" and m.object == armature for m in o.modifiers)]
    try:
        for o in skins:
            o.hide_viewport = True
        yield skins
    finally:
        for o in skins:
            o.hide_viewport = False
