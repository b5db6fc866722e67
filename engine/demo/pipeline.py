"""`pix2dance demo`: the whole product end to end on a synthetic dancer, on any machine, offline.

    pix2dance demo [--out demo-output] [--quick] [--device auto|cpu|cuda]      # what `make demo` runs
    engine.demo.pipeline.run("demo-output", quick=False, device="auto", quiet=False) -> DemoResult
    python -m engine.demo.pipeline --build-model assets/demo --work DIR     # (re)build the shipped demo model

1. engine.demo.synth renders a training dance (Blender, headless) with its exact 2D skeleton;
2. engine.data.dataset builds the training set from that video, with the ground-truth skeletons;
3. engine.model.train trains a small pix2pix generator on it (minutes on a CPU);
4. the engine server starts on a free loopback port, and a new choreography the model never saw
   is rendered through engine.wire.client, the path the Blender add-on takes;
5. the outputs, each printed at the end (beside them: the clips, the dataset, the run, generated/):
   - side_by_side.mp4: skeleton | true render | generated,
   - eval.json: SSIM, PSNR, L1 and flicker against the true renders, and pose error (MediaPipe on
     the generated frames against the true skeleton; null when no pose model resolves, e.g. offline),
   - losses.png: the training curves.

The unseen dance is filmed by the same camera as the training dance, so its true renders are cut
with the training set's crop and its skeleton is sent in that crop's pixels with normalization
"none": the generated frames then line up with the true renders pixel for pixel, and SSIM/PSNR
measure the generator alone. (The add-on sends a rig's skeleton with "clip" normalization instead,
which moves another body into the dancer's space; here the body is the dancer's own.)

The output folder is built in a temporary sibling and renamed at the end (engine.atomic), so an
interrupted demo leaves no half-written demo-output/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_dir, atomic_file
from engine.errors import UserError

log = logging.getLogger("pix2dance.demo")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo: the synthetic clips, the dataset and the training run."""
    train_frames: int           # frames of the training dance
    test_frames: int            # frames of the unseen dance
    fps: float                  # both clips, and the dataset's sampling rate (every frame)
    render_size: int            # Blender render, square
    size: int                   # dataset and generator image size
    ngf: int                    # generator width
    steps: int                  # training steps
    batch: int
    panel: int                  # side_by_side.mp4 panel size (each of the three)
    val_every: int              # training steps between validations (each costs a few seconds)
    seed: int = 0


# Full: ~10 minutes on 2 CPU cores (the README gives the measured budget).
FULL = DemoSettings(train_frames=480, test_frames=120, fps=24.0, render_size=256, size=128, ngf=16,
                    steps=1500, batch=4, panel=256, val_every=500)
# Quick: tiny sizes, a minute or two; for tests and a first look.
QUICK = DemoSettings(train_frames=48, test_frames=16, fps=12.0, render_size=128, size=64, ngf=8,
                     steps=60, batch=2, panel=128, val_every=60)


@dataclass
class DemoResult:
    """Where the demo's outputs are, and its scores."""
    out: Path
    side_by_side: Path
    eval_json: Path
    losses_png: Path
    run_dir: Path
    scores: dict


# --- the engine server, as a child process ----------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def engine_server(run_dir: Path | None, device: str, timeout: float = 120.0):
    """Start `pix2dance serve RUN` on a free loopback port; yield its address; always stop it.

    run_dir None serves what `pix2dance serve` serves with no run: the demo model in assets/demo.

    The server is this Python running engine.cli, so it is the very command a user types. It is
    stopped with SIGTERM (its clean shutdown) and killed if it has not gone within 10 seconds.
    """
    from engine.wire.client import Client, ClientError
    address = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "engine.cli", "serve", *([str(run_dir)] if run_dir else []),
           "--bind", address, "--device", device, "--quiet"]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    log.info("starting the engine server: pix2dance serve %s --bind %s", run_dir or "(demo model)", address)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise UserError(f"the engine server stopped at start-up: {err[-1] if err else f'exit {proc.returncode}'}")
            try:
                with Client(address, timeout=2.0, retries=0) as c:
                    c.ping()
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise UserError(f"the engine server did not answer on {address} within {timeout:.0f} s") from None
        log.debug("engine server up on %s (pid %d)", address, proc.pid)
        yield address
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


