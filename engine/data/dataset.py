"""Build a pix2pix training set (skeleton image, video frame) from dance videos.

    pix2dance dataset dance.mp4 more.mp4 --out data/alice --fps 10 --size 256
    build(["dance.mp4"], "data/alice", fps=10, size=256)       # the same from Python
    (engine.data.pairs reads it back: load_pairs("data/alice", "train"))

Two passes per clip. Pass 1 samples the video at `fps` (video.frames: decodes only what it needs,
in a thread so decoding overlaps MediaPipe), finds people (pose.PoseEstimator, VIDEO mode) and
drops unusable frames by reason. Then one square crop is fixed per clip from robust percentiles of
the per-frame person boxes (a ghost in a few frames must not widen it), plus a margin, shifted into
the frame where it fits and padded with black where it does not; never stretched. Pass 2 crops,
resizes, draws the skeleton (engine.data.skeleton.draw, the one drawing code) and writes PNGs from a
small thread pool. The last `val_fraction` of each clip's kept frames is the validation split,
after a gap, so that no neighbouring frames fall on both sides. The layout written (atomically) is
docs/architecture.md's "Dataset directory".
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.data import video
from engine.data.prefetch import Prefetch
from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.wire.joints import CORE, INDEX, JOINTS, NUM_JOINTS, VISIBLE, body_stats

log = logging.getLogger(__name__)

FORMAT = 1
DROP_REASONS = ("no_person", "low_visibility", "two_people", "outside_crop")
MARGIN = 0.15          # crop margin around the dancer's extent, as a fraction of its larger side, each side
PERCENTILE = 2.0       # the extent is the 2nd..98th percentile of per-frame person boxes
GAP_SECONDS = 0.5      # frames dropped between train and val, per clip
MEMORY_BUDGET = 1 << 30  # bytes of sampled frames kept between the passes; beyond it, decode again
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast: ~3x quicker than the default for ~15% more bytes
SHEET_PAIRS = 16
_CORE = np.array([INDEX[n] for n in CORE])
# A frame must show the trunk (shoulders and hips: the body's frame and its measure) and all but
# MAX_HIDDEN_LIMB_JOINTS of the elbows, wrists, knees and ankles. An arm hidden behind the body
# while the dancer turns is a real pose whose skeleton simply lacks that arm; requiring every
# core joint threw away about 40% of dancer_long_320x240.mp4, turns above all.
_TRUNK = np.array([INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")])
_LIMBS = np.array([INDEX[n] for n in CORE if INDEX[n] not in _TRUNK])
MAX_HIDDEN_LIMB_JOINTS = 2


@dataclass(frozen=True)
class Crop:
    """A square in source pixels; it may reach outside the frame (that part is padded black)."""
    x: int
    y: int
    side: int

    def to_crop_pixels(self, kp: np.ndarray, size: int) -> np.ndarray:
        """(..., J, 3) keypoints in source pixels -> the same in pixels of the size x size crop."""
        out = np.array(kp, np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.x) * (size / self.side)
        out[..., 1] = (out[..., 1] - self.y) * (size / self.side)
        return out


@dataclass
class Sample:
    """One kept frame of a clip: keypoints in source pixels, and the frame when kept in memory."""
    index: int              # frame number in the video
    t: float                # seconds
    kp: np.ndarray          # (J, 3) float32, source pixels
    bgr: np.ndarray | None  # (H, W, 3) uint8, or None when pass 2 decodes again


@dataclass
class Clip:
    """One video's pass-1 result."""
    path: Path
    info: video.VideoInfo
    source: str                       # "mediapipe" or "given"
    width: int = 0                    # of the decoded frames (OpenCV applies rotation metadata,
    height: int = 0                   # so these may be the container's swapped)
    sampled: int = 0
    drops: Counter = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    crop: Crop | None = None
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    gap: int = 0


# --- decisions on one frame ---------------------------------------------------------------------

