"""Add-on preferences: the default engine, CURVE keys, and an optional local engine process.

    from .preferences import get_prefs
    p = get_prefs()          # a Prefs snapshot: the add-on's preferences, or defaults
    p.address, p.timeout, p.curve

When the add-on runs outside the extension system (`import blender_addon; blender_addon.register()`
in a script or test), Blender has no preferences entry for it: `get_prefs` then returns `FALLBACK`,
plain defaults that a script may change (`preferences.FALLBACK.timeout = 2.0`).

"Start a local engine" launches `<command> serve <run dir> --bind <address>` as a child process,
logging to a file in the temporary folder; it is stopped when the add-on unregisters and when
Blender exits (atexit), so quitting never leaves an engine behind nor waits on one.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"


@dataclass
class Prefs:
    """What the rest of the add-on reads from the preferences (plain values, safe in any thread)."""
    address: str = DEFAULT_ADDRESS
    timeout: float = 10.0
    curve_server_key: str = ""
    curve_client_key: str = ""
    start_local_engine: bool = False
    local_run_dir: str = ""
    command: str = "pix2dance"

    @property
    def curve(self) -> tuple[str, str] | None:
        """(server public key file, client secret key file) when both are set, else None."""
        if self.curve_server_key and self.curve_client_key:
            return bpy.path.abspath(self.curve_server_key), bpy.path.abspath(self.curve_client_key)
        return None


# Used when Blender has no preferences entry for the add-on (plain `register()`); scripts may edit it.
FALLBACK = Prefs()


def _local_engine_changed(self, _context) -> None:
    if self.start_local_engine:
        try:
            start_local_engine(get_prefs())
        except (OSError, ValueError) as e:
            log.error("pix2dance: could not start the local engine: %s", e)
    else:
        stop_local_engine()


class PIX2DANCE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_address: StringProperty(name="Default engine", default=DEFAULT_ADDRESS,
                                   description="Engine address used by scenes that leave theirs empty")
    timeout: FloatProperty(name="Timeout", default=10.0, min=0.5, max=600.0, unit="TIME_ABSOLUTE",
                           description="Seconds to wait for an engine reply before giving up")
    curve_server_key: StringProperty(name="Server public key", subtype="FILE_PATH", default="",
                                     description="The engine's CURVE public key file (remote engines; from `pix2dance keys`)")
    curve_client_key: StringProperty(name="Client secret key", subtype="FILE_PATH", default="",
                                     description="This client's CURVE secret key file (remote engines)")
    start_local_engine: BoolProperty(name="Start a local engine", default=False, update=_local_engine_changed,
                                     description="Run `pix2dance serve` as a child process of Blender, stopped on exit")
    local_run_dir: StringProperty(name="Run folder", subtype="DIR_PATH", default="",
                                  description="Trained run to serve (empty: the demo model)")
    command: StringProperty(name="pix2dance command", default="pix2dance",
                            description="How to run pix2dance on this machine (a path, or e.g. `/path/.venv/bin/pix2dance`)")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "engine_address")
        col.prop(self, "timeout")
        box = col.box()
        box.label(text="Remote engine (CURVE encryption)")
        box.prop(self, "curve_server_key")
        box.prop(self, "curve_client_key")
        box = col.box()
        box.prop(self, "start_local_engine")
        sub = box.column()
        sub.active = self.start_local_engine
        sub.prop(self, "local_run_dir")
        sub.prop(self, "command")
        row = sub.row()
        row.label(text=f"Local engine: {local_engine_state()}")
        row.operator("pix2dance.start_engine", text="Restart" if local_engine_running() else "Start")
        row.operator("pix2dance.stop_engine", text="Stop")


def get_prefs(context=None) -> Prefs:
    """A snapshot of the preferences, or FALLBACK when the add-on has none (registered by a script)."""
    context = context or bpy.context
    try:
        entry = context.preferences.addons.get(__package__)
    except AttributeError:
        entry = None
    p = getattr(entry, "preferences", None)
    if p is None:
        return dataclasses.replace(FALLBACK)
    return Prefs(address=p.engine_address.strip() or DEFAULT_ADDRESS, timeout=float(p.timeout),
                 curve_server_key=p.curve_server_key, curve_client_key=p.curve_client_key,
                 start_local_engine=p.start_local_engine, local_run_dir=p.local_run_dir, command=p.command)


# --- the local engine process ------------------------------------------------------------------

_local: dict = {"proc": None, "log": None}


def local_engine_running() -> bool:
    proc = _local["proc"]
    return proc is not None and proc.poll() is None


def local_engine_state() -> str:
    proc = _local["proc"]
    if proc is None:
        return "not started"
    if proc.poll() is None:
        return f"running (pid {proc.pid})"
    return f"exited with status {proc.returncode} (log: {_local['log']})"


def local_engine_command(prefs: Prefs) -> list[str]:
    """argv of the engine process: `<command> serve [RUN_DIR] --bind <address>`."""
    argv = shlex.split(prefs.command, posix=os.name != "nt")
    if not argv:
        raise ValueError("the pix2dance command is empty")
    argv += ["serve"]
    if prefs.local_run_dir:
        argv.append(bpy.path.abspath(prefs.local_run_dir))
    return argv + ["--bind", prefs.address]


def start_local_engine(prefs: Prefs) -> subprocess.Popen:
    """(Re)start the local engine; its output goes to a log file in the temporary folder."""
    stop_local_engine()
    argv = local_engine_command(prefs)
    log_path = Path(tempfile.gettempdir()) / f"pix2dance-engine-{os.getpid()}.log"
    with open(log_path, "ab") as out:
        # Own process group on POSIX, so stopping it never signals Blender itself.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=(os.name != "nt"))
    _local["proc"], _local["log"] = proc, str(log_path)
    log.info("pix2dance: started local engine (pid %d): %s", proc.pid, " ".join(argv))
    return proc


def stop_local_engine(timeout: float = 3.0) -> None:
    """Terminate the local engine if this Blender started one; kill it if it does not stop in time."""
    proc = _local["proc"]
    _local["proc"] = None
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


atexit.register(stop_local_engine)


class PIX2DANCE_OT_start_engine(bpy.types.Operator):
    """Start (or restart) the local engine process with the preferences' run folder and command"""
    bl_idname = "pix2dance.start_engine"
    bl_label = "Start local engine"

    def execute(self, context):
        try:
            proc = start_local_engine(get_prefs(context))
        except (OSError, ValueError) as e:
            self.report({"ERROR"}, f"Could not start the local engine: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Local engine started (pid {proc.pid})")
        return {"FINISHED"}


class PIX2DANCE_OT_stop_engine(bpy.types.Operator):
    """Stop the local engine process this Blender started"""
    bl_idname = "pix2dance.stop_engine"
    bl_label = "Stop local engine"

    def execute(self, context):
        stop_local_engine()
        return {"FINISHED"}


CLASSES = (PIX2DANCE_AP_preferences, PIX2DANCE_OT_start_engine, PIX2DANCE_OT_stop_engine)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    prefs = get_prefs()
    if prefs.start_local_engine and not local_engine_running():
        try:
            start_local_engine(prefs)
        except (OSError, ValueError) as e:
            log.error("pix2dance: could not start the local engine: %s", e)


def unregister() -> None:
    stop_local_engine()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
