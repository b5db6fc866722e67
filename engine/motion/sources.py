"""Motion sources for `pix2dance render`: a .blend, a .bvh, a dataset's .npz or a video -> `Motion`.

    motion = load("dance.bvh", fps=30, frames=(1, 40))      # 40 frames, 30 per second
    motion.keypoints       # (N, J, 3) float32, pixels of a source image of motion.source_size
    motion.mode, motion.source_stats                         # how the engine normalizes it (once)

Every source ends as canonical keypoints in pixels of some source image, plus what the engine
needs to move them into the dancer's space (global pose normalization, `engine.data.normalize`):

| source       | keypoints from                                        | fps default        | smoothed |
|--------------|-------------------------------------------------------|--------------------|----------|
| .blend       | the add-on's projection: scene camera, armature,      | the scene's        | no (exact)|
|              | saved or auto-detected mapping, scene frame range     |                    |          |
| .bvh         | imported into an empty scene, auto-mapped, an         | 1 / Frame Time     | no (exact)|
|              | automatic front camera framing the whole motion       |                    |          |
| .mp4 / .mov  | MediaPipe (VIDEO mode), one person tracked            | the video's        | yes      |
| .npz         | a dataset's keypoints.npz (`keypoints`, `size`, `fps`)| the file's, else 10| no       |

Normalization mode is always "clip": the source's body statistics (`joints.body_stats`) are carried
with the keypoints and the engine maps them onto the dancer's. For rigs and .npz the statistics
cover the whole source (projection is cheap), so rendering a range A:B and then B+1:C gives the
same framing; for a video they cover the analysed range only. An .npz is *not* taken as already in
the dancer's space ("none"): it may come from another dancer's dataset, and for the dancer's own
dataset "clip" is the identity up to the statistics' rounding.

Frame selection: the source is first resampled to `fps` (rigs are evaluated at sub-frame times,
so 120 fps mocap played at 30 fps is exact, not dropped frames); `frames=(A, B)` then takes the
1-based inclusive range A..B of those frames, like Blender's frame numbers: `--fps 10
--frames 1:40` is the first four seconds, exactly 40 frames. Frame 1 is the source's first frame
(a .blend's scene frame_start).

bpy (imported lazily: only the .blend and .bvh paths need it) prints its own chatter, and tracebacks
of errors it catches, on the C-level stdout/stderr; `quiet_fds` sends that to a temporary file
unless `verbose`. Files are checked (magic bytes, BVH structure) before any bpy operator sees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.wire.joints import NUM_JOINTS, VISIBLE, body_stats

log = logging.getLogger(__name__)

RIG_EXTENSIONS = (".blend", ".bvh")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
EXTENSIONS = RIG_EXTENSIONS + (".npz",) + VIDEO_EXTENSIONS
NPZ_DEFAULT_FPS = 10.0        # the dataset builder's default sampling rate
MAX_GAP_S = 1.0               # video: frames without a person are bridged up to this long


@dataclasses.dataclass
class Motion:
    """Keypoints from one source, ready for the engine (which normalizes them, once)."""
    keypoints: np.ndarray                 # (N, J, 3) float32, pixels of the source image
    source_size: tuple[int, int]          # (width, height) of that image
    fps: float                            # frames per second of `keypoints`
    mode: str = "clip"                    # normalization mode for the engine: "clip" or "none"
    source_stats: dict | None = None      # joints.body_stats of the source (mode "clip")
    first: int = 1                        # 1-based number of keypoints[0] in the resampled source
    images: np.ndarray | None = None      # (N, P, P, 3) uint8 source video frames, letterboxed (side-by-side)
    smoothed: bool = False                # temporal smoothing applied (video only)
    kind: str = ""                        # "blend", "bvh", "npz" or "video"

    def __len__(self) -> int:
        return len(self.keypoints)


# --- common helpers ---------------------------------------------------------------------------

def frame_count(duration_s: float, fps: float) -> int:
    """Frames of a source `duration_s` long (first to last frame) resampled at `fps`: both ends kept."""
    return int(math.floor(duration_s * fps + 1e-6)) + 1


def select(total: int, frames: tuple[int, int] | None, fps: float, what: str) -> tuple[int, int]:
    """(start, stop) 0-based slice of `total` resampled frames for a 1-based inclusive range A:B."""
    if total <= 0:
        raise UserError(f"{what} has no frames")
    if frames is None:
        return 0, total
    a, b = frames
    if a < 1 or b < a:
        raise UserError(f"--frames {a}:{b}: frames are numbered from 1 and the range must not end before it starts")
    if b > total:
        raise UserError(f"--frames {a}:{b} asks beyond the end: {what} has {total} frames at {fps:g} fps (1:{total})")
    return a - 1, b


def check_exists(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"motion file not found: {path}")
    if not path.is_file():
        raise UserError(f"motion source is not a file: {path}")
    return path


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= 1000):
        raise UserError(f"--fps must be a positive number of frames per second, got {fps:g}")


@contextlib.contextmanager
def quiet_fds(verbose: bool = False):
    """Send everything written to file descriptors 1 and 2 (C and Python) to a temp file.

    bpy prints from C (printf) and from its Python add-ons, and prints tracebacks of errors its
    operators catch; none of that belongs in the user's terminal. With verbose, nothing changes.
    Yields the temp file's path (its content is logged at debug level afterwards).
    """
    if verbose:
        yield None
        return
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b", prefix="pix2dance-bpy-") as sink, \
            open(sink.fileno(), "w", closefd=False, encoding="utf-8", errors="replace") as text, \
            contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        # Python-level prints may go to a sys.stdout that is not fd 1 (pytest, IDEs): redirected too.
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            text.flush()
            libc.fflush(None)          # C stdio buffers, before the descriptors point back
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if log.isEnabledFor(logging.DEBUG):
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace").strip()
                if text:
                    log.debug("bpy said:\n%s", text)


# --- file checks before bpy sees them ---------------------------------------------------------

# .blend files start with "BLENDER"; Blender 3.0+ may zstd-compress them, older ones gzip.
_BLEND_MAGIC = (b"BLENDER", b"\x28\xb5\x2f\xfd", b"\x1f\x8b")


def check_blend(path: Path) -> None:
    """UserError unless the file starts like a .blend (plain, zstd or gzip)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_BLEND_MAGIC):
        raise UserError(f"{path} is not a .blend file (it does not start with a Blender header)")


