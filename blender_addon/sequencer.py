"""Rendered frames on disk and in the Video Sequencer: file names, the render manifest, strips.

    folder/000012.png ...        one PNG per scene frame, written atomically as frames arrive
    folder/manifest.json         per frame: model, mapping hash, pose hash (what the PNG depends on)
    folder/rig/000012.png ...    the rig's own Workbench render (optional)

The manifest makes reruns incremental: a frame is rendered again only when its PNG is missing or
its model, mapping or pose changed. File and manifest helpers are plain Python (the render worker
thread calls them); the strip and rig-render helpers touch Blender data and run on the main thread.

Strips: `sequence_editor.strips` in Blender 5.x, `sequences` before. Each strip this add-on makes is
tagged with a custom property (`strip["pix2dance"] = "dancer" | "rig"`), so rendering again
replaces it, on the same channel when that channel is still free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._engine import atomic

MANIFEST = "manifest.json"
RIG_FOLDER = "rig"
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


class Manifest:
    """What each PNG in a folder was rendered from: {frame: {"model", "mapping", "pose", "file"}}."""

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


def free_channel(sed, start: int, end: int, prefer: int | None = None, avoid: tuple[int, ...] = ()) -> int:
    """`prefer` when it is free over [start, end], else the lowest free channel (not in `avoid`)."""
    if prefer and prefer not in avoid and channel_is_free(sed, prefer, start, end):
        return prefer
    for channel in range(1, MAX_CHANNEL + 1):
        if channel not in avoid and channel_is_free(sed, channel, start, end):
            return channel
    raise RuntimeError(f"no free sequencer channel over frames {start}-{end}")


def replace_image_strip(scene, tag: str, name: str, folder: Path, frames: list[int], *,
                        avoid: tuple[int, ...] = ()):
    """One image strip showing folder/<frame>.png for consecutive `frames`, starting at frames[0].

    An earlier strip with the same tag is removed first and its channel reused when still free.
    The fit method is FIT: square frames fit the scene's frame whatever its aspect.
    """
    import bpy
    sed = scene.sequence_editor or scene.sequence_editor_create()
    old = find_tagged(scene, tag)
    prefer = None
    if old is not None:
        prefer = old.channel
        strips_of(sed).remove(old)
    start, end = frames[0], frames[-1]
    channel = free_channel(sed, start, end, prefer, avoid)
    first = str(Path(folder) / frame_name(frames[0]))
    strip = strips_of(sed).new_image(name=name, filepath=first, channel=channel, frame_start=start,
                                     fit_method="FIT")
    for frame in frames[1:]:
        strip.elements.append(frame_name(frame))
    strip[TAG] = tag
    if bpy.data.filepath:
        try:  # a saved .blend keeps its frames relative, so the project folder can move
            strip.directory = bpy.path.relpath(strip.directory)
        except ValueError:  # another drive (Windows)
            pass
    return strip


def side_by_side(scene, dancer, rig) -> None:
    """Composite the two strips: the rig's render on the left half, the dancer on the right half.

    Both strips come fitted (FIT sets their transform's scale): the square dancer is then min(w, h)
    wide and the rig's render fills the frame; these scales are multiplied down to half a frame.
    """
    r = scene.render
    width = r.resolution_x * r.resolution_percentage / 100
    height = r.resolution_y * r.resolution_percentage / 100
    shrink = min(width / 2, height) / min(width, height)
    for strip, factor, offset in ((dancer, shrink, width / 4), (rig, 0.5, -width / 4)):
        strip.transform.scale_x *= factor
        strip.transform.scale_y *= factor
        strip.transform.offset_x = offset
    dancer.blend_type = "ALPHA_OVER"


def remove_tagged(scene, tag: str) -> None:
    old = find_tagged(scene, tag)
    if old is not None:
        strips_of(scene.sequence_editor).remove(old)


# --- the rig's own render (main thread) ----------------------------------------------------------

def render_rig_frames(scene, camera, frames: list[int], folder: Path):
    """Render the scene through `camera` with Workbench, one PNG per frame into `folder`.

    A generator: it renders one frame per step (yielding the frame number), so a modal operator
    stays responsive; render settings are restored however it ends. Workbench works in background
    mode, where bpy.ops.render.opengl does not.
    """
    import bpy
    r = scene.render
    saved = (r.engine, r.filepath, r.image_settings.file_format, r.use_file_extension, scene.camera,
             scene.frame_current)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r.engine = "BLENDER_WORKBENCH"
        r.image_settings.file_format = "PNG"
        r.use_file_extension = True
        scene.camera = camera
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
        r.engine, r.filepath, r.image_settings.file_format, r.use_file_extension, scene.camera, frame = saved
        scene.frame_set(frame)
