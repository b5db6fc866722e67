"""Benchmark: quality on unseen motion, measured exactly against true renders of the synthetic dancer.

    .venv/bin/python bench/synthetic.py --quick                 # ~2 minutes on 2 CPU cores, tiny sizes
    .venv/bin/python bench/synthetic.py                         # the full demo's sizes (~10 minutes)
    .venv/bin/python bench/synthetic.py --train-frames 2400 --size 256 --ngf 32 --steps 20000 --device cuda
    .venv/bin/python bench/synthetic.py --reuse demo-output     # score a finished `pix2dance demo`

It runs the demo pipeline (engine.demo.pipeline: Blender renders a training dance and an unseen one, with
the dancer's exact alpha; dataset from ground-truth skeletons and that alpha; training; the unseen dance
rendered through a real engine server, placed where the skeleton is and composited over the stage plate)
at the sizes given, then scores the generated frames against the true renders of the unseen dance (whole
frames), side by side with plain ways of showing a dancer in a new pose, in the same run:

- nearest frame: the training frame whose (exact) skeleton is closest to the wanted pose, i.e.
  motion by lookup in the training video (its alpha: Blender's alpha of that frame);
- mean frame: the average training frame (what an L1-only model collapses to without the skeleton);
- empty plate: the run's stage plate, the room with no dancer at all.

Printed: SSIM, PSNR, L1 (whole frame, and in the dancer's box), alpha IoU against Blender's exact
alpha, pose error (MediaPipe on each method's frames against the exact skeleton; needs a pose model:
--pose-model, $PIX2DANCE_POSE_MODEL or the user cache), the ratios generator / nearest frame, and the
time of each stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.demo import pipeline as demo  # noqa: E402
from engine.demo import synth, unseen  # noqa: E402
from engine.model import metrics  # noqa: E402
from engine.wire.joints import CORE, INDEX, body_stats  # noqa: E402

log = logging.getLogger("bench.synthetic")
_CORE = np.array([INDEX[n] for n in CORE])


def nearest(train_kp: np.ndarray, test_kp: np.ndarray) -> np.ndarray:
    """For each test pose, the index of the training frame with the closest skeleton (mean core-joint distance)."""
    a = test_kp[:, None, _CORE, :2]                     # (N, 1, C, 2)
    b = train_kp[None, :, _CORE, :2]                    # (1, M, C, 2)
    return np.linalg.norm(a - b, axis=-1).mean(-1).argmin(1)


def load_unseen(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From a finished demo folder, the unseen dance: true renders, Blender's alpha, skeleton (video pixels)
    and the generated frames (composites)."""
    from engine.data.pairs import read_rgb
    clip = synth.load_clip(out / "test_clip")
    generated = np.stack([read_rgb(p) for p in sorted((out / "generated").glob("*.png"))])
    return synth.read_frames(clip), synth.read_masks(clip), clip.keypoints, generated


def score(name: str, frames: np.ndarray, truth: np.ndarray, kp: np.ndarray, pose_model, fps: float,
          height: float | None) -> dict:
    """The demo's image scores of one method's frames, and their pose error (metrics.pose_error, as eval)."""
    out = unseen.image_scores(frames, truth, kp)
    out["pose_error"] = out["detection_rate"] = None
    if pose_model is not None:
        out["pose_error"], out["detection_rate"] = metrics.pose_error(frames, kp, pose_model, fps, height, True, name)
    return out