@dataclasses.dataclass
class BvhInfo:
    joints: list[str]
    channels: int             # values per motion line
    frames: int
    frame_time: float         # seconds per frame

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time


_BVH_CHECKED: dict[tuple, BvhInfo] = {}


def check_bvh(path: Path) -> BvhInfo:
    """check_bvh_file, remembered per (path, size, mtime): precheck and load both call it."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _BVH_CHECKED:
        _BVH_CHECKED.clear()
        _BVH_CHECKED[key] = check_bvh_file(path)
    return _BVH_CHECKED[key]


def check_bvh_file(path: Path) -> BvhInfo:
    """Parse a BVH's structure fully (hierarchy, channel counts, every motion line), or UserError.

    Blender's importer prints a traceback and half-imports a broken file; this check means it
    only ever sees files that parse.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a BVH file (not text)") from None
    lines = text.splitlines()
    tokens_lines = [(i + 1, line.split()) for i, line in enumerate(lines)]
    it = iter([(n, t) for n, t in tokens_lines if t])

    def bad(n: int, why: str) -> UserError:
        return UserError(f"{path} is not a valid BVH file: line {n}: {why}")

    first = next(it, None)
    if first is None or first[1][0].upper() != "HIERARCHY":
        raise UserError(f"{path} is not a BVH file (no HIERARCHY at the start)")
    joints, channels, depth, n = [], 0, 0, first[0]
    for n, tok in it:
        key = tok[0].upper()
        if key in ("ROOT", "JOINT"):
            if len(tok) < 2:
                raise bad(n, f"{tok[0]} without a name")
            if key == "ROOT" and depth != 0:
                raise bad(n, "ROOT inside another joint")
            joints.append(" ".join(tok[1:]))
        elif key == "END":
            pass
        elif key == "{":
            depth += 1
        elif key == "}":
            depth -= 1
            if depth < 0:
                raise bad(n, "unbalanced '}'")
        elif key == "OFFSET":
            if len(tok) != 4 or not _floats(tok[1:]):
                raise bad(n, "OFFSET needs three numbers")
        elif key == "CHANNELS":
            try:
                count = int(tok[1])
            except (IndexError, ValueError):
                raise bad(n, "CHANNELS needs a count") from None
            if count != len(tok) - 2 or not all(c.lower()[1:] in ("position", "rotation") for c in tok[2:]):
                raise bad(n, "CHANNELS count and names do not match")
            channels += count
        elif key == "MOTION":
            break
        else:
            raise bad(n, f"unexpected {tok[0]!r} in the hierarchy")
    else:
        raise UserError(f"{path} is not a valid BVH file: no MOTION section")
    if depth != 0 or not joints:
        raise bad(n, "the hierarchy's braces do not balance" if joints else "no joints before MOTION")
    header = {}
    for _ in range(2):
        n, tok = next(it, (n, []))
        line = " ".join(tok)
        if line.lower().startswith("frames:"):
            header["frames"] = line.split(":", 1)[1]
        elif line.lower().startswith("frame time:"):
            header["time"] = line.split(":", 1)[1]
        else:
            raise bad(n, "expected 'Frames:' and 'Frame Time:' after MOTION")
    try:
        frames, frame_time = int(header["frames"]), float(header["time"])
    except (KeyError, ValueError):
        raise bad(n, "bad 'Frames:' or 'Frame Time:'") from None
    if frames < 1 or not (0 < frame_time < 10):
        raise bad(n, f"{frames} frames of {frame_time} s each")
    rows, values, lines_at = 0, [], []
    for n, tok in it:
        if len(tok) != channels:
            raise bad(n, f"{len(tok)} values, the hierarchy has {channels} channels")
        values.extend(tok)
        lines_at.append(n)
        rows += 1
    try:   # all numbers at once (a per-value check costs seconds on long captures)
        numbers = np.array(values, dtype=np.float64)
    except ValueError:
        first = next(i for i, v in enumerate(values) if not _floats([v]))
        raise bad(lines_at[first // channels], f"{values[first]!r} is not a number") from None
    if not np.isfinite(numbers).all():
        raise bad(n, "a motion value is not finite")
    if rows < frames:
        raise UserError(f"{path} is not a valid BVH file: {rows} motion lines, the header says {frames}")
    return BvhInfo(joints=joints, channels=channels, frames=frames, frame_time=frame_time)


def _floats(values) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


# --- .npz -------------------------------------------------------------------------------------

def load_npz(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None) -> Motion:
    """A dataset's keypoints.npz: `keypoints` (N, J, 3) in pixels of a `size` square, optional `fps`.

    Frames are played in the file's order (a dataset writes them in time order per source video);
    another --fps resamples by linear interpolation in that order.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if "keypoints" not in data:
                raise UserError(f"{path} has no 'keypoints' array (is it a dataset's keypoints.npz?)")
            kp = np.asarray(data["keypoints"], dtype=np.float32)
            size = data["size"] if "size" in data else None
            src_fps = float(data["fps"]) if "fps" in data else None
            order = _npz_order(data)
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz file ({str(e).splitlines()[0]})") from None
    if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3) or len(kp) == 0:
        raise UserError(f"{path}: keypoints must be (N, {NUM_JOINTS}, 3) in canonical joint order, got {kp.shape}")
    if order is not None:
        kp = kp[order]
    if size is None:
        width, height = _extent(kp)
    else:
        size = np.atleast_1d(np.asarray(size)).astype(int).tolist()
        width, height = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    src_fps = src_fps if src_fps and src_fps > 0 else NPZ_DEFAULT_FPS
    fps = fps or src_fps
    stats = body_stats(kp)
    if stats is None:
        raise UserError(f"{path}: no frame shows a whole body (shoulders, hips, knees, ankles)")
    total = frame_count((len(kp) - 1) / src_fps, fps)
    start, stop = select(total, frames, fps, str(path))
    at = np.arange(start, stop) * (src_fps / fps)          # positions in source frames
    return Motion(keypoints=interpolate(kp, at), source_size=(int(width), int(height)), fps=fps,
                  mode="clip", source_stats=stats, first=start + 1, kind="npz")


def _npz_order(data) -> np.ndarray | None:
    """Play order (source, time) when the file says so, else None (file order)."""
    if "time" in data and "source" in data:
        return np.lexsort((np.asarray(data["time"]), np.asarray(data["source"])))
    return None


def _extent(kp: np.ndarray) -> tuple[int, int]:
    seen = kp[..., 2] >= VISIBLE
    xy = kp[..., :2][seen]
    if not len(xy):
        return 256, 256
    return int(np.ceil(xy[:, 0].max())) + 1, int(np.ceil(xy[:, 1].max())) + 1


def interpolate(kp: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Keypoints (N, J, 3) at fractional frame positions `at` (M,): linear, visibility the lower."""
    at = np.clip(np.asarray(at, dtype=np.float64), 0, len(kp) - 1)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, len(kp) - 1)
    w = (at - lo)[:, None, None].astype(np.float32)
    out = kp[lo] * (1 - w) + kp[hi] * w
    out[..., 2] = np.minimum(kp[lo, :, 2], kp[hi, :, 2])
    exact = w[:, 0, 0] < 1e-6
    out[exact] = kp[lo[exact]]
    return out.astype(np.float32)


# --- video (motion transfer) ------------------------------------------------------------------

def _body_box(kp: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, area) of a pose's visible joints."""
    seen = kp[:, 2] >= VISIBLE
    if seen.sum() < 2:
        return 0.0, 0.0, 0.0
    xy = kp[seen, :2]
    lo, hi = xy.min(0), xy.max(0)
    return float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(np.prod(hi - lo))


def pick_person(people: list[np.ndarray], previous: np.ndarray | None) -> np.ndarray | None:
    """The one dancer among detections: nearest the previous pick, else the biggest body."""
    if not people:
        return None
    if previous is None or len(people) == 1:
        return max(people, key=lambda p: _body_box(p)[2]) if previous is None else people[0]
    px, py, _ = _body_box(previous)
    return min(people, key=lambda p: math.hypot(_body_box(p)[0] - px, _body_box(p)[1] - py))


def fill_gaps(kp: np.ndarray, found: np.ndarray, max_gap: int) -> np.ndarray:
    """Frames without a person (found False): linear between the neighbours for gaps up to max_gap
    frames, the nearest found pose held at the ends; longer gaps stay empty (nothing drawn)."""
    kp = kp.copy()
    idx = np.flatnonzero(found)
    if len(idx) == 0:
        return kp
    missing = np.flatnonzero(~found)
    for i in missing:
        after = idx[np.searchsorted(idx, i):]
        before = idx[:np.searchsorted(idx, i)]
        if len(before) and len(after):
            a, b = before[-1], after[0]
            if b - a - 1 > max_gap:
                continue
            kp[i] = interpolate(kp[[a, b]], np.array([(i - a) / (b - a)]))[0]
        elif len(before) and i - before[-1] <= max_gap:
            kp[i] = kp[before[-1]]
        elif len(after) and after[0] - i <= max_gap:
            kp[i] = kp[after[0]]
    return kp


def letterbox(rgb: np.ndarray, size: int) -> np.ndarray:
    """An image fitted into a size x size black square, aspect kept, centred."""
    import cv2
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((size, size, 3), np.uint8)
    x, y = (size - nw) // 2, (size - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def load_video(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
               pose_model: Path | None = None, panel: int | None = None, quiet: bool = False) -> Motion:
    """Poses of the one dancer in a video, tracked, gap-filled and smoothed over time.

    The video is decoded at min(fps, its own rate), only over the asked range; a rate above the
    video's interpolates the smoothed poses (and repeats the nearest frame for side-by-side).
    panel: keep each analysed frame letterboxed into a panel x panel square (side-by-side).
    """
    from engine.data import video
    info = video.probe(path)
    src_fps = float(info.fps)
    fps = fps or src_fps
    total = frame_count((info.frames - 1) / src_fps, fps)       # frame counts of containers are estimates
    # Past the container's estimate, the decoder has the last word (checked after decoding).
    start, stop = select(max(total, frames[1]) if frames else total, frames, fps, str(path))
    t0, t1 = start / fps, (stop - 1) / fps                      # times of the first and last output frame
    upsample = fps > src_fps * 1.001
    want = stop - start
    if upsample:       # every video frame from just before t0 to just after t1
        keep = lambda i, t: t0 - 1.0 / src_fps <= t <= t1 + 1.0 / src_fps  # noqa: E731
        done = lambda i, t: t > t1 + 1.0 / src_fps  # noqa: E731
    else:              # the sampled frames start..stop-1, by count
        keep = lambda i, t: start <= i < stop  # noqa: E731
        done = lambda i, t: i >= stop  # noqa: E731
    times, poses, found, images = _detect(path, None if upsample else fps, keep, done, want, pose_model, panel, quiet)
    if upsample:
        targets = t0 + np.arange(want) / fps
        targets = targets[targets <= times[-1] + 0.5 / src_fps]
        at = np.interp(targets, times, np.arange(len(times)))
    else:
        at = np.arange(min(want, len(times)), dtype=np.float64)
    if len(at) < want:
        raise UserError(f"--frames {start + 1}:{stop} asks beyond the end: {path} has about "
                        f"{start + len(at)} frames at {fps:g} fps")
    if not found.any():
        raise UserError(f"no person found in {path}")
    kp = fill_gaps(poses, found, max_gap=int(MAX_GAP_S * min(fps, src_fps)))
    kp = normalize_smooth(kp, min(fps, src_fps))
    stats = body_stats(kp)
    if stats is None:
        raise UserError(f"{path}: the person is never seen whole (shoulders, hips, knees, ankles)")
    log.info("%s: a person in %d of %d frames", path.name, int(found.sum()), len(found))
    kp = interpolate(kp, at)
    if images is not None:
        images = images[np.rint(at).astype(int)]
    return Motion(keypoints=kp, source_size=(int(info.width), int(info.height)), fps=fps, mode="clip",
                  source_stats=stats, first=start + 1, images=images, smoothed=True, kind="video")


