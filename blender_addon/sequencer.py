"""Rendered frames on disk and in the Video Sequencer: file names, the render manifest, strips.

    folder/000012.png ...        one PNG per scene frame, written atomically as frames arrive
    folder/manifest.json         per frame: what the PNG depends on (model, mapping, pose, placement, alpha)
                                 and where the engine put the dancer ("affine": crop px -> frame px)
    folder/scene/000012.png ...  the scene's own render, the set under the dancer (optional)

The manifest makes reruns incremental: a frame is rendered again only when its PNG is missing or
anything it depends on changed (`model_key`, `mapping_hash`, `pose_hash`, the placement and alpha).
File, hash and manifest helpers are plain Python (worker threads call them); the strip and scene-render
helpers touch Blender data and run on the main thread.

Strips: `sequence_editor.strips` in Blender 5.x, `sequences` before. Each strip this add-on makes is
tagged with a custom property (`strip["pix2dance"] = "dancer" | "scene"`), so rendering again
replaces it, on the same channel when that channel is still free and in order: the dancer, an RGBA
image at the scene's render size blended ALPHA_OVER, always lies above the scene under her.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ._engine import atomic

MANIFEST = "manifest.json"
SCENE_FOLDER = "scene"
TAG = "pix2dance"
MAX_CHANNEL = 128  # Blender's sequencer channels are 1..128


# --- files (any thread) ------------------------------------------------------------------------

def frame_name(frame: int) -> str:
    """File name of a scene frame's image: 000012.png (sorts in frame order)."""
    return f"{frame:06d}.png"


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes through engine.atomic: never a half-written file under `path`."""
    with atomic.atomic_file(path) as tmp:
        tmp.write_bytes(data)


# --- what a rendered frame depends on (any thread) -------------------------------------------------

def model_key(model: dict) -> str:
    """A hash of what the engine says about a model (name, size, stats, alpha, and whatever else `info`
    adds, such as a weights digest): a model trained again on other data renders again. Where and how
    it runs (device, backend, precision) does not count: the frames are the same dancer."""
    text = json.dumps({k: v for k, v in model.items() if k not in ("device", "backend", "precision")},
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def pose_hash(kp: np.ndarray, source_size: tuple[int, int]) -> str:
    """A hash of one pose (J, 3) in source pixels; rounded to 1/100 px so float noise does not count."""
    data = np.round(np.asarray(kp, np.float64), 2).astype("<f4").tobytes()
    return hashlib.sha1(data + f"{source_size[0]}x{source_size[1]}".encode()).hexdigest()[:16]


def mapping_hash(mapping: dict) -> str:
    """A short stable hash of a mapping's joints (what a rendered frame depends on)."""
    text = json.dumps(mapping.get("joints", {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class Manifest:
    """What each PNG in a folder was rendered from: {frame: {"model", "mapping", "pose", ..., "file"}}.

    An entry from before placements (no "placement" key) never matches a new one: those RGB crops
    are rendered again as RGBA frames in place."""

    def __init__(self, folder: Path, frames: dict | None = None):
        self.folder = Path(folder)
        self.frames: dict[str, dict] = frames or {}

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Manifest":
        """The folder's manifest; an unreadable or missing one counts as empty (everything rerenders)."""
        folder = Path(folder)
        try:
            data = json.loads((folder / MANIFEST).read_text())
            frames = data["frames"] if data.get("format") == 1 and isinstance(data.get("frames"), dict) else {}
        except (OSError, ValueError, AttributeError, KeyError):
            frames = {}
        return cls(folder, frames)

    def is_fresh(self, frame: int, entry: dict) -> bool:
        """True when the frame's PNG exists and was rendered from exactly `entry`."""
        old = self.frames.get(str(frame))
        return old is not None and all(old.get(k) == v for k, v in entry.items()) \
            and (self.folder / frame_name(frame)).is_file()

    def record(self, frame: int, entry: dict) -> None:
        self.frames[str(frame)] = {**entry, "file": frame_name(frame)}

    def save(self) -> None:
        data = {"format": 1, "frames": dict(sorted(self.frames.items(), key=lambda kv: int(kv[0])))}
        write_atomic(self.folder / MANIFEST, (json.dumps(data, indent=1) + "\n").encode())


# --- strips (main thread) ----------------------------------------------------------------------

GUESS = "pix2dance guess"    # timeline marker name of a frame whose pose is outside the dancer's repertoire


def mark_guesses(scene, novelty: dict[int, float | None], threshold: float | None) -> list[int]:
    """Timeline markers on the frames whose novelty is above the model's threshold (their pictures are
    guesses: poses the dancer never danced); the markers of an earlier render in these frames go first.
    Returns the marked frames. Main thread only."""
    for marker in [m for m in scene.timeline_markers if m.name == GUESS and m.frame in novelty]:
        scene.timeline_markers.remove(marker)
    if threshold is None:
        return []
    guesses = sorted(f for f, score in novelty.items() if score is not None and score > threshold)
    for frame in guesses:
        scene.timeline_markers.new(GUESS, frame=frame)
    return guesses


def strips_of(sed):
    """The top-level strips collection: `strips` (Blender 5.x) or `sequences` (before)."""
    return sed.strips if hasattr(sed, "strips") else sed.sequences


def find_tagged(scene, tag: str):
    """The strip this add-on made with `tag`, or None."""
    sed = scene.sequence_editor
    if sed is None:
        return None
    return next((s for s in strips_of(sed) if s.get(TAG) == tag), None)


def channel_is_free(sed, channel: int, start: int, end: int) -> bool:
    """No strip on `channel` overlaps frames [start, end] (inclusive)."""
    return not any(s.channel == channel and s.frame_final_start <= end and s.frame_final_end > start
                   for s in strips_of(sed))


def free_channel(sed, start: int, end: int, prefer: int | None = None, above: int = 0) -> int:
    """`prefer` when it is above `above` and free over [start, end], else the lowest such free channel."""
    if prefer and prefer > above and channel_is_free(sed, prefer, start, end):
        return prefer
    for channel in range(above + 1, MAX_CHANNEL + 1):
        if channel_is_free(sed, channel, start, end):
            return channel
    raise RuntimeError(f"no free sequencer channel above {above} over frames {start}-{end}")


def replace_strips(scene, layers: list[tuple[str, str, Path]], frames: list[int], tags: tuple[str, ...] = ()):
    """Image strips for `layers` [(tag, name, folder), ...], bottom to top, each on a channel above the
    one before, showing folder/<frame>.png for consecutive `frames` from frames[0]; the strips, in order.

    Earlier strips with any of these tags (or of `tags`: layers switched off) are removed first;
    each layer goes back on its old channel when that is still free and in order. FIT: a frame at the
    scene's render size (at any resolution_percentage) fills the frame exactly; a square crop (a model
    without a matte) is fitted in the middle. Blended ALPHA_OVER, straight alpha: what is transparent
    in a layer shows the layers below.
    """
    import bpy
    sed = scene.sequence_editor or scene.sequence_editor_create()
    old = {}
    for tag in dict.fromkeys([t for t, _, _ in layers] + list(tags)):
        strip = find_tagged(scene, tag)
        if strip is not None:
            old[tag] = strip.channel
            strips_of(sed).remove(strip)
    start, end = frames[0], frames[-1]
    made, below = [], 0
    for tag, name, folder in layers:
        channel = free_channel(sed, start, end, old.get(tag), above=below)
        strip = strips_of(sed).new_image(name=name, filepath=str(Path(folder) / frame_name(start)), channel=channel,
                                         frame_start=start, fit_method="FIT")
        for frame in frames[1:]:
            strip.elements.append(frame_name(frame))
        strip.blend_type, strip.alpha_mode = "ALPHA_OVER", "STRAIGHT"
        strip[TAG] = tag
        if bpy.data.filepath:
            try:  # a saved .blend keeps its frames relative, so the project folder can move
                strip.directory = bpy.path.relpath(strip.directory)
            except ValueError:  # another drive (Windows)
                pass
        made.append(strip)
        below = channel
    return made


# --- the scene's own render, the set under the dancer (main thread) ---------------------------------

def rig_meshes(armature) -> list:
    """The meshes that are the rig's body: deformed by the armature, or parented to it (at any depth)."""
    import bpy

    def on_rig(o) -> bool:
        while o.parent is not None:
            if o.parent == armature:
                return True
            o = o.parent
        return False
    return [o for o in bpy.data.objects if o.type == "MESH"
            and (on_rig(o) or any(m.type == "ARMATURE" and m.object == armature for m in o.modifiers))]


def render_scene_frames(scene, camera, frames: list[int], folder: Path, hide: list = ()):
    """Render the scene through `camera` with its own render engine, one PNG per frame into `folder`,
    with the objects in `hide` left out (hide_render).

    A generator: it renders one frame per step (yielding the frame number), so a modal operator
    stays responsive; render settings and hidden objects are restored however it ends. The
    sequencer is off meanwhile: with it on, Blender would render the strips (an earlier dancer)
    instead of the scene.
    """
    import bpy
    r = scene.render
    saved = (r.filepath, r.image_settings.file_format, r.image_settings.color_mode, r.use_file_extension,
             r.use_sequencer, scene.camera, scene.frame_current)
    hidden = [o for o in hide if not o.hide_render]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"      # a transparent film stays transparent in the set's PNG
        r.use_file_extension, r.use_sequencer, scene.camera = True, False, camera
        for o in hidden:
            o.hide_render = True
        for frame in frames:
            scene.frame_set(frame)
            final = folder / frame_name(frame)
            # Render under a temporary name, then rename: no half-written PNG under the final name.
            tmp = folder / f".{final.stem}.tmp"
            r.filepath = str(tmp)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            os.replace(str(tmp) + ".png", final)
            yield frame
    finally:
        for o in hidden:
            try:
                o.hide_render = False
            except ReferenceError:      # deleted meanwhile (the UI stays usable during a render)
                pass
        (r.filepath, r.image_settings.file_format, r.image_settings.color_mode, r.use_file_extension,
         r.use_sequencer, scene.camera, frame) = saved
        scene.frame_set(frame)
