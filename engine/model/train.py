"""pix2pix training: the loop, checkpoints and resume, validation, loss plots; DDP under torchrun.

    pix2dance train DATASET --out RUN --steps 20000            # or train.run(dataset, out, steps=...)
    torchrun --nproc_per_node 4 -m engine.cli train DATASET --out RUN   # PyTorch DDP, one GPU each

The loss is the paper's: GAN (vanilla BCE-with-logits, or LSGAN) + 100 x L1, Adam 2e-4 with betas
(0.5, 0.999), constant for the first `decay_from` (half) of the run, then linear decay to 0 at
`steps`. The whole training split is held in memory as uint8 tensors on the device; each step
slices a batch and augments it there with scale-and-crop jitter (one random zoom and crop per
pair, applied identically to skeleton and frame by sampling both through one affine grid; no
mirroring, which would swap the left/right colours of the skeleton).

Data order is a pure function of (seed, step, rank): epoch e visits a permutation seeded by
(seed, e), and rank r of W takes its slice of each global batch, as DistributedSampler would. So
a resumed run sees exactly the batches the uninterrupted run would have, with no sampler state.

The run directory (see engine.model.runs for the served part):
    RUN/config.json, generator.safetensors    what serving loads (rewritten with each checkpoint)
    RUN/state.json                           {"step", "checkpoint", "started_from", "time"}
    RUN/checkpoints/step_00001000/           models.safetensors (G.*, D.*), optim.safetensors
                                             (both Adams flattened, RNG states), checkpoint.json
                                             (step, config, optimizer index, sha256 of each file)
    RUN/losses.jsonl                         {"step", "D", "G_GAN", "G_L1", "lr"} every `log_every` steps
    RUN/metrics.jsonl                        {"step", "l1", "ssim", "psnr", "split", "frames"} per validation
    RUN/losses.png, RUN/samples/step_*.png   curves, and skeleton | real | generated grids
Each checkpoint folder is built in a temp folder and renamed (engine.atomic), then the top-level
files are replaced atomically, so a SIGKILL at any moment loses at most `checkpoint_every` steps.
No pickle: tensors in safetensors, everything else JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.model import metrics, plots
from engine.atomic import atomic_dir, atomic_file
from engine.errors import UserError
from engine.wire.joints import JOINTS
from engine.model.networks import Discriminator, Generator, levels
from engine.model.runs import CONFIG, GENERATOR, STATE, read_json, save_generator, write_json

log = logging.getLogger(__name__)

CHECKPOINTS, LOSSES, METRICS, SAMPLES, PLOT = "checkpoints", "losses.jsonl", "metrics.jsonl", "samples", "losses.png"
MODELS_FILE, OPTIM_FILE, CKPT_JSON = "models.safetensors", "optim.safetensors", "checkpoint.json"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """What defines a run: saved in config.json["train"] and in every checkpoint."""
    steps: int = 20000            # total steps of the run (may be raised on resume)
    size: int = 256
    ngf: int = 64
    ndf: int = 64
    batch: int = 1                # per process; the global batch is batch x world_size
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    l1_weight: float = 100.0      # lambda of the paper
    gan: str = "vanilla"          # "vanilla" (BCE with logits) or "lsgan" (least squares)
    decay_from: float = 0.5       # share of the run at constant lr before the linear decay to 0
    jitter: float = 1.12          # largest zoom of the scale-and-crop jitter (286/256, the paper's)
    seed: int = 0
    world_size: int = 1


# Settings a resumed run must share with its checkpoint (they define the model or the data order).
FIXED = ("size", "ngf", "ndf", "batch", "gan", "seed", "l1_weight", "jitter")


@dataclass
class Split:
    """One split of a dataset, in memory: uint8 (N, 3, S, S) tensors and (N, J, 3) keypoints in pixels of S."""
    skeletons: torch.Tensor
    frames: torch.Tensor
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.skeletons)


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when not distributed)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False          # True when we initialised a process group (DDP)


# --- data ---------------------------------------------------------------------------------------

def dataset_info(root: str | Path) -> dict:
    """DATASET/dataset.json, checked for what training needs (size, counts, stats)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{root} is not a dataset folder (no dataset.json); build one with `pix2dance dataset`")
    info = read_json(path, ("size", "counts", "stats"))
    if "joints" in info and list(info["joints"]) != list(JOINTS):
        raise UserError(f"{path} was built with another joint set; rebuild it with this version")
    if not info["stats"]:
        raise UserError(f"{path} has no body statistics (no usable frames)")
    return info


