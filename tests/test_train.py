"""Training: it learns, it survives SIGKILL, it refuses corrupt checkpoints, and it runs under DDP.

Tiny config (ngf 8, 64 px) on the small dataset of tests/tiny_dataset.py. Subprocesses run with one
thread each (OMP_NUM_THREADS=1): on a shared 2-core machine that is also the fastest setting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli
from engine.model import batches, checkpoints, metrics, pix2pix, runs, train
from engine.model.runs import REQUIRED, load_generator
from tests.conftest import PYTHON, ROOT
from tests.tiny_dataset import tiny_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--ngf", "8", "--size", "64", "--device", "cpu", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, pose_model) -> Path:
    return tiny_dataset(tmp_path_factory, pose_model)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pix2dance(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`pix2dance ARGS` in a subprocess, one thread."""
    return subprocess.run([PYTHON, "-m", "engine.cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def train_l1(G, split: batches.Split) -> float:
    """L1 of G's composites over the pairs' backgrounds against the real frames: what training lowers."""
    _, composites, _ = train.validate(G, split, torch.device("cpu"))
    return float(metrics.l1(composites.float() / 255, split.frames.float() / 255).mean())


# --- units ----------------------------------------------------------------------------------------

def test_ranks_split_every_epoch_between_them():
    n, batch, world = 20, 2, 2
    seen = [torch.cat([batches.batch_indices(3, s, n, batch, r, world) for s in range(5)]) for r in range(world)]
    both = torch.cat(seen)
    assert sorted(both.tolist()) == list(range(n))                  # 5 steps x 2 x 2 = one epoch, no repeats
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert torch.equal(batches.batch_indices(3, 7, n, batch), batches.batch_indices(3, 7, n, batch))
    assert not torch.equal(batches.epoch_permutation(3, 0, n), batches.epoch_permutation(3, 1, n))


def test_jitter_moves_skeleton_and_frame_together():
    x = torch.rand(4, 3, 32, 32)
    both = torch.cat([x, x], 1)                                      # skeleton == frame
    out = batches.jitter(both, torch.tensor([1.0, 1.05, 1.1, 1.12]), torch.tensor([[0, 0], [1, -1], [-1, 1], [0.3, 0.2]]))
    assert torch.equal(out[:, :3], out[:, 3:])
    assert torch.allclose(out[0], both[0], atol=1e-5)                # zoom 1: unchanged
    assert not torch.allclose(out[3], both[3], atol=1e-2)            # zoomed: changed
    assert torch.equal(batches.jitter(both, torch.ones(4), torch.zeros(4, 2)), both)


def test_learning_rate_is_constant_then_decays_to_zero():
    cfg = train.TrainConfig(steps=100, lr=2e-4)
    assert pix2pix.lr_at(cfg, 0) == pix2pix.lr_at(cfg, 49) == 2e-4
    assert pix2pix.lr_at(cfg, 75) == pytest.approx(1e-4)
    assert pix2pix.lr_at(cfg, 99) == pytest.approx(4e-6) and pix2pix.lr_at(cfg, 100) == 0


def test_optimizer_state_round_trips_through_tensors_and_json():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, index = checkpoints.flatten_optimizer(opt, "opt")
    index = json.loads(json.dumps(index))                            # it must survive JSON
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    fresh.load_state_dict(checkpoints.unflatten_optimizer(tensors, index, "opt"))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for key in a["state"][pid]:
            assert torch.equal(torch.as_tensor(a["state"][pid][key]), torch.as_tensor(b["state"][pid][key]))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_runs_and_learns_nothing_strange(data, amp):
    """The GPU path's autocast (+ GradScaler for fp16), exercised on the CPU: finite losses, weights move."""
    split = batches.load_split(data, "train", 64)
    cfg = train.TrainConfig(steps=10, size=64, ngf=8, ndf=8, batch=2, seed=0)
    trainer = pix2pix.Pix2Pix(cfg, split, torch.device("cpu"), amp=amp)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    for step in range(3):
        trainer.step(step)
    losses = trainer.take_losses()
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    scores, fakes, alphas = train.validate(trainer.G, split, torch.device("cpu"), amp)
    assert fakes.dtype == torch.uint8 and fakes.shape == split.frames.shape and 0 <= scores["l1"] <= 1
    assert alphas.shape == split.masks.shape and 0 <= scores["alpha_iou"] <= 1


def test_zero_steps_writes_an_untrained_run(data, tmp_path):
    out = tmp_path / "zero"
    last = train.run(train.TrainConfig(steps=0, ngf=8, seed=1), data, out, device="cpu", quiet=True)
    assert last["step"] == 0 and json.loads((out / "state.json").read_text())["step"] == 0
    load_generator(out)


# --- the loop -------------------------------------------------------------------------------------

def test_l1_on_training_pairs_falls_by_half(data, tmp_path):
    """300 steps at batch 1 and the paper's lr: the L1 of G's frames on the training pairs halves."""
    split = batches.load_split(data, "train", 64)
    torch.manual_seed(0)
    from engine.model.networks import Generator
    before = train_l1(Generator(size=64, ngf=8, out_channels=4), split)   # what step 0 of seed 0 starts from
    out = tmp_path / "run"
    last = train.run(train.TrainConfig(steps=300, ngf=8, batch=1, seed=0), data, out, device="cpu", quiet=True,
                     checkpoint_every=150, val_every=150)
    G, config = load_generator(out)
    after = train_l1(G, split)
    assert after <= 0.5 * before, (before, after)

    assert all(k in config for k in REQUIRED) and config["size"] == 64 and config["ngf"] == 8
    info = json.loads((data / "dataset.json").read_text())
    assert config["stats"] == info["stats"] and config["stats_size"] == info["size"]
    # what placing its frames needs: a matte, the dancer's own frame and its plate
    assert config["channels"] == 4 and config["framing"] == info["framing"]
    assert config["stage"] == {k: info["stage"][k] for k in ("width", "height", "stats")}
    assert (out / runs.STAGE_PLATE).read_bytes() == (data / info["sources"][0]["plate"]).read_bytes()
    assert json.loads((out / "state.json").read_text())["step"] == 300
    rows = runs.read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [150, 300] and last["step"] == 300
    assert all(set(r) >= {"l1", "ssim", "psnr", "alpha_iou"} for r in rows)
    assert rows[-1]["l1"] < rows[0]["l1"] + 0.05
    # the matte follows her: neither all 0 nor all 1
    rgba = pix2pix.generate(G, split.skeletons, torch.device("cpu"))
    alpha = rgba[:, 3].float() / 255
    assert 0.05 < float((alpha > 0.5).float().mean()) < 0.8
    assert metrics.alpha_iou(alpha, split.masks[:, 0].float() / 255) > 0.5
    losses = runs.read_jsonl(out / "losses.jsonl")
    assert [r["step"] for r in losses] == list(range(10, 301, 10))
    assert all(np.isfinite([r["D"], r["G_GAN"], r["G_L1"], r["G_mask"]]).all() for r in losses)
    assert (out / "losses.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_00000150.png", "step_00000300.png"]
    assert [p.name for p in checkpoints.list_checkpoints(out)] == ["step_00000150", "step_00000300"]


def test_sigkill_then_rerun_resumes_exactly(data, tmp_path):
    """kill -9 after a checkpoint; the rerun starts from it and ends where an unbroken run ends."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    args = ["train", str(data), *TINY, "--steps", "80", "--checkpoint-every", "20", "--val-every", "80"]
    proc = subprocess.Popen([PYTHON, "-m", "engine.cli", *args, "--out", str(run)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while not (run / "state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = int(checkpoints.list_checkpoints(run)[-1].name[5:])
    assert 20 <= saved < 80 and json.loads((run / "state.json").read_text())["step"] <= saved
    config_before = json.loads((run / "config.json").read_text())
    leftover = run / "checkpoints" / ".step_00000040.abc.tmp"          # as a kill mid-write leaves it
    leftover.mkdir()

    done = pix2dance(*args, "--out", str(run))
    assert done.returncode == 0, done.stderr
    state = json.loads((run / "state.json").read_text())
    assert state["started_from"] == saved and state["step"] == 80
    assert json.loads((run / "config.json").read_text()) == config_before
    assert not leftover.exists()
    steps = [r["step"] for r in runs.read_jsonl(run / "losses.jsonl")]
    assert steps == list(range(10, 81, 10))                         # no gap, no replayed duplicate

    unbroken = pix2dance(*args, "--out", str(ref))
    assert unbroken.returncode == 0, unbroken.stderr
    a, _ = load_generator(run)
    b, _ = load_generator(ref)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-5), name

    # A run already at --steps validates again and exits 0.
    rows = len(runs.read_jsonl(run / "metrics.jsonl"))
    again = pix2dance(*args, "--out", str(run))
    assert again.returncode == 0, again.stderr
    assert len(runs.read_jsonl(run / "metrics.jsonl")) == rows + 1
    assert json.loads((run / "state.json").read_text())["step"] == 80


@pytest.fixture
def short_run(data, tmp_path) -> Path:
    out = tmp_path / "short"
    train.run(train.TrainConfig(steps=4, ngf=8, batch=1, seed=0), data, out, device="cpu", quiet=True,
              checkpoint_every=2, val_every=4)
    return out


@pytest.mark.parametrize("damage", ["truncate", "flip", "json", "missing"])
def test_corrupt_checkpoint_is_a_clear_error(data, short_run, damage, capsys):
    latest = checkpoints.list_checkpoints(short_run)[-1]
    weights = latest / checkpoints.MODELS_FILE
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip":
        raw = bytearray(weights.read_bytes())
        raw[-100] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "json":
        (latest / checkpoints.CKPT_JSON).write_text('{"format": 1, "step": ')
    else:
        (latest / checkpoints.OPTIM_FILE).unlink()
    code = cli.main(["train", str(data), "--out", str(short_run), "--steps", "6", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "corrupt or truncated" in err and latest.name in err, err


def test_resume_with_other_model_settings_is_refused(data, short_run, capsys):
    code = cli.main(["train", str(data), "--out", str(short_run), "--steps", "6", "--ngf", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "ngf 16 (run has 8)" in err


def test_bad_inputs_are_user_errors(data, tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    assert cli.main(["train", str(data), "--out", str(tmp_path / "r"), "--size", "48", "--quiet"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_dataset_from_before_the_stage_is_refused_in_one_line(data, tmp_path, capsys):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(data, old)
    info = json.loads((old / "dataset.json").read_text())
    info["format"] = 1
    (old / "dataset.json").write_text(json.dumps(info))
    for command in (["train", str(old), "--out", str(tmp_path / "r")],
                    ["eval", str(tmp_path / "r"), "--data", str(old), "--out", str(tmp_path / "e")]):
        assert cli.main([*command, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{old} was built by an older pix2dance (fixed room crop); rebuild it with pix2dance dataset" in err


def test_ddp_two_gloo_processes_train_and_save_one_checkpoint(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "engine.cli", "train", str(data), "--out", str(out), *TINY,
           "--steps", "6", "--batch", "2", "--checkpoint-every", "6", "--val-every", "6"]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in checkpoints.list_checkpoints(out)] == ["step_00000006"]
    assert json.loads((out / "state.json").read_text())["step"] == 6
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["world_size"] == 2 and config["train"]["batch"] == 2
    assert len(runs.read_jsonl(out / "metrics.jsonl")) == 1
    load_generator(out)
