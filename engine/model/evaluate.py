"""Evaluate a trained run on a dataset split: image quality, pose fidelity, flicker; a report folder.

    pix2dance eval RUN --data DATASET [--split val] --out REPORT      # or evaluate.run(...)

REPORT/ (written in a temp folder and renamed: never half-written):
    eval.json          ssim, psnr, l1 (full frame) and box_ssim, box_psnr, box_l1 (the dancer's box from
                       the input keypoints, see metrics.keypoint_box); pose_error, detection_rate;
                       flicker; frames; plus the same pose numbers for the real frames as a floor
    side_by_side.mp4   skeleton | real | generated, at the dataset's fps
    report.md          the numbers, and sample grids (samples_*.png) beside it

- Image metrics are on [0, 1] images, the generated frames quantised to uint8 as served.
- pose_error: metrics.pose_error (MediaPipe, the lite model by default, on each generated frame
  upscaled to at least 256 px; the mean distance between the detected joints and the input pose's
  joints seen in both, divided by the input's body height, or the dataset's when the input's
  cannot be measured), averaged over the frames where a person is found. null when none is found
  (an early model), with detection_rate the share of frames where one is found.
  `pose_error_real` is the same on the real frames: how far the detector itself is from the
  training keypoints, the floor a perfect generator would reach.
- flicker: mean absolute frame-to-frame change of the generated frames minus that of the real
  ones (0: as steady as the video; > 0: flickers more), skipping pairs across clip boundaries.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.model import batches, metrics, plots
from engine.model.device import resolve_device
from engine.model.pix2pix import generate
from engine.model.runs import STATE, load_generator

log = logging.getLogger(__name__)

PANEL_SIZE = 256           # side-by-side panels are shown at least this large
FIELDS = ("ssim", "psnr", "l1", "box_ssim", "box_psnr", "box_l1", "pose_error", "detection_rate",
          "flicker", "frames")


def clip_breaks(data: Path, split: str, n: int, fps: float) -> np.ndarray | None:
    """bool (n - 1,): True where frames i and i + 1 of the split are not consecutive samples of one clip."""
    try:
        npz = np.load(Path(data) / "keypoints.npz")
        sel = npz["split"] == (0 if split == "train" else 1)
        order = np.argsort(npz["index"][sel])
        source, t = npz["source"][sel][order], npz["time"][sel][order]
    except (OSError, KeyError, ValueError):
        return None
    if len(source) != n:
        return None
    return (source[1:] != source[:-1]) | (np.diff(t) > 1.5 / fps) | (np.diff(t) <= 0)


def body_height_of(info: dict, size: int) -> float:
    """The dataset's body height (dataset.json's stats) in pixels of size x size frames: pose error's fallback."""
    return float(info["stats"]["height"]) * size / float(info["size"])


def _panel(image: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if image.shape[0] >= size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)


