"""What the operators and the live preview read from a scene, checked first (main thread).

    arm, cam = rig_and_camera(scene)            # the settings' armature and camera (or the scene's)
    m = checked_mapping(scene, arm)             # the bone mapping, auto-mapped when empty
    folder = output_folder(scene)               # absolute; refused when relative to an unsaved file
    core_in_view(kp, (w, h))                    # (N, J, 3) or (J, 3) -> which poses are in view

Each problem the user can fix is an AddonError that names it, so an operator reports one line.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from . import properties
from ._engine import automap, joints, projection
from ._engine import mapping as bone_mapping
from .jobs import AddonError


def rig_and_camera(scene):
    """(armature, camera) of the scene's settings; AddonError naming what is missing."""
    s = scene.pix2dance
    arm = s.armature
    if arm is None or arm.type != "ARMATURE":
        raise AddonError("No armature: pick one in the pix2dance panel")
    cam = s.camera or scene.camera
    if cam is None or cam.type != "CAMERA":
        raise AddonError("No camera: pick one in the pix2dance panel (or set the scene camera)")
    return arm, cam


def checked_mapping(scene, arm) -> dict:
    """The scene's bone mapping, auto-mapped first if empty; AddonError naming an unmapped joint."""
    s = scene.pix2dance
    if not any(r.bone for r in s.mapping):
        try:
            properties.set_mapping(s, automap.auto_map(arm))
        except ValueError as e:              # not a humanoid: auto-map says why
            raise AddonError(f"{e}; map its bones by hand in the Bone mapping panel") from None
    try:
        m = bone_mapping.saved_mapping(s)
    except ValueError as e:
        raise AddonError(f"The bone mapping in the pix2dance panel is not usable: {e}") from None
    missing = bone_mapping.required_missing(m)
    if missing:
        raise AddonError(f"Required joint{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                         f"{'are' if len(missing) > 1 else 'is'} not mapped to a bone of {arm.name!r} "
                         f"(use Auto-map or pick the bone in the mapping list)")
    bones = arm.data.bones
    for joint, entry in m["joints"].items():
        if bones.get(entry["bone"]) is None:
            raise AddonError(f"Joint {joint} is mapped to bone {entry['bone']!r}, which {arm.name!r} does not have")
    return m


def output_folder(scene) -> Path:
    """The absolute output folder; AddonError when it is relative to an unsaved .blend."""
    raw = scene.pix2dance.output_dir.strip() or "//pix2dance/"
    if raw.startswith("//") and not bpy.data.filepath:
        raise AddonError("Save the .blend first (the output folder is relative to it), or choose an absolute folder")
    return Path(bpy.path.abspath(raw)).resolve()


def core_in_view(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per pose and core joint (joints.CORE): seen and inside the w x h frame (projection.in_frame);
    (..., len(CORE)) bool from (..., J, 3) keypoints."""
    return projection.in_frame(np.asarray(kp)[..., [joints.INDEX[n] for n in joints.CORE], :], size)
