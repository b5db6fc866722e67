"""`pix2dance serve` as a child process on a free loopback port: for the demo, the tests and the benchmarks.

    with engine_server(run_dir, "cpu") as address:      # "tcp://127.0.0.1:PORT", answering pings
        with Client(address) as client: ...
    # here the server has stopped (SIGTERM, then SIGKILL after 10 s), also after an error
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import UserError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def engine_server(run_dir: Path | None, device: str, timeout: float = 120.0):
    """Start `pix2dance serve RUN` on a free loopback port; yield its address once it answers a ping; always stop it.

    run_dir None serves what `pix2dance serve` serves with no run: the demo model in assets/demo.

    The server is this Python running engine.cli, so it is the very command a user types. It is
    stopped with SIGTERM (its clean shutdown) and killed if it has not gone within 10 seconds. A
    server that exits at start-up is a UserError carrying the last line it wrote to stderr.
    """
    from engine.wire.client import Client, ClientError
    address = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "engine.cli", "serve", *([str(run_dir)] if run_dir else []),
           "--bind", address, "--device", device, "--quiet"]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    log.info("starting the engine server: pix2dance serve %s --bind %s", run_dir or "(demo model)", address)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise UserError(f"the engine server stopped at start-up: {err[-1] if err else f'exit {proc.returncode}'}")
            try:
                with Client(address, timeout=2.0, retries=0) as c:
                    c.ping()
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise UserError(f"the engine server did not answer on {address} within {timeout:.0f} s") from None
        log.debug("engine server up on %s (pid %d)", address, proc.pid)
        yield address
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
