"""The pix2dance wire protocol, version 2: message layout, limits and checks (stdlib only).

The Blender add-on ships this file beside client.py, so it imports nothing but the standard
library: no numpy, no torch, no cv2, not even zmq. docs/protocol.md is the same spec with examples.

Transport
    The engine binds a ZeroMQ ROUTER socket (default tcp://127.0.0.1:5555); clients connect DEALER
    sockets. Every message is multipart. There is no envelope delimiter: a DEALER sends
    [header, binary...] and the ROUTER sees [identity, header, binary...]. (A REQ socket's empty
    delimiter frame is accepted and echoed, so REQ works too.) Every request gets exactly one reply
    with the same "id", sent to the socket that asked. Messages are never pickled.

Frame 0: the header, a UTF-8 JSON object of at most MAX_HEADER bytes
    {"v": 2, "id": "<request id, 1-128 chars>", "kind": "<kind>", ...kind-specific fields}
    "v" is the protocol version and is in every header, requests and replies alike. A server
    answers a request of another version with an error of code "version" (carrying its own "v").

Frames 1..: binary data, each in its own frame (as jupyter_client does): never inside the JSON.

Kinds (a reply has the kind of its request, or "error")
    ping     request  {} or {"pending": [render ids]}      -> reply {"time": server unix time, "lost": [ids]}
                      "lost": those of the pending ids the server does not hold (neither queued nor
                      running): an engine restarted behind the address, so the client sends them again
    info     request  {}                                   -> reply {"protocol": 2, "server": "pix2dance X.Y",
                      "models": [{"name", "size", "joints": [...], "stats", "stats_size", "device",
                                  "backend": "torch" | "openvino", "precision": "fp32" | "bf16" | "fp16",
                                  "alpha": bool (the model draws a matte), "stage": null | {"width", "height"},
                                  "novelty_threshold": null | number,
                                  "temporal": bool (each frame is conditioned on the one before: see "sequence"),
                                  "warmup": int (frames a cold temporal range generates and drops first)}],
                      "limits": {"max_frames", "max_size", "max_message", "max_pending",
                                 "sequences" (open sequences the engine keeps), "sequence_ttl_s"}}
    render   request  {"model": name,
                       "frames": [int, ...]            N frame ids (e.g. Blender frame numbers), echoed back
                       "joints": [name, ...]           J joint names, the order of the keypoints' rows;
                                                       canonical joints not listed count as unseen
                       "source_size": [w, h]           pixels of the image the keypoints are in
                       "normalize": {"mode": "frame" | "clip" | "none", "stats": null | {...}}
                                                       stats: the source's body statistics
                                                       (joints.body_stats: height, ankle_y, center_x,
                                                       ankle_far, ankle_near, height_far, height_near)
                       "output": {"format": "png" | "jpeg" | "raw", "size": null | int, "quality": 1-100,
                                  "placement": "crop" | "dancer" | "source", "alpha": bool}
                                                       placement (v2): where the dancer goes.
                                                       crop: the person-centred square (side "size", or
                                                         the model's); dancer: normalized into her own
                                                         video frame, over her plate (model "stage" size);
                                                       source: where the pose is in the source image, at
                                                         its size (source_size): what Blender asks for.
                                                       alpha: RGBA frames (straight alpha, the dancer's
                                                         matte; PNG or raw only); false: composited RGB
                       "fps": null | number            the sequence's frame rate: the crop is smoothed over
                                                       the request's frames; null: each pose framed alone
                       "context": [before, after]      (default [0, 0]) poses of the sequence just before and
                                                       after these frames, sent only to frame them: with
                                                       CONTEXT_S seconds of each, a chunk is framed exactly as
                                                       the whole sequence would be
                       "sequence": null | {"id": str, "frame": int}
                                                       (optional) these frames continue sequence "id" (1-64
                                                       chars, the client's name for one timeline), and the
                                                       first of them is its frame number "frame" (the others
                                                       follow: frame + 1, ...); see "Sequences" below
                       "dtype": "<f4", "shape": [before + N + after, J, 3]}
                      frame 1: keypoints, little-endian float32, (before + N + after) x J x 3 (x, y,
                      visibility), row-major
                      -> reply {"model", "frames": [ids], "format", "width", "height", "channels": 3 | 4,
                                "placements": [[a, b, c, d, e, f], ...] one per frame: the affine from crop
                                  pixels to output pixels, x' = a x + b y + c, y' = d x + e y + f,
                                "novelty": [number | null, ...] one per frame: how far the pose is from the
                                  dancer's training poses, in body heights (info's novelty_threshold: above
                                  it, the frame is a guess); null where the model cannot say,
                                "predict_s": seconds the predictor spent on it (normalize, draw, generate,
                                  place: what it costs in-process),
                                "warm": bool: its first frame was conditioned on the frame the engine kept
                                  for its sequence (a temporal model only),
                                "warmup": int: frames generated and dropped to settle its ranges}
                         frames 1..N: one image each, in request order: PNG or JPEG bytes, or raw RGB(A)
                         (height x width x channels uint8, row-major)
    error    reply    {"code": <code>, "message": "<one line>"}   and no binary frames

Sequences (a temporal model: info's "temporal")
    A temporal model draws each frame from its pose and its own previous frame, so the frames of a
    request are generated in order. The engine splits a request into a few contiguous ranges
    (lanes) so a batch still fills; each range but a continued one first generates and drops
    "warmup" frames before its first (from the request's "context" poses where there are any),
    cold (from a blank previous frame) before them.
    What the engine keeps: for each sequence "id", the last frame it generated (RGBA, the model's
    size: S x S x 4 bytes, 256 KiB at 256 px, plus its crop) and that frame's number. A request
    whose "sequence" frame is that number + 1 continues from it ("warm": no warmup for its first
    range); any other number starts cold. A request whose first frame follows the last frame of an
    earlier request of the same sequence still queued or running waits for it (one engine renders a
    sequence's chunks in order); if that one fails, it starts cold. The engine keeps at most
    info's "sequences" of them, the least recently used dropped first, each for "sequence_ttl_s"
    seconds after its last use: a client that vanishes leaves nothing behind.
    Live preview: one "id" for the session, "frame" the current frame: a step forward by one frame
    continues, any other move starts cold. A model that is not temporal ignores "sequence".

Error codes
    bad_message    frame 0 is not a JSON object of the right shape (the id is echoed when readable)
    version        the request's "v" is not this server's; the reply carries the server's "v"
    unknown_kind   a kind this server does not know
    bad_request    a field is missing, of the wrong type or out of range, or the binary frames do
                   not match the header (count, length, dtype, shape)
    unknown_model  no such model on this server
    no_alpha       alpha or a placement was asked of a model trained before mattes (v1 runs): it
                   can only give the bare crop, without alpha
    too_large      more frames or pixels than the limits in "info" allow
    busy           the server's queue is full: try again later
    internal       the server failed; it keeps serving

Limits: a server may lower them (see "info"). A message part larger than max_message is dropped
by ZeroMQ (ZMQ_MAXMSGSIZE) and its sender disconnected: that message gets no reply.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass

VERSION = 2
KINDS = ("ping", "info", "render")
FORMATS = ("png", "jpeg", "raw")
MODES = ("frame", "clip", "none")
PLACEMENTS = ("crop", "dancer", "source")
CONTEXT_S = 1.5                  # seconds of neighbouring poses that can change a frame's crop (see "context")
DTYPE = "<f4"
STATS_KEYS = ("height", "ankle_y", "center_x", "ankle_far", "ankle_near", "height_far", "height_near")

MAX_HEADER = 256 * 1024          # bytes of JSON in frame 0
MAX_FRAMES = 1024                # frames in one render request
MAX_JOINTS = 128                 # keypoint rows per frame
MAX_SIZE = 4096                  # output image side in pixels
MAX_SOURCE = 1 << 16             # source image side in pixels
MAX_MESSAGE = 64 * 1024 * 1024   # bytes in one message part (ZMQ_MAXMSGSIZE)
MAX_ID = 128                     # characters in a request id
MAX_PENDING_IDS = 1024           # ids in a ping's "pending"
MAX_SEQUENCE_ID = 64             # characters in a sequence id
MAX_FRAME_ID = 1 << 53           # frame ids and sequence frame numbers: integers exact in a double


class ProtocolError(Exception):
    """A message that breaks this spec: becomes an error reply with `code`."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(message)
        self.code, self.message, self.request_id = code, message, request_id


