"""Retargeting: a CMU BVH baked onto the Mixamo Xbot follows the mocap (projected joints and bone
directions, after scale normalization); BVH import resamples to the scene's frame rate; files are
checked before Blender touches them; frame_camera sees the whole motion. bpy 5.0.1 headless."""

from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from engine.rig import automap  # noqa: E402
from engine.rig import bvh as B  # noqa: E402
from engine.rig import camera  # noqa: E402
from engine.rig import projection as P  # noqa: E402
from engine.rig import retarget as R  # noqa: E402
from engine.wire import joints  # noqa: E402
from engine.data import skeleton
from tests.conftest import sample  # noqa: E402
from tests.test_mapping import empty_scene  # noqa: E402

FRAMES = list(range(1, 97, 3))  # 32 frames spread over 4 s of the dance at 24 fps
BODY = [joints.INDEX[n] for n in joints.CORE]
SEGMENTS = [(joints.INDEX[a], joints.INDEX[b]) for a, b, _ in joints.BONES
            if a in joints.CORE and b in joints.CORE]


def normalized(kp: np.ndarray) -> np.ndarray:
    """(N, J, 3) pixels -> (N, J, 2) about the mid-hip, in body heights (joints.body_height)."""
    centre = kp[:, joints.INDEX["mid_hip"], None, :2]
    height = np.array([joints.body_height(f) for f in kp], np.float64)[:, None, None]
    return (kp[:, :, :2] - centre) / height


def directions(kp: np.ndarray) -> np.ndarray:
    """(N, S, 2) unit image directions of the limb segments."""
    v = np.stack([kp[:, b, :2] - kp[:, a, :2] for a, b in SEGMENTS], axis=1)
    return v / np.linalg.norm(v, axis=2, keepdims=True)


@pytest.mark.parametrize("bvh", ["mocap/cmu_131_01_dance.bvh", "mocap/cmu_01_01_jumps.bvh"])
def test_bvh_onto_xbot_follows_mocap(bvh):
    scene = empty_scene()
    bpy.ops.import_scene.gltf(filepath=str(sample("rigs/Xbot.glb")))
    xbot = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    src = B.import_bvh(sample(bvh), scene, scale=0.056)
    action = R.retarget(scene, src, xbot, frames=FRAMES)
    assert xbot.animation_data.action == action
    curves = B.fcurves(action)
    assert curves and all(len(fc.keyframe_points) == len(FRAMES) for fc in curves)
    assert any(fc.data_path.endswith('"mixamorig:Hips"].location') for fc in curves)

    cam = camera.frame_camera(scene, src, FRAMES)
    src_kp = P.project_frames(scene, src, cam, automap.auto_map(src), FRAMES)
    rig_kp = P.project_frames(scene, xbot, cam, automap.auto_map(xbot), FRAMES)
    assert (src_kp[:, BODY, 2] == 1).all() and (rig_kp[:, BODY, 2] == 1).all()
    # Joints within a small fraction of body height (the rigs' proportions differ a little).
    err = np.linalg.norm(normalized(src_kp)[:, BODY] - normalized(rig_kp)[:, BODY], axis=2)
    assert err.mean() < 0.08 and np.percentile(err, 95) < 0.16, (err.mean(), err.max())
    # Every limb segment points the same way in the picture.
    cos = (directions(src_kp) * directions(rig_kp)).sum(axis=2)
    assert cos.mean() > 0.95 and np.percentile(cos, 5) > 0.8, (cos.mean(), cos.min())
    # The motion is real: the dancer's pose changes over the frames, and the rig's with it.
    moved = np.linalg.norm(normalized(src_kp)[1:, BODY] - normalized(src_kp)[:-1, BODY], axis=2).mean()
    assert moved > 0.01
    # Facing agrees frame by frame (front stays front).
    same = [np.sign(skeleton.facing(a)) == np.sign(skeleton.facing(b)) for a, b in zip(src_kp, rig_kp)
            if abs(skeleton.facing(a)) > 0.3]
    assert np.mean(same) > 0.95


def test_import_resamples_to_scene_fps():
    scene = empty_scene()
    path = sample("mocap/cmu_131_01_dance.bvh")  # 994 frames at 120 fps = 8.28 s
    info = B.read(path)
    assert (info.frames, info.frame_time, info.channels) == (994, pytest.approx(1 / 120, rel=1e-3), 96)
    scene.render.fps, scene.render.fps_base = 24, 1.0
    a = B.import_bvh(path, scene)
    assert B.motion_range(a) == (1, 199) and scene.render.fps == 24
    scene.render.fps, scene.render.fps_base = 30, 1.001  # 29.97 fps
    b = B.import_bvh(path, scene, frame_start=10)
    first, last = B.motion_range(b)
    assert first == 10 and abs(last - (10 + 993 * 0.0083333 * 30 / 1.001)) < 1.01
    assert scene.frame_start == 1 and scene.frame_end == 250  # the scene's range is left alone
    # The same instant of the capture is the same pose at both rates: BVH frame 600 = 5 s.
    m = automap.auto_map(a)
    cam = camera.frame_camera(scene, a, [1])
    pa = P.Projector(a, m)
    pb = P.Projector(b, m)
    scene.frame_set(1 + 120)     # 24 fps: 5 s after frame 1
    wa = pa.world_joints()[0]
    scene.frame_set(10 + 150)    # ~29.97 fps: 150 frames = 5.005 s, close to the same instant
    wb = pb.world_joints()[0]
    assert np.nanmax(np.abs(wa - wb)) < 0.05 * 30  # CMU units (~30 tall): small drift within 5 ms
    assert cam.type == "CAMERA"


