"""A synthetic dancer rendered headless with bpy: training video plus its exact 2D skeleton.

The demo and the ground-truth benchmark need a dancer whose true skeleton is known to the pixel,
and a second, unseen dance by the same dancer to test on. This module builds one from code, in a
fresh Blender scene:

- an armature with generic bone names (`upper_arm.L`, `shin.R`, `spine`, `head`, ...) and a body of
  primitives parented to its bones, coloured so that left and right differ (left limbs blue, right
  limbs red) and so do front and back (a bright chest patch and a face in front, a dark back, hair
  behind the head);
- a procedural dance keyframed from code: every joint angle is a sum of slow sinusoids with seeded
  frequencies, phases and amplitudes, plus hip travel and whole-body turning. The "train" and
  "test" choreographies draw from different seeds, so the test dance is motion the model never saw;
- a camera, studio lighting and a floor, rendered with Workbench (~0.1 s a frame on a CPU).

The bones, colours and dances are tables and numpy in engine.demo.dancer; this module is the bpy
side that builds, animates and renders them.

The 2D ground truth comes from `engine.rig.projection.project_frames`, the very code the add-on
uses to send a rig's skeleton to the engine, so the synthetic truth and a user's rig agree.

    clip = make_clip("out/train", frames=240, size=256, seed=0, choreography="train")
    clip.video        # out/train/clip.mp4
    clip.keypoints    # (240, J, 3) float32 in video pixels, frame i of the video = row i
    read_masks(clip)  # (240, size, size) uint8: Blender's exact alpha of the dancer, frame by frame
    python -m engine.demo.synth OUT_DIR --frames 240 --size 256 --choreography test   # the same, from a shell

OUT_DIR also gets `frames/000000.png ...` (the scene), `masks/000000.png ...` (the dancer's exact
alpha: a second, transparent-film render of the dancer alone, floor hidden), `keypoints.npz` (the
`.npz` that `render --motion` accepts: keypoints, size, fps) and `dancer.blend` (the animated scene,
for the add-on or `pix2dance render --motion`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_dir
from engine.data.pairs import read_rgb
from engine.demo.dancer import (BONES, CHANNELS, CHEST_PATCH, CHOREOGRAPHIES, CONNECTED, FLOOR, HAIR, LEFT,
                                LEFT_DARK, PELVIS, RIGHT, RIGHT_DARK, SKIN, SKY, SOLE, TORSO, Dance, dance_pose,
                                make_dance)
from engine.errors import UserError
from engine.quiet import quiet_fds

log = logging.getLogger(__name__)

ARMATURE, CAMERA, FLOOR_OBJECT = "Dancer", "Camera", "Floor"


@dataclass
class SynthClip:
    """A rendered synthetic clip: the video, its exact skeleton and where its frames are."""
    video: Path                 # clip.mp4
    keypoints: np.ndarray       # (N, J, 3) float32 in video pixels; row i is video frame i
    frames_dir: Path            # frames/000000.png ... (RGB, size x size)
    fps: float
    size: int
    blend: Path | None = None   # dancer.blend: the animated scene

    @property
    def masks_dir(self) -> Path:
        """masks/000000.png ...: the dancer's exact alpha (grayscale, size x size)."""
        return self.frames_dir.parent / "masks"


# --- the scene ---------------------------------------------------------------------------------

def _bpy():
    try:
        import bpy
    except ImportError as e:                     # pragma: no cover - bpy is a hard dependency
        raise UserError(f"the synthetic dancer needs Blender's bpy module ({e})") from None
    return bpy


def build_rig(bpy, scene):
    """The armature object (rest pose from BONES), linked to the scene."""
    data = bpy.data.armatures.new(ARMATURE)
    arm = bpy.data.objects.new(ARMATURE, data)
    scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for name, (head, tail, parent) in BONES.items():
        bone = data.edit_bones.new(name)
        bone.head, bone.tail, bone.roll = head, tail, 0.0
        if parent:
            bone.parent = data.edit_bones[parent]
            bone.use_connect = name in CONNECTED
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in arm.pose.bones:
        pb.rotation_mode = "XYZ"
    return arm


def _primitive(bpy, kind: str, **kw):
    if kind == "cylinder":
        bpy.ops.mesh.primitive_cylinder_add(vertices=16, **kw)
    elif kind == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, **kw)
    else:
        bpy.ops.mesh.primitive_cube_add(**kw)
    return bpy.context.object


