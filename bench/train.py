"""Benchmark training: our loop against a plain pix2pix reference loop, and time to quality.

    .venv/bin/python bench/train.py --quick                 # seconds: 64 px, ngf 8, CPU-sized
    .venv/bin/python bench/train.py                         # throughput at 256 px, ngf 64 (cuda when available)
    .venv/bin/python bench/train.py --quality --minutes 10,30   # val SSIM after 10 and 30 min of CPU training

Throughput: the same Generator/Discriminator and the same pairs (a dataset built from
../shared/data/video/dancer_room.mp4 by engine.data.dataset.build), timed side by side in one process:
- reference: what the pix2pix reference code does: batch 1, fp32, eager, one sample at a time
  converted from uint8 on the CPU, resized (bicubic, 1.12x) and randomly cropped there, copied to
  the device; D judges fake and real pairs in two forwards.
- ours: engine.model.pix2pix.Pix2Pix: the split held on the device as uint8, batches sliced and jittered
  there (one affine grid), D on real and fake in one forward, bf16/fp16 autocast + channels_last on
  GPU (optionally torch.compile), at `--batch` (and at batch 1, for a like-for-like step rate).
Printed: steps/s and images/s of each, and the ratios. On a GPU the target is >= 3x images/s.

Time to quality: build a dataset from ../shared/data/video/dancer_long_320x240.mp4 at 256 px, train
our loop on the CPU for the given minutes (default 10 and 30), and print val L1/SSIM/PSNR at each
mark: the baseline to push.
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
from engine.model.pix2pix import Pix2Pix  # noqa: E402
from engine.model.tensors import to_model  # noqa: E402

SHARED = ROOT.parent / "shared"
log = logging.getLogger("bench.train")


def build_dataset(video: Path, size: int, out: Path, fps: float) -> Path:
    """A dataset folder from one video (reused if it already exists at that size)."""
    import json

    from engine.data import dataset
    if (out / "dataset.json").is_file() and json.loads((out / "dataset.json").read_text()).get("size") == size:
        return out
    model = SHARED / "models" / "pose_landmarker_lite.task"
    t = time.time()
    dataset.build([video], out, fps=fps, size=size, pose_model=model, val_fraction=0.1, quiet=True, force=True)
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
        pred_fake = self.D(a, fake.detach())
        pred_real = self.D(a, b)
        loss_D = 0.5 * (self.bce(pred_fake, torch.zeros_like(pred_fake)) + self.bce(pred_real, torch.ones_like(pred_real)))
        loss_D.backward()
        self.opt_D.step()
        for p in self.D.parameters():
            p.requires_grad_(False)
        self.opt_G.zero_grad()
        pred = self.D(a, fake)
        loss_G = self.bce(pred, torch.ones_like(pred)) + self.cfg.l1_weight * (fake - b).abs().mean()
        loss_G.backward()
        self.opt_G.step()


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

    def ours(batch: int):
        cfg = train.TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=batch, seed=0)
        torch.manual_seed(0)
        return Pix2Pix(cfg, split, device, amp=amp, compile=args.compile)

    ref_cfg = train.TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=1, seed=0)
    warmup = 20 if args.compile else 5
    rows = []
    ref_rate, ref_n = steps_per_second(ReferenceLoop(ref_cfg, split, device), device, args.seconds, 5)
    rows.append(("reference (batch 1, fp32, eager, per-sample CPU jitter)", 1, ref_rate, ref_n))
    rate1, n1 = steps_per_second(ours(1), device, args.seconds, warmup)
    rows.append((f"ours, batch 1 ({amp if amp != 'off' else 'fp32'}{', compiled' if args.compile else ''})", 1, rate1, n1))
    if args.batch > 1:
        rate_b, n_b = steps_per_second(ours(args.batch), device, args.seconds, warmup)
        rows.append((f"ours, batch {args.batch} ({amp if amp != 'off' else 'fp32'}{', compiled' if args.compile else ''})",
                     args.batch, rate_b, n_b))
    log.info("%-62s %9s %9s %7s", "loop", "steps/s", "images/s", "steps")
    for name, batch, rate, n in rows:
        log.info("%-62s %9.2f %9.2f %7d", name, rate, rate * batch, n)
    best = max(rows[1:], key=lambda r: r[2] * r[1])
    log.info("ratio ours/reference, steps/s at batch 1: %.2fx", rate1 / ref_rate)
    log.info("ratio ours/reference, images/s (ours at batch %d): %.2fx%s", best[1], best[2] * best[1] / ref_rate,
             "  (target on GPU: >= 3x)" if device.type == "cuda" else "")


def quality(args) -> None:
    device = torch.device("cpu")
    video = Path(args.video) if args.video else SHARED / "data" / "video" / "dancer_long_320x240.mp4"
    data_dir = build_dataset(video, args.size, Path(args.data) / f"{video.stem}{args.size}", fps=10)
    train_split, val_split = batches.load_split(data_dir, "train", args.size), batches.load_split(data_dir, "val", args.size)
    marks = sorted(float(m) for m in args.minutes.split(","))
    cfg = train.TrainConfig(steps=10**9, size=args.size, ngf=args.ngf, ndf=args.ngf, batch=args.batch, seed=0)
    torch.manual_seed(0)
    trainer = Pix2Pix(cfg, train_split, device)
    log.info("time to quality: %s at %d px, ngf %d, batch %d, %d train / %d val pairs, CPU, %d thread(s)",
             video.name, args.size, args.ngf, args.batch, len(train_split), len(val_split), torch.get_num_threads())
    scores, _ = train.validate(trainer.G, val_split, device)
    log.info("%8s %8s %8s %8s %8s", "minutes", "steps", "val L1", "SSIM", "PSNR")
    log.info("%8.1f %8d %8.4f %8.4f %8.2f", 0, 0, scores["l1"], scores["ssim"], scores["psnr"])
    t0, step, trained = time.perf_counter(), 0, 0.0      # validation time is not training time
    for mark in marks:
        while trained + (time.perf_counter() - t0) < mark * 60:
            trainer.step(step)
            step += 1
        trained += time.perf_counter() - t0
        scores, _ = train.validate(trainer.G, val_split, device)
        log.info("%8.1f %8d %8.4f %8.4f %8.2f", trained / 60, step, scores["l1"], scores["ssim"], scores["psnr"])
        t0 = time.perf_counter()


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
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
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
