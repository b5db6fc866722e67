"""Motion sources for `render`: file checks, frame selection and resampling, each source to keypoints.

Real data throughout: the CMU BVH from ../shared, a .blend built here with bpy, a real video with
the lite MediaPipe model. bpy runs in this process (each load resets its scene).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from engine import motion
from engine.motion import bvh as motion_bvh
from engine.motion import source, video
from engine.quiet import quiet_fds
from engine.data import normalize
from engine.errors import UserError
from engine.wire.joints import CORE, INDEX, NUM_JOINTS, VISIBLE
from tests.conftest import sample, standing_pose

CMU = "mocap/cmu_131_01_dance.bvh"
_CORE = [INDEX[n] for n in CORE]


# --- frame arithmetic ---------------------------------------------------------------------------

def test_frames_range_is_one_based_and_inclusive():
    total = source.frame_count(10.0, 10)            # 10 s at 10 fps, both ends: 101 frames
    assert total == 101
    assert source.select(total, (1, 40), 10, "x") == (0, 40)       # --fps 10 --frames 1:40: 40 frames
    assert source.select(total, None, 10, "x") == (0, 101)
    assert source.select(total, (101, 101), 10, "x") == (100, 101)
    with pytest.raises(UserError, match="beyond the end"):
        source.select(total, (1, 102), 10, "x")
    with pytest.raises(UserError, match="numbered from 1"):
        source.select(total, (0, 5), 10, "x")


def test_interpolate_is_exact_on_frames_and_linear_between():
    kp = np.zeros((3, NUM_JOINTS, 3), np.float32)
    kp[:, :, 0] = np.array([0, 10, 30])[:, None]
    kp[:, :, 2] = [[1], [1], [0]]
    out = source.interpolate(kp, np.array([0, 0.5, 1, 1.5, 2]))
    np.testing.assert_allclose(out[:, 0, 0], [0, 5, 10, 20, 30])
    np.testing.assert_allclose(out[:, 0, 2], [1, 1, 1, 0, 0])      # visibility: the lower neighbour


def test_gaps_are_bridged_only_when_short():
    kp = np.stack([standing_pose(256)] * 10)
    kp[:, :, 0] += np.arange(10)[:, None] * 4
    found = np.ones(10, bool)
    found[[3, 4]] = False
    found[7:] = False
    kp[~found] = 0
    out = video.fill_gaps(kp, found, max_gap=2)
    np.testing.assert_allclose(out[3:5, 0, 0], kp[2, 0, 0] + [4, 8])   # interpolated
    np.testing.assert_allclose(out[7:9], kp[[6, 6]])                   # held at the end, 2 frames
    assert out[9].max() == 0                                            # too far: left empty


def test_pick_person_follows_the_dancer_not_the_bigger_stranger():
    dancer = standing_pose(256)
    stranger = standing_pose(256) * np.array([1.5, 1.5, 1], np.float32) + np.array([200, 0, 0], np.float32)
    assert video.pick_person([dancer, stranger], None) is stranger            # first frame: the biggest
    moved = dancer + np.array([3, 0, 0], np.float32)
    assert video.pick_person([stranger, moved], dancer) is moved              # then: the nearest


# --- file checks --------------------------------------------------------------------------------

def test_real_bvh_passes_the_check():
    info = motion_bvh.check(sample(CMU))
    assert info.frames == 994 and info.fps == pytest.approx(120, rel=1e-3)
    assert info.joints[0] == "Hips" and info.channels > 90


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.replace("HIERARCHY", "HIERARCHX", 1), "no HIERARCHY"),
    (lambda t: t[: t.index("MOTION")], "no MOTION"),
    (lambda t: t.rsplit("\n", 200)[0], "motion lines, the header says"),
    (lambda t: t.replace("Frame Time:", "Frametime:", 1), "Frame Time"),
    (lambda t: t + "\n1 2 3\n", "values, the hierarchy has"),
    (lambda t: t.replace("CHANNELS 3", "CHANNELS 4", 1), "CHANNELS count"),
    (lambda t: (lambda head, last: f"{head}\nabc {last.split(' ', 1)[1]}")(*t.rstrip().rsplit("\n", 1)),
     "'abc' is not a number"),
])
def test_broken_bvh_is_refused_with_a_reason(tmp_path, damage, message):
    bad = tmp_path / "bad.bvh"
    bad.write_text(damage(sample(CMU).read_text()))
    with pytest.raises(UserError, match=message):
        motion_bvh.check(bad)


def test_precheck_refuses_unknown_types_missing_files_and_fake_blends(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="unknown motion file type '.txt'"):
        motion.precheck(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="not found"):
        motion.precheck(tmp_path / "gone.bvh")
    (tmp_path / "fake.blend").write_bytes(b"PK\x03\x04 not blender")
    with pytest.raises(UserError, match="not a .blend file"):
        motion.precheck(tmp_path / "fake.blend")
    (tmp_path / "a.npz").write_bytes(b"")
    with pytest.raises(UserError, match="--fps"):
        motion.precheck(tmp_path / "a.npz", fps=-3)
    with pytest.raises(UserError, match="--mapping applies"):
        motion.precheck(tmp_path / "a.npz", mapping=tmp_path / "notes.txt")


def test_quiet_fds_swallows_c_level_output(capfd):
    import ctypes
    libc = ctypes.CDLL(None)
    with quiet_fds(verbose=False):
        os.write(1, b"from fd 1\n")
        os.write(2, b"from fd 2\n")
        libc.printf(b"from printf\n")
        print("from python")
    with quiet_fds(verbose=True):
        os.write(2, b"shown\n")
    out, err = capfd.readouterr()
    assert "from" not in out + err
    assert "shown" in err


# --- .npz -------------------------------------------------------------------------------------

def _npz(path, n=30, fps=10.0, **extra):
    kp = np.stack([standing_pose(256)] * n)
    kp[:, :, 0] += np.arange(n)[:, None]
    np.savez(path, keypoints=kp, size=256, fps=fps, **extra)
    return kp


def test_npz_plays_in_time_order_and_resamples(tmp_path):
    kp = _npz(tmp_path / "k.npz", time=np.arange(30)[::-1] / 10.0, source=np.zeros(30, np.int16))
    m = motion.load(tmp_path / "k.npz")
    assert len(m) == 30 and m.fps == 10 and m.source_size == (256, 256) and m.mode == "clip"
    np.testing.assert_allclose(m.keypoints[0], kp[-1])                 # sorted by time
    m = motion.load(tmp_path / "k.npz", fps=20, frames=(3, 12))
    assert len(m) == 10 and m.first == 3
    np.testing.assert_allclose(m.keypoints[1, :, 0], (kp[-2, :, 0] + kp[-3, :, 0]) / 2)   # frame 4 = source 1.5
    with pytest.raises(UserError, match="beyond the end"):
        motion.load(tmp_path / "k.npz", frames=(1, 31))


def test_npz_without_keypoints_or_with_pickles_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", other=np.zeros(3))
    with pytest.raises(UserError, match="no 'keypoints'"):
        motion.load(tmp_path / "x.npz")
    np.savez(tmp_path / "p.npz", keypoints=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError):
        motion.load(tmp_path / "p.npz")


# --- video ------------------------------------------------------------------------------------

def test_video_track_is_smoothed_without_lag(pose_model):
    path = sample("video/dancer_room.mp4")
    m = motion.load(path, fps=30, frames=(1, 45), pose_model=pose_model, panel=64, quiet=True)
    assert len(m) == 45 and m.smoothed and m.kind == "video" and m.source_size == (576, 576)
    assert m.images.shape == (45, 64, 64, 3) and m.source_stats["height"] > 100
    assert (m.keypoints[:, _CORE, 2] >= VISIBLE).mean() > 0.9
    # The raw track of the same frames: smoothing cuts its jitter (second differences) ...
    times, raw, found, _ = video._detect(path, 30, lambda i, t: i < 45, lambda i, t: i >= 45, 45,
                                          pose_model, None, True)
    assert found.all()
    seen = (raw[:, _CORE, 2] >= VISIBLE).all(axis=0)
    jitter = lambda k: np.abs(np.diff(k[:, _CORE][:, seen, :2], 2, axis=0)).mean()  # noqa: E731
    assert jitter(m.keypoints) < 0.7 * jitter(raw)
    # ... and follows it: the best-matching shift between the two tracks is zero frames.
    a, b = raw[:, _CORE][:, seen, 0].mean(1), m.keypoints[:, _CORE][:, seen, 0].mean(1)
    errors = [np.abs(a[5 + s:40 + s] - b[5:40]).mean() for s in (-2, -1, 0, 1, 2)]
    assert int(np.argmin(errors)) == 2
    np.testing.assert_allclose(normalize.smooth(m.keypoints, 30).shape, m.keypoints.shape)


def test_video_faster_than_its_rate_is_interpolated(pose_model):
    m = motion.load(sample("video/dancer_room.mp4"), fps=60, frames=(1, 20), pose_model=pose_model, quiet=True)
    assert len(m) == 20 and m.fps == 60
    steps = np.abs(np.diff(m.keypoints[:, INDEX["mid_hip"], 0]))
    assert steps.max() < 10                                              # no frame jumps


def test_video_without_a_person_is_a_user_error(tmp_path, pose_model):
    from engine.data.video import write_video
    rng = np.random.default_rng(0)
    write_video(tmp_path / "empty.mp4", (rng.integers(0, 40, (96, 128, 3), np.uint8) for _ in range(8)), fps=10)
    with pytest.raises(UserError, match="no person found"):
        motion.load(tmp_path / "empty.mp4", pose_model=pose_model, quiet=True)


# --- rigs through bpy -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rig_blend(tmp_path_factory):
    from tests.blend_rig import build_blend
    return build_blend(str(tmp_path_factory.mktemp("blend") / "rig.blend"), frames=30)


def test_blend_scene_range_camera_and_auto_mapping(rig_blend):
    m = motion.load(rig_blend)
    assert len(m) == 30 and m.fps == 24 and m.source_size == (640, 480) and not m.smoothed
    assert (m.keypoints[:, _CORE, 2] == 1).all()
    x = m.keypoints[:, INDEX["left_wrist"], 0]
    assert x.max() - x.min() > 20                                        # the arm swings
    assert m.keypoints[0, INDEX["left_wrist"], 0] > m.keypoints[0, INDEX["right_wrist"], 0]  # facing us
    half = motion.load(rig_blend, fps=12, frames=(2, 6))                # every other frame, from frame 3
    np.testing.assert_allclose(half.keypoints, m.keypoints[2:11:2], atol=1e-3)


def test_blend_saved_offset_projects_as_the_addon_does(rig_blend, tmp_path):
    """A mapping row with an offset, saved by the add-on: `render` (headless, the add-on not
    registered) projects the same keypoints as the add-on does in Blender."""
    import bpy

    import blender_addon
    from engine.rig import automap
    from engine.rig import mapping as mapping_mod
    from engine.rig import projection
    bpy.ops.wm.open_mainfile(filepath=rig_blend)
    blender_addon.register()
    try:
        scene, arm = bpy.context.scene, bpy.data.objects["Rig"]
        s = scene.pix2dance
        s.armature = arm
        for joint, entry in automap.auto_map(arm)["joints"].items():   # the add-on's rows, by its surface
            row = s.mapping.add()
            row.joint, row.bone, row.at = joint, entry["bone"], entry.get("at", 0.0)
            if joint == "left_wrist":
                row.has_offset, row.offset = True, (0.05, 0.12, -0.03)   # rest-local: mostly along the hand
        in_blender = mapping_mod.saved_mapping(s)
        assert in_blender["joints"]["left_wrist"]["offset"] == pytest.approx([0.05, 0.12, -0.03])
        addon_kp = projection.project_frames(scene, arm, scene.camera, in_blender, [1, 2, 3])
        saved = str(tmp_path / "offset.blend")
        bpy.ops.wm.save_as_mainfile(filepath=saved)
    finally:
        blender_addon.unregister()
    headless = motion.load(saved, frames=(1, 3))
    np.testing.assert_allclose(headless.keypoints, addon_kp, atol=1e-3)
    plain = motion.load(rig_blend, frames=(1, 3))                          # no offset: the wrist elsewhere
    lw = INDEX["left_wrist"]
    assert np.linalg.norm(plain.keypoints[:, lw, :2] - headless.keypoints[:, lw, :2], axis=1).min() > 5


def test_blend_saved_mapping_is_used_and_bad_names_are_refused(rig_blend, tmp_path):
    import bpy
    bpy.ops.wm.open_mainfile(filepath=rig_blend)
    scene = bpy.context.scene
    from engine.rig import automap
    auto = automap.auto_map(bpy.data.objects["Rig"])
    # Swap the wrists in the saved mapping: the projection must follow the saved one.
    rows = [{"joint": j, "bone": e["bone"], "at": e.get("at", 0.0)} for j, e in auto["joints"].items()]
    for r in rows:
        r["bone"] = {"mixamorig:LeftHand": "mixamorig:RightHand", "mixamorig:RightHand": "mixamorig:LeftHand"}.get(
            r["bone"], r["bone"])
    scene["pix2dance"] = {"mapping": rows, "mapping_preset": "swapped"}
    saved = str(tmp_path / "saved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=saved)
    plain, swapped = motion.load(rig_blend, frames=(1, 1)), motion.load(saved, frames=(1, 1))
    lw, rw = INDEX["left_wrist"], INDEX["right_wrist"]
    np.testing.assert_allclose(swapped.keypoints[0, lw], plain.keypoints[0, rw], atol=1e-3)
    with pytest.raises(UserError, match="no camera named 'Nope'"):
        motion.load(rig_blend, camera="Nope")
    with pytest.raises(UserError, match="no armature named 'Camera'"):
        motion.load(rig_blend, armature="Camera")
    # --mapping FILE wins over what the .blend saved
    import json
    (tmp_path / "auto.json").write_text(json.dumps(auto))
    forced = motion.load(saved, frames=(1, 1), mapping=tmp_path / "auto.json")
    np.testing.assert_allclose(forced.keypoints, plain.keypoints, atol=1e-3)
    (tmp_path / "m.json").write_text('{"preset": "x", "joints": {"left_wrist": {"bone": "NoSuchBone"}}}')
    with pytest.raises(UserError, match="lacks: NoSuchBone"):
        motion.load(rig_blend, mapping=tmp_path / "m.json")


@pytest.mark.parametrize("what", ["armature", "camera"])
def test_blend_without_armature_or_camera_is_refused(tmp_path, what):
    from tests.blend_rig import build_blend
    path = build_blend(str(tmp_path / "x.blend"), frames=5, **{what: False})
    with pytest.raises(UserError, match=f"has no {what}"):
        motion.load(path)


def test_bvh_resampled_from_its_frame_time(tmp_path):
    pytest.importorskip("engine.rig.retarget")
    m = motion.load(sample(CMU), fps=30, frames=(1, 20))
    assert len(m) == 20 and m.fps == 30 and m.kind == "bvh" and not m.smoothed
    assert (m.keypoints[:, _CORE, 2] == 1).mean() > 0.95
    full = motion.load(sample(CMU), frames=(1, 13))                     # its own 120 fps
    assert full.fps == pytest.approx(120, rel=1e-3)
    np.testing.assert_allclose(m.keypoints[:4], full.keypoints[::4], atol=1.0)    # 30 fps = every 4th (camera framed alike)
    assert m.source_stats == full.source_stats or m.source_stats["height"] == pytest.approx(
        full.source_stats["height"], rel=0.02)
