"""Benchmark training: our loop against a plain pix2pix reference loop, and time to quality.

    .venv/bin/python bench/train.py --quick                 # seconds: 64 px, ngf 8, CPU-sized
    .venv/bin/python bench/train.py                         # throughput at 256 px, ngf 64 (cuda when available)
    .venv/bin/python bench/train.py --quality --minutes 10,30   # quality after 10 and 30 min of CPU training
    .venv/bin/python bench/train.py --quality --arms fixed,frame --minutes 10   # issue 12's comparison

Throughput: the same Generator/Discriminator and the same pairs (a dataset built from
../shared/data/video/dancer_room.mp4 by engine.data.dataset.build), timed side by side in one process:
- reference: what the pix2pix reference code does: batch 1, fp32, eager, one sample at a time
  converted from uint8 on the CPU, resized (bicubic, 1.12x) and randomly cropped there, copied to
  the device; D judges fake and real pairs in two forwards.
- ours: engine.model.pix2pix.Pix2Pix: the split held on the device as uint8, batches sliced and jittered
  there (one affine grid), D on real and fake in one forward, bf16/fp16 autocast + channels_last on
  GPU (optionally torch.compile), at `--batch` (and at batch 1, for a like-for-like step rate).
Printed: steps/s and images/s of each, and the ratios. On a GPU the target is >= 3x images/s.
Ours runs three objectives side by side: pix2pix's (one PatchGAN, vanilla GAN, L1), the default
single-frame one (pix2pixHD: 2 scales, LSGAN, feature matching, limb dropout) and the temporal one
(consecutive pairs: two G passes and a temporal D per step); their steps/s against pix2pix's.

Time to quality (--quality, CPU): a dataset from ../shared/data/video/dancer_long_320x240.mp4 with
the last 20% held out (MediaPipe full), then the arms trained side by side for the given minutes
(default 10 and 30), one process and one thread each, the same Pix2Pix loop and settings but:
- frame: the person-centred stage, single-frame generator (--no-temporal), the default objective;
- temporal: the same with the temporal model (the default of `pix2dance train`);
- pix2pix: the stage with pix2pix's objective (one PatchGAN, vanilla, no feature matching/dropout);
- fixed: issue 12's baseline: one square room crop per clip (kept in this file only), the whole
  crop generated (mask all 1, background = the frame: the old loss), pix2pix's objective.
At each mark all are scored in the source frame by the same code as `pix2dance eval` (the fixed
model's crop placed where it was cut, over the plate around it), beside the empty plate's scores
and the real frames' pose floor: box SSIM, detection rate, pose error, flicker, alpha IoU.
Suggested CPU configuration: --size 128 --ngf 32 (batch 1).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model import batches, train  # noqa: E402
from engine.model.device import resolve_amp, resolve_device  # noqa: E402
from engine.model.networks import Discriminator, Generator  # noqa: E402
from engine.model.train import TrainConfig  # noqa: E402
from engine.model.pix2pix import Pix2Pix  # noqa: E402
from engine.model.tensors import to_model  # noqa: E402

SHARED = ROOT.parent / "shared"
log = logging.getLogger("bench.train")


def build_dataset(video: Path, size: int, out: Path, fps: float, val_fraction: float = 0.1) -> Path:
    """A dataset folder from one video (reused if it already exists with these settings)."""
    import json

    from engine.data import dataset
    if (out / "dataset.json").is_file():
        meta = json.loads((out / "dataset.json").read_text())
        if meta.get("size") == size and meta.get("format") == dataset.FORMAT and meta["split"]["val_fraction"] == val_fraction:
            return out
    model = SHARED / "models" / "pose_landmarker_full.task"
    t = time.time()
    dataset.build([video], out, fps=fps, size=size, pose_model=model, val_fraction=val_fraction, quiet=True, force=True)
    log.info("dataset: %s at %d px in %.1f s", video.name, size, time.time() - t)
    return out


class ReferenceLoop:
    """The pix2pix reference's training step, batch 1, fp32, eager (see the module docstring)."""

    def __init__(self, cfg: train.TrainConfig, data: batches.Split, device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg, self.device = cfg, device
        self.G = Generator(size=cfg.size, ngf=cfg.ngf).to(device)
        self.D = Discriminator(ndf=cfg.ndf).to(device)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.skeletons = data.skeletons.permute(0, 2, 3, 1).numpy()      # (N, S, S, 3) uint8 on the CPU
        self.frames = data.frames.permute(0, 2, 3, 1).numpy()
        self.rng = np.random.default_rng(seed)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.rng.integers(len(self.skeletons)))
        size, load = self.cfg.size, int(round(self.cfg.size * self.cfg.jitter))
        x0, y0 = (int(v) for v in self.rng.integers(0, load - size + 1, 2))
        out = []
        for image in (self.skeletons[i], self.frames[i]):
            t = to_model(torch.from_numpy(image).permute(2, 0, 1))[None]     # (1, 3, S, S)
            t = F.interpolate(t, size=(load, load), mode="bicubic", align_corners=False)
            out.append(t[:, :, y0:y0 + size, x0:x0 + size].to(self.device))
        return out[0], out[1]

    def step(self, step: int) -> None:
        a, b = self.sample()
        fake = self.G(a)
        for p in self.D.parameters():
            p.requires_grad_(True)
        self.opt_D.zero_grad()
        pred_fake = self.D(torch.cat([a, fake.detach()], 1))[-1]
        pred_real = self.D(torch.cat([a, b], 1))[-1]
        loss_D = 0.5 * (self.bce(pred_fake, torch.zeros_like(pred_fake)) + self.bce(pred_real, torch.ones_like(pred_real)))
        loss_D.backward()
        self.opt_D.step()
        for p in self.D.parameters():
            p.requires_grad_(False)
        self.opt_G.zero_grad()
        pred = self.D(torch.cat([a, fake], 1))[-1]
        loss_G = self.bce(pred, torch.ones_like(pred)) + self.cfg.l1_weight * (fake - b).abs().mean()
        loss_G.backward()
        self.opt_G.step()


