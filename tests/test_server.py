"""The engine server as a real process on 127.0.0.1 with a tiny untrained model, spoken to over ZeroMQ.

Helpers here (free_port, Engine) are shared with tests/test_client.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.wire import protocol
from engine.serve import keys, server
from engine.wire.client import Client, EngineError, EngineUnavailable
from engine.errors import UserError
from engine.wire.joints import JOINTS
from tests.conftest import PYTHON, ROOT, standing_pose

TIMEOUT = 20.0


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """`pix2dance serve` in a subprocess; .address, .proc; waits until it answers a ping."""

    def __init__(self, *runs: Path, extra: tuple[str, ...] = (), wait: bool = True, curve=None):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        # a file, not a pipe: an unread pipe that fills up would block the server's logging
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([PYTHON, "-m", "engine.cli", "serve", *map(str, runs), "--bind", self.address,
                                      "--device", "cpu", *extra],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        if wait:
            with Client(self.address, timeout=60, curve=curve) as c:
                c.ping()

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        return self.proc.returncode, self.log.read()


@pytest.fixture(scope="module")
def engine(tiny_run):
    e = Engine(tiny_run)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def predictor(tiny_run):
    from engine.model.predictor import Predictor
    return Predictor(tiny_run, "cpu")


def poses(n: int, arm: str = "right") -> np.ndarray:
    """n distinct poses (a dancer stepping sideways, one arm rising) in a 640 x 480 source image."""
    base = standing_pose(256) * np.array([1.5, 1.5, 1.0], np.float32) + np.array([100, 40, 0], np.float32)
    out = np.repeat(base[None], n, axis=0)
    out[:, :, 0] += np.linspace(0, 60, n)[:, None]
    out[:, JOINTS.index(f"{arm}_wrist"), 1] -= np.linspace(20, 80, n)
    return out


def raw_frames(frames, size: int) -> np.ndarray:
    return np.stack([np.frombuffer(f.data, np.uint8).reshape(size, size, 3) for f in frames])


# --- round trips ------------------------------------------------------------------------------

def test_batch_round_trip_equals_predictor_in_process(engine, predictor):
    kp = poses(11)
    with Client(engine.address, timeout=TIMEOUT) as c:
        frames = list(c.render("tiny", kp, source_size=(640, 480), mode="frame", fmt="raw", chunk=4,
                               frame_ids=range(100, 111)))
        pngs = list(c.render("tiny", kp[:3], source_size=(640, 480), fmt="png"))
        jpeg = next(c.render("tiny", kp[:1], source_size=(640, 480), fmt="jpeg", size=128))
    assert [f.id for f in frames] == list(range(100, 111))
    assert all((f.width, f.height, f.format) == (64, 64, "raw") for f in frames)
    expected = predictor.predict(kp, (640, 480), "frame")
    np.testing.assert_array_equal(raw_frames(frames, 64), expected)
    import cv2
    decoded = np.stack([cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for f in pngs])
    np.testing.assert_array_equal(decoded, expected[:3])           # PNG is lossless
    assert jpeg.data[:2] == b"\xff\xd8" and (jpeg.width, jpeg.height) == (128, 128)


def test_clip_mode_uses_one_set_of_statistics_across_chunks(engine, predictor):
    kp = poses(9)
    with Client(engine.address, timeout=TIMEOUT) as c:
        frames = list(c.render("tiny", kp, source_size=(640, 480), mode="clip", fmt="raw", chunk=2))
    from engine.wire.joints import body_stats
    expected = predictor.predict(kp, (640, 480), "clip", body_stats(kp))
    np.testing.assert_array_equal(raw_frames(frames, 64), expected)


def test_info_lists_the_model_and_its_joints(engine):
    with Client(engine.address, timeout=TIMEOUT) as c:
        info = c.info()
        assert c.ping() < 1.0
    assert info["protocol"] == protocol.VERSION and info["server"].startswith("pix2dance")
    (model,) = info["models"]
    assert model["name"] == "tiny" and model["size"] == 64 and model["joints"] == list(JOINTS)


def test_unknown_model_is_an_engine_error(engine):
    with Client(engine.address, timeout=TIMEOUT) as c:
        with pytest.raises(EngineError) as e:
            list(c.render("nobody", poses(1), source_size=(640, 480), joints=list(JOINTS)))
    assert e.value.code == "unknown_model"


def test_two_clients_at_once_each_get_their_own_frames_in_order(engine, predictor):
    inputs = {0: poses(12), 1: poses(12, arm="left")}
    results, errors = {}, []

    def work(k):
        try:
            with Client(engine.address, timeout=TIMEOUT) as c:
                results[k] = list(c.render("tiny", inputs[k], source_size=(640, 480), fmt="raw", chunk=3,
                                           frame_ids=[k * 1000 + i for i in range(12)]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for k in (0, 1):
        assert [f.id for f in results[k]] == [k * 1000 + i for i in range(12)]
        np.testing.assert_array_equal(raw_frames(results[k], 64), predictor.predict(inputs[k], (640, 480)))
    assert not np.array_equal(raw_frames(results[0], 64), raw_frames(results[1], 64))


def raw_render(rid: str, n: int, **changes) -> list[bytes]:
    kp = poses(n).astype("<f4")
    msg = protocol.RenderRequest(rid, "tiny", list(range(n)), list(JOINTS), kp.tobytes(), source_size=(640, 480),
                                 format="raw").encode()
    head = json.loads(msg[0])
    head.update(changes)
    return [json.dumps(head).encode(), msg[1]]


def test_ping_is_answered_while_a_render_runs(engine):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.address)
    try:
        s.send_multipart(raw_render("long", 256))
        time.sleep(0.05)
        # a heartbeat names the renders its client waits for; the server says which it does not hold
        s.send_multipart([protocol.header("quick", "ping", pending=["long", "ghost"])])
        replies = []
        while len(replies) < 2:
            assert s.poll(60_000), "no reply"
            replies.append(json.loads(s.recv_multipart()[0]))
        assert [r["id"] for r in replies] == ["quick", "long"]
        assert replies[0]["lost"] == ["ghost"] and replies[1]["kind"] == "render"
        s.send_multipart([protocol.header("after", "ping", pending=["long"])])
        assert s.poll(5000) and json.loads(s.recv_multipart()[0])["lost"] == ["long"]
    finally:
        s.close()


# --- hostile input ------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)
huge = st.sampled_from([10**12, -1, 0, 2**63, 1e300, -1e300, 65537, 4097, "9" * 30, None, [], {}])


@st.composite
def malformed(draw):
    """One hostile message: [header, binary...], and whether a reply's id should echo 'x'."""
    which = draw(st.integers(0, 7))
    if which == 0:                                   # not JSON at all
        return [draw(st.binary(max_size=64))] + draw(st.lists(st.binary(max_size=16), max_size=2))
    if which == 1:                                   # JSON, but not a valid header
        return [json.dumps(draw(json_values)).encode()]
    if which == 2:                                   # unknown kinds, wrong versions
        return [json.dumps({"v": draw(st.sampled_from([1, 0, 2, "1", None, 1.0, True])), "id": "x",
                            "kind": draw(st.text(max_size=10))}).encode()]
    if which == 3:                                   # ping/info with binary frames they must not have
        return [protocol.header("x", draw(st.sampled_from(["ping", "info"])))] + draw(
            st.lists(st.binary(max_size=8), min_size=1, max_size=3))
    n = draw(st.integers(1, 3))
    head = json.loads(raw_render("x", n)[0])
    binary = [poses(n).astype("<f4").tobytes()]
    if which == 4:                                   # a field replaced by something wrong or huge
        key = draw(st.sampled_from(["model", "frames", "joints", "source_size", "normalize", "output", "dtype",
                                    "shape"]))
        head[key] = draw(huge | json_values)
    elif which == 5:                                 # nested fields wrong or huge
        path = draw(st.sampled_from([("output", "size"), ("output", "format"), ("output", "quality"),
                                     ("normalize", "mode"), ("normalize", "stats")]))
        head[path[0]][path[1]] = draw(huge | json_values)
    elif which == 6:                                 # wrong dtypes and byte counts
        dtype = draw(st.sampled_from(["<f8", ">f4", "<i4", "<f2", "<u1"]))
        binary = [poses(n).astype(dtype).tobytes()]
        if draw(st.booleans()):
            head["dtype"] = dtype
    else:                                            # wrong frame counts
        binary = draw(st.lists(st.binary(max_size=32), max_size=3).filter(lambda b: len(b) != 1)) or []
    return [json.dumps(head).encode()] + binary


