"""Bone mapping: which bone of a rig (and where along it) stands for each canonical joint.

A mapping is plain JSON, saved in the .blend by the add-on and in files by scripts:

    {"preset": "mixamo", "joints": {"left_wrist": {"bone": "mixamorig:LeftHand", "at": 0.0}, ...}}

`at` is the place along the bone (0 head, 1 tail). An entry may carry an explicit `offset` [x, y, z]
in the bone's rest-local axes (armature units), added after `at`. Without one, face points
(nose, eyes, ears) mapped to a head bone and heels mapped to a foot bone are placed by a small
body model from the rig's rest pose (`anchors`), so a mapping needs only bone names. `neck` and
`mid_hip` are never mapped: they are always the midpoints of the shoulders and of the hips, as for
MediaPipe (`DERIVED`).

    mapping = auto_map(armature_obj)          # tries every preset and a name+hierarchy walk
    required_missing(mapping)                 # CORE joints still unmapped -> [] to render
    anchors(armature_obj, mapping)            # joint -> (bone, rest-local point), for projection

Only bpy, mathutils and the engine's joints module (copied beside this file in the extension).
"""

from __future__ import annotations

import json
import os
import re
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
HEELS = ("left_heel", "right_heel")

# Face model, in head lengths (head bone's base to the top of the head), along the body's
# up / forward / left axes measured in the rest pose: (up, forward, left).
FACE_MODEL: dict[str, tuple[float, float, float]] = {
    "nose": (0.42, 0.50, 0.0),
    "left_eye": (0.58, 0.42, 0.17),
    "right_eye": (0.58, 0.42, -0.17),
    "left_ear": (0.50, 0.0, 0.42),
    "right_ear": (0.50, 0.0, -0.42),
}
# Heel: below the ankle at the toe tip's height, this far behind the ankle (in foot lengths).
HEEL_BACK = 0.22


# --- names ------------------------------------------------------------------------------------

def tokens(name: str) -> list[str]:
    """Lower-case words of a bone name: 'mixamorig:LeftUpLeg' -> ['left', 'up', 'leg'],
    'DEF-thigh.L.001' -> ['def', 'thigh', 'l', '001'], 'UpperArm_L' -> ['upper', 'arm', 'l']."""
    n = name.split(":")[-1]
    n = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", n)
    n = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", n)
    n = re.sub(r"([A-Za-z])([0-9])", r"\1 \2", n)
    return [t for t in re.split(r"[^a-z0-9]+", n.lower()) if t]


def side_of(name: str) -> str | None:
    """'left', 'right' or None from a bone name's words (Left/Right, L/R, .l/.r, _L/_R)."""
    t = tokens(name)
    if "left" in t or "l" in t:
        return "left"
    if "right" in t or "r" in t:
        return "right"
    return None


_SIDE_WORDS = {"left", "right", "l", "r"}
_NOISE_WORDS = {"def", "org", "mch", "bip", "bip01", "b", "j", "jnt", "joint", "bone", "mixamorig"}