# The objectives the bench sets side by side (TrainConfig fields; the defaults are "temporal").
OBJECTIVES = {
    "pix2pix": dict(scales=1, feat_weight=0.0, gan="vanilla", limb_dropout=0.0, temporal=False),
    "frame": dict(temporal=False),
    "temporal": dict(temporal=True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(loop, device: torch.device, seconds: float, warmup: int) -> tuple[float, int]:
    """(steps/s, steps timed) of loop.step after `warmup` untimed steps."""
    for i in range(warmup):
        loop.step(i)
    _sync(device)
    t0, n = time.perf_counter(), 0
    while True:
        loop.step(warmup + n)
        n += 1
        if n % 5 == 0:
            _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    _sync(device)
    return n / (time.perf_counter() - t0), n


def throughput(args, device: torch.device) -> None:
    video = SHARED / "data" / "video" / "dancer_room.mp4"
    data_dir = build_dataset(video, args.size, Path(args.data) / f"{video.stem}{args.size}", fps=10)
    split = batches.load_split(data_dir, "train", args.size)
    amp = resolve_amp(args.amp, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log.info("throughput: %d px, ngf %d, %d pairs, %s, %d thread(s), %.0f s per loop",
             args.size, args.ngf, len(split), device, torch.get_num_threads(), args.seconds)

    def ours(batch: int, objective: str):
        cfg = TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=batch, seed=0,
                          **OBJECTIVES[objective])
        torch.manual_seed(0)
        return Pix2Pix(cfg, split, device, amp=amp, compile=args.compile)

    ref_cfg = TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=1, seed=0)
    warmup = 20 if args.compile else 5
    how = f"{amp if amp != 'off' else 'fp32'}{', compiled' if args.compile else ''}"
    rows = []
    ref_rate, ref_n = steps_per_second(ReferenceLoop(ref_cfg, split, device), device, args.seconds, 5)
    rows.append(("reference (batch 1, fp32, eager, per-sample CPU jitter)", "", 1, ref_rate, ref_n))
    rates = {}
    for objective in OBJECTIVES:
        for batch in sorted({1, args.batch}):
            rate, n = steps_per_second(ours(batch, objective), device, args.seconds, warmup)
            rates[objective, batch] = rate
            rows.append((f"ours, {objective}, batch {batch} ({how})", objective, batch, rate, n))
    log.info("%-62s %9s %9s %7s", "loop", "steps/s", "images/s", "steps")
    for name, _, batch, rate, n in rows:
        log.info("%-62s %9.2f %9.2f %7d", name, rate, rate * batch, n)
    log.info("ratio ours (pix2pix objective)/reference, steps/s at batch 1: %.2fx", rates["pix2pix", 1] / ref_rate)
    log.info("ratio ours (pix2pix objective)/reference, images/s (ours at batch %d): %.2fx%s", args.batch,
             rates["pix2pix", args.batch] * args.batch / ref_rate, "  (target on GPU: >= 3x)" if device.type == "cuda" else "")
    for objective in ("frame", "temporal"):
        log.info("steps/s of the %s objective / pix2pix's, batch %d: %.2f", objective, args.batch,
                 rates[objective, args.batch] / rates["pix2pix", args.batch])


# --- time to quality: the stage (person-centred + alpha + plate) against the old fixed room crop --------

def fixed_crop(keypoints: np.ndarray, width: int, height: int, margin: float = 0.15, q: float = 2.0) -> np.ndarray:
    """The old dataset's one square per clip, as (cx, cy, side): the 2nd..98th percentile extent of the
    per-frame joint boxes plus a margin, moved inside the frame where it fits (kept here for the bench only)."""
    from engine.data.selection import person_box
    boxes = np.array([person_box(k) for k in keypoints])
    x0, y0 = np.percentile(boxes[:, 0], q), np.percentile(boxes[:, 1], q)
    x1, y1 = np.percentile(boxes[:, 2], 100 - q), np.percentile(boxes[:, 3], 100 - q)
    side = max(16, int(np.ceil(max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin))))
    x, y = int(round((x0 + x1) / 2 - side / 2)), int(round((y0 + y1) / 2 - side / 2))
    x = min(max(x, min(0, width - side)), max(0, width - side))
    y = min(max(y, min(0, height - side)), max(0, height - side))
    return np.float32([x + side / 2, y + side / 2, side])


