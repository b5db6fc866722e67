"""pix2dance for Blender: see a rig's dance performed by a trained dancer, live or in the sequencer.

A Blender 4.2+ extension (blender_manifest.toml; no bl_info). Built by `pix2dance addon --out DIR`,
which copies engine/joints.py, protocol.py and client.py beside these modules and bundles pyzmq.
Outside the extension system (scripts, tests) it works as a plain package:

    import blender_addon
    blender_addon.register()          # missing add-on preferences then mean defaults
    bpy.ops.pix2dance.render_to_sequencer()
    blender_addon.unregister()

Modules: properties (scene.pix2dance), preferences, mapping (+ presets), projection, retarget,
jobs (background work), operators, panels, sequencer (frames and strips). register/unregister
may be called repeatedly.
"""

from __future__ import annotations

from . import jobs, operators, panels, preferences, properties

# Registration order: data types first (operators and panels refer to them), then the UI.
_MODULES = (preferences, properties, operators, panels)
_state = {"registered": False}


def register() -> None:
    if _state["registered"]:
        unregister()  # a second register() starts clean instead of failing on duplicate classes
    for module in _MODULES:
        module.register()
    _state["registered"] = True


def unregister() -> None:
    if not _state["registered"]:
        return
    jobs.shutdown()  # cancel work and stop the timer first: nothing may run on unregistered types
    for module in reversed(_MODULES):
        module.unregister()
    _state["registered"] = False