def stem(name: str) -> str:
    """A bone name without side, numbers and rig prefixes: 'DEF-upper_arm.L.001' -> 'upper arm'."""
    return " ".join(t for t in tokens(name) if t not in _SIDE_WORDS and t not in _NOISE_WORDS and not t.isdigit())


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
    tmp.write_text(json.dumps(mapping, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


# --- rest-pose geometry -------------------------------------------------------------------------

def _bones(arm):
    return arm.data.bones


def rest_point(arm, bone_name: str, at: float = 0.0, offset=None):
    """World position (mathutils Vector) of a point on a bone in the rest pose."""
    from mathutils import Vector
    bone = _bones(arm)[bone_name]
    local = Vector((0.0, float(at) * bone.length, 0.0))
    if offset is not None:
        local += Vector(offset)
    return arm.matrix_world @ (bone.matrix_local @ local)


def _head(arm, bone):
    return arm.matrix_world @ bone.head_local


_END_WORDS = {"top", "end", "nub", "tip"}
_NOT_CONTINUATION = {"eye", "eyes", "jaw", "tongue", "teeth", "ear", "twist"}


def _end_point(arm, bone):
    """The far end of a bone, in world rest space: a child named like an end (HeadTop_End, Nub,
    Tip), else the only child (eyes, jaw and twist bones aside), else the mean of the children's
    heads (a hand's fingers), else the tail (glTF imports give leaf bones arbitrary lengths, so
    children are preferred)."""
    head = _head(arm, bone)
    kids = [c for c in bone.children if (_head(arm, c) - head).length > 1e-6]
    ends = [c for c in kids if _END_WORDS & set(tokens(c.name))]
    if ends:
        return _head(arm, ends[0])
    kids = [c for c in kids if not _NOT_CONTINUATION & set(tokens(c.name))]
    if len(kids) == 1:
        return _head(arm, kids[0])
    if kids:
        return sum((_head(arm, c) for c in kids), head * 0) / len(kids)
    return arm.matrix_world @ bone.tail_local


def rig_size(arm) -> float:
    """Largest extent of the rest bone heads in world units (scale for tolerances)."""
    pts = [_head(arm, b) for b in _bones(arm)]
    if not pts:
        return 1.0
    ext = [max(p[i] for p in pts) - min(p[i] for p in pts) for i in range(3)]
    return max(max(ext), 1e-6)


def body_frame(arm, mapping: dict):
    """(left, up, forward) unit world vectors of the rest pose: left from the shoulder and hip
    lines, up from mid-hip to mid-shoulder, forward = left x up (independent of bone rolls).
    Falls back to Blender's front view (-Y forward) for a mapping without shoulders and hips."""
    from mathutils import Vector
    J = mapping["joints"]

    def p(name):
        e = J.get(name)
        return rest_point(arm, e["bone"], e.get("at", 0.0), e.get("offset")) if e else None

    ls, rs, lh, rh = p("left_shoulder"), p("right_shoulder"), p("left_hip"), p("right_hip")
    left, up = Vector((1.0, 0.0, 0.0)), Vector((0.0, 0.0, 1.0))
    if None not in (ls, rs, lh, rh):
        left = (ls - rs) + (lh - rh)
        up = (ls + rs - lh - rh) / 2
    elif None not in (ls, rs):
        left = ls - rs
    if left.length < 1e-9 or up.length < 1e-9:
        left, up = Vector((1.0, 0.0, 0.0)), Vector((0.0, 0.0, 1.0))
    up = up.normalized()
    left = (left - up * left.dot(up)).normalized()
    return left, up, left.cross(up)


def _torso_length(arm, mapping: dict) -> float | None:
    """Rest distance from mid-shoulder to mid-hip, or None without shoulders and hips."""
    J = mapping["joints"]
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    if not all(n in J and J[n]["bone"] in arm.data.bones for n in names):
        return None
    ls, rs, lh, rh = (rest_point(arm, J[n]["bone"], J[n].get("at", 0.0), J[n].get("offset")) for n in names)
    return ((ls + rs) / 2 - (lh + rh) / 2).length


def _is_eye_bone(name: str) -> bool:
    return "eye" in tokens(name)


def anchors(arm, mapping: dict) -> dict[str, tuple[str, tuple[float, float, float]]]:
    """joint -> (bone name, point in the bone's rest-local frame, armature units).

    Posed, the joint is at `matrix_world @ pose_bone.matrix @ point`. Face points on a head bone
    and heels on a foot bone without an explicit `offset` come from FACE_MODEL / HEEL_BACK in the
    rest pose. Entries naming bones the armature lacks are skipped.
    """
    check_mapping(mapping)
    bones = _bones(arm)
    J = {j: e for j, e in mapping["joints"].items() if j not in DERIVED and e["bone"] in bones}
    out: dict[str, tuple[str, tuple[float, float, float]]] = {}
    left, up, fwd = None, None, None
    for joint, e in J.items():
        bone = bones[e["bone"]]
        if e.get("offset") is not None:
            off = [float(v) for v in e["offset"]]
            out[joint] = (bone.name, (off[0], off[1] + float(e.get("at", 0.0)) * bone.length, off[2]))
            continue
        world = None
        if joint in FACE_MODEL and not _is_eye_bone(bone.name):
            if left is None:
                left, up, fwd = body_frame(arm, mapping)
            base, top = _head(arm, bone), _end_point(arm, bone)
            h = (top - base).length
            torso = _torso_length(arm, mapping)
            if torso and not 0.2 * torso <= h <= 1.0 * torso:
                h = 0.5 * torso  # a head bone without a sensible end: a typical head for the torso
            a_up, a_fwd, a_left = FACE_MODEL[joint]
            world = base + (up * a_up + fwd * a_fwd + left * a_left) * h
        elif joint in HEELS:
            # Below the ankle at the toe tip's height (world Z is up in Blender), behind the
            # ankle along the foot's horizontal direction.
            ankle = _head(arm, bone)
            toe_e = J.get(joint.replace("heel", "toe"))
            toe = rest_point(arm, toe_e["bone"], toe_e.get("at", 0.0)) if toe_e else _end_point(arm, bone)
            foot = toe - ankle
            flat = foot.copy()
            flat.z = 0.0
            world = ankle.copy()
            world.z = min(ankle.z, toe.z)
            if flat.length > 1e-9:
                world -= flat.normalized() * (HEEL_BACK * foot.length)
        if world is None:
            out[joint] = (bone.name, (0.0, float(e.get("at", 0.0)) * bone.length, 0.0))
        else:
            local = (arm.matrix_world @ bone.matrix_local).inverted() @ world
            out[joint] = (bone.name, (local.x, local.y, local.z))
    return out


def rest_positions(arm, mapping: dict) -> dict:
    """joint -> world rest position (Vector) for every anchored joint plus neck and mid_hip."""
    out = {j: rest_point(arm, b, 0.0, p) for j, (b, p) in anchors(arm, mapping).items()}
    for d, (a, b) in DERIVED.items():
        if a in out and b in out:
            out[d] = (out[a] + out[b]) / 2
    return out


# --- presets applied to a rig ---------------------------------------------------------------------

def _find_bone(bones, name: str):
    """Exact name, else the same name after any 'prefix:' (mixamorig1:, other namespaces)."""
    if name in bones:
        return bones[name]
    if ":" not in name:
        return None
    base = name.split(":")[-1].lower()
    for b in bones:
        if ":" in b.name and b.name.split(":")[-1].lower() == base:
            return b
    return None


def apply_preset(arm, preset) -> dict:
    """A mapping from a preset (name or dict) for this armature: exact bone names (a list means
    alternatives, first found wins) or, for a preset with "match": "stem", side + name stems."""
    if isinstance(preset, str):
        preset = load_preset(preset)
    bones = _bones(arm)
    out: dict[str, dict] = {}
    if preset.get("match") == "stem":
        index: dict[tuple[str | None, str], list] = {}
        for b in bones:
            index.setdefault((side_of(b.name), stem(b.name)), []).append(b)
        for joint, spec in preset["joints"].items():
            side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
            for s in spec["stems"]:
                cands = index.get((side, s)) or (index.get((None, s)) if joint in FACE_MODEL else None)
                if cands:
                    # The ancestor-most bone with that stem (twist segments come after).
                    best = min(cands, key=lambda b: len(b.parent_recursive))
                    out[joint] = (_tip_entry(arm, best) if joint.endswith("_toe")
                                  else {"bone": best.name, "at": float(spec.get("at", 0.0))})
                    break
    else:
        for joint, spec in preset["joints"].items():
            names = spec["bone"] if isinstance(spec["bone"], list) else [spec["bone"]]
            for n in names:
                b = _find_bone(bones, n)
                if b is not None:
                    out[joint] = {"bone": b.name, "at": float(spec.get("at", 0.0))}
                    break
    for side in ("left", "right"):  # a toe at its bone's tail: its end child's head when it has one
        e = out.get(f"{side}_toe")
        if e is not None and e["at"] == 1.0:
            out[f"{side}_toe"] = _tip_entry(arm, bones[e["bone"]])
    _fill_toes(arm, out)
    return validate(arm, {"preset": preset.get("preset", "custom"), "joints": out})


def _fill_toes(arm, J: dict) -> None:
    """An unmapped toe: the tip of a toe-named child of the ankle bone, when there is one."""
    bones = _bones(arm)
    for side in ("left", "right"):
        e = J.get(f"{side}_toe")
        if e is None and f"{side}_ankle" in J:
            # No toe bone: the ankle bone's end, if it points away (a foot bone down to the toes).
            ankle = bones[J[f"{side}_ankle"]["bone"]]
            kids = [c for c in ankle.children if "toe" in tokens(c.name) or "ball" in tokens(c.name)]
            if kids:
                J[f"{side}_toe"] = _tip_entry(arm, kids[0])


def _tip_entry(arm, bone) -> dict:
    """Mapping entry for the far end of a bone: its end child's head, else its tail."""
    for child in bone.children:
        if (child.head_local - bone.head_local).length > 1e-6 and len(bone.children) == 1:
            return {"bone": child.name, "at": 0.0}
    return {"bone": bone.name, "at": 1.0}


# --- name + hierarchy walk --------------------------------------------------------------------------

_FINGER_WORDS = {"thumb", "index", "middle", "ring", "pinky", "finger", "fingers", "carpal", "metacarpal"}


def _joint_bone(bone, eps: float):
    """The ancestor-most bone whose head sits where this bone's head is (zero-length helpers)."""
    while bone.parent is not None and (bone.parent.head_local - bone.head_local).length < eps:
        bone = bone.parent
    return bone


def _up(bone, eps: float):
    """The bone of the next joint up the chain: the parent, climbing over same-place bones and
    twist segments of one limb part (DEF-forearm.L.001 -> DEF-forearm.L: same name stem, in line)."""
    below, p = bone, bone.parent
    if p is None:
        return None
    while p.parent is not None:
        pp = p.parent
        if (pp.head_local - p.head_local).length < eps:
            p = pp
            continue
        v1, v2 = p.head_local - pp.head_local, below.head_local - p.head_local
        in_line = v1.length > 0 and v2.length > 0 and v1.normalized().dot(v2.normalized()) > 0.98
        if in_line and stem(pp.name) and stem(pp.name) == stem(p.name) and side_of(pp.name) == side_of(p.name):
            p = pp
            continue
        break
    return p


def _chain(arm, end_bone, eps: float):
    """(end, middle, top) joint bones walking up from a hand or foot, or None when the two
    segments are implausible (a zero-length or wildly unequal limb)."""
    a = _joint_bone(end_bone, eps)
    b = _up(a, eps)
    c = _up(b, eps) if b is not None else None
    if b is None or c is None:
        return None
    pa, pb, pc = (_head(arm, x) for x in (a, b, c))
    lower, upper = (pa - pb).length, (pb - pc).length
    if lower <= 0 or upper <= 0 or not 0.4 <= upper / lower <= 2.5:
        return None
    return a, b, c


def _ancestor_most(cands):
    return min(cands, key=lambda b: len(b.parent_recursive)) if cands else None


def walk_map(arm) -> dict:
    """The name+hierarchy heuristic: find hands, feet and the head by name words, then walk each
    limb up from its end by joint positions, so a 'LeftShoulder' bone is an upper arm or a
    clavicle depending on how many segments lie between it and the hand."""
    bones = list(_bones(arm))
    local_size = max(max((b.head_local - bones[0].head_local).length for b in bones), 1e-6) if bones else 1.0
    eps = 0.01 * local_size
    J: dict[str, dict] = {}
    for side in ("left", "right"):
        sided = [b for b in bones if side_of(b.name) == side]
        hands = [b for b in sided if {"hand", "wrist"} & set(tokens(b.name)) and not _FINGER_WORDS & set(tokens(b.name))]
        feet = [b for b in sided if {"foot", "ankle"} & set(tokens(b.name)) and not {"toe", "ball", "heel"} & set(tokens(b.name))]
        arm_chain = _chain(arm, _ancestor_most(hands), eps) if hands else None
        if arm_chain:
            for name, b in zip(("wrist", "elbow", "shoulder"), arm_chain):
                J[f"{side}_{name}"] = {"bone": b.name, "at": 0.0}
        leg_chain = _chain(arm, _ancestor_most(feet), eps) if feet else None
        if leg_chain:
            for name, b in zip(("ankle", "knee", "hip"), leg_chain):
                J[f"{side}_{name}"] = {"bone": b.name, "at": 0.0}
            ankle = leg_chain[0]
            toes = [b for b in ankle.children_recursive if {"toe", "toes", "ball"} & set(tokens(b.name))]
            if toes:
                J[f"{side}_toe"] = _tip_entry(arm, _ancestor_most(toes))
            elif len(ankle.children) == 1:
                J[f"{side}_toe"] = _tip_entry(arm, ankle)
            J[f"{side}_heel"] = {"bone": ankle.name, "at": 0.0}
    heads = [b for b in bones if "head" in tokens(b.name) and side_of(b.name) is None
             and not {"top", "end", "nub"} & set(tokens(b.name))]
    head = _ancestor_most(heads)
    if head is not None:
        eyes = {side_of(b.name): b for b in head.children_recursive if _is_eye_bone(b.name)}
        for joint in FACE_MODEL:
            side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
            bone = eyes.get(side) if joint.endswith("_eye") and side in eyes else head
            J[joint] = {"bone": bone.name, "at": 0.0}
    return validate(arm, {"preset": "auto", "joints": J})


# --- validation and the choice -----------------------------------------------------------------------

_LIMBS = (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle"))


def validate(arm, mapping: dict) -> dict:
    """Drop entries on missing bones, and whole limbs whose bones are not one chain
    (top an ancestor of middle, middle of end) or whose segments are implausibly unequal."""
    bones = _bones(arm)
    J = {j: dict(e) for j, e in mapping["joints"].items() if e["bone"] in bones and j not in DERIVED}
    for side in ("left", "right"):
        for names in _LIMBS:
            keys = [f"{side}_{n}" for n in names]
            if not all(k in J for k in keys):
                for k in keys:
                    J.pop(k, None)
                continue
            top, mid, end = (bones[J[k]["bone"]] for k in keys)
            chain_ok = (top == mid or top in mid.parent_recursive) and (mid == end or mid in end.parent_recursive)
            pts = [rest_point(arm, J[k]["bone"], J[k].get("at", 0.0)) for k in keys]
            upper, lower = (pts[0] - pts[1]).length, (pts[1] - pts[2]).length
            if not chain_ok or lower <= 0 or upper <= 0 or not 0.4 <= upper / lower <= 2.5:
                for k in keys:
                    J.pop(k, None)
    return {"preset": mapping.get("preset", "custom"), "joints": J}


def _score(mapping: dict) -> tuple[int, int]:
    return len(set(joints.CORE) & mapped(mapping)), len(mapped(mapping))


def auto_map(arm) -> dict:
    """The best mapping for an armature object: every preset and the hierarchy walk are tried,
    and the one mapping the most required joints, then the most joints, wins (presets first on ties)."""
    if arm is None or getattr(arm, "type", None) != "ARMATURE":
        raise ValueError("auto-mapping needs an armature object")
    best = None
    for name in list_presets():
        cand = apply_preset(arm, name)
        if best is None or _score(cand) > _score(best):
            best = cand
    cand = walk_map(arm)
    if best is None or _score(cand) > _score(best):
        best = cand
    return best