@dataclass(frozen=True)
class SequenceRef:
    """A render request's place in a sequence: it continues sequence `id` at frame number `frame`."""
    id: str
    frame: int


@dataclass
class RenderRequest:
    """A render request: build one and `encode()` it (client), or `parse_render` one (server).

    keypoints: the raw little-endian float32 bytes, N x J x 3 (N = len(frames), J = len(joints)).
    """
    id: str
    model: str
    frames: list[int]
    joints: list[str]
    keypoints: bytes
    source_size: tuple[int, int]
    mode: str = "frame"
    stats: dict | None = None
    format: str = "png"
    size: int | None = None
    quality: int = 90
    placement: str = "crop"
    alpha: bool = False
    fps: float | None = None
    context: tuple[int, int] = (0, 0)       # poses before and after `frames` in `keypoints`, for framing only
    sequence: SequenceRef | None = None     # the sequence these frames continue (a temporal model)

    def encode(self) -> list[bytes]:
        """The message's frames: the header, then the keypoints."""
        extra = {} if self.sequence is None else {"sequence": {"id": self.sequence.id, "frame": self.sequence.frame}}
        return [header(self.id, "render", model=self.model, frames=list(self.frames), joints=list(self.joints),
                       source_size=[int(self.source_size[0]), int(self.source_size[1])],
                       normalize={"mode": self.mode, "stats": self.stats},
                       output={"format": self.format, "size": self.size, "quality": self.quality,
                               "placement": self.placement, "alpha": self.alpha},
                       fps=self.fps, context=list(self.context), **extra, dtype=DTYPE,
                       shape=[sum(self.context) + len(self.frames), len(self.joints), 3]),
                bytes(self.keypoints)]


