"""The wire format: encoding, decoding and the checks every request passes before the engine sees it."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest

from engine.wire import protocol
from engine.wire.joints import JOINTS
from engine.wire.protocol import ProtocolError

N, J = 3, len(JOINTS)
KEYPOINTS = struct.pack(f"<{N * J * 3}f", *range(N * J * 3))


def request(**changes) -> tuple[dict, list[bytes]]:
    msg = protocol.RenderRequest("r1", "anna", [10, 11, 12], list(JOINTS), KEYPOINTS, source_size=(1920, 1080),
                                 mode="clip", stats=None, format="jpeg", size=512, quality=80).encode()
    head = protocol.decode_header(msg[0])
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            head[outer][inner] = value
        else:
            head[key] = value
    return head, msg[1:]


def code_of(head: dict, binary: list[bytes]) -> str:
    with pytest.raises(ProtocolError) as e:
        protocol.parse_render(head, binary)
    assert e.value.request_id == "r1" and e.value.message
    return e.value.code


def test_a_render_request_round_trips():
    head, binary = request()
    assert head["v"] == protocol.VERSION and head["kind"] == "render" and head["shape"] == [N, J, 3]
    r = protocol.parse_render(head, binary)
    assert (r.id, r.model, r.frames, r.joints, r.source_size) == ("r1", "anna", [10, 11, 12], list(JOINTS), (1920, 1080))
    assert (r.mode, r.stats, r.format, r.size, r.quality) == ("clip", None, "jpeg", 512, 80)
    assert struct.unpack(f"<{N * J * 3}f", r.keypoints) == tuple(float(i) for i in range(N * J * 3))


def test_headers_are_compact_json_with_the_version_first():
    h = protocol.header("abc", "ping")
    assert h.startswith(b'{"v":2,"id":"abc","kind":"ping"')
    assert protocol.decode_header(h) == {"v": 2, "id": "abc", "kind": "ping"}
    err = json.loads(protocol.error("abc", "busy", "queue full")[0])
    assert err == {"v": 2, "id": "abc", "kind": "error", "code": "busy", "message": "queue full"}


@pytest.mark.parametrize("frame", [b"", b"\xff\xfe", b"[1, 2]", b'"ping"', b"{", b'{"v": 1, "kind": "ping"}',
                                   b'{"v": 1, "id": 5, "kind": "ping"}', b'{"v": 1, "id": "", "kind": "ping"}',
                                   b'{"v": NaN, "id": "a", "kind": "ping"}', b"[" * 100000,
                                   b'{"v": 1, "id": "' + b"x" * 200 + b'", "kind": "ping"}'])
def test_unreadable_headers_are_bad_messages(frame):
    with pytest.raises(ProtocolError) as e:
        protocol.decode_header(frame)
    assert e.value.code == "bad_message"


def test_a_header_that_is_too_big_is_refused_before_parsing():
    with pytest.raises(ProtocolError, match="bytes"):
        protocol.decode_header(b" " * (protocol.MAX_HEADER + 1))


def test_version_is_checked():
    protocol.check_version({"v": 2, "id": "a"})
    for v in (1, 3, 0, "2", None, True):      # 1: a client from before placements and alpha
        with pytest.raises(ProtocolError) as e:
            protocol.check_version({"v": v, "id": "a"})
        assert e.value.code == "version" and "v2" in e.value.message


def test_error_replies_may_have_a_null_id():
    frame = protocol.error(None, "bad_message", "not JSON")[0]
    assert protocol.decode_header(frame, reply=True)["code"] == "bad_message"
    with pytest.raises(ProtocolError):
        protocol.decode_header(frame)


@pytest.mark.parametrize("changes, code", [
    ({"model": ""}, "bad_request"), ({"model": 7}, "bad_request"),
    ({"frames": []}, "bad_request"), ({"frames": [1, 2, "x"]}, "bad_request"), ({"frames": [1, 2, 2.5]}, "bad_request"),
    ({"frames": list(range(protocol.MAX_FRAMES + 1))}, "too_large"),
    ({"joints": ["nose"] * J}, "bad_request"), ({"joints": []}, "bad_request"), ({"joints": [1] * J}, "bad_request"),
    ({"source_size": [0, 1080]}, "bad_request"), ({"source_size": [1920]}, "bad_request"),
    ({"source_size": [10**9, 1080]}, "bad_request"), ({"source_size": [True, 1080]}, "bad_request"),
    ({"normalize.mode": "magic"}, "bad_request"), ({"normalize": "clip"}, "bad_request"),
    ({"normalize.stats": {"height": 1}}, "bad_request"),
    ({"normalize.stats": dict.fromkeys(protocol.STATS_KEYS, 0.0)}, "bad_request"),
    ({"output.format": "gif"}, "bad_request"), ({"output.size": 8}, "bad_request"),
    ({"output.size": 10**9}, "too_large"), ({"output.quality": 101}, "bad_request"),
    ({"dtype": "<f8"}, "bad_request"), ({"dtype": ">f4"}, "bad_request"),
    ({"shape": [N, J, 2]}, "bad_request"), ({"shape": [N + 1, J, 3]}, "bad_request"),
])
def test_bad_fields_are_refused_with_a_code(changes, code):
    head, binary = request(**changes)
    assert code_of(head, binary) == code


def test_binary_frames_must_match_the_header():
    head, binary = request()
    assert code_of(head, []) == "bad_request"
    assert code_of(head, binary + [b""]) == "bad_request"
    assert code_of(head, [binary[0][:-4]]) == "bad_request"
    assert code_of(head, [binary[0] + binary[0]]) == "bad_request"


def test_valid_stats_pass_and_subsets_of_joints_are_allowed():
    stats = {"height": 300.0, "ankle_y": 900, "center_x": 960, "ankle_far": 850, "ankle_near": 950,
             "height_far": 280, "height_near": 320, "frames": 40}
    head, binary = request(**{"normalize.stats": stats})
    assert protocol.parse_render(head, binary).stats == {**{k: float(v) for k, v in stats.items()}, "frames": 40}
    msg = protocol.RenderRequest("r1", "anna", [0], ["left_wrist", "right_wrist"], struct.pack("<6f", *range(6)),
                                 source_size=(10, 10)).encode()
    r = protocol.parse_render(protocol.decode_header(msg[0]), msg[1:])
    assert r.joints == ["left_wrist", "right_wrist"] and (r.mode, r.format, r.size) == ("frame", "png", None)


def test_one_model_by_name_rule():
    models = {"anna": 1, "ben": 2}
    assert protocol.pick_model(models, "ben") == 2 and protocol.pick_model(models, "") == 1
    with pytest.raises(ProtocolError, match="has no model 'carl' .it serves 'anna', 'ben'.") as e:
        protocol.pick_model(models, "carl", "r1")
    assert (e.value.code, e.value.request_id) == ("unknown_model", "r1")
    with pytest.raises(ProtocolError, match="serves no model"):
        protocol.pick_model({}, "")


def test_render_replies_round_trip_and_must_match_their_images():
    reply = protocol.RenderReply("r1", "anna", [4, 5], "png", 256, 256, 0.0123456789)
    frames = reply.encode([b"a", b"b"])
    head = protocol.decode_header(frames[0], reply=True)
    assert head["predict_s"] == 0.012346 and head["channels"] == 3
    assert protocol.RenderReply.parse(head, frames[1:]) == dataclasses.replace(reply, predict_s=0.012346)
    with pytest.raises(ProtocolError, match="2 images"):
        protocol.RenderReply.parse({**head, "frames": [4]}, frames[1:])


@pytest.mark.parametrize("address, loopback", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.3.2.1:5555", True), ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True), ("ipc:///tmp/x", True), ("inproc://x", True),
    ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False), ("tcp://10.1.2.3:5555", False),
    ("tcp://eth0:5555", False), ("tcp://example.org:5555", False)])
def test_is_loopback_for_binds_and_connects(address, loopback):
    assert protocol.is_loopback(address) is loopback


def test_a_malformed_address_is_a_value_error():
    for address in ("127.0.0.1:5555", "udp://127.0.0.1:5555", "tcp://"):
        with pytest.raises(ValueError):
            protocol.is_loopback(address)


def test_v2_render_fields_round_trip_and_are_checked():
    kp = bytes(2 * 3 * 3 * 4)
    req = protocol.RenderRequest("r1", "m", [1, 2], ["nose", "neck", "mid_hip"], kp, (640, 360),
                                 placement="source", alpha=True, fps=24.0)
    frames = req.encode()
    head = protocol.decode_header(frames[0])
    back = protocol.parse_render(head, frames[1:])
    assert (back.placement, back.alpha, back.fps, back.source_size) == ("source", True, 24.0, (640, 360))
    plain = protocol.parse_render(protocol.decode_header(protocol.RenderRequest("r2", "m", [1], ["nose"], bytes(12),
                                                                                 (10, 10)).encode()[0]), [bytes(12)])
    assert (plain.placement, plain.alpha, plain.fps) == ("crop", False, None)
    for output, fps, reason in (({"placement": "stage"}, None, "placement"), ({"alpha": 1}, None, "alpha"),
                                ({"alpha": True, "format": "jpeg"}, None, "JPEG"), ({}, -1, "fps"), ({}, True, "fps")):
        bad = dict(head, output={**head["output"], **output}, fps=fps if fps is not None else head["fps"])
        with pytest.raises(ProtocolError, match=reason) as e:
            protocol.parse_render(bad, frames[1:])
        assert e.value.code == "bad_request"


def test_reply_placements_travel_per_frame():
    reply = protocol.RenderReply("r1", "m", [1, 2], "png", 640, 360, 0.5, channels=4,
                                 placements=[[2, 0, 10, 0, 2, 20], [1, 0, 0, 0, 1, 0]])
    frames = reply.encode([b"a", b"b"])
    back = protocol.RenderReply.parse(protocol.decode_header(frames[0], reply=True), frames[1:])
    assert back.channels == 4 and back.placements[0] == [2.0, 0.0, 10.0, 0.0, 2.0, 20.0]
    with pytest.raises(ProtocolError):
        protocol.RenderReply.parse(dict(protocol.decode_header(frames[0]), placements=[[1] * 6]), frames[1:])


def test_a_sequence_reference_round_trips_and_is_optional():
    msg = protocol.RenderRequest("r1", "m", [7, 8], ["nose"], bytes(24), (10, 10),
                                 sequence=protocol.SequenceRef("take-1", 7)).encode()
    head = protocol.decode_header(msg[0])
    assert head["sequence"] == {"id": "take-1", "frame": 7}
    assert protocol.parse_render(head, msg[1:]).sequence == protocol.SequenceRef("take-1", 7)
    plain = protocol.RenderRequest("r1", "m", [7], ["nose"], bytes(12), (10, 10)).encode()
    assert "sequence" not in protocol.decode_header(plain[0])
    assert protocol.parse_render(protocol.decode_header(plain[0]), plain[1:]).sequence is None
    assert protocol.parse_render(dict(protocol.decode_header(plain[0]), sequence=None), plain[1:]).sequence is None


@pytest.mark.parametrize("sequence", [
    "take-1", 5, [], {}, {"id": "a"}, {"frame": 3}, {"id": "", "frame": 3}, {"id": "x" * 65, "frame": 3},
    {"id": 5, "frame": 3}, {"id": "a", "frame": 1.5}, {"id": "a", "frame": True}, {"id": "a", "frame": "3"},
    {"id": "a", "frame": 2 ** 60}, {"id": "a", "frame": 3, "extra": 1}])
def test_bad_sequence_fields_are_bad_requests(sequence):
    head, binary = request(sequence=sequence)
    assert code_of(head, binary) == "bad_request"


def test_replies_say_whether_they_continued_their_sequence():
    reply = protocol.RenderReply("r1", "m", [1], "raw", 64, 64, 0.5, warm=True, warmup=4)
    frames = reply.encode([b"a"])
    head = protocol.decode_header(frames[0], reply=True)
    assert (head["warm"], head["warmup"]) == (True, 4)
    back = protocol.RenderReply.parse(head, frames[1:])
    assert (back.warm, back.warmup) == (True, 4)
    old = {k: v for k, v in head.items() if k not in ("warm", "warmup")}        # a reply without them: cold
    assert (protocol.RenderReply.parse(old, frames[1:]).warm, protocol.RenderReply.parse(old, frames[1:]).warmup) \
        == (False, 0)