def _attach(bpy, arm, obj, bone_name: str, colour) -> None:
    """Parent obj to a bone keeping its rest-pose world placement; give it an object colour."""
    from mathutils import Matrix
    bone = arm.data.bones[bone_name]
    world = obj.matrix_world.copy()
    obj.parent = arm
    obj.parent_type = "BONE"
    obj.parent_bone = bone_name
    # A bone child sits at the bone's tail: undo that (and the bone's rest frame) once.
    tail = arm.matrix_world @ bone.matrix_local @ Matrix.Translation((0, bone.length, 0))
    obj.matrix_parent_inverse = tail.inverted()
    obj.matrix_world = world
    obj.color = (*colour, 1.0)


def _limb(bpy, arm, bone_name: str, radius: float, colour, taper: float = 0.85) -> None:
    """A cylinder (with a ball at its start) along a bone, in the rest pose."""
    from mathutils import Vector
    head, tail, _ = BONES[bone_name]
    a, b = Vector(head), Vector(tail)
    axis = b - a
    cyl = _primitive(bpy, "cylinder", radius=radius, depth=axis.length, location=(a + b) / 2)
    cyl.rotation_mode = "QUATERNION"
    cyl.rotation_quaternion = Vector((0, 0, 1)).rotation_difference(axis.normalized())
    cyl.scale = (1, 1, 1)
    bpy.context.view_layer.update()
    _attach(bpy, arm, cyl, bone_name, colour)
    ball = _primitive(bpy, "sphere", radius=radius * 1.08, location=a)
    bpy.context.view_layer.update()
    _attach(bpy, arm, ball, bone_name, colour)


def build_body(bpy, arm) -> None:
    """Primitives parented to the bones, coloured left/right and front/back."""
    for s, col, dark in (("L", LEFT, LEFT_DARK), ("R", RIGHT, RIGHT_DARK)):
        _limb(bpy, arm, f"upper_arm.{s}", 0.055, col)
        _limb(bpy, arm, f"forearm.{s}", 0.045, col)
        _limb(bpy, arm, f"thigh.{s}", 0.080, dark)
        _limb(bpy, arm, f"shin.{s}", 0.060, dark)
        hand = _primitive(bpy, "sphere", radius=0.055, location=BONES[f"hand.{s}"][0])
        hand.scale = (0.8, 0.6, 1.3)
        hand.location.z -= 0.05
        bpy.context.view_layer.update()
        _attach(bpy, arm, hand, f"hand.{s}", SKIN)
        (fx, fy, fz), _, _ = BONES[f"foot.{s}"]
        shoe = _primitive(bpy, "cube", size=1, location=(fx, fy - 0.08, 0.045))
        shoe.scale = (0.10, 0.26, 0.09)
        bpy.context.view_layer.update()
        _attach(bpy, arm, shoe, f"foot.{s}", col)
    # Trunk: a dark chest and belly, a bright patch on the front only, grey shorts.
    for bone, loc, scale, colour in (("chest", (0, 0, 1.38), (0.40, 0.22, 0.28), TORSO),
                                     ("spine", (0, 0, 1.18), (0.32, 0.19, 0.22), TORSO),
                                     ("hips", (0, 0, 1.00), (0.36, 0.22, 0.18), PELVIS),
                                     ("chest", (0, -0.112, 1.38), (0.24, 0.02, 0.16), CHEST_PATCH)):
        box = _primitive(bpy, "cube", size=1, location=loc)
        box.scale = scale
        bpy.context.view_layer.update()
        _attach(bpy, arm, box, bone, colour)
    neck = _primitive(bpy, "cylinder", radius=0.05, depth=0.12, location=(0, 0, 1.55))
    bpy.context.view_layer.update()
    _attach(bpy, arm, neck, "neck", SKIN)
    head = _primitive(bpy, "sphere", radius=0.11, location=(0, 0, 1.71))
    head.scale = (0.9, 1.0, 1.1)
    hair = _primitive(bpy, "sphere", radius=0.115, location=(0, 0.03, 1.74))
    hair.scale = (0.92, 1.0, 1.05)
    nose = _primitive(bpy, "sphere", radius=0.025, location=(0, -0.105, 1.70))
    eyes = [_primitive(bpy, "sphere", radius=0.018, location=(x, -0.092, 1.74)) for x in (0.04, -0.04)]
    bpy.context.view_layer.update()
    for obj, colour in ((head, SKIN), (hair, HAIR), (nose, RIGHT), *((e, (0.02, 0.02, 0.02)) for e in eyes)):
        _attach(bpy, arm, obj, "head", colour)


