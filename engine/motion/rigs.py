"""What .blend and .bvh motions share: a rig, a camera and a bone mapping -> keypoints, through bpy.

    bpy = need_bpy()                                        # UserError without Blender's module
    mapping = mapping_for(armature, file, saved)            # --mapping FILE > saved > auto-mapped
    at, sel, sample = frames_to_project(...)                # sub-frame times of the resampled range
    kp = project(scene, armature, camera, mapping, at)      # (N, J, 3), the add-on's projection

Keypoints come from `engine.rig.projection`, the very code the add-on uses. Rigs are evaluated at
sub-frame times, so 120 fps mocap played at 30 fps is exact, not dropped frames. Body statistics
cover the whole source (STATS_FRAMES spread over it), so rendering a range A:B and then B+1:C
frames the dancer alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.rig import automap
from engine.rig import mapping as mapping_mod
from engine.rig import projection
from engine.wire.joints import NUM_JOINTS

from .source import frame_count, select

log = logging.getLogger(__name__)

STATS_FRAMES = 300      # body statistics from at most this many frames spread over the source


def need_bpy():
    """Blender's Python module, or UserError saying how to get it."""
    try:
        import bpy
    except ImportError:
        raise UserError("this motion source needs Blender's Python module: pip install bpy") from None
    return bpy


def _read_file(path: Path, armature) -> dict:
    """A bone-mapping JSON whose bones all exist in the armature, or UserError."""
    try:
        mapping = mapping_mod.load_mapping(path)
    except ValueError as e:
        raise UserError(f"--mapping {path}: {e}") from None
    bones = {b.name for b in armature.data.bones}
    absent = sorted({e["bone"] for e in mapping["joints"].values()} - bones)
    if absent:
        raise UserError(f"--mapping {path} names bones armature {armature.name!r} lacks: {', '.join(absent[:6])}"
                        + (" ..." if len(absent) > 6 else ""))
    return mapping


def mapping_for(armature, mapping_file: Path | None, saved: dict | None = None) -> dict:
    """The mapping to project with: --mapping FILE, else what the .blend saved, else auto-mapped;
    UserError naming the required joints still missing."""
    if mapping_file is not None:
        mapping, how = _read_file(mapping_file, armature), f"from {mapping_file}"
    elif saved is not None:
        mapping, how = saved, "saved in the .blend"
    else:
        try:
            mapping, how = automap.auto_map(armature), "auto-detected"
        except ValueError as e:        # not a humanoid: the mapper says why
            raise UserError(f"armature {armature.name!r}: {str(e).splitlines()[0]}; pass --mapping FILE") from None
    missing = mapping_mod.required_missing(mapping)
    if missing:
        raise UserError(f"armature {armature.name!r}: no bone found for {', '.join(missing)} "
                        f"({how}); pass --mapping FILE")
    log.info("bone mapping %s (%s)", how, mapping.get("preset") or "custom")
    return mapping


def frames_to_project(first: float, per_frame: float, src_fps: float, duration_frames: float, fps: float,
                      frames: tuple[int, int] | None, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene frame numbers (fractional) to project: (all needed, positions of the asked range in
    them, positions of the statistics sample in them).

    Statistics cover the whole resampled source (so any range is normalized alike), sampled at
    STATS_FRAMES evenly spread frames when the source is longer: percentiles do not need more.
    """
    total = frame_count(duration_frames / src_fps, fps)
    start, stop = select(total, frames, fps, what)
    stats_idx = np.arange(total) if total <= STATS_FRAMES else np.unique(
        np.linspace(0, total - 1, STATS_FRAMES).round().astype(int))
    need = np.union1d(np.arange(start, stop), stats_idx)
    at = first + need * (src_fps / fps) * per_frame
    return at, np.searchsorted(need, np.arange(start, stop)), np.searchsorted(need, stats_idx)


def project(scene, armature, camera, mapping, at: np.ndarray, quiet: bool = True) -> np.ndarray:
    """(N, J, 3) keypoints at scene frames `at`, which may be fractional (set as sub-frames, so
    F-curves are evaluated between keys). A bar for long sources."""
    from tqdm import tqdm
    step = 100
    out = np.zeros((len(at), NUM_JOINTS, 3), np.float32)
    with tqdm(total=len(at), desc="project", unit="frame", disable=quiet or len(at) < 2 * step, leave=False) as bar:
        for i in range(0, len(at), step):
            try:
                out[i:i + step] = projection.project_frames(scene, armature, camera, mapping,
                                                            [float(f) for f in at[i:i + step]])
            except ValueError as e:              # the rig layer's one-line explanations
                raise UserError(str(e).splitlines()[0]) from None
            bar.update(len(at[i:i + step]))
    return out


def render_size(scene) -> tuple[int, int]:
    w, h = projection.render_size(scene)
    return int(w), int(h)


def first_frame(frames: tuple[int, int] | None) -> int:
    """The 1-based number of the first keypoint row."""
    return frames[0] if frames else 1