def test_frame_camera_sees_whole_motion():
    scene = empty_scene()
    src = B.import_bvh(sample("mocap/cmu_01_01_jumps.bvh"), scene)
    frames = list(range(1, 300, 10))
    cam = camera.frame_camera(scene, src, frames, margin=0.1)
    assert scene.camera == cam
    kp = P.project_frames(scene, src, cam, automap.auto_map(src), frames)
    w, h = P.render_size(scene)
    body = kp[:, BODY]
    assert (body[..., 2] == 1).all()
    assert body[..., 0].min() > 0.05 * w and body[..., 0].max() < 0.95 * w
    assert body[..., 1].min() > 0.05 * h and body[..., 1].max() < 0.95 * h
    # Tight: the motion fills most of the frame in one direction at least.
    span = max((body[..., 0].max() - body[..., 0].min()) / w, (body[..., 1].max() - body[..., 1].min()) / h)
    assert span > 0.6
    assert skeleton.facing(kp[0]) > 0.5  # a front camera
    again = camera.frame_camera(scene, src, frames)
    assert again == cam and len([o for o in bpy.data.objects if o.type == "CAMERA"]) == 1


def test_files_are_checked(tmp_path):
    empty_scene()
    with pytest.raises(ValueError, match="not found"):
        B.import_bvh(tmp_path / "missing.bvh")
    txt = tmp_path / "motion.txt"
    txt.write_text("HIERARCHY\n")
    with pytest.raises(ValueError, match="not a BVH file"):
        B.import_bvh(txt)
    fake = tmp_path / "fake.bvh"
    fake.write_text("hello\n")
    with pytest.raises(ValueError, match="does not start with HIERARCHY"):
        B.import_bvh(fake)
    cut = tmp_path / "cut.bvh"
    cut.write_text("HIERARCHY\nROOT Hips\n{\n")
    with pytest.raises(ValueError, match="without a MOTION"):
        B.import_bvh(cut)
    good = sample("mocap/cmu_skeleton_example.bvh").read_text().splitlines()
    short = tmp_path / "short.bvh"  # a motion line lost two values
    lines = list(good)
    first_motion = next(i for i, ln in enumerate(lines) if ln.lower().startswith("frame time")) + 1
    lines[first_motion + 5] = " ".join(lines[first_motion + 5].split()[:-2])
    short.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="motion line 6 has 94 values, the hierarchy has 96 channels"):
        B.import_bvh(short)
    few = tmp_path / "few.bvh"  # fewer lines than Frames says
    few.write_text("\n".join(good[:first_motion + 10]) + "\n")
    with pytest.raises(ValueError, match="says 278 frames but has 10 motion lines"):
        B.import_bvh(few)
    assert not [o for o in bpy.data.objects]  # nothing was imported


def test_retarget_refuses_bad_input():
    scene = empty_scene()
    src = B.import_bvh(sample("mocap/cmu_131_01_dance.bvh"), scene)
    with pytest.raises(ValueError, match="target armature"):
        R.retarget(scene, src, None)
    with pytest.raises(ValueError, match="same armature"):
        R.retarget(scene, src, src)
    partial = {"preset": "x", "joints": {"left_shoulder": {"bone": "LeftShoulder", "at": 0.0}}}
    with pytest.raises(ValueError, match="mapping lacks"):
        R.retarget(scene, src, bpy.data.objects.new("t", bpy.data.armatures.new("t")), None, partial)


def test_retarget_bvh_one_call():
    """The operator's call: import, bake the whole motion at the scene's rate, drop the import."""
    scene = empty_scene()
    bpy.ops.import_scene.gltf(filepath=str(sample("rigs/Xbot.glb")))
    xbot = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    old = xbot.animation_data.action
    action, (first, last) = R.retarget_bvh(scene, sample("mocap/cmu_skeleton_example.bvh"), xbot)
    assert (first, last) == (1, 1 + int(277 / 120 * 24))   # 278 frames at 120 fps -> 24 fps
    assert xbot.animation_data.action == action != old
    assert action.frame_range[:] == pytest.approx((first, last))
    assert [o.type for o in bpy.data.objects].count("ARMATURE") == 1  # the BVH armature is gone
    # The rig moves: its wrists are somewhere else at the end than at the start.
    m = automap.auto_map(xbot)
    proj = P.Projector(xbot, m)
    scene.frame_set(first)
    a = proj.world_joints()[0]
    scene.frame_set(last)
    b = proj.world_joints()[0]
    assert np.nanmax(np.linalg.norm(a - b, axis=1)) > 0.05


def test_fractional_frames_sample_between_keys():
    scene = empty_scene()
    src = B.import_bvh(sample("mocap/cmu_skeleton_example.bvh"), scene)
    m = automap.auto_map(src)
    w = P.world_frames(scene, src, m, [10, 10.5, 11])
    cam = camera.frame_camera(scene, src, [10, 11])
    kp = P.project_frames(scene, src, cam, m, [10, 10.5, 11])
    moved = np.nanmax(np.abs(w[2] - w[0]))
    assert moved > 0.05
    assert np.nanmax(np.abs(w[1] - (w[0] + w[2]) / 2)) < 0.25 * moved    # about halfway
    assert np.abs(kp[1, BODY, :2] - kp[0, BODY, :2]).max() > 0.1
    assert scene.frame_current == 1