def build_stage(bpy, scene, size: int):
    """Camera, floor, sky and Workbench settings; returns the camera object."""
    cam = bpy.data.objects.new(CAMERA, bpy.data.cameras.new(CAMERA))
    scene.collection.objects.link(cam)
    cam.data.lens = 35.0
    cam.data.sensor_fit = "VERTICAL"
    cam.location = (0.0, -4.4, 1.0)
    cam.rotation_euler = (math.radians(90.5), 0.0, 0.0)
    scene.camera = cam
    bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
    bpy.context.object.color = (*FLOOR, 1.0)
    bpy.context.object.name = FLOOR_OBJECT
    world = bpy.data.worlds.new("Sky")
    world.color = SKY
    scene.world = world
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light, shading.studio_light = "STUDIO", "Default"
    shading.color_type = "OBJECT"
    shading.show_shadows = True
    shading.shadow_intensity = 0.4
    scene.display.render_aa = "FXAA"        # 0.11 s a 256 px frame with shadows; "8" takes 0.4 s
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.film_transparent = False
    return cam


def keyframe_dance(arm, dance: Dance, frames: int, fps: float, view_layer) -> None:
    """Keyframe every frame 0..frames-1 of the dance on the rig (bones, root travel and turning).

    After posing, the hips are lowered or raised so the lowest point of either foot touches the
    floor: the dancer crouches and stands instead of floating.
    """
    pose = arm.pose.bones
    feet = [pose[f"{b}.{s}"] for b in ("foot", "toe") for s in "LR"]
    for f in range(frames):
        angles, turn, hip = dance_pose(dance, f / fps)
        touched = set()
        for (bone, axis, _, _), angle in zip(CHANNELS, angles):
            pose[bone].rotation_euler[axis] = angle
            touched.add(bone)
        # The hips bone points up (roll 0): its local axes are world x, z and -y.
        pose["hips"].location = (hip[0], 0.0, -hip[1])
        arm.rotation_euler = (0.0, 0.0, turn)
        view_layer.update()
        lowest = min(min((arm.matrix_world @ pb.head).z, (arm.matrix_world @ pb.tail).z) for pb in feet)
        pose["hips"].location = (hip[0], SOLE - lowest, -hip[1])
        for bone in touched:
            pose[bone].keyframe_insert("rotation_euler", frame=f)
        pose["hips"].keyframe_insert("location", frame=f)
        arm.keyframe_insert("rotation_euler", frame=f)


def new_scene(size: int, frames: int, fps: float):
    """A fresh, empty Blender file with the stage, the rig and the body; (bpy, scene, arm, cam)."""
    bpy = _bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 0, frames - 1
    scene.render.fps = int(round(fps))
    scene.render.fps_base = scene.render.fps / fps
    cam = build_stage(bpy, scene, size)
    arm = build_rig(bpy, scene)
    build_body(bpy, arm)
    return bpy, scene, arm, cam


def render_frames(bpy, scene, frames_dir: Path, frames: int, quiet: bool = False, progress=None,
                  desc: str = "render synthetic dancer") -> None:
    """Render frames 0..frames-1 to frames_dir/000000.png ... with Workbench (progress: a bar's stream)."""
    from tqdm import tqdm
    frames_dir.mkdir(parents=True, exist_ok=True)
    for f in tqdm(range(frames), desc=desc, unit="frame", disable=quiet, leave=False, file=progress):
        scene.frame_set(f)
        scene.render.filepath = str(frames_dir / f"{f:06d}.png")
        bpy.ops.render.render(write_still=True)


def render_alpha(bpy, scene, masks_dir: Path, frames: int, quiet: bool = False, progress=None) -> None:
    """The dancer's exact alpha, frames 0..frames-1 -> masks_dir/000000.png ... (grayscale, 255 = her).

    A second pass of the same camera with a transparent film and the floor hidden: what is left
    opaque is the dancer alone (her shadow on the floor is not her). The scene is restored after."""
    import cv2
    floor = bpy.data.objects[FLOOR_OBJECT]
    settings = scene.render.image_settings
    floor.hide_render, scene.render.film_transparent, settings.color_mode = True, True, "RGBA"
    try:
        render_frames(bpy, scene, masks_dir, frames, quiet, progress, desc="render the dancer's alpha")
    finally:
        floor.hide_render, scene.render.film_transparent, settings.color_mode = False, False, "RGB"
    for path in sorted(masks_dir.glob("*.png")):         # RGBA -> its alpha channel alone
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4 or not cv2.imwrite(str(path), rgba[..., 3]):
            raise UserError(f"Blender did not write an RGBA frame at {path}")