def fixed_split(data_dir: Path, info: dict, split: str, size: int, crop: np.ndarray) -> tuple[batches.Split, np.ndarray]:
    """A split re-cut with the fixed room crop (the old pix2pix pairs): mask all 1 and background = frame,
    so the 4-channel model is trained as the old one was (L1 and GAN on its whole picture). Also the
    real frames at the source resolution."""
    from engine.data import framing, pairs, skeleton
    from engine.model.evaluate import decode_frames, video_path
    rows = pairs.load_rows(data_dir, split)
    src = info["sources"][0]
    real = decode_frames(video_path(src["video"], data_dir), float(info["fps"]), rows["frame_index"])
    crops = np.repeat(crop[None], len(real), axis=0)
    kp = framing.to_crop(rows["source_keypoints"], crops, size)
    outside = (kp[..., :2] < 0).any(-1) | (kp[..., :2] > size).any(-1)
    kp[outside, 2] = 0.0
    frames = np.stack([framing.crop_image(f, crop, size) for f in real])
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    masks = torch.full((len(real), 1, size, size), 255, dtype=torch.uint8)
    return batches.Split(chw(skeleton.draw_batch(kp, size)), chw(frames), masks, chw(frames), kp, crops,
                         np.full(len(real), -1)), real


def fixed_clips(G, data_dir: Path, info: dict, size: int, crop: np.ndarray):
    """The old model's val frames in the source frame: its whole crop placed where it was cut, over the plate
    around it (generous: the room outside the crop is exact), scored by the same code as `eval`."""
    from engine.data import framing, pairs
    from engine.model import compose, evaluate
    from engine.model.pix2pix import generate
    val, real = fixed_split(data_dir, info, "val", size, crop)
    rows = pairs.load_rows(data_dir, "val")
    src = info["sources"][0]
    width, height = int(src["width"]), int(src["height"])
    plate = pairs.read_plates(data_dir)[0]
    rgba = generate(G, val.skeletons, torch.device("cpu")).permute(0, 2, 3, 1).numpy().copy()
    rgba[..., 3] = 255                                     # the old model's picture is opaque: the whole crop
    layers = np.stack([compose.place(x, framing.placement(crop, size), (width, height)) for x in rgba])
    fps = float(info["fps"])
    t = rows["time"]
    return [evaluate.Clip(
        index=0, video=Path(src["video"]), width=width, height=height, frame_index=rows["frame_index"],
        keypoints=rows["source_keypoints"], breaks=(np.diff(t) > 1.5 / fps) | (np.diff(t) <= 0), real=real,
        generated=np.stack([compose.over(layer, plate) for layer in layers]), alpha=layers[..., 3],
        mask=evaluate.place_masks(pairs.load_masks(data_dir, "val"), rows["crops"], int(info["size"]), (width, height)),
        empty=plate if plate is not None else np.zeros((height, width, 3), np.uint8), has_plate=plate is not None)]


