"""Temporal serving: the engine keeps each sequence's last frame (engine/serve/sequences.py) and continues from it.

The store alone first (bounded: LRU and TTL; a request waits only for an earlier one; a failed one
releases its follower), then a real engine process on loopback with a tiny untrained temporal run.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.serve.sequences import MAX_SEQUENCES, Sequences
from engine.wire.protocol import SequenceRef


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_request_continues_only_from_the_frame_just_before_its_first():
    store = Sequences()
    store.keep("a", 9, "frame 9")
    assert store.previous(SequenceRef("a", 10)) == "frame 9"
    assert store.previous(SequenceRef("a", 11)) is None          # a jump: cold
    assert store.previous(SequenceRef("a", 9)) is None           # the same frame again: cold
    assert store.previous(SequenceRef("b", 10)) is None          # another sequence


def test_the_store_is_bounded_least_recently_used_first():
    store = Sequences(limit=3)
    for i in range(3):
        store.keep(f"s{i}", 0, i)
    assert store.previous(SequenceRef("s0", 1)) == 0             # s0 used: s1 is now the oldest
    store.keep("s3", 0, 3)
    assert len(store) == 3 and "s1" not in store and {"s0", "s2", "s3"} == {s for s in ("s0", "s2", "s3") if s in store}
    assert Sequences().limit == MAX_SEQUENCES == 64


def test_sequences_expire_after_their_ttl_without_use():
    clock = Clock()
    store = Sequences(ttl_s=60, clock=clock)
    store.keep("old", 0, "x")
    clock.now += 30
    store.keep("young", 0, "y")
    clock.now += 31                                              # old: 61 s unused, young: 31 s
    assert "old" not in store and "young" in store
    assert store.previous(SequenceRef("young", 1)) == "y"        # a use renews it
    clock.now += 59
    assert "young" in store
    clock.now += 2
    assert len(store) == 0


def test_a_follower_waits_for_an_earlier_predecessor_and_not_after_it_ends_or_fails():
    store = Sequences()
    first = store.begin(SequenceRef("a", 0), 8)                  # frames 0-7
    second = store.begin(SequenceRef("a", 8), 8)                 # frames 8-15: follows the first
    other = store.begin(SequenceRef("b", 8), 8)                  # another sequence: never waits
    assert store.waits(second) and not store.waits(first) and not store.waits(other)
    store.end(first, "frame 7")
    assert not store.waits(second) and store.previous(SequenceRef("a", 8)) == "frame 7"
    third = store.begin(SequenceRef("a", 16), 4)
    assert store.waits(third)
    store.end(second)                                            # failed: nothing kept, the follower goes cold
    store.end(second)                                            # ending twice is harmless
    assert not store.waits(third) and store.previous(SequenceRef("a", 16)) is None


def test_a_request_queued_later_never_holds_up_one_queued_before_it():
    store = Sequences()
    late = store.begin(SequenceRef("a", 8), 8)                   # frames 8-15, queued first
    early = store.begin(SequenceRef("a", 0), 8)                  # frames 0-7, queued after it
    assert not store.waits(late) and not store.waits(early)


# --- a real engine with a tiny temporal run ---------------------------------------------------------

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import zmq  # noqa: E402

from engine.wire import protocol  # noqa: E402
from engine.wire.client import Client  # noqa: E402
from engine.wire.joints import JOINTS  # noqa: E402
from tests.conftest import make_tiny_run  # noqa: E402
from tests.test_server import TIMEOUT, Engine, poses, raw_frames  # noqa: E402

SOURCE = (640, 480)


@pytest.fixture(scope="module")
def temporal_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tempo", temporal=True)


@pytest.fixture(scope="module")
def temporal_engine(temporal_run):
    e = Engine(temporal_run)                     # the CPU's max batch: 4
    yield e
    e.stop()


@pytest.fixture(scope="module")
def temporal_predictor(temporal_run):
    from engine.model.predictor import Predictor
    return Predictor(temporal_run, "cpu")


def one(c: Client, pose, frame: int, sequence: str | None):
    """One preview frame (raw RGB crop), as the add-on's live preview asks for it."""
    (f,) = c.render("tempo", pose[None], source_size=SOURCE, frame_ids=[frame], fmt="raw", chunk=1, in_flight=1,
                    sequence=sequence)
    return f, raw_frames([f], 64)[0]