def test_over_a_thousand_malformed_messages_get_error_replies_and_the_server_keeps_serving(engine):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.address)
    seen = {"count": 0, "codes": set()}

    @settings(max_examples=1100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(malformed())
    def check(message):
        s.send_multipart(message)
        assert s.poll(5000), f"no reply to {message[0][:80]!r}"
        reply = s.recv_multipart()
        if message[0] == b"" and len(message) > 1:   # REQ-style delimiter: echoed back, by design
            assert reply[0] == b""
            reply = reply[1:]
        head = json.loads(reply[0])
        assert head["v"] == protocol.VERSION
        if head["kind"] == "error":
            assert isinstance(head["message"], str) and head["message"]
            assert len(reply) == 1
            seen["codes"].add(head["code"])
        else:                                       # hypothesis may build a valid request by chance
            assert head["kind"] in protocol.KINDS
        seen["count"] += 1

    try:
        check()
        # exactly one reply each: nothing else is waiting, and a real request still works
        s.send_multipart([protocol.header("last", "ping")])
        assert s.poll(5000)
        assert json.loads(s.recv_multipart()[0])["id"] == "last"
    finally:
        s.close()
    assert seen["count"] >= 1000
    assert {"bad_message", "bad_request", "unknown_kind", "version", "too_large"} <= seen["codes"]
    with Client(engine.address, timeout=TIMEOUT) as c:
        assert len(list(c.render("tiny", poses(2), source_size=(640, 480)))) == 2


def test_wrong_protocol_version_gets_a_clear_error(engine):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.address)
    try:
        s.send_multipart([json.dumps({"v": 1, "id": "old", "kind": "ping"}).encode()])   # a client from before v2
        assert s.poll(5000)
        head = json.loads(s.recv_multipart()[0])
    finally:
        s.close()
    assert head["kind"] == "error" and head["code"] == "version" and head["id"] == "old"
    assert head["v"] == 2 and "v1" in head["message"] and "v2" in head["message"]