# --- steps ------------------------------------------------------------------------------------

def crop_frames(frames: np.ndarray, crop: dict, size: int) -> np.ndarray:
    """Cut the dataset's square crop {x, y, side} out of (N, H, W, 3) frames, as the dataset did."""
    from engine.data import dataset
    box = dataset.Crop(int(crop["x"]), int(crop["y"]), int(crop["side"]))
    return np.stack([dataset.crop_image(f, box, size) for f in frames])


def to_crop(keypoints: np.ndarray, crop: dict) -> np.ndarray:
    """(N, J, 3) keypoints in video pixels -> pixels of the crop square (side x side)."""
    from engine.data import dataset
    side = int(crop["side"])
    return dataset.Crop(int(crop["x"]), int(crop["y"]), side).to_crop_pixels(keypoints, side)


def unseen_truth(clip, crop: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The unseen dance's true renders cut like the dataset, (N, S, S, 3), and its skeleton in model pixels."""
    from engine.demo import synth
    truth = crop_frames(synth.read_frames(clip), crop, size)
    kp = to_crop(clip.keypoints, crop)
    kp[..., :2] *= size / crop["side"]
    return truth, kp


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """(N, H, W, 3) RGB -> folder/000000.png ..."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise UserError(f"cannot write {folder / f'{i:06d}.png'}")


def load_unseen(out: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a finished demo folder: true renders, skeleton (model pixels) and generated frames of the unseen dance."""
    import cv2
    from engine.demo import synth
    out = Path(out)
    info = json.loads((out / "dataset" / "dataset.json").read_text())
    truth, kp = unseen_truth(synth.load_clip(out / "test_clip"), info["sources"][0]["crop"], int(info["size"]))
    generated = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((out / "generated").glob("*.png"))])
    return truth, kp, generated


def generate_via_engine(run_dir: Path, keypoints: np.ndarray, side: int, device: str, quiet: bool) -> np.ndarray:
    """Frames for (N, J, 3) keypoints in crop pixels, through a served engine: (N, S, S, 3) uint8."""
    import cv2
    from tqdm import tqdm

    from engine.wire.client import Client, ClientError
    with engine_server(run_dir, device) as address, Client(address, timeout=60.0) as client:
        model = client.info()["models"][0]["name"]
        frames = []
        try:
            for frame in tqdm(client.render(model, keypoints, source_size=(side, side), mode="none", fmt="png"),
                              total=len(keypoints), desc="render via engine", unit="frame", disable=quiet):
                bgr = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        except ClientError as e:
            raise UserError(f"the engine failed to render the unseen dance: {e}") from None
    return np.stack(frames)


def resolve_pose_model(quiet: bool) -> Path | None:
    """The MediaPipe model when one resolves (env, cache, or a download); None offline."""
    from engine.data import pose
    try:
        return pose.resolve_model(None, timeout=10.0)
    except UserError as e:
        log.warning("no pose model (%s): pose error will be null", e)
        return None
    except Exception as e:   # network stacks raise many kinds of errors; the demo goes on without
        log.warning("no pose model (%s): pose error will be null", e)
        return None


def detect_poses(frames: np.ndarray, model: Path, fps: float, quiet: bool, desc: str) -> list[list[np.ndarray]]:
    """MediaPipe on each frame (a video stream): per frame, the detected (J, 3) keypoints."""
    from tqdm import tqdm

    from engine.data.pose import PoseEstimator
    found = []
    with PoseEstimator(model, num_poses=1) as estimator:
        for i, rgb in enumerate(tqdm(frames, desc=desc, unit="frame", disable=quiet, leave=False)):
            found.append(estimator.detect(np.ascontiguousarray(rgb), i * 1000.0 / fps))
    return found