def quality_arm(args) -> None:
    """One side of --quality, in its own process (one thread): train, and score at each mark into results.json."""
    import json

    from engine.model import evaluate, runs
    torch.set_num_threads(args.threads or 1)
    data_dir, out = Path(args.data_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = batches.dataset_info(data_dir)
    pose_model = SHARED / "models" / "pose_landmarker_full.task"
    if args.arm != "fixed":
        split = batches.load_split(data_dir, "train", args.size)
    else:
        from engine.data import pairs
        rows = pairs.load_rows(data_dir, "train")
        everything = np.concatenate([rows["source_keypoints"], pairs.load_rows(data_dir, "val")["source_keypoints"]])
        src = info["sources"][0]
        crop = fixed_crop(everything, int(src["width"]), int(src["height"]))
        split, _ = fixed_split(data_dir, info, "train", args.size, crop)
    objective = OBJECTIVES["pix2pix" if args.arm == "fixed" else args.arm]
    cfg = TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=args.batch, seed=0, **objective)
    torch.manual_seed(0)
    trainer = Pix2Pix(cfg, split, torch.device("cpu"))
    results, t0, step, trained = [], time.perf_counter(), 0, 0.0      # scoring time is not training time
    for mark in sorted(float(m) for m in args.minutes.split(",")):
        while trained + (time.perf_counter() - t0) < mark * 60:
            trainer.step(step)
            step += 1
        trained += time.perf_counter() - t0
        if args.arm != "fixed":
            run = out / "run"
            runs.save_generator(run, trainer.G, train.run_config(cfg, info, data_dir))
            train.write_stage(data_dir, info, split, run)
            scores = evaluate.run(run, data_dir, out / f"report_{mark:g}min", device="cpu", pose_model=pose_model,
                                  quiet=True, backend="torch")
        else:
            clips = fixed_clips(trainer.G, data_dir, info, args.size, crop)
            scores = evaluate.score(clips, pose_model, float(info["fps"]), True)
        results.append({"minutes": round(trained / 60, 2), "steps": step, **scores})
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        t0 = time.perf_counter()


ARMS = ("frame", "temporal", "pix2pix", "fixed")
QUALITY_ROWS = (("box_ssim", "box SSIM (dancer's box)", ".3f"), ("ssim", "SSIM, whole frame", ".3f"),
                ("box_psnr", "box PSNR, dB", ".2f"), ("detection_rate", "MediaPipe detection rate", ".0%"),
                ("pose_error", "pose error / body height", ".3f"), ("flicker", "flicker, generated - real", "+.4f"),
                ("alpha_iou", "alpha IoU vs stored masks", ".3f"))