def normalize_smooth(kp: np.ndarray, fps: float) -> np.ndarray:
    """engine.data.normalize.smooth (Savitzky-Golay), imported late: scipy is slow to import."""
    from engine.data import normalize
    return normalize.smooth(kp, fps)


def _detect(path: Path, fps: float | None, keep, done, expected: int, pose_model: Path | None,
            panel: int | None, quiet: bool):
    """MediaPipe over the frames sampled at fps (None: every frame) where keep(i, t), until done(i, t).

    Returns times (M,), poses (M, J, 3) (zeros where nobody), found (M,) bool, images or None.
    """
    from tqdm import tqdm

    from engine.data import pose, video
    model = pose.resolve_model(pose_model)
    times, poses, found, images = [], [], [], []
    previous = None
    bar = tqdm(total=expected, desc="poses", unit="frame", disable=quiet, leave=False)
    with pose.PoseEstimator(model) as estimator:
        for i, (t, rgb) in enumerate(video.sample(path, fps)):
            if done(i, t):
                break
            if not keep(i, t):
                continue
            chosen = pick_person(estimator.detect(rgb, t * 1000.0), previous)
            times.append(t)
            found.append(chosen is not None)
            poses.append(chosen if chosen is not None else np.zeros((NUM_JOINTS, 3), np.float32))
            previous = chosen if chosen is not None else previous
            if panel:
                images.append(letterbox(rgb, panel))
            bar.update(1)
    bar.close()
    if not times:
        raise UserError(f"{path}: no frames decoded in the asked range")
    return (np.array(times), np.stack(poses).astype(np.float32), np.array(found),
            np.stack(images) if panel else None)


