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

_state = {"registered": False}


def _modules():
    """The modules with Blender classes, in registration order (data types first: operators and
    panels refer to them). Imported here, not at package import, so that headless users of
    `engine.rig.projection` or `.mapping` (engine.render, engine.demo.synth) load only what they use."""
    from . import operators, panels, preferences, properties
    return (preferences, properties, operators, panels)


def register() -> None:
    if _state["registered"]:
        unregister()  # a second register() starts clean instead of failing on duplicate classes
    for module in _modules():
        module.register()
    _state["registered"] = True


def unregister() -> None:
    if not _state["registered"]:
        return
    from . import jobs
    jobs.shutdown()  # abandon work and stop the timer first: nothing may run on unregistered types
    for module in reversed(_modules()):
        module.unregister()
    _state["registered"] = False