def classify(people: list[np.ndarray]) -> tuple[np.ndarray | None, str | None]:
    """(the dancer's keypoints, None) for a usable frame, or (None, drop reason).

    people: the persons found, most confident first. A second person counts only when its limbs
    are seen (mean core visibility >= VISIBLE): a faint ghost does not spoil the frame.
    """
    people = [p for p in people if np.isfinite(p).all() and (p[:, 2] >= VISIBLE).any()]
    if not people:
        return None, "no_person"
    if len(people) >= 2 and float(np.mean(people[1][_CORE, 2])) >= VISIBLE:
        return None, "two_people"
    kp = people[0]
    if np.any(kp[_TRUNK, 2] < VISIBLE) or np.sum(kp[_LIMBS, 2] < VISIBLE) > MAX_HIDDEN_LIMB_JOINTS:
        return None, "low_visibility"
    return kp, None


def person_box(kp: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around the visible joints of (J, 3) keypoints."""
    xy = kp[kp[:, 2] >= VISIBLE, :2]
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def clip_crop(kps, width: int, height: int, margin: float = MARGIN, q: float = PERCENTILE) -> Crop:
    """One square crop for a clip: the robust extent of the dancer over all frames, plus a margin.

    kps: (N, J, 3) keypoints of the kept frames in source pixels. The extent is the q-th percentile
    of the boxes' left/top edges and the (100 - q)-th of their right/bottom edges, so a few stray
    detections do not stretch it. The square is then moved into the frame where it fits.
    """
    boxes = np.array([person_box(k) for k in kps])  # (N, 4)
    x0, y0 = np.percentile(boxes[:, 0], q), np.percentile(boxes[:, 1], q)
    x1, y1 = np.percentile(boxes[:, 2], 100 - q), np.percentile(boxes[:, 3], 100 - q)
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin)
    side = max(16, int(math.ceil(side)))
    x = int(round((x0 + x1) / 2 - side / 2))
    y = int(round((y0 + y1) / 2 - side / 2))
    # Inside the frame where the square fits; where it does not, it covers the frame's whole span.
    x = min(max(x, min(0, width - side)), max(0, width - side))
    y = min(max(y, min(0, height - side)), max(0, height - side))
    return Crop(x, y, side)


def crop_image(image: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    """The crop of an (H, W, 3) image, padded black outside the frame, resized to (size, size, 3)."""
    h, w = image.shape[:2]
    x0, y0 = max(crop.x, 0), max(crop.y, 0)
    x1, y1 = min(crop.x + crop.side, w), min(crop.y + crop.side, h)
    part = image[y0:y1, x0:x1]
    pads = (y0 - crop.y, crop.y + crop.side - y1, x0 - crop.x, crop.x + crop.side - x1)
    if any(pads):
        part = cv2.copyMakeBorder(part, *pads, cv2.BORDER_CONSTANT, value=0)
    interpolation = cv2.INTER_AREA if crop.side > size else cv2.INTER_LINEAR
    return cv2.resize(part, (size, size), interpolation=interpolation)


def split_clip(samples: list[Sample], val_fraction: float, gap: int) -> tuple[list[Sample], list[Sample], int]:
    """(train, val, frames dropped in the gap): val is the last part of the clip in time."""
    samples = sorted(samples, key=lambda s: s.t)
    n = len(samples)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2 + gap:
        n_val = 1
    if n_val == 0 or n_val + gap >= n:
        return samples, [], 0
    return samples[: n - n_val - gap], samples[n - n_val:], gap


# --- pass 1: poses ------------------------------------------------------------------------------

def _decoded(path: Path, fps: float):
    """(Frame, RGB) pairs: the conversion for MediaPipe also runs in the decoding thread."""
    for f in video.frames(path, fps):
        yield f, cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB)


def detect_clip(path: Path, info: video.VideoInfo, fps: float, model: Path | None,
                given: np.ndarray | None, keep_frames: bool, bar) -> Clip:
    """Pass 1 on one video: sample, find the dancer, count drops; frames kept when keep_frames."""
    clip = Clip(path, info, "given" if given is not None else "mediapipe")

    def take(frame: video.Frame, people: list[np.ndarray]) -> None:
        clip.sampled += 1
        clip.height, clip.width = frame.bgr.shape[:2]
        kp, reason = classify(people)
        if reason:
            clip.drops[reason] += 1
        else:
            clip.samples.append(Sample(frame.index, frame.t, kp, frame.bgr if keep_frames else None))
        bar.update(1)

    if given is not None:
        for frame in video.frames(path, fps):
            kp = given[frame.index] if frame.index < len(given) else None
            take(frame, [] if kp is None else [np.asarray(kp, np.float32)])
        return clip
    from engine.data.pose import PoseEstimator
    with PoseEstimator(model, num_poses=2) as estimator:
        for frame, rgb in Prefetch(_decoded(path, fps), depth=8, name="pix2dance-decode"):
            take(frame, estimator.detect(rgb, frame.t * 1000.0))
    return clip


def fit_crop(clip: Clip, size: int) -> None:
    """Fix the clip's crop; joints that fall outside it are hidden, or drop the frame if core."""
    clip.crop = clip_crop(np.stack([s.kp for s in clip.samples]), clip.width, clip.height)
    kept = []
    for s in clip.samples:
        kp = clip.crop.to_crop_pixels(s.kp, size)
        outside = (kp[:, 0] < 0) | (kp[:, 0] > size) | (kp[:, 1] < 0) | (kp[:, 1] > size)
        seen_outside = outside & (kp[:, 2] >= VISIBLE)
        if seen_outside[_CORE].any():
            clip.drops["outside_crop"] += 1
            continue
        kp[seen_outside, 2] = 0.0  # a face point or toe beyond the crop: not drawn
        s.kp = kp
        kept.append(s)
    clip.samples = kept


# --- pass 2: writing ----------------------------------------------------------------------------

class _Pool:
    """Per-pair work (crop, draw, PNG encoding) on a few threads, with a bounded backlog.

    OpenCV's resize and imwrite release the GIL, so on two cores the pairs of pass 2 are made
    about twice as fast as in one thread; the backlog bounds the frames held in memory.
    """

    def __init__(self, workers: int = 2, backlog: int = 16):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pairs")
        self._pending: list[Future] = []
        self._backlog = backlog
        self.results: list = []

    def submit(self, fn, *args) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        if len(self._pending) > self._backlog:
            self.results.append(self._pending.pop(0).result())

    def close(self) -> None:
        try:
            for f in self._pending:
                self.results.append(f.result())
            self._pending = []
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _imwrite(path: Path, bgr: np.ndarray) -> None:
    if not cv2.imwrite(str(path), bgr, PNG):
        raise OSError(f"could not write {path}")


def make_pair(bgr: np.ndarray, kp: np.ndarray, crop: Crop, size: int, root: Path, split: str, number: int,
              keep: bool):
    """Crop the frame, draw the skeleton, write both PNGs; (skeleton, frame, split) BGR if keep."""
    from engine.data.skeleton import draw
    frame = crop_image(bgr, crop, size)
    skeleton = cv2.cvtColor(draw(kp, size), cv2.COLOR_RGB2BGR)
    _imwrite(root / split / "skeleton" / f"{number:06d}.png", skeleton)
    _imwrite(root / split / "frame" / f"{number:06d}.png", frame)
    return (skeleton, frame, split) if keep else None


def _frames_of(clip: Clip, fps: float):
    """The clip's kept samples with their frames, from memory or decoded again (same sampler)."""
    if all(s.bgr is not None for s in clip.samples):
        yield from clip.samples
        return
    wanted = {s.index: s for s in clip.samples}
    for frame in video.frames(clip.path, fps):
        s = wanted.get(frame.index)
        if s is not None:
            s.bgr = frame.bgr
            yield s
            s.bgr = None


def write_pairs(clips: list[Clip], root: Path, fps: float, size: int, bar, sheet: set[int]):
    """Write train/ and val/ pairs; returns the keypoints.npz arrays and the contact sheet's tiles."""
    for split in ("train", "val"):
        (root / split / "skeleton").mkdir(parents=True)
        (root / split / "frame").mkdir(parents=True)
    rows = {"keypoints": [], "split": [], "index": [], "time": [], "source": []}
    counter = {"train": 0, "val": 0}
    pool = _Pool()
    try:
        for source, clip in enumerate(clips):
            split_of = {id(s): "train" for s in clip.train} | {id(s): "val" for s in clip.val}
            for s in _frames_of(clip, fps):
                split = split_of.get(id(s))
                if split is None:  # in the gap between train and val
                    s.bgr = None
                    continue
                number = counter[split]
                counter[split] += 1
                keep = sum(counter.values()) - 1 in sheet  # for the contact sheet
                pool.submit(make_pair, s.bgr, s.kp, clip.crop, size, root, split, number, keep)
                s.bgr = None  # the job holds the frame until it is written
                rows["keypoints"].append(s.kp)
                rows["split"].append(0 if split == "train" else 1)
                rows["index"].append(number)
                rows["time"].append(s.t)
                rows["source"].append(source)
                bar.update(1)
    finally:
        pool.close()
    tiles = [r for r in pool.results if r is not None]
    arrays = {
        "keypoints": np.asarray(rows["keypoints"], np.float32).reshape(-1, NUM_JOINTS, 3),
        "split": np.asarray(rows["split"], np.int8),
        "index": np.asarray(rows["index"], np.int32),
        "time": np.asarray(rows["time"], np.float64),
        "source": np.asarray(rows["source"], np.int16),
        "size": np.int32(size),
        "fps": np.float64(fps),
    }
    return arrays, tiles


def contact_sheet(tiles, size: int, columns: int = 4) -> np.ndarray:
    """A grid of (skeleton | frame) pairs, BGR, validation pairs marked 'val'."""
    thumb = min(size, 128)
    gap = 4
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = np.full((rows * (thumb + gap) + gap, columns * (2 * thumb + gap) + gap, 3), 48, np.uint8)
    for i, (skeleton, frame, split) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (thumb + gap), gap + c * (2 * thumb + gap)
        pair = np.concatenate([cv2.resize(skeleton, (thumb, thumb), interpolation=cv2.INTER_AREA),
                               cv2.resize(frame, (thumb, thumb), interpolation=cv2.INTER_AREA)], axis=1)
        if split == "val":
            cv2.putText(pair, "val", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y:y + thumb, x:x + 2 * thumb] = pair
    return sheet


# --- checks before any work ---------------------------------------------------------------------

def check_output(out: Path, force: bool) -> None:
    """UserError unless `out` can be created (or, with force, replaced) by this user."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"output {out} exists and is not a folder")
        if not force:
            raise UserError(f"output {out} already exists (use --force to replace it)")
        if any(out.iterdir()) and not (out / "dataset.json").exists():
            raise UserError(f"refusing to replace {out}: it is not a dataset folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out}: {parent} is not writable")


def check_args(fps: float, size: int, val_fraction: float) -> None:
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise UserError(f"--fps must be a positive number of frames per second, got {fps}")
    if not 16 <= size <= 4096:
        raise UserError(f"--size must be between 16 and 4096 pixels, got {size}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")


# --- the command --------------------------------------------------------------------------------

def build(videos, out, fps: float = 10, size: int = 256, pose_model=None, val_fraction: float = 0.1,
          quiet: bool = False, keypoints=None, force: bool = False) -> dict:
    """Build a dataset folder from videos of one dancer; returns what dataset.json holds.

    keypoints: optional list, one entry per video, of None (find poses with MediaPipe) or a
    (num_video_frames, J, 3) array of known skeletons in video pixels, by the video's frame number.
    """
    from tqdm import tqdm
    start = time.perf_counter()
    videos = [Path(v) for v in videos]
    out = Path(out)
    if not videos:
        raise UserError("no videos given")
    check_args(fps, size, val_fraction)
    keypoints = list(keypoints) if keypoints is not None else [None] * len(videos)
    if len(keypoints) != len(videos):
        raise ValueError(f"keypoints: {len(keypoints)} entries for {len(videos)} videos")
    for kp in keypoints:
        if kp is not None and (np.ndim(kp) != 3 or np.shape(kp)[1:] != (NUM_JOINTS, 3)):
            raise ValueError(f"keypoints must be (frames, {NUM_JOINTS}, 3), got {np.shape(kp)}")
    check_output(out, force)
    infos = [video.probe(v) for v in videos]
    model = None
    if any(kp is None for kp in keypoints):
        from engine.data.pose import resolve_model
        model = resolve_model(pose_model)

    # Pass 1: poses. Sampled frames stay in memory (BGR) while they fit the budget.
    bars = True if quiet else None  # None: tqdm shows bars only on a terminal (logs stay clean)
    estimates = [max(1, math.ceil(i.duration * min(fps, i.fps))) for i in infos]
    budget = MEMORY_BUDGET
    clips = []
    with tqdm(total=sum(estimates), desc="poses", unit="frame", disable=bars, leave=False) as bar:
        for path, info, given, estimate in zip(videos, infos, keypoints, estimates):
            need = estimate * info.width * info.height * 3
            keep = need <= budget
            budget -= need if keep else 0
            clips.append(detect_clip(path, info, fps, model, given, keep, bar))

    for clip in clips:
        if not clip.samples:
            if not clip.drops["two_people"]:
                raise UserError(f"no person found in {clip.path}: none of its {clip.sampled} sampled frames "
                                f"shows a whole body ({_drops_text(clip.drops)})")
            raise UserError(f"no usable frame in {clip.path}: {_drops_text(clip.drops)} of {clip.sampled} sampled")
        fit_crop(clip, size)
        if not clip.samples:
            raise UserError(f"no usable frame in {clip.path}: the dancer never fits one crop")
        gap = max(1, math.ceil(GAP_SECONDS * fps))
        clip.train, clip.val, clip.gap = split_clip(clip.samples, val_fraction, gap)
    n_train, n_val = sum(len(c.train) for c in clips), sum(len(c.val) for c in clips)
    pass1 = time.perf_counter()
    log.debug("pass 1 (probe, model, decode, poses): %.2f s", pass1 - start)
    if val_fraction > 0 and n_val == 0:
        log.warning("too few frames for a validation split: every pair is in train")

    # Pass 2: crop, draw, write; all in a temporary folder renamed to `out` at the end.
    try:
        with atomic_dir(out) as root, \
                tqdm(total=n_train + n_val, desc="pairs", unit="pair", disable=bars, leave=False) as bar:
            sheet = set(np.linspace(0, n_train + n_val - 1, SHEET_PAIRS).round().astype(int).tolist())
            arrays, tiles = write_pairs(clips, root, fps, size, bar, sheet)
            np.savez_compressed(root / "keypoints.npz", **arrays)
            if not cv2.imwrite(str(root / "contact_sheet.png"), contact_sheet(tiles, size)):
                raise OSError(f"could not write {root / 'contact_sheet.png'}")
            meta = _metadata(clips, arrays, fps, size, val_fraction, model, time.perf_counter() - start)
            (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    meta["seconds"] = round(time.perf_counter() - start, 2)
    log.debug("pass 2 (crop, draw, write): %.2f s", time.perf_counter() - pass1)
    drops = Counter()
    for c in clips:
        drops.update(c.drops)
    gaps = sum(c.gap for c in clips)
    log.info("dataset %s: kept %d (train %d, val %d), dropped %d (%s, gap %d), %.1f s",
             out, n_train + n_val, n_train, n_val, sum(drops.values()) + gaps, _drops_text(drops), gaps,
             meta["seconds"])
    return meta


def _drops_text(drops: Counter) -> str:
    return ", ".join(f"{r} {drops.get(r, 0)}" for r in DROP_REASONS)


def _metadata(clips, arrays, fps, size, val_fraction, model, seconds) -> dict:
    drops = Counter()
    for c in clips:
        drops.update(c.drops)
    return {
        "format": FORMAT,
        "counts": {"train": int((arrays["split"] == 0).sum()), "val": int((arrays["split"] == 1).sum())},
        "fps": fps,
        "size": size,
        "joints": list(JOINTS),
        "sources": [{
            "video": str(c.path),
            "width": c.width,
            "height": c.height,
            "source_fps": c.info.fps,
            "crop": {"x": c.crop.x, "y": c.crop.y, "side": c.crop.side},
            "sampled": c.sampled,
            "kept": len(c.train) + len(c.val),
            "train": len(c.train),
            "val": len(c.val),
            "gap": c.gap,
            "drops": {r: c.drops.get(r, 0) for r in DROP_REASONS},
            "keypoints_from": c.source,
        } for c in clips],
        "drops": {r: drops.get(r, 0) for r in DROP_REASONS},
        "split": {"by": "time", "val_fraction": val_fraction, "gap_frames": max(1, math.ceil(GAP_SECONDS * fps)),
                  "gap_seconds": GAP_SECONDS},
        "crop": {"margin": MARGIN, "percentile": PERCENTILE, "pad": "black"},
        "stats": body_stats(list(arrays["keypoints"])),
        "pose_model": Path(model).name if model else None,
        "seconds": round(seconds, 2),
    }