# --- rigs: .blend and .bvh through the add-on's code ------------------------------------------

def _bpy():
    try:
        import bpy
    except ImportError:
        raise UserError("this motion source needs Blender's Python module: pip install bpy") from None
    return bpy


def _read_mapping_file(path: Path, armature) -> dict:
    """A bone-mapping JSON (the add-on's format) whose bones all exist in the armature, or UserError."""
    from engine.rig import mapping as mapping_mod
    try:
        mapping = mapping_mod.load_mapping(path)
    except ValueError as e:
        raise UserError(f"--mapping {path}: {e}") from None
    bones = {b.name for b in armature.data.bones}
    absent = sorted({e["bone"] for e in mapping["joints"].values()} - bones)
    if absent:
        raise UserError(f"--mapping {path} names bones armature {armature.name!r} lacks: {', '.join(absent[:6])}"
                        + (" ..." if len(absent) > 6 else ""))
    return mapping


def _settings(scene):
    """The add-on's saved settings (scene.pix2dance) as raw ID properties, or None.

    Headless, the add-on's PropertyGroup is not registered; what the .blend saved is still there
    as ID properties, read here with .get() only, so a stale or foreign value cannot raise.
    """
    try:
        settings = scene.get("pix2dance")
        return settings if hasattr(settings, "get") else None
    except Exception:                              # noqa: BLE001
        return None