@dataclass
class RenderReply:
    """A render reply's header fields; the images travel in frames 1..N, one per frame id."""
    id: str
    model: str
    frames: list[int]
    format: str
    width: int
    height: int
    predict_s: float
    channels: int = 3
    placements: list[list[float]] | None = None     # per frame: crop pixels -> output pixels, (a, b, c, d, e, f)
    novelty: list[float | None] | None = None       # per frame: body heights from the dancer's repertoire
    warm: bool = False                              # its first frame continued the engine's stored frame
    warmup: int = 0                                 # frames generated and dropped to settle its ranges

    def encode(self, images: list[bytes]) -> list[bytes]:
        return [header(self.id, "render", model=self.model, frames=list(self.frames), format=self.format,
                       width=self.width, height=self.height, channels=self.channels,
                       placements=self.placements, novelty=self.novelty, predict_s=round(self.predict_s, 6),
                       warm=self.warm, warmup=self.warmup),
                *images]

    @classmethod
    def parse(cls, head: dict, images: list) -> "RenderReply":
        """From a decoded reply header; ProtocolError("bad_message") if it does not match its images."""
        frames = head.get("frames")
        if not isinstance(frames, list) or len(frames) != len(images):
            raise ProtocolError("bad_message", f"malformed render reply: {len(images)} images for frames "
                                f"{str(frames)[:60]}", head.get("id"))
        placements, novelty = head.get("placements"), head.get("novelty")
        for name, values in (("placements", placements), ("novelty", novelty)):
            if values is not None and (not isinstance(values, list) or len(values) != len(images)):
                raise ProtocolError("bad_message", f"malformed render reply: {name} do not match the frames",
                                    head.get("id"))
        try:
            if placements is not None:
                placements = [[float(v) for v in p][:6] for p in placements]
            if novelty is not None:
                novelty = [None if v is None else float(v) for v in novelty]
            return cls(head["id"], str(head.get("model")), frames, str(head.get("format")), int(head.get("width", 0)),
                       int(head.get("height", 0)), float(head.get("predict_s", 0.0)), int(head.get("channels", 3)),
                       placements, novelty, head.get("warm") is True, int(head.get("warmup", 0)))
        except (TypeError, ValueError):
            raise ProtocolError("bad_message", "malformed render reply: width, height, predict_s or warmup is not "
                                "a number", head.get("id")) from None


def pick_model(models: dict, wanted: str | None, request_id: str | None = None):
    """models[wanted] from {name: model} (the first when `wanted` is empty); the one model-by-name rule.

    ProtocolError("unknown_model") when there is no such model: the server's reply, the client's
    EngineError and the add-on's message all say "has no model 'X' (it serves 'a', 'b')".
    """
    if not models:
        raise ProtocolError("unknown_model", "the engine serves no model", request_id)
    if not wanted:
        return next(iter(models.values()))
    if wanted not in models:
        names = ", ".join(repr(n) for n in models)
        raise ProtocolError("unknown_model", f"the engine has no model {wanted[:60]!r} (it serves {names})",
                            request_id)
    return models[wanted]


