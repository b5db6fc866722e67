"""Client for pix2dance engines: stdlib + pyzmq only (the Blender add-on ships this file).

    from engine.wire.client import Client, EngineUnavailable
    with Client("tcp://127.0.0.1:5555", timeout=10.0) as c:
        c.ping()                                   # round trip in seconds
        model = c.info()["models"][0]              # {"name", "size", "joints", "stats", ...}
        for frame in c.render(model["name"], keypoints, source_size=(1920, 1080), mode="clip"):
            open(f"{frame.id:04d}.png", "wb").write(frame.data)

`keypoints` is N x J x 3 (x, y, visibility) in pixels of the source image, rows in the order of
`joints` (default: the model's joints from `info`): a float32 numpy array (sent as is, no copy
through Python lists), anything with .tolist(), nested sequences, or a buffer of little-endian
float32. The wire format is protocol.py.

Reliability (the zguide's "Lazy Pirate", one DEALER socket per engine): each request carries an
id; if an engine stays silent for timeout / (retries + 1) seconds, the socket is closed, reopened
and the outstanding requests are sent again, up to `retries` times, so EngineUnavailable comes
within about `timeout` seconds of an engine falling silent. A long render is not silence: while
renders are outstanding the client pings a quiet engine with the ids it waits for; a busy engine
answers at once (its inference runs in another thread) and names the ids it does not hold (lost
when an engine restarted behind the address), which are sent again. Sockets have LINGER 0:
close() never hangs.

Several engines: give a list of addresses. Render chunks go to the engine with the fewest chunks
in flight (at most `in_flight` each), which is ZeroMQ's load-balancing pattern done by the
client, with no broker; if one engine dies its chunks are sent to the others. Frames still come
back in order. A Client is not thread-safe: use one per thread.

Sequences (a temporal model, info's "temporal"): `render(..., sequence="take-3")` names the timeline;
each chunk says which frame of it comes first (its first frame id), so an engine that rendered the
chunk before continues from that chunk's last frame ("warm"), and one that did not warms up on
the chunk's context poses. The live preview sends one frame at a time under one id: a step
forward by one frame continues, any other move starts cold (the engine decides).
"""

from __future__ import annotations

import array
import itertools
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass

import zmq

from . import protocol

MAX_REPLY = 512 * 1024 * 1024           # bytes in one reply part (ZMQ_MAXMSGSIZE on the client)


class ClientError(Exception):
    """Base of every error this client raises."""


class EngineUnavailable(ClientError):
    """No reply from an engine within the timeout: it is not running, unreachable, or refused our key."""


class ProtocolMismatch(ClientError):
    """The engine speaks another version of the protocol."""


