"""A .bvh as a motion: imported into an empty scene, auto-mapped, seen by an automatic front camera.

    motion = load(Path("dance.bvh"), fps=30, frames=(1, 40))

The scene runs at the capture's own rate, so every BVH frame is a whole scene frame; other rates
are evaluated at sub-frames. The file is checked (`check`, the rig layer's one BVH reader) before
Blender sees it.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.quiet import quiet_fds
from engine.rig import bvh as bvh_reader
from engine.rig import camera as rig_camera
from engine.wire.joints import body_stats

from . import rigs
from .source import Motion


def check(path: Path) -> bvh_reader.BvhInfo:
    """The file's BVH structure (`engine.rig.bvh.read`), or UserError with its one-line reason."""
    try:
        return bvh_reader.read(path)
    except ValueError as e:
        raise UserError(str(e)) from None


def load(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
         mapping: Path | None = None, verbose: bool = False, quiet: bool = True) -> Motion:
    info = check(path)
    bpy = rigs.need_bpy()
    with quiet_fds(verbose, what="Blender"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps = max(1, round(info.fps))
    scene.render.fps_base = scene.render.fps / info.fps
    try:
        with quiet_fds(verbose, what="Blender"):
            arm = bvh_reader.import_bvh(str(Path(path).resolve()), scene)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"Blender could not import {path} ({str(e).strip().splitlines()[-1]})") from None
    mp = rigs.mapping_for(arm, mapping)
    # Where the importer put BVH frame 0 and how many scene frames one BVH frame spans.
    first, last = _action_range(arm, info.frames)
    per_frame = (last - first) / max(info.frames - 1, 1)
    fps = fps or info.fps
    at, sel, sample = rigs.frames_to_project(first, per_frame, info.fps, info.frames - 1, fps, frames, str(path))
    try:
        with quiet_fds(verbose, what="Blender"):
            cam = rig_camera.frame_camera(scene, arm, list(at[sample]), mp)   # frames the whole motion
    except ValueError as e:
        raise UserError(f"{path}: {str(e).splitlines()[0]}") from None
    kp = rigs.project(scene, arm, cam, mp, at, quiet)
    stats = body_stats(kp[sample])
    if stats is None:
        raise UserError(f"{path}: the auto-mapped skeleton never shows a whole body")
    return Motion(keypoints=kp[sel], source_size=rigs.render_size(scene), fps=fps, mode="clip",
                  source_stats=stats, first=rigs.first_frame(frames), kind="bvh")


def _action_range(armature, frames: int) -> tuple[float, float]:
    """First and last scene frame of the imported BVH animation."""
    ad = armature.animation_data
    if ad is not None and ad.action is not None:
        lo, hi = ad.action.frame_range
        if hi > lo or frames == 1:
            return float(lo), float(hi)
    return 1.0, float(frames)
