"""engine.data.video on real clips: probing, sampling by timestamp (decoding only what is kept),
lying containers, atomic mp4 writing, and one-line errors for bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.data import video
from engine.errors import UserError
from tests.conftest import sample

ROOM = "video/dancer_room.mp4"  # 576x576, 30 fps, 120 frames


def test_probe_reads_size_rate_and_length():
    info = video.probe(sample(ROOM))
    assert (info.width, info.height, info.frames) == (576, 576, 120)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(4.0)


@pytest.mark.parametrize("fps, expected", [(10, 40), (5, 20), (7.5, 30)])
def test_sample_gives_the_frame_nearest_each_tick(fps, expected):
    got = list(video.sample(sample(ROOM), fps))
    times = np.array([t for t, _ in got])
    assert len(got) == expected
    assert np.all(np.diff(times) > 0)
    # each kept frame is within half a source frame (1/60 s) of k / fps
    assert np.abs(times - np.arange(expected) / fps).max() <= 0.5 / 30 + 1e-6
    t, rgb = got[0]
    assert rgb.shape == (576, 576, 3) and rgb.dtype == np.uint8


def test_sample_faster_than_source_gives_every_frame_once():
    frames = list(video.frames(sample(ROOM), fps=60))
    assert [f.index for f in frames] == list(range(120))


def test_sample_returns_rgb_not_bgr(tmp_path):
    path = tmp_path / "red.avi"
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255  # RGB red
    video.write_video(path, [red] * 5, fps=10)
    _, rgb = next(video.sample(path, 10))
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 50


class _CountingCapture:
    """A real capture that counts retrieve() calls and can pretend the container has no times."""
    retrieved = 0

    def __init__(self, *args, lie=False):
        self._cap = _REAL_CAPTURE(*args)
        self._lie = lie

    def get(self, prop):
        if self._lie and prop == cv2.CAP_PROP_POS_MSEC:
            return 0.0  # a broken container: every frame at time 0
        return self._cap.get(prop)

    def retrieve(self, *args):
        type(self).retrieved += 1
        return self._cap.retrieve(*args)

    def __getattr__(self, name):
        return getattr(self._cap, name)


_REAL_CAPTURE = cv2.VideoCapture


def test_sampling_converts_only_the_kept_frames(monkeypatch):
    _CountingCapture.retrieved = 0
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: _CountingCapture(*a))
    kept = list(video.frames(sample(ROOM), fps=10))
    assert len(kept) == 40
    assert _CountingCapture.retrieved == 40  # of 120 frames: the others were only grabbed


def test_times_fall_back_to_index_over_fps_when_the_container_lies(monkeypatch):
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: _CountingCapture(*a, lie=True))
    kept = list(video.frames(sample(ROOM), fps=10))
    assert len(kept) == 40
    assert [f.index for f in kept[:4]] == [0, 3, 6, 9]
    assert kept[-1].t == pytest.approx(117 / 30)


def test_write_video_round_trip_and_atomic(tmp_path):
    frames = [np.full((48, 64, 3), (i * 20, 100, 200 - i * 10), np.uint8) for i in range(12)]
    out = tmp_path / "clip.mp4"
    codec = video.write_video(out, frames, fps=12)
    assert codec in ("avc1", "mp4v")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left
    info = video.probe(out)
    assert (info.width, info.height, info.frames) == (64, 48, 12)
    assert info.fps == pytest.approx(12)
    back = [rgb for _, rgb in video.sample(out)]
    assert len(back) == 12
    assert np.abs(back[5].astype(int).mean(axis=(0, 1)) - frames[5].mean(axis=(0, 1))).max() < 12


def test_writer_discards_everything_on_error(tmp_path):
    out = tmp_path / "broken.mp4"

    def frames():
        yield np.zeros((32, 32, 3), np.uint8)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError):
        video.write_video(out, frames(), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_unknown_suffix_and_empty_input(tmp_path):
    with pytest.raises(UserError, match="mp4"):
        video.write_video(tmp_path / "x.gif", [np.zeros((8, 8, 3), np.uint8)], fps=10)
    with pytest.raises(UserError, match="no frames"):
        video.write_video(tmp_path / "x.mp4", [], fps=10)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_user_errors(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n")
    for path, words in [(tmp_path / "missing.mp4", "not found"), (fake, "not a video"), (tmp_path, "folder")]:
        with pytest.raises(UserError, match=words) as e:
            video.probe(path)
        assert "\n" not in str(e.value)
        with pytest.raises(UserError):
            list(video.sample(path, 10))


def test_writer_falls_back_when_a_codec_will_not_open(tmp_path):
    out = tmp_path / "odd.mp4"
    with video.VideoWriter(out, fps=5, codec="XXXX") as w:  # no such encoder: the next one for .mp4
        for _ in range(3):
            w.write(np.zeros((33, 47, 3), np.uint8))
    assert w.codec in ("avc1", "mp4v") and w.frames == 3
    assert video.probe(out).frames == 3
