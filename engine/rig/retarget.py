"""Retargeting: one rig's motion baked onto another rig, whatever their proportions and rest poses.

    action = retarget(scene, src, rig)                 # bake src's motion onto rig (both auto-mapped)
    action, (first, last) = retarget_bvh(scene, "dance.bvh", rig)   # import (`bvh`), bake, drop the import

Retargeting works bone by bone in world space and respects each rig's rest pose: for each
corresponding bone pair, the source's rotation relative to its rest (`delta = pose @ rest^-1`) is
applied to the target's rest rotation after an alignment that turns the target's rest segment
onto the source's (so a T-pose rig follows an arms-down mocap skeleton). Spines and necks with
different bone counts are matched by position along the chain. The hips move as the source's, scaled
by the ratio of leg lengths, about each rig's origin (the floor). The result is baked into a new
layered action (Blender 5 channelbags) with one key per scene frame.
bpy, mathutils and numpy.
"""

from __future__ import annotations

import numpy as np

from ..wire import joints

from . import projection
from .anchors import body_frame, end_point, rest_positions
from .automap import auto_map
from . import bvh


# --- rig structure ----------------------------------------------------------------------------------

def _path(bones, top: str, bottom: str) -> list[str]:
    """Bone names from `top` (exclusive) down to `bottom` (inclusive); [] if not a descendant."""
    out, b = [], bones[bottom]
    while b is not None and b.name != top:
        out.append(b.name)
        b = b.parent
    return list(reversed(out)) if b is not None else []


def _common_ancestor(bones, a: str, b: str) -> str | None:
    chain = {x.name for x in bones[a].parent_recursive}
    for p in bones[b].parent_recursive:
        if p.name in chain:
            return p.name
    return None


def _head(arm, name):
    return np.array(arm.matrix_world @ arm.data.bones[name].head_local, np.float64)


def _end(arm, name):
    return np.array(end_point(arm, arm.data.bones[name]), np.float64)


def _rest_rot(arm, name) -> np.ndarray:
    """World rotation (3x3, scale removed) of a bone in the rest pose."""
    m = (arm.matrix_world @ arm.data.bones[name].matrix_local).to_3x3().normalized()
    return np.array(m, np.float64)