def _saved_mapping(scene, armature) -> dict | None:
    """The bone mapping the add-on saved in the .blend, if it fits this armature; else None."""
    settings = _settings(scene)
    if settings is None:
        return None
    try:
        rows = settings.get("mapping") or []
        found = {}
        for row in rows:
            joint, bone = str(row.get("joint", "") or ""), str(row.get("bone", "") or "")
            if joint and bone:
                found[joint] = {"bone": bone, "at": float(row.get("at", 0.0) or 0.0)}
    except Exception as e:                         # noqa: BLE001 - a stale setting must not stop a render
        log.info("ignoring the mapping saved in the .blend (%s)", e)
        return None
    if not found:
        return None
    bones = {b.name for b in armature.data.bones}
    if not all(v["bone"] in bones for v in found.values()):
        log.info("the mapping saved in the .blend names bones %r lacks; auto-detecting", armature.name)
        return None
    from engine.rig import mapping as mapping_mod
    try:
        return mapping_mod.check_mapping({"preset": str(settings.get("mapping_preset", "") or "saved"),
                                          "joints": found})
    except ValueError as e:
        log.info("ignoring the mapping saved in the .blend (%s)", e)
        return None


def _saved_object(scene, key: str, kind: str):
    """An object the add-on's settings point at (armature, camera), if it is of `kind` and in the scene."""
    settings = _settings(scene)
    try:
        obj = settings.get(key) if settings is not None else None
        if obj is not None and getattr(obj, "type", None) == kind and scene.objects.get(obj.name) is not None:
            return obj
    except Exception:                              # noqa: BLE001
        pass
    return None