def test_a_request_too_big_to_hold_in_memory_is_refused(engine):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.address)
    try:
        head = json.loads(raw_render("big", 64)[0])
        head["output"]["size"] = 4096                  # 64 frames x 4096^2 x 3 bytes = 3 GiB
        s.send_multipart([json.dumps(head).encode(), raw_render("big", 64)[1]])
        assert s.poll(5000)
        reply = json.loads(s.recv_multipart()[0])
    finally:
        s.close()
    assert (reply["kind"], reply["code"], reply["id"]) == ("error", "too_large", "big")


# --- failures and shutdown ------------------------------------------------------------------------

def test_server_killed_mid_stream_makes_the_client_raise_within_its_timeout(tiny_run):
    e = Engine(tiny_run)
    timeout = 3.0
    got = []
    try:
        with Client(e.address, timeout=timeout) as c:
            stream = c.render("tiny", poses(400), source_size=(640, 480), fmt="raw", chunk=1, in_flight=1)
            got.append(next(stream))
            e.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(EngineUnavailable, match="no reply"):
                for frame in stream:
                    got.append(frame)
            waited = time.monotonic() - killed
    finally:
        e.stop()
    assert len(got) < 400
    assert waited <= timeout + 1.0


def stop_with(e: Engine, sig: int) -> str:
    """Send a signal; the server must exit 0 promptly, having said where it listened and what it served."""
    e.proc.send_signal(sig)
    start = time.monotonic()
    rc, err = e.stop()
    assert rc == 0, err
    assert time.monotonic() - start < 10
    assert "listening on tcp://127.0.0.1:" in err and "model 'tiny'" in err and "stopped" in err
    assert "Traceback" not in err
    return err


def test_sigterm_shuts_down_cleanly(tiny_run):
    stop_with(Engine(tiny_run), signal.SIGTERM)       # Ctrl-C: see the CURVE test


