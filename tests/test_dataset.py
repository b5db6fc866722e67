"""`pix2dance dataset` on real video with the real MediaPipe lite model: counts, the time split,
crop geometry, drawn skeletons on their landmarks, the upside-down breakdance clip, known
keypoints, the reader, and every bad input rejected with exit 2, one line, nothing written."""

from __future__ import annotations

import json
import math
import os
import subprocess

import cv2
import numpy as np
import pytest

from engine.data import dataset, pairs, video
from engine.data.dataset import Crop, Sample
from engine.wire.joints import CORE, INDEX, JOINT_COLOURS, NUM_JOINTS, VISIBLE
from tests.conftest import PYTHON, ROOT, sample, standing_pose

ROOM = "video/dancer_room.mp4"  # 576 x 576, 30 fps, 4 s
SIZE, FPS = 64, 10
CORE_IDX = np.array([INDEX[n] for n in CORE])


@pytest.fixture(scope="module")
def room(tmp_path_factory, pose_model):
    out = tmp_path_factory.mktemp("ds") / "room"
    dataset.build([sample(ROOM)], out, fps=FPS, size=SIZE, pose_model=pose_model, quiet=True)
    return out


def _meta(root):
    return json.loads((root / "dataset.json").read_text())


def _npz(root):
    with np.load(root / "keypoints.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --- one real build -----------------------------------------------------------------------------

def test_counts_are_duration_times_fps_minus_drops(room):
    meta, z = _meta(room), _npz(room)
    src = meta["sources"][0]
    info = video.probe(sample(ROOM))
    assert src["sampled"] == round(info.duration * FPS) == 40
    assert meta["counts"]["train"] + meta["counts"]["val"] == src["sampled"] - sum(src["drops"].values()) - src["gap"]
    assert meta["counts"]["val"] >= 1 and src["gap"] == meta["split"]["gap_frames"] == 5
    for split in ("train", "val"):
        n = meta["counts"][split]
        assert len(os.listdir(room / split / "skeleton")) == len(os.listdir(room / split / "frame")) == n
        assert (z["split"] == (split == "val")).sum() == n
        assert sorted(z["index"][z["split"] == (split == "val")]) == list(range(n))
    assert set(meta["drops"]) == {"no_person", "low_visibility", "two_people", "outside_crop"}
    assert meta["fps"] == FPS and meta["size"] == SIZE and len(meta["joints"]) == NUM_JOINTS
    assert meta["format"] == 1 and meta["pose_model"] == "pose_landmarker_lite.task" and meta["seconds"] > 0
    assert z["keypoints"].shape == (40 - sum(src["drops"].values()) - src["gap"], NUM_JOINTS, 3)
    assert int(z["size"]) == SIZE and float(z["fps"]) == FPS
    assert not [p for p in room.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_val_comes_strictly_after_train_with_a_gap(room):
    z = _npz(room)
    train, val = z["time"][z["split"] == 0], z["time"][z["split"] == 1]
    assert val.min() > train.max()
    # no neighbouring samples on both sides: more than one sampling step between them
    assert val.min() - train.max() > 1.5 / FPS
    # file numbers follow time within each split
    for part in (0, 1):
        t = z["time"][z["split"] == part][np.argsort(z["index"][z["split"] == part])]
        assert np.all(np.diff(t) > 0)


def test_keypoints_lie_inside_the_crop(room):
    kp = _npz(room)["keypoints"]
    seen = kp[..., 2] >= VISIBLE
    assert seen[:, CORE_IDX].all()  # every kept frame shows its limbs
    xy = kp[..., :2][seen]
    assert (xy >= 0).all() and (xy <= SIZE).all()
    # the crop is square, holds the dancer with a margin, and fits the 576 x 576 frame
    crop = _meta(room)["sources"][0]["crop"]
    assert 0 <= crop["x"] and 0 <= crop["y"] and crop["x"] + crop["side"] <= 576 and crop["y"] + crop["side"] <= 576
    assert xy.min() > 1 and xy.max() < SIZE - 1


def test_drawn_wrists_and_ankles_lie_on_their_landmarks(room):
    from engine.data.skeleton import draw
    skeletons, frames, kp = pairs.load_pairs(room, "train")
    # the written skeleton is exactly the one drawing code's picture of the saved keypoints
    for image, points in zip(skeletons[:5], kp[:5]):
        np.testing.assert_array_equal(image, draw(points, SIZE))
    # and each wrist and ankle is drawn where its landmark is: its colour within 3 px of it (at
    # 64 px an ankle's dot may be covered by its heel's or toe's, drawn after it)
    near = {"left_wrist": ["left_wrist"], "right_wrist": ["right_wrist"],
            "left_ankle": ["left_ankle", "left_heel", "left_toe"],
            "right_ankle": ["right_ankle", "right_heel", "right_toe"]}
    checked = 0
    for image, points in zip(skeletons, kp):
        for name, owners in near.items():
            x, y, v = points[INDEX[name]]
            if v < VISIBLE:
                continue
            xi, yi = int(round(x)), int(round(y))
            window = image[max(0, yi - 3):yi + 4, max(0, xi - 3):xi + 4].reshape(-1, 3).astype(int)
            colours = np.array([JOINT_COLOURS[INDEX[n]] for n in owners])
            distance = np.abs(window[:, None, :] - colours[None]).sum(axis=2).min()
            assert distance < 60, (name, x, y)
            checked += 1
    assert checked >= 4 * len(kp) * 0.9


def test_frames_are_the_cropped_video(room):
    """The first written frame is the crop of the video frame at its time, resized."""
    z, meta = _npz(room), _meta(room)
    first = np.argmin(np.where(z["split"] == 0, z["time"], np.inf))
    t = z["time"][first]
    rgb = next(f for tt, f in video.sample(sample(ROOM), FPS) if abs(tt - t) < 1e-6)
    c = meta["sources"][0]["crop"]
    expected = cv2.resize(rgb[c["y"]:c["y"] + c["side"], c["x"]:c["x"] + c["side"]], (SIZE, SIZE),
                          interpolation=cv2.INTER_AREA)
    _, frames, _ = pairs.load_pairs(room, "train")
    assert np.abs(frames[z["index"][first]].astype(int) - expected).mean() < 2


def test_metadata_stats_and_contact_sheet(room):
    stats = _meta(room)["stats"]
    assert stats["frames"] > 20
    assert 0.3 * SIZE < stats["height"] < SIZE  # neck to ankle, in crop pixels
    assert stats["ankle_far"] <= stats["ankle_y"] <= stats["ankle_near"] <= SIZE
    sheet = cv2.imread(str(room / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > SIZE and sheet.shape[1] > 4 * SIZE


class PairDataset:
    """A split as a map-style torch dataset: items (skeleton, frame), float32 (3, S, S) in [-1, 1].

    What a DataLoader needs (__len__, __getitem__), reading the PNGs lazily: the dataset folder
    serves the usual PyTorch way too, though training itself holds the split in memory.
    """

    def __init__(self, root, split: str = "train"):
        self.root, self.split = root, split
        self.keypoints = pairs.load_keypoints(root, split)

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, i: int):
        import torch

        from engine.model.tensors import to_model
        if not 0 <= i < len(self):
            raise IndexError(i)
        return tuple(to_model(torch.from_numpy(pairs.read_rgb(self.root / self.split / kind / f"{i:06d}.png")).permute(2, 0, 1))
                     for kind in ("skeleton", "frame"))


def test_load_pairs_and_torch_dataset(room):
    import torch
    from torch.utils.data import DataLoader
    skeletons, frames, kp = pairs.load_pairs(room, "val")
    n = _meta(room)["counts"]["val"]
    assert skeletons.shape == frames.shape == (n, SIZE, SIZE, 3) and skeletons.dtype == np.uint8
    assert kp.shape == (n, NUM_JOINTS, 3) and kp.dtype == np.float32
    data = PairDataset(room, "train")
    assert len(data) == _meta(room)["counts"]["train"]
    skeleton, frame = data[0]
    assert skeleton.shape == frame.shape == (3, SIZE, SIZE) and skeleton.dtype == torch.float32
    assert -1 <= float(frame.min()) < float(frame.max()) <= 1
    assert float(skeleton.min()) == -1.0  # black background
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch[0].shape == (4, 3, SIZE, SIZE)
    with pytest.raises(IndexError):
        data[len(data)]


# --- the hard clip ------------------------------------------------------------------------------

def test_breakdance_upside_down_completes_and_reports_drops(tmp_path, pose_model):
    out = tmp_path / "break"
    r = subprocess.run([PYTHON, "-m", "engine.cli", "dataset", str(sample("video/breakdance_640x360.mp4")),
                        "--out", str(out), "--fps", "4", "--size", str(SIZE), "--pose-model", str(pose_model)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = _meta(out)
    src = meta["sources"][0]
    assert src["sampled"] == math.ceil(video.probe(sample("video/breakdance_640x360.mp4")).duration * 4)
    assert sum(meta["drops"].values()) > 0  # upside down and spinning: some frames are unusable
    assert meta["counts"]["train"] + meta["counts"]["val"] == src["sampled"] - sum(src["drops"].values()) - src["gap"]
    # the summary: one line naming every reason, and no C++ chatter from MediaPipe
    lines = [line.strip() for line in r.stderr.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line and not line.startswith(("poses:", "pairs:"))]  # tqdm bars
    assert len(lines) == 1, r.stderr
    summary = lines[0]
    for reason, n in meta["drops"].items():
        assert f"{reason} {n}" in summary
    assert f"kept {meta['counts']['train'] + meta['counts']['val']}" in summary
    # the crop is taller than the 360 px frame: padded black, not stretched
    assert src["crop"]["side"] > 360 or src["crop"]["y"] >= 0


# --- known keypoints (the demo's synthetic dancer) ----------------------------------------------

def test_known_keypoints_skip_mediapipe_and_count_missing_people(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2DANCE_POSE_MODEL", str(tmp_path / "no-model-needed.task"))
    info = video.probe(sample(ROOM))
    kp = np.repeat(standing_pose(256)[None] * (576 / 256), info.frames, axis=0)
    kp[:, :, 0] += np.linspace(0, 100, info.frames)[:, None]  # walks right
    kp[90:, :, 2] = 0.0  # nobody in the last second
    kp[30:33, INDEX["left_hip"], 2] = 0.2  # a hidden hip
    meta = dataset.build([sample(ROOM)], tmp_path / "given", fps=FPS, size=SIZE, keypoints=[kp], quiet=True)
    src = meta["sources"][0]
    assert src["keypoints_from"] == "given" and meta["pose_model"] is None
    assert src["drops"]["no_person"] == 10 and src["drops"]["low_visibility"] == 1
    written = _npz(tmp_path / "given")
    first = np.argmin(written["time"])
    # keypoints in crop pixels are the given ones mapped through the crop
    expected = Crop(**src["crop"]).to_crop_pixels(kp[0], SIZE)
    np.testing.assert_allclose(written["keypoints"][first], expected, atol=1e-4)


# --- small units --------------------------------------------------------------------------------

def _box_pose(x0, y0, x1, y1):
    kp = np.zeros((NUM_JOINTS, 3), np.float32)
    kp[:, 2] = 1
    kp[:, 0] = np.linspace(x0, x1, NUM_JOINTS)
    kp[:, 1] = np.linspace(y0, y1, NUM_JOINTS)
    return kp


def test_crop_ignores_a_few_ghosts_and_fits_the_frame():
    rng = np.random.default_rng(0)
    poses = [_box_pose(100 + d, 50 + d, 140 + d, 150 + d) for d in rng.uniform(-5, 5, 100)]
    ghosts = [_box_pose(0, 0, 320, 240)] * 2  # as in dancer_long: a stray detection now and then
    clean = dataset.clip_crop(np.stack(poses), 320, 240)
    haunted = dataset.clip_crop(np.stack(poses + ghosts), 320, 240)
    assert max(abs(haunted.x - clean.x), abs(haunted.y - clean.y), abs(haunted.side - clean.side)) <= 3
    assert 100 * 1.2 < clean.side < 115 * 1.4
    assert 0 <= clean.x and 0 <= clean.y and clean.x + clean.side <= 320 and clean.y + clean.side <= 240
    # a dancer at the frame's edge: the square moves inside rather than padding
    edge = dataset.clip_crop(np.stack([_box_pose(0, 60, 40, 160)]), 320, 240)
    assert edge.x == 0
    # wider than the frame is tall: it covers the whole height and reaches out evenly
    wide = dataset.clip_crop(np.stack([_box_pose(10, 20, 310, 220)]), 320, 240)
    assert wide.side > 240 and wide.y < 0 and wide.y + wide.side > 240


def test_crop_image_pads_black_and_never_stretches():
    image = np.full((100, 200, 3), 200, np.uint8)
    image[50, 150] = (0, 0, 255)
    crop = Crop(100, -50, 200)  # reaches 50 px above, 50 below and 100 right of the frame
    out = dataset.crop_image(image, crop, 100)
    assert out.shape == (100, 100, 3)
    assert out[:24].max() == 0 and out[77:].max() == 0 and out[:, 52:].max() == 0  # black padding
    assert (out[27:73, :48].min(axis=2) >= 150).mean() > 0.99  # the picture, at half scale: not stretched
    p = crop.to_crop_pixels(np.array([[150.5, 50.5, 1]], np.float32), 100)[0]
    y, x = np.unravel_index(np.argmax(out[..., 2].astype(int) - out[..., 1]), out.shape[:2])
    assert abs(x - p[0]) <= 1 and abs(y - p[1]) <= 1


def test_classify_reasons():
    person = standing_pose(256)
    ghost = person.copy()
    ghost[:, 2] = 0.3
    low = person.copy()
    low[INDEX["right_hip"], 2] = 0.1
    turning = person.copy()
    turning[[INDEX["left_elbow"], INDEX["left_wrist"]], 2] = 0.1    # an arm behind the body
    hidden = turning.copy()
    hidden[INDEX["right_ankle"], 2] = 0.1
    assert dataset.classify([]) == (None, "no_person")
    assert dataset.classify([person, person + 50])[1] == "two_people"
    assert dataset.classify([person, ghost])[1] is None  # a faint ghost does not count
    assert dataset.classify([low])[1] == "low_visibility"
    assert dataset.classify([turning])[1] is None
    assert dataset.classify([hidden])[1] == "low_visibility"


def test_split_by_time_with_a_gap():
    samples = [Sample(i, i / 10, None, None) for i in range(50)][::-1]
    train, val, gap = dataset.split_clip(samples, 0.1, 3)
    assert len(val) == 5 and gap == 3 and len(train) == 42
    assert max(s.t for s in train) < min(s.t for s in val)
    assert dataset.split_clip(samples[:4], 0.1, 3)[1:] == ([], 0)  # too short: all train


# --- bad input through the real command ---------------------------------------------------------

def _cli(*args):
    r = subprocess.run([PYTHON, "-m", "engine.cli", "dataset", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    return r.returncode, r.stderr


def _nobody_video(path):
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), (9, 9), 3) for _ in range(20)]
    video.write_video(path, frames, fps=10)
    return path


@pytest.mark.parametrize("case", ["missing", "not_a_video", "no_person", "unwritable", "exists"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, pose_model):
    out = tmp_path / "out"
    source = sample(ROOM)
    if case == "missing":
        source = tmp_path / "missing.mp4"
    elif case == "not_a_video":
        source = tmp_path / "notes.mp4"
        source.write_text("a text file renamed .mp4\n")
    elif case == "no_person":
        source = _nobody_video(tmp_path / "empty_room.mp4")
    elif case == "unwritable":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "out"  # below a regular file: cannot be created by anyone
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _cli(source, "--out", out, "--fps", 10, "--size", SIZE, "--pose-model", pose_model)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pix2dance dataset: error:"), err
    assert "Traceback" not in err
    expected = {"missing": "not found", "not_a_video": "not a video", "no_person": "no person found in",
                "unwritable": "cannot write", "exists": "already exists"}[case]
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary folder
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_force_replaces_an_existing_dataset(tmp_path, pose_model):
    out = tmp_path / "ds"
    clip = tmp_path / "short.mp4"
    with video.VideoWriter(clip, fps=10) as w:  # 1.5 s of the real clip, so the test is quick
        for _, rgb in video.sample(sample(ROOM), fps=10):
            w.write(cv2.resize(rgb, (192, 192)))
    out.mkdir()
    (out / "dataset.json").write_text("{}")
    code, err = _cli(clip, "--out", out, "--fps", 5, "--size", SIZE, "--pose-model", pose_model, "--force", "--quiet")
    assert code == 0, err
    assert _meta(out)["counts"]["train"] > 0
    code, err = _cli(tmp_path / "nothing.mp4", "--out", tmp_path / "other", "--fps", 0)
    assert code == 2 and "--fps must be a positive number" in err  # arguments are checked first


def test_two_videos_decoded_again_in_pass_two_make_one_dataset(tmp_path, pose_model, monkeypatch):
    """Several clips of one dancer: one crop and one time split per clip; with no memory budget
    pass 2 decodes the videos again and must land on the very same frames."""
    short = tmp_path / "short.mp4"
    video.write_video(short, (cv2.resize(rgb, (240, 240)) for _, rgb in video.sample(sample(ROOM), fps=10)), fps=10)
    monkeypatch.setattr(dataset, "MEMORY_BUDGET", 0)
    out = tmp_path / "two"
    meta = dataset.build([sample(ROOM), short], out, fps=5, size=SIZE, pose_model=pose_model, quiet=True)
    a, b = meta["sources"]
    assert (a["width"], b["width"]) == (576, 240) and a["crop"] != b["crop"]
    assert a["sampled"] == 20 and b["sampled"] == 20  # 4 s at 5 fps, each
    z = _npz(out)
    for source in (0, 1):
        mine = z["source"] == source
        assert z["time"][mine & (z["split"] == 0)].max() < z["time"][mine & (z["split"] == 1)].min()
    assert meta["counts"]["train"] + meta["counts"]["val"] == a["kept"] + b["kept"] == len(z["time"])
    # the re-decoded frame is the one whose keypoints were found: compare with a fresh crop
    first = int(np.flatnonzero((z["source"] == 0) & (z["split"] == 0))[0])
    rgb = next(f for t, f in video.sample(sample(ROOM), 5) if abs(t - z["time"][first]) < 1e-6)
    crop = Crop(**a["crop"])
    _, frames, _ = pairs.load_pairs(out, "train")
    expected = dataset.crop_image(rgb, crop, SIZE)
    assert np.abs(frames[z["index"][first]].astype(int) - expected).mean() < 1


def test_prefetch_hands_on_items_then_the_error_and_stops_early():
    import threading

    from engine.data.prefetch import Prefetch

    def items():
        yield from range(3)
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in Prefetch(items(), depth=1):
            seen.append(item)
    assert seen == [0, 1, 2]
    before = threading.active_count()
    ahead = Prefetch(iter(range(10**9)), depth=2, name="endless")
    for item in ahead:
        if item == 5:
            break
    assert not ahead._thread.is_alive() and threading.active_count() <= before