# --- addresses --------------------------------------------------------------------------------

def is_loopback(address: str) -> bool:
    """True when `address` stays on this machine, for a bind and a connect alike.

    Loopback: tcp:// to 127.x.x.x, ::1 (tcp://[::1]:5555), "localhost" or the interface "lo", and
    the local ipc:// and inproc:// transports. Not loopback: every interface (tcp://*:5555,
    tcp://0.0.0.0:5555), any other address, interface or host name. The engine needs CURVE keys to
    bind anything else; the add-on needs Blender's online access to reach anything else.
    ValueError when `address` is not scheme://endpoint, or its scheme is not tcp, ipc or inproc.
    """
    scheme, sep, rest = address.partition("://")
    if not sep or not rest:
        raise ValueError(f"{address!r} is not of the form tcp://HOST:PORT")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        raise ValueError(f"{address!r}: only tcp://, ipc:// and inproc:// addresses are used")
    if rest.startswith("["):                      # [IPv6]:port
        host = rest[1:rest.find("]")] if "]" in rest else rest[1:]
    else:
        host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.lower()
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                              # "*", a host or interface name: reachable from outside


# --- encoding ---------------------------------------------------------------------------------

def header(request_id: str, kind: str, **fields) -> bytes:
    """Frame 0 of any message: compact UTF-8 JSON with "v", "id" and "kind" first."""
    return json.dumps({"v": VERSION, "id": request_id, "kind": kind, **fields},
                      separators=(",", ":"), allow_nan=False).encode()


def error(request_id: str | None, code: str, message: str) -> list[bytes]:
    """An error reply (one frame)."""
    return [header(request_id, "error", code=code, message=message)]


