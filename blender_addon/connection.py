"""Reaching the engine: the address a scene uses, the connection test, and picking a model.

    c = connection_for(scene)                      # Connection: address, timeout, CURVE keys
    job = ConnectionJob(scene.name, c)             # ping + info -> scene.pix2dance.status
    MODELS[c.address]                              # model names that engine served when last asked
    model = pick_model(client.info(), "")          # the model entry to render with
    output_for(model)                              # Output: what to ask of it (placement, alpha)

`Connection` holds plain values, so a worker thread may open it; `connection_for` reads the scene
and the preferences on the main thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy

from . import jobs
from ._engine import client as engine_client
from ._engine import protocol
from .jobs import AddonError
from .preferences import get_prefs
from .properties import settings_of


@dataclass
class Connection:
    """How to reach the engine (plain values: safe to hand to a worker thread)."""
    address: str
    timeout: float = 10.0
    curve: tuple[str, str] | None = None

    def open(self) -> "engine_client.Client":
        return engine_client.Client(self.address, timeout=self.timeout, curve=self.curve)


def connection_for(scene) -> Connection:
    """The scene's engine address (or the preferences' default), timeout and CURVE keys.

    An engine on another machine needs Blender's "Allow Online Access" (bpy.app.online_access, as
    extensions must respect); one on this machine (loopback) does not.
    """
    prefs = get_prefs()
    address = scene.pix2dance.engine_address.strip() or prefs.address
    try:
        local = protocol.is_loopback(address)
    except ValueError as e:
        raise AddonError(f"Engine address {e}") from None
    if not local and not getattr(bpy.app, "online_access", True):
        raise AddonError(f"Engine {address} is on another machine and Blender's online access is off: "
                         f"allow it in Preferences > System > Network (engines on this machine need not)")
    return Connection(address, prefs.timeout, prefs.curve)


def pick_model(info: dict, wanted: str) -> dict:
    """The model entry named `wanted` in an engine's info, or its first when `wanted` is empty
    (protocol.pick_model, the rule the engine and the client follow too); AddonError otherwise."""
    try:
        return protocol.pick_model({m.get("name"): m for m in info.get("models") or []}, wanted)
    except protocol.ProtocolError as e:
        raise AddonError(e.message[:1].upper() + e.message[1:]) from None


@dataclass(frozen=True)
class Output:
    """How the dancer comes back (protocol v2): `placement` and `alpha`, and a one-line `warning`
    when that is not the dancer over the camera view."""
    placement: str = "source"
    alpha: bool = True
    warning: str = ""


def output_for(model: dict) -> Output:
    """What the add-on asks of `model`: the dancer where the rig stands in the camera frame, at the
    render size, with her matte (placement "source", RGBA). A model trained before mattes (info
    says "alpha": false; asked for that, the engine would answer "no_alpha") can give only the bare
    crop: the add-on falls back to it, with a warning."""
    if model.get("alpha"):
        return Output()
    return Output("crop", False, f"Model {model.get('name')!r} has no matte (trained before placements): "
                                 f"showing its bare crop, not placed over the rig; retrain it for that")


# Model names each engine address served when last asked (for the panel's model menu).
MODELS: dict[str, list[str]] = {}


class ConnectionJob(jobs.Job):
    """Ping the engine and read its info; the result goes to the scene's status line."""
    name = "connection test"

    def __init__(self, scene_name: str, connection: Connection):
        super().__init__()
        self.scene_name, self.connection = scene_name, connection
        self.info: dict | None = None
        self.latency = None

    def work(self) -> None:
        c = self.connection.open()
        try:
            latency = c.ping()
            self.post("info", latency, c.info())
        finally:
            c.close()

    def on_info(self, latency: float, info: dict) -> None:
        self.latency, self.info = latency, info
        names = [m.get("name", "?") for m in info.get("models", [])]
        MODELS[self.connection.address] = names
        self.status = (f"Connected to {info.get('server', 'an engine')} at {self.connection.address} "
                       f"({latency * 1000:.0f} ms); models: {', '.join(names) or 'none'}")

    def cleanup(self) -> None:
        settings = settings_of(self.scene_name)
        if settings is None:
            return
        settings.connected = self.error is None and self.info is not None
        if self.error:
            settings.last_error = self.error
            settings.status = "Not connected"
        else:
            settings.last_error = ""
            settings.status = self.status