def pose_scores(detections: list[list[np.ndarray]], truth: np.ndarray) -> tuple[float | None, float]:
    """(mean pose distance of the best detection per frame, or None; share of frames with a detection)."""
    from engine.model.metrics import pose_distance
    dists = []
    for found, target in zip(detections, truth):
        best = [d for d in (pose_distance(k, target) for k in found) if d is not None]
        if best:
            dists.append(min(best))
    rate = sum(1 for f in detections if f) / max(len(detections), 1)
    return (float(np.mean(dists)) if dists else None), float(rate)


def image_scores(generated: np.ndarray, truth: np.ndarray, keypoints: np.ndarray) -> dict:
    """SSIM, PSNR, L1 (whole frame, and inside the dancer's box) and flicker of generated vs true frames."""
    from engine.model import metrics
    a, b = metrics.to_unit(generated), metrics.to_unit(truth)
    mask = metrics.box_masks(keypoints, generated.shape[1])
    return {
        "ssim": float(metrics.ssim(a, b).mean()), "psnr": float(metrics.psnr(a, b).mean()),
        "l1": float(metrics.l1(a, b).mean()),
        "body": {"ssim": float(metrics.ssim(a, b, mask).mean()), "psnr": float(metrics.psnr(a, b, mask).mean()),
                 "l1": float(metrics.l1(a, b, mask).mean())},
        "flicker": metrics.flicker(a), "flicker_true": metrics.flicker(b),
    }


