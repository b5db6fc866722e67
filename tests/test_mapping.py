"""Bone mapping: presets and auto-detection on real rigs (Mixamo glTF, both CMU BVH naming styles)
and on hand-built rigs with generic names. bpy 5.0.1 headless."""

from __future__ import annotations

import json

import pytest

bpy = pytest.importorskip("bpy")

from engine.rig import anchors, automap, names  # noqa: E402
from engine.rig import mapping as M  # noqa: E402
from engine.wire import joints  # noqa: E402
from tests.conftest import sample  # noqa: E402


def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def load_rig(relative: str):
    """Import a rig or BVH from ../shared/data into an empty scene; returns the armature object."""
    empty_scene()
    path = str(sample(relative))
    if path.endswith(".bvh"):
        bpy.ops.import_anim.bvh(filepath=path)
    else:
        bpy.ops.import_scene.gltf(filepath=path)
    return next(o for o in bpy.data.objects if o.type == "ARMATURE")


# A small humanoid facing -Y (Blender's front view), metres, Z up: name -> (parent, head, tail).
def humanoid(names: dict[str, str] | None = None):
    n = {"hips": "Hips", "spine": "Spine", "head": "Head", "ua_l": "UpperArm_L", "la_l": "LowerArm_L",
         "hand_l": "Hand_L", "ua_r": "UpperArm_R", "la_r": "LowerArm_R", "hand_r": "Hand_R",
         "th_l": "UpperLeg_L", "sh_l": "LowerLeg_L", "ft_l": "Foot_L", "toe_l": "Toe_L",
         "th_r": "UpperLeg_R", "sh_r": "LowerLeg_R", "ft_r": "Foot_R", "toe_r": "Toe_R",
         "cl_l": "Clavicle_L", "cl_r": "Clavicle_R"}
    n.update(names or {})
    bones = {
        "hips": (None, (0, 0, 1.0), (0, 0, 1.1)),
        "spine": ("hips", (0, 0, 1.1), (0, 0, 1.5)),
        "head": ("spine", (0, 0, 1.6), (0, 0, 1.85)),
    }
    for s, x in (("l", 1), ("r", -1)):
        bones.update({
            f"cl_{s}": ("spine", (0.05 * x, 0, 1.5), (0.2 * x, 0, 1.5)),
            f"ua_{s}": (f"cl_{s}", (0.2 * x, 0, 1.5), (0.5 * x, 0, 1.5)),
            f"la_{s}": (f"ua_{s}", (0.5 * x, 0, 1.5), (0.8 * x, 0, 1.5)),
            f"hand_{s}": (f"la_{s}", (0.8 * x, 0, 1.5), (0.9 * x, 0, 1.5)),
            f"th_{s}": ("hips", (0.1 * x, 0, 1.0), (0.1 * x, 0, 0.55)),
            f"sh_{s}": (f"th_{s}", (0.1 * x, 0, 0.55), (0.1 * x, 0, 0.1)),
            f"ft_{s}": (f"sh_{s}", (0.1 * x, 0, 0.1), (0.1 * x, -0.12, 0.02)),
            f"toe_{s}": (f"ft_{s}", (0.1 * x, -0.12, 0.02), (0.1 * x, -0.2, 0.0)),
        })
    return {n[k]: (n[p] if p else None, head, tail) for k, (p, head, tail) in bones.items()}


