"""Build a pix2pix training set (skeleton, frame, mask) from dance videos, person-centred, with a plate per clip.

    pix2dance dataset dance.mp4 more.mp4 --out data/alice --fps 10 --size 256
    build(["dance.mp4"], "data/alice", fps=10, size=256)       # the same from Python
    (engine.data.pairs reads it back: load_pairs("data/alice", "train"), load_masks, load_plates)

Pass 1 per clip samples the video at `fps` (video.frames: decodes only what it needs, in a thread
so decoding overlaps MediaPipe), finds people and their segmentation masks (pose.PoseEstimator,
VIDEO mode) and drops unusable frames by reason (engine.data.selection), "mask_mismatch" among
them. Then each kept frame gets its person-centred crop (engine.data.framing.person_crops: centred
on the body, sized by it, smoothed over the clip; framing.DEFAULT, recorded in dataset.json), and
the clip is split in time: the last `val_fraction` of its kept frames is the validation split,
after a gap, so that no neighbouring frames fall on both sides. Pass 2 crops the frame and the
mask, draws the skeleton (engine.data.skeleton.draw, the one drawing code) and writes PNGs from a
small thread pool; the clip's background plate (engine.data.plate, from its training frames) is
built on the way. The layout written (atomically) is docs/architecture.md's "Dataset directory".
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.atomic import atomic_dir
from engine.data import framing, video
from engine.data.plate import build_plate, spread
from engine.data.prefetch import Prefetch
from engine.data.selection import DROP_REASONS, CORE_INDEX, BoxedMask, classify, mask_mismatch
from engine.errors import UserError
from engine.wire.joints import JOINTS, NUM_JOINTS, VISIBLE, body_stats

log = logging.getLogger(__name__)

FORMAT = 2
GAP_SECONDS = 0.5      # frames dropped between train and val, per clip
MEMORY_BUDGET = 1 << 30  # bytes of sampled frames kept between the passes; beyond it, decode again
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]  # fast: ~3x quicker than the default
SHEET_PAIRS = 16
PLATES = "plates"


@dataclass
class Sample:
    """One kept frame of a clip: keypoints (source pixels, then crop pixels), mask, crop; the frame when in memory."""
    index: int                      # frame number in the video
    t: float                        # seconds
    kp: np.ndarray                  # (J, 3) float32, source pixels
    mask: BoxedMask | None = None   # the dancer's segmentation mask
    bgr: np.ndarray | None = None   # (H, W, 3) uint8, or None when pass 2 decodes again
    crop: np.ndarray | None = None  # (cx, cy, side) float32 in source pixels (framing.person_crops)
    kp_crop: np.ndarray | None = None  # (J, 3) float32 in pixels of the size x size crop


@dataclass
class Clip:
    """One video's pass-1 result, then its crops, split and plate."""
    path: Path
    info: video.VideoInfo
    source: str                       # "mediapipe" or "given"
    width: int = 0                    # of the decoded frames (rotation applied: may be the container's swapped)
    height: int = 0
    sampled: int = 0
    drops: Counter = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    gap: int = 0
    plate: str | None = None          # plates/NNN.png, relative to the dataset folder
    plate_note: str = ""              # why there is none
    plate_residual: float | None = None


# --- decisions on a clip ------------------------------------------------------------------------

def frame_clip(clip: Clip, fps: float, size: int, frame_with: framing.Framing) -> None:
    """Each kept frame's person-centred crop; core joints outside it drop the frame ("outside_crop"),
    other joints outside it (a raised hand's fingertips, a toe) are hidden."""
    crops = framing.person_crops(np.stack([s.kp for s in clip.samples]), fps, frame_with)
    kept = []
    for s, crop in zip(clip.samples, crops):
        kp = framing.to_crop(s.kp[None], crop[None], size)[0]
        outside = (kp[:, 0] < 0) | (kp[:, 0] > size) | (kp[:, 1] < 0) | (kp[:, 1] > size)
        seen_outside = outside & (kp[:, 2] >= VISIBLE)
        if seen_outside[CORE_INDEX].any():
            clip.drops["outside_crop"] += 1
            continue
        kp[seen_outside, 2] = 0.0
        s.crop, s.kp_crop = crop, kp
        kept.append(s)
    clip.samples = kept


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


# --- pass 1: poses and masks --------------------------------------------------------------------

def _decoded(path: Path, fps: float):
    """(Frame, RGB) pairs: the conversion for MediaPipe also runs in the decoding thread."""
    for f in video.frames(path, fps):
        yield f, cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB)


