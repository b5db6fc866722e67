"""The client library against small scripted engines (a ROUTER in a thread) and one real engine.

Scripted engines make failures exact: a reply of another protocol version, an engine that drops a
request (Lazy Pirate must resend), an engine that hangs while others carry on (its chunks move).
"""

from __future__ import annotations

import json
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from engine.wire import protocol
from engine.wire.client import (Client, ClientError, EngineError, EngineUnavailable, Frame, ProtocolMismatch, clip_stats,
                           pack_keypoints)
from engine.wire.joints import JOINTS, body_stats
from tests.conftest import standing_pose
from tests.test_server import Engine, free_port, poses

J = len(JOINTS)


class Scripted:
    """A fake engine: answers ping/info/render; a render's raw 'image' of each frame is its id as 4 bytes.

    version: the "v" it replies with. drop: how many requests to ignore first. hang_after: fall
    silent (a frozen machine, a cut cable: the socket stays up) after this many renders. error: reply to renders with this error code.
    """

    def __init__(self, *, version: int = protocol.VERSION, drop: int = 0, hang_after: int | None = None, error: str | None = None,
                 delay: float = 0.0):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.version, self.drop, self.hang_after, self.error, self.delay = version, drop, hang_after, error, delay
        self.received: list[dict] = []
        self.warm = False                                    # what render replies say of "warm"
        self.renders = 0
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self):
        s = zmq.Context.instance().socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(self.address)
        self.ready.set()
        try:
            while not self.stop.is_set():
                if not s.poll(20):
                    continue
                identity, head, *binary = s.recv_multipart()
                head = json.loads(head)
                self.received.append(head)
                if self.drop > 0:
                    self.drop -= 1
                    continue
                if self.hang_after is not None and self.renders >= self.hang_after:
                    continue                                 # silent from now on, pings too
                if head["kind"] == "render":
                    self.renders += 1
                time.sleep(self.delay)
                s.send_multipart([identity, *self._reply(head, binary)])
        finally:
            s.close()

    def _reply(self, head, binary):
        rid, kind = head["id"], head["kind"]
        h = lambda k, **f: json.dumps({"v": self.version, "id": rid, "kind": k, **f}).encode()  # noqa: E731
        if kind == "ping":
            return [h("ping", time=0)]
        if kind == "info":
            return [h("info", protocol=self.version, server="scripted", models=[{"name": "m", "size": 2, "joints": list(JOINTS)}])]
        if self.error:
            return [h("error", code=self.error, message="scripted failure")]
        return [h("render", model=head["model"], frames=head["frames"], format="raw", width=2, height=2, channels=3,
                  warm=self.warm),
                *[struct.pack("<i", f) for f in head["frames"]]]

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def scripted(request):
    made = []

    def make(**kw):
        made.append(Scripted(**kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


def ids_of(frames) -> list[int]:
    return [struct.unpack("<i", f.data)[0] for f in frames]


# --- against scripted engines -----------------------------------------------------------------

def test_render_streams_frames_in_order_with_bounded_chunks_in_flight(scripted):
    e = scripted(delay=0.01)
    with Client(e.address, timeout=5) as c:
        frames = list(c.render("m", poses(23), source_size=(640, 480), frame_ids=range(50, 73), chunk=4, in_flight=2))
    assert [f.id for f in frames] == list(range(50, 73)) == ids_of(frames)
    assert all(isinstance(f, Frame) and (f.width, f.height, f.format) == (2, 2, "raw") for f in frames)
    renders = [h for h in e.received if h["kind"] == "render"]
    assert [len(h["frames"]) for h in renders] == [4, 4, 4, 4, 4, 3]
    assert len({h["id"] for h in renders}) == 6 and all(h["v"] == protocol.VERSION for h in renders)


def test_a_sequence_names_each_chunk_s_first_frame_and_replies_say_warm(scripted):
    e = scripted()
    e.warm = True
    with Client(e.address, timeout=5) as c:
        frames = list(c.render("m", poses(10), source_size=(640, 480), frame_ids=range(50, 60), chunk=4,
                               sequence="take-1"))
        with pytest.raises(ValueError, match="sequence"):
            c.render("m", poses(1), source_size=(640, 480), sequence="x" * 65)
        list(c.render("m", poses(2), source_size=(640, 480)))
    renders = [h for h in e.received if h["kind"] == "render"]
    assert [h["sequence"] for h in renders[:3]] == [{"id": "take-1", "frame": f} for f in (50, 54, 58)]
    assert "sequence" not in renders[3]
    assert all(f.warm for f in frames)


def test_several_engines_share_the_chunks(scripted):
    a, b = scripted(delay=0.02), scripted(delay=0.02)
    with Client([a.address, b.address], timeout=5) as c:
        frames = list(c.render("m", poses(40), source_size=(640, 480), chunk=2, in_flight=2))
    assert ids_of(frames) == list(range(40))
    assert a.renders >= 5 and b.renders >= 5 and a.renders + b.renders == 20


def test_a_hung_engine_s_chunks_go_to_the_others(scripted):
    good, hung = scripted(), scripted(hang_after=1)
    start = time.monotonic()
    with Client([hung.address, good.address], timeout=1.5) as c:
        frames = list(c.render("m", poses(30), source_size=(640, 480), chunk=3, in_flight=2))
    assert ids_of(frames) == list(range(30))
    assert hung.renders == 1 and good.renders >= 9
    assert time.monotonic() - start < 5


def test_lazy_pirate_resends_after_a_dropped_request(scripted):
    e = scripted(drop=1)
    with Client(e.address, timeout=3, retries=2) as c:
        start = time.monotonic()
        c.ping()
        assert 0.9 < time.monotonic() - start < 2.5        # one window (timeout / 3) lost, then resent
    pings = [h for h in e.received if h["kind"] == "ping"]
    assert len(pings) >= 2 and pings[0]["id"] == pings[1]["id"]   # the same request, sent again


def test_another_protocol_version_raises_protocol_mismatch(scripted):
    e = scripted(version=1)   # an engine from before v2
    with Client(e.address, timeout=3) as c:
        with pytest.raises(ProtocolMismatch, match="v1"):
            c.ping()


def test_an_error_reply_raises_engine_error_with_code_and_message(scripted):
    e = scripted(error="busy")
    with Client(e.address, timeout=3) as c:
        with pytest.raises(EngineError) as err:
            list(c.render("m", poses(4), source_size=(640, 480)))
        assert (err.value.code, err.value.message) == ("busy", "scripted failure")
        assert c.ping() < 1                                  # the client is still usable


def test_no_engine_raises_engine_unavailable_within_the_timeout():
    for timeout in (0.6, 1.5):
        start = time.monotonic()
        with Client(f"tcp://127.0.0.1:{free_port()}", timeout=timeout) as c:
            with pytest.raises(EngineUnavailable, match="pix2dance serve"):
                c.ping()
        assert timeout - 0.05 <= time.monotonic() - start <= timeout + 1.0


def test_render_arguments_are_checked_before_anything_is_sent(scripted):
    e = scripted()
    with Client(e.address, timeout=3) as c:
        with pytest.raises(ValueError):
            c.render("m", poses(2), source_size=(640, 480), mode="magic")
        with pytest.raises(ValueError):
            c.render("m", poses(2), source_size=(640, 480), fmt="gif")
        with pytest.raises(ValueError):
            c.render("m", poses(2), source_size=(640, 480), frame_ids=[1])
        with pytest.raises(ValueError):
            c.render("m", np.zeros((2, 5, 3), np.float32), source_size=(640, 480))
        with pytest.raises(EngineError, match="unknown_model"):
            c.render("nobody", poses(2), source_size=(640, 480))
    assert [h["kind"] for h in e.received] == ["info", "info"]     # joints looked up; no render sent
    with pytest.raises(ValueError):
        Client("localhost:5555")
    with pytest.raises(ClientError, match="curve"):
        Client("tcp://127.0.0.1:1", curve=("/nonexistent/server.key", "/nonexistent/client.key_secret"))


# --- pure helpers -----------------------------------------------------------------------------

def test_keypoints_are_packed_from_arrays_lists_and_buffers():
    kp = poses(3)
    expected = kp.astype("<f4").tobytes()
    assert pack_keypoints(kp, J) == (expected, 3)
    assert pack_keypoints(kp.astype(np.float64), J) == (expected, 3)           # via .tolist()
    assert pack_keypoints(kp.tolist(), J) == (expected, 3)                      # nested lists
    assert pack_keypoints(expected, J) == (expected, 3)                         # a buffer of float32
    assert pack_keypoints(np.asfortranarray(kp), J) == (expected, 3)            # any memory order
    for bad in (kp[:, :5], [[[1.0, 2.0]] * J], expected[:-4]):
        with pytest.raises(ValueError):
            pack_keypoints(bad, J)


def test_clip_stats_are_the_engines_body_stats_in_any_joint_order():
    kp = poses(7)
    order = list(reversed(JOINTS))
    data, n = pack_keypoints(kp[:, [JOINTS.index(j) for j in order]], J)
    assert clip_stats(data, n, order) == pytest.approx(body_stats(kp))


# --- against the real engine --------------------------------------------------------------------

def test_a_real_engine_renders_what_the_client_asks(tiny_run):
    e = Engine(tiny_run)
    try:
        with Client([e.address], timeout=20) as c:
            info = c.info()
            model = info["models"][0]
            pose = standing_pose(64)[None]
            # a subset of joints in another order: the rest count as unseen
            subset = ["left_ankle", "right_ankle", "left_knee", "right_knee", "left_hip", "right_hip", "neck", "mid_hip"]
            few = pose[:, [JOINTS.index(j) for j in subset]]
            (frame,) = c.render(model["name"], few.tolist(), source_size=(64, 64), mode="none", joints=subset, fmt="raw")
            assert (frame.width, frame.height, len(frame.data)) == (64, 64, 64 * 64 * 3)
            from engine.model.predictor import Predictor
            p = Predictor(tiny_run, "cpu")
            full = np.zeros_like(pose)
            full[:, [JOINTS.index(j) for j in subset]] = few
            np.testing.assert_array_equal(np.frombuffer(frame.data, np.uint8).reshape(1, 64, 64, 3),
                                          p.predict(full, (64, 64), "none"))
    finally:
        e.stop()


def test_renders_lost_behind_a_live_address_are_sent_again(scripted):
    """An engine restarted behind the same address lost a render: the heartbeat finds out, the render goes again."""
    e = scripted(drop=1)                  # the first render vanishes; pings are answered
    original = e._reply

    def reply(head, binary):              # the real server's answer to a heartbeat: the ids it does not hold
        if head["kind"] == "ping" and "pending" in head:
            answered = {h["id"] for h in e.received[1:] if h["kind"] == "render"}
            return [json.dumps({"v": protocol.VERSION, "id": head["id"], "kind": "ping",
                                "lost": [i for i in head["pending"] if i not in answered]}).encode()]
        return original(head, binary)

    e._reply = reply
    with Client(e.address, timeout=30) as c:
        start = time.monotonic()
        frames = list(c.render("m", poses(3), source_size=(640, 480), chunk=3, joints=list(JOINTS)))
        assert time.monotonic() - start < 8                  # a heartbeat (window / 3), not a 10 s reopen
    assert ids_of(frames) == [0, 1, 2]
    renders = [h for h in e.received if h["kind"] == "render"]
    assert len(renders) == 2 and renders[0]["id"] == renders[1]["id"]
