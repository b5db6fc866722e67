"""The job machinery: background work that never blocks Blender, and the timer that drives it.

    job = SomeJob(...)             # a Job subclass: connection.ConnectionJob, preview.PreviewJob,
                                   # render_job.RenderJob
    job.step()                     # main thread, often (a modal operator's timer, or jobs.tick)
    job.cancel()                   # from anywhere: Esc, a script, a test
    job.wait()                     # background mode: step until finished
    job.finished, job.error, job.cancelled, job.status, job.warning

A job's main-thread side is a generator (`main`): each `step` runs it up to its next `yield`, so
Blender-side work (projecting poses, rendering the rig, making strips) comes in slices short
enough for a responsive UI. Engine I/O and file writing happen in the worker thread (`work`),
which hands messages to the main thread through a queue; `step` drains the queue and calls
`on_<kind>(*args)`. Blender data is only touched in `main` and the `on_*` handlers.

`bpy.app.timers` drive work that no operator steps (`submit`: the live preview's worker, or a
job): `tick` is the timer callback. Background mode (bpy as a module, `blender -b`) never fires
timers: scripts and tests call `job.wait()` or `tick()` themselves.

Every engine failure ends a job with a one-line `error` (`describe`; shown by the operator with
self.report), never a traceback in the UI. Quitting Blender never waits on a job: worker threads
are daemons, sockets have LINGER 0 and every engine call has a timeout.

This module knows no particular job: the connection test, the preview and the render each live in
their own module and import this one, never the other way round.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import weakref

import bpy
import zmq

from ._engine import client as engine_client

log = logging.getLogger(__name__)

INTERVAL = 0.05         # seconds between timer ticks while work is in flight


class AddonError(Exception):
    """A problem the user can fix, in one line (becomes an operator's error report)."""


def describe(e: BaseException) -> str | None:
    """One line for an expected failure of engine work, or None for anything else (a bug)."""
    if isinstance(e, engine_client.ProtocolMismatch):
        return f"Engine speaks another protocol version: {e}"
    if isinstance(e, engine_client.EngineUnavailable):
        return f"Engine unreachable or timed out: {e}"
    if isinstance(e, engine_client.EngineError):
        return f"Engine error ({e.code}): {e.message}"
    if isinstance(e, engine_client.ClientError):
        return f"Engine error: {e}"
    if isinstance(e, AddonError):
        return str(e)
    if isinstance(e, zmq.ZMQError):   # e.g. an address ZeroMQ cannot connect to
        return f"Cannot use engine address: {e}"
    return None


# --- jobs that move the scene's frame ------------------------------------------------------------

_quiet = {"depth": 0}


@contextlib.contextmanager
def no_live_preview():
    """While a job moves the scene through frames itself, the frame-change handler sends nothing."""
    _quiet["depth"] += 1
    try:
        yield
    finally:
        _quiet["depth"] -= 1


def live_preview_allowed() -> bool:
    return _quiet["depth"] == 0


# --- the job machinery -------------------------------------------------------------------------

_every_job: "weakref.WeakSet[Job]" = weakref.WeakSet()   # to abandon them all on unregister


class Job:
    """Main-thread generator (`main`) + optional worker thread (`work`), stepped by its owner."""
    name = "job"

    def __init__(self):
        _every_job.add(self)
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker_done = False
        self._main = None
        self.finished = False
        self.error: str | None = None
        self.status = ""
        self.warning = ""                     # what it could not do as asked (one line; reported as WARNING)
        self.done, self.total = 0, 0          # progress in whatever unit the job counts

    # --- either thread
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop: the worker stops between frames, the main side at its next step."""
        self._cancel.set()

    def abandon(self) -> None:
        """Cancel and end the main side now (its owner is going away: operator cancelled, add-on
        unregistered); the worker, a daemon, stops on its own at its next check or timeout."""
        self.cancel()
        if not self.finished:
            self._finish()

    # --- worker side
    def work(self) -> None:
        """Runs in the worker thread; `post` messages to the main thread. No Blender data here."""

    def post(self, kind: str, *args) -> None:
        self._queue.put((kind, args))

    def _run_worker(self) -> None:
        try:
            self.work()
        except Exception as e:
            message = describe(e)
            if message is None:  # a bug: keep the traceback in the log, give the user one line
                log.exception("pix2dance: %s worker failed", self.name)
                message = f"Internal error in the {self.name} worker: {e!r}"
            self.post("failed", message)
        finally:
            self.post("_worker_end")

    # --- main-thread side
    def main(self):
        """Generator run on the main thread by `step`; by default just starts and awaits the worker."""
        self.start_worker()
        yield from self.await_worker()

    def start_worker(self) -> None:
        self._thread = threading.Thread(target=self._run_worker, name=f"pix2dance-{self.name}", daemon=True)
        self._thread.start()

    def await_worker(self):
        """Yield until the worker has ended, handling its messages in between."""
        while not self._worker_done:
            yield

    def on_failed(self, message: str) -> None:
        self.error = self.error or message

    def on__worker_end(self) -> None:
        self._worker_done = True

    def drain(self, timeout: float = 0.0) -> None:
        """Handle the worker's queued messages (waiting up to `timeout` for the first one)."""
        try:
            kind, args = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        while True:
            getattr(self, f"on_{kind}")(*args)
            try:
                kind, args = self._queue.get_nowait()
            except queue.Empty:
                return

    def step(self, timeout: float = 0.0) -> bool:
        """One slice of main-thread work; True while the job is not finished. Never raises."""
        if self.finished:
            return False
        if self._main is None:
            self._main = self.main()
        waiting = self._thread is not None and not self._worker_done
        try:
            self.drain(timeout if waiting else 0.0)
            if self.error:  # the worker failed (it has already left its work): end here
                raise StopIteration
            next(self._main)
        except StopIteration:
            self._finish()
        except AddonError as e:
            self.error = self.error or str(e)
            self._finish()
        except Exception as e:
            log.exception("pix2dance: %s failed", self.name)
            self.error = self.error or f"Internal error in {self.name}: {e!r}"
            self._finish()
        return not self.finished

    def _finish(self) -> None:
        if self._thread is not None and not self._worker_done:
            self.cancel()  # the main side ended early: stop the worker too (it is a daemon)
        self.finished = True
        try:
            if self._main is not None:
                self._main.close()   # runs the main side's finally blocks (frame restored, ...)
        except Exception:
            log.exception("pix2dance: ending %s", self.name)
        try:
            self.cleanup()
        except Exception:
            log.exception("pix2dance: cleaning up %s", self.name)

    def cleanup(self) -> None:
        """Main thread, once, however the job ended."""

    def wait(self, poll: float = 0.05, limit: float | None = None) -> "Job":
        """Step until finished (background mode and tests); `limit` seconds at most, then cancel."""
        start = time.monotonic()
        while self.step(poll):
            if limit is not None and time.monotonic() - start > limit and not self.cancelled:
                self.cancel()
        return self


# --- the timer ---------------------------------------------------------------------------------

# What the timer steps: Jobs, and any other main-thread work with the same two methods,
# `step() -> bool` (False: done, drop it) and `abandon()` (the add-on is going away).
_active: list = []


def submit(work):
    """Have the timer step `work` (a Job, or the live preview's worker) until it is done."""
    if work not in _active:
        _active.append(work)
    ensure_timer()
    return work


def tick() -> float | None:
    """The bpy.app.timers callback: step everything submitted; stop when nothing is left."""
    for work in list(_active):
        if not work.step():
            _active.remove(work)
    return INTERVAL if _active else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=INTERVAL, persistent=True)


def shutdown() -> None:
    """Cancel everything (unregister): workers stop on their own, nothing waits on the engine."""
    for work in list(_every_job) + list(_active):
        work.abandon()
    _active.clear()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
