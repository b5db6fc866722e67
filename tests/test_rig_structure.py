"""Auto-mapping by structure (issue 15): any humanoid rig maps, whatever its bones are called.

Shapes from the wild are built here as plain bone lists (what `engine.rig.structure` reads), named
b000, b001, ... so names cannot help; the real rigs and BVHs from ../shared are renamed the same
way in bpy and must project their 12 limb joints where their original names put them. Refusals:
four legs, a single chain, a rig lying on its back. `pix2dance map` prints and writes the mapping.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from engine.rig.structure import Bone, NotHumanoid, map_bones
from engine.wire import joints
from tests.conftest import sample

LIMBS = joints.CORE          # the 12 limb joints


# --- a humanoid from code ---------------------------------------------------------------------

def humanoid(*, clavicles=True, twist=None, hands="bone", spine=2, arms="T", facing="-y", named=False):
    """(bones, expected): a 1.8 m humanoid facing -Y (its left is +X) or +Y, as Bone records named
    b000, b001, ... (or by part with named=True), and the bone each limb joint must map to.

    twist: None, "chain" (limb segments split in two, Rigify-like) or "sibling" (a leaf twist bone
    beside each segment, Unreal-like); hands: "bone" (a hand bone with fingers) or "palms" (the
    forearm ends in palm bones, one per finger, no hand bone); spine: spine bones between hips and neck.
    """
    made: list[tuple[str, str | None, tuple, tuple]] = []
    expect: dict[str, str] = {}

    def add(key, parent, head, tail, joint=None):
        made.append((key, parent, head, tail))
        if joint:
            expect[joint] = key
        return key

    def segment(key, parent, a, b, joint=None):
        """A limb segment, split or with a twist sibling as asked; returns the last bone's key."""
        mid = tuple((x + y) / 2 for x, y in zip(a, b))
        if twist == "chain":
            first = add(key, parent, a, mid, joint)
            return add(f"{key}_twist", first, mid, b)
        bone = add(key, parent, a, b, joint)
        if twist == "sibling":
            add(f"{key}_roll", bone, mid, tuple(m + 0.9 * (y - m) for m, y in zip(mid, b)))
        return bone

    hips = add("hips", None, (0, 0, 1.0), (0, 0, 1.1))
    prev, z = hips, 1.1
    for i in range(spine):
        top = 1.1 + 0.35 * (i + 1) / spine
        prev = add(f"spine{i}", prev, (0, 0, z), (0, 0, top))
        z = top
    chest = prev
    neck = add("neck", chest, (0, 0, 1.45), (0, 0, 1.58))
    add("head", neck, (0, 0, 1.58), (0, 0, 1.8), "nose")
    for side, x in (("left", 1), ("right", -1)):
        root = chest
        shoulder = (0.17 * x, 0, 1.47)
        if clavicles:
            root = add(f"clavicle_{side}", chest, (0.03 * x, 0, 1.45), shoulder)
        if arms == "T":
            elbow, wrist, tip = (0.47 * x, 0, 1.47), (0.72 * x, 0, 1.47), (0.8 * x, 0, 1.47)
        else:
            elbow, wrist, tip = (0.2 * x, 0, 1.17), (0.22 * x, 0, 0.92), (0.22 * x, 0, 0.84)
        upper = segment(f"upperarm_{side}", root, shoulder, elbow, f"{side}_shoulder")
        fore = segment(f"forearm_{side}", upper, elbow, wrist, f"{side}_elbow")
        d = np.subtract(tip, wrist)
        knuckle = tuple(np.add(wrist, d))
        finger_tip = tuple(np.add(wrist, 1.9 * d))
        across = np.array([0.0, 0.025, 0.0])
        if hands == "bone":
            hand = add(f"hand_{side}", fore, wrist, knuckle, f"{side}_wrist")
            for k, dy in enumerate((-1, 0, 1)):
                f1 = add(f"finger{k}_{side}", hand, tuple(knuckle + dy * across), tuple(np.add(knuckle, 0.5 * d) + dy * across))
                add(f"finger{k}b_{side}", f1, tuple(np.add(knuckle, 0.5 * d) + dy * across), tuple(np.array(finger_tip) + dy * across))
        else:       # palms: one per finger from the wrist, the middle one at its centre
            for k, dy in enumerate((-1, 0, 1)):
                palm = add(f"palm{k}_{side}", fore, tuple(wrist + 0.3 * dy * across), tuple(knuckle + dy * across),
                           f"{side}_wrist" if dy == 0 else None)
                add(f"finger{k}_{side}", palm, tuple(knuckle + dy * across), tuple(np.array(finger_tip) + dy * across))
        thigh = segment(f"thigh_{side}", hips, (0.1 * x, 0, 0.95), (0.1 * x, 0, 0.52), f"{side}_hip")
        shin = segment(f"shin_{side}", thigh, (0.1 * x, 0, 0.52), (0.1 * x, 0.01, 0.09), f"{side}_knee")
        foot = add(f"foot_{side}", shin, (0.1 * x, 0.01, 0.09), (0.1 * x, -0.12, 0.02), f"{side}_ankle")
        add(f"toe_{side}", foot, (0.1 * x, -0.12, 0.02), (0.1 * x, -0.2, 0.0))
    turn = (lambda p: (-p[0], -p[1], p[2])) if facing == "+y" else (lambda p: tuple(p))
    rename = {key: (key if named else f"b{i:03d}") for i, (key, *_) in enumerate(made)}
    bones = [Bone(rename[k], rename[p] if p else None, turn(h), turn(t)) for k, p, h, t in made]
    return bones, {j: rename[k] for j, k in expect.items()}