class Structure:
    """One rig's roles: bone names and rest segments for the parts retargeting matches."""

    def __init__(self, arm, mapping: dict):
        self.arm = arm
        J = mapping["joints"]
        bones = arm.data.bones
        need = [f"{s}_{p}" for s in ("left", "right") for p in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")]
        lack = [j for j in need if j not in J or J[j]["bone"] not in bones]
        if lack:
            raise ValueError(f"{arm.name}: mapping lacks {', '.join(lack)} (needed to retarget)")
        self.rest = rest_positions(arm, mapping)
        b = {j: J[j]["bone"] for j in need}
        self.root = _common_ancestor(bones, b["left_hip"], b["right_hip"]) or b["left_hip"]
        self.chest = _common_ancestor(bones, b["left_shoulder"], b["right_shoulder"]) or self.root
        self.head = J["nose"]["bone"] if "nose" in J and J["nose"]["bone"] in bones else None
        # part -> (bone, rest segment start, rest segment end) in world space
        self.parts: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        R = {k: np.array(v, np.float64) for k, v in self.rest.items()}
        for s in ("left", "right"):
            self.parts[f"{s}_upper_arm"] = (b[f"{s}_shoulder"], R[f"{s}_shoulder"], R[f"{s}_elbow"])
            self.parts[f"{s}_forearm"] = (b[f"{s}_elbow"], R[f"{s}_elbow"], R[f"{s}_wrist"])
            self.parts[f"{s}_hand"] = (b[f"{s}_wrist"], R[f"{s}_wrist"], _end(arm, b[f"{s}_wrist"]))
            self.parts[f"{s}_thigh"] = (b[f"{s}_hip"], R[f"{s}_hip"], R[f"{s}_knee"])
            self.parts[f"{s}_shin"] = (b[f"{s}_knee"], R[f"{s}_knee"], R[f"{s}_ankle"])
            toe = R.get(f"{s}_toe")
            self.parts[f"{s}_foot"] = (b[f"{s}_ankle"], R[f"{s}_ankle"], toe if toe is not None else _end(arm, b[f"{s}_ankle"]))
            clav = _path(bones, self.chest, b[f"{s}_shoulder"])[:-1]
            if clav:
                self.parts[f"{s}_clavicle"] = (clav[0], _head(arm, clav[0]), R[f"{s}_shoulder"])
        # Spine: root (exclusive) .. chest (inclusive); neck: chest (exclusive) .. head (inclusive)
        self.spine = _path(bones, self.root, self.chest) if self.chest != self.root else []
        self.neck = _path(bones, self.chest, self.head) if self.head else []
        self.legs = (R["left_hip"] - R["left_knee"], R["left_knee"] - R["left_ankle"],
                     R["right_hip"] - R["right_knee"], R["right_knee"] - R["right_ankle"])
        self.leg_length = float(sum(np.linalg.norm(v) for v in self.legs) / 2)
        self.mid_hip = (R["left_hip"] + R["right_hip"]) / 2
        left, up, fwd = body_frame(arm, mapping)
        self.frame = np.array([left, up, fwd], np.float64).T  # columns: left, up, forward

    def chain_segments(self, chain: list[str], end_point: np.ndarray):
        """[(bone, start, end, fraction of the chain's length at the bone's middle)]."""
        if not chain:
            return []
        pts = [_head(self.arm, n) for n in chain] + [end_point]
        lengths = [np.linalg.norm(pts[i + 1] - pts[i]) for i in range(len(chain))]
        total = sum(lengths) or 1.0
        out, acc = [], 0.0
        for i, n in enumerate(chain):
            out.append((n, pts[i], pts[i + 1], (acc + lengths[i] / 2) / total))
            acc += lengths[i]
        return out


def _align(v_from: np.ndarray, v_to: np.ndarray) -> np.ndarray:
    """Smallest rotation (3x3) turning direction v_from onto v_to."""
    a, b = v_from / (np.linalg.norm(v_from) or 1), v_to / (np.linalg.norm(v_to) or 1)
    v, c = np.cross(a, b), float(a @ b)
    if c < -0.999999:  # opposite: half a turn about any perpendicular axis
        axis = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def pairs(src: Structure, tgt: Structure) -> list[tuple[str, str, np.ndarray]]:
    """(source bone, target bone, alignment C) for every matched part: target world rotation =
    delta_source @ C @ target rest rotation, with C turning the target's rest segment onto the
    source's (the root: its whole body frame)."""
    out = [(src.root, tgt.root, src.frame @ tgt.frame.T)]
    for part, (tb, t0, t1) in tgt.parts.items():
        if part in src.parts:
            sb, s0, s1 = src.parts[part]
            out.append((sb, tb, _align(t1 - t0, s1 - s0)))
    neck_base = lambda s: _head(s.arm, s.neck[0]) if s.neck else (np.array(s.rest["neck"], np.float64))  # noqa: E731
    for chain_of, end_of in ((lambda s: s.spine, neck_base),
                             (lambda s: s.neck, lambda s: _end(s.arm, s.head) if s.head else None)):
        sc, tc = chain_of(src), chain_of(tgt)
        if not sc or not tc:
            continue
        ss, ts = src.chain_segments(sc, end_of(src)), tgt.chain_segments(tc, end_of(tgt))
        for tb, t0, t1, tf in ts:
            sb, s0, s1, _ = min(ss, key=lambda x: abs(x[3] - tf))
            if tb == tc[-1]:  # the chest and the head match exactly
                sb, s0, s1 = ss[-1][:3]
            out.append((sb, tb, _align(t1 - t0, s1 - s0)))
    seen, unique = set(), []
    for sb, tb, c in out:
        if tb not in seen:
            seen.add(tb)
            unique.append((sb, tb, c))
    return unique


# --- baking ---------------------------------------------------------------------------------------------

def _rot_only(m4) -> np.ndarray:
    r = np.array(m4, np.float64)[:3, :3]
    return r / np.linalg.norm(r, axis=0, keepdims=True)


def _quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) quaternions (w, x, y, z)."""
    from mathutils import Matrix
    return np.array([Matrix(r.tolist()).to_quaternion()[:] for r in m], np.float64)


def _continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs so consecutive keys take the short way."""
    q = q.copy()
    for i in range(1, len(q)):
        if q[i] @ q[i - 1] < 0:
            q[i] = -q[i]
    return q