def _mapping_for(scene, armature, mapping_file: Path | None) -> dict:
    from engine.rig import mapping as mapping_mod
    if mapping_file is not None:
        mapping, how = _read_mapping_file(mapping_file, armature), f"from {mapping_file}"
    else:
        mapping, how = _saved_mapping(scene, armature), "saved in the .blend"
        if mapping is None:
            mapping, how = mapping_mod.auto_map(armature), "auto-detected"
    missing = mapping_mod.required_missing(mapping)
    if missing:
        raise UserError(f"armature {armature.name!r}: no bone found for {', '.join(missing)} "
                        f"({how}); pass --mapping FILE")
    log.info("bone mapping %s (%s)", how, mapping.get("preset", "custom") if isinstance(mapping, dict) else "custom")
    return mapping


def _find_armature(bpy, scene, name: str | None, what: str = "the .blend"):
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "ARMATURE":
            have = ", ".join(repr(o.name) for o in arms) or "none"
            raise UserError(f"no armature named {name!r} (armatures: {have})")
        return obj
    if not arms:
        raise UserError(f"{what} has no armature in its scene {scene.name!r}")
    saved = _saved_object(scene, "armature", "ARMATURE")
    if saved is not None:
        return saved
    if len(arms) > 1:
        log.info("%d armatures; using %r (pick one with --armature)", len(arms), arms[0].name)
    return arms[0]


