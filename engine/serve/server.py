"""The engine server: a ZeroMQ ROUTER loop around one Predictor per served run.

    pix2dance serve runs/anna runs/ben --bind tcp://127.0.0.1:5555
    pix2dance keys --out keys && pix2dance serve RUN --bind tcp://0.0.0.0:5555 \\
        --curve-secret keys/server.key_secret --curve-clients keys/clients

The wire format is engine/wire/protocol.py (and docs/protocol.md); keys and the bind checks are
keys.py. Design, in three threads:

- The main thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe) and never runs the
  generator. It reads every message, checks it (protocol.decode_header / parse_render), answers
  `ping`, `info` and every error at once, and queues render jobs. So pings and info are answered
  within milliseconds while a long render runs, and a bad message can only ever cost one error reply.
- A worker thread runs inference. It frames each queued request (over its context poses too) and
  makes its Sequence (engine.model.sequence): the order its frames must be generated in. It then
  takes frames from the sequences of queued jobs of one model, oldest first, across requests, until
  a batch of `max_batch` is full (two clients sending 8-frame chunks share one 16-frame batch on a
  GPU), runs Predictor.generate once and feeds each job's outputs back to its sequence.
  A temporal model's request advances one frame per lane per batch (its lanes are contiguous
  ranges, so a batch still fills); any other model's frames go any number at a time, in order.
- An encoder thread turns the frames into PNG/JPEG/raw while the worker runs the next batch (a
  bounded queue between them), and hands each finished reply back over an inproc PAIR socket; the
  main thread's poller wakes on it and forwards the reply to the ROUTER. torch and OpenCV release
  the GIL, so the three threads run side by side.

A ping may list the render ids its client still waits for ("pending"); the reply names those
this server does not hold ("lost": none queued, none running, no reply on its way), so a client
can resend what an engine restart behind the same address lost. Render replies carry
"predict_s", the predictor's time on that request (framing, drawing, its share of the batches,
placing), what Predictor.render would spend in-process, so a client can see the protocol's own cost.

Sequences (sequences.py): a request of a temporal model that names a sequence continues from the
frame the engine kept for it when its first frame is the next one ("warm"); it waits for an earlier
queued or running request of that sequence that ends on the frame before its first (so one
engine renders a sequence's chunks in order), and starts cold if that one fails. On completion,
its last frame is kept for the next request.

Every request gets exactly one reply: an error, or the result. Queues are bounded (at most
`max_pending` frames waiting: beyond that a request gets a `busy` error) and so are messages
(ZMQ_MAXMSGSIZE, the receive high-water mark, protocol.MAX_* limits). Nothing is unpickled:
headers are JSON, keypoints raw float32. SIGTERM or Ctrl-C stop the loop, the worker and the
sockets cleanly. Binding anything but loopback requires CURVE keys with an allow-list of clients
(zmq.auth's ThreadAuthenticator); keys.check_security checks this before torch or any model is loaded.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from engine import __version__
from engine.errors import UserError
from engine.serve import keys
from engine.serve.frames import encode, frame_size
from engine.serve.sequences import Sequences, Ticket
from engine.wire import protocol

log = logging.getLogger("pix2dance.serve")

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
# One request's images (and drawn skeletons) are held in memory until its reply: bound them.
MAX_REQUEST_PIXELS = 64 * 1024 * 1024        # 1024 frames at 256 px, 64 at 1024 px


# --- the server ---------------------------------------------------------------------------------

@dataclass(eq=False)                        # identity, not field, equality: held in a deque
class Job:
    """One render request in the queue, until its last frame is generated (or it fails).

    Its frames come back from the worker by index (a temporal request's lanes finish out of order)
    and are held here until the reply, which is in request order."""
    identity: bytes
    envelope: list[bytes]
    request: protocol.RenderRequest
    predictor: object
    keypoints: object                       # (before + N + after, J, 3) float32 in canonical joint order
    ticket: Ticket | None = None            # its place in its sequence (a temporal model's, when named)
    framed: object = None                   # predictor.Framed over the context too: made by the worker
    sequence: object = None                 # engine.model.sequence.Sequence over frames [before, before + N)
    frames: list = field(default_factory=list)         # encoded images, by index
    placements: list = field(default_factory=list)
    novelty: list = field(default_factory=list)
    done: int = 0                           # frames encoded
    generated: int = 0                      # frames generated, warm-up frames included
    seconds: float = 0.0                    # predictor time spent on it (drawing + its share of batches)
    place_seconds: float = 0.0              # ... and placing its frames (the encoder's part: its own field)
    failed: bool = False                    # its error reply is on the way: take no more of its frames
    replied: bool = False

    def __post_init__(self):
        self.frames = [None] * self.count
        self.placements = [None] * self.count
        self.novelty = [None] * self.count

    @property
    def count(self) -> int:
        return len(self.request.frames)


class Server:
    """ROUTER loop (main thread), inference worker and encoder (a thread each); see the module docstring."""

    def __init__(self, predictors: list, bind: str, *, curve_keys: tuple[bytes, bytes] | None = None,
                 curve_clients: Path | None = None, max_pending: int = 4096, max_message: int = protocol.MAX_MESSAGE):
        self.models = {p.name: p for p in predictors}
        self.max_pending = max_pending
        self.max_message = max_message
        self.ctx = zmq.Context()
        self.auth = None
        if curve_keys is not None:
            from zmq.auth.thread import ThreadAuthenticator
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(curve_clients))
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, max_message)
        self.router.setsockopt(zmq.RCVHWM, 1000)
        self.router.setsockopt(zmq.SNDHWM, 1000)
        if curve_keys is not None:
            self.router.curve_publickey, self.router.curve_secretkey = curve_keys
            self.router.curve_server = True
        try:
            self.router.bind(bind)
        except zmq.ZMQError as e:
            self.close()
            raise UserError(f"cannot bind {bind}: {e}") from None
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        # Worker -> main thread: finished replies, [request id, identity, *envelope, header, *images].
        self.results = self.ctx.socket(zmq.PAIR)
        self.results.bind(f"inproc://results-{id(self)}")
        self._worker_out = self.ctx.socket(zmq.PAIR)
        self._worker_out.connect(f"inproc://results-{id(self)}")
        self.pending: deque[Job] = deque()
        self.queued = 0                      # frames accepted and not yet replied to
        self.held: Counter[str] = Counter()  # their ids (main thread only): until the reply is sent
        self.sequences = Sequences()         # each open sequence's last frame (under self.cond)
        self.cond = threading.Condition()
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="pix2dance-inference", daemon=True)
        # Worker -> encoder: ("frames", job, images) or ("error", job, reply). Bounded: if encoding
        # falls behind, inference waits. The encoder alone sends replies (on _worker_out).
        self.encode_queue: queue.Queue = queue.Queue(maxsize=4)
        self.encoder = threading.Thread(target=self._encode, name="pix2dance-encoder", daemon=True)

    # main thread ------------------------------------------------------------------------------

    def serve_forever(self, install_signals: bool = True) -> None:
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.worker.start()
        self.encoder.start()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        try:
            while not self.stopping:
                events = dict(poller.poll(200))
                if self.results in events:
                    self._forward_results()
                if self.router in events:
                    for _ in range(256):     # drain, but let results through between bursts
                        try:
                            msg = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self._handle(msg)
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self.stop()
            self.close()
            log.info("stopped")

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def close(self) -> None:
        threads = [t for t in (getattr(self, "worker", None), getattr(self, "encoder", None)) if t is not None]
        if threads and threads[0].is_alive():
            threads[0].join(timeout=10)
        if len(threads) > 1 and threads[1].is_alive():
            try:
                self.encode_queue.put(None, timeout=5)
            except queue.Full:
                pass
            threads[1].join(timeout=10)
        if self.auth is not None:
            self.auth.stop()
        if not any(t.is_alive() for t in threads):
            self.ctx.destroy(linger=0)

    def _forward_results(self) -> None:
        while True:
            try:
                rid, *reply = self.results.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            rid = rid.bytes.decode()
            self.held[rid] -= 1                          # from now on its reply is on the way
            if self.held[rid] <= 0:
                del self.held[rid]
            self.router.send_multipart(reply, copy=False)

    def _send(self, identity: bytes, envelope: list[bytes], frames: list[bytes]) -> None:
        try:
            self.router.send_multipart([identity, *envelope, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:                  # the peer is gone or not reading: its reply is dropped
            pass

    def _handle(self, msg: list[bytes]) -> None:
        identity, rest = msg[0], msg[1:]
        envelope: list[bytes] = []
        if len(rest) > 1 and rest[0] == b"":   # a REQ socket's delimiter: accept and echo it
            envelope, rest = [b""], rest[1:]
        head = None
        try:
            if not rest:
                raise protocol.ProtocolError("bad_message", "empty message")
            head = protocol.decode_header(rest[0])
            protocol.check_version(head)
            reply = self._answer(identity, envelope, head, rest[1:])
        except protocol.ProtocolError as e:
            reply = protocol.error(e.request_id, e.code, e.message)
        except Exception as e:               # a bug: answer, log, keep serving
            log.exception("internal error on a request")
            rid = head.get("id") if head is not None else None
            reply = protocol.error(rid, "internal", f"{type(e).__name__}: {str(e)[:200]}")
        if reply is not None:
            self._send(identity, envelope, reply)

    def _answer(self, identity: bytes, envelope: list[bytes], head: dict, binary: list[bytes]) -> list[bytes] | None:
        """The reply to ping/info, None for a queued render (the worker answers it later)."""
        rid, kind = head["id"], head["kind"]
        if kind not in protocol.KINDS:
            raise protocol.ProtocolError("unknown_kind", f"unknown kind {kind[:40]!r}; known: {list(protocol.KINDS)}", rid)
        if kind in ("ping", "info") and binary:
            raise protocol.ProtocolError("bad_request", f"{kind} takes no binary frames, got {len(binary)}", rid)
        if kind == "ping":
            # "pending": render ids the client still waits for; those this server does not hold were
            # lost (an engine restarted behind the same address) and the client sends them again.
            # Messages on one connection arrive in order, so anything sent before this ping is here.
            asked = head.get("pending")
            if asked is not None and (not isinstance(asked, list) or len(asked) > protocol.MAX_PENDING_IDS
                                      or not all(isinstance(i, str) for i in asked)):
                raise protocol.ProtocolError("bad_request", f'"pending" must be a list of at most '
                                             f'{protocol.MAX_PENDING_IDS} request ids', rid)
            lost = [i for i in asked or [] if i not in self.held]
            return [protocol.header(rid, "ping", time=time.time(), lost=lost)]
        if kind == "info":
            return [protocol.header(rid, "info", protocol=protocol.VERSION, server=f"pix2dance {__version__}",
                                    models=[p.describe() for p in self.models.values()],
                                    limits={"max_frames": protocol.MAX_FRAMES, "max_size": protocol.MAX_SIZE,
                                            "max_message": self.max_message, "max_pending": self.max_pending,
                                            "sequences": self.sequences.limit,
                                            "sequence_ttl_s": self.sequences.ttl_s})]
        request = protocol.parse_render(head, binary)
        predictor = protocol.pick_model(self.models, request.model, rid)
        if (request.alpha or request.placement != "crop") and not predictor.alpha:
            raise protocol.ProtocolError("no_alpha", f"model {predictor.name!r} was trained without a matte: it can "
                                         f"give only the bare crop, without alpha (retrain it)", rid)
        width, height = frame_size(request, predictor)
        if len(request.frames) * width * height > MAX_REQUEST_PIXELS:
            raise protocol.ProtocolError("too_large", f"{len(request.frames)} frames of {width} x {height} px in "
                                         f"one request; send fewer frames per request", rid)
        keypoints = self._canonical(request, predictor.joints)
        with self.cond:
            if self.queued + len(request.frames) > self.max_pending:
                raise protocol.ProtocolError("busy", f"{self.queued} frames are queued; try again shortly", rid)
            self.queued += len(request.frames)
            self.held[rid] += 1
            # Only a temporal model carries frames across requests; any other ignores "sequence".
            ticket = (self.sequences.begin(request.sequence, len(request.frames))
                      if request.sequence is not None and predictor.temporal else None)
            self.pending.append(Job(identity, envelope, request, predictor, keypoints, ticket))
            self.cond.notify()
        return None

    @staticmethod
    def _canonical(request: protocol.RenderRequest, joints: list[str]):
        """The request's keypoints as (N, J_model, 3) float32; joints it does not list are unseen."""
        import numpy as np
        index = {name: i for i, name in enumerate(joints)}
        unknown = [j for j in request.joints if j not in index]
        if unknown:
            raise protocol.ProtocolError("bad_request", f"unknown joints {unknown[:5]}; this model's joints are "
                                         "listed by info", request.id)
        n = sum(request.context) + len(request.frames)          # the rendered frames and their context
        raw = np.frombuffer(request.keypoints, dtype="<f4").reshape(n, len(request.joints), 3)
        kp = np.zeros((n, len(joints), 3), np.float32)
        kp[:, [index[j] for j in request.joints]] = raw
        return kp

    # worker thread ----------------------------------------------------------------------------

    def _unprepared(self) -> Job | None:
        """Under the lock: the oldest job without a sequence yet that need not wait for a predecessor."""
        for job in self.pending:
            if job.sequence is None and not job.failed and not (job.ticket and self.sequences.waits(job.ticket)):
                return job
        return None

    def _take_batch(self) -> list[tuple[Job, list[int]]]:
        """Under the lock: up to max_batch frames of the oldest ready job's model, across its queued jobs."""
        ready = [job for job in self.pending if job.sequence is not None and not job.failed]
        if not ready:
            return []
        predictor = ready[0].predictor
        room, batch = predictor.max_batch, []
        for job in ready:
            if room == 0:
                break
            if job.predictor is predictor:
                indices = job.sequence.take(room)
                if indices:
                    batch.append((job, indices))
                    room -= len(indices)
        return batch

    def _work(self) -> None:
        while True:
            with self.cond:
                # Jobs waiting for a predecessor are skipped; its end (or failure) notifies.
                while not self.stopping and (job := self._unprepared()) is None and not (batch := self._take_batch()):
                    self.cond.wait()
                if self.stopping:
                    return
                previous = (self.sequences.previous(job.request.sequence)
                            if job is not None and job.ticket is not None else None)
            if job is not None:              # frame it and make its sequence, then look again
                self._prepare(job, previous)
                continue
            try:
                self._run_batch(batch)
            except Exception as e:
                log.exception("inference failed")
                for job, _ in batch:
                    self._fail(job, protocol.error(job.request.id, "internal", f"inference failed: "
                                                   f"{type(e).__name__}: {str(e)[:200]}"))

    def _prepare(self, job: Job, previous) -> None:
        """Normalize and frame over the whole request, context included; its frames' Sequence."""
        r, predictor = job.request, job.predictor
        start_time = time.perf_counter()
        try:
            job.framed = predictor.frame(job.keypoints, r.source_size, r.mode, r.stats, placement=r.placement,
                                         fps=r.fps)
        except ValueError as e:
            self._fail(job, protocol.error(r.id, "bad_request", str(e)[:200]))
            return
        job.sequence = predictor.sequence(job.framed, r.context[0], job.count, previous=previous)
        job.seconds += time.perf_counter() - start_time

    def _run_batch(self, batch: list[tuple[Job, list[int]]]) -> None:
        import numpy as np
        predictor = batch[0][0].predictor
        start_time = time.perf_counter()
        images = predictor.generate(np.concatenate([job.sequence.inputs(indices) for job, indices in batch]))
        per_frame = (time.perf_counter() - start_time) / len(images)
        at = 0
        for job, indices in batch:
            outputs, at = images[at:at + len(indices)], at + len(indices)
            job.seconds += per_frame * len(indices)        # its share of the batch
            job.generated += len(indices)
            kept = job.sequence.feed(indices, outputs)
            if kept:
                # placing and encoding (PNG: milliseconds a frame) overlap the next batch's inference
                self.encode_queue.put(("frames", job, kept))
            if job.sequence.done:
                with self.cond:
                    if job in self.pending:
                        self.pending.remove(job)
                    if job.ticket is not None:     # its last frame is what the next request continues from
                        self.sequences.end(job.ticket, job.sequence.last)
                        self.cond.notify_all()

    def _fail(self, job: Job, reply: list[bytes]) -> None:
        """Worker side: take no more of the job's frames; the encoder sends its error reply."""
        with self.cond:
            self._drop(job)
        self.encode_queue.put(("error", job, reply))

    def _drop(self, job: Job) -> None:
        """Under the lock: a failed job leaves the queue, and a request that waits for it starts cold."""
        job.failed = True
        if job in self.pending:
            self.pending.remove(job)
        if job.ticket is not None:
            self.sequences.end(job.ticket)
            self.cond.notify_all()

    # encoder thread ---------------------------------------------------------------------------

    def _encode(self) -> None:
        while True:
            item = self.encode_queue.get()
            if item is None:
                return
            what, job, payload = item
            try:
                if what == "error":
                    self._finish(job, payload)
                elif not job.failed:
                    self._place_and_encode(job, payload)
                    if job.done == job.count:
                        self._finish(job, self._reply(job).encode(job.frames))
            except Exception as e:
                log.exception("encoding failed")
                with self.cond:
                    self._drop(job)
                self._finish(job, protocol.error(job.request.id, "internal", f"encoding failed: "
                                                 f"{type(e).__name__}: {str(e)[:200]}"))

    @staticmethod
    def _place_and_encode(job: Job, kept: list) -> None:
        """Kept frames of a job, [(k, crop)], k in [0, count): placed where their poses are, then encoded.
        Each run of consecutive k is placed in one call (a non-temporal batch is one run)."""
        import numpy as np

        from engine.model.sequence import consecutive_runs
        r, predictor, first = job.request, job.predictor, job.sequence.first
        for at, end in consecutive_runs([k for k, _ in kept]):
            start, images = kept[at][0], np.stack([crop for _, crop in kept[at:end]])
            start_time = time.perf_counter()
            placed = predictor.place(images, job.framed.part(first + start, first + start + len(images)),
                                     alpha=r.alpha, background=predictor.plate if r.placement == "dancer" else None)
            job.place_seconds += time.perf_counter() - start_time
            for n, image in enumerate(placed.frames):
                job.frames[start + n] = encode(image, r)
                if placed.placements is not None:
                    job.placements[start + n] = placed.placements[n].reshape(6).round(4).tolist()
                if placed.novelty is not None:
                    v = placed.novelty[n]
                    job.novelty[start + n] = None if not np.isfinite(v) else round(float(v), 4)
            job.done += len(images)

    @staticmethod
    def _reply(job: Job) -> protocol.RenderReply:
        r, framed = job.request, job.framed
        width, height = framed.canvas or (r.size or job.predictor.size,) * 2
        placements = job.placements if framed.crops is not None else None       # a run without mattes: none
        if placements and framed.canvas is None and r.size:       # the crop was resized: so is its placement
            placements = [[v * job.predictor.size / r.size if i in (0, 1, 3, 4) else v for i, v in enumerate(p)]
                          for p in placements]
        novelty = job.novelty if any(v is not None for v in job.novelty) else None
        return protocol.RenderReply(r.id, r.model, r.frames, r.format, width, height, job.seconds + job.place_seconds,
                                    channels=4 if r.alpha else 3, placements=placements, novelty=novelty,
                                    warm=job.sequence.warm, warmup=job.generated - job.count)

    def _finish(self, job: Job, reply: list[bytes]) -> None:
        """Encoder side: send a job's one reply (through the main thread), free its place in the queue."""
        with self.cond:
            if job.replied:
                return
            job.replied = True
            if job in self.pending:
                self.pending.remove(job)
            self.queued -= job.count
            job.frames = []                  # (the worker may still hold job.framed: left to the GC)
        self._worker_out.send_multipart([job.request.id.encode(), job.identity, *job.envelope, *reply], copy=False)


def resolve_runs(runs: list[Path] | None) -> list[Path]:
    """The runs to serve: those given, else the demo model; UserError if there is none."""
    if runs:
        return [Path(r) for r in runs]
    if (DEMO / "config.json").is_file():
        return [DEMO]
    raise UserError("no RUN_DIR given and the demo model is not built yet (assets/demo): pass a run directory "
                    "made by `pix2dance train DATASET --out RUN_DIR`")


def main(runs: list[Path] | None = None, bind: str = "tcp://127.0.0.1:5555", device: str = "auto",
         curve_secret: Path | None = None, curve_clients: Path | None = None, quiet: bool = False,
         max_batch: int | None = None, backend: str = "auto") -> None:
    """`pix2dance serve`: check the bind and keys, load the runs, serve until SIGTERM or Ctrl-C."""
    curve = keys.check_security(bind, curve_secret, curve_clients)      # before torch: fails at once
    if max_batch is not None and max_batch < 1:
        raise UserError(f"--max-batch must be at least 1, got {max_batch}")
    curve_keys = keys.load_server_keys(curve_secret) if curve else None
    run_dirs = resolve_runs(runs)
    from engine.model.predictor import Predictor                          # torch from here on
    predictors = [Predictor(r, device, backend=backend, max_batch=max_batch) for r in run_dirs]
    for p in predictors:
        p.warm_up()                  # the first preview must not wait for a compilation
    names = [p.name for p in predictors]
    if len(set(names)) != len(names):
        raise UserError(f"two runs have the same model name ({names}); set \"name\" in one's config.json")
    server = Server(predictors, bind, curve_keys=curve_keys, curve_clients=curve_clients)
    log.info("pix2dance engine listening on %s (%s)", server.endpoint,
             "CURVE, allow-list " + str(curve_clients) if curve else "loopback, no encryption")
    for p in predictors:
        log.info("  model %r: %d px, %s on %s, %s, batch %d", p.name, p.size, p.backend.name, p.device,
                 p.backend.precision, p.max_batch)
    server.serve_forever()
