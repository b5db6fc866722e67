"""A .blend as a motion: its animation through its scene camera, over the scene frame range.

    motion = load(Path("scene.blend"), fps=None, frames=None, armature=None, camera=None, mapping=None)

The armature and camera are the ones named, else the ones the add-on's settings point at, else
the scene's (its camera, its first armature). The bone mapping is --mapping FILE, else the one the
add-on saved in the .blend (read by `engine.rig.mapping.saved_mapping`, offsets included, the same
reader the add-on uses), else auto-mapped. Headless the add-on is not registered: its settings
are plain ID properties here (`_settings`), read by name so a stale or foreign value cannot raise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import UserError
from engine.quiet import quiet_fds
from engine.rig import mapping as mapping_mod
from engine.rig import projection
from engine.wire.joints import body_stats

from . import rigs
from .source import Motion

log = logging.getLogger(__name__)

# .blend files start with "BLENDER"; Blender 3.0+ may zstd-compress them, older ones gzip.
_MAGIC = (b"BLENDER", b"\x28\xb5\x2f\xfd", b"\x1f\x8b")


def check(path: Path) -> None:
    """UserError unless the file starts like a .blend (plain, zstd or gzip)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_MAGIC):
        raise UserError(f"{path} is not a .blend file (it does not start with a Blender header)")


def _settings(scene):
    """The add-on's saved settings (scene.pix2dance) as raw ID properties, or None.

    Blender 5 keeps properties an add-on registered apart from the ID's own custom properties
    (`bl_system_properties_get()`); Blender 4 kept them among them (`scene.get`), where a script
    may also have written a plain dict of the same shape.
    """
    stores = []
    try:
        system = scene.bl_system_properties_get()
        if system is not None:
            stores.append(system)
    except (AttributeError, TypeError):            # Blender 4: no separate store
        pass
    stores.append(scene)
    for store in stores:
        try:
            settings = store.get("pix2dance")
        except Exception:                          # noqa: BLE001
            continue
        if hasattr(settings, "get"):
            return settings
    return None


def saved_mapping(scene, armature) -> dict | None:
    """The bone mapping the add-on saved in the .blend, if it fits this armature; else None."""
    settings = _settings(scene)
    if settings is None:
        return None
    try:
        mapping = mapping_mod.saved_mapping(settings)
    except Exception as e:                         # noqa: BLE001 - a stale setting must not stop a render
        log.info("ignoring the mapping saved in the .blend (%s)", e)
        return None
    if not mapping["joints"]:
        return None
    if mapping_mod.missing_bones(mapping, armature):
        log.info("the mapping saved in the .blend names bones %r lacks; auto-detecting", armature.name)
        return None
    return mapping


def _saved_object(scene, key: str, kind: str):
    """An object the add-on's settings point at (armature, camera), if it is of `kind` and in the scene."""
    settings = _settings(scene)
    try:
        obj = settings.get(key) if settings is not None else None
        if obj is not None and getattr(obj, "type", None) == kind and scene.objects.get(obj.name) is not None:
            return obj
    except Exception:                              # noqa: BLE001
        pass
    return None


def find_armature(bpy, scene, name: str | None, what: str):
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "ARMATURE":
            have = ", ".join(repr(o.name) for o in arms) or "none"
            raise UserError(f"no armature named {name!r} (armatures: {have})")
        return obj
    if not arms:
        raise UserError(f"{what} has no armature in its scene {scene.name!r}")
    saved = _saved_object(scene, "armature", "ARMATURE")
    if saved is not None:
        return saved
    if len(arms) > 1:
        log.info("%d armatures; using %r (pick one with --armature)", len(arms), arms[0].name)
    return arms[0]


def _find_camera(bpy, scene, name: str | None, what: str):
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "CAMERA":
            have = ", ".join(repr(o.name) for o in scene.objects if o.type == "CAMERA") or "none"
            raise UserError(f"no camera named {name!r} (cameras: {have})")
        return obj
    if scene.camera is not None:
        return scene.camera
    cams = [o for o in scene.objects if o.type == "CAMERA"]
    if not cams:
        raise UserError(f"{what} has no camera in its scene {scene.name!r} (add one, or name it with --camera)")
    log.info("the scene has no active camera; using %r", cams[0].name)
    return cams[0]


def open_blend(path: Path, verbose: bool = False):
    """Open the .blend in bpy (its scene becomes the context's); UserError when Blender cannot."""
    check(path)
    bpy = rigs.need_bpy()
    try:
        with quiet_fds(verbose, what="Blender"):
            result = bpy.ops.wm.open_mainfile(filepath=str(Path(path).resolve()), load_ui=False)
    except RuntimeError as e:
        raise UserError(f"Blender could not open {path} ({str(e).strip().splitlines()[-1]})") from None
    if "FINISHED" not in result:
        raise UserError(f"Blender could not open {path}")
    return bpy


def load(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
         armature: str | None = None, camera: str | None = None, mapping: Path | None = None,
         verbose: bool = False, quiet: bool = True) -> Motion:
    bpy = open_blend(path, verbose)
    scene = bpy.context.scene
    arm = find_armature(bpy, scene, armature, Path(path).name)
    cam = _find_camera(bpy, scene, camera, Path(path).name)
    mp = rigs.mapping_for(arm, mapping, None if mapping is not None else saved_mapping(scene, arm))
    src_fps = scene.render.fps / (scene.render.fps_base or 1.0)
    fps = fps or src_fps
    at, sel, sample = rigs.frames_to_project(scene.frame_start, 1.0, src_fps, scene.frame_end - scene.frame_start,
                                             fps, frames, f"{path} (frames {scene.frame_start}-{scene.frame_end})")
    with projection.skins_hidden(arm):               # no skinning while poses are read: ~3x faster
        kp = rigs.project(scene, arm, cam, mp, at, quiet)
    stats = body_stats(kp[sample])
    if stats is None:
        raise UserError(f"{path}: armature {arm.name!r} never shows a whole body through camera {cam.name!r}")
    return Motion(keypoints=kp[sel], source_size=rigs.render_size(scene), fps=fps, mode="clip",
                  source_stats=stats, first=rigs.first_frame(frames), kind="blend")
