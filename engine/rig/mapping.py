"""Bone mapping: which bone of a rig (and where along it) stands for each canonical joint.

A mapping is plain JSON, saved in the .blend by the add-on and in files by scripts:

    {"preset": "mixamo", "joints": {"left_wrist": {"bone": "mixamorig:LeftHand", "at": 0.0}, ...},
     "how": {"left_wrist": "structure", ...}}

`at` is the place along the bone (0 head, 1 tail); an entry may carry an explicit `offset` [x, y, z]
in the bone's rest-local axes (armature units), added after `at` (`anchors` places the points).
`how`, optional, says how each bone was found ("name", "structure" or "geometry" by auto-map, "hand"); it is
beside the joints, not in them, since it does not change where a joint is. `neck` and `mid_hip` are never mapped: they are always the
midpoints of the shoulders and of the hips, as for MediaPipe (`DERIVED`).

    check_mapping(m); load_mapping(path); save_mapping(m, path)    # the JSON form, checked
    required_missing(m, armature)      # CORE joints still unmapped -> [] to render
    saved_mapping(scene.pix2dance)     # what the add-on saved in a scene (registered or not)

Auto-mapping a rig is `automap.auto_map`. Only the engine's joints module; no bpy at import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..wire import joints

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRESET_ORDER = ("mixamo", "rigify", "cmu_bvh", "generic")

# Joints computed from others, never mapped to a bone.
DERIVED: dict[str, tuple[str, str]] = {
    "neck": ("left_shoulder", "right_shoulder"),
    "mid_hip": ("left_hip", "right_hip"),
}
MAPPABLE: tuple[str, ...] = tuple(n for n in joints.JOINTS if n not in DERIVED)
HOW = ("name", "structure", "geometry", "hand")    # the last: picked by the user in the add-on


# --- presets and files ------------------------------------------------------------------------

def list_presets() -> list[str]:
    """Names of the preset files, in the order auto_map tries them."""
    found = {p.stem for p in PRESETS_DIR.glob("*.json")}
    return [n for n in PRESET_ORDER if n in found] + sorted(found - set(PRESET_ORDER))


def load_preset(name: str) -> dict:
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no mapping preset named {name!r} (have: {', '.join(list_presets())})")
    return json.loads(path.read_text(encoding="utf-8"))


def check_mapping(mapping) -> dict:
    """The mapping if well formed; ValueError with one line otherwise (unknown joints, bad types)."""
    if not isinstance(mapping, dict) or not isinstance(mapping.get("joints"), dict):
        raise ValueError('a mapping is {"preset": name, "joints": {joint: {"bone": name, "at": 0..1}}}')
    for joint, entry in mapping["joints"].items():
        if joint not in joints.INDEX:
            raise ValueError(f"unknown joint {joint!r} in mapping (joints are {', '.join(joints.JOINTS)})")
        if not isinstance(entry, dict) or not isinstance(entry.get("bone"), str) or not entry["bone"]:
            raise ValueError(f"mapping entry for {joint} needs a bone name")
        at = entry.get("at", 0.0)
        if not isinstance(at, (int, float)) or not 0.0 <= float(at) <= 1.0:
            raise ValueError(f"mapping entry for {joint}: 'at' must be a number from 0 to 1")
        off = entry.get("offset")
        if off is not None and (not isinstance(off, (list, tuple)) or len(off) != 3):
            raise ValueError(f"mapping entry for {joint}: 'offset' must be three numbers")
    how = mapping.get("how", {})
    if not isinstance(how, dict) or not set(how.values()) <= set(HOW):
        raise ValueError(f"a mapping's 'how' is {{joint: {' | '.join(HOW)}}}")
    return mapping


def load_mapping(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mapping file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"mapping file {path.name} is not JSON: {e}") from None
    return check_mapping(data)


def save_mapping(mapping: dict, path) -> None:
    """Write the mapping as JSON atomically (temp file in the same folder, then rename)."""
    check_mapping(mapping)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(mapping, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- what a mapping covers ----------------------------------------------------------------------

def mapped(mapping: dict, armature=None) -> set[str]:
    """Joints the mapping fills, the derived ones included when both their sources are mapped.
    With an armature, entries naming bones it lacks do not count."""
    bones = armature.data.bones if armature is not None else None
    have = {j for j, e in mapping.get("joints", {}).items()
            if j in joints.INDEX and j not in DERIVED and (bones is None or e.get("bone") in bones)}
    have |= {d for d, (a, b) in DERIVED.items() if a in have and b in have}
    return have


def missing_joints(mapping: dict, armature=None) -> list[str]:
    """Joints the mapping leaves out (or, given the armature, maps to bones it lacks), in
    joints.JOINTS order."""
    have = mapped(mapping, armature)
    return [j for j in joints.JOINTS if j not in have]


def required_missing(mapping: dict, armature=None) -> list[str]:
    """CORE joints the mapping leaves out (or maps to bones the armature lacks): a render refuses
    while this is not empty."""
    have = mapped(mapping, armature)
    return [j for j in joints.CORE if j not in have]


def missing_bones(mapping: dict, armature) -> dict[str, str]:
    """joint -> bone name for entries naming a bone the armature does not have (renamed, deleted)."""
    bones = armature.data.bones
    return {j: e.get("bone", "") for j, e in mapping.get("joints", {}).items()
            if j not in DERIVED and e.get("bone") not in bones}


# --- the mapping the add-on saves in a scene ----------------------------------------------------

def saved_mapping(settings) -> dict:
    """The mapping in the add-on's settings (`scene.pix2dance`), JSON form; rows without a bone
    are left out, each row's `offset` (when `has_offset`) and `how` (when set) kept.

    Reads by name with .get() only, so the same code serves the add-on (its registered
    PropertyGroup) and a headless process, where the add-on is not registered and what the .blend
    saved is a group of plain ID properties (`scene.get("pix2dance")`). A property never set
    reads as its default. ValueError when the saved rows are not a mapping's.
    """
    rows = settings.get("mapping") or []
    found, how = {}, {}
    for row in rows:
        joint, bone = str(row.get("joint") or ""), str(row.get("bone") or "")
        if not (joint and bone):
            continue
        entry = {"bone": bone, "at": round(float(row.get("at") or 0.0), 4)}
        if row.get("has_offset"):
            entry["offset"] = [round(float(v), 6) for v in (row.get("offset") or (0.0, 0.0, 0.0))]
        found[joint] = entry
        if row.get("how"):
            how[joint] = str(row.get("how"))
    out = {"preset": str(settings.get("mapping_preset") or ""), "joints": found}
    if how:
        out["how"] = how
    return check_mapping(out)