def limb_bones(found: dict) -> dict[str, str]:
    return {j: found["joints"][j]["bone"] for j in LIMBS if j in found["joints"]}


@pytest.mark.parametrize("shape", [
    {},
    {"hands": "palms"},                        # arms ending in palms and fingers, no hand bone
    {"twist": "chain"},                        # twist bones along the limbs, in the chain
    {"twist": "sibling"},                      # roll bones beside the limbs
    {"spine": 7},                              # a long spine
    {"clavicles": False},                      # arms straight from the chest
    {"facing": "+y"},                          # facing +Y: its left is -X
    {"arms": "down"},                          # arms down in the rest pose
    {"hands": "palms", "twist": "chain", "clavicles": False, "facing": "+y", "arms": "down"},
])
def test_shapes_from_the_wild_map_by_structure(shape):
    bones, expect = humanoid(**shape)
    found = map_bones(bones)
    assert limb_bones(found) == {j: expect[j] for j in LIMBS}
    assert found["joints"]["nose"]["bone"] == expect["nose"]
    assert set(found["how"].values()) <= {"structure", "geometry"}          # b000 names say nothing
    assert found["joints"]["left_toe"]["bone"] != found["joints"]["right_toe"]["bone"]


def test_palms_give_the_wrist_by_geometry():
    found = map_bones(humanoid(hands="palms")[0])
    assert found["how"]["left_wrist"] == "geometry" and found["how"]["left_knee"] == "structure"


def test_names_agreeing_with_the_structure_say_name():
    found = map_bones(humanoid(named=True)[0])
    assert found["how"]["left_elbow"] == "name" and found["how"]["left_hip"] == "name"


def test_structure_wins_over_a_name_that_says_the_other_side():
    """A bone called 'left' on the right of the body maps to the right side."""
    bones, expect = humanoid(named=True)
    swap = {"upperarm_left": "upperarm_right", "upperarm_right": "upperarm_left"}
    bones = [Bone(swap.get(b.name, b.name), swap.get(b.parent, b.parent), b.head, b.tail) for b in bones]
    found = map_bones(bones)
    assert found["joints"]["right_shoulder"]["bone"] == "upperarm_left"     # at x < 0: its right
    assert found["joints"]["left_shoulder"]["bone"] == "upperarm_right"
    assert found["how"]["right_shoulder"] != "name" and found["how"]["left_shoulder"] != "name"
    assert found["how"]["right_elbow"] == "name"


