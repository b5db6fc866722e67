"""The objective and the temporal model's training: multi-scale D, feature matching, limb dropout,
consecutive pairs, and the crop geometry that moves the previous frame into this one.

Units run on tensors; the training tests on the tiny dataset of tests/tiny_dataset.py (ngf 8, 64 px).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from engine.data import framing
from engine.data.skeleton import draw
from engine.model import batches, pix2pix, runs, temporal, train
from engine.model.networks import MultiscaleDiscriminator, feature_matching, gan_loss
from engine.wire.joints import INDEX, NUM_JOINTS
from tests.conftest import standing_pose
from tests.test_train import ENV, PYTHON, ROOT, TINY, one_thread  # noqa: F401  (fixture)
from tests.tiny_dataset import tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory, pose_model):
    return tiny_dataset(tmp_path_factory, pose_model)


def canvas(seed: int = 0, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A textured RGBA canvas: smooth colour ramps and blocks, so a misplaced pixel shows."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255, np.full_like(x, 255)], -1)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 30), rng.integers(0, h - 30)
        img[y0:y0 + 30, x0:x0 + 30, :3] = rng.integers(0, 255, 3)
    return img.astype(np.uint8)


# --- the discriminators and their losses ------------------------------------------------------------

def test_each_scale_sees_the_input_smaller_and_the_losses_are_pix2pixhds():
    torch.manual_seed(0)
    D = MultiscaleDiscriminator(in_channels=6, ndf=8, scales=3)
    x = torch.randn(2, 6, 128, 128)
    out = D(x)
    assert len(out) == 3 and all(len(scale) == 5 for scale in out)       # 4 feature maps, then the logits
    sides = [scale[-1].shape[-1] for scale in out]
    assert sides[0] > sides[1] > sides[2]                                # each scale judges a coarser picture
    logits = [scale[-1] for scale in out]
    lsgan = np.mean([((l - 1) ** 2).mean().item() for l in logits])
    assert gan_loss(out, True, "lsgan").item() == pytest.approx(lsgan, rel=1e-5)
    assert gan_loss(out, False, "vanilla").item() > 0
    assert feature_matching(out, out).item() == 0
    other = D(x + 0.5)
    assert feature_matching(other, out).item() > 0
    # the real side is a target: no gradient flows into it
    x_real = x.clone().requires_grad_(True)
    feature_matching(other, D(x_real)).backward()
    assert x_real.grad is None or float(x_real.grad.abs().sum()) == 0


# --- limb dropout -------------------------------------------------------------------------------------

def test_limb_dropout_takes_a_whole_limb_and_nothing_else():
    pose = standing_pose(256)
    names = {tuple(sorted(INDEX[n] for n in limb)) for limb in [("left_elbow", "left_wrist"),
                                                                 ("right_knee", "right_ankle", "right_heel", "right_toe")]}
    assert names <= set(batches.LIMBS)                       # a forearm; a shin with its foot
    assert all(INDEX["neck"] not in limb and INDEX["mid_hip"] not in limb for limb in batches.LIMBS)
    many = np.repeat(pose[None], len(batches.LIMBS) + 1, axis=0)
    choice = np.arange(-1, len(batches.LIMBS))
    dropped = batches.drop_limbs(many, choice)
    assert np.array_equal(dropped[0], pose)                              # -1: nothing dropped
    for before, after, limb in zip(many[1:], dropped[1:], choice[1:]):
        gone = tuple(np.flatnonzero((before[:, 2] > 0) & (after[:, 2] == 0)))
        assert gone == batches.LIMBS[limb]                   # exactly that limb, all of it
        assert np.array_equal(before[:, :2], after[:, :2])
    assert many[1:, :, 2].min() > 0                          # a copy: the poses given are untouched


def test_a_dropped_limb_is_not_drawn(data, tmp_path):
    split = batches.load_split(data, "train", 64)
    cfg = train.TrainConfig(steps=10, size=64, ngf=8, ndf=8, seed=0, limb_dropout=1.0, jitter=1.0, temporal=False)
    model = pix2pix.Pix2Pix(cfg, split, torch.device("cpu"))
    idx = model.order[batches.batch_indices(0, 0, len(model.order), 1)]
    drawn = model.batch(0)["skeleton"]
    stored = split.skeletons[idx].float() / 127.5 - 1
    assert float((drawn > -1).sum()) < float((stored > -1).sum())        # fewer skeleton pixels
    assert float(((drawn > -1) & ~(stored > -1)).sum()) == 0             # and nothing new


# --- the temporal model's geometry ------------------------------------------------------------------

def test_the_previous_frame_lands_where_this_crop_sees_it():
    """A picture cut with crop A, moved into crop B, is the picture cut with crop B (where A saw it)."""
    image = canvas()
    a, b = np.float32([150, 120, 100]), np.float32([160, 110, 90])
    size = 64
    cut_a = framing.crop_image(image, a, size, interpolation=1)
    cut_b = framing.crop_image(image, b, size, interpolation=1)
    skeletons = np.zeros((1, size, size, 3), np.uint8)
    moved = temporal.condition_uint8(skeletons, cut_a[None], a[None], b[None])[0, ..., 3:]
    inside = moved[..., 3] == 255                            # B's pixels that A saw (its alpha is opaque)
    assert inside.mean() > 0.7
    error = np.abs(moved[..., :3].astype(int) - cut_b[..., :3].astype(int))[inside]
    assert np.median(error) <= 3
    # where A did not reach, the previous frame is BLANK (black, transparent)
    assert (moved[~(moved[..., 3] > 0)] == 0).all() and (~inside).any()
    # a cold start is BLANK everywhere; the skeleton passes through untouched
    cold = temporal.condition_uint8(skeletons + 7, None, None, None)
    assert cold.shape == (1, size, size, 7) and (cold[..., 3:] == 0).all() and (cold[..., :3] == 7).all()


def test_the_jittered_crop_is_what_the_jitter_keeps():
    image = canvas(1)
    crop = np.float32([160, 120, 120])
    size = 64
    cut = torch.from_numpy(framing.crop_image(image, crop, size, interpolation=1)).permute(2, 0, 1)[None].float()
    zoom, shift = torch.tensor([1.3]), torch.tensor([[0.6, -0.8]])
    jittered = batches.jitter(cut, zoom, shift)[0].permute(1, 2, 0).numpy()
    kept = batches.jittered_crops(torch.from_numpy(crop[None]), zoom, shift)[0].numpy()
    direct = framing.crop_image(image, kept, size, interpolation=1).astype(np.float32)
    assert np.median(np.abs(jittered[4:-4, 4:-4] - direct[4:-4, 4:-4])) <= 3


def test_consecutive_pairs_are_one_tick_apart_in_one_clip(data):
    split = batches.load_split(data, "train", 64)
    from engine.data.pairs import load_rows
    rows = load_rows(data, "train")
    fps = json.loads((data / "dataset.json").read_text())["fps"]
    pairs = np.flatnonzero(split.previous >= 0)
    assert len(pairs) > len(split) // 2
    for i in pairs:
        j = split.previous[i]
        assert j == i - 1 and rows["source"][j] == rows["source"][i]
        assert rows["time"][i] - rows["time"][j] == pytest.approx(1 / fps, rel=0.5)
    # a gap (frames without a dancer, or another clip) starts over
    assert batches.predecessors(np.array([0, 0, 0, 1]), np.array([0.0, 0.1, 0.4, 0.5]), 10).tolist() == [-1, 0, -1, -1]


# --- training ---------------------------------------------------------------------------------------

def test_a_temporal_run_trains_on_pairs_and_serves_seven_channels(data, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([PYTHON, "-m", "engine.cli", "train", str(data), "--out", str(out), "--steps", "30", *TINY,
                        "--val-every", "30"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["temporal"] is True and config["train"]["scales"] == 2 and config["train"]["gan"] == "lsgan"
    G, _ = runs.load_generator(out)
    assert G.in_channels == temporal.INPUT_CHANNELS
    losses = runs.read_jsonl(out / "losses.jsonl")
    assert losses and all(np.isfinite([row[k] for k in pix2pix.LOSSES]).all() for row in losses)
    assert all(row["G_feat"] > 0 for row in losses)
    # the same command with --no-temporal: a single-frame generator, and the old objective on request
    flat = tmp_path / "flat"
    r = subprocess.run([PYTHON, "-m", "engine.cli", "train", str(data), "--out", str(flat), "--steps", "10", *TINY,
                        "--no-temporal", "--scales", "1", "--feat-weight", "0", "--gan", "vanilla"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    G, config = runs.load_generator(flat)
    assert G.in_channels == 3 and config["temporal"] is False and config["train"]["scales"] == 1
    # resuming with the other model is refused in one line
    r = subprocess.run([PYTHON, "-m", "engine.cli", "train", str(data), "--out", str(flat), "--steps", "20", *TINY,
                        "--temporal"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "temporal" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_checkpoint_from_before_the_objective_resumes_as_pix2pix(tmp_path):
    meta = {"config": {"train": {"steps": 100, "size": 64, "ngf": 8, "ndf": 8, "gan": "vanilla", "seed": 1}}}
    cfg = train._config_of(meta, tmp_path)
    assert (cfg.scales, cfg.feat_weight, cfg.limb_dropout, cfg.temporal) == (1, 0.0, 0.0, False)


def test_validation_of_a_temporal_generator_follows_the_pairs(data):
    """Frames with a predecessor are conditioned on its output; the others start cold."""
    split = batches.load_split(data, "val", 64)
    torch.manual_seed(0)
    from engine.model.networks import Generator
    G = Generator(size=64, ngf=8, in_channels=temporal.INPUT_CHANNELS, out_channels=4)
    chained = pix2pix.generate(G, split.skeletons, torch.device("cpu"), previous=split.previous, crops=split.crops)
    cold = pix2pix.generate(G, split.skeletons, torch.device("cpu"))
    follows = split.previous >= 0
    assert follows.any()
    assert torch.equal(chained[~torch.from_numpy(follows)], cold[~torch.from_numpy(follows)])
    assert not torch.equal(chained[torch.from_numpy(follows)], cold[torch.from_numpy(follows)])


def test_joint_count_is_the_canonical_one():
    assert standing_pose(256).shape == (NUM_JOINTS, 3) and draw(standing_pose(64), 64).shape == (64, 64, 3)


def test_a_new_temporal_generator_starts_as_a_single_frame_one(data):
    """Its previous-frame input starts with no weight (then training decides what it is worth)."""
    split = batches.load_split(data, "train", 64)
    cfg = train.TrainConfig(steps=10, size=64, ngf=8, ndf=8, seed=0, temporal=True)
    G = pix2pix.Pix2Pix(cfg, split, torch.device("cpu")).G.eval()
    skeleton = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        cold = G(temporal.condition(skeleton, None, None, None))
        warm = G(torch.cat([skeleton, torch.rand(1, 4, 64, 64) * 2 - 1], 1))
    assert torch.equal(cold, warm)
    first = G.model.model[0]
    assert float(first.weight[:, :3].detach().abs().sum()) > 0           # the skeleton's weights are the usual init