# --- decoding and checks ----------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def decode_header(frame: bytes, reply: bool = False) -> dict:
    """Frame 0 -> dict with a str "id" and "kind"; ProtocolError("bad_message") otherwise.

    reply: the message is a reply, where an error may carry "id": null (its request's was unreadable).
    """
    if len(frame) > MAX_HEADER:
        raise ProtocolError("bad_message", f"header is {len(frame)} bytes, more than {MAX_HEADER}")
    try:
        # parse_constant: NaN and Infinity are not JSON; they must not reach the engine.
        head = json.loads(bytes(frame).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError("bad_message", f"header is not UTF-8 JSON: {str(e)[:80]}") from None
    if not isinstance(head, dict):
        raise ProtocolError("bad_message", "header must be a JSON object")
    rid = head.get("id")
    if reply and rid is None and head.get("kind") == "error":
        return head
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID:
        raise ProtocolError("bad_message", f'header needs "id", a string of 1-{MAX_ID} characters')
    if not isinstance(head.get("kind"), str):
        raise ProtocolError("bad_message", 'header needs "kind", a string', rid)
    return head


def check_version(head: dict) -> None:
    v = head.get("v")
    if v != VERSION or isinstance(v, bool):
        raise ProtocolError("version", f"this peer speaks pix2dance protocol v{VERSION}, the message says v{v!r}",
                            head.get("id"))


def _bad(rid: str, message: str):
    raise ProtocolError("bad_request", message, rid)


def _int(value, name: str, lo: int, hi: int, rid: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        _bad(rid, f"{name} must be an integer in [{lo}, {hi}], got {str(value)[:40]}")
    return value


def _stats(value, rid: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _bad(rid, "normalize.stats must be an object or null")
    out = {}
    for key in STATS_KEYS:
        v = value.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or abs(v) > 1e7:
            _bad(rid, f"normalize.stats.{key} must be a finite number")
        out[key] = float(v)
    if min(out["height"], out["height_far"], out["height_near"]) <= 0:
        _bad(rid, "normalize.stats heights must be positive")
    out["frames"] = value.get("frames") if isinstance(value.get("frames"), int) else 1
    return out


def parse_render(head: dict, binary: list[bytes], *, max_frames: int = MAX_FRAMES,
                 max_size: int = MAX_SIZE) -> RenderRequest:
    """Check a render request's header and binary frames; ProtocolError with the reason if not valid."""
    rid = head["id"]
    model = head.get("model")
    if not isinstance(model, str) or not model:
        _bad(rid, '"model" must be a non-empty string')
    frames = head.get("frames")
    if not isinstance(frames, list) or not frames:
        _bad(rid, '"frames" must be a non-empty list of frame ids')
    if len(frames) > max_frames:
        raise ProtocolError("too_large", f"{len(frames)} frames in one request; at most {max_frames}", rid)
    for f in frames:
        _int(f, "each frame id", -MAX_FRAME_ID, MAX_FRAME_ID, rid)
    joints = head.get("joints")
    if (not isinstance(joints, list) or not 0 < len(joints) <= MAX_JOINTS
            or not all(isinstance(j, str) and 0 < len(j) <= 64 for j in joints)):
        _bad(rid, f'"joints" must be a list of 1-{MAX_JOINTS} joint names')
    if len(set(joints)) != len(joints):
        _bad(rid, '"joints" lists a joint twice')
    size = head.get("source_size")
    if not isinstance(size, list) or len(size) != 2:
        _bad(rid, '"source_size" must be [width, height]')
    source_size = (_int(size[0], "source width", 1, MAX_SOURCE, rid), _int(size[1], "source height", 1, MAX_SOURCE, rid))
    norm = head.get("normalize", {"mode": "frame"})
    if not isinstance(norm, dict) or norm.get("mode") not in MODES:
        _bad(rid, f'"normalize" must be {{"mode": one of {list(MODES)}, "stats": ...}}')
    stats = _stats(norm.get("stats"), rid)
    out = head.get("output", {})
    if not isinstance(out, dict) or out.get("format", "png") not in FORMATS:
        _bad(rid, f'"output" must be {{"format": one of {list(FORMATS)}, "size": ..., "quality": ...}}')
    out_size = out.get("size")
    if out_size is not None:
        if isinstance(out_size, int) and not isinstance(out_size, bool) and out_size > max_size:
            raise ProtocolError("too_large", f"output size {out_size} is over {max_size}", rid)
        _int(out_size, "output.size", 16, max_size, rid)
    quality = _int(out.get("quality", 90), "output.quality", 1, 100, rid)
    placement, alpha = out.get("placement", "crop"), out.get("alpha", False)
    if placement not in PLACEMENTS:
        _bad(rid, f'"output.placement" must be one of {list(PLACEMENTS)}, got {str(placement)[:20]!r}')
    if not isinstance(alpha, bool):
        _bad(rid, '"output.alpha" must be true or false')
    if alpha and out.get("format", "png") == "jpeg":
        _bad(rid, "JPEG has no alpha: ask for png or raw frames")
    fps = head.get("fps")
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000):
        _bad(rid, '"fps" must be null or a number in (0, 1000]')
    context = head.get("context", [0, 0])
    if not isinstance(context, list) or len(context) != 2:
        _bad(rid, '"context" must be [before, after]')
    context = (_int(context[0], "context before", 0, max_frames, rid), _int(context[1], "context after", 0, max_frames, rid))
    sequence = _sequence(head.get("sequence"), rid)
    if head.get("dtype", DTYPE) != DTYPE:
        _bad(rid, f'keypoints must be little-endian float32 ("dtype": "{DTYPE}"), got {str(head.get("dtype"))[:20]!r}')
    shape = [sum(context) + len(frames), len(joints), 3]
    if head.get("shape", shape) != shape:
        _bad(rid, f'"shape" {str(head.get("shape"))[:40]} does not match frames and joints {shape}')
    if len(binary) != 1:
        _bad(rid, f"a render request has exactly one binary frame (the keypoints), got {len(binary)}")
    expected = shape[0] * len(joints) * 3 * 4
    if len(binary[0]) != expected:
        _bad(rid, f"keypoints frame is {len(binary[0])} bytes; N x J x 3 float32 = {expected}")
    return RenderRequest(rid, model, list(frames), list(joints), bytes(binary[0]), source_size, mode=norm["mode"],
                         stats=stats, format=out.get("format", "png"), size=out_size, quality=quality,
                         placement=placement, alpha=alpha, fps=None if fps is None else float(fps), context=context,
                         sequence=sequence)


def _sequence(value, rid: str) -> SequenceRef | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"id", "frame"}:
        _bad(rid, '"sequence" must be null or {"id": string, "frame": integer}')
    sid = value["id"]
    if not isinstance(sid, str) or not 0 < len(sid) <= MAX_SEQUENCE_ID:
        _bad(rid, f'"sequence.id" must be a string of 1-{MAX_SEQUENCE_ID} characters')
    return SequenceRef(sid, _int(value["frame"], "sequence.frame", -MAX_FRAME_ID, MAX_FRAME_ID, rid))
