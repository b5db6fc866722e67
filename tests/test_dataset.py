"""`pix2dance dataset` on real video with the real MediaPipe lite model: counts, the time split,
person-centred crops, masks and plates, drawn skeletons on their landmarks, the upside-down
breakdance clip, known keypoints and masks, the reader, and every bad input rejected with exit 2,
one line, nothing written."""

from __future__ import annotations

import json
import math
import os
import subprocess

import cv2
import numpy as np
import pytest

from engine.data import dataset, framing, pairs, selection, video
from engine.data.dataset import Sample
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
        assert len(os.listdir(room / split / "mask")) == n
        assert (z["split"] == (split == "val")).sum() == n
        assert sorted(z["index"][z["split"] == (split == "val")]) == list(range(n))
    assert set(meta["drops"]) == {"no_person", "low_visibility", "two_people", "mask_mismatch", "outside_crop"}
    assert meta["fps"] == FPS and meta["size"] == SIZE and len(meta["joints"]) == NUM_JOINTS
    assert meta["format"] == 2 and meta["pose_model"] == "pose_landmarker_lite.task" and meta["seconds"] > 0
    assert z["keypoints"].shape == (40 - sum(src["drops"].values()) - src["gap"], NUM_JOINTS, 3)
    n = len(z["keypoints"])
    assert z["crops"].shape == (n, 3) and z["source_keypoints"].shape == (n, NUM_JOINTS, 3)
    # frame_index: the frame's 0-based number in the decoded video (30 fps sampled at 10: every third)
    assert z["frame_index"].dtype == np.int64 and np.array_equal(z["frame_index"], np.round(z["time"] * 30).astype(int))
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


def test_keypoints_lie_inside_their_person_centred_crop(room):
    z = _npz(room)
    kp = z["keypoints"]
    seen = kp[..., 2] >= VISIBLE
    assert seen[:, CORE_IDX].all()  # every kept frame shows its limbs
    xy = kp[..., :2][seen]
    assert (xy >= 0).all() and (xy <= SIZE).all()
    # the stored crops map the source keypoints to the written ones, and are sized by the body
    np.testing.assert_allclose(framing.to_crop(z["source_keypoints"], z["crops"], SIZE)[..., :2][seen], xy, atol=1e-3)
    meta = _meta(room)
    framed = framing.Framing.of(meta)
    assert meta["framing"] == {"side": framing.DEFAULT.side, "centre_up": framing.DEFAULT.centre_up}
    assert framed == framing.DEFAULT                                  # a new dataset: today's framing, recorded
    heights = np.array([selection.body_measure(k) for k in z["source_keypoints"]])
    assert np.median(np.abs(z["crops"][:, 2] / (framed.side * heights) - 1)) < 0.1
    # the square holds her whole: no frame dropped for a limb outside it (side 1.8 dropped 9 of these
    # 40) and no joint seen in the video hidden for lying outside it (1.8 cut her toes in every frame)
    assert meta["drops"]["outside_crop"] == 0
    assert not ((z["source_keypoints"][..., 2] >= VISIBLE) & (kp[..., 2] < VISIBLE)).any()
    # and she fills it: her skeleton spans over 1.08 body heights (60% of a 1.8 square), so a share of
    # the square that shrinks as the recorded side widens (51% of DEFAULT's 2.1)
    spans = [np.ptp(k[k[:, 2] >= VISIBLE, 1]) for k in kp]
    assert np.median(spans) > 1.08 / framed.side * SIZE


def test_masks_and_plate(room):
    """Each mask covers its dancer in the crop; the still camera gets a plate without her."""
    meta, z = _meta(room), _npz(room)
    masks = pairs.load_masks(room, "train")
    kp = pairs.load_keypoints(room, "train")
    assert masks.shape == (meta["counts"]["train"], SIZE, SIZE) and masks.dtype == np.uint8
    for mask, points in zip(masks, kp):
        person = mask > 127
        assert 0.05 < person.mean() < 0.6
        hip = points[INDEX["mid_hip"], :2].round().astype(int)
        assert person[hip[1], hip[0]]                      # her hips are inside her mask
    src = meta["sources"][0]
    assert src["plate"] == "plates/000.png" and src["plate_note"] == ""
    plate = pairs.read_rgb(room / src["plate"])
    assert plate.shape == (576, 576, 3)
    plates, has = pairs.load_plates(room, "train")
    assert has.all() and plates.shape == (meta["counts"]["train"], SIZE, SIZE, 3)
    _, frames, _ = pairs.load_pairs(room, "train")
    # around the dancer the plate crop is her room: close to the frame where she is not
    outside = masks < 10
    assert np.abs(plates.astype(int) - frames)[outside].mean() < 12
    stage = meta["stage"]
    assert stage["source"] == 0 and (stage["width"], stage["height"]) == (576, 576)
    side = framing.Framing.of(meta).side                  # crops are this many of her body heights
    assert stage["stats"]["height"] == pytest.approx(np.median(z["crops"][:, 2]) / side, rel=0.15)


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
    z = _npz(room)
    first = np.argmin(np.where(z["split"] == 0, z["time"], np.inf))
    t = z["time"][first]
    rgb = next(f for tt, f in video.sample(sample(ROOM), FPS) if abs(tt - t) < 1e-6)
    cx, cy, side = z["crops"][first]
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    expected = cv2.resize(rgb[y0:y0 + int(round(side)), x0:x0 + int(round(side))], (SIZE, SIZE),
                          interpolation=cv2.INTER_AREA)
    _, frames, _ = pairs.load_pairs(room, "train")
    assert np.abs(frames[z["index"][first]].astype(int) - expected).mean() < 4


