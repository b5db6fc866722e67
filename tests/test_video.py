"""engine.data.video on real clips: probing, sampling by timestamp (decoding only what is kept),
B-frames, seeking, variable rates, rotation, lying and truncated containers, atomic H.264 and
ProRes writing, and one-line errors for bad files."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
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


def test_sampling_converts_only_the_kept_frames(monkeypatch):
    converted = []
    real = video._upright
    monkeypatch.setattr(video, "_upright", lambda frame, image: converted.append(frame.pts) or real(frame, image))
    kept = list(video.frames(sample(ROOM), fps=10))
    assert len(kept) == 40
    assert len(converted) == 40  # of 120 frames: the others were never turned into arrays


def test_times_fall_back_to_index_over_fps_when_the_container_lies(monkeypatch):
    real = video._packets

    def lying(container, stream, path):    # a broken container: no presentation times at all
        packets, broken = real(container, stream, path)
        return [video._Packet(None, None, p.key) for p in packets], broken
    monkeypatch.setattr(video, "_packets", lying)
    kept = list(video.frames(sample(ROOM), fps=10))
    assert len(kept) == 40
    assert [f.index for f in kept[:4]] == [0, 3, 6, 9]
    assert kept[-1].t == pytest.approx(117 / 30)


def decoding(caplog) -> tuple[int, int, int]:
    """(frames decoded, packets, seeks) from frames()'s debug line."""
    line = next(r.getMessage() for r in caplog.records if "frames decoded of" in r.getMessage())
    numbers = [int(w) for w in line.replace(",", " ").split() if w.isdigit()]
    return numbers[0], numbers[1], numbers[2]


def test_b_frames_nobody_needs_are_not_decoded(caplog):
    clip = sample("video/breakdance_640x360.mp4")          # H.264 High with B-frames
    with caplog.at_level(logging.DEBUG, logger="engine.data.video"):
        kept = list(video.frames(clip, fps=10))
    everything = list(video.frames(clip))
    assert [f.index for f in kept] == list(range(0, 176, 3))
    for f in kept[::10]:                                    # the same pictures as decoding everything
        np.testing.assert_array_equal(f.bgr, everything[f.index].bgr)
    decoded, packets, _ = decoding(caplog)
    assert packets == 176 and decoded < 140                 # non-reference B-frames were skipped


def test_a_low_rate_seeks_across_keyframes(caplog):
    clip = sample("video/dancer_long_320x240.mp4")          # 2089 frames, a keyframe every 60
    with caplog.at_level(logging.DEBUG, logger="engine.data.video"):
        kept = list(video.frames(clip, fps=0.2))
    assert [f.index for f in kept[:3]] == [0, 150, 300] and len(kept) == 14
    decoded, packets, seeks = decoding(caplog)
    assert seeks > 5 and decoded < packets / 2
    for f in kept[1:3]:
        assert f.t == pytest.approx(f.index * 1001 / 30000)


def test_variable_frame_rate_is_sampled_by_presentation_time(tmp_path):
    path = tmp_path / "vfr.mp4"
    stamps = [0, 40, 100, 110, 300, 330, 360, 600, 610, 1000]      # milliseconds, irregular
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    every = list(video.frames(path))
    assert [round(f.t, 3) for f in every] == [ms / 1000 for ms in stamps]
    assert [f.index for f in video.frames(path, fps=10)] == [0, 2, 4, 7, 9]   # nearest 0, 0.1, 0.3, 0.6, 1.0 s


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "phone.mp4"
    landscape = np.zeros((32, 64, 3), np.uint8)
    landscape[:8, :8] = 255                                  # a mark in the top-left corner as stored
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)                     # shown turned 90 degrees clockwise
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(landscape, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info = video.probe(path)
    assert (info.width, info.height) == (32, 64)
    _, rgb = next(video.sample(path))
    assert rgb.shape == (64, 32, 3)
    assert rgb[:8, -8:].mean() > 200 and rgb[:8, :8].mean() < 50   # clockwise: top-left went top-right


def test_a_truncated_file_gives_what_decodes_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    full = tmp_path / "full.mp4"
    video.write_video(full, [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(60)], fps=10)
    data = full.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[:len(data) // 2])                  # +faststart: the index is at the front
    with caplog.at_level(logging.WARNING, logger="engine.data.video"):
        got = list(video.frames(half, fps=5))
    assert 5 < len(got) < 30
    assert "truncated" in caplog.text and "of 6.0 s" in caplog.text
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:2000])                             # not even one frame
    with pytest.raises(UserError, match="not a video"):
        list(video.frames(cut))


def test_write_video_round_trip_and_atomic(tmp_path):
    frames = [np.full((48, 64, 3), (i * 20, 100, 200 - i * 10), np.uint8) for i in range(12)]
    out = tmp_path / "clip.mp4"
    codec = video.write_video(out, frames, fps=12)
    assert codec == "h264"
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
    assert w.codec == "h264" and w.frames == 3
    assert video.probe(out).frames == 3


def test_mp4_is_browser_h264_and_mov_is_prores_4444_with_alpha(tmp_path):
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 0], rgba[:, :32, 3] = 200, 255                  # red, opaque on the left half only
    assert video.write_video(tmp_path / "a.mov", [rgba] * 3, fps=10) == "prores4444"
    with av.open(str(tmp_path / "a.mov")) as f:
        stream = f.streams.video[0]
        assert stream.codec_context.name == "prores" and "yuva" in stream.codec_context.pix_fmt
        back = next(f.decode(stream)).to_ndarray(format="rgba")
    assert back[:, :32, 3].min() > 250 and back[:, 32:, 3].max() < 5
    assert video.write_video(tmp_path / "b.mp4", [rgba] * 3, fps=10) == "h264"
    with av.open(str(tmp_path / "b.mp4")) as f:
        stream = f.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    _, rgb = next(video.sample(tmp_path / "b.mp4"))
    assert rgb[:, :28, 0].mean() > 180 and rgb[:, 36:].max() < 30      # no alpha in mp4: over black
    assert "browser" in video.plays_in("h264") and "ProRes" in video.plays_in("prores4444")