def run(run: str | Path, data: str | Path, out: str | Path, split: str = "val", device: str = "auto",
        pose_model: str | Path | None = None, quiet: bool = False, batch: int = 16) -> dict:
    """Evaluate RUN on DATASET's split and write the REPORT folder; returns what eval.json holds."""
    from engine.data import video
    from engine.data.pose import resolve_model
    run, data, out = Path(run), Path(data), Path(out)
    dev = resolve_device(device)
    G, config = load_generator(run, dev)
    info = batches.dataset_info(data)
    size, fps = int(config["size"]), float(info.get("fps") or 10.0)
    pairs = batches.load_split(data, split, size)
    n = len(pairs)
    if n == 0:
        other = "train" if split == "val" else "val"
        raise UserError(f"{data} has no {split} pairs to evaluate on (try --split {other})")
    model = resolve_model(pose_model)

    fakes = generate(G, pairs.skeletons, dev, batch=batch)                     # (N, 3, S, S) uint8
    a, b = fakes.float() / 255, pairs.frames.float() / 255
    box = metrics.box_masks(pairs.keypoints, size)                             # (N, S, S)
    hwc = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    skeletons, reals, generated = hwc(pairs.skeletons), hwc(pairs.frames), hwc(fakes)

    height = body_height_of(info, size)
    pose_error, detection_rate = metrics.pose_error(generated, pairs.keypoints, model, fps, height, quiet, "pose (generated)")
    pose_error_real, detection_rate_real = metrics.pose_error(reals, pairs.keypoints, model, fps, height, quiet, "pose (real)")

    breaks = clip_breaks(data, split, n, fps)
    flicker_fake, flicker_real = metrics.flicker(a, breaks), metrics.flicker(b, breaks)
    state = json.loads((run / STATE).read_text()) if (run / STATE).is_file() else {}
    result = {
        **metrics.image_scores(a, b),
        **{f"box_{k}": v for k, v in metrics.image_scores(a, b, box).items()},
        "pose_error": pose_error, "detection_rate": detection_rate,
        "pose_error_real": pose_error_real, "detection_rate_real": detection_rate_real,
        "flicker": flicker_fake - flicker_real, "flicker_generated": flicker_fake, "flicker_real": flicker_real,
        "frames": n, "split": split, "size": size, "step": state.get("step"),
        "run": str(run), "data": str(data), "pose_model": model.name,
    }

    with atomic_dir(out) as tmp:
        panel = max(size, PANEL_SIZE)
        result["codec"] = video.write_video(
            tmp / "side_by_side.mp4",
            (np.concatenate([_panel(s, panel), _panel(r, panel), _panel(g, panel)], axis=1)
             for s, r, g in zip(skeletons, reals, generated)), fps)
        pictures = []
        spread = np.unique(np.linspace(0, n - 1, min(n, 12)).round().astype(int))   # evenly over the split
        for k in range(0, len(spread), 4):
            pick = spread[k:k + 4]
            name = f"samples_{k // 4}.png"
            plots.save_png(plots.grid(skeletons[pick], reals[pick], generated[pick]), tmp / name)
            pictures.append(name)
        (tmp / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.md").write_text(report_markdown(result, pictures))
    log.info("%s on %s/%s (%d frames): SSIM %.4f, PSNR %.2f dB, L1 %.4f; pose error %s, detection %.0f%%; "
             "flicker %+.4f -> %s", run, data, split, n, result["ssim"], result["psnr"], result["l1"],
             "n/a" if pose_error is None else f"{pose_error:.4f}", 100 * detection_rate, result["flicker"], out)
    return result


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a (no person found)"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(r: dict, pictures: list[str]) -> str:
    """report.md: the numbers, then the sample grids (skeleton | real | generated)."""
    lines = [
        f"# pix2dance evaluation: {Path(r['run']).name}",
        "",
        f"Run `{r['run']}` at step {r['step']}, on the `{r['split']}` split of `{r['data']}`: "
        f"{r['frames']} frames at {r['size']} px. Pose model: `{r['pose_model']}`.",
        "",
        "| metric | full frame | dancer's box |",
        "|---|---|---|",
        f"| SSIM (higher is better, 1 = identical) | {_fmt(r['ssim'])} | {_fmt(r['box_ssim'])} |",
        f"| PSNR, dB (higher is better) | {_fmt(r['psnr'], 2)} | {_fmt(r['box_psnr'], 2)} |",
        f"| L1, 0-1 (lower is better) | {_fmt(r['l1'])} | {_fmt(r['box_l1'])} |",
        "",
        "| pose | generated | real frames (the floor) |",
        "|---|---|---|",
        f"| pose error, / body height (lower is better) | {_fmt(r['pose_error'])} | {_fmt(r['pose_error_real'])} |",
        f"| detection rate | {r['detection_rate']:.0%} | {r['detection_rate_real']:.0%} |",
        "",
        f"Flicker (frame-to-frame change, generated minus real): **{r['flicker']:+.4f}** "
        f"({r['flicker_generated']:.4f} vs {r['flicker_real']:.4f}; 0 is as steady as the video).",
        "",
        "Video: [side_by_side.mp4](side_by_side.mp4) (skeleton | real | generated).",
        "",
        "## Samples: skeleton | real | generated",
        "",
    ]
    lines += [f"![samples {i}]({name})\n" for i, name in enumerate(pictures)]
    return "\n".join(lines) + "\n"