def test_metadata_stats_and_contact_sheet(room):
    stats = _meta(room)["stats"]
    assert stats["frames"] > 20
    assert 0.3 * SIZE < stats["height"] < SIZE  # neck to ankle, in crop pixels
    assert stats["ankle_far"] <= stats["ankle_y"] <= stats["ankle_near"] <= SIZE
    sheet = cv2.imread(str(room / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > SIZE and sheet.shape[1] > 4 * 3 * SIZE   # frame | skeleton | mask


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
    assert pairs.load_masks(room, "val").shape == (n, SIZE, SIZE)
    rows = pairs.load_rows(room, "val")
    assert set(rows) >= {"keypoints", "crops", "source_keypoints", "frame_index", "source", "time"}
    assert np.array_equal(rows["keypoints"], kp)
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
    # upside down, the crop still follows her body: the mid-hip is near the crop's centre
    z = _npz(out)
    hip = z["keypoints"][:, INDEX["mid_hip"], :2]
    assert np.median(np.abs(hip - SIZE / 2)) < 0.25 * SIZE
    assert "plate" in src and (src["plate"] is not None or src["plate_note"])


# --- known keypoints (the demo's synthetic dancer) ----------------------------------------------

def _rect_masks(kp: np.ndarray, shape: tuple[int, int], shift: float = 0.0) -> np.ndarray:
    """(N, H, W) uint8 masks: each pose's joint box, moved right by `shift` pixels (a mask that disagrees)."""
    masks = np.zeros((len(kp), *shape), np.uint8)
    for m, k in zip(masks, kp):
        x0, y0, x1, y1 = selection.person_box(k) if (k[:, 2] >= VISIBLE).any() else (0, 0, -1, -1)
        m[int(y0):int(y1) + 1, int(x0 + shift):int(x1 + shift) + 1] = 255
    return masks


def test_known_keypoints_skip_mediapipe_and_count_missing_people(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2DANCE_POSE_MODEL", str(tmp_path / "no-model-needed.task"))
    info = video.probe(sample(ROOM))
    kp = np.repeat(standing_pose(256)[None] * (576 / 256), info.frames, axis=0)
    kp[:, :, 0] += np.linspace(0, 100, info.frames)[:, None]  # walks right
    kp[90:, :, 2] = 0.0  # nobody in the last second
    kp[30:33, INDEX["left_hip"], 2] = 0.2  # a hidden hip
    masks = _rect_masks(kp, (576, 576))
    masks[60:63] = _rect_masks(kp[60:63], (576, 576), shift=300)   # a shadow, not her: mask_mismatch
    meta = dataset.build([sample(ROOM)], tmp_path / "given", fps=FPS, size=SIZE, keypoints=[kp], masks=[masks],
                         quiet=True)
    src = meta["sources"][0]
    assert src["keypoints_from"] == "given" and meta["pose_model"] is None
    assert src["drops"]["no_person"] == 10 and src["drops"]["low_visibility"] == 1
    assert src["drops"]["mask_mismatch"] == 1
    written = _npz(tmp_path / "given")
    first = np.argmin(written["time"])
    # keypoints in crop pixels are the given ones mapped through the frame's crop
    expected = framing.to_crop(kp[0][None], written["crops"][first][None], SIZE)[0]
    np.testing.assert_allclose(written["keypoints"][first], expected, atol=1e-4)
    np.testing.assert_allclose(written["source_keypoints"][first], kp[0], atol=1e-4)
    # the given mask, cut with the same crop
    mask = pairs.load_masks(tmp_path / "given", "train")[written["index"][first]]
    np.testing.assert_array_equal(mask, framing.crop_image(masks[0], written["crops"][first], SIZE))
    with pytest.raises(ValueError, match="need their masks"):
        dataset.build([sample(ROOM)], tmp_path / "nomask", fps=FPS, size=SIZE, keypoints=[kp], quiet=True)


def test_a_moving_camera_gets_no_plate_and_says_so(tmp_path, pose_model, caplog):
    """A pan across the room: the background moves, so the clip has no plate and one line says why.

    The room is mostly plain wall and floor, which look alike wherever the camera points: stripes
    painted on it (fixed to the room, so they pan with it) make the motion visible."""
    frames = [rgb for _, rgb in video.sample(sample(ROOM), fps=10)]
    stripes = (40 * np.sign(np.sin(np.arange(576) / 3.0)))[None, :, None]
    pan = tmp_path / "pan.mp4"
    offsets = (96 + 40 * np.sin(np.arange(len(frames)) / 2)).astype(int)
    video.write_video(pan, (np.clip(f + stripes, 0, 255).astype(np.uint8)[:, x:x + 384]
                            for f, x in zip(frames, offsets)), fps=10)
    import logging
    with caplog.at_level(logging.INFO, logger="engine.data.dataset"):
        meta = dataset.build([pan], tmp_path / "pan", fps=10, size=SIZE, pose_model=pose_model, quiet=True)
    src = meta["sources"][0]
    assert src["plate"] is None and "moves" in src["plate_note"] and not (tmp_path / "pan" / "plates").exists()
    assert sum("moves" in r.getMessage() for r in caplog.records) == 1
    plates, has = pairs.load_plates(tmp_path / "pan", "train")
    assert not has.any() and plates.max() == 0


# --- small units --------------------------------------------------------------------------------

def test_mask_mismatch_and_boxed_masks():
    person = standing_pose(256)
    good = _rect_masks(person[None], (256, 256))[0]
    assert not selection.mask_mismatch(person, selection.BoxedMask.of(good))
    shadow = _rect_masks(person[None], (256, 256), shift=120)[0]          # beside her, not on her
    assert selection.mask_mismatch(person, selection.BoxedMask.of(shadow))
    torn = np.zeros((256, 256), np.uint8)
    torn[100:104, 120:124] = 255                                          # a few pixels: a missed mask
    assert selection.mask_mismatch(person, selection.BoxedMask.of(torn))
    both = np.maximum(good, shadow)                                       # she and a second person
    assert selection.mask_mismatch(person, selection.BoxedMask.of(both))
    boxed = selection.BoxedMask.of(good)
    assert boxed.tile.size < good.size / 2
    np.testing.assert_array_equal(boxed.full(), good)
    np.testing.assert_array_equal(boxed.crop((128, 128, 200), 64), framing.crop_image(good, (128, 128, 200), 64))
    empty = selection.BoxedMask.of(np.zeros((20, 30), np.uint8))
    assert empty.full().shape == (20, 30) and empty.full().max() == 0


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
    assert selection.classify([]) == (None, "no_person")
    assert selection.classify([person, person + 50])[1] == "two_people"
    assert selection.classify([person, ghost])[1] is None  # a faint ghost does not count
    assert selection.classify([low])[1] == "low_visibility"
    assert selection.classify([turning])[1] is None
    assert selection.classify([hidden])[1] == "low_visibility"


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
    """Several clips of one dancer: crops and one time split per clip; with no memory budget
    pass 2 decodes the videos again and must land on the very same frames."""
    short = tmp_path / "short.mp4"
    video.write_video(short, (cv2.resize(rgb, (240, 240)) for _, rgb in video.sample(sample(ROOM), fps=10)), fps=10)
    monkeypatch.setattr(dataset, "MEMORY_BUDGET", 0)
    out = tmp_path / "two"
    meta = dataset.build([sample(ROOM), short], out, fps=5, size=SIZE, pose_model=pose_model, quiet=True)
    a, b = meta["sources"]
    assert (a["width"], b["width"]) == (576, 240)
    assert a["sampled"] == 20 and b["sampled"] == 20  # 4 s at 5 fps, each
    z = _npz(out)
    for source in (0, 1):
        mine = z["source"] == source
        assert z["time"][mine & (z["split"] == 0)].max() < z["time"][mine & (z["split"] == 1)].min()
    # crops are in each clip's own pixels: the small clip's are smaller
    assert np.median(z["crops"][z["source"] == 1, 2]) < 0.6 * np.median(z["crops"][z["source"] == 0, 2])
    assert meta["counts"]["train"] + meta["counts"]["val"] == a["kept"] + b["kept"] == len(z["time"])
    assert [s["plate"] for s in meta["sources"]] == ["plates/000.png", "plates/001.png"]
    assert meta["stage"]["source"] in (0, 1)
    # the re-decoded frame is the one whose keypoints were found: compare with a fresh crop
    first = int(np.flatnonzero((z["source"] == 0) & (z["split"] == 0))[0])
    rgb = next(f for t, f in video.sample(sample(ROOM), 5) if abs(t - z["time"][first]) < 1e-6)
    _, frames, _ = pairs.load_pairs(out, "train")
    expected = framing.crop_image(rgb, z["crops"][first], SIZE)
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


def test_pose_estimator_gives_each_person_her_mask(pose_model):
    from engine.data.pose import PoseEstimator
    frames = [rgb for _, rgb in video.sample(sample(ROOM), fps=5)][:4]
    with PoseEstimator(pose_model, masks=True) as est:
        people = [est.people(rgb, i * 200.0) for i, rgb in enumerate(frames)]
    with PoseEstimator(pose_model) as est:
        bare = est.people(frames[0], 0.0)
    assert bare and bare[0].mask is None
    for found in people:
        assert len(found) >= 1
        kp, mask = found[0].keypoints, found[0].mask
        assert mask.shape == (576, 576) and mask.dtype == np.uint8 and mask.max() > 200
        hip = kp[INDEX["mid_hip"], :2].round().astype(int)
        assert mask[hip[1], hip[0]] > 127
        assert not selection.mask_mismatch(kp, selection.BoxedMask.of(mask))