def side_by_side(skeletons: np.ndarray, truth: np.ndarray, generated: np.ndarray, panel: int) -> np.ndarray:
    """(N, S, S, 3) x 3 -> (N, panel, 3 * panel, 3): skeleton | true render | generated, labelled."""
    import cv2
    out = []
    for row in zip(skeletons, truth, generated):
        tiles = [cv2.resize(t, (panel, panel), interpolation=cv2.INTER_NEAREST if panel % t.shape[0] == 0 else cv2.INTER_LINEAR)
                 for t in row]
        for tile, label in zip(tiles, ("skeleton", "true render", "generated")):
            cv2.putText(tile, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        out.append(np.hstack(tiles))
    return np.stack(out)


# --- the demo ---------------------------------------------------------------------------------

def run(out: str | Path = "demo-output", quick: bool = False, device: str = "auto", quiet: bool = False,
        settings: DemoSettings | None = None) -> DemoResult:
    """Run the demo into `out` (replaced atomically when done); returns where everything is."""
    from engine.data import dataset
    from engine.demo import synth
    from engine.model import train
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    check_out(out)
    started = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        times[name] = round(time.perf_counter() - t0, 1)

    with atomic_dir(out) as tmp:
        log.info("pix2dance demo: a synthetic dancer, %d training frames at %d px, %d training steps (%s)",
                 s.train_frames, s.size, s.steps, "quick" if quick else "full")
        t0 = time.perf_counter()
        train_clip = synth.make_clip(tmp / "train_clip", frames=s.train_frames, size=s.render_size, seed=s.seed,
                                     choreography="train", fps=s.fps, quiet=quiet)
        synth.make_clip(tmp / "test_clip", frames=s.test_frames, size=s.render_size, seed=s.seed,
                                    choreography="test", fps=s.fps, quiet=quiet)
        lap("synth", t0)

        t0 = time.perf_counter()
        dataset.build([train_clip.video], tmp / "dataset", fps=s.fps, size=s.size, val_fraction=0.1, quiet=quiet,
                      keypoints=[train_clip.keypoints])
        lap("dataset", t0)

        t0 = time.perf_counter()
        train.run(tmp / "dataset", tmp / "run", steps=s.steps, size=s.size, ngf=s.ngf, batch=s.batch, device=device,
                  seed=s.seed, quiet=quiet, val_every=s.val_every, checkpoint_every=s.steps)
        lap("train", t0)

        report, codec = evaluate_unseen(tmp, s, device, quiet, times)
        report["seconds"] = {**times, "total": round(time.perf_counter() - started, 1)}
        with atomic_file(tmp / "eval.json") as f:
            f.write_text(json.dumps(report, indent=2) + "\n")

    result = DemoResult(out=out, side_by_side=out / "side_by_side.mp4", eval_json=out / "eval.json",
                        losses_png=out / "losses.png", run_dir=out / "run", scores=report)
    _summary(result, codec)
    return result


def check_out(out: Path) -> None:
    """The demo replaces `out` when done: refuse a file, or a non-empty folder that is not a demo's."""
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a folder for the demo's outputs")
    if out.is_dir() and any(out.iterdir()) and not (out / "eval.json").is_file() and not (out / "train_clip").is_dir():
        raise UserError(f"--out {out} is a folder that a demo did not write; the demo replaces its --out, "
                        "so give a new or empty folder")


def evaluate_unseen(folder: Path, s: DemoSettings, device: str, quiet: bool, times: dict) -> tuple[dict, str]:
    """Steps 4-5 in a demo folder holding test_clip/, dataset/ and run/: serve the run, render the
    unseen dance through the client, score it; writes generated/, side_by_side.mp4, losses.png.

    Returns the report (eval.json's content, less `seconds`) and the video codec used.
    """
    from engine.data import skeleton, video
    from engine.demo import synth
    from engine.model import train
    t0 = time.perf_counter()
    test_clip = synth.load_clip(folder / "test_clip")
    crop = json.loads((folder / "dataset" / "dataset.json").read_text())["sources"][0]["crop"]
    test_kp = to_crop(test_clip.keypoints, crop)                                  # (N, J, 3) crop px
    generated = generate_via_engine(folder / "run", test_kp, int(crop["side"]), device, quiet)
    times["render"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    write_frames(folder / "generated", generated)
    truth, kp_model = unseen_truth(test_clip, crop, s.size)
    skeletons = skeleton.draw_batch(kp_model, s.size)
    scores = image_scores(generated, truth, kp_model)
    pose_model = resolve_pose_model(quiet)
    pose_error = pose_error_true = None
    detection_rate = detection_rate_true = None
    if pose_model is not None:
        pose_error, detection_rate = pose_scores(
            detect_poses(generated, pose_model, s.fps, quiet, "pose error (generated)"), kp_model)
        pose_error_true, detection_rate_true = pose_scores(
            detect_poses(truth, pose_model, s.fps, quiet, "pose error (true renders)"), kp_model)
    report = {**scores, "pose_error": pose_error, "detection_rate": detection_rate,
              "pose_error_true_render": pose_error_true, "detection_rate_true_render": detection_rate_true,
              "pose_model": pose_model.name if pose_model else None, "frames": int(len(generated)),
              "unseen_choreography": True, "normalization": "none (same camera, dataset crop)",
              "settings": asdict(s), "device": device}
    codec = video.write_video(folder / "side_by_side.mp4", side_by_side(skeletons, truth, generated, s.panel), s.fps)
    shutil.copyfile(folder / "run" / train.PLOT, folder / "losses.png")
    times["evaluate"] = round(time.perf_counter() - t0, 1)
    return report, codec


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _summary(r: DemoResult, codec: str) -> None:
    sc = r.scores
    log.info("")
    log.info("demo done in %.0f s (%s)", sc["seconds"]["total"],
             ", ".join(f"{k} {v:.0f} s" for k, v in sc["seconds"].items() if k != "total"))
    log.info("  unseen dance, %d frames: SSIM %s, PSNR %s dB, pose error %s (true renders: %s)",
             sc["frames"], _fmt(sc["ssim"], ".3f"), _fmt(sc["psnr"], ".2f"), _fmt(sc["pose_error"], ".3f"),
             _fmt(sc["pose_error_true_render"], ".3f"))
    log.info("  side by side (skeleton | true render | generated): %s  [%s]", r.side_by_side, codec)
    log.info("  scores:                                            %s", r.eval_json)
    log.info("  training curves:                                   %s", r.losses_png)
    log.info("  the trained model (serve it: pix2dance serve %s)", r.run_dir)


# --- the small demo model in assets/demo ------------------------------------------------------

# The full demo, trained twice as long (so a finished demo folder can be resumed into it).
ASSET = DemoSettings(train_frames=480, test_frames=120, fps=24.0, render_size=256, size=128, ngf=16,
                     steps=3000, batch=4, panel=256, val_every=500)
ASSET_README = """# The demo model

A pix2pix generator of the synthetic dancer (engine/synth.py), trained by pix2dance's own pipeline:
`pix2dance serve` with no run directory serves it, so the Blender add-on works out of the box.

- {size} x {size} px, ngf {ngf}, fp16 safetensors ({mb:.1f} MB); model name `demo`.
- Training dance: {train_frames} frames at {fps:g} fps (seed {seed}), rendered with Blender Workbench at
  {render_size} px; dataset from the exact skeletons; {steps} steps, batch {batch}, on {device}.
- On an unseen dance ({test_frames} frames) against its true renders: SSIM {ssim:.3f}, PSNR {psnr:.2f} dB,
  pose error {pose_error} (MediaPipe on the true renders: {pose_error_true}).

Made with:

    .venv/bin/python -m engine.demo.pipeline --build-model assets/demo --work demo-model-work

which runs the full demo's pipeline into `--work` (or, when `--work` already holds a finished
demo, such as `demo-output` of `make demo`, resumes its run to {steps} steps) and exports the
generator in fp16 with this README. This export: {minutes:.0f} minutes of wall time.
"""


def build_demo_model(dest: str | Path, work: str | Path, device: str = "auto", quiet: bool = False,
                     settings: DemoSettings = ASSET) -> Path:
    """Train the demo model with the demo pipeline in `work` (resuming a run there) and export it, fp16, to dest."""
    from engine.model import runs, train
    started = time.perf_counter()
    work, dest = Path(work), Path(dest)
    if (work / "run" / "config.json").is_file() and (work / "eval.json").is_file():
        # Resume the run there to settings.steps, then evaluate it again in place.
        train.run(work / "dataset", work / "run", steps=settings.steps, device=device, quiet=quiet,
                  val_every=settings.val_every, checkpoint_every=settings.val_every)
        times: dict[str, float] = {}
        scores, _ = evaluate_unseen(work, settings, device, quiet, times)
        with atomic_file(work / "eval.json") as f:
            f.write_text(json.dumps({**scores, "seconds": times}, indent=2) + "\n")
    else:
        scores = run(work, device=device, quiet=quiet, settings=settings).scores
    generator, config = runs.load_generator(work / "run", "cpu")
    config = {k: v for k, v in config.items() if k != "dataset"}
    config.update(name="demo", description="the synthetic dancer of engine/synth.py (pix2dance demo model)",
                  unseen={k: scores.get(k) for k in ("ssim", "psnr", "l1", "pose_error", "pose_error_true_render")})
    pe = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    import torch
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    with atomic_dir(dest) as tmp:
        runs.save_generator(tmp, generator, config, half=True)
        mb = (tmp / runs.GENERATOR).stat().st_size / 1e6
        (tmp / "README.md").write_text(ASSET_README.format(
            **asdict(settings), mb=mb, device=device, ssim=scores["ssim"], psnr=scores["psnr"],
            pose_error=pe(scores["pose_error"]), pose_error_true=pe(scores["pose_error_true_render"]),
            minutes=(time.perf_counter() - started) / 60))
    log.info("demo model written to %s (%.1f MB)", dest, mb)
    return dest


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.demo.pipeline --build-model assets/demo --work DIR`: (re)build the committed demo model."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m engine.demo.pipeline", description=main.__doc__)
    p.add_argument("--build-model", type=Path, required=True, metavar="DEST")
    p.add_argument("--work", type=Path, required=True, help="demo folder to build (or resume) the model in")
    p.add_argument("--steps", type=int, default=ASSET.steps)
    p.add_argument("--train-frames", type=int, default=ASSET.train_frames)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    settings = dataclasses.replace(ASSET, steps=a.steps, train_frames=a.train_frames)
    try:
        build_demo_model(a.build_model, a.work, device=a.device, quiet=a.quiet, settings=settings)
    except UserError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