def _find_camera(bpy, scene, name: str | None, what: str = "the .blend"):
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "CAMERA":
            have = ", ".join(repr(o.name) for o in scene.objects if o.type == "CAMERA") or "none"
            raise UserError(f"no camera named {name!r} (cameras: {have})")
        return obj
    if scene.camera is not None:
        return scene.camera
    cams = [o for o in scene.objects if o.type == "CAMERA"]
    if not cams:
        raise UserError(f"{what} has no camera in its scene {scene.name!r} (add one, or name it with --camera)")
    log.info("the scene has no active camera; using %r", cams[0].name)
    return cams[0]


STATS_FRAMES = 300      # rigs: body statistics from at most this many frames spread over the source


def _rig_frames(first: float, per_frame: float, src_fps: float, duration_frames: float,
                fps: float, frames: tuple[int, int] | None, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene frame numbers (fractional) to project: (all needed, positions of the asked range in
    them, positions of the statistics sample in them).

    Statistics cover the whole resampled source (so any range is normalized alike), sampled at
    STATS_FRAMES evenly spread frames when the source is longer: percentiles do not need more.
    """
    total = frame_count(duration_frames / src_fps, fps)
    start, stop = select(total, frames, fps, what)
    stats_idx = np.arange(total) if total <= STATS_FRAMES else np.unique(
        np.linspace(0, total - 1, STATS_FRAMES).round().astype(int))
    need = np.union1d(np.arange(start, stop), stats_idx)
    at = first + need * (src_fps / fps) * per_frame
    return at, np.searchsorted(need, np.arange(start, stop)), np.searchsorted(need, stats_idx)


def _project(scene, armature, camera, mapping, at: np.ndarray, quiet: bool = True) -> np.ndarray:
    """(N, J, 3) keypoints at scene frames `at`, which may be fractional (resampling: the add-on
    sets those as sub-frames, so F-curves are evaluated between keys). A bar for long sources."""
    from tqdm import tqdm

    from engine.rig import projection
    step = 100
    out = np.zeros((len(at), NUM_JOINTS, 3), np.float32)
    with tqdm(total=len(at), desc="project", unit="frame", disable=quiet or len(at) < 2 * step, leave=False) as bar:
        for i in range(0, len(at), step):
            try:
                out[i:i + step] = projection.project_frames(scene, armature, camera, mapping,
                                                            [float(f) for f in at[i:i + step]])
            except ValueError as e:              # the add-on's one-line explanations
                raise UserError(str(e).splitlines()[0]) from None
            bar.update(len(at[i:i + step]))
    return out


def load_blend(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
               armature: str | None = None, camera: str | None = None, mapping: Path | None = None,
               verbose: bool = False, quiet: bool = True) -> Motion:
    """A .blend's animation through its scene camera, over the scene frame range."""
    check_blend(path)
    bpy = _bpy()
    try:
        with quiet_fds(verbose):
            result = bpy.ops.wm.open_mainfile(filepath=str(Path(path).resolve()), load_ui=False)
    except RuntimeError as e:
        raise UserError(f"Blender could not open {path} ({str(e).strip().splitlines()[-1]})") from None
    if "FINISHED" not in result:
        raise UserError(f"Blender could not open {path}")
    scene = bpy.context.scene
    arm = _find_armature(bpy, scene, armature, Path(path).name)
    cam = _find_camera(bpy, scene, camera, Path(path).name)
    mp = _mapping_for(scene, arm, mapping)
    src_fps = scene.render.fps / (scene.render.fps_base or 1.0)
    fps = fps or src_fps
    at, sel, sample = _rig_frames(scene.frame_start, 1.0, src_fps, scene.frame_end - scene.frame_start,
                                  fps, frames, f"{path} (frames {scene.frame_start}-{scene.frame_end})")
    from engine.rig import projection
    with projection.skins_hidden(arm):               # no skinning while poses are read: ~3x faster
        kp = _project(scene, arm, cam, mp, at, quiet)
    stats = body_stats(kp[sample])
    if stats is None:
        raise UserError(f"{path}: armature {arm.name!r} never shows a whole body through camera {cam.name!r}")
    return Motion(keypoints=kp[sel], source_size=_render_size(scene), fps=fps, mode="clip",
                  source_stats=stats, first=_first(frames), kind="blend")


def _first(frames: tuple[int, int] | None) -> int:
    return frames[0] if frames else 1


def load_bvh(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
             mapping: Path | None = None, verbose: bool = False, quiet: bool = True) -> Motion:
    """A BVH imported into an empty scene, auto-mapped, seen by an automatic front camera."""
    info = check_bvh(path)
    bpy = _bpy()
    from engine.rig import retarget
    with quiet_fds(verbose):
        bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    # The scene runs at the BVH's own rate, so every BVH frame is keyed on a whole scene frame
    # (no rescaling of keys); other rates are then evaluated at sub-frames.
    scene.render.fps = max(1, round(info.fps))
    scene.render.fps_base = scene.render.fps / info.fps
    try:
        with quiet_fds(verbose):
            arm = retarget.import_bvh(str(Path(path).resolve()), scene)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"Blender could not import {path} ({str(e).strip().splitlines()[-1]})") from None
    mp = _mapping_for(scene, arm, mapping)
    # Where the importer put BVH frame 0 and how many scene frames one BVH frame spans.
    first, last = _action_range(arm, info.frames)
    per_frame = (last - first) / max(info.frames - 1, 1)
    fps = fps or info.fps
    at, sel, sample = _rig_frames(first, per_frame, info.fps, info.frames - 1, fps, frames, str(path))
    try:
        with quiet_fds(verbose):
            cam = retarget.frame_camera(scene, arm, list(at[sample]), mp)   # frames the whole motion
    except ValueError as e:
        raise UserError(f"{path}: {str(e).splitlines()[0]}") from None
    kp = _project(scene, arm, cam, mp, at, quiet)
    stats = body_stats(kp[sample])
    if stats is None:
        raise UserError(f"{path}: the auto-mapped skeleton never shows a whole body")
    return Motion(keypoints=kp[sel], source_size=_render_size(scene), fps=fps, mode="clip",
                  source_stats=stats, first=_first(frames), kind="bvh")


