"""Benchmark: quality on unseen motion, measured exactly against true renders of the synthetic dancer.

    .venv/bin/python bench/synthetic.py --quick                 # ~4 minutes on 2 CPU cores, tiny sizes
    .venv/bin/python bench/synthetic.py                         # the full demo's sizes
    .venv/bin/python bench/synthetic.py --steps 600 --size 128 --ngf 16 --pose-model ../shared/models/pose_landmarker_full.task
    .venv/bin/python bench/synthetic.py --train-frames 2400 --size 256 --ngf 32 --steps 20000 --device cuda
    .venv/bin/python bench/synthetic.py --arms temporal         # one arm only
    .venv/bin/python bench/synthetic.py --reuse demo-output     # score a finished `pix2dance demo` (or a kept --out)

It runs the demo pipeline (engine.demo.pipeline: Blender renders a training dance and an unseen one, with
the dancer's exact alpha; dataset from ground-truth skeletons and that alpha; training; the unseen dance
rendered through a real engine server, placed where the skeleton is and composited over the stage plate)
at the sizes given, once per arm, and scores the generated frames against the true renders of the unseen
dance (whole frames). The arms (--arms, default both) share the renders and the dataset and are trained
side by side, one process and one thread each, with the same settings but the generator:
- frame: the single-frame generator (`pix2dance train --no-temporal`);
- temporal: the temporal generator, which sees its previous output (the default of `pix2dance train`).
Beside them, in the same run, plain ways of showing a dancer in a new pose:
- nearest frame: the training frame whose (exact) skeleton is closest to the wanted pose, i.e.
  motion by lookup in the training video (its alpha: Blender's alpha of that frame);
- mean frame: the average training frame (what an L1-only model collapses to without the skeleton);
- empty plate: the run's stage plate, the room with no dancer at all.

Printed: SSIM, PSNR, L1 (whole frame, and in the dancer's box), alpha IoU against Blender's exact
alpha, flicker (mean frame-to-frame change minus the true renders', as `pix2dance eval`'s: > 0 jittery,
< 0 smoother than life), pose error (MediaPipe on each method's frames against the exact skeleton; needs
a pose model: --pose-model, $PIX2DANCE_POSE_MODEL or the user cache), the ratios of each arm to the
nearest frame, the line "temporal - frame: ...", and the time of each stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
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
ARMS = ("frame", "temporal")       # the generator of each arm: single-frame, temporal
SHARED = ("train_clip", "test_clip", "dataset")    # what engine.demo.pipeline.prepare writes: the arms share it


def nearest(train_kp: np.ndarray, test_kp: np.ndarray) -> np.ndarray:
    """For each test pose, the index of the training frame with the closest skeleton (mean core-joint distance)."""
    a = test_kp[:, None, _CORE, :2]                     # (N, 1, C, 2)
    b = train_kp[None, :, _CORE, :2]                    # (1, M, C, 2)
    return np.linalg.norm(a - b, axis=-1).mean(-1).argmin(1)


def load_unseen(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a finished demo folder, the unseen dance: true renders, Blender's alpha and skeleton (video pixels)."""
    clip = synth.load_clip(out / "test_clip")
    return synth.read_frames(clip), synth.read_masks(clip), clip.keypoints


def load_generated(out: Path) -> np.ndarray:
    """A finished demo folder's generated frames (the composites over the stage plate)."""
    from engine.data.pairs import read_rgb
    return np.stack([read_rgb(p) for p in sorted((out / "generated").glob("*.png"))])


def score(name: str, frames: np.ndarray, truth: np.ndarray, kp: np.ndarray, pose_model, fps: float,
          height: float | None) -> dict:
    """The demo's image scores of one method's frames, and their pose error (metrics.pose_error, as eval)."""
    out = unseen.image_scores(frames, truth, kp)
    out["pose_error"] = out["detection_rate"] = None
    if pose_model is not None:
        out["pose_error"], out["detection_rate"] = metrics.pose_error(frames, kp, pose_model, fps, height, True, name)
    return out


def arm_settings(s: demo.DemoSettings, arm: str) -> demo.DemoSettings:
    return dataclasses.replace(s, temporal=arm == "temporal")