def ground_truth(scene, arm, cam, frames: int) -> np.ndarray:
    """The exact canonical skeleton of frames 0..frames-1, (N, J, 3) in render pixels.

    The add-on's own mapping and projection (the code that sends a rig's skeleton to the engine):
    the rig's generic bone names auto-map, face points come from the head bone.
    """
    from engine.rig import automap, mapping, projection
    table = automap.auto_map(arm)
    missing = mapping.required_missing(table)
    if missing:                                   # a bug in BONES, not a user error
        raise RuntimeError(f"the synthetic rig does not auto-map {missing}")
    return np.asarray(projection.project_frames(scene, arm, cam, table, range(frames)), dtype=np.float32)


def make_clip(out_dir: str | Path, frames: int = 240, size: int = 256, seed: int = 0,
              choreography: str = "train", fps: float = 24.0, save_blend: bool = True,
              quiet: bool = False, verbose: bool = False) -> SynthClip:
    """Render a synthetic dance into out_dir (written atomically) and return what it holds."""
    from engine.data import video
    if frames < 1:
        raise UserError(f"a clip needs at least one frame, got {frames}")
    if size < 32 or size > 2048:
        raise UserError(f"render size must be between 32 and 2048 pixels, got {size}")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    dance = make_dance(seed, choreography)
    # Blender writes a line per rendered frame, and harmless EGL warnings, from C: held (and
    # replayed if something fails) unless verbose; progress bars still reach the terminal.
    with atomic_dir(out_dir) as tmp, quiet_fds(verbose, what="Blender", replay_on_error=True) as held:
        bpy, scene, arm, cam = new_scene(size, frames, fps)
        keyframe_dance(arm, dance, frames, fps, bpy.context.view_layer)
        render_frames(bpy, scene, tmp / "frames", frames, quiet, held.terminal)
        render_alpha(bpy, scene, tmp / "masks", frames, quiet, held.terminal)
        keypoints = ground_truth(scene, arm, cam, frames)
        if save_blend:
            scene.frame_set(0)
            bpy.ops.wm.save_as_mainfile(filepath=str(tmp / "dancer.blend"), compress=True)
        images = (read_rgb(p) for p in sorted((tmp / "frames").glob("*.png")))
        video.write_video(tmp / "clip.mp4", images, fps)
        np.savez(tmp / "keypoints.npz", keypoints=keypoints, size=np.int32(size), fps=np.float64(fps))
    log.info("synthetic %s clip: %d frames at %d px in %.1f s -> %s", choreography, frames, size,
             time.perf_counter() - started, out_dir)
    return SynthClip(video=out_dir / "clip.mp4", keypoints=keypoints, frames_dir=out_dir / "frames",
                     fps=fps, size=size, blend=(out_dir / "dancer.blend") if save_blend else None)


def load_clip(out_dir: str | Path) -> SynthClip:
    """A clip make_clip wrote earlier (for the demo's subprocess, and for reuse)."""
    out_dir = Path(out_dir)
    data = np.load(out_dir / "keypoints.npz")
    blend = out_dir / "dancer.blend"
    return SynthClip(video=out_dir / "clip.mp4", keypoints=data["keypoints"].astype(np.float32),
                     frames_dir=out_dir / "frames", fps=float(data["fps"]), size=int(data["size"]),
                     blend=blend if blend.exists() else None)


def read_frames(clip: SynthClip) -> np.ndarray:
    """All rendered frames of a clip, (N, size, size, 3) uint8 RGB."""
    return np.stack([read_rgb(p) for p in sorted(clip.frames_dir.glob("*.png"))])


def read_masks(clip: SynthClip) -> np.ndarray:
    """The dancer's exact alpha in every frame of a clip, (N, size, size) uint8, 255 = the dancer."""
    from engine.data.pairs import read_gray
    return np.stack([read_gray(p) for p in sorted(clip.masks_dir.glob("*.png"))])


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.demo.synth OUT_DIR ...`: render one clip (runs bpy in its own process)."""
    p = argparse.ArgumentParser(prog="python -m engine.demo.synth", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--choreography", choices=CHOREOGRAPHIES, default="train")
    p.add_argument("--no-blend", action="store_true", help="do not save dancer.blend")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    try:
        make_clip(a.out, frames=a.frames, size=a.size, seed=a.seed, choreography=a.choreography, fps=a.fps,
                  save_blend=not a.no_blend, quiet=a.quiet, verbose=a.verbose)
    except UserError as e:
        print(f"synth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