def quality(args) -> None:
    """The arms trained side by side (one process and thread each), scored alike."""
    import json
    import subprocess
    video = Path(args.video) if args.video else SHARED / "data" / "video" / "dancer_long_320x240.mp4"
    data_dir = build_dataset(video, args.size, Path(args.data) / f"{video.stem}{args.size}", fps=10, val_fraction=0.2)
    info = batches.dataset_info(data_dir)
    log.info("time to quality: %s, last 20%% held out (%d train / %d val), %d px, ngf %d, batch %d, CPU, "
             "1 thread per arm, marks %s min; scored in the source frame by engine.model.evaluate",
             video.name, info["counts"]["train"], info["counts"]["val"], args.size, args.ngf, args.batch, args.minutes)
    work = Path(args.data) / "quality"
    arms = args.arms.split(",")
    if not arms or any(a not in ARMS for a in arms):
        sys.exit(f"bench/train.py: --arms takes a comma-separated list of {', '.join(ARMS)}")
    procs = [subprocess.Popen([sys.executable, __file__, "--arm", arm, "--data-dir", str(data_dir), "--out", str(work / arm),
                               "--minutes", args.minutes, "--size", str(args.size), "--ngf", str(args.ngf),
                               "--batch", str(args.batch), "--threads", "1"]) for arm in arms]
    if any(p.wait() for p in procs):
        sys.exit("bench/train.py: a quality arm failed")
    results = {arm: json.loads((work / arm / "results.json").read_text()) for arm in arms}
    last = arms[-1]
    for i, row in enumerate(results[last]):
        log.info("")
        log.info("after %.1f min (steps: %s)", row["minutes"], ", ".join(f"{a} {results[a][i]['steps']}" for a in arms))
        log.info("%-30s" + " %12s" * (len(arms) + 2), "", *arms, "empty plate", "real frames")
        for key, label, spec in QUALITY_ROWS:
            fmt = lambda v: "n/a" if v is None else format(v, spec)  # noqa: E731
            real = {"detection_rate": row["detection_rate_real"], "pose_error": row["pose_error_real"]}.get(key)
            log.info("%-30s" + " %12s" * (len(arms) + 2), label, *(fmt(results[a][i].get(key)) for a in arms),
                     fmt(row["plate"].get(key)), fmt(real))
        for arm in arms:
            r = results[arm][i]
            log.info("%-9s box SSIM - plate's %+.3f; detection %.0f%%; pose error - real's %s; flicker %+.4f (target <= 0.01)",
                     arm, r["box_ssim"] - r["plate"]["box_ssim"], 100 * r["detection_rate"],
                     "n/a" if r["pose_error"] is None else f"{r['pose_error'] - r['pose_error_real']:+.3f}", r["flicker"])
        if "frame" in arms and "temporal" in arms:
            f, t = results["frame"][i], results["temporal"][i]
            log.info("temporal - frame: box SSIM %+.3f (target >= 0), flicker %+.4f", t["box_ssim"] - f["box_ssim"],
                     t["flicker"] - f["flicker"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds: 64 px, ngf 8, 3 s per loop, plus a 0.2-minute quality run")
    p.add_argument("--quality", action="store_true", help="time-to-quality mode (CPU) instead of throughput")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="throughput device (auto: cuda when available)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--batch", type=int, help="our batch size (default 16 on GPU, 4 on CPU; 1 in --quality)")
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds per loop (throughput)")
    p.add_argument("--minutes", default="10,30", help="comma-separated marks for --quality (default 10,30)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--compile", action="store_true", help="torch.compile our networks")
    p.add_argument("--video", help="video for --quality (default ../shared/data/video/dancer_long_320x240.mp4)")
    p.add_argument("--data", help="folder to build/keep the bench datasets in (default: a temp folder)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--arms", default="frame,temporal", help=f"--quality arms, side by side (default frame,temporal; "
                   f"of {', '.join(ARMS)})")
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)        # one side of --quality
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.arm:
        logging.getLogger().setLevel(logging.WARNING)
        quality_arm(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.quick:
        args.size, args.ngf, args.seconds = 64, 8, 3.0
        if not args.threads and device.type == "cpu":
            torch.set_num_threads(1)      # tiny convolutions: one thread beats two on a busy machine
    if args.batch is None:
        args.batch = 1 if args.quality else (16 if device.type == "cuda" else 4)
    scratch = None
    if not args.data:
        scratch = args.data = tempfile.mkdtemp(prefix="bench-train-")
    try:
        if args.quality:
            quality(args)
            return
        throughput(args, device)
        if args.quick:   # exercise the quality path too, on the short clip
            args.video, args.minutes = str(SHARED / "data" / "video" / "dancer_room.mp4"), "0.1,0.2"
            args.batch = 1
            quality(args)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