def detect_clip(path: Path, info: video.VideoInfo, fps: float, model: Path | None, given: np.ndarray | None,
                given_masks: np.ndarray | None, keep_frames: bool, bar) -> Clip:
    """Pass 1 on one video: sample, find the dancer and her mask, count drops; frames kept when keep_frames."""
    from engine.data.pose import Person
    clip = Clip(path, info, "given" if given is not None else "mediapipe")

    def take(frame: video.Frame, people: list[Person]) -> None:
        clip.sampled += 1
        clip.height, clip.width = frame.bgr.shape[:2]
        kp, reason = classify([p.keypoints for p in people])
        mask = None
        if not reason:
            mask = next(p.mask for p in people if p.keypoints is kp)
            if mask is None or mask.shape != (clip.height, clip.width):
                raise UserError(f"{path}: frame {frame.index} has no person mask of the frame's size "
                                f"({clip.width} x {clip.height})")
            mask = BoxedMask.of(mask)
            if mask_mismatch(kp, mask):
                reason = "mask_mismatch"
        if reason:
            clip.drops[reason] += 1
        else:
            clip.samples.append(Sample(frame.index, frame.t, kp, mask, frame.bgr if keep_frames else None))
        bar.update(1)

    if given is not None:
        for frame in video.frames(path, fps):
            i = frame.index
            found = i < len(given) and i < len(given_masks)
            take(frame, [Person(np.asarray(given[i], np.float32), np.asarray(given_masks[i], np.uint8))] if found else [])
        return clip
    from engine.data.pose import PoseEstimator
    with PoseEstimator(model, num_poses=2, masks=True) as estimator:
        for frame, rgb in Prefetch(_decoded(path, fps), depth=8, name="pix2dance-decode"):
            take(frame, estimator.people(rgb, frame.t * 1000.0))
    return clip


# --- pass 2: writing ----------------------------------------------------------------------------

class _Pool:
    """Per-pair work (crop, draw, PNG encoding) on a few threads, with a bounded backlog.

    OpenCV's warps and imwrite release the GIL, so on two cores the pairs of pass 2 are made
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


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, PNG):
        raise OSError(f"could not write {path}")


def make_pair(bgr: np.ndarray, s: Sample, size: int, root: Path, split: str, number: int, keep: bool):
    """Crop the frame and the mask, draw the skeleton, write the three PNGs; (frame, skeleton, mask, split) if keep."""
    from engine.data.skeleton import draw
    frame = framing.crop_image(bgr, s.crop, size)
    mask = s.mask.crop(s.crop, size)
    skeleton = cv2.cvtColor(draw(s.kp_crop, size), cv2.COLOR_RGB2BGR)
    _imwrite(root / split / "skeleton" / f"{number:06d}.png", skeleton)
    _imwrite(root / split / "frame" / f"{number:06d}.png", frame)
    _imwrite(root / split / "mask" / f"{number:06d}.png", mask)
    return (frame, skeleton, mask, split) if keep else None


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


def write_plate(clip: Clip, number: int, frames: list[np.ndarray], masks: list[np.ndarray], root: Path) -> None:
    """The clip's background plate from its spread training frames, as plates/NNN.png, or a note why none."""
    plate = build_plate(np.stack(frames), np.stack(masks).astype(np.float32) / 255.0)
    clip.plate_residual = None if math.isnan(plate.residual) else round(plate.residual, 2)
    if plate.image is None:
        clip.plate_note = plate.reason
        log.info("%s: %s", clip.path.name, plate.reason)
        return
    (root / PLATES).mkdir(exist_ok=True)
    clip.plate = f"{PLATES}/{number:03d}.png"
    _imwrite(root / clip.plate, plate.image)