def blocked_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess where importing torch fails: proves a check ran before torch."""
    code = ("import sys; sys.modules['torch'] = None; from engine.cli import main; "
            f"sys.exit(main({list(args)!r}))")
    return subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_non_loopback_bind_without_keys_exits_2_at_once(tiny_run):
    start = time.monotonic()
    r = blocked_cli("serve", str(tiny_run), "--bind", f"tcp://0.0.0.0:{free_port()}")
    assert r.returncode == 2, r.stderr
    assert "pix2dance keys --out" in r.stderr and "--curve-secret" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert time.monotonic() - start < 30
    for bind in ("tcp://*:5555", "tcp://10.1.2.3:5555", "tcp://eth0:5555"):
        with pytest.raises(UserError, match="pix2dance keys"):
            keys.check_security(bind, None, None)
    for bind in ("tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555", "ipc:///tmp/x"):
        assert keys.check_security(bind, None, None) is False


def test_no_run_and_no_demo_model_says_a_run_directory_is_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "DEMO", tmp_path / "assets" / "demo")
    with pytest.raises(UserError, match="run directory"):
        server.resolve_runs([])
    r = blocked_cli("serve", str(tmp_path / "missing"), "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert r.returncode != 0


def make_keys(out: Path) -> Path:
    r = subprocess.run([PYTHON, "-m", "engine.cli", "keys", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def test_keys_let_a_client_in_and_curve_refuses_a_client_without_an_allowed_key(tiny_run, tmp_path):
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "clients/client.key"):
        assert (keys / name).is_file()
    assert "secret-key" not in (keys / "clients" / "client.key").read_text()
    assert oct((keys / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    r = subprocess.run([PYTHON, "-m", "engine.cli", "keys", "--out", str(keys)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "never overwritten" in r.stderr

    allowed = (keys / "server.key", keys / "client.key_secret")
    e = Engine(tiny_run, extra=("--curve-secret", str(keys / "server.key_secret"),
                                "--curve-clients", str(keys / "clients")), curve=allowed)
    try:
        with Client(e.address, timeout=TIMEOUT, curve=allowed) as c:
            assert c.info()["models"][0]["name"] == "tiny"
            assert len(list(c.render("tiny", poses(2), source_size=(640, 480)))) == 2
        for curve in ((keys / "server.key", other / "client.key_secret"), None):
            start = time.monotonic()
            with Client(e.address, timeout=1.5, curve=curve) as c:
                with pytest.raises(EngineUnavailable):
                    c.ping()
            assert time.monotonic() - start < 3.0
    finally:
        err = stop_with(e, signal.SIGINT)              # Ctrl-C
    assert "CURVE" in err


# --- code scan ----------------------------------------------------------------------------------

def test_no_pickle_anywhere_and_weights_only_loading():
    files = [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") or part in ("build", "dist", "node_modules")
                                                       for part in p.relative_to(ROOT).parts)]
    assert len(files) > 10
    bad_import = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib)\b", re.M)
    pyobj = re.compile(r"\b(recv|send)_" + "pyobj")
    torch_load = re.compile(r"torch\.load\(")
    problems = []
    for path in files:
        text = path.read_text(errors="replace")
        if bad_import.search(text):
            problems.append(f"{path}: imports pickle")
        if pyobj.search(text):
            problems.append(f"{path}: pickles over ZeroMQ")
        for m in torch_load.finditer(text):
            call = text[m.end():m.end() + 300].split("\n\n")[0]
            if "weights_only=True" not in call:
                problems.append(f"{path}: torch.load without weights_only=True")
    assert not problems, problems


def test_client_and_protocol_import_without_numpy_torch_or_cv2(tmp_path):
    # as the package, and as a copy of engine/wire alone under another name (how the add-on ships it)
    shutil.copytree(ROOT / "engine" / "wire", tmp_path / "wire", ignore=shutil.ignore_patterns("__pycache__"))
    code = """
import sys
for m in ("numpy", "torch", "cv2", "scipy", "PIL"):
    sys.modules[m] = None
import engine.wire.client, engine.wire.protocol
c = engine.wire.client
data, n = c.pack_keypoints([[[float(j), 2.0 * j, 1.0] for j in range(23)]] * 3, 23)
assert n == 3 and len(data) == 3 * 23 * 12
sys.path.insert(0, sys.argv[1])
import wire.client, wire.protocol
assert wire.client.protocol is wire.protocol
print("ok", wire.client.Client.__name__, wire.protocol.VERSION)
"""
    r = subprocess.run([PYTHON, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_serve_refuses_openvino_on_cuda_in_one_line(tiny_run):
    r = subprocess.run([PYTHON, "-m", "engine.cli", "serve", str(tiny_run), "--bind", f"tcp://127.0.0.1:{free_port()}",
                        "--backend", "openvino", "--device", "cuda"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--backend openvino runs on the CPU" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("channels", [3, 4])
def test_a_preview_png_is_stored_and_exact(channels):
    """A lone frame's PNG (the live preview) is written unfiltered at zlib level 0: any decoder reads
    back the very pixels, straight alpha included, and it is about as large as the raw pixels."""
    import cv2
    from engine.serve.frames import stored_png
    image = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    data = stored_png(image)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    back = cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, image)
    assert image.nbytes < len(data) < image.nbytes * 1.05
