"""The run directory: what training writes and what serving, rendering and evaluation load.

    RUN_DIR/config.json            the model and the dancer: size, ngf, joints, stats, stats_size,
                                   plus the training settings that made it (train.py adds those)
    RUN_DIR/generator.safetensors  the generator's weights (what serving loads), fp32 or fp16
    RUN_DIR/state.json             {"step": N, ...}, written by training with each checkpoint

`stats` are the dancer's body statistics (joints.body_stats) in pixels of the dataset's
`stats_size` square; normalize.to_dancer maps any pose into that space. No pickle anywhere:
weights are safetensors and everything else is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_file
from engine.errors import UserError
from engine.wire.joints import JOINTS
from engine.model.networks import Generator

CONFIG, GENERATOR, STATE = "config.json", "generator.safetensors", "state.json"
REQUIRED = ("size", "ngf", "joints", "stats", "stats_size")


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from disk, checked for `required` keys; UserError if unreadable or incomplete."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}")
    return data


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run, checked for what serving needs; UserError if missing or malformed."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})")
    config = read_json(path, REQUIRED)
    if list(config["joints"]) != list(JOINTS):
        raise UserError(f"{path} was trained on another joint set; retrain with this version")
    return config


def save_generator(run_dir: str | Path, generator: Generator, config: dict, half: bool = False) -> None:
    """Write generator.safetensors and config.json atomically (fp16 weights when half)."""
    run_dir = Path(run_dir)
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config lacks {missing}")
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in generator.state_dict().items()}
    with atomic_file(run_dir / GENERATOR) as tmp:
        save_file(state, str(tmp), metadata={"format": "pix2dance-generator", "size": str(config["size"])})
    write_json(run_dir / CONFIG, config)


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The run's generator in eval mode on `device` (fp32), and its config; UserError on a bad run."""
    config = read_config(run_dir)
    path = Path(run_dir) / GENERATOR
    if not path.is_file():
        raise UserError(f"{run_dir} has no {GENERATOR} (has training saved a checkpoint yet?)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    generator = Generator(size=int(config["size"]), ngf=int(config["ngf"]))
    try:
        generator.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path} does not match its config (size {config['size']}, ngf {config['ngf']}): {first}") from None
    return generator.to(device).eval(), config