def test_a_control_rig_maps_by_its_deforming_bones():
    """Rigify-like: a non-deforming copy of the skeleton (ORG-, MCH-) beside the deforming one
    would read as four legs; the deforming bones alone are the humanoid."""
    bones, expect = humanoid()
    copy = [Bone(f"ORG-{b.name}", f"ORG-{b.parent}" if b.parent else None, b.head, b.tail, deform=False) for b in bones]
    found = map_bones([Bone("root", None, (0, 0, 0), (0, 0.3, 0), deform=False)]
                      + [dataclasses.replace(b, parent=b.parent or "root") for b in bones]
                      + [dataclasses.replace(b, parent=b.parent or "root") for b in copy])
    assert limb_bones(found) == {j: expect[j] for j in LIMBS}


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text
    return text


def test_four_legs_are_refused():
    """A dog: hind legs from the pelvis, front legs from the chest, a horizontal spine."""
    bones = [Bone("pelvis", None, (0, 0.4, 0.6), (0, 0.2, 0.6)), Bone("spine", "pelvis", (0, 0.2, 0.6), (0, -0.4, 0.62)),
             Bone("neck", "spine", (0, -0.4, 0.62), (0, -0.55, 0.8)), Bone("head", "neck", (0, -0.55, 0.8), (0, -0.75, 0.82))]
    for side, x in (("l", 0.12), ("r", -0.12)):
        for part, parent, y in (("hind", "pelvis", 0.4), ("front", "spine", -0.4)):
            bones += [Bone(f"{part}_up_{side}", parent, (x, y, 0.6), (x, y, 0.3)),
                      Bone(f"{part}_low_{side}", f"{part}_up_{side}", (x, y, 0.3), (x, y, 0.05)),
                      Bone(f"{part}_paw_{side}", f"{part}_low_{side}", (x, y, 0.05), (x, y - 0.08, 0.0))]
    with pytest.raises(NotHumanoid) as e:
        map_bones(bones)
    assert "four legs" in _one_line(e)


def test_single_chain_is_refused():
    bones = [Bone(f"b{i}", f"b{i - 1}" if i else None, (0, 0, 0.3 * i), (0, 0, 0.3 * (i + 1))) for i in range(6)]
    with pytest.raises(NotHumanoid) as e:
        map_bones(bones)
    assert "single chain" in _one_line(e)


def test_lying_on_its_back_is_refused():
    bones, _ = humanoid()
    lie = lambda p: (p[0], -p[2], 0.1 - p[1])  # noqa: E731 - a quarter turn about X: head towards -Y, face up
    with pytest.raises(NotHumanoid) as e:
        map_bones([Bone(b.name, b.parent, lie(b.head), lie(b.tail)) for b in bones])
    assert "lying" in _one_line(e)


# --- real rigs through bpy ----------------------------------------------------------------------

RIGS = ["rigs/Xbot.glb", "rigs/Mannequin.glb", "mocap/cmu_01_01_jumps.bvh", "mocap/cmu_131_01_dance.bvh",
        "mocap/cmu_skeleton_example.bvh"]


def _import(relative: str):
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    path = str(sample(relative))
    if path.endswith(".bvh"):
        bpy.ops.import_anim.bvh(filepath=path)
    else:
        bpy.ops.import_scene.gltf(filepath=path)
    return bpy.context.scene, next(o for o in bpy.data.objects if o.type == "ARMATURE")


