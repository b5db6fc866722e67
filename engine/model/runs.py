"""The run directory: what training writes and what serving, rendering and evaluation load.

    RUN_DIR/config.json            the model and the dancer: size, ngf, joints, stats, stats_size,
                                   channels (4: RGB + alpha; 3 or absent: a run from before mattes),
                                   stage {width, height, stats} (the dancer's own video frame, her
                                   statistics in its pixels), framing {side, centre_up}, temporal
                                   (true: G also sees its previous output, engine.model.temporal), plus the
                                   training settings that made it ("train": train.TrainConfig)
    RUN_DIR/stage.png              the plate of the stage clip (her room without her), when it has one
    RUN_DIR/repertoire.npz         her training poses, for novelty warnings (engine.model.novelty)
    RUN_DIR/generator.safetensors  the generator's weights (what serving loads), fp32 or fp16
    RUN_DIR/state.json             {"step", "checkpoint", "started_from", "time"}, with each checkpoint
    RUN_DIR/checkpoints/step_*/    training checkpoints (engine.model.checkpoints)
    RUN_DIR/losses.jsonl           {"step", "D", "G_GAN", "G_feat", "G_L1", "G_mask", "lr", "seconds"} every few steps
    RUN_DIR/metrics.jsonl          {"step", "l1", "ssim", "psnr", "alpha_iou", "split", "frames"} per validation
    RUN_DIR/losses.png, samples/   curves, and skeleton | real | generated | alpha grids per validation

`stats` are the dancer's body statistics (joints.body_stats) in pixels of the dataset's
`stats_size` square (the person-centred crop); `stage.stats` the same in her video frame's pixels.
normalize.to_dancer maps any pose into either space. No pickle anywhere: weights are safetensors
and everything else is JSON.

    G, config = load_generator(RUN_DIR, device)    # G(skeletons in [-1, 1]) -> (N, C, S, S) in [-1, 1]
    tensors.to_uint8(G(x)).permute(0, 2, 3, 1)     # -> (N, S, S, C) uint8: RGBA, straight alpha, when C is 4
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_file
from engine.errors import UserError
from engine.wire.joints import JOINTS
from engine.model.networks import Generator
from engine.model.temporal import in_channels
from engine.model.novelty import FILE as REPERTOIRE

CONFIG, GENERATOR, STATE = "config.json", "generator.safetensors", "state.json"
STAGE_PLATE = "stage.png"        # the dancer's clean plate (her room without her), where her camera stood still
CHECKPOINTS, LOSSES, METRICS, SAMPLES, PLOT = "checkpoints", "losses.jsonl", "metrics.jsonl", "samples", "losses.png"
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


def channels(config: dict) -> int:
    """Output channels of a run's generator: 4 (RGB + alpha), or 3 for a run from before mattes."""
    return int(config.get("channels", 3))


def temporal(config: dict) -> bool:
    """Whether a run's generator is temporal: it sees its previous output too (engine.model.temporal)."""
    return bool(config.get("temporal", False))


def load_generator(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """The run's generator in eval mode on `device` (fp32), and its config; UserError on a bad run.

    Its output is (N, channels(config), S, S) in [-1, 1]; tensors.to_uint8 makes it uint8 RGB(A),
    the alpha straight (networks.split_rgba)."""
    config = read_config(run_dir)
    path = Path(run_dir) / GENERATOR
    if not path.is_file():
        raise UserError(f"{run_dir} has no {GENERATOR} (has training saved a checkpoint yet?)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    generator = Generator(size=int(config["size"]), ngf=int(config["ngf"]), out_channels=channels(config),
                          in_channels=in_channels(temporal(config)))
    try:
        generator.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path} does not match its config (size {config['size']}, ngf {config['ngf']}, "
                        f"{channels(config)} channels): {first}") from None
    return generator.to(device).eval(), config


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temp files and folders of writes a kill interrupted (engine.atomic names them .NAME.*.tmp)."""
    ours = (CONFIG, GENERATOR, STATE, LOSSES, METRICS, PLOT, STAGE_PLATE, REPERTOIRE)
    for path in Path(run_dir).glob(".*.tmp"):
        if any(path.name.startswith(f".{name}.") for name in ours):
            path.unlink(missing_ok=True)
    for folder in (Path(run_dir) / CHECKPOINTS, Path(run_dir) / SAMPLES):
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            if path.name.startswith(".step_"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


# --- JSON-lines history (losses, metrics; survives resume) --------------------------------------

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
