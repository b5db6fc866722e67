"""Training checkpoints: save, list, verify (sha256) and restore, in safetensors and JSON (no pickle).

    RUN/checkpoints/step_00001000/   models.safetensors (G.*, D.*), optim.safetensors (both Adams
                                     flattened, RNG states), checkpoint.json (format, step, config,
                                     optimizer index, scaler, bytes and sha256 of each file)

    save_checkpoint(run_dir, model, step, config)   # also rewrites generator.safetensors, config.json, state.json
    latest = list_checkpoints(run_dir)[-1]
    step = restore(model, *read_checkpoint(latest), path=latest)

Each checkpoint folder is built in a temp folder and renamed (engine.atomic), then the top-level
files are replaced atomically, so a SIGKILL at any moment loses at most one checkpoint interval.
A checkpoint whose files do not match their recorded size and checksum is refused with a
UserError that names it, never loaded half-way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_dir
from engine.errors import UserError
from engine.model.runs import CHECKPOINTS, STATE, save_generator, write_json

MODELS_FILE, OPTIM_FILE, CKPT_JSON = "models.safetensors", "optim.safetensors", "checkpoint.json"
CHECKPOINT_FORMAT = 1


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


def save_checkpoint(run_dir: Path, model, step: int, config: dict, keep: int = 2) -> Path:
    """Write checkpoints/step_N/ of a pix2pix.Pix2Pix atomically, then generator.safetensors,
    config.json and state.json; keep the newest `keep` checkpoints."""
    run_dir = Path(run_dir)
    final = run_dir / CHECKPOINTS / checkpoint_name(step)
    models = {f"G.{k}": v.detach().cpu().contiguous() for k, v in model.G.state_dict().items()}
    models.update({f"D.{k}": v.detach().cpu().contiguous() for k, v in model.D.state_dict().items()})
    opt_G, index_G = flatten_optimizer(model.opt_G, "opt_G")
    opt_D, index_D = flatten_optimizer(model.opt_D, "opt_D")
    rng = {"rng.cpu": torch.get_rng_state()}
    if model.device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(model.device)
    with atomic_dir(final) as tmp:
        save_file(models, str(tmp / MODELS_FILE), metadata={"format": "pix2dance-checkpoint"})
        save_file({**opt_G, **opt_D, **rng}, str(tmp / OPTIM_FILE), metadata={"format": "pix2dance-checkpoint"})
        meta = {"format": CHECKPOINT_FORMAT, "step": step, "config": config,
                "optimizers": {"opt_G": index_G, "opt_D": index_D},
                "scaler": {k: v for k, v in model.scaler.state_dict().items()},
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                          for name in (MODELS_FILE, OPTIM_FILE)}}
        (tmp / CKPT_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    save_generator(run_dir, model.G, config)
    write_json(run_dir / STATE, {"step": step, "checkpoint": f"{CHECKPOINTS}/{final.name}",
                                 "started_from": model.started_from, "time": time.time()})
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


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(f"checkpoint {path} is corrupt or truncated ({why}); delete that folder to resume "
                     f"from an earlier checkpoint, or train into a new --out")


def checkpoint_meta(path: Path) -> dict:
    """checkpoint.json of a checkpoint folder, checked for its format; UserError if unreadable."""
    try:
        meta = json.loads((path / CKPT_JSON).read_text())
    except FileNotFoundError:
        raise _corrupt(path, f"no {CKPT_JSON}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"{CKPT_JSON} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "step" not in meta:
        raise _corrupt(path, f"{CKPT_JSON} is not a pix2dance checkpoint of format {CHECKPOINT_FORMAT}")
    return meta


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(checkpoint.json, model tensors, optimizer + RNG tensors); UserError if corrupt or truncated."""
    meta = checkpoint_meta(path)
    for name in (MODELS_FILE, OPTIM_FILE):
        file, want = path / name, meta.get("files", {}).get(name, {})
        if not file.is_file():
            raise _corrupt(path, f"{name} is missing")
        if file.stat().st_size != want.get("bytes"):
            raise _corrupt(path, f"{name} has {file.stat().st_size} bytes, expected {want.get('bytes')}")
        if _sha256(file) != want.get("sha256"):
            raise _corrupt(path, f"{name} does not match its checksum")
    try:
        return meta, load_file(str(path / MODELS_FILE)), load_file(str(path / OPTIM_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise _corrupt(path, str(e)) from None


def restore(model, meta: dict, models: dict, optim: dict, path: Path) -> int:
    """Load a read checkpoint into a pix2pix.Pix2Pix (networks, optimizers, scaler, rank 0's RNG); its step."""
    try:
        model.G.load_state_dict({k[2:]: v for k, v in models.items() if k.startswith("G.")})
        model.D.load_state_dict({k[2:]: v for k, v in models.items() if k.startswith("D.")})
        model.opt_G.load_state_dict(unflatten_optimizer(optim, meta["optimizers"]["opt_G"], "opt_G"))
        model.opt_D.load_state_dict(unflatten_optimizer(optim, meta["optimizers"]["opt_D"], "opt_D"))
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} does not fit this model ({first}); train into a new --out") from None
    if meta.get("scaler") and model.scaler.is_enabled():
        model.scaler.load_state_dict(meta["scaler"])
    step = int(meta["step"])
    if model.dist.rank == 0:
        torch.set_rng_state(optim["rng.cpu"])
        if model.device.type == "cuda" and "rng.cuda" in optim:
            torch.cuda.set_rng_state(optim["rng.cuda"], model.device)
    else:  # other ranks: a fresh stream that still depends only on (seed, rank, step)
        torch.manual_seed(model.cfg.seed + 7_919 * model.dist.rank + 104_729 * step)
    return step
