"""Benchmark `pix2dance render` against the plain way, side by side in one run.

    .venv/bin/python bench/render.py            # a few minutes: 256 px, ngf 64, 96 BVH / 48 video frames
    .venv/bin/python bench/render.py --quick    # seconds: 128 px, ngf 16, 24 / 12 frames (each side 3 times, alternately)
    .venv/bin/python bench/render.py --device cuda --size 256 --ngf 64 --frames 240
    .venv/bin/python bench/render.py --quick --temporal  # a temporal run: frames in order, lanes fill a batch

1. From a BVH (CMU, resampled to 30 fps): frames/s of the whole `render` (BVH import, projection,
   normalization, drawing, generator, H.264 mp4 encoding) against the Predictor alone on the same
   keypoints (`Predictor.predict`, already projected, nothing written), both on the default
   backend (auto: OpenVINO on a CPU). Target: ratio >= 0.9.
2. From a video (motion transfer): frames/s of `render` against MediaPipe (the same estimator,
   the same frames) plus the Predictor, each run bare, one after the other.

The generator is untrained (same cost as a trained one). With --temporal it sees its previous output
(engine.model.temporal): both sides generate frame after frame through a Sequence over the whole
motion (the Predictor alone in one call, not in chunks: a sequence is generated as one). Both sides are warmed up first (model
load, bpy and MediaPipe start-up excluded on both sides); `render` is timed as the user's command
minus those one-time imports. Figures are printed; nothing is kept. The render's time is split
into the motion (BVH import and projection, or MediaPipe), the model load and the rest (inference
overlapped with drawing and encoding), so the fixed costs and the steady state can be told apart:
a short clip on a fast generator is dominated by Blender's BVH import (about 1-2 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import motion as motion_mod  # noqa: E402
from engine import render  # noqa: E402
from engine.model.predictor import Predictor  # noqa: E402
from tests.conftest import MODELS, SAMPLES, make_tiny_run  # noqa: E402

BVH = SAMPLES / "mocap" / "cmu_131_01_dance.bvh"
VIDEO = SAMPLES / "video" / "dancer_room.mp4"
POSE_MODEL = MODELS / "pose_landmarker_lite.task"


def predictor_alone(predictor: Predictor, m) -> float:
    """Seconds for Predictor.predict over the motion's keypoints, in the chunks render uses (a temporal
    run: in one call, its frames one sequence)."""
    chunk = len(m) if predictor.temporal else max(predictor.max_batch, 8)
    t = time.perf_counter()
    for start in range(0, len(m), chunk):
        predictor.predict(m.keypoints[start:start + chunk], m.source_size, m.mode, m.source_stats)
    return time.perf_counter() - t


def mediapipe_alone(path: Path, fps: float, n: int) -> float:
    """Seconds for MediaPipe over the first n frames sampled at fps (decoding included, as in render)."""
    from engine.data import pose, video
    t = time.perf_counter()
    with pose.PoseEstimator(POSE_MODEL) as est:
        for i, (ts, rgb) in enumerate(video.sample(path, fps)):
            if i >= n:
                break
            est.detect(rgb, ts * 1000)
    return time.perf_counter() - t


def timed_render(run: Path, source: Path, out: Path, fps: float, n: int, device: str, **kw) -> tuple[float, render.RenderResult]:
    t = time.perf_counter()
    result = render.run(run, source, out, fps=fps, frames=(1, n), device=device, quiet=True, **kw)
    return time.perf_counter() - t, result


def alternate(reps: int, plain, ours):
    """Run the plain way and ours alternately `reps` times; the fastest of each (the machine may
    be shared: the minimum is the least disturbed run)."""
    plains, ourss = [], []
    for _ in range(reps):
        plains.append(plain())
        ourss.append(ours())
    best_plain = min(plains, key=lambda r: sum(r) if isinstance(r, tuple) else r)   # seconds, or a tuple of them
    best_ours = min(ourss, key=lambda r: r[0])                                       # (seconds, RenderResult)
    return best_plain, best_ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds, small sizes")
    ap.add_argument("--size", type=int)
    ap.add_argument("--ngf", type=int)
    ap.add_argument("--frames", type=int, help="BVH frames (the video gets half)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--temporal", action="store_true", help="a temporal run (the generator sees its previous output)")
    a = ap.parse_args()
    size = a.size or (128 if a.quick else 256)
    ngf = a.ngf or (16 if a.quick else 64)
    n_bvh = a.frames or (24 if a.quick else 96)
    reps = 3 if a.quick else 1
    n_vid = max(n_bvh // 2, 4)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = make_tiny_run(tmp / "run", size=size, ngf=ngf, temporal=a.temporal)
        predictor = Predictor(run, device=a.device)
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
        print(f"generator {size} px, ngf {ngf}{', temporal' if predictor.temporal else ''}, "
              f"{predictor.backend.name} on {predictor.device}, batch {predictor.max_batch}")

        # Warm-up: imports (bpy, mediapipe, cv2 encoders) and the model's first call, on both sides.
        timed_render(run, BVH, tmp / "warm.mp4", 30, 4, a.device)
        timed_render(run, VIDEO, tmp / "warm2.mp4", 30, 2, a.device, pose_model=POSE_MODEL)

        # 1. BVH (each side run twice, the faster kept: the machine may be shared)
        m = motion_mod.load(BVH, fps=30, frames=(1, n_bvh))
        bare, (full, res) = alternate(reps, lambda: predictor_alone(predictor, m),
                                      lambda: timed_render(run, BVH, tmp / "bvh.mp4", 30, n_bvh, a.device))
        rest = full - res.motion_seconds - res.model_seconds
        print(f"BVH -> mp4, {n_bvh} frames at 30 fps (codec {res.codec}):")
        print(f"  render            {n_bvh / full:7.2f} frames/s  ({full:.2f} s: BVH import + projection "
              f"{res.motion_seconds:.2f} s, model load {res.model_seconds:.2f} s, inference + mp4 {rest:.2f} s)")
        print(f"  predictor alone   {n_bvh / bare:7.2f} frames/s  ({bare:.2f} s)")
        print(f"  ratio render / predictor: {bare / full:.3f} whole command (target >= 0.9); "
              f"{bare / (full - res.model_seconds):.3f} without the model load; "
              f"{bare / rest:.3f} steady state (inference + mp4 only)")

        # 2. Video
        mv = motion_mod.load(VIDEO, fps=30, frames=(1, n_vid), pose_model=POSE_MODEL, quiet=True)
        bare_pair = lambda: (mediapipe_alone(VIDEO, 30, n_vid), predictor_alone(predictor, mv))  # noqa: E731
        (mp, pb), (full, res) = alternate(reps, bare_pair, lambda: timed_render(
            run, VIDEO, tmp / "video.mp4", 30, n_vid, a.device, pose_model=POSE_MODEL))
        rest = full - res.motion_seconds - res.model_seconds
        print(f"video -> mp4, {n_vid} frames of {VIDEO.name} at 30 fps:")
        print(f"  render                       {n_vid / full:7.2f} frames/s  ({full:.2f} s: poses "
              f"{res.motion_seconds:.2f} s, model load {res.model_seconds:.2f} s, inference + mp4 {rest:.2f} s)")
        print(f"  MediaPipe + predictor, bare  {n_vid / (mp + pb):7.2f} frames/s  (MediaPipe {mp:.2f} s + predictor {pb:.2f} s)")
        print(f"  ratio render / bare: {(mp + pb) / full:.3f} whole command; "
              f"{(mp + pb) / (full - res.model_seconds):.3f} without the model load")
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
