"""Benchmark: sampled decoding through PyAV (engine.data.video.frames) against decoding every frame.

    .venv/bin/python bench/decode.py [--fps 10] [--repeat 3]

On each clip in ../shared/data/video (some H.264 with B-frames, one VP9, one 70 s long), side by
side in one run, best of `repeat` (the machine may be shared):
- sampled: video.frames(path, fps): timestamps read first, frames nobody needs skipped by the
  decoder where they are non-reference, gaps crossed by seeking, only kept frames converted;
- every frame: PyAV decoding and converting every frame, keeping the same ones (the plain way);
  both PyAV sides reuse one swscale context (frame.to_ndarray alone builds one per frame);
- OpenCV: cv2.VideoCapture grab() every frame, retrieve() the kept ones (the previous reader).
No target: decoding is a small share of building a dataset (MediaPipe is most of it). The load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
from av.video.reformatter import VideoReformatter  # noqa: E402

from engine.data import video  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402


def sampled(path: Path, fps: float) -> int:
    return sum(1 for _ in video.frames(path, fps))


def every_frame(path: Path, fps: float) -> int:
    """Decode and convert every frame (one reusable reformatter, as video.frames has); keep those
    nearest each tick (the same rule as video.frames)."""
    kept, target, step = 0, 0.0, 1.0 / fps
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        half = 0.5 / float(stream.average_rate or 30)
        start = None
        for frame in container.decode(stream):
            reformatter.reformat(frame, format="bgr24").to_ndarray()
            start = frame.pts if start is None else start
            t = float((frame.pts - start) * stream.time_base)
            if t + half >= target:
                kept += 1
                while target <= t + half:
                    target += step
    return kept


def opencv(path: Path, fps: float) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    kept, target, step = 0, 0.0, 1.0 / fps
    half = 0.5 / (cap.get(cv2.CAP_PROP_FPS) or 30)
    while cap.grab():
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if t + half >= target:
            cap.retrieve()
            kept += 1
            while target <= t + half:
                target += step
    cap.release()
    return kept


def best(fn, repeat: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - start)
    return min(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, default=10.0, help="sampling rate (default 10, the dataset's)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"sampling at {a.fps:g} frames/s; seconds are the best of {a.repeat}\n")
    print(f"{'clip':28s} {'codec':5s} {'frames':>6s} {'kept':>5s}  {'sampled':>8s} {'every':>8s} {'OpenCV':>8s}  "
          f"{'every/sampled':>13s} {'OpenCV/sampled':>14s}")
    for path in sorted((SAMPLES / "video").glob("*.mp4")):
        info = video.probe(path)
        with av.open(str(path)) as c:
            codec = c.streams.video[0].codec_context.name
        ours, n = best(lambda: sampled(path, a.fps), a.repeat)
        plain, n_plain = best(lambda: every_frame(path, a.fps), a.repeat)
        old, n_old = best(lambda: opencv(path, a.fps), a.repeat)
        print(f"{path.name:28s} {codec:5s} {info.frames:6d} {n:5d}  {ours:7.3f}s {plain:7.3f}s {old:7.3f}s  "
              f"{plain / ours:12.2f}x {old / ours:13.2f}x" + ("" if n == n_plain == n_old else
                                                             f"  (kept {n} / {n_plain} / {n_old})"))
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