def run_arms(work: Path, s: demo.DemoSettings, arms: list[str], device: str) -> tuple[dict[str, Path], dict]:
    """The dances and dataset once (in the first arm's folder, copied to the others), then every arm trained
    and evaluated as its own demo folder, side by side (one process and one thread each).
    Returns {arm: its demo folder} and the shared stages' seconds."""
    folders = {arm: work / arm for arm in arms}
    times: dict[str, float] = {}
    first = folders[arms[0]]
    first.mkdir(parents=True)
    log.info("rendering the dances and building the dataset (%d + %d frames at %d px)",
             s.train_frames, s.test_frames, s.render_size)
    demo.prepare(first, s, quiet=True, times=times)
    for arm in arms[1:]:
        for name in SHARED:
            shutil.copytree(first / name, folders[arm] / name)
    log.info("training %s side by side: %d steps at %d px, ngf %d, batch %d", " and ".join(arms), s.steps, s.size,
             s.ngf, s.batch)
    # One thread each, for the arm and its engine server child (they inherit the environment).
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    settings = json.dumps(dataclasses.asdict(s))
    procs = {arm: subprocess.Popen([sys.executable, __file__, "--arm", arm, "--folder", str(folder), "--settings",
                                    settings, "--device", device], env=env)
             for arm, folder in folders.items()}
    failed = [arm for arm, proc in procs.items() if proc.wait() != 0]
    if failed:
        sys.exit(f"bench/synthetic.py: arm {', '.join(failed)} failed (its error is above)")
    return folders, times


def arm_main(arm: str, folder: Path, settings: str, device: str) -> int:
    """One arm in its prepared folder: train and evaluate as the demo does (steps 3-5); writes eval.json."""
    import torch
    torch.set_num_threads(1)
    s = arm_settings(demo.DemoSettings(**json.loads(settings)), arm)
    started = time.perf_counter()
    report, _ = demo.train_and_evaluate(folder, s, device, quiet=True, times={}, started=started)
    log.info("%s: trained and evaluated in %.0f s", arm, report["seconds"]["total"])
    return 0


def reused(folder: Path, arms: list[str]) -> dict[str, Path]:
    """The arms of a finished demo folder (one, named by its run's generator) or of a kept --out (those of
    `arms` it holds)."""
    if (folder / "eval.json").is_file():
        config = json.loads((folder / "run" / "config.json").read_text())
        return {"temporal" if config.get("temporal") else "frame": folder}
    found = {arm: folder / arm for arm in arms if (folder / arm / "eval.json").is_file()}
    if not found:
        sys.exit(f"bench/synthetic.py: {folder} holds no finished demo (eval.json) nor arms ({', '.join(arms)})")
    return found