def retarget(scene, source, target, source_mapping: dict | None = None, target_mapping: dict | None = None,
             frames=None, action_name: str | None = None):
    """Bake the source armature's motion onto the target armature; returns the new Action.

    frames: scene frames to bake (default: the source action's whole range). The target gets a
    new action with quaternion rotation keys on the matched bones and location keys on its root,
    one key per frame; its other bones rest. The scene's current frame is restored.
    """
    import bpy
    for obj, what in ((source, "source"), (target, "target")):
        if obj is None or getattr(obj, "type", None) != "ARMATURE":
            raise ValueError(f"retargeting needs a {what} armature")
    if source == target:
        raise ValueError("source and target are the same armature")
    src = Structure(source, source_mapping or auto_map(source))
    tgt = Structure(target, target_mapping or auto_map(target))
    if frames is None:
        a, b = bvh.motion_range(source)
        frames = range(a, b + 1)
    frames = [int(f) for f in frames]
    if not frames:
        raise ValueError("no frames to retarget")
    matched = pairs(src, tgt)

    tb_all = [pb.name for pb in target.pose.bones]
    t_index = {n: i for i, n in enumerate(tb_all)}
    s_index = {pb.name: i for i, pb in enumerate(source.pose.bones)}
    t_bones = target.data.bones
    rest = np.array([np.array(t_bones[n].matrix_local, np.float64) for n in tb_all])     # (B, 4, 4)
    parent = [t_index[t_bones[n].parent.name] if t_bones[n].parent else -1 for n in tb_all]
    rest_rel = np.array([np.linalg.inv(rest[p]) @ rest[i] if p >= 0 else rest[i] for i, p in enumerate(parent)])
    order = sorted(range(len(tb_all)), key=lambda i: len(t_bones[tb_all[i]].parent_recursive))
    a_t = np.array(target.matrix_world, np.float64)
    a_t_rot, a_t_inv = _rot_only(a_t), np.linalg.inv(a_t)
    a_s_rot = _rot_only(source.matrix_world)
    t_root = t_index[tgt.root]
    # Target world rotation per matched bone = delta_src @ C @ T_rest  ->  store C @ T_rest.
    goal = {t_index[tb]: (s_index[sb], c @ _rest_rot(target, tb), np.linalg.inv(_rest_rot(source, sb)))
            for sb, tb, c in matched}
    scale = tgt.leg_length / max(src.leg_length, 1e-9)
    s_origin = np.array(source.matrix_world.translation, np.float64)
    t_origin = np.array(target.matrix_world.translation, np.float64)
    t_root_rest_rot = _rest_rot(target, tgt.root)
    t_hip_offset = tgt.mid_hip - _head(target, tgt.root)                  # world, rest
    s_proj = projection.Projector(source, {"joints": _hips_only(src)})

    n_b, n_f = len(tb_all), len(frames)
    keyed = sorted(set(goal) | {t_root})
    s_pose = np.zeros((n_f, len(s_index), 4, 4))
    s_mid = np.zeros((n_f, 3))
    s_buf = np.empty(len(s_index) * 16, np.float32)
    current = scene.frame_current
    # The target's own action is replaced anyway: detach it while stepping the source, so the
    # depsgraph does not re-pose (and re-skin) the target every frame.
    t_ad = target.animation_data
    t_action = t_ad.action if t_ad is not None else None
    try:
        if t_action is not None:
            t_ad.action = None
        for fi, f in enumerate(frames):
            scene.frame_set(f)
            source.pose.bones.foreach_get("matrix", s_buf)
            s_pose[fi] = s_buf.reshape(-1, 4, 4).transpose(0, 2, 1)
            w, _ = s_proj.world_joints(s_pose[fi])
            s_mid[fi] = (w[joints.INDEX["left_hip"]] + w[joints.INDEX["right_hip"]]) / 2
    except BaseException:
        if t_action is not None:
            t_ad.action = t_action
        raise
    finally:
        scene.frame_set(current)

    # All frames at once, bone by bone from the root down: (N, 4, 4) per bone.
    pose = np.zeros((n_b, n_f, 4, 4))
    basis = np.zeros((n_b, n_f, 4, 4))
    s_rot = s_pose[:, :, :3, :3] / np.linalg.norm(s_pose[:, :, :3, :3], axis=2, keepdims=True)
    for i in order:
        m0 = pose[parent[i]] @ rest_rel[i] if parent[i] >= 0 else np.broadcast_to(rest_rel[i], (n_f, 4, 4)).copy()
        m = m0.copy()
        if i in goal:
            si, c_rest, s_rest_inv = goal[i]
            w_rot = a_s_rot @ s_rot[:, si] @ s_rest_inv @ c_rest              # (N, 3, 3) world
            m[:, :3, :3] = a_t_rot.T @ w_rot
            if i == t_root:
                mid = t_origin + scale * (s_mid - s_origin)                   # (N, 3)
                head = mid - np.einsum("nij,j->ni", w_rot @ t_root_rest_rot.T, t_hip_offset)
                m[:, :3, 3] = head @ a_t_inv[:3, :3].T + a_t_inv[:3, 3]
        pose[i] = m
        # basis = m0^-1 @ m, m0 rigid (rotation + translation)
        r0t = np.swapaxes(m0[:, :3, :3], 1, 2)
        basis[i, :, :3, :3] = r0t @ m[:, :3, :3]
        basis[i, :, :3, 3] = np.einsum("nij,nj->ni", r0t, m[:, :3, 3] - m0[:, :3, 3])
        basis[i, :, 3, 3] = 1.0
    rots = np.swapaxes(basis[keyed, :, :3, :3], 0, 1)                        # (N, K, 3, 3)
    locs = basis[t_root, :, :3, 3]
    try:
        action = _write_action(target, [tb_all[i] for i in keyed], frames, rots, locs, tb_all[t_root],
                               action_name or f"{target.name}<-{source.name}")
    except BaseException:
        if t_action is not None:
            t_ad.action = t_action
        raise
    scene.frame_set(current)
    bpy.context.view_layer.update()
    return action


