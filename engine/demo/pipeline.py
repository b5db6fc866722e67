"""`pix2dance demo`: the whole product end to end on a synthetic dancer, on any machine, offline.

    pix2dance demo [--out demo-output] [--quick] [--device auto|cpu|cuda]      # what `make demo` runs
    engine.demo.pipeline.run("demo-output", quick=False, device="auto", quiet=False) -> DemoResult
    python -m engine.demo.pipeline --build-model assets/demo --work DIR     # (re)build the shipped demo model

1. engine.demo.synth renders a training dance (Blender, headless) with its exact 2D skeleton and
   the dancer's exact alpha (a transparent-film render of her alone);
2. engine.data.dataset builds the training set from that video, with the ground-truth skeletons
   and that alpha as the dancer's mask (person-centred crops, and the room's plate);
3. engine.model.train trains a small generator with a matte on it, as `pix2dance train` does by default:
   the temporal model, which sees its previous frame (DemoSettings.temporal; minutes on a CPU);
4. the engine server starts on a free loopback port, and a new choreography the model never saw
   is rendered through engine.wire.client, the path the Blender add-on takes (placement "source"
   with alpha: the dancer stands where her skeleton is), and composited into the scene;
5. the outputs, each printed at the end (beside them: the clips, the dataset, the run, generated/):
   - side_by_side.mp4: skeleton | true render | generated (the dancer composited into the scene),
   - eval.json: SSIM, PSNR and L1 against the true renders, flicker (the generated dance's frame-to-frame
     change minus the true renders'), alpha IoU against Blender's alpha, and pose error (MediaPipe on the generated frames against the true skeleton; null when
     no pose model resolves, e.g. offline),
   - losses.png: the training curves.

Steps 4-5 are engine.demo.unseen (the unseen dance is sent in the video's pixels with normalization
"none", so the generated frames line up with its true renders pixel for pixel; the add-on sends a
rig's skeleton with "clip" normalization instead, which moves another body into the dancer's space:
here the body is the dancer's own), through engine.demo.serving's child server.

The output folder is built in a temporary sibling and renamed at the end (engine.atomic), so an
interrupted demo leaves no half-written demo-output/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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
    temporal: bool = True       # the temporal generator (sees its previous frame), as `pix2dance train` trains

    def train_config(self):
        """The demo run's engine.model.train.TrainConfig (the rest: TrainConfig's defaults)."""
        from engine.model.train import TrainConfig
        return TrainConfig(steps=self.steps, size=self.size, ngf=self.ngf, batch=self.batch, seed=self.seed,
                           temporal=self.temporal)


# Full: ~10 minutes on 2 CPU cores (the README gives the measured budget).
FULL = DemoSettings(train_frames=480, test_frames=120, fps=24.0, render_size=256, size=128, ngf=16,
                    steps=1500, batch=4, panel=256, val_every=500)
# Quick: tiny sizes, a minute or two; for tests and a first look. Single-frame: in 60 steps the temporal
# model learns no matte yet (measured: alpha IoU 0.003 against 0.63, its alpha nowhere above 0.51; still
# 0.009 at 120 steps) and trains 1.7x slower; at 600 steps of 128 px both have one (bench/synthetic.py).
QUICK = DemoSettings(train_frames=48, test_frames=16, fps=12.0, render_size=128, size=64, ngf=8,
                     steps=60, batch=2, panel=128, val_every=60, temporal=False)


@dataclass
class DemoResult:
    """Where the demo's outputs are, and its scores."""
    out: Path
    side_by_side: Path
    eval_json: Path
    losses_png: Path
    run_dir: Path
    scores: dict


# --- the demo ---------------------------------------------------------------------------------

def run(out: str | Path = "demo-output", quick: bool = False, device: str = "auto", quiet: bool = False,
        settings: DemoSettings | None = None) -> DemoResult:
    """Run the demo into `out` (replaced atomically when done); returns where everything is."""
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    check_out(out)
    started = time.perf_counter()
    times: dict[str, float] = {}
    with atomic_dir(out) as tmp:
        log.info("pix2dance demo: a synthetic dancer, %d training frames at %d px, %d training steps, %s model (%s)",
                 s.train_frames, s.size, s.steps, "temporal" if s.temporal else "single-frame",
                 "quick" if quick else "full")
        prepare(tmp, s, quiet, times)
        report, codec = train_and_evaluate(tmp, s, device, quiet, times, started)
    result = DemoResult(out=out, side_by_side=out / "side_by_side.mp4", eval_json=out / "eval.json",
                        losses_png=out / "losses.png", run_dir=out / "run", scores=report)
    _summary(result, codec)
    return result