def load_split(root: str | Path, split: str, size: int) -> Split:
    """A dataset split as uint8 tensors at `size` px (skeletons redrawn at that size, frames resized)."""
    import cv2

    from engine.data.dataset import load_pairs
    from engine.data.skeleton import draw_batch
    skeletons, frames, keypoints = load_pairs(root, split)
    keypoints = np.asarray(keypoints, np.float32).copy()
    if len(frames) and frames.shape[1] != size:
        # Redraw rather than resize the skeletons: line widths must match what inference draws.
        scale = size / frames.shape[1]
        keypoints[..., :2] *= scale
        skeletons = draw_batch(keypoints, size)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        frames = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])
    to_chw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, size, size, 3).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return Split(to_chw(skeletons), to_chw(frames), keypoints)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The visiting order of epoch `epoch`: a permutation of range(n) that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def batch_indices(seed: int, step: int, n: int, batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Sample indices (batch,) of this rank at `step`: slice `rank` of the global batch (batch x world)."""
    start = (step * world + rank) * batch               # position in the endless sequence of epochs
    q = torch.arange(start, start + batch)
    epochs, pos = q // n, q % n
    out = torch.empty(batch, dtype=torch.long)
    for e in epochs.unique().tolist():
        sel = epochs == e
        out[sel] = epoch_permutation(seed, e, n)[pos[sel]]
    return out


def jitter(x: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scale-and-crop every image of (B, C, H, W): zoom (B,) >= 1, shift (B, 2) in [-1, 1] of the slack.

    One affine grid per sample, so the skeleton and the frame stacked in C move together. zoom and
    shift live on the CPU (no device sync for the test below); only the (B, 2, 3) matrices move.
    """
    zoom, shift = zoom.cpu(), shift.cpu()
    if bool((zoom == 1).all()):
        return x
    inv = 1.0 / zoom                                             # share of the image kept
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    theta[:, :, 2] = shift * (1 - inv)[:, None]                  # crop centre within the slack
    theta = theta.to(x.device, x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Constant lr, then linear decay from step decay_from x steps to 0 at `steps`."""
    start = int(cfg.steps * cfg.decay_from)
    if step < start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - start))


# --- the model and one training step ------------------------------------------------------------

def resolve_device(device: str | torch.device, dist_info: Dist | None = None) -> torch.device:
    """'auto' -> cuda when available; a DDP process takes the GPU of its local rank."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but this PyTorch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", dist_info.local_rank if dist_info else 0)
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' -> bf16 on a GPU that has it, else fp16 on GPU; always 'off' on CPU."""
    if device.type != "cuda" or amp == "off":
        return "off"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


class Trainer:
    """G, D, their optimizers and the in-memory training data; `step(i)` does one pix2pix iteration.

    The bench uses this class directly; `run` adds checkpoints, validation and plots around it.
    """

    def __init__(self, cfg: TrainConfig, data: Split, device: torch.device, *, amp: str = "off",
                 compile: bool = False, dist_info: Dist | None = None):
        self.cfg, self.device, self.amp = cfg, device, amp
        self.dist = dist_info or Dist()
        self.channels_last = device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G = Generator(size=cfg.size, ngf=cfg.ngf).to(device, memory_format=fmt)
        self.D = Discriminator(ndf=cfg.ndf).to(device, memory_format=fmt)
        # Fused Adam: one kernel for all parameters (3x faster than the per-tensor loop on CPU too).
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
        self.opt_G = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **adam)
        self.scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10, enabled=amp == "fp16")  # 2^16 overflows for steps
        # What the step calls: DDP wrappers (one forward and one backward each per step), and D
        # unwrapped for the generator's loss, whose D gradients are never wanted or all-reduced.
        self.G_step, self.D_step, self.D_for_G = self.G, self.D, self.D
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index] if device.type == "cuda" else None
            self.G_step, self.D_step = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        if compile:
            self.G_step, self.D_step, self.D_for_G = (torch.compile(m) for m in (self.G_step, self.D_step, self.D_for_G))
        self.skeletons = data.skeletons.to(device)             # (N, 3, S, S) uint8
        self.frames = data.frames.to(device)
        self.n = len(data)
        self.loss_sums = torch.zeros(3, device=device)          # D, G_GAN, G_L1 since the last log
        self.loss_count = 0
        self.started_from = 0                                   # the step this process began at

    def autocast(self):
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's augmented batch at `step`: skeleton, frame, each (B, 3, S, S) float in [-1, 1]."""
        cfg, d = self.cfg, self.dist
        idx = batch_indices(cfg.seed, step, self.n, cfg.batch, d.rank, d.world).to(self.device)
        x = torch.cat([self.skeletons[idx], self.frames[idx]], 1).float().div_(127.5).sub_(1)  # (B, 6, S, S)
        g = torch.Generator().manual_seed((cfg.seed * 7_919 + step * 104_729 + d.rank) % (2**63))
        zoom = 1 + (cfg.jitter - 1) * torch.rand(cfg.batch, generator=g)
        shift = torch.rand(cfg.batch, 2, generator=g) * 2 - 1
        x = jitter(x, zoom, shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x[:, :3], x[:, 3:]

    def gan_loss(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.cfg.gan == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, step: int) -> None:
        """One iteration as in the paper: forward G; update D on (real, fake); update G on GAN + lambda L1."""
        self.set_lr(lr_at(self.cfg, step))
        skeleton, real = self.batch(step)
        with self.autocast():
            fake = self.G_step(skeleton)                          # (B, 3, S, S)

        # D: real pairs -> 1, fake pairs -> 0, in one forward (instance norm keeps samples apart).
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.D_step(torch.cat([skeleton, skeleton]), torch.cat([fake.detach(), real]))
            fake_logits, real_logits = logits.chunk(2)
            loss_D = 0.5 * (self.gan_loss(fake_logits, False) + self.gan_loss(real_logits, True))
        self.scaler.scale(loss_D).backward()
        self.scaler.step(self.opt_D)

        # G: fool D, and stay near the real frame.
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            loss_gan = self.gan_loss(self.D_for_G(skeleton, fake), True)
        loss_l1 = (fake.float() - real).abs().mean()
        loss_G = loss_gan + self.cfg.l1_weight * loss_l1
        self.scaler.scale(loss_G).backward()
        self.scaler.step(self.opt_G)
        self.scaler.update()
        self.loss_sums += torch.stack([loss_D.detach(), loss_gan.detach(), loss_l1.detach()]).float()
        self.loss_count += 1

    def take_losses(self) -> dict[str, float]:
        """Mean D, G_GAN, G_L1 since the last call, over all ranks (one device sync; every rank calls it)."""
        means = self.loss_sums / max(1, self.loss_count)
        if self.dist.active:
            import torch.distributed as dist
            dist.all_reduce(means)                              # SUM: gloo has no AVG
            means /= self.dist.world
        values = means.tolist()
        self.loss_sums.zero_()
        self.loss_count = 0
        return dict(zip(("D", "G_GAN", "G_L1"), values))


@torch.no_grad()
def generate(G: Generator, skeletons: torch.Tensor, device: torch.device, batch: int = 16,
             amp: str = "off") -> torch.Tensor:
    """uint8 (N, 3, S, S) skeletons -> uint8 (N, 3, S, S) frames on the CPU, G in eval mode (no dropout)."""
    was_training = G.training
    G.eval()
    out = []
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp != "off" else nullcontext())
    for i in range(0, len(skeletons), batch):
        x = skeletons[i:i + batch].to(device).float().div_(127.5).sub_(1)
        with ctx:
            y = G(x)
        out.append(((y.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu())
    G.train(was_training)
    return torch.cat(out) if out else torch.zeros_like(skeletons)


def validate(G: Generator, split: Split, device: torch.device, amp: str = "off") -> tuple[dict, torch.Tensor]:
    """Mean L1, SSIM, PSNR of G's frames against the real ones (in [0, 1] units), and the frames."""
    fakes = generate(G, split.skeletons, device, amp=amp)
    a, b = fakes.float() / 255, split.frames.float() / 255
    return {"l1": float(metrics.l1(a, b).mean()), "ssim": float(metrics.ssim(a, b).mean()),
            "psnr": float(metrics.psnr(a, b).mean())}, fakes


# --- checkpoints (safetensors + JSON, no pickle) ------------------------------------------------

def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict as tensors named `prefix.state.<param>.<key>` and a JSON index."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars,
                     "state_keys": {str(pid): sorted(s) for pid, s in sd["state"].items()}}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], index: dict, prefix: str) -> dict:
    """The inverse of flatten_optimizer: a state_dict for `optimizer.load_state_dict`."""
    state = {}
    for pid, keys in index["state_keys"].items():
        entry = {}
        for key in keys:
            name = f"{prefix}.state.{pid}.{key}"
            entry[key] = tensors[name] if name in tensors else index["scalars"][f"{pid}.{key}"]
        state[int(pid)] = entry
    # JSON turns tuples (Adam's betas) into lists; give them back their type.
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in index["param_groups"]]
    return {"state": state, "param_groups": groups}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(run_dir: Path, trainer: Trainer, step: int, config: dict, keep: int = 2) -> Path:
    """Write checkpoints/step_N/ atomically, then generator.safetensors, config.json and state.json."""
    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINTS / checkpoint_name(step)
    models = {f"G.{k}": v.detach().cpu().contiguous() for k, v in trainer.G.state_dict().items()}
    models.update({f"D.{k}": v.detach().cpu().contiguous() for k, v in trainer.D.state_dict().items()})
    opt_G, index_G = flatten_optimizer(trainer.opt_G, "opt_G")
    opt_D, index_D = flatten_optimizer(trainer.opt_D, "opt_D")
    rng = {"rng.cpu": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    with atomic_dir(final) as tmp:
        save_file(models, str(tmp / MODELS_FILE), metadata={"format": "pix2dance-checkpoint"})
        save_file({**opt_G, **opt_D, **rng}, str(tmp / OPTIM_FILE), metadata={"format": "pix2dance-checkpoint"})
        meta = {"format": CHECKPOINT_FORMAT, "step": step, "config": config,
                "optimizers": {"opt_G": index_G, "opt_D": index_D},
                "scaler": {k: v for k, v in trainer.scaler.state_dict().items()},
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                          for name in (MODELS_FILE, OPTIM_FILE)}}
        (tmp / CKPT_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    save_generator(run_dir, trainer.G, config)
    write_json(run_dir / STATE, {"step": step, "checkpoint": f"{CHECKPOINTS}/{final.name}",
                                 "started_from": trainer.started_from, "time": time.time()})
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first (temp folders of an interrupted write are ignored)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(checkpoint.json, model tensors, optimizer + RNG tensors); UserError if corrupt or truncated."""
    def bad(why: str) -> UserError:
        return UserError(f"checkpoint {path} is corrupt or truncated ({why}); delete that folder to resume "
                         f"from an earlier checkpoint, or train into a new --out")
    try:
        meta = json.loads((path / CKPT_JSON).read_text())
    except FileNotFoundError:
        raise bad(f"no {CKPT_JSON}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"{CKPT_JSON} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "step" not in meta:
        raise bad(f"{CKPT_JSON} is not a pix2dance checkpoint of format {CHECKPOINT_FORMAT}")
    for name in (MODELS_FILE, OPTIM_FILE):
        file, want = path / name, meta.get("files", {}).get(name, {})
        if not file.is_file():
            raise bad(f"{name} is missing")
        if file.stat().st_size != want.get("bytes"):
            raise bad(f"{name} has {file.stat().st_size} bytes, expected {want.get('bytes')}")
        if _sha256(file) != want.get("sha256"):
            raise bad(f"{name} does not match its checksum")
    try:
        return meta, load_file(str(path / MODELS_FILE)), load_file(str(path / OPTIM_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise bad(str(e)) from None


def restore(trainer: Trainer, path: Path) -> int:
    """Load a checkpoint into the trainer (models, optimizers, scaler, rank 0's RNG); the step."""
    meta, models, optim = read_checkpoint(path)
    try:
        trainer.G.load_state_dict({k[2:]: v for k, v in models.items() if k.startswith("G.")})
        trainer.D.load_state_dict({k[2:]: v for k, v in models.items() if k.startswith("D.")})
        trainer.opt_G.load_state_dict(unflatten_optimizer(optim, meta["optimizers"]["opt_G"], "opt_G"))
        trainer.opt_D.load_state_dict(unflatten_optimizer(optim, meta["optimizers"]["opt_D"], "opt_D"))
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} does not fit this model ({first}); train into a new --out") from None
    if meta.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(meta["scaler"])
    step = int(meta["step"])
    if trainer.dist.rank == 0:
        torch.set_rng_state(optim["rng.cpu"])
        if trainer.device.type == "cuda" and "rng.cuda" in optim:
            torch.cuda.set_rng_state(optim["rng.cuda"], trainer.device)
    else:  # other ranks: a fresh stream that still depends only on (seed, rank, step)
        torch.manual_seed(trainer.cfg.seed + 7_919 * trainer.dist.rank + 104_729 * step)
    return step


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temp files and folders of writes a kill interrupted (engine.atomic names them .NAME.*.tmp)."""
    ours = (CONFIG, GENERATOR, STATE, LOSSES, METRICS, PLOT)
    for path in Path(run_dir).glob(".*.tmp"):
        if any(path.name.startswith(f".{name}.") for name in ours):
            path.unlink(missing_ok=True)
    for folder in (Path(run_dir) / CHECKPOINTS, Path(run_dir) / SAMPLES):
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            if path.name.startswith(".step_"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


# --- JSON-lines history (survives resume) -------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop rows after `step` (written after the checkpoint we resume from), atomically."""
    if not path.is_file():
        return
    rows = [r for r in read_jsonl(path) if r["step"] <= step]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


# --- the run ------------------------------------------------------------------------------------

def init_distributed(device: str) -> Dist:
    """Join the torchrun job if there is one (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device) == "cuda" or (str(device) == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, active=True)


def _shared_random_seed(d: Dist) -> int:
    """A fresh random seed, the same on every rank (rank 0's): the data order depends on it."""
    seed = torch.tensor([int.from_bytes(os.urandom(4), "little")], dtype=torch.int64)
    if d.active:
        import torch.distributed as dist
        if dist.get_backend() == "nccl":
            seed = seed.cuda()
        dist.broadcast(seed, src=0)
    return int(seed.item())


def _barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist
        dist.barrier()


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


def _settle_config(out: Path, asked: dict, steps: int) -> tuple[TrainConfig, Path | None]:
    """The run's TrainConfig: from the last checkpoint when resuming (explicit settings must agree)."""
    checkpoints = list_checkpoints(out)
    if not checkpoints:
        if (out / CONFIG).exists() or (out / GENERATOR).exists():
            raise UserError(f"{out} holds a model but no checkpoints to resume from; train into a new --out")
        fresh = {k: v for k, v in asked.items() if v is not None}
        return TrainConfig(steps=steps, **fresh), None
    latest = checkpoints[-1]
    meta = read_checkpoint(latest)[0]
    try:
        saved = TrainConfig(**meta["config"]["train"])
    except (KeyError, TypeError) as e:
        raise UserError(f"checkpoint {latest} has no usable training config ({e}); train into a new --out") from None
    clashes = [f"{k} {asked[k]} (run has {getattr(saved, k)})" for k in FIXED
               if asked.get(k) is not None and asked[k] != getattr(saved, k)]
    if clashes:
        raise UserError(f"{out} was trained with other settings: {', '.join(clashes)}; "
                        f"drop those options to resume, or train into a new --out")
    overrides = {k: asked[k] for k in ("lr", "decay_from") if asked.get(k) is not None}
    return dataclasses.replace(saved, steps=steps, **overrides), latest


def run(dataset: str | Path, out: str | Path, steps: int = 20000, size: int | None = None,
        ngf: int | None = None, batch: int | None = None, device: str = "auto", seed: int | None = None,
        quiet: bool = False, *, ndf: int | None = None, gan: str | None = None, lr: float | None = None,
        decay_from: float | None = None, jitter: float | None = None, checkpoint_every: int = 500,
        val_every: int = 1000, log_every: int = 10, amp: str = "auto", compile: bool = False,
        keep: int = 2) -> dict:
    """Train (or resume) a run to `steps` total steps; returns the last validation's metrics.

    Unset options (None) come from the checkpoint when resuming, else from TrainConfig's defaults
    (size: the dataset's; ndf: ngf). Rank 0 of a torchrun job writes everything.
    """
    from tqdm import tqdm
    if steps < 0:
        raise UserError(f"--steps must be >= 0, got {steps}")
    if checkpoint_every < 1 or val_every < 1 or log_every < 1:
        raise UserError("--checkpoint-every, --val-every and the log interval must be >= 1")
    if gan is not None and gan not in ("vanilla", "lsgan"):
        raise UserError(f"unknown GAN loss {gan!r} (vanilla or lsgan)")
    for name, value in (("--ngf", ngf), ("--ndf", ndf), ("--batch", batch)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if lr is not None and not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    if jitter is not None and jitter < 1:
        raise UserError(f"--jitter is a zoom factor >= 1 (1: no jitter), got {jitter}")
    dataset, out = Path(dataset), Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run folder")
    info = dataset_info(dataset)
    d = init_distributed(device)
    try:
        dev = resolve_device(device, d)
        amp_mode = resolve_amp(amp, dev)
        asked = {"size": size, "ngf": ngf, "ndf": ndf, "batch": batch, "gan": gan, "seed": seed,
                 "lr": lr, "decay_from": decay_from, "jitter": jitter}
        if not list_checkpoints(out):   # a fresh run: defaults that depend on the data or on ngf
            asked["size"] = size or int(info["size"])
            asked["seed"] = seed if seed is not None else _shared_random_seed(d)
            asked["ndf"] = ndf if ndf is not None else (ngf or TrainConfig.ngf)
        cfg, latest = _settle_config(out, asked, steps)
        cfg.world_size = d.world
        try:
            levels(cfg.size)
        except ValueError as e:
            raise UserError(str(e)) from None
        _configure_backends(dev, deterministic=seed is not None)
        torch.manual_seed(cfg.seed + 7_919 * d.rank)

        train_split = load_split(dataset, "train", cfg.size)
        val_split = load_split(dataset, "val", cfg.size)
        val_name = "val"
        if len(train_split) == 0:
            raise UserError(f"{dataset} has no training pairs")
        if len(val_split) == 0:
            log.warning("%s has no val split: validating on the training pairs", dataset)
            val_split, val_name = train_split, "train"

        trainer = Trainer(cfg, train_split, dev, amp=amp_mode, compile=compile, dist_info=d)
        start = restore(trainer, latest) if latest is not None else 0
        trainer.started_from = start
        config = {"size": cfg.size, "ngf": cfg.ngf, "joints": list(JOINTS), "stats": info["stats"],
                  "stats_size": int(info["size"]), "format": "pix2dance-run", "dataset": str(dataset),
                  "train": dataclasses.asdict(cfg)}
        if d.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / SAMPLES).mkdir(exist_ok=True)
            for name in (LOSSES, METRICS):        # rows written after the checkpoint are replayed
                truncate_jsonl(out / name, start)
            remove_leftovers(out)
            if latest is not None:
                log.info("resuming %s from step %d (%s)", out, start, latest.name)
            log.info("training %s: %d -> %d steps, %d train / %d %s pairs at %d px, ngf %d, batch %d x %d, %s%s",
                     out, start, cfg.steps, len(train_split), len(val_split), val_name, cfg.size, cfg.ngf,
                     cfg.batch, d.world, dev, f", {amp_mode}" if amp_mode != "off" else "")

        def checkpoint_and_validate(step: int, do_val: bool, do_ckpt: bool) -> dict | None:
            result = None
            if d.rank == 0:
                if do_ckpt:
                    save_checkpoint(out, trainer, step, config, keep=keep)
                if do_val:
                    result = _validate_and_plot(out, trainer, val_split, val_name, step, amp_mode)
            _barrier(d)
            return result

        last = None
        bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), desc="train", unit="step",
                   disable=quiet or d.rank != 0, dynamic_ncols=True)
        t0 = time.time()
        for step in range(start, cfg.steps):
            trainer.step(step)
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == cfg.steps:
                losses = trainer.take_losses()
                if d.rank == 0:
                    append_jsonl(out / LOSSES, {"step": done, **losses, "lr": lr_at(cfg, step),
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
            last = checkpoint_and_validate(start, True, latest is None)   # --steps 0: an untrained run
        if d.rank == 0 and last:
            log.info("step %d: val %s L1 %.4f, SSIM %.4f, PSNR %.2f dB", last["step"], val_name,
                     last["l1"], last["ssim"], last["psnr"])
        return last or {}
    finally:
        if d.active:
            import torch.distributed as dist
            dist.destroy_process_group()


def _validate_and_plot(out: Path, trainer: Trainer, split: Split, split_name: str, step: int, amp: str) -> dict:
    """Validate, append to metrics.jsonl, write the sample grid and redraw losses.png (rank 0)."""
    scores, fakes = validate(trainer.G, split, trainer.device, amp)
    row = {"step": step, **scores, "split": split_name, "frames": len(split)}
    append_jsonl(out / METRICS, row)
    pick = np.unique(np.linspace(0, len(split) - 1, min(4, len(split))).round().astype(int))
    hwc = lambda t: t[pick].permute(0, 2, 3, 1).numpy()  # noqa: E731
    plots.save_grid(plots.grid(hwc(split.skeletons), hwc(split.frames), hwc(fakes)),
                    out / SAMPLES / f"{checkpoint_name(step)}.png")
    plots.loss_plot(read_jsonl(out / LOSSES), read_jsonl(out / METRICS), out / PLOT)
    return row