def test_info_says_the_model_is_temporal_and_what_the_engine_keeps(temporal_engine):
    with Client(temporal_engine.address, timeout=TIMEOUT) as c:
        info = c.info()
    (model,) = info["models"]
    assert (model["temporal"], model["warmup"]) == (True, 4)
    assert (info["limits"]["sequences"], info["limits"]["sequence_ttl_s"]) == (64, 60.0)


def test_a_preview_step_forward_by_one_is_warm_and_a_jump_is_cold(temporal_engine):
    kp = poses(12)
    with Client(temporal_engine.address, timeout=TIMEOUT) as c:
        first, _ = one(c, kp[4], 4, "preview-a")
        step, warm = one(c, kp[5], 5, "preview-a")
        _, cold = one(c, kp[5], 5, None)                         # the same pose, no sequence: cold
        jump, jumped = one(c, kp[9], 9, "preview-a")             # 5 -> 9: cold
        _, cold9 = one(c, kp[9], 9, "preview-b")                 # another sequence's first frame: cold
        back, _ = one(c, kp[8], 8, "preview-a")                  # 9 -> 8: backwards, cold
    assert not first.warm and step.warm and not jump.warm and not back.warm
    assert not np.array_equal(warm, cold)                        # the previous frame changed it
    np.testing.assert_array_equal(jumped, cold9)


def test_chunks_of_one_sequence_on_one_engine_continue_each_other_as_one_render_in_process(temporal_engine,
                                                                                          temporal_predictor):
    kp = poses(16)                              # 16 frames: one lane in process (MIN_LANE), no fps: no context
    with Client(temporal_engine.address, timeout=TIMEOUT) as c:
        frames = list(c.render("tempo", kp, source_size=SOURCE, fmt="raw", chunk=8, in_flight=2, sequence="take-1"))
        alone = list(c.render("tempo", kp[8:], source_size=SOURCE, fmt="raw", chunk=8))    # no sequence: cold
    assert [f.warm for f in frames] == [False] * 8 + [True] * 8
    expected = temporal_predictor.render(kp, SOURCE).frames
    np.testing.assert_array_equal(raw_frames(frames, 64), expected)
    np.testing.assert_array_equal(raw_frames(alone, 64)[0], temporal_predictor.render(kp[8:9], SOURCE).frames[0])
    assert not np.array_equal(raw_frames(alone, 64)[0], expected[8])


def test_a_long_request_is_split_into_lanes_that_warm_up_and_equal_the_same_lanes_in_process(temporal_engine,
                                                                                            temporal_predictor):
    kp = poses(40)                              # 2 lanes of 20 (MIN_LANE 16): the second warms up on 4 frames
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(temporal_engine.address)
    try:
        s.send_multipart(protocol.RenderRequest("lanes", "tempo", list(range(40)), list(JOINTS),
                                                kp.astype("<f4").tobytes(), SOURCE, format="raw").encode())
        assert s.poll(60_000)
        head, *images = s.recv_multipart()
    finally:
        s.close()
    head = json.loads(head)
    assert (head["warm"], head["warmup"]) == (False, 4)
    served = np.stack([np.frombuffer(i, np.uint8).reshape(64, 64, 3) for i in images])
    np.testing.assert_array_equal(served, temporal_predictor.render(kp, SOURCE).frames)