@pytest.mark.parametrize("rig", RIGS)
def test_real_rigs_renamed_map_by_structure_alone(rig):
    """Every bone renamed b000, b001, ...: all required joints still map, and the 12 limb joints
    project within a pixel of where the original names put them (512 x 512, posed frames)."""
    pytest.importorskip("bpy")
    from engine.rig import automap, camera, mapping, projection
    scene, arm = _import(rig)
    scene.render.resolution_x = scene.render.resolution_y = 512
    scene.render.resolution_percentage = 100
    ad = arm.animation_data
    a, b = (int(v) for v in ad.action.frame_range) if ad and ad.action else (1, 1)
    frames = sorted({a, (a + b) // 2, b})
    if len(frames) == 1 or rig.endswith(".glb"):    # no motion: a pose of our own, the same for both mappings
        rng = np.random.default_rng(0)
        for pb in arm.pose.bones:
            pb.rotation_mode = "XYZ"
            pb.rotation_euler = rng.uniform(-0.3, 0.3, 3)
        if ad is not None:
            ad.action = None
    original = automap.auto_map(arm)
    assert [original["how"][j] for j in LIMBS] == ["name"] * 12          # the names' own reading
    cam = camera.frame_camera(scene, arm, frames, original)
    before = projection.project_frames(scene, arm, cam, original, frames)
    for i, bone in enumerate(list(arm.data.bones)):
        bone.name = f"b{i:03d}"
    renamed = automap.auto_map(arm)
    assert mapping.required_missing(renamed, arm) == []
    assert set(renamed["how"].values()) <= {"structure", "geometry"} and renamed["preset"] == "auto"
    after = projection.project_frames(scene, arm, cam, renamed, frames)
    limbs = [joints.INDEX[j] for j in LIMBS]
    assert (before[:, limbs, 2] == 1).all()
    assert np.abs(after[:, limbs, :2] - before[:, limbs, :2]).max() <= 1.0


def test_armature_object_turned_to_face_plus_y():
    """A bpy armature built facing -Y, its object turned half a turn: its left is world -X now,
    read through matrix_world."""
    bpy = pytest.importorskip("bpy")
    from engine.rig import automap
    from tests.test_mapping import build_rig, empty_scene
    empty_scene()
    bones, expect = humanoid()
    arm = build_rig({b.name: (b.parent, b.head, b.tail) for b in bones})
    arm.rotation_euler = (0.0, 0.0, math.pi)
    bpy.context.view_layer.update()
    found = automap.auto_map(arm)
    assert limb_bones(found) == {j: expect[j] for j in LIMBS}


def test_auto_map_refuses_a_non_humanoid_armature():
    bpy = pytest.importorskip("bpy")
    from engine.rig import automap
    from tests.test_mapping import build_rig, empty_scene
    empty_scene()
    arm = build_rig({f"b{i}": (f"b{i - 1}" if i else None, (0, 0, 0.3 * i), (0, 0, 0.3 * (i + 1))) for i in range(6)})
    with pytest.raises(ValueError, match="is not a humanoid rig: .*single chain"):
        automap.auto_map(arm)
    del bpy


# --- pix2dance map ------------------------------------------------------------------------------

def pix2dance(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "map", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_map_command_prints_and_writes_the_mapping(tmp_path):
    pytest.importorskip("bpy")
    out = tmp_path / "xbot.json"
    r = pix2dance(sample("rigs/Xbot.glb"), "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "preset mixamo" in lines[0]
    row = next(line.split() for line in lines if line.startswith("left_wrist"))
    assert row == ["left_wrist", "mixamorig:LeftHand", "0", "name"]
    saved = json.loads(out.read_text())
    assert saved["joints"]["left_knee"]["bone"] == "mixamorig:LeftLeg" and saved["how"]["left_knee"] == "name"
    from engine.rig import mapping
    assert mapping.load_mapping(out)["preset"] == "mixamo"          # what render --mapping reads


def test_map_command_refuses_a_non_humanoid_and_writes_nothing(tmp_path):
    pytest.importorskip("bpy")
    lines = ["HIERARCHY", "ROOT b0", "{", "  OFFSET 0 0 0", "  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"]
    depth = 1
    for i in range(1, 5):
        lines += ["  " * depth + f"JOINT b{i}", "  " * depth + "{", "  " * (depth + 1) + "OFFSET 0 10 0",
                  "  " * (depth + 1) + "CHANNELS 3 Zrotation Xrotation Yrotation"]
        depth += 1
    lines += ["  " * depth + "End Site", "  " * depth + "{", "  " * (depth + 1) + "OFFSET 0 10 0", "  " * depth + "}"]
    for d in range(depth - 1, -1, -1):
        lines.append("  " * d + "}")
    lines += ["MOTION", "Frames: 2", "Frame Time: 0.033333", " ".join(["0"] * 18), " ".join(["0"] * 18)]
    bvh = tmp_path / "chain.bvh"
    bvh.write_text("\n".join(lines) + "\n")
    out = tmp_path / "chain.json"
    r = pix2dance(bvh, "--out", out)
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.count("\n") == 1 and "not a humanoid rig" in r.stderr and "Traceback" not in r.stderr
    r = pix2dance(tmp_path / "missing.glb")
    assert r.returncode == 2 and "not found" in r.stderr
