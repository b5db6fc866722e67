"""Auto-mapping an armature: its bones read from Blender, mapped by `structure`, labelled with a preset.

    m = auto_map(armature_obj)                # {"preset": ..., "joints": {...}, "how": {...}}
    m = auto_map(armature_obj, names=False)   # the structure alone, bone names ignored
    bones = rest_bones(armature_obj)          # [structure.Bone] in world rest space

ValueError (`structure.NotHumanoid`) with one line for an armature that is not a standing
humanoid: the add-on reports it, `pix2dance render` and `pix2dance map` exit 2 with it. The
mapping's "preset" names the naming convention (mixamo, rigify, cmu_bvh) whose bones it picked for
every required joint, else "auto": informative only, names never decide a bone the structure rules out.
"""

from __future__ import annotations

import functools

from ..wire import joints

from . import mapping as mapping_mod
from .structure import Bone, map_bones


def rest_bones(arm) -> list[Bone]:
    """The armature's bones as plain data: world rest heads and tails (Blender's Z up)."""
    m = arm.matrix_world
    return [Bone(b.name, b.parent.name if b.parent else None, tuple(m @ b.head_local), tuple(m @ b.tail_local),
                 bool(b.use_deform)) for b in arm.data.bones]


def auto_map(arm, names: bool = True) -> dict:
    """The mapping of an armature object (see the module docstring)."""
    if arm is None or getattr(arm, "type", None) != "ARMATURE":
        raise ValueError("auto-mapping needs an armature object")
    bones = rest_bones(arm)
    try:
        found = map_bones(bones, names=names)
    except ValueError as e:
        raise type(e)(f"{arm.name} is not a humanoid rig: {e}") from None
    if names:
        found["preset"] = preset_of(found, [b.name for b in bones])
    return found


def preset_of(mapping: dict, bone_names: list[str]) -> str:
    """The first preset naming the mapping's bone for every required joint, else "auto"."""
    have = set(bone_names)
    for name, names in _preset_names():
        if all(_preset_bone(names.get(j), have) == mapping["joints"].get(j, {}).get("bone") for j in joints.CORE):
            return name
    return "auto"


@functools.lru_cache(maxsize=1)
def _preset_names() -> tuple[tuple[str, dict], ...]:
    """(preset, {joint: bone name or names}) of the presets that name bones exactly, read once."""
    out = []
    for name in mapping_mod.list_presets():
        preset = mapping_mod.load_preset(name)
        if preset.get("match") != "stem":
            out.append((name, {j: spec.get("bone") for j, spec in preset["joints"].items()}))
    return tuple(out)


def _preset_bone(spec, have: set[str]) -> str | None:
    """The first of a preset's names the rig has, exactly or after any 'prefix:' (mixamorig1:)."""
    for n in ([spec] if isinstance(spec, str) else spec or []):
        if n in have:
            return n
        base = n.split(":")[-1].lower()
        for b in have:
            if ":" in n and ":" in b and b.split(":")[-1].lower() == base:
                return b
    return None