def write_pairs(clips: list[Clip], root: Path, fps: float, size: int, bar, sheet: set[int]):
    """Write train/ and val/ triples and the plates; returns the keypoints.npz arrays and the contact sheet's tiles."""
    for split in ("train", "val"):
        for kind in ("skeleton", "frame", "mask"):
            (root / split / kind).mkdir(parents=True)
    rows: dict[str, list] = {k: [] for k in ("keypoints", "split", "index", "time", "source", "crops",
                                             "source_keypoints", "frame_index")}
    counter = {"train": 0, "val": 0}
    pool = _Pool()
    try:
        for source, clip in enumerate(clips):
            split_of = {id(s): "train" for s in clip.train} | {id(s): "val" for s in clip.val}
            voters = {id(clip.train[i]) for i in spread(len(clip.train))}   # the plate's frames
            plate_frames, plate_masks = [], []
            for s in _frames_of(clip, fps):
                split = split_of.get(id(s))
                if split is None:  # in the gap between train and val
                    s.bgr = None
                    continue
                if id(s) in voters:
                    plate_frames.append(s.bgr)
                    plate_masks.append(s.mask.full())
                number = counter[split]
                counter[split] += 1
                keep = sum(counter.values()) - 1 in sheet  # for the contact sheet
                pool.submit(make_pair, s.bgr, s, size, root, split, number, keep)
                s.bgr = None  # the job holds the frame until it is written
                for key, value in (("keypoints", s.kp_crop), ("split", 0 if split == "train" else 1),
                                   ("index", number), ("time", s.t), ("source", source), ("crops", s.crop),
                                   ("source_keypoints", s.kp), ("frame_index", s.index)):
                    rows[key].append(value)
                bar.update(1)
            write_plate(clip, source, plate_frames, plate_masks, root)
    finally:
        pool.close()
    tiles = [r for r in pool.results if r is not None]
    arrays = {
        "keypoints": np.asarray(rows["keypoints"], np.float32).reshape(-1, NUM_JOINTS, 3),
        "split": np.asarray(rows["split"], np.int8),
        "index": np.asarray(rows["index"], np.int32),
        "time": np.asarray(rows["time"], np.float64),
        "source": np.asarray(rows["source"], np.int16),
        "crops": np.asarray(rows["crops"], np.float32).reshape(-1, 3),
        "source_keypoints": np.asarray(rows["source_keypoints"], np.float32).reshape(-1, NUM_JOINTS, 3),
        "frame_index": np.asarray(rows["frame_index"], np.int64),
        "size": np.int32(size),
        "fps": np.float64(fps),
    }
    return arrays, tiles


def contact_sheet(tiles, size: int, columns: int = 4) -> np.ndarray:
    """A grid of frame | skeleton | mask triples, BGR, validation ones marked 'val'."""
    thumb = min(size, 128)
    gap = 4
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = np.full((rows * (thumb + gap) + gap, columns * (3 * thumb + gap) + gap, 3), 48, np.uint8)
    for i, (frame, skeleton, mask, split) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (thumb + gap), gap + c * (3 * thumb + gap)
        shrink = lambda image: cv2.resize(image, (thumb, thumb), interpolation=cv2.INTER_AREA)  # noqa: E731
        triple = np.concatenate([shrink(frame), shrink(skeleton), shrink(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))], axis=1)
        if split == "val":
            cv2.putText(triple, "val", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y:y + thumb, x:x + 3 * thumb] = triple
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


def _check_given(keypoints, masks, n: int) -> tuple[list, list]:
    keypoints = list(keypoints) if keypoints is not None else [None] * n
    masks = list(masks) if masks is not None else [None] * n
    if len(keypoints) != n or len(masks) != n:
        raise ValueError(f"keypoints and masks: {len(keypoints)} and {len(masks)} entries for {n} videos")
    for kp, m in zip(keypoints, masks):
        if kp is None:
            continue
        if np.ndim(kp) != 3 or np.shape(kp)[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"keypoints must be (frames, {NUM_JOINTS}, 3), got {np.shape(kp)}")
        if m is None or np.ndim(m) != 3:
            raise ValueError(f"given keypoints need their masks, (frames, H, W) uint8; got {np.shape(m) if m is not None else None}")
    return keypoints, masks


# --- the command --------------------------------------------------------------------------------

