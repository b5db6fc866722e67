"""Evaluate a trained run by self-reenactment at the source resolution; a report folder.

    pix2dance eval RUN --data DATASET [--split val] --out REPORT      # or evaluate.run(...)

The held-out frames are rendered from their own poses through the render path (engine.model.predictor:
the source keypoints, normalization none, person-centred crops over the held-out sequence at the
dataset's fps, the generator, placed where the pose is in the source frame) and composited over the
clip's plate, or over black where the clip has none (its camera moved; the report says so). They
are scored against the real video frames, decoded again from the source video. A temporal run sees
its own previous output, so each clip's frames are generated in order (Predictor.render's Sequence,
engine.model.sequence), as `render` and the engine generate them: its flicker is the one users see.

REPORT/ (written in a temp folder and renamed: never half-written):
    eval.json          ssim, psnr, l1 (whole frame) and box_ssim, box_psnr, box_l1 (the dancer's box from
                       the source keypoints, metrics.keypoint_box); pose_error, detection_rate; flicker;
                       alpha_iou; frames; the same pose numbers for the real frames as a floor; "plate":
                       the same scores for the empty plate (no dancer at all); "source": {video, width,
                       height} (a list for several clips)
    frames/NNNNNN.png  the scored composites, named by the frame's 0-based index in the decoded video
                       (several clips: frames/<clip stem>/NNNNNN.png)
    side_by_side.mp4   real | generated, at the dataset's fps
    report.md          the numbers beside the plate's, whether the model beats it, and sample grids

- Image metrics are on [0, 1] images, the composites quantised to uint8 as served.
- pose_error: metrics.pose_error (MediaPipe, the lite model by default, on each composite; the
  mean distance between the detected joints and the source pose's joints seen in both, divided by
  the source pose's body height, or the clip's median when the pose's cannot be measured),
  averaged over the frames where a person is found; null when none is found, with detection_rate
  the share of frames where one is found. `pose_error_real` is the same on the real frames: how far
  the detector itself is from the dataset's keypoints, the floor a perfect generator would reach.
- flicker: mean absolute frame-to-frame change of the composites minus that of the real frames
  (0: as steady as the video; > 0: flickers more), skipping pairs across clips and time gaps.
- alpha_iou: the placed matte against the dataset's stored mask placed back into the frame, both
  thresholded at 0.5 (metrics.alpha_iou).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.model import batches, compose, metrics, plots
from engine.model.runs import STATE
from engine.wire.joints import body_stats

log = logging.getLogger(__name__)

PANEL_HEIGHT = 256         # side-by-side rows and sample panels are shown at least this tall
CHUNK = 8                  # frames scored at once (SSIM at 1080p holds ~0.5 GB a frame in float64)
FIELDS = ("ssim", "psnr", "l1", "box_ssim", "box_psnr", "box_l1", "pose_error", "detection_rate",
          "flicker", "alpha_iou", "frames")
IMAGE_FIELDS = ("ssim", "psnr", "l1", "box_ssim", "box_psnr", "box_l1")


@dataclass
class Clip:
    """The held-out frames of one source clip, at its resolution: real, generated, empty plate."""
    index: int                    # the source's number in dataset.json
    video: Path
    width: int
    height: int
    frame_index: np.ndarray       # (N,) 0-based frame numbers in the decoded video
    keypoints: np.ndarray         # (N, J, 3) source pixels
    breaks: np.ndarray            # (N - 1,) bool: frames i, i + 1 are not consecutive samples
    real: np.ndarray              # (N, H, W, 3) uint8 RGB
    generated: np.ndarray         # (N, H, W, 3) the composites
    alpha: np.ndarray             # (N, H, W) uint8 placed matte
    mask: np.ndarray              # (N, H, W) uint8 stored mask placed back
    empty: np.ndarray             # (H, W, 3) the plate, or black
    has_plate: bool
    novelty: np.ndarray | None = None   # (N,) body heights from the training poses (engine.model.novelty)


def video_path(video: str, data: Path) -> Path:
    for candidate in (Path(video), data / video):
        if candidate.is_file():
            return candidate
    raise UserError(f"eval renders the held-out frames at the source resolution and needs the source video: "
                    f"{video} not found")


def decode_frames(path: Path, fps: float, wanted: np.ndarray) -> np.ndarray:
    """The frames numbered `wanted` (the dataset's sampler at `fps`), (N, H, W, 3) RGB in that order."""
    import cv2

    from engine.data import video
    found = {}
    keep = set(int(i) for i in wanted)
    for frame in video.frames(path, fps):
        if frame.index in keep:
            found[frame.index] = cv2.cvtColor(frame.bgr, cv2.COLOR_BGR2RGB)
    missing = keep - set(found)
    if missing:
        raise UserError(f"{path} no longer has the frames the dataset was built from (e.g. {min(missing)}); "
                        f"rebuild the dataset")
    return np.stack([found[int(i)] for i in wanted])


def place_masks(masks: np.ndarray, crops: np.ndarray, size: int, canvas: tuple[int, int]) -> np.ndarray:
    """Stored (N, S, S) masks in their crops -> (N, H, W) in the source frame (the same warp as the dancer's)."""
    from engine.data import framing
    out = []
    for mask, crop in zip(masks, crops):
        rgba = np.zeros(mask.shape + (4,), np.uint8)
        rgba[..., 3] = mask
        out.append(compose.place(rgba, framing.placement(crop, size), canvas)[..., 3])
    return np.stack(out)


def render_clips(predictor, data: Path, info: dict, split: str, quiet: bool) -> list[Clip]:
    """Every source clip's held-out frames: decoded, rendered through the predictor, composited."""
    from engine.data import pairs
    rows = pairs.load_rows(data, split)
    masks = pairs.load_masks(data, split)
    plates = pairs.read_plates(data)
    fps, size = float(info["fps"]), int(info["size"])
    clips = []
    for source in np.unique(rows["source"]):
        mine = rows["source"] == source
        src = info["sources"][int(source)]
        width, height = int(src["width"]), int(src["height"])
        kp, index, t = rows["source_keypoints"][mine], rows["frame_index"][mine], rows["time"][mine]
        path = video_path(src["video"], data)
        real = decode_frames(path, fps, index)
        rendered = predictor.render(kp, (width, height), "none", placement="source", alpha=True, fps=fps)
        plate = plates[int(source)]
        generated = np.stack([compose.over(layer, plate) for layer in rendered.frames])
        clips.append(Clip(
            index=int(source), video=path, width=width, height=height, frame_index=index, keypoints=kp,
            breaks=(np.diff(t) > 1.5 / fps) | (np.diff(t) <= 0), real=real, generated=generated,
            alpha=rendered.frames[..., 3], mask=place_masks(masks[mine], rows["crops"][mine], size, (width, height)),
            empty=plate if plate is not None else np.zeros((height, width, 3), np.uint8), has_plate=plate is not None,
            novelty=rendered.novelty))
        if plate is None:
            log.info("%s has no plate (%s): its frames are scored over black", path.name, src.get("plate_note") or "none")
    return clips


def _image_scores(fake: np.ndarray, real: np.ndarray, keypoints: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame SSIM, PSNR, L1 on the whole frame and in the dancer's box, CHUNK frames at a time."""
    out: dict[str, list] = {k: [] for k in IMAGE_FIELDS}
    height, width = real.shape[1:3]
    for i in range(0, len(real), CHUNK):
        a, b = metrics.to_unit(fake[i:i + CHUNK]), metrics.to_unit(real[i:i + CHUNK])
        box = metrics.box_masks(keypoints[i:i + CHUNK], (width, height))
        for prefix, mask in (("", None), ("box_", box)):
            out[prefix + "ssim"].append(metrics.ssim(a, b, mask))
            out[prefix + "psnr"].append(metrics.psnr(a, b, mask))
            out[prefix + "l1"].append(metrics.l1(a, b, mask))
    return {k: np.concatenate([v.numpy() for v in values]) for k, values in out.items()}


def _flicker(frames: np.ndarray, breaks: np.ndarray) -> list[float]:
    """Mean absolute change between each pair of consecutive frames that are consecutive samples."""
    return [metrics.flicker(metrics.to_unit(frames[i:i + 2])) for i in range(len(frames) - 1) if not breaks[i]]


def score(clips: list[Clip], pose_model: Path, fps: float, quiet: bool) -> dict:
    """eval.json's scores over all clips: the model's, the real frames' pose floor, and the plate's ("plate")."""
    model, empty = {k: [] for k in IMAGE_FIELDS}, {k: [] for k in IMAGE_FIELDS}
    found = {"generated": [], "real": [], "plate": []}
    targets, iou_weighted, novelty = [], [], []
    flicker = {"generated": [], "real": [], "plate": []}
    for c in clips:
        n = len(c.real)
        plate = np.repeat(c.empty[None], n, axis=0)                 # the empty plate as a clip
        for acc, images in ((model, c.generated), (empty, plate)):
            for k, v in _image_scores(images, c.real, c.keypoints).items():
                acc[k].append(v)
        novelty.append(c.novelty if c.novelty is not None else np.full(n, np.nan))
        stats = body_stats(list(c.keypoints))
        fallback = stats["height"] if stats else None
        for name, images in (("generated", c.generated), ("real", c.real), ("plate", plate)):
            detected = metrics.detect_poses(images, pose_model, fps, quiet, f"pose ({name}, {c.video.name})")
            found[name].append((detected, fallback))
            flicker[name] += _flicker(images, c.breaks) if name != "plate" else [0.0] * int((~c.breaks).sum())
        targets.append(c.keypoints)
        iou_weighted.append((metrics.alpha_iou(c.alpha / 255.0, c.mask / 255.0), n))

    def pose(name: str) -> tuple[float | None, float]:
        """metrics.pose_scores clip by clip (each with its own fallback height), weighted by frames."""
        errors, hits, frames = [], 0, 0
        for (detected, fallback), kp in zip(found[name], targets):
            error, rate = metrics.pose_scores(detected, kp, fallback)
            if error is not None:
                errors.append((error, sum(d is not None for d in detected)))
            hits += rate * len(kp)
            frames += len(kp)
        error = sum(e * w for e, w in errors) / sum(w for _, w in errors) if errors else None
        return error, hits / max(1, frames)

    mean = lambda parts: float(np.mean(np.concatenate(parts)))  # noqa: E731
    real_flicker = float(np.mean(flicker["real"])) if flicker["real"] else 0.0
    gen_flicker = float(np.mean(flicker["generated"])) if flicker["generated"] else 0.0
    pose_error, detection_rate = pose("generated")
    pose_error_real, detection_rate_real = pose("real")
    plate_pose, plate_rate = pose("plate")
    alpha = sum(v * n for v, n in iou_weighted) / max(1, sum(n for _, n in iou_weighted))
    result = {k: mean(v) for k, v in model.items()}
    result.update(pose_error=pose_error, detection_rate=detection_rate, pose_error_real=pose_error_real,
                  detection_rate_real=detection_rate_real, flicker=gen_flicker - real_flicker,
                  flicker_generated=gen_flicker, flicker_real=real_flicker, alpha_iou=alpha,
                  frames=int(sum(len(c.real) for c in clips)))
    result["novelty"] = novelty_vs_error(np.concatenate(novelty), np.concatenate(model["box_l1"]))
    result["plate"] = {**{k: mean(v) for k, v in empty.items()}, "pose_error": plate_pose, "detection_rate": plate_rate,
                       "flicker": -real_flicker, "alpha_iou": 0.0}
    return result


def novelty_vs_error(novelty: np.ndarray, error: np.ndarray) -> dict | None:
    """Does a frame's novelty warn of its error? Spearman's rank correlation of each held-out frame's
    novelty with its L1 error in the dancer's box (positive: the further from her repertoire, the worse)."""
    seen = np.isfinite(novelty)
    if seen.sum() < 3 or np.ptp(novelty[seen]) == 0:
        return None
    from scipy.stats import spearmanr
    rho = spearmanr(novelty[seen], error[seen]).statistic
    return {"spearman_box_l1": None if not np.isfinite(rho) else round(float(rho), 4),
            "mean": round(float(novelty[seen].mean()), 4), "frames": int(seen.sum())}


def run(run: str | Path, data: str | Path, out: str | Path, split: str = "val", device: str = "auto",
        pose_model: str | Path | None = None, quiet: bool = False, batch: int = 16, backend: str = "auto") -> dict:
    """Evaluate RUN on DATASET's split by self-reenactment and write the REPORT folder; returns eval.json's content."""
    from engine.data import video
    from engine.data.pose import resolve_model
    from engine.model.predictor import Predictor
    run, data, out = Path(run), Path(data), Path(out)
    info = batches.dataset_info(data)                  # a dataset from before the stage is refused first
    predictor = Predictor(run, device, backend=backend, max_batch=batch)
    if not predictor.alpha:
        raise UserError(f"{run} was trained before mattes: it cannot be placed in the source frame; retrain it")
    counts = info["counts"]
    if not counts.get(split):
        other = "train" if split == "val" else "val"
        raise UserError(f"{data} has no {split} pairs to evaluate on (try --split {other})")
    model = resolve_model(pose_model)
    fps = float(info["fps"])
    clips = render_clips(predictor, data, info, split, quiet)
    result = score(clips, model, fps, quiet)
    state = json.loads((run / STATE).read_text()) if (run / STATE).is_file() else {}
    sources = [{"video": str(c.video), "width": c.width, "height": c.height, "background": "plate" if c.has_plate else "black"}
               for c in clips]
    result.update(split=split, size=predictor.size, step=state.get("step"), run=str(run), data=str(data),
                  pose_model=model.name, placement="source", normalization="none",
                  source=sources[0] if len(sources) == 1 else sources,
                  beats_plate=result["box_ssim"] > result["plate"]["box_ssim"])

    with atomic_dir(out) as tmp:
        several = len(clips) > 1
        for c in clips:
            folder = tmp / "frames" / (c.video.stem if several else "")
            _write_pngs(folder, c.frame_index, c.generated)
        result["codec"] = video.write_video(tmp / "side_by_side.mp4", _side_by_side(clips), fps)
        pictures = _samples(clips, tmp)
        (tmp / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.md").write_text(report_markdown(result, pictures))
    log.info("%s on %s/%s (%d frames, source frame): box SSIM %.4f (plate %.4f), SSIM %.4f, PSNR %.2f dB; "
             "pose error %s, detection %.0f%%; flicker %+.4f; alpha IoU %.3f -> %s", run, data, split,
             result["frames"], result["box_ssim"], result["plate"]["box_ssim"], result["ssim"], result["psnr"],
             "n/a" if result["pose_error"] is None else f"{result['pose_error']:.4f}",
             100 * result["detection_rate"], result["flicker"], result["alpha_iou"], out)
    return result


def _write_pngs(folder: Path, numbers: np.ndarray, frames: np.ndarray) -> None:
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for number, rgb in zip(numbers, frames):
        if not cv2.imwrite(str(folder / f"{int(number):06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {folder / f'{int(number):06d}.png'}")


def _to_height(image: np.ndarray, height: int) -> np.ndarray:
    """Scale to `height` rows (even width, for H.264), keeping the aspect."""
    import cv2
    h, w = image.shape[:2]
    width = max(2, int(round(w * height / h / 2)) * 2)
    if (h, w) == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if height < h else cv2.INTER_LINEAR)


def _side_by_side(clips: list[Clip]):
    """real | generated rows at one height (the first clip's, at least PANEL_HEIGHT), clip after clip."""
    height = max(PANEL_HEIGHT, clips[0].height) // 2 * 2
    for c in clips:
        for real, fake in zip(c.real, c.generated):
            yield np.concatenate([_to_height(real, height), _to_height(fake, height)], axis=1)


def _samples(clips: list[Clip], folder: Path) -> list[str]:
    """samples_K.png: rows of real | generated | matte, spread over the split; their names."""
    tiles = [(c, i) for c in clips for i in range(len(c.real))]
    pick = np.unique(np.linspace(0, len(tiles) - 1, min(len(tiles), 12)).round().astype(int))
    height = max(PANEL_HEIGHT, clips[0].height) // 2 * 2
    names = []
    for k in range(0, len(pick), 4):
        rows = []
        for j in pick[k:k + 4]:
            c, i = tiles[j]
            matte = np.repeat(c.alpha[i][..., None], 3, axis=-1)
            rows.append([_to_height(x, height) for x in (c.real[i], c.generated[i], matte)])
        width = max(r[0].shape[1] for r in rows)
        pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)))  # noqa: E731
        name = f"samples_{k // 4}.png"
        plots.save_png(plots.grid(*[np.stack([pad(r[col]) for r in rows]) for col in range(3)], min_panel=1), folder / name)
        names.append(name)
    return names


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a (no person found)"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(r: dict, pictures: list[str]) -> str:
    """report.md: the numbers beside the empty plate's, the verdict, then the sample grids."""
    p = r["plate"]
    sources = r["source"] if isinstance(r["source"], list) else [r["source"]]
    where = "; ".join(f"`{s['video']}` ({s['width']} x {s['height']}, over "
                      f"{'its plate' if s['background'] == 'plate' else 'black: no plate, the camera moves'})"
                      for s in sources)
    beats = (f"The model **beats the empty plate** in the dancer's box (box SSIM {r['box_ssim']:.4f} vs {p['box_ssim']:.4f})."
             if r["beats_plate"] else
             f"The model **does not beat the empty plate** in the dancer's box (box SSIM {r['box_ssim']:.4f} vs "
             f"{p['box_ssim']:.4f}): a room without her scores as well, so the dancer it draws adds nothing yet.")
    lines = [
        f"# pix2dance evaluation: {Path(r['run']).name}",
        "",
        f"Run `{r['run']}` at step {r['step']} ({r['size']} px crops), on the `{r['split']}` split of `{r['data']}`: "
        f"{r['frames']} frames rendered from their own poses (normalization none) in the source frame: {where}. "
        f"Pose model: `{r['pose_model']}`.",
        "",
        beats,
        "",
        "| metric | model | empty plate |",
        "|---|---|---|",
        f"| SSIM, whole frame (higher is better) | {_fmt(r['ssim'])} | {_fmt(p['ssim'])} |",
        f"| SSIM, dancer's box | {_fmt(r['box_ssim'])} | {_fmt(p['box_ssim'])} |",
        f"| PSNR, dB, whole frame / box | {_fmt(r['psnr'], 2)} / {_fmt(r['box_psnr'], 2)} | {_fmt(p['psnr'], 2)} / {_fmt(p['box_psnr'], 2)} |",
        f"| L1, 0-1, whole frame / box (lower is better) | {_fmt(r['l1'])} / {_fmt(r['box_l1'])} | {_fmt(p['l1'])} / {_fmt(p['box_l1'])} |",
        f"| pose error, / body height (real frames: {_fmt(r['pose_error_real'])}) | {_fmt(r['pose_error'])} | {_fmt(p['pose_error'])} |",
        f"| detection rate (real frames: {r['detection_rate_real']:.0%}) | {r['detection_rate']:.0%} | {p['detection_rate']:.0%} |",
        f"| alpha IoU against the stored masks | {_fmt(r['alpha_iou'], 3)} | 0 |",
        "",
        f"Flicker (frame-to-frame change, generated minus real): **{r['flicker']:+.4f}** "
        f"({r['flicker_generated']:.4f} vs {r['flicker_real']:.4f}; 0 is as steady as the video).",
        "",
        "Frames: `frames/` (PNG, named by the frame's index in the decoded video). "
        "Video: [side_by_side.mp4](side_by_side.mp4) (real | generated).",
        "",
        "## Samples: real | generated | matte",
        "",
    ]
    lines += [f"![samples {i}]({name})\n" for i, name in enumerate(pictures)]
    return "\n".join(lines) + "\n"
