"""Motion sources for `pix2dance render`: a .blend, a .bvh, a dataset's .npz or a video -> `Motion`.

    from engine import motion
    motion.precheck("dance.bvh", fps=30)                    # cheap checks before any model or bpy work
    m = motion.load("dance.bvh", fps=30, frames=(1, 40))    # 40 frames, 30 per second
    m.keypoints       # (N, J, 3) float32, pixels of a source image of m.source_size
    m.mode, m.source_stats                                  # how the engine normalizes it (once)

Every source ends as canonical keypoints in pixels of some source image, plus what the engine
needs to move them into the dancer's space (global pose normalization, `engine.data.normalize`):

| source       | module | keypoints from                                        | fps default        | smoothed  |
|--------------|--------|-------------------------------------------------------|--------------------|-----------|
| .blend       | blend  | the add-on's projection: scene camera, armature,      | the scene's        | no (exact)|
|              |        | saved or auto-detected mapping, scene frame range     |                    |           |
| .bvh         | bvh    | imported into an empty scene, auto-mapped, an         | 1 / Frame Time     | no (exact)|
|              |        | automatic front camera framing the whole motion       |                    |           |
| .mp4 / .mov  | video  | MediaPipe (VIDEO mode), one person tracked            | the video's        | yes       |
| .npz         | npz    | a dataset's keypoints.npz (`keypoints`, `size`, `fps`)| the file's, else 10| no        |

`source` holds the `Motion` dataclass and the frame arithmetic; `rigs` what .blend and .bvh share.
Normalization mode is always "clip": the source's body statistics (`joints.body_stats`) are carried
with the keypoints and the engine maps them onto the dancer's.

Frame selection: the source is first resampled to `fps`; `frames=(A, B)` then takes the 1-based
inclusive range A..B of those frames, like Blender's frame numbers: `--fps 10 --frames 1:40` is
the first four seconds, exactly 40 frames. Frame 1 is the source's first frame (a .blend's scene
frame_start). bpy is imported only by the .blend and .bvh paths, and its chatter on the C-level
stdout/stderr is held (`engine.quiet`) unless `verbose`.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError

from . import blend, bvh, npz, video
from .source import Motion, check_exists, check_fps, check_range

RIG_EXTENSIONS = (".blend", ".bvh")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
EXTENSIONS = RIG_EXTENSIONS + (".npz",) + VIDEO_EXTENSIONS


def precheck(path: str | Path, fps: float | None = None, mapping: str | Path | None = None,
             frames: tuple[int, int] | None = None) -> str:
    """Cheap checks before any model or bpy work: extension, existence, --fps, --frames, --mapping,
    and the file's own structure for .bvh and .blend. Returns the lower-case extension; UserError
    otherwise."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"unknown motion file type {path.suffix or '(none)'!r} for {path.name}: "
                        "use .blend, .bvh, .npz, .mp4 or .mov")
    check_exists(path)
    check_fps(fps)
    check_range(frames)
    if mapping is not None:
        if ext not in RIG_EXTENSIONS:
            raise UserError(f"--mapping applies to .blend and .bvh motions, not {ext}")
        if not Path(mapping).is_file():
            raise UserError(f"mapping file not found: {mapping}")
    if ext == ".bvh":
        bvh.check(path)
    elif ext == ".blend":
        blend.check(path)
    return ext


def load(path: str | Path, *, fps: float | None = None, frames: tuple[int, int] | None = None,
         armature: str | None = None, camera: str | None = None, mapping: str | Path | None = None,
         pose_model: str | Path | None = None, panel: int | None = None, verbose: bool = False,
         quiet: bool = False) -> Motion:
    """Any supported motion file -> Motion; UserError with one clear line on bad input.

    panel: for video sources, keep the source frames letterboxed to this size (side-by-side).
    """
    path = Path(path)
    ext = precheck(path, fps, mapping, frames)
    mapping = Path(mapping) if mapping is not None else None
    if ext == ".npz":
        return npz.load(path, fps, frames)
    if ext == ".bvh":
        return bvh.load(path, fps, frames, mapping, verbose, quiet)
    if ext == ".blend":
        return blend.load(path, fps, frames, armature, camera, mapping, verbose, quiet)
    return video.load(path, fps, frames, Path(pose_model) if pose_model else None, panel, quiet)