def _hips_only(structure: Structure) -> dict:
    """A mapping with just the hips: the projector reads the source's mid-hip with it."""
    J = {}
    for s in ("left", "right"):
        b, _, _ = structure.parts[f"{s}_thigh"]
        J[f"{s}_hip"] = {"bone": b, "at": 0.0}
    return J


def _write_action(target, bone_names, frames, rots, locs, root_name, name):
    """A new layered action on the target: rotation_quaternion keys for each bone, location keys
    for the root, LINEAR between keys; unkeyed bones reset to rest."""
    import bpy
    from bpy_extras import anim_utils
    action = bpy.data.actions.new(name)
    slot = action.slots.new(id_type="OBJECT", name=target.name)
    bag = anim_utils.action_ensure_channelbag_for_slot(action, slot)
    xs = np.asarray(frames, np.float64)
    quats = np.stack([_continuous(_quat_from_matrix(rots[:, k])) for k in range(len(bone_names))], axis=1)

    def curve(path, index, values, group):
        fc = bag.fcurves.new(path, index=index, group_name=group)
        fc.keyframe_points.add(len(xs))
        co = np.empty(2 * len(xs))
        co[0::2], co[1::2] = xs, values
        fc.keyframe_points.foreach_set("co", co)
        fc.keyframe_points.foreach_set("interpolation", [bpy.types.Keyframe.bl_rna.properties["interpolation"]
                                                         .enum_items["LINEAR"].value] * len(xs))
        fc.update()

    for k, bn in enumerate(bone_names):
        pb = target.pose.bones[bn]
        pb.rotation_mode = "QUATERNION"
        path = pb.path_from_id("rotation_quaternion")
        for c in range(4):
            curve(path, c, quats[:, k, c], bn)
    root_path = target.pose.bones[root_name].path_from_id("location")
    for c in range(3):
        curve(root_path, c, locs[:, c], root_name)
    for pb in target.pose.bones:  # bones without keys keep their rest pose
        pb.matrix_basis.identity()
        pb.location, pb.scale = (0, 0, 0), (1, 1, 1)
        pb.rotation_quaternion = (1, 0, 0, 0)
        pb.rotation_euler = (0, 0, 0)
    ad = target.animation_data or target.animation_data_create()
    ad.action = action
    ad.action_slot = slot
    return action


def retarget_bvh(scene, path, target, target_mapping: dict | None = None, *, keep_source: bool = False):
    """Import a BVH and bake it onto `target` (the operator's one call); returns
    (action, (first, last) scene frames of the motion). The imported armature is deleted unless
    keep_source. The scene's frame range is left alone (the caller may set it to the motion's)."""
    import bpy
    source = bvh.import_bvh(path, scene)
    try:
        first, last = bvh.motion_range(source)
        action = retarget(scene, source, target, None, target_mapping, range(first, last + 1))
    finally:
        if not keep_source:
            data = source.data
            bpy.data.objects.remove(source)
            if data.users == 0:
                bpy.data.armatures.remove(data)
    return action, (first, last)