def prepare(folder: Path, s: DemoSettings, quiet: bool, times: dict) -> None:
    """Steps 1-2 into `folder`: the training and unseen dances (train_clip/, test_clip/) and the dataset (dataset/).

    Nothing here depends on the model, so runs of other models (bench/synthetic.py's arms) may share it."""
    from engine.data import dataset
    from engine.demo import synth
    t0 = time.perf_counter()
    train_clip = synth.make_clip(folder / "train_clip", frames=s.train_frames, size=s.render_size, seed=s.seed,
                                 choreography="train", fps=s.fps, quiet=quiet)
    synth.make_clip(folder / "test_clip", frames=s.test_frames, size=s.render_size, seed=s.seed,
                    choreography="test", fps=s.fps, quiet=quiet)
    times["synth"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    dataset.build([train_clip.video], folder / "dataset", fps=s.fps, size=s.size, val_fraction=0.1, quiet=quiet,
                  keypoints=[train_clip.keypoints], masks=[synth.read_masks(train_clip)])
    times["dataset"] = round(time.perf_counter() - t0, 1)


def train_and_evaluate(folder: Path, s: DemoSettings, device: str, quiet: bool, times: dict,
                       started: float) -> tuple[dict, str]:
    """Steps 3-5 in a prepared `folder`: train run/, render and score the unseen dance, write eval.json
    (its `seconds` total counted from `started`, a time.perf_counter()); returns (report, video codec)."""
    from engine.demo.unseen import evaluate_unseen
    from engine.model import train
    t0 = time.perf_counter()
    train.run(s.train_config(), folder / "dataset", folder / "run", device=device, quiet=quiet,
              val_every=s.val_every, checkpoint_every=s.steps)
    times["train"] = round(time.perf_counter() - t0, 1)
    report, codec = evaluate_unseen(folder, s, device, quiet, times)
    report["seconds"] = {**times, "total": round(time.perf_counter() - started, 1)}
    with atomic_file(folder / "eval.json") as f:
        f.write_text(json.dumps(report, indent=2) + "\n")
    return report, codec


def check_out(out: Path) -> None:
    """The demo replaces `out` when done: refuse a file, or a non-empty folder that is not a demo's."""
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a folder for the demo's outputs")
    if out.is_dir() and any(out.iterdir()) and not (out / "eval.json").is_file() and not (out / "train_clip").is_dir():
        raise UserError(f"--out {out} is a folder that a demo did not write; the demo replaces its --out, "
                        "so give a new or empty folder")


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _summary(r: DemoResult, codec: str) -> None:
    sc = r.scores
    log.info("")
    log.info("demo done in %.0f s (%s)", sc["seconds"]["total"],
             ", ".join(f"{k} {v:.0f} s" for k, v in sc["seconds"].items() if k != "total"))
    log.info("  unseen dance, %d frames: SSIM %s, PSNR %s dB, alpha IoU %s, flicker %s (generated - true), "
             "pose error %s (true renders: %s)", sc["frames"], _fmt(sc["ssim"], ".3f"), _fmt(sc["psnr"], ".2f"),
             _fmt(sc["alpha_iou"], ".3f"), _fmt(sc["flicker"], "+.4f"), _fmt(sc["pose_error"], ".3f"),
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

A pix2pix generator of the synthetic dancer (engine/demo/synth.py), trained by pix2dance's own pipeline:
`pix2dance serve` with no run directory serves it, so the Blender add-on works out of the box.

- {size} x {size} px, ngf {ngf}, fp16 safetensors ({mb:.1f} MB); model name `demo`.
- Training dance: {train_frames} frames at {fps:g} fps (seed {seed}), rendered with Blender Workbench at
  {render_size} px; dataset from the exact skeletons; {steps} steps, batch {batch}, on {device}.
- Outputs RGB and the dancer's matte (4 channels): placed where the pose is and composited into the scene.
- On an unseen dance ({test_frames} frames) against its true renders, composited over the stage plate:
  SSIM {ssim:.3f}, PSNR {psnr:.2f} dB, alpha IoU {alpha_iou:.3f} against Blender's alpha, pose error
  {pose_error} (MediaPipe on the true renders: {pose_error_true}).

Made with:

    .venv/bin/python -m engine.demo.pipeline --build-model assets/demo --work demo-model-work

which runs the full demo's pipeline into `--work` (or, when `--work` already holds a finished
demo, such as `demo-output` of `make demo`, resumes its run to {steps} steps) and exports the
generator in fp16 with this README. This export: {minutes:.0f} minutes of wall time.
"""


def build_demo_model(dest: str | Path, work: str | Path, device: str = "auto", quiet: bool = False,
                     settings: DemoSettings = ASSET) -> Path:
    """Train the demo model with the demo pipeline in `work` (resuming a run there) and export it, fp16, to dest."""
    from engine.demo.unseen import evaluate_unseen
    from engine.model import runs, train
    from engine.model.device import resolve_device
    started = time.perf_counter()
    work, dest = Path(work), Path(dest)
    if (work / "run" / "config.json").is_file() and (work / "eval.json").is_file():
        # Resume the run there to settings.steps, then evaluate it again in place.
        train.run(settings.train_config(), work / "dataset", work / "run", device=device, quiet=quiet,
                  val_every=settings.val_every, checkpoint_every=settings.val_every)
        times: dict[str, float] = {}
        scores, _ = evaluate_unseen(work, settings, device, quiet, times)
        with atomic_file(work / "eval.json") as f:
            f.write_text(json.dumps({**scores, "seconds": times}, indent=2) + "\n")
    else:
        scores = run(work, device=device, quiet=quiet, settings=settings).scores
    generator, config = runs.load_generator(work / "run", "cpu")
    config = {k: v for k, v in config.items() if k != "dataset"}
    config.update(name="demo", description="the synthetic dancer of engine/demo/synth.py (pix2dance demo model)",
                  unseen={k: scores.get(k) for k in ("ssim", "psnr", "l1", "alpha_iou", "pose_error", "pose_error_true_render")})
    pe = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    device = resolve_device(device).type
    with atomic_dir(dest) as tmp:
        runs.save_generator(tmp, generator, config, half=True)
        for name in (runs.STAGE_PLATE, runs.REPERTOIRE):     # her room, for placement "dancer"; her repertoire
            if (work / "run" / name).is_file():
                shutil.copyfile(work / "run" / name, tmp / name)
        mb = (tmp / runs.GENERATOR).stat().st_size / 1e6
        (tmp / "README.md").write_text(ASSET_README.format(
            **asdict(settings), mb=mb, device=device, ssim=scores["ssim"], psnr=scores["psnr"], alpha_iou=scores["alpha_iou"],
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