def main(argv: list[str] | None = None) -> int:
    base = demo.FULL
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the demo's --quick): about two minutes")
    p.add_argument("--train-frames", type=int, help=f"frames of the training dance (default {base.train_frames})")
    p.add_argument("--test-frames", type=int, help=f"frames of the unseen dance (default {base.test_frames})")
    p.add_argument("--fps", type=float, help=f"frames per second of both dances (default {base.fps})")
    p.add_argument("--render-size", type=int, help=f"Blender render size (default {base.render_size})")
    p.add_argument("--size", type=int, help=f"model image size (default {base.size})")
    p.add_argument("--ngf", type=int, help=f"generator width (default {base.ngf})")
    p.add_argument("--steps", type=int, help=f"training steps (default {base.steps})")
    p.add_argument("--batch", type=int, help=f"batch size (default {base.batch})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--pose-model", type=Path, help="MediaPipe .task file for pose error")
    p.add_argument("--out", type=Path, help="keep the run here (default: a temporary folder)")
    p.add_argument("--reuse", type=Path, metavar="DEMO_DIR",
                   help="score a finished demo folder (e.g. demo-output) instead of running one")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.pose_model:
        os.environ["PIX2DANCE_POSE_MODEL"] = str(a.pose_model)

    s = demo.QUICK if a.quick else base
    given = {k: getattr(a, k) for k in ("train_frames", "test_frames", "fps", "render_size", "size", "ngf",
                                        "steps", "batch", "seed") if getattr(a, k) is not None}
    s = dataclasses.replace(s, **given, val_every=max(given.get("steps", s.steps), 1))

    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        t0 = time.perf_counter()
        if a.reuse:
            out = a.reuse
            scores = json.loads((out / "eval.json").read_text())
            s = demo.DemoSettings(**scores["settings"]) if "settings" in scores else s
        else:
            out = a.out or Path(tmp) / "demo"
            scores = demo.run(out, device=a.device, quiet=True, settings=s).scores
        seconds = time.perf_counter() - t0
        truth, alpha, kp, generated = load_unseen(out)
        train = synth.load_clip(out / "train_clip")
        train_frames, train_alpha = synth.read_frames(train), synth.read_masks(train)
        pose_model = unseen.resolve_pose_model(quiet=True)
        height = body_stats(list(kp))["height"]
        pick = nearest(train.keypoints, kp)
        from engine.data.pairs import read_rgb
        from engine.model.runs import STAGE_PLATE
        plate = read_rgb(out / "run" / STAGE_PLATE)
        rows = {
            "generator": score("generator", generated, truth, kp, pose_model, s.fps, height),
            "nearest frame": score("nearest frame", train_frames[pick], truth, kp, pose_model, s.fps, height),
            "mean frame": score("mean frame", np.repeat(train_frames.mean(0, keepdims=True).round().astype(np.uint8),
                                                        len(truth), 0), truth, kp, pose_model, s.fps, height),
            "empty plate": score("empty plate", np.repeat(plate[None], len(truth), 0), truth, kp, pose_model, s.fps, height),
        }
        rows["generator"]["alpha_iou"] = scores["alpha_iou"]
        rows["nearest frame"]["alpha_iou"] = metrics.alpha_iou(train_alpha[pick] / 255.0, alpha / 255.0)
        rows["empty plate"]["alpha_iou"] = 0.0
        truth_pose = scores.get("pose_error_true_render")

    fmt = lambda v, f: "   n/a" if v is None else format(v, f)  # noqa: E731
    print(f"\nsynthetic benchmark: unseen dance of {len(truth)} frames, model {s.size} px ngf {s.ngf}, "
          f"{s.train_frames} training frames, {s.steps} steps x batch {s.batch}, device {a.device}")
    print(f"{'method':<15}{'SSIM':>8}{'PSNR dB':>9}{'L1':>8}{'SSIM body':>11}{'PSNR body':>11}{'alpha IoU':>11}"
          f"{'pose err':>10}{'detected':>10}")
    for name, r in rows.items():
        print(f"{name:<15}{r['ssim']:>8.4f}{r['psnr']:>9.2f}{r['l1']:>8.4f}{r['body']['ssim']:>11.4f}"
              f"{r['body']['psnr']:>11.2f}{fmt(r.get('alpha_iou'), '11.3f'):>11}{fmt(r['pose_error'], '10.4f'):>10}"
              f"{fmt(r['detection_rate'], '10.2f'):>10}")
    print(f"{'true render':<15}{'':>8}{'':>9}{'':>8}{'':>11}{'':>11}{fmt(truth_pose, '10.4f'):>10}")
    g, nn = rows["generator"], rows["nearest frame"]
    print(f"ratios generator / nearest frame: SSIM x{g['ssim'] / nn['ssim']:.3f}, body SSIM "
          f"x{g['body']['ssim'] / nn['body']['ssim']:.3f}, L1 x{g['l1'] / nn['l1']:.3f} (lower is better), "
          f"PSNR {g['psnr'] - nn['psnr']:+.2f} dB")
    times = scores.get("seconds", {})
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f" (bench total {seconds:.0f})")
    if a.json:
        a.json.write_text(json.dumps({"settings": dataclasses.asdict(s), "results": rows, "true_render_pose_error": truth_pose,
                                      "seconds": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