def build(videos, out, fps: float = 10, size: int = 256, pose_model=None, val_fraction: float = 0.1,
          quiet: bool = False, keypoints=None, masks=None, force: bool = False) -> dict:
    """Build a dataset folder from videos of one dancer; returns what dataset.json holds.

    keypoints, masks: optional lists, one entry per video, of None (find poses and masks with
    MediaPipe) or known skeletons, (num_video_frames, J, 3) in video pixels, with the dancer's
    masks, (num_video_frames, H, W) uint8 0-255 (the synthetic dancer's exact alpha), both by
    the video's frame number.
    """
    from tqdm import tqdm
    start = time.perf_counter()
    videos = [Path(v) for v in videos]
    out = Path(out)
    if not videos:
        raise UserError("no videos given")
    check_args(fps, size, val_fraction)
    keypoints, masks = _check_given(keypoints, masks, len(videos))
    check_output(out, force)
    infos = [video.probe(v) for v in videos]
    model = None
    if any(kp is None for kp in keypoints):
        from engine.data.pose import resolve_model
        model = resolve_model(pose_model)

    # Pass 1: poses and masks. Sampled frames stay in memory (BGR) while they fit the budget.
    bars = True if quiet else None  # None: tqdm shows bars only on a terminal (logs stay clean)
    estimates = [max(1, math.ceil(i.duration * min(fps, i.fps))) for i in infos]
    budget = MEMORY_BUDGET
    clips = []
    with tqdm(total=sum(estimates), desc="poses", unit="frame", disable=bars, leave=False) as bar:
        for path, info, given, given_masks, estimate in zip(videos, infos, keypoints, masks, estimates):
            need = estimate * info.width * info.height * 3
            keep = need <= budget
            budget -= need if keep else 0
            clips.append(detect_clip(path, info, fps, model, given, given_masks, keep, bar))

    gap = max(1, math.ceil(GAP_SECONDS * fps))
    frame_with = framing.DEFAULT   # a new dataset's framing; dataset.json records it, and runs follow it
    for clip in clips:
        if not clip.samples:
            if not clip.drops["two_people"] and not clip.drops["mask_mismatch"]:
                raise UserError(f"no person found in {clip.path}: none of its {clip.sampled} sampled frames "
                                f"shows a whole body ({_drops_text(clip.drops)})")
            raise UserError(f"no usable frame in {clip.path}: {_drops_text(clip.drops)} of {clip.sampled} sampled")
        frame_clip(clip, fps, size, frame_with)
        if not clip.samples:
            raise UserError(f"no usable frame in {clip.path}: the dancer never fits her crop")
        clip.train, clip.val, clip.gap = split_clip(clip.samples, val_fraction, gap)
    n_train, n_val = sum(len(c.train) for c in clips), sum(len(c.val) for c in clips)
    pass1 = time.perf_counter()
    log.debug("pass 1 (probe, model, decode, poses, masks, crops): %.2f s", pass1 - start)
    if val_fraction > 0 and n_val == 0:
        log.warning("too few frames for a validation split: every pair is in train")

    # Pass 2: crop, draw, write, plates; all in a temporary folder renamed to `out` at the end.
    try:
        with atomic_dir(out) as root, \
                tqdm(total=n_train + n_val, desc="pairs", unit="pair", disable=bars, leave=False) as bar:
            sheet = set(np.linspace(0, n_train + n_val - 1, SHEET_PAIRS).round().astype(int).tolist())
            arrays, tiles = write_pairs(clips, root, fps, size, bar, sheet)
            np.savez_compressed(root / "keypoints.npz", **arrays)
            if not cv2.imwrite(str(root / "contact_sheet.png"), contact_sheet(tiles, size)):
                raise OSError(f"could not write {root / 'contact_sheet.png'}")
            meta = _metadata(clips, arrays, fps, size, val_fraction, model, time.perf_counter() - start,
                             frame_with)
            (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    meta["seconds"] = round(time.perf_counter() - start, 2)
    log.debug("pass 2 (crop, draw, write, plates): %.2f s", time.perf_counter() - pass1)
    drops = Counter()
    for c in clips:
        drops.update(c.drops)
    gaps = sum(c.gap for c in clips)
    plates = sum(c.plate is not None for c in clips)
    log.info("dataset %s: kept %d (train %d, val %d), dropped %d (%s, gap %d), plates %d of %d, %.1f s",
             out, n_train + n_val, n_train, n_val, sum(drops.values()) + gaps, _drops_text(drops), gaps,
             plates, len(clips), meta["seconds"])
    return meta


def _drops_text(drops: Counter) -> str:
    return ", ".join(f"{r} {drops.get(r, 0)}" for r in DROP_REASONS)


def _stage(clips: list[Clip], arrays: dict) -> dict:
    """The dancer's own frame: the clip with most kept frames, its size and body statistics in its pixels."""
    best = max(range(len(clips)), key=lambda i: (len(clips[i].train) + len(clips[i].val), -i))
    mine = arrays["source"] == best
    return {"source": best, "width": clips[best].width, "height": clips[best].height,
            "stats": body_stats(list(arrays["source_keypoints"][mine]))}


def _metadata(clips, arrays, fps, size, val_fraction, model, seconds, frame_with: framing.Framing) -> dict:
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
            "plate": c.plate,
            "plate_note": c.plate_note,
            "plate_residual": c.plate_residual,
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
        "framing": asdict(frame_with),                  # {"side", "centre_up"}: framing.Framing.of reads it
        "stats": body_stats(list(arrays["keypoints"])),
        "stage": _stage(clips, arrays),
        "pose_model": Path(model).name if model else None,
        "seconds": round(seconds, 2),
    }