def build_rig(bones: dict, name: str = "Rig"):
    """An armature object from name -> (parent, head, tail), in the current scene."""
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    made = {}
    for bone_name, (parent, head, tail) in bones.items():
        eb = data.edit_bones.new(bone_name)
        eb.head, eb.tail = head, tail
        made[bone_name] = eb
    for bone_name, (parent, _, _) in bones.items():
        if parent:
            made[bone_name].parent = made[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def bones_of(m):
    return {j: e["bone"] for j, e in m["joints"].items()}


@pytest.mark.parametrize("rig", ["rigs/Xbot.glb", "rigs/Mannequin.glb"])
def test_auto_map_mixamo_glb(rig):
    arm = load_rig(rig)
    m = automap.auto_map(arm)
    assert m["preset"] == "mixamo"
    assert M.required_missing(m) == [] and M.missing_joints(m) == []
    b = bones_of(m)
    assert b["left_shoulder"] == "mixamorig:LeftArm" and b["right_shoulder"] == "mixamorig:RightArm"
    assert b["left_elbow"] == "mixamorig:LeftForeArm" and b["right_wrist"] == "mixamorig:RightHand"
    assert b["left_hip"] == "mixamorig:LeftUpLeg" and b["right_knee"] == "mixamorig:RightLeg"
    assert b["left_ankle"] == "mixamorig:LeftFoot" and b["nose"] == "mixamorig:Head"
    assert "neck" not in m["joints"] and "mid_hip" not in m["joints"]  # always derived
    rest = anchors.rest_positions(arm, m)
    # The rig faces -Y: its left is +X, the nose in front of the ears, heels behind the toes.
    assert rest["left_wrist"].x > 0.5 > -0.5 > rest["right_wrist"].x
    assert rest["nose"].y < rest["left_ear"].y and rest["left_toe"].y < rest["left_heel"].y
    assert abs(rest["left_heel"].z) < 0.03 and rest["nose"].z > rest["neck"].z
    # neck is the shoulders' midpoint
    assert (rest["neck"] - (rest["left_shoulder"] + rest["right_shoulder"]) / 2).length < 1e-6


def test_auto_map_cmu_shoulder_is_upper_arm():
    """cmu_131_01_dance: LeftCollar is the clavicle, LeftShoulder the upper arm."""
    arm = load_rig("mocap/cmu_131_01_dance.bvh")
    m = automap.auto_map(arm)
    assert M.required_missing(m) == []
    b = bones_of(m)
    assert (b["left_shoulder"], b["left_elbow"], b["left_wrist"]) == ("LeftShoulder", "LeftElbow", "LeftWrist")
    assert (b["right_shoulder"], b["right_elbow"], b["right_wrist"]) == ("RightShoulder", "RightElbow", "RightWrist")
    assert (b["left_hip"], b["left_knee"], b["left_ankle"]) == ("LeftHip", "LeftKnee", "LeftAnkle")
    assert b["right_toe"] == "RightToe" and m["joints"]["right_toe"]["at"] == 1.0
    assert b["nose"] == "Head"


def test_auto_map_cmu_shoulder_is_clavicle():
    """cmu_01_01_jumps: LeftShoulder is the clavicle, LeftArm the upper arm (as in Mixamo)."""
    arm = load_rig("mocap/cmu_01_01_jumps.bvh")
    m = automap.auto_map(arm)
    assert m["preset"] == "cmu_bvh" and M.required_missing(m) == []
    b = bones_of(m)
    assert (b["left_shoulder"], b["left_elbow"], b["left_wrist"]) == ("LeftArm", "LeftForeArm", "LeftHand")
    assert (b["right_shoulder"], b["right_elbow"], b["right_wrist"]) == ("RightArm", "RightForeArm", "RightHand")
    assert (b["left_hip"], b["left_knee"], b["left_ankle"]) == ("LeftUpLeg", "LeftLeg", "LeftFoot")
    # The hierarchy walk agrees with the preset on its own.
    assert bones_of(automap.auto_map(arm, names=False)) == b


@pytest.mark.parametrize("style", [
    {},  # UpperArm_L, LowerLeg_L ...
    {"ua_l": "upper_arm.L", "la_l": "forearm.L", "hand_l": "hand.L", "ua_r": "upper_arm.R", "la_r": "forearm.R",
     "hand_r": "hand.R", "th_l": "thigh.L", "sh_l": "shin.L", "ft_l": "foot.L", "th_r": "thigh.R", "sh_r": "shin.R",
     "ft_r": "foot.R", "toe_l": "toe.L", "toe_r": "toe.R", "cl_l": "shoulder.L", "cl_r": "shoulder.R"},
    {"ua_l": "LeftArm", "la_l": "LeftForeArm", "hand_l": "LeftHand", "ua_r": "RightArm", "la_r": "RightForeArm",
     "hand_r": "RightHand", "th_l": "LeftUpLeg", "sh_l": "LeftLeg", "ft_l": "LeftFoot", "th_r": "RightUpLeg",
     "sh_r": "RightLeg", "ft_r": "RightFoot", "toe_l": "LeftToeBase", "toe_r": "RightToeBase",
     "cl_l": "LeftShoulder", "cl_r": "RightShoulder"},
    # Names that say nothing about the limb part: only the hierarchy walk can map the arms.
    {"ua_l": "L_Bone1", "la_l": "L_Bone2", "ua_r": "R_Bone1", "la_r": "R_Bone2", "cl_l": "L_Bone0", "cl_r": "R_Bone0"},
])
def test_auto_map_generic_names(style):
    empty_scene()
    bones = humanoid(style)
    arm = build_rig(bones)
    m = automap.auto_map(arm)
    assert M.required_missing(m) == [], m
    b = bones_of(m)
    names = humanoid(style)  # the same dict: find the upper arm by its head position
    upper_l = next(n for n, (_, head, _) in names.items() if head == (0.2, 0, 1.5))
    hand_l = next(n for n, (_, head, _) in names.items() if head == (0.8, 0, 1.5))
    shin_r = next(n for n, (_, head, _) in names.items() if head == (-0.1, 0, 0.55))
    assert b["left_shoulder"] == upper_l and b["left_wrist"] == hand_l and b["right_knee"] == shin_r


def test_twist_segments_are_skipped():
    """Rigify-like DEF bones with .001 twist segments: the elbow is the forearm's first segment."""
    empty_scene()
    bones = {"DEF-spine": (None, (0, 0, 1.0), (0, 0, 1.5)), "DEF-spine.006": ("DEF-spine", (0, 0, 1.6), (0, 0, 1.85))}
    for s, x in (("L", 1), ("R", -1)):
        bones.update({
            f"DEF-upper_arm.{s}": ("DEF-spine", (0.2 * x, 0, 1.5), (0.35 * x, 0, 1.5)),
            f"DEF-upper_arm.{s}.001": (f"DEF-upper_arm.{s}", (0.35 * x, 0, 1.5), (0.5 * x, 0, 1.5)),
            f"DEF-forearm.{s}": (f"DEF-upper_arm.{s}.001", (0.5 * x, 0, 1.5), (0.65 * x, 0, 1.5)),
            f"DEF-forearm.{s}.001": (f"DEF-forearm.{s}", (0.65 * x, 0, 1.5), (0.8 * x, 0, 1.5)),
            f"DEF-hand.{s}": (f"DEF-forearm.{s}.001", (0.8 * x, 0, 1.5), (0.9 * x, 0, 1.5)),
            f"DEF-thigh.{s}": ("DEF-spine", (0.1 * x, 0, 1.0), (0.1 * x, 0, 0.77)),
            f"DEF-thigh.{s}.001": (f"DEF-thigh.{s}", (0.1 * x, 0, 0.77), (0.1 * x, 0, 0.55)),
            f"DEF-shin.{s}": (f"DEF-thigh.{s}.001", (0.1 * x, 0, 0.55), (0.1 * x, 0, 0.32)),
            f"DEF-shin.{s}.001": (f"DEF-shin.{s}", (0.1 * x, 0, 0.32), (0.1 * x, 0, 0.1)),
            f"DEF-foot.{s}": (f"DEF-shin.{s}.001", (0.1 * x, 0, 0.1), (0.1 * x, -0.12, 0.02)),
            f"DEF-toe.{s}": (f"DEF-foot.{s}", (0.1 * x, -0.12, 0.02), (0.1 * x, -0.2, 0.0)),
        })
    arm = build_rig(bones)
    for m in (automap.auto_map(arm), automap.auto_map(arm, names=False)):
        b = bones_of(m)
        assert (b["left_shoulder"], b["left_elbow"], b["left_wrist"]) == ("DEF-upper_arm.L", "DEF-forearm.L", "DEF-hand.L")
        assert (b["right_hip"], b["right_knee"]) == ("DEF-thigh.R", "DEF-shin.R")
    assert automap.auto_map(arm)["preset"] == "rigify"


def test_missing_joints_and_files(tmp_path):
    m = {"preset": "x", "joints": {"left_shoulder": {"bone": "a", "at": 0.0}, "right_shoulder": {"bone": "b", "at": 0.0}}}
    missing = M.missing_joints(m)
    assert "neck" not in missing and "mid_hip" in missing and "left_shoulder" not in missing
    req = M.required_missing(m)
    assert req[0] == "right_elbow" and "left_shoulder" not in req and len(req) == len(joints.CORE) - 2
    path = tmp_path / "map.json"
    M.save_mapping(m, path)
    assert M.load_mapping(path) == m and json.loads(path.read_text())["preset"] == "x"
    bad = tmp_path / "bad.json"
    bad.write_text('{"joints": {"left_toes": {"bone": "a"}}}')
    with pytest.raises(ValueError, match="unknown joint 'left_toes'"):
        M.load_mapping(bad)
    bad.write_text('{"joints": {"nose": {"bone": "a", "at": 2}}}')
    with pytest.raises(ValueError, match="'at' must be"):
        M.load_mapping(bad)
    with pytest.raises(ValueError, match="not found"):
        M.load_mapping(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="no mapping preset"):
        M.load_preset("nope")


def test_presets_are_valid():
    assert M.list_presets()[:4] == ["mixamo", "rigify", "cmu_bvh", "generic"]
    for name in M.list_presets():
        p = M.load_preset(name)
        assert p["preset"] == name
        assert set(p["joints"]) <= set(M.MAPPABLE), name
        assert set(joints.CORE) <= set(p["joints"]), name


def test_names():
    assert names.tokens("mixamorig:LeftUpLeg") == ["left", "up", "leg"]
    assert names.side_of("thigh.L") == "left" and names.side_of("UpperArm_R") == "right" and names.side_of("Spine") is None
    assert names.side_of("LHipJoint") == "left" and names.stem("DEF-upper_arm.L.001") == "upper arm"


def test_eye_bones_and_face_model():
    """Eye bones, when present, give the eyes; nose and ears come from the head bone's face model,
    in front of / beside the head whatever the head bone's roll."""
    empty_scene()
    bones = humanoid()
    bones["LeftEye"] = ("Head", (0.03, -0.09, 1.72), (0.03, -0.12, 1.72))
    bones["RightEye"] = ("Head", (-0.03, -0.09, 1.72), (-0.03, -0.12, 1.72))
    arm = build_rig(bones)
    bpy.ops.object.mode_set(mode="EDIT")
    arm.data.edit_bones["Head"].roll = 1.3  # an arbitrary roll must not move the face
    bpy.ops.object.mode_set(mode="OBJECT")
    m = automap.auto_map(arm)
    assert m["joints"]["left_eye"]["bone"] == "LeftEye" and m["joints"]["nose"]["bone"] == "Head"
    rest = anchors.rest_positions(arm, m)
    assert (rest["left_eye"] - bpy.data.objects["Rig"].data.bones["LeftEye"].head_local).length < 1e-6
    assert rest["nose"].y < -0.1 and abs(rest["nose"].x) < 1e-6 and 1.6 < rest["nose"].z < 1.85
    assert rest["left_ear"].x > 0.08 and rest["right_ear"].x < -0.08
    assert rest["left_heel"].y > rest["left_ankle"].y and abs(rest["left_heel"].z) < 1e-6


def test_renamed_bone_counts_as_missing():
    empty_scene()
    arm = build_rig(humanoid())
    m = automap.auto_map(arm)
    assert M.required_missing(m, arm) == [] and M.missing_bones(m, arm) == {}
    arm.data.bones["Hand_L"].name = "Hand_L_renamed"
    assert M.required_missing(m) == []                       # the mapping alone looks complete
    assert M.required_missing(m, arm) == ["left_wrist"]      # but the rig lacks the bone
    assert M.missing_bones(m, arm) == {"left_wrist": "Hand_L"}
