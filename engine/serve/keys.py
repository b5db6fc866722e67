"""CURVE keys for the engine: `pix2dance keys`, and the checks `pix2dance serve` runs before loading.

    pix2dance keys --out keys
    pix2dance serve RUN --bind tcp://0.0.0.0:5555 --curve-secret keys/server.key_secret --curve-clients keys/clients

A loopback bind (protocol.is_loopback) may go without encryption; anything else needs the server's
secret key and an allow-list folder of client public keys, which zmq.auth's ThreadAuthenticator
reads when the server starts (see server.Server). These checks run before torch or any model is
imported, so a bad bind or key fails at once with one line.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import UserError
from engine.wire import protocol

log = logging.getLogger("pix2dance.serve")

SERVER_SECRET, SERVER_PUBLIC = "server.key_secret", "server.key"
CLIENT_SECRET, CLIENT_PUBLIC = "client.key_secret", "client.key"
CLIENTS = "clients"                    # the allow-list folder: one public .key file per client


def is_loopback_bind(bind: str) -> bool:
    """protocol.is_loopback, with a malformed --bind as a UserError."""
    try:
        return protocol.is_loopback(bind)
    except ValueError as e:
        raise UserError(f"--bind: {e} (e.g. tcp://127.0.0.1:5555)") from None


def check_security(bind: str, curve_secret: Path | None, curve_clients: Path | None) -> bool:
    """Whether CURVE is on; UserError if a non-loopback bind lacks keys or the keys are unusable."""
    if (curve_secret is None) != (curve_clients is None):
        raise UserError("--curve-secret and --curve-clients go together (make both with `pix2dance keys --out DIR`)")
    loopback = is_loopback_bind(bind)            # validates the address either way
    if curve_secret is None:
        if not loopback:
            raise UserError(f"refusing to bind {bind} without encryption: make keys with `pix2dance keys --out KEYS`, "
                            f"then add --curve-secret KEYS/{SERVER_SECRET} --curve-clients KEYS/{CLIENTS}")
        return False
    if not Path(curve_secret).is_file():
        raise UserError(f"--curve-secret {curve_secret}: no such file (make keys with `pix2dance keys --out DIR`)")
    if not Path(curve_clients).is_dir() or not any(Path(curve_clients).glob("*.key")):
        raise UserError(f"--curve-clients {curve_clients}: not a folder of client public .key files")
    return True


def load_server_keys(curve_secret: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a zmq.auth secret certificate; UserError if it is not one."""
    import zmq.auth
    try:
        public, secret = zmq.auth.load_certificate(str(curve_secret))
    except (OSError, ValueError) as e:
        raise UserError(f"--curve-secret {curve_secret}: not a key file ({e})") from None
    if secret is None:
        raise UserError(f"--curve-secret {curve_secret} holds only a public key; pass the .key_secret file")
    return public, secret


def make_keys(out: str | Path) -> Path:
    """`pix2dance keys --out DIR`: a server and a client CURVE key pair, and the allow-list folder."""
    import zmq.auth
    out = Path(out)
    targets = [SERVER_PUBLIC, SERVER_SECRET, CLIENT_PUBLIC, CLIENT_SECRET, f"{CLIENTS}/{CLIENT_PUBLIC}"]
    if any((out / t).exists() for t in targets):
        raise UserError(f"{out} already holds keys; keys are never overwritten: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".keys.", dir=out))
    try:
        zmq.auth.create_certificates(tmp, "server")
        zmq.auth.create_certificates(tmp, "client")
        (tmp / CLIENTS).mkdir()
        shutil.copy(tmp / CLIENT_PUBLIC, tmp / CLIENTS / CLIENT_PUBLIC)
        for name in (SERVER_SECRET, CLIENT_SECRET):
            os.chmod(tmp / name, 0o600)
        (out / CLIENTS).mkdir(exist_ok=True)
        for t in targets:                # publics first, so no secret is ever left without its pair
            os.replace(tmp / t, out / t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("keys written to %s\n  serve:  pix2dance serve RUN --bind tcp://0.0.0.0:5555 --curve-secret %s "
             "--curve-clients %s\n  client: Client(address, curve=(%r, %r))", out, out / SERVER_SECRET,
             out / CLIENTS, str(out / SERVER_PUBLIC), str(out / CLIENT_SECRET))
    return out
