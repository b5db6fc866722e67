"""Hold what C libraries write straight to file descriptors 1 and 2 (bpy, MediaPipe's TFLite, glog).

    from engine.quiet import quiet_fds
    with quiet_fds(what="bpy") as held:
        bpy.ops.render.render(write_still=True)          # its per-frame lines go to a temp file
        for f in tqdm(frames, file=held.terminal): ...   # progress bars still reach the terminal

Python's `print` cannot silence a library that calls printf() or writes to fd 2 from C++, so the
descriptors themselves are pointed at a temporary file for the block (Python's sys.stdout and
sys.stderr too, which pytest or an IDE may have replaced by objects that are not fd 1 or 2).
Afterwards what was said is logged at debug level (`--verbose` shows it), or, with
replay_on_error, its tail at error level when the block raised: the user sees why Blender failed.
verbose=True changes nothing. File descriptors belong to the process, not the thread: a block
silences every thread's output while it runs, so keep blocks short (one library call).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import tempfile
from typing import IO

log = logging.getLogger(__name__)

TAIL = 4000          # characters of held output replayed when a block fails

try:
    _LIBC = ctypes.CDLL(None)    # C stdio's buffers are flushed before a descriptor switches
except (OSError, TypeError):     # Windows: no handle for the process itself
    _LIBC = None


class Held:
    """What a quiet_fds block yields: the real terminal, and what has been held so far."""

    def __init__(self, terminal: IO[str], sink: IO[bytes] | None):
        self.terminal = terminal          # writes to the real stderr (progress bars)
        self._sink = sink

    def text(self) -> str:
        """Everything written to fds 1 and 2 (and sys.stdout/stderr) so far in the block."""
        if self._sink is None:
            return ""
        _flush_all()
        self._sink.seek(0)
        return self._sink.read().decode("utf-8", "replace").strip()


def _flush_all() -> None:
    """Python's and C stdio's buffers: what was written before a switch lands where it was meant to."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    if _LIBC is not None:
        _LIBC.fflush(None)


@contextlib.contextmanager
def quiet_fds(verbose: bool = False, what: str = "a library", replay_on_error: bool = False):
    """Send fds 1 and 2 to a temp file for the block; yields a Held (see the module docstring)."""
    if verbose:
        yield Held(sys.stderr, None)
        return
    _flush_all()
    try:
        saved = os.dup(1), os.dup(2)
    except OSError:                    # no real descriptors (an embedded interpreter): nothing to hold
        yield Held(sys.stderr, None)
        return
    failed = True
    with tempfile.TemporaryFile(prefix="pix2dance-held-") as sink, \
            open(sink.fileno(), "w", closefd=False, encoding="utf-8", errors="replace") as text, \
            os.fdopen(saved[1], "w", closefd=False) as terminal, \
            contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        held = Held(terminal, sink)
        try:
            yield held
            failed = False
        finally:
            terminal.flush()
            text.flush()
            _flush_all()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            said = held.text() if failed and replay_on_error or log.isEnabledFor(logging.DEBUG) else ""
            if said and failed and replay_on_error:
                log.error("%s said:\n%s", what, said[-TAIL:])
            elif said:
                log.debug("%s said:\n%s", what, said)
