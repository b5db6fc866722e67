"""Benchmark `pix2dance dataset` against the plain ways, measured side by side in one run.

    .venv/bin/python bench/dataset.py            # the 70 s main clip (a few minutes)
    .venv/bin/python bench/dataset.py --quick    # the 4 s clip (seconds)

Prints absolute figures and two ratios:
  1. decode: sampling at --fps by timestamp (engine.data.video.frames: grab() all, retrieve() the kept)
     against reading every frame (cap.read() each, keep the nearest to each tick). Target >= 2x.
  2. dataset: engine.data.dataset.build (decode, MediaPipe with masks, person-centred crops, plate,
     draw, write PNGs, json, sheet) in sampled frames per second, against a bare loop of the same
     decoding plus MediaPipe PoseLandmarker (same model and settings, segmentation masks on) on the
     same sampled frames. Target >= 0.8.
Both sides of each ratio run alternately, `--repeats` times each, and the best time counts
(the machine is shared; the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = Path(os.environ.get("PIX2DANCE_SAMPLES", ROOT.parent / "shared" / "data"))
MODELS = Path(os.environ.get("PIX2DANCE_MODELS", ROOT.parent / "shared" / "models"))


def plain_decode(path: Path, fps: float) -> int:
    """The plain way: read() (decode + convert) every frame, keep the one nearest each tick."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS)
    kept, i, target = 0, 0, 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / src_fps
        if t + 0.5 / src_fps >= target:
            kept += 1
            while target <= t + 0.5 / src_fps:
                target += 1.0 / fps
        i += 1
    cap.release()
    return kept


def sampled_decode(path: Path, fps: float) -> int:
    from engine.data import video
    return sum(1 for _ in video.frames(path, fps))


def bare_loop(path: Path, fps: float, model: Path) -> int:
    """Decode the sampled frames and run MediaPipe on each: nothing else."""
    import cv2
    from engine.data import pose, video  # noqa: F401  (pose sets the same log silencing before importing mediapipe)
    from engine.quiet import quiet_fds
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode
    import mediapipe as mp
    options = PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                    running_mode=RunningMode.VIDEO, num_poses=2, output_segmentation_masks=True)
    n, last = 0, -1
    with quiet_fds(what="MediaPipe"), PoseLandmarker.create_from_options(options) as landmarker:
        for f in video.frames(path, fps):
            rgb = cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB)
            ms = max(int(round(f.t * 1000)), last + 1)
            last = ms
            landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), ms)
            n += 1
    return n


def ours(path: Path, fps: float, model: Path, size: int) -> int:
    from engine.data import dataset
    tmp = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        meta = dataset.build([path], tmp / "ds", fps=fps, size=size, pose_model=model, quiet=True)
        return meta["sources"][0]["sampled"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def best_of(repeats: int, *runs):
    """Run each (name, fn) alternately `repeats` times; {name: (best seconds, frames)}."""
    best = {}
    for _ in range(repeats):
        for name, fn in runs:
            start = time.perf_counter()
            n = fn()
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 4 s clip: seconds, not minutes")
    parser.add_argument("--clip", type=Path, help="video to measure on (default: the main 70 s clip)")
    parser.add_argument("--model", type=Path, default=MODELS / "pose_landmarker_lite.task")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, help="runs of each side (default 3 quick, 1 full)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    clip = args.clip or SAMPLES / "video" / ("dancer_room.mp4" if args.quick else "dancer_long_320x240.mp4")
    repeats = args.repeats or (3 if args.quick else 1)
    for needed in (clip, args.model):
        if not needed.exists():
            sys.exit(f"bench/dataset.py: missing {needed}")
    from engine.data import pose, video  # noqa: F401  (import costs outside the timings)
    import mediapipe  # noqa: F401
    info = video.probe(clip)
    print(f"clip {clip.name}: {info.width}x{info.height}, {info.fps:.2f} fps, {info.frames} frames; "
          f"sampling at {args.fps:g} fps, size {args.size}, model {args.model.name}, best of {repeats}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (figures are wall-clock)")

    # Decoding is measured on the long clip in both modes (under a second a run): short runs are noise.
    long_clip = args.clip or SAMPLES / "video" / "dancer_long_320x240.mp4"
    frames = video.probe(long_clip).frames
    d = best_of(5, ("every frame", lambda: plain_decode(long_clip, args.fps)),
                ("sampled", lambda: sampled_decode(long_clip, args.fps)))
    (t_all, n_all), (t_s, n_s) = d["every frame"], d["sampled"]
    print(f"decode {long_clip.name}, best of 5:")
    print(f"decode  every frame (read all):      {t_all:7.3f} s  {frames / t_all:8.1f} source frames/s -> {n_all} kept")
    print(f"decode  sampled (grab + retrieve):   {t_s:7.3f} s  {frames / t_s:8.1f} source frames/s -> {n_s} kept")
    print(f"RATIO decode sampled vs every frame: {t_all / t_s:.2f}x  (target >= 2x)")

    r = best_of(repeats, ("bare", lambda: bare_loop(clip, args.fps, args.model)),
                ("dataset", lambda: ours(clip, args.fps, args.model, args.size)))
    (t_bare, n_bare), (t_ds, n_ds) = r["bare"], r["dataset"]
    print(f"bare loop (decode + MediaPipe+masks):{t_bare:7.2f} s  {n_bare / t_bare:6.1f} frames/s ({n_bare} frames)")
    print(f"pix2dance dataset (all of it):       {t_ds:7.2f} s  {n_ds / t_ds:6.1f} frames/s ({n_ds} frames)")
    print(f"RATIO dataset vs bare loop:          {(n_ds / t_ds) / (n_bare / t_bare):.2f}  (target >= 0.8)")
    print(f"machine load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
