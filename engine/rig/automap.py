"""Auto-mapping: the bone mapping (`mapping`) of an armature, found from its bones alone.

    m = auto_map(armature_obj)        # every preset and a name+hierarchy walk; the best one wins

bpy and mathutils (the armature's rest pose); imported where a rig is mapped.
"""

from __future__ import annotations

from ..wire import joints

from . import mapping as mapping_mod
from .anchors import head, rest_point
from .names import is_eye, side_of, stem, tokens

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
        preset = mapping_mod.load_preset(preset)
    bones = arm.data.bones
    out: dict[str, dict] = {}
    if preset.get("match") == "stem":
        index: dict[tuple[str | None, str], list] = {}
        for b in bones:
            index.setdefault((side_of(b.name), stem(b.name)), []).append(b)
        for joint, spec in preset["joints"].items():
            side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
            for s in spec["stems"]:
                cands = index.get((side, s)) or (index.get((None, s)) if joint in joints.FACE else None)
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
    bones = arm.data.bones
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
    pa, pb, pc = (head(arm, x) for x in (a, b, c))
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
    bones = list(arm.data.bones)
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
        eyes = {side_of(b.name): b for b in head.children_recursive if is_eye(b.name)}
        for joint in joints.FACE:
            side = "left" if joint.startswith("left_") else "right" if joint.startswith("right_") else None
            bone = eyes.get(side) if joint.endswith("_eye") and side in eyes else head
            J[joint] = {"bone": bone.name, "at": 0.0}
    return validate(arm, {"preset": "auto", "joints": J})


# --- validation and the choice -----------------------------------------------------------------------

_LIMBS = (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle"))


def validate(arm, mapping: dict) -> dict:
    """Drop entries on missing bones, and whole limbs whose bones are not one chain
    (top an ancestor of middle, middle of end) or whose segments are implausibly unequal."""
    bones = arm.data.bones
    J = {j: dict(e) for j, e in mapping["joints"].items() if e["bone"] in bones and j not in mapping_mod.DERIVED}
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
    return len(set(joints.CORE) & mapping_mod.mapped(mapping)), len(mapping_mod.mapped(mapping))


def auto_map(arm) -> dict:
    """The best mapping for an armature object: every preset and the hierarchy walk are tried,
    and the one mapping the most required joints, then the most joints, wins (presets first on ties)."""
    if arm is None or getattr(arm, "type", None) != "ARMATURE":
        raise ValueError("auto-mapping needs an armature object")
    best = None
    for name in mapping_mod.list_presets():
        cand = apply_preset(arm, name)
        if best is None or _score(cand) > _score(best):
            best = cand
    cand = walk_map(arm)
    if best is None or _score(cand) > _score(best):
        best = cand
    return best