class EngineError(ClientError):
    """The engine answered with an error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class Frame:
    """One rendered frame: `data` is PNG or JPEG bytes, or raw RGB(A) (height x width x channels).

    placement: the (a, b, c, d, e, f) affine from the model's crop pixels to this frame's pixels.
    novelty: how far the pose is from the dancer's repertoire, in body heights (None: unknown).
    warm: its chunk continued the frame the engine kept for its sequence (a temporal model).
    """
    id: int
    width: int
    height: int
    format: str
    data: bytes
    channels: int = 3
    placement: tuple[float, ...] | None = None
    novelty: float | None = None
    warm: bool = False


@dataclass(eq=False)
class _Call:
    rid: str
    message: list
    chunk: int | None = None
    reply: tuple | None = None             # (header dict, binary frames)


class _Engine:
    """One engine address: its socket and the requests waiting on it."""

    def __init__(self, client: "Client", address: str):
        self.client, self.address = client, address
        self.socket = None
        self.outstanding: dict[str, _Call] = {}
        self.last_heard = time.monotonic()
        self.last_ping = 0.0
        self.failures = 0
        self.dead = False
        self.open()

    def open(self) -> None:
        s = self.client.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY)
        if self.client._keys is not None:
            server_public, public, secret = self.client._keys
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, public, secret
        s.connect(self.address)
        self.socket = s

    def reopen(self) -> None:
        """Lazy Pirate: a fresh socket (the old one may hold a dead connection), then resend everything."""
        self.socket.close(linger=0)
        self.open()
        for call in self.outstanding.values():
            self.post(call.message)
        self.last_heard = time.monotonic()

    def send(self, call: _Call) -> None:
        if not self.outstanding:
            self.last_heard = time.monotonic()    # silence counts from now, not from the last reply
        self.outstanding[call.rid] = call
        self.post(call.message)

    def post(self, message: list) -> None:
        """Send without ever blocking: with no connected peer (engine down, key refused) a DEALER
        would block; the message then stays outstanding and the next reopen sends it again."""
        try:
            self.socket.send_multipart(message, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass

    def revive(self) -> None:
        if self.dead:
            self.dead, self.failures = False, 0
            self.outstanding.clear()
            self.socket.close(linger=0)
            self.open()


class Client:
    """A connection to one or more pix2dance engines (see the module docstring).

    address: "tcp://host:port" or a list of them. timeout: seconds an engine may stay silent before
    EngineUnavailable. curve: None, or (server public key file, client secret key file) as written
    by `pix2dance keys`. retries: socket reopenings within the timeout (Lazy Pirate).
    """

    def __init__(self, address: str | list[str], timeout: float = 10.0, curve: tuple | None = None, retries: int = 2):
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses or not all(isinstance(a, str) and "://" in a for a in addresses):
            raise ValueError(f"address must be 'tcp://host:port' or a list of them, got {address!r}")
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries not negative")
        self.timeout, self.retries = float(timeout), int(retries)
        self.window = self.timeout / (self.retries + 1)          # silence before one reopen
        self._keys = _load_keys(curve) if curve is not None else None
        self.ctx = zmq.Context()
        self._engines = [_Engine(self, a) for a in addresses]
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._models: dict[str, dict] = {}
        self._closed = False

    # --- public surface -----------------------------------------------------------------------

    def ping(self) -> float:
        """Round-trip time in seconds (the slowest engine's, with several); EngineUnavailable if any is silent."""
        worst = 0.0
        for engine in self._live():
            start = time.perf_counter()
            self._call(engine, "ping")
            worst = max(worst, time.perf_counter() - start)
        return worst

    def info(self) -> dict:
        """The first engine's info: {"protocol", "server", "models": [{"name", "size", "joints", ...}], "limits"}."""
        head = None
        for engine in self._live():
            h, _ = self._call(engine, "info")
            head = head or h
            for m in h.get("models", []):
                self._models.setdefault(m.get("name"), m)
        return {k: v for k, v in head.items() if k not in ("v", "id", "kind")}

    def render(self, model: str, keypoints, *, source_size: tuple[int, int], mode: str = "frame",
               source_stats: dict | None = None, frame_ids=None, fmt: str = "png", chunk: int = 8,
               in_flight: int = 2, joints: list[str] | None = None, size: int | None = None, quality: int = 90,
               placement: str = "crop", alpha: bool = False, fps: float | None = None, sequence: str | None = None):
        """Frames of `model` for N poses, as a generator of Frame in order, `chunk` frames per request.

        mode "clip" without source_stats computes them here over all N poses (joints.body_stats),
        so every chunk is normalized alike. placement "crop" | "dancer" | "source" and alpha: see
        protocol.py; fps: the poses are a sequence at this rate (the engine smooths its framing).
        sequence: an id for the timeline these frames belong to (1-64 characters): each chunk
        continues it from its first frame id, so a temporal model carries its frames across chunks.
        Arguments are checked now; rendering starts when the generator is first advanced.
        """
        if placement not in protocol.PLACEMENTS:
            raise ValueError(f"placement must be one of {protocol.PLACEMENTS}, got {placement!r}")
        if mode not in protocol.MODES:
            raise ValueError(f"mode must be one of {protocol.MODES}, got {mode!r}")
        if fmt not in protocol.FORMATS:
            raise ValueError(f"fmt must be one of {protocol.FORMATS}, got {fmt!r}")
        if chunk < 1 or in_flight < 1:
            raise ValueError("chunk and in_flight must be at least 1")
        if sequence is not None and (not isinstance(sequence, str) or not 0 < len(sequence) <= protocol.MAX_SEQUENCE_ID):
            raise ValueError(f"sequence must be an id of 1-{protocol.MAX_SEQUENCE_ID} characters, got {sequence!r}")
        chunk = min(chunk, protocol.MAX_FRAMES)
        if joints is None:
            joints = self._model(model)["joints"]
        data, n = pack_keypoints(keypoints, len(joints))
        ids = list(range(n)) if frame_ids is None else [int(i) for i in frame_ids]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} frame ids for {n} poses")
        if mode == "clip" and source_stats is None and n:
            source_stats = clip_stats(data, n, joints)
        per = len(joints) * 12
        starts = list(range(0, n, chunk))

        # A chunk of a sequence carries its neighbours' poses, so the engine frames it as the whole.
        reach = math.ceil(protocol.CONTEXT_S * fps) if fps else 0

        def message(rid: str, index: int) -> list:
            a = starts[index]
            b = min(a + chunk, n)
            before, after = min(a, reach), min(n - b, reach)
            return protocol.RenderRequest(rid, model, ids[a:b], joints, data[(a - before) * per:(b + after) * per],
                                          source_size=source_size, mode=mode, stats=source_stats, format=fmt,
                                          size=size, quality=quality, placement=placement, alpha=alpha,
                                          fps=fps, context=(before, after),
                                          sequence=None if sequence is None else
                                          protocol.SequenceRef(sequence, ids[a])).encode()
        return self._stream(message, len(starts), in_flight)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for e in self._engines:
                e.socket.close(linger=0)
            self.ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- machinery ----------------------------------------------------------------------------

    def _rid(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _live(self) -> list[_Engine]:
        if self._closed:
            raise ClientError("this Client is closed")
        for e in self._engines:
            e.revive()
        return self._engines

    def _model(self, name: str) -> dict:
        if name not in self._models:
            self.info()
        try:
            return protocol.pick_model(self._models, name)
        except protocol.ProtocolError as e:
            raise EngineError(e.code, e.message) from None

    def _call(self, engine: _Engine, kind: str) -> tuple[dict, list]:
        """One request and its reply, with Lazy Pirate retries; EngineUnavailable when they run out."""
        rid = self._rid()
        call = _Call(rid, [protocol.header(rid, kind)])
        engine.send(call)
        try:
            while call.reply is None:
                self._pump([engine], self.window / 4)
                if engine.dead:
                    raise self._unavailable(engine)
        finally:
            engine.outstanding.pop(rid, None)
        return call.reply

    def _unavailable(self, engine: _Engine) -> EngineUnavailable:
        hint = (" (or it refused this client's key: is it in the engine's --curve-clients folder?)"
                if self._keys is not None else "")
        return EngineUnavailable(f"no reply from the pix2dance engine at {engine.address} within {self.timeout:g} s: "
                                 f"is `pix2dance serve` running there?{hint}")

    def _pump(self, engines: list[_Engine], wait: float) -> None:
        """Wait up to `wait` seconds for replies, file them, then ping or reopen silent engines."""
        busy = [e for e in engines if e.outstanding and not e.dead]
        if not busy:
            return
        poller = zmq.Poller()
        for e in busy:
            poller.register(e.socket, zmq.POLLIN)
        # wake in time for the earliest silence deadline, so EngineUnavailable is not late
        now = time.monotonic()
        wait = min([wait] + [e.last_heard + self.window - now for e in busy])
        ready = dict(poller.poll(max(1, int(wait * 1000) + 1)))
        now = time.monotonic()
        for e in busy:
            if e.socket in ready:
                self._drain(e)
            silent = now - e.last_heard
            if silent > self.window:
                e.failures += 1
                if e.failures > self.retries:
                    e.dead = True
                else:
                    e.reopen()
            elif silent > self.window / 3 and now - e.last_ping > self.window / 3:
                # A heartbeat while renders run: a live engine answers pings at once, even mid-render,
                # and names the renders it does not hold (lost in a restart) so they are sent again.
                renders = [rid for rid, c in e.outstanding.items() if c.chunk is not None]
                if renders:
                    e.post([protocol.header(f"{self._prefix}-hb", "ping",
                                            pending=renders[:protocol.MAX_PENDING_IDS])])
                    e.last_ping = now

    def _drain(self, engine: _Engine) -> None:
        while True:
            try:
                frames = engine.socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            engine.last_heard, engine.failures = time.monotonic(), 0
            try:
                head = protocol.decode_header(frames[0], reply=True)
            except protocol.ProtocolError as e:
                raise ClientError(f"malformed reply from {engine.address}: {e.message}") from None
            if head.get("v") != protocol.VERSION:
                raise ProtocolMismatch(f"the engine at {engine.address} speaks pix2dance protocol "
                                       f"v{head.get('v')}, this client v{protocol.VERSION}: update one of them")
            rid = head.get("id")
            if head.get("kind") == "error":
                if head.get("code") == "version":
                    raise ProtocolMismatch(f"{engine.address}: {head.get('message')}")
                if rid in engine.outstanding or rid is None:
                    raise EngineError(str(head.get("code")), str(head.get("message")))
                continue                         # an error for a request we gave up on
            if rid == f"{self._prefix}-hb":     # a heartbeat's answer: resend what the engine lost
                for lost in head.get("lost") or []:
                    call = engine.outstanding.get(lost) if isinstance(lost, str) else None
                    if call is not None:
                        engine.post(call.message)
                continue
            call = engine.outstanding.pop(rid, None) if isinstance(rid, str) else None
            if call is not None:                 # else a stale reply to a request sent twice
                call.reply = (head, frames[1:])

    def _stream(self, message, count: int, in_flight: int):
        """Send chunks (bounded in flight), yield their frames in order, hand a dead engine's chunks on."""
        todo: deque[int] = deque()            # chunks to send again (their engine died)
        sent, done = 0, {}
        calls: list[_Call] = []
        engines = self._live()
        try:
            for first in range(count):
                while first not in done:
                    live = [e for e in engines if not e.dead]
                    if not live:
                        raise self._unavailable(engines[0] if len(engines) == 1 else _Any(engines))
                    window = first + in_flight * len(live)
                    while todo or sent < min(count, window):
                        engine = min(live, key=lambda e: len(e.outstanding))
                        if len(engine.outstanding) >= in_flight:
                            break
                        index = todo.popleft() if todo else sent
                        if index == sent:
                            sent += 1
                        rid = self._rid()
                        call = _Call(rid, message(rid, index), chunk=index)
                        calls.append(call)
                        engine.send(call)
                    self._pump(live, self.window / 4)
                    for e in live:
                        if e.dead:                   # its chunks go to the engines left
                            todo.extend(c.chunk for c in e.outstanding.values() if c.chunk is not None)
                            e.outstanding.clear()
                    for call in [c for c in calls if c.reply is not None]:
                        calls.remove(call)
                        done[call.chunk] = call.reply
                head, images = done.pop(first)
                try:
                    reply = protocol.RenderReply.parse(head, images)
                except protocol.ProtocolError as e:
                    raise ClientError(e.message) from None
                places = reply.placements or [None] * len(images)
                novelty = reply.novelty or [None] * len(images)
                for fid, data, place, score in zip(reply.frames, images, places, novelty):
                    yield Frame(fid, reply.width, reply.height, reply.format, data, reply.channels,
                                None if place is None else tuple(place), score, reply.warm)
                for e in engines:                    # time spent in the consumer is not engine silence
                    e.last_heard = max(e.last_heard, time.monotonic())
        finally:
            for e in self._engines:                  # abandon what is left (a late reply is ignored)
                for call in calls:
                    e.outstanding.pop(call.rid, None)


class _Any:
    """Stands in for an engine in the EngineUnavailable message when several are all silent."""

    def __init__(self, engines: list[_Engine]):
        self.address = ", ".join(e.address for e in engines)


# --- helpers (pure Python) --------------------------------------------------------------------

def _load_keys(curve) -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) from the files `pix2dance keys` writes."""
    import zmq.auth.certs
    try:
        server_file, client_file = curve
        server_public, _ = zmq.auth.certs.load_certificate(os.fspath(server_file))
        public, secret = zmq.auth.certs.load_certificate(os.fspath(client_file))
    except (OSError, ValueError, TypeError) as e:
        raise ClientError(f"curve must be (server public key file, client secret key file): {e}") from None
    if secret is None:
        raise ClientError(f"{client_file} holds no secret key: pass the client's .key_secret file")
    return server_public, public, secret


def pack_keypoints(keypoints, joints: int) -> tuple[bytes, int]:
    """N x joints x 3 keypoints -> (little-endian float32 bytes, N), without numpy."""
    try:
        view = memoryview(keypoints)
    except TypeError:
        view = None
    if view is not None and view.format in ("f", "<f") and view.itemsize == 4:
        if view.ndim == 3 and tuple(view.shape[1:]) != (joints, 3):
            raise ValueError(f"keypoints must be N x {joints} x 3, got {tuple(view.shape)}")
        data = view.tobytes()                # C order, whatever the strides
        if sys.byteorder == "big" and view.format == "f":
            a = array.array("f", data)
            a.byteswap()
            data = a.tobytes()
    elif view is not None and view.format in ("B", "b", "c") and view.ndim == 1:
        data = view.tobytes()                # already little-endian float32 bytes
    else:
        rows = keypoints.tolist() if hasattr(keypoints, "tolist") else keypoints
        flat = array.array("f")
        for frame in rows:
            if len(frame) != joints:
                raise ValueError(f"each frame must have {joints} joints, got {len(frame)}")
            for joint in frame:
                if len(joint) != 3:
                    raise ValueError(f"each joint must be (x, y, visibility), got {joint!r}")
                flat.extend(float(v) for v in joint)
        if sys.byteorder == "big":
            flat.byteswap()
        data = flat.tobytes()
    per = joints * 12
    if len(data) % per:
        raise ValueError(f"keypoints are {len(data)} bytes, not a whole number of {joints} x 3 float32 frames")
    return data, len(data) // per


def clip_stats(data: bytes, n: int, joints: list[str]) -> dict | None:
    """Body statistics of a whole range (joints.body_stats), in canonical joint order."""
    from .joints import INDEX, NUM_JOINTS, body_stats
    values = array.array("f", data)
    if sys.byteorder == "big":
        values.byteswap()
    where = [(INDEX[name], j) for j, name in enumerate(joints) if name in INDEX]
    frames, width = [], len(joints) * 3
    for i in range(n):
        row = [(0.0, 0.0, 0.0)] * NUM_JOINTS
        base = i * width
        for c, j in where:
            row[c] = tuple(values[base + 3 * j: base + 3 * j + 3])
        frames.append(row)
    return body_stats(frames)
