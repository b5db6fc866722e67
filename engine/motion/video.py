"""A video as a motion (motion transfer): MediaPipe poses of the one dancer, tracked, gap-filled, smoothed.

    motion = load(Path("dance.mp4"), fps=30, frames=(1, 90), pose_model=None, panel=256)

The video is decoded only over the asked range, at min(fps, its own rate); one person is followed
(`pick_person`), short gaps are bridged (`fill_gaps`), and the poses are smoothed over time.
Body statistics cover the analysed range only (a whole video would cost minutes).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.wire.joints import NUM_JOINTS, VISIBLE, body_stats

from .source import Motion, frame_count, interpolate, select

log = logging.getLogger(__name__)

MAX_GAP_S = 1.0               # frames without a person are bridged up to this long


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


def load(path: Path, fps: float | None = None, frames: tuple[int, int] | None = None,
               pose_model: Path | None = None, panel: int | None = None, quiet: bool = False) -> Motion:
    """Poses of the one dancer in a video, tracked, gap-filled and smoothed over time.

    The video is decoded at min(fps, its own rate), only over the asked range; a rate above the
    video's interpolates the smoothed poses (and repeats the nearest frame for side-by-side).
    panel: keep each analysed frame letterboxed into a panel x panel square (side-by-side).
    """
    from engine.data import video as video_io
    info = video_io.probe(path)
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

    from engine.data import pose
    from engine.data import video as video_io
    model = pose.resolve_model(pose_model)
    times, poses, found, images = [], [], [], []
    previous = None
    bar = tqdm(total=expected, desc="poses", unit="frame", disable=quiet, leave=False)
    with pose.PoseEstimator(model) as estimator:
        for i, (t, rgb) in enumerate(video_io.sample(path, fps)):
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
