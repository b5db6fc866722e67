"""Where each mapped joint sits on its bone, from the rig's rest pose: the points projection follows.

    anchors(arm, mapping)          # joint -> (bone, rest-local point): posed, matrix_world @ pose.matrix @ point
    rest_positions(arm, mapping)   # joint -> world rest position (Vector), neck and mid_hip included
    body_frame(arm, mapping)       # (left, up, forward) unit vectors of the rest pose

A mapping names bones only (`mapping`); the points come from here. An entry's `at` places it along
the bone (0 head, 1 tail) and an explicit `offset` moves it in the bone's rest-local axes. Without
one, face points (nose, eyes, ears) on a head bone and heels on a foot bone are placed by a small
body model measured in the rest pose (FACE_MODEL, HEEL_BACK), whatever the bones' rolls.
bpy's mathutils only.
"""

from __future__ import annotations

from . import mapping as mapping_mod
from .names import is_eye, tokens

# Face model, in head lengths (head bone's base to the top of the head), along the body's
# up / forward / left axes measured in the rest pose: (up, forward, left).
FACE_MODEL: dict[str, tuple[float, float, float]] = {
    "nose": (0.42, 0.50, 0.0),
    "left_eye": (0.58, 0.42, 0.17),
    "right_eye": (0.58, 0.42, -0.17),
    "left_ear": (0.50, 0.0, 0.42),
    "right_ear": (0.50, 0.0, -0.42),
}
HEELS = ("left_heel", "right_heel")
# Heel: below the ankle at the toe tip's height, this far behind the ankle (in foot lengths).
HEEL_BACK = 0.22

_END_WORDS = {"top", "end", "nub", "tip"}
_NOT_CONTINUATION = {"eye", "eyes", "jaw", "tongue", "teeth", "ear", "twist"}


def rest_point(arm, bone_name: str, at: float = 0.0, offset=None):
    """World position (mathutils Vector) of a point on a bone in the rest pose."""
    from mathutils import Vector
    bone = arm.data.bones[bone_name]
    local = Vector((0.0, float(at) * bone.length, 0.0))
    if offset is not None:
        local += Vector(offset)
    return arm.matrix_world @ (bone.matrix_local @ local)


def head(arm, bone):
    """World rest position of a bone's head."""
    return arm.matrix_world @ bone.head_local


def end_point(arm, bone):
    """The far end of a bone, in world rest space: a child named like an end (HeadTop_End, Nub,
    Tip), else the only child (eyes, jaw and twist bones aside), else the mean of the children's
    heads (a hand's fingers), else the tail (glTF imports give leaf bones arbitrary lengths, so
    children are preferred)."""
    base = head(arm, bone)
    kids = [c for c in bone.children if (head(arm, c) - base).length > 1e-6]
    ends = [c for c in kids if _END_WORDS & set(tokens(c.name))]
    if ends:
        return head(arm, ends[0])
    kids = [c for c in kids if not _NOT_CONTINUATION & set(tokens(c.name))]
    if len(kids) == 1:
        return head(arm, kids[0])
    if kids:
        return sum((head(arm, c) for c in kids), base * 0) / len(kids)
    return arm.matrix_world @ bone.tail_local


def _entry_point(arm, entry):
    return rest_point(arm, entry["bone"], entry.get("at", 0.0), entry.get("offset"))


def body_frame(arm, mapping: dict):
    """(left, up, forward) unit world vectors of the rest pose: left from the shoulder and hip
    lines, up from mid-hip to mid-shoulder, forward = left x up (independent of bone rolls).
    Falls back to Blender's front view (-Y forward) for a mapping without shoulders and hips."""
    from mathutils import Vector
    J = mapping["joints"]

    def p(name):
        e = J.get(name)
        return _entry_point(arm, e) if e else None

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
    ls, rs, lh, rh = (_entry_point(arm, J[n]) for n in names)
    return ((ls + rs) / 2 - (lh + rh) / 2).length


def anchors(arm, mapping: dict) -> dict[str, tuple[str, tuple[float, float, float]]]:
    """joint -> (bone name, point in the bone's rest-local frame, armature units).

    Posed, the joint is at `matrix_world @ pose_bone.matrix @ point`. Face points on a head bone
    and heels on a foot bone without an explicit `offset` come from FACE_MODEL / HEEL_BACK in the
    rest pose. Entries naming bones the armature lacks are skipped.
    """
    mapping_mod.check_mapping(mapping)
    bones = arm.data.bones
    J = {j: e for j, e in mapping["joints"].items() if j not in mapping_mod.DERIVED and e["bone"] in bones}
    out: dict[str, tuple[str, tuple[float, float, float]]] = {}
    left, up, fwd = None, None, None
    for joint, e in J.items():
        bone = bones[e["bone"]]
        if e.get("offset") is not None:
            off = [float(v) for v in e["offset"]]
            out[joint] = (bone.name, (off[0], off[1] + float(e.get("at", 0.0)) * bone.length, off[2]))
            continue
        world = None
        if joint in FACE_MODEL and not is_eye(bone.name):
            if left is None:
                left, up, fwd = body_frame(arm, mapping)
            base, top = head(arm, bone), end_point(arm, bone)
            h = (top - base).length
            torso = _torso_length(arm, mapping)
            if torso and not 0.2 * torso <= h <= 1.0 * torso:
                h = 0.5 * torso  # a head bone without a sensible end: a typical head for the torso
            a_up, a_fwd, a_left = FACE_MODEL[joint]
            world = base + (up * a_up + fwd * a_fwd + left * a_left) * h
        elif joint in HEELS:
            # Below the ankle at the toe tip's height (world Z is up in Blender), behind the
            # ankle along the foot's horizontal direction.
            ankle = head(arm, bone)
            toe_e = J.get(joint.replace("heel", "toe"))
            toe = rest_point(arm, toe_e["bone"], toe_e.get("at", 0.0)) if toe_e else end_point(arm, bone)
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
    for d, (a, b) in mapping_mod.DERIVED.items():
        if a in out and b in out:
            out[d] = (out[a] + out[b]) / 2
    return out