def _render_size(scene) -> tuple[int, int]:
    from engine.rig import projection
    w, h = projection.render_size(scene)
    return int(w), int(h)


def _action_range(armature, frames: int) -> tuple[float, float]:
    """First and last scene frame of the imported BVH animation."""
    ad = armature.animation_data
    if ad is not None and ad.action is not None:
        lo, hi = ad.action.frame_range
        if hi > lo or frames == 1:
            return float(lo), float(hi)
    return 1.0, float(frames)


# --- entry point ------------------------------------------------------------------------------

def precheck(path: str | Path, fps: float | None = None, mapping: str | Path | None = None,
             frames: tuple[int, int] | None = None) -> str:
    """Cheap checks before any model or bpy work: extension, existence, --fps, --mapping, and the
    file's own structure for .bvh and .blend. Returns the lower-case extension; UserError otherwise."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"unknown motion file type {path.suffix or '(none)'!r} for {path.name}: "
                        "use .blend, .bvh, .npz, .mp4 or .mov")
    check_exists(path)
    _check_fps(fps)
    if frames is not None and (frames[0] < 1 or frames[1] < frames[0]):
        raise UserError(f"--frames {frames[0]}:{frames[1]}: frames are numbered from 1 and the range must "
                        "not end before it starts")
    if mapping is not None:
        if ext not in RIG_EXTENSIONS:
            raise UserError(f"--mapping applies to .blend and .bvh motions, not {ext}")
        if not Path(mapping).is_file():
            raise UserError(f"mapping file not found: {mapping}")
    if ext == ".bvh":
        check_bvh(path)
    elif ext == ".blend":
        check_blend(path)
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
        return load_npz(path, fps, frames)
    if ext == ".bvh":
        return load_bvh(path, fps, frames, mapping, verbose, quiet)
    if ext == ".blend":
        return load_blend(path, fps, frames, armature, camera, mapping, verbose, quiet)
    return load_video(path, fps, frames, Path(pose_model) if pose_model else None, panel, quiet)