def test_bad_sequence_fields_get_bad_request_from_the_engine(temporal_engine):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(temporal_engine.address)
    try:
        for bad in ({"id": "", "frame": 1}, {"id": "a" * 65, "frame": 1}, {"id": "a", "frame": "1"}, "a", [1]):
            msg = protocol.RenderRequest("bad", "tempo", [0], list(JOINTS), poses(1).astype("<f4").tobytes(),
                                         SOURCE).encode()
            head = json.loads(msg[0])
            head["sequence"] = bad
            s.send_multipart([json.dumps(head).encode(), msg[1]])
            assert s.poll(5000)
            reply = json.loads(s.recv_multipart()[0])
            assert (reply["kind"], reply["code"]) == ("error", "bad_request") and "sequence" in reply["message"]
    finally:
        s.close()


def test_a_model_that_is_not_temporal_ignores_sequences(tmp_path):
    from engine.model.predictor import Predictor
    run = make_tiny_run(tmp_path / "plain")
    server, thread = in_process(Predictor(run, "cpu", backend="torch"))
    try:
        kp = poses(6)
        with Client(server.endpoint, timeout=TIMEOUT) as c:
            assert c.info()["models"][0]["temporal"] is False
            a = list(c.render("plain", kp, source_size=SOURCE, fmt="raw", chunk=3, sequence="s"))
            b = list(c.render("plain", kp, source_size=SOURCE, fmt="raw", chunk=3))
        assert not any(f.warm for f in a) and len(server.sequences) == 0
        np.testing.assert_array_equal(raw_frames(a, 64), raw_frames(b, 64))
    finally:
        server.stop()
        thread.join(20)


# --- an in-process Server: a predecessor made slow, or made to fail ----------------------------------

def in_process(predictor):
    from engine.serve.server import Server
    server = Server([predictor], "tcp://127.0.0.1:0")
    thread = threading.Thread(target=server.serve_forever, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    return server, thread


def slow_predictor(run):
    """A Predictor whose framing of a request from a 666-px-wide source takes 0.5 s, and from a 667-px one
    fails after 0.5 s: a predecessor still in progress when its follower arrives."""
    from engine.model.predictor import Predictor

    class Slow(Predictor):
        def frame(self, keypoints, source_size, *args, **kwargs):
            if source_size[0] in (666, 667):
                time.sleep(0.5)
                if source_size[0] == 667:
                    raise ValueError("made to fail")
            return super().frame(keypoints, source_size, *args, **kwargs)
    return Slow(run, "cpu", backend="torch")


def send(s, rid: str, kp, first: int, source=SOURCE, sequence: str = "take"):
    s.send_multipart(protocol.RenderRequest(rid, "tempo", list(range(first, first + len(kp))), list(JOINTS),
                                            kp.astype("<f4").tobytes(), source, format="raw",
                                            sequence=protocol.SequenceRef(sequence, first)).encode())


def replies(s, n: int, timeout_ms: int = 20_000) -> dict:
    out = {}
    while len(out) < n:
        assert s.poll(timeout_ms), f"no reply after {sorted(out)}"
        head = json.loads(s.recv_multipart()[0])
        out[head["id"]] = head
    return out


@pytest.mark.parametrize("fails", [False, True])
def test_a_follower_waits_for_its_predecessor_and_a_failed_one_does_not_hang_it(temporal_run, fails):
    server, thread = in_process(slow_predictor(temporal_run))
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    try:
        kp = poses(8)
        send(s, "before", kp[:4], 0, source=(667 if fails else 666, 480))      # framing takes 0.5 s
        send(s, "after", kp[4:], 4)                                            # arrives meanwhile: waits
        got = replies(s, 2)
        assert got["after"]["kind"] == "render" and got["after"]["warm"] is (not fails)
        if fails:
            assert (got["before"]["kind"], got["before"]["code"]) == ("error", "bad_request")
            assert got["after"]["warmup"] == 0                   # no context to warm up on: cold from frame 4
        else:
            assert got["before"]["kind"] == "render" and not got["before"]["warm"]
        assert not server.sequences._producing                  # nothing left in progress
    finally:
        s.close()
        server.stop()
        thread.join(20)
