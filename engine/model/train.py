"""Train (or resume) a pix2pix run: the config, the loop, checkpoints and validation on a schedule.

    cfg = TrainConfig(steps=20000, ngf=64)                  # what the run records (config.json["train"])
    run(cfg, "data/alice", "runs/alice", device="auto")     # the same as `pix2dance train data/alice --out runs/alice`
    torchrun --nproc_per_node 4 -m engine.cli train DATASET --out RUN   # PyTorch DDP, one GPU each

The pieces: engine.model.pix2pix (G, D and one iteration: the paper's losses and schedule),
engine.model.batches (the split on the device, the data order, the jitter), engine.model.checkpoints
(save, verify, restore), engine.model.distributed (torchrun), engine.model.runs (the run folder's
files). This module decides the run's config (a new run's defaults, or the checkpoint's when
resuming), then steps, logs, checkpoints and validates; rank 0 of a torchrun job writes everything.
Rerunning the same command resumes from the last checkpoint; a run already at `steps` validates
only. The run folder's layout is in engine.model.runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.framing import Framing
from engine.errors import UserError
from engine.model import batches, checkpoints, distributed, metrics, plots, runs
from engine.model.batches import Split
from engine.model.device import resolve_amp, resolve_device
from engine.model.networks import GAN_LOSSES, Generator, levels
from engine.model.novelty import Repertoire
from engine.model.pix2pix import CHANNELS, Pix2Pix, generate, lr_at
from engine.wire.joints import JOINTS

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What defines a run: saved in config.json["train"] and in every checkpoint.

    size, ndf and seed may be None: a new run takes the dataset's size, ndf = ngf and a fresh
    random seed; a resumed run takes the checkpoint's. Every other setting is given in full.
    """
    steps: int = 20000            # total steps of the run (may be raised on resume)
    size: int | None = None       # image size, a power of two
    ngf: int = 64
    ndf: int | None = None
    batch: int = 1                # per process; the global batch is batch x world_size
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    l1_weight: float = 100.0      # lambda of the paper, on the composite over the background
    mask_weight: float = 100.0    # lambda of the matte's L1 against the dancer's mask (pix2pix.Pix2Pix)
    gan: str = "lsgan"            # "lsgan" (least squares, pix2pixHD's) or "vanilla" (BCE with logits, pix2pix's)
    scales: int = 2               # discriminator scales (pix2pixHD); 1 is the pix2pix PatchGAN
    feat_weight: float = 10.0     # lambda of pix2pixHD's feature matching; 0: none
    limb_dropout: float = 0.1     # chance that a training skeleton loses a limb (vid2vid)
    temporal: bool = True         # G also sees its previous output; trained on consecutive pairs
    decay_from: float = 0.5       # share of the run at constant lr before the linear decay to 0
    jitter: float = 1.12          # largest zoom of the scale-and-crop jitter (286/256, the paper's)
    seed: int | None = None
    world_size: int = 1           # processes of the run (torchrun); run() records it

    def __post_init__(self):
        if self.steps < 0:
            raise UserError(f"--steps must be >= 0, got {self.steps}")
        if self.gan not in GAN_LOSSES:
            raise UserError(f"unknown GAN loss {self.gan!r} (vanilla or lsgan)")
        if not 1 <= self.scales <= 4:
            raise UserError(f"--scales must be 1 to 4, got {self.scales}")
        if self.feat_weight < 0 or not 0 <= self.limb_dropout <= 1:
            raise UserError("--feat-weight must be >= 0 and --limb-dropout within [0, 1]")
        for name, value in (("--ngf", self.ngf), ("--ndf", self.ndf), ("--batch", self.batch)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be >= 1, got {value}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.jitter < 1:
            raise UserError(f"--jitter is a zoom factor >= 1 (1: no jitter), got {self.jitter}")
        if self.size is not None:
            try:
                levels(self.size)
            except ValueError as e:
                raise UserError(str(e)) from None


# Settings a resumed run must share with its checkpoint (they define the model or the data order).
FIXED = ("size", "ngf", "ndf", "batch", "gan", "seed", "l1_weight", "jitter", "scales", "temporal")
# What a checkpoint from before these settings were recorded was trained with (pix2pix's objective).
LEGACY = {"scales": 1, "feat_weight": 0.0, "limb_dropout": 0.0, "temporal": False}


def saved_config(out: str | Path) -> TrainConfig | None:
    """The config of the run in `out` as its last checkpoint recorded it (what a rerun resumes); None for a new run."""
    found = checkpoints.list_checkpoints(Path(out))
    return _config_of(checkpoints.checkpoint_meta(found[-1]), found[-1]) if found else None


def _config_of(meta: dict, path: Path) -> TrainConfig:
    try:
        return TrainConfig(**{**LEGACY, **meta["config"]["train"]})
    except (KeyError, TypeError) as e:
        raise UserError(f"checkpoint {path} has no usable training config ({e}); train into a new --out") from None


def _settle(cfg: TrainConfig, out: Path, dataset_size: int, d: distributed.Dist):
    """The run's complete config, and the checkpoint read to resume from ((meta, models, optim, path) or None)."""
    found = checkpoints.list_checkpoints(out)
    if not found:
        if (out / runs.CONFIG).exists() or (out / runs.GENERATOR).exists():
            raise UserError(f"{out} holds a model but no checkpoints to resume from; train into a new --out")
        seed = cfg.seed if cfg.seed is not None else distributed.shared_random_seed(d)
        return dataclasses.replace(cfg, size=cfg.size or dataset_size, ndf=cfg.ndf or cfg.ngf, seed=seed,
                                   world_size=d.world), None
    latest = found[-1]
    meta, models, optim = checkpoints.read_checkpoint(latest)
    saved = _config_of(meta, latest)
    clashes = [f"{k} {getattr(cfg, k)} (run has {getattr(saved, k)})" for k in FIXED
               if getattr(cfg, k) is not None and getattr(cfg, k) != getattr(saved, k)]
    if clashes:
        raise UserError(f"{out} was trained with other settings: {', '.join(clashes)}; "
                        f"drop those options to resume, or train into a new --out")
    cfg = dataclasses.replace(cfg, size=saved.size, ndf=saved.ndf, seed=saved.seed, world_size=d.world)
    return cfg, (meta, models, optim, latest)


def run_config(cfg: TrainConfig, info: dict, dataset: Path) -> dict:
    """config.json of a run: the model, the dancer (statistics, her own frame, the framing), the training settings."""
    stage = info["stage"]
    return {"size": cfg.size, "ngf": cfg.ngf, "channels": CHANNELS, "temporal": cfg.temporal, "joints": list(JOINTS),
            "stats": info["stats"], "stats_size": int(info["size"]),
            "stage": {"width": int(stage["width"]), "height": int(stage["height"]), "stats": stage["stats"]},
            "framing": info["framing"], "format": "pix2dance-run", "dataset": str(dataset),
            "train": dataclasses.asdict(cfg)}


def write_stage(dataset: Path, info: dict, train_split: Split, out: Path) -> None:
    """What placing a run's frames needs beside its weights: RUN/stage.png, the plate of the stage clip
    (what `render --placement dancer` composites over) if it has one, and her repertoire of training
    poses (engine.model.novelty), which render and serve measure a new pose against."""
    from engine.atomic import atomic_file
    plate = info["sources"][int(info["stage"]["source"])].get("plate")
    if plate:
        with atomic_file(out / runs.STAGE_PLATE) as tmp:
            tmp.write_bytes((Path(dataset) / plate).read_bytes())
    else:
        (out / runs.STAGE_PLATE).unlink(missing_ok=True)
    side = Framing.of(info).side                   # the crop's width in body heights, as the dataset was framed
    Repertoire.from_crops(train_split.keypoints, int(train_split.skeletons.shape[-1]), side).save(out)


def _configure_backends(device: torch.device, deterministic: bool) -> None:
    """TF32 matmuls/convs on GPUs; with an explicit seed, deterministic kernels as far as they exist."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def run(cfg: TrainConfig, dataset: str | Path, out: str | Path, *, device: str = "auto", amp: str = "auto",
        compile: bool = False, checkpoint_every: int = 500, val_every: int = 1000, log_every: int = 10,
        keep: int = 2, quiet: bool = False) -> dict:
    """Train (or resume) the run in `out` to cfg.steps total steps; returns the last validation's metrics.

    Runtime settings, not recorded: device, amp ("auto": bf16/fp16 on GPU), compile, the intervals
    (steps between checkpoints, validations and loss rows), keep (checkpoints kept), quiet (no
    progress bar). A seed given in cfg also turns on deterministic kernels.
    """
    from tqdm import tqdm
    if checkpoint_every < 1 or val_every < 1 or log_every < 1:
        raise UserError("--checkpoint-every, --val-every and the log interval must be >= 1")
    dataset, out = Path(dataset), Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run folder")
    info = batches.dataset_info(dataset)
    d = distributed.init_distributed(device)
    try:
        dev = resolve_device(device, d.local_rank)
        amp_mode = resolve_amp(amp, dev)
        deterministic = cfg.seed is not None
        cfg, resume = _settle(cfg, out, int(info["size"]), d)
        _configure_backends(dev, deterministic)
        torch.manual_seed(cfg.seed + 7_919 * d.rank)

        train_split = batches.load_split(dataset, "train", cfg.size)
        val_split = batches.load_split(dataset, "val", cfg.size)
        val_name = "val"
        if len(train_split) == 0:
            raise UserError(f"{dataset} has no training pairs")
        if len(val_split) == 0:
            log.warning("%s has no val split: validating on the training pairs", dataset)
            val_split, val_name = train_split, "train"

        model = Pix2Pix(cfg, train_split, dev, amp=amp_mode, compile=compile, dist_info=d)
        start = checkpoints.restore(model, *resume) if resume is not None else 0
        model.started_from = start
        config = run_config(cfg, info, dataset)
        if d.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            write_stage(dataset, info, train_split, out)
            (out / runs.SAMPLES).mkdir(exist_ok=True)
            for name in (runs.LOSSES, runs.METRICS):        # rows written after the checkpoint are replayed
                runs.truncate_jsonl(out / name, start)
            runs.remove_leftovers(out)
            if resume is not None:
                log.info("resuming %s from step %d (%s)", out, start, resume[-1].name)
            log.info("training %s: %d -> %d steps, %d train / %d %s pairs at %d px, ngf %d, batch %d x %d, %s%s",
                     out, start, cfg.steps, len(train_split), len(val_split), val_name, cfg.size, cfg.ngf,
                     cfg.batch, d.world, dev, f", {amp_mode}" if amp_mode != "off" else "")

        def checkpoint_and_validate(step: int, do_val: bool, do_ckpt: bool) -> dict | None:
            result = None
            if d.rank == 0:
                if do_ckpt:
                    checkpoints.save_checkpoint(out, model, step, config, keep=keep)
                if do_val:
                    result = _validate_and_plot(out, model, val_split, val_name, step, amp_mode)
            distributed.barrier(d)
            return result

        last = None
        bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), desc="train", unit="step",
                   disable=quiet or d.rank != 0, dynamic_ncols=True)
        t0 = time.time()
        for step in range(start, cfg.steps):
            model.step(step)
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == cfg.steps:
                losses = model.take_losses()
                if d.rank == 0:
                    runs.append_jsonl(out / runs.LOSSES, {"step": done, **losses, "lr": lr_at(cfg, step),
                                                          "seconds": round(time.time() - t0, 3)})
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            at_end = done == cfg.steps
            do_ckpt, do_val = done % checkpoint_every == 0 or at_end, done % val_every == 0 or at_end
            if do_ckpt or do_val:
                last = checkpoint_and_validate(done, do_val, do_ckpt) or last
        bar.close()
        if start >= cfg.steps:   # already done: validate what is there and exit cleanly
            if d.rank == 0:
                log.info("%s is already at step %d (>= --steps %d): validating only", out, start, cfg.steps)
            last = checkpoint_and_validate(start, True, resume is None)   # --steps 0: an untrained run
        if d.rank == 0 and last:
            log.info("step %d: val %s L1 %.4f, SSIM %.4f, PSNR %.2f dB, alpha IoU %.3f", last["step"], val_name,
                     last["l1"], last["ssim"], last["psnr"], last["alpha_iou"])
        return last or {}
    finally:
        distributed.shutdown(d)


def validate(G: Generator, split: Split, device: torch.device, amp: str = "off") -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Scores of G's composites over the pairs' backgrounds against the real frames (in [0, 1] units):
    mean L1, SSIM, PSNR, and alpha IoU against the masks; and the composites and mattes, uint8."""
    rgba = generate(G, split.skeletons, device, amp=amp, previous=split.previous, crops=split.crops)  # (N, 4, S, S)
    alpha = rgba[:, 3:4].float() / 255
    composites = (alpha * rgba[:, :3].float() + (1 - alpha) * split.backgrounds.float()).round().to(torch.uint8)
    scores = metrics.image_scores(composites.float() / 255, split.frames.float() / 255)
    iou = metrics.alpha_iou(alpha[:, 0], split.masks[:, 0].float() / 255)
    return {**{k: scores[k] for k in ("l1", "ssim", "psnr")}, "alpha_iou": iou}, composites, rgba[:, 3:4]


def _validate_and_plot(out: Path, model: Pix2Pix, split: Split, split_name: str, step: int, amp: str) -> dict:
    """Validate, append to metrics.jsonl, write the sample grid and redraw losses.png (rank 0)."""
    scores, composites, alphas = validate(model.G, split, model.device, amp)
    row = {"step": step, **scores, "split": split_name, "frames": len(split)}
    runs.append_jsonl(out / runs.METRICS, row)
    pick = np.unique(np.linspace(0, len(split) - 1, min(4, len(split))).round().astype(int))
    hwc = lambda t: t[pick].expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()  # noqa: E731  (a matte shown grey)
    plots.save_grid(plots.grid(hwc(split.skeletons), hwc(split.frames), hwc(composites), hwc(alphas)),
                    out / runs.SAMPLES / f"{checkpoints.checkpoint_name(step)}.png")
    plots.loss_plot(runs.read_jsonl(out / runs.LOSSES), runs.read_jsonl(out / runs.METRICS), out / runs.PLOT)
    return row
