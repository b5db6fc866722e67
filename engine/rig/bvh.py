"""BVH motion capture: the one reader and validator, and the import into Blender.

    info = read("dance.bvh")               # BvhInfo: joints, channels, frames, frame_time (ValueError otherwise)
    arm = import_bvh("dance.bvh", scene)   # an armature whose action is keyed at the scene's frame rate
    first, last = motion_range(arm)        # its whole scene frames

`read` parses the whole file (hierarchy, channel counts, every motion line) and explains the first
problem in one line: Blender's importer prints a traceback and half-imports a broken file, so it
only ever sees files that pass. `pix2dance render` turns the ValueError into its UserError; the
add-on reports it. Reading needs only numpy; `import_bvh` imports bpy when called.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class BvhInfo:
    joints: list[str]         # ROOT and JOINT names, in file order
    channels: int             # values per motion line
    frames: int               # the header's Frames:
    frame_time: float         # seconds per frame

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time


_READ: dict[tuple, BvhInfo] = {}


def read(path) -> BvhInfo:
    """The file's structure, checked fully; ValueError with one line otherwise. Remembered per
    (path, size, mtime): a render checks the file first and imports it later, a long capture
    takes a second to parse."""
    p = Path(str(path)).expanduser()
    if not str(path):
        raise ValueError("no BVH file given")
    if not p.is_file():
        raise ValueError(f"BVH file not found: {p}")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _READ:
        _READ.clear()
        _READ[key] = _parse(p)
    return _READ[key]


def _parse(path: Path) -> BvhInfo:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a BVH file (not text)") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    it = iter([(i + 1, line.split()) for i, line in enumerate(text.lstrip("\ufeff").splitlines()) if line.strip()])

    def bad(n: int, why: str) -> ValueError:
        return ValueError(f"{path} is not a valid BVH file: line {n}: {why}")

    first = next(it, None)
    if first is None or first[1][0].upper() != "HIERARCHY":
        raise ValueError(f"{path} is not a BVH file: it does not start with HIERARCHY (no HIERARCHY header)")
    joints, channels, depth, n = [], 0, 0, first[0]
    for n, tok in it:
        key = tok[0].upper()
        if key in ("ROOT", "JOINT"):
            if len(tok) < 2:
                raise bad(n, f"{tok[0]} without a name")
            if key == "ROOT" and depth != 0:
                raise bad(n, "ROOT inside another joint")
            joints.append(" ".join(tok[1:]))
        elif key == "END":
            pass
        elif key == "{":
            depth += 1
        elif key == "}":
            depth -= 1
            if depth < 0:
                raise bad(n, "unbalanced '}'")
        elif key == "OFFSET":
            if len(tok) != 4 or not _floats(tok[1:]):
                raise bad(n, "OFFSET needs three numbers")
        elif key == "CHANNELS":
            try:
                count = int(tok[1])
            except (IndexError, ValueError):
                raise bad(n, "CHANNELS needs a count") from None
            if count != len(tok) - 2 or not all(c.lower()[1:] in ("position", "rotation") for c in tok[2:]):
                raise bad(n, "CHANNELS count and names do not match")
            channels += count
        elif key == "MOTION":
            break
        else:
            raise bad(n, f"unexpected {tok[0]!r} in the hierarchy")
    else:
        raise ValueError(f"{path} is not a valid BVH file: no MOTION section (the file ends without a MOTION line)")
    if depth != 0 or not joints:
        raise bad(n, "the hierarchy's braces do not balance" if joints else "no ROOT joint before MOTION")
    header = {}
    for _ in range(2):
        n, tok = next(it, (n, []))
        line = " ".join(tok)
        if line.lower().startswith("frames:"):
            header["frames"] = line.split(":", 1)[1]
        elif line.lower().startswith("frame time:"):
            header["time"] = line.split(":", 1)[1]
        else:
            raise bad(n, "expected 'Frames:' and 'Frame Time:' after MOTION")
    try:
        frames, frame_time = int(header["frames"]), float(header["time"])
    except (KeyError, ValueError):
        raise bad(n, "bad 'Frames:' or 'Frame Time:'") from None
    if frames < 1 or not (0 < frame_time < 10) or channels < 1:
        raise bad(n, f"{frames} frames of {frame_time} s each, {channels} channels")
    values, lines_at = [], []
    for n, tok in it:
        if len(tok) != channels:
            raise bad(n, f"motion line {len(lines_at) + 1} has {len(tok)} values, the hierarchy has {channels} channels")
        values.extend(tok)
        lines_at.append(n)
    try:   # all numbers at once (a per-value check costs seconds on long captures)
        numbers = np.array(values, dtype=np.float64)
    except ValueError:
        at = next(i for i, v in enumerate(values) if not _floats([v]))
        raise bad(lines_at[at // channels], f"{values[at]!r} is not a number") from None
    if not np.isfinite(numbers).all():
        raise bad(n, "a motion value is not finite")
    if len(lines_at) < frames:
        raise ValueError(f"{path} is not a valid BVH file: it says {frames} frames but has {len(lines_at)} motion "
                         f"lines, the header says 'Frames: {frames}' (cut short?)")
    return BvhInfo(joints=joints, channels=channels, frames=frames, frame_time=frame_time)


def _floats(values) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


# --- into Blender ------------------------------------------------------------------------------

def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def import_bvh(path, scene=None, *, scale: float = 1.0, frame_start: int = 1):
    """Import a BVH as an armature whose action is keyed at the scene's frame rate.

    The importer maps one BVH frame to one scene frame; the keys are then rescaled by
    frame_time x scene fps (fps_base included), so a 120 fps capture plays at its real speed in a
    24 or 29.97 fps scene. The scene's fps and frame range are left alone. Returns the armature.
    ValueError (one line) for a file that is missing, not .bvh or not valid (`read`).
    """
    import bpy
    p = Path(str(path)).expanduser()
    if p.is_file() and p.suffix.lower() != ".bvh":
        raise ValueError(f"{p.name} is not a BVH file (expected .bvh)")
    info = read(p)
    scene = scene or bpy.context.scene
    before = set(bpy.data.objects)
    kwargs = dict(filepath=str(p), global_scale=float(scale), frame_start=int(frame_start),
                  use_fps_scale=False, update_scene_fps=False, update_scene_duration=False)
    if scene != bpy.context.scene:
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.import_anim.bvh(**kwargs)
    else:
        result = bpy.ops.import_anim.bvh(**kwargs)
    if "FINISHED" not in result:
        raise ValueError(f"Blender could not import {p.name} as BVH")
    new = [o for o in bpy.data.objects if o not in before and o.type == "ARMATURE"]
    if not new:
        raise ValueError(f"importing {p.name} made no armature")
    arm = new[0]
    factor = info.frame_time * scene_fps(scene)
    if abs(factor - 1.0) > 1e-9 and arm.animation_data and arm.animation_data.action:
        _scale_keys(arm.animation_data.action, factor, frame_start)
    arm["pix2dance_bvh"] = {"frames": info.frames, "frame_time": info.frame_time}
    return arm


def fcurves(action) -> list:
    """Every F-Curve of an action (Blender 5 layered actions: layers > strips > channelbags)."""
    out = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                out.extend(bag.fcurves)
    return out


def _scale_keys(action, factor: float, start: float) -> None:
    """Stretch keyframe times about `start` by `factor`. The importer's keys are LINEAR, so only
    the key points move; update() then recomputes the handles."""
    for fc in fcurves(action):
        n = len(fc.keyframe_points)
        buf = np.empty(2 * n, np.float64)
        fc.keyframe_points.foreach_get("co", buf)
        buf[0::2] = start + (buf[0::2] - start) * factor
        fc.keyframe_points.foreach_set("co", buf)
        fc.update()


def motion_range(armature) -> tuple[int, int]:
    """First and last whole scene frames of the armature's action."""
    ad = armature.animation_data
    if ad is None or ad.action is None:
        raise ValueError(f"{armature.name} has no animation")
    a, b = ad.action.frame_range
    return int(math.ceil(a - 1e-6)), int(math.floor(b + 1e-6))
