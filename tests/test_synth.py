"""Tests for engine.demo.synth: the synthetic dancer's clip and its exact ground-truth skeleton (bpy headless).

One short clip is rendered once per session (16 frames at 128 px, a few seconds); the checks then
look at its files, and at whether the projected skeleton really lies on the rendered body: the
pixels under the joints differ from a render of the empty stage, and the left elbow sits on the
blue (left) arm, the right elbow on the red one.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.pairs import read_rgb
from engine.demo import dancer, synth
from engine.data import video
from engine.wire.joints import FACE, INDEX, NUM_JOINTS
from engine.data.skeleton import facing

FRAMES, SIZE, FPS = 16, 128, 3.0        # 3 fps: 5 seconds of dance, with some turning


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synth.make_clip(tmp_path_factory.mktemp("synth") / "clip", frames=FRAMES, size=SIZE, seed=3,
                           choreography="train", fps=FPS, quiet=True)


@pytest.fixture(scope="module")
def empty_stage(clip, tmp_path_factory):
    """The same frames rendered with the dancer's body hidden: what background looks like per pixel."""
    import bpy
    bpy.ops.wm.open_mainfile(filepath=str(clip.blend))
    scene = bpy.context.scene
    for obj in scene.objects:
        if obj.parent is not None and obj.parent.name == synth.ARMATURE:
            obj.hide_render = True
    out = tmp_path_factory.mktemp("empty")
    synth.render_frames(bpy, scene, out, FRAMES, quiet=True)
    return np.stack([read_rgb(p) for p in sorted(out.glob("*.png"))])


def test_clip_files_frame_count_and_size(clip):
    assert clip.video.is_file() and clip.blend.is_file()
    info = video.probe(clip.video)
    assert (info.width, info.height, info.frames) == (SIZE, SIZE, FRAMES)
    assert info.fps == pytest.approx(FPS, rel=0.01)
    frames = synth.read_frames(clip)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert clip.keypoints.shape == (FRAMES, NUM_JOINTS, 3) and clip.keypoints.dtype == np.float32
    again = synth.load_clip(clip.video.parent)
    np.testing.assert_array_equal(again.keypoints, clip.keypoints)
    assert (again.size, again.fps) == (SIZE, FPS)


def test_skeleton_lies_inside_the_picture(clip):
    xy = clip.keypoints[..., :2]
    assert np.isfinite(xy).all()
    assert (xy > 0).all() and (xy < SIZE).all()
    # The body is a reasonable part of the frame: neck-to-ankle between 25% and 90% of the height.
    height = clip.keypoints[:, INDEX["left_ankle"], 1] - clip.keypoints[:, INDEX["neck"], 1]
    assert (np.median(height) > 0.25 * SIZE) and (np.median(height) < 0.9 * SIZE)


def test_joints_are_on_the_body_not_the_background(clip, empty_stage):
    frames = synth.read_frames(clip)
    names = ["left_wrist", "right_wrist", "left_elbow", "right_elbow", "left_knee", "right_knee",
             "left_ankle", "right_ankle", "left_hip", "right_hip", "neck"]
    on_body = []
    for f in range(FRAMES):
        diff = np.abs(frames[f].astype(int) - empty_stage[f].astype(int)).sum(-1)     # (S, S)
        for name in names:
            x, y = np.round(clip.keypoints[f, INDEX[name], :2]).astype(int)
            on_body.append(diff[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].max() > 30)
    # Every projected joint lies on the rendered body (a 3x3 pixel neighbourhood, for antialiasing).
    assert np.mean(on_body) == 1.0, f"{np.mean(on_body):.2%} of joints on the body"


def test_the_alpha_is_the_dancer_exactly(clip, empty_stage):
    """Blender's alpha covers the pixels where the dancer changes the picture, and not her shadow."""
    masks = synth.read_masks(clip)
    assert masks.shape == (FRAMES, SIZE, SIZE) and masks.dtype == np.uint8 and len(list(clip.masks_dir.glob("*.png"))) == FRAMES
    frames = synth.read_frames(clip)
    changed = np.abs(frames.astype(int) - empty_stage.astype(int)).sum(-1) > 60          # her and her shadow
    her = masks > 127
    assert 0.02 < her.mean() < 0.5
    assert (changed & her).sum() / her.sum() > 0.9          # where the alpha is, the picture changed
    assert (changed & ~her).sum() / changed.sum() < 0.35     # the rest of the change: her soft shadow, edges
    # the alpha is the body's own: every projected hip and neck lies in it
    for f in range(FRAMES):
        for name in ("neck", "left_hip", "right_hip"):
            x, y = np.round(clip.keypoints[f, INDEX[name], :2]).astype(int)
            assert masks[f, y, x] > 127, (f, name)


def test_left_is_blue_right_is_red(clip):
    """The projection's left/right agree with the body's colours (left limbs blue, right red)."""
    frames = synth.read_frames(clip).astype(int)

    def colour_votes(name: str) -> tuple[int, int]:
        blue = red = 0
        for f in range(FRAMES):
            # Halfway along the upper arm: the middle of a limb is rarely hidden by its own joint balls.
            a = clip.keypoints[f, INDEX[name.replace("elbow", "shoulder")], :2]
            b = clip.keypoints[f, INDEX[name], :2]
            x, y = np.round((a + b) / 2).astype(int)
            r, _, bl = frames[f, y, x]
            blue += bl > r + 15
            red += r > bl + 15
        return blue, red

    # Arms crossing in front of each other, or behind the trunk in a back view, hide some frames;
    # where a colour shows at all, it is the right one.
    left_blue, left_red = colour_votes("left_elbow")
    right_blue, right_red = colour_votes("right_elbow")
    assert left_blue >= FRAMES / 3 and left_blue >= 0.75 * (left_blue + left_red), (left_blue, left_red)
    assert right_red >= FRAMES / 3 and right_red >= 0.75 * (right_blue + right_red), (right_blue, right_red)


def test_face_hidden_when_the_dancer_turns_away(clip):
    kp = clip.keypoints
    faces = np.array([facing(k) for k in kp])
    face_seen = kp[:, [INDEX[n] for n in FACE], 2].min(1) >= 0.5
    assert (faces > 0.5).any(), "the dance shows the dancer from the front"
    assert (faces < -0.8).any(), "the dance turns the dancer's back to the camera"
    # Facing the camera squarely: face seen; back squarely to it: face hidden, but for a head
    # turned far over the shoulder (the head turns on its own, up to ~80 degrees from the hips).
    assert face_seen[faces > 0.8].mean() >= 0.8
    assert (~face_seen[faces < -0.8]).mean() >= 0.7


def test_choreographies_are_seeded_and_differ():
    a, b = dancer.make_dance(0, "train"), dancer.make_dance(0, "train")
    np.testing.assert_array_equal(a.freqs, b.freqs)
    test = dancer.make_dance(0, "test")
    assert not np.allclose(a.freqs, test.freqs)
    pose_a, _, _ = dancer.dance_pose(a, 2.0)
    pose_t, _, _ = dancer.dance_pose(test, 2.0)
    assert np.abs(pose_a - pose_t).max() > 0.1
    with pytest.raises(synth.UserError):
        dancer.make_dance(0, "rehearsal")


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(synth.UserError):
        synth.make_clip(tmp_path / "x", frames=0)
    with pytest.raises(synth.UserError):
        synth.make_clip(tmp_path / "y", frames=2, size=8)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