def main(argv: list[str] | None = None) -> int:
    base = demo.FULL
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (the demo's --quick)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms, side by side (default {','.join(ARMS)})")
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
    p.add_argument("--out", type=Path, help="keep the arms' demo folders here (default: a temporary folder)")
    p.add_argument("--reuse", type=Path, metavar="DIR",
                   help="score a finished demo folder (e.g. demo-output), or a kept --out, instead of running")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)        # internal: one arm's process
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.arm:
        return arm_main(a.arm, a.folder, a.settings, a.device)
    if a.pose_model:
        os.environ["PIX2DANCE_POSE_MODEL"] = str(a.pose_model)
    arms = [arm for arm in a.arms.split(",") if arm]
    if not arms or any(arm not in ARMS for arm in arms) or len(set(arms)) != len(arms):
        print(f"bench/synthetic.py: --arms takes a comma-separated list of {', '.join(ARMS)}", file=sys.stderr)
        return 2
    if a.out and a.out.exists() and (not a.out.is_dir() or any(a.out.iterdir())):
        print(f"bench/synthetic.py: --out {a.out} exists and is not an empty folder", file=sys.stderr)
        return 2

    s = demo.QUICK if a.quick else base
    given = {k: getattr(a, k) for k in ("train_frames", "test_frames", "fps", "render_size", "size", "ngf",
                                        "steps", "batch", "seed") if getattr(a, k) is not None}
    s = dataclasses.replace(s, **given, val_every=max(given.get("steps", s.steps), 1))

    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        t0 = time.perf_counter()
        if a.reuse:
            folders, shared_times = reused(a.reuse, arms), {}
            s = demo.DemoSettings(**json.loads((next(iter(folders.values())) / "eval.json").read_text())["settings"])
        else:
            folders, shared_times = run_arms(a.out or Path(tmp), s, arms, a.device)
        seconds = time.perf_counter() - t0
        first = next(iter(folders.values()))
        truth, alpha, kp = load_unseen(first)
        train = synth.load_clip(first / "train_clip")
        train_frames, train_alpha = synth.read_frames(train), synth.read_masks(train)
        pose_model = unseen.resolve_pose_model(quiet=True)
        height = body_stats(list(kp))["height"]
        pick = nearest(train.keypoints, kp)
        from engine.data.pairs import read_rgb
        from engine.model.runs import STAGE_PLATE
        plate = read_rgb(first / "run" / STAGE_PLATE)
        rows, reports = {}, {}
        for arm, folder in folders.items():
            # Image scores afresh (cheap, and one definition for every row); pose error and alpha IoU as the
            # arm's evaluation measured them (MediaPipe's pass, and the engine's mattes, are not kept).
            reports[arm] = json.loads((folder / "eval.json").read_text())
            rows[arm] = {**unseen.image_scores(load_generated(folder), truth, kp),
                         **{k: reports[arm].get(k) for k in ("pose_error", "detection_rate", "alpha_iou")}}
        rows.update({
            "nearest frame": score("nearest frame", train_frames[pick], truth, kp, pose_model, s.fps, height),
            "mean frame": score("mean frame", np.repeat(train_frames.mean(0, keepdims=True).round().astype(np.uint8),
                                                        len(truth), 0), truth, kp, pose_model, s.fps, height),
            "empty plate": score("empty plate", np.repeat(plate[None], len(truth), 0), truth, kp, pose_model, s.fps, height),
        })
        rows["nearest frame"]["alpha_iou"] = metrics.alpha_iou(train_alpha[pick] / 255.0, alpha / 255.0)
        rows["empty plate"]["alpha_iou"] = 0.0
        truth_pose = reports[next(iter(reports))].get("pose_error_true_render")

    fmt = lambda v, f: "   n/a" if v is None else format(v, f)  # noqa: E731
    print(f"\nsynthetic benchmark: unseen dance of {len(truth)} frames, model {s.size} px ngf {s.ngf}, "
          f"{s.train_frames} training frames, {s.steps} steps x batch {s.batch}, device {a.device}")
    print(f"{'method':<15}{'SSIM':>8}{'PSNR dB':>9}{'L1':>8}{'SSIM body':>11}{'PSNR body':>11}{'alpha IoU':>11}"
          f"{'flicker':>10}{'pose err':>10}{'detected':>10}")
    for name, r in rows.items():
        print(f"{name:<15}{r['ssim']:>8.4f}{r['psnr']:>9.2f}{r['l1']:>8.4f}{r['body']['ssim']:>11.4f}"
              f"{r['body']['psnr']:>11.2f}{fmt(r.get('alpha_iou'), '11.3f'):>11}{r['flicker']:>+10.4f}"
              f"{fmt(r['pose_error'], '10.4f'):>10}{fmt(r['detection_rate'], '10.2f'):>10}")
    print(f"{'true render':<15}{'':>8}{'':>9}{'':>8}{'':>11}{'':>11}{'':>11}{'':>10}{fmt(truth_pose, '10.4f'):>10}")
    nn = rows["nearest frame"]
    for arm in folders:
        g = rows[arm]
        print(f"{arm} / nearest frame: SSIM x{g['ssim'] / nn['ssim']:.3f}, body SSIM "
              f"x{g['body']['ssim'] / nn['body']['ssim']:.3f}, L1 x{g['l1'] / nn['l1']:.3f} (lower is better), "
              f"PSNR {g['psnr'] - nn['psnr']:+.2f} dB")
    if set(ARMS) <= set(folders):
        t, f = rows["temporal"], rows["frame"]
        print(f"temporal - frame: SSIM {t['ssim'] - f['ssim']:+.4f}, body SSIM {t['body']['ssim'] - f['body']['ssim']:+.4f}, "
              f"flicker {t['flicker'] - f['flicker']:+.4f} (true renders' own change: {t['flicker_true']:.4f})")
    times = {"shared": shared_times, **{arm: r.get("seconds", {}) for arm, r in reports.items()}}
    print("seconds: " + "; ".join(f"{part}: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
                                  for part, t in times.items() if t) + f" (bench total {seconds:.0f})")
    if a.json:
        a.json.write_text(json.dumps({"settings": dataclasses.asdict(s), "arms": list(folders), "results": rows,
                                      "true_render_pose_error": truth_pose, "seconds": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
