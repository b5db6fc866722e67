"""pix2dance for Blender: see a rig's dance performed by a trained dancer, live or in the sequencer.

A Blender 4.2+ extension (blender_manifest.toml; no bl_info). Built by `pix2dance addon --out DIR`,
which ships the engine's `wire` and `rig` layers inside the zip and bundles pyzmq (`_engine.py`
is the one place that imports them, from the zip or from a checkout). Outside the extension
system (scripts, tests) it works as a plain package:

    import blender_addon
    blender_addon.register()          # missing add-on preferences then mean defaults
    bpy.ops.pix2dance.render_to_sequencer()
    blender_addon.unregister()

Modules, each importing only those before it (no cycles):
    _engine       engine.wire (joints, protocol, client) and engine.rig (mapping, automap, projection, bvh, ...)
    properties    scene.pix2dance (one PropertyGroup) and the mapping in its two forms
    preferences   add-on preferences, the optional local engine process
    sequencer     rendered PNGs, the render manifest, sequencer strips
    jobs          the job machinery: worker thread + main-thread steps, the timer
    connection    the engine address, the connection test, picking a model
    checks        the scene's rig, camera, mapping and output folder, checked
    preview       Preview Frame and the live preview
    render_job    Render to Sequencer
    operators     bpy.ops.pix2dance.*, and the hooks (app handlers, the live_preview switch)
    panels        the sidebar tab
register/unregister may be called repeatedly.
"""

from __future__ import annotations

_state = {"registered": False}


def _modules():
    """The modules with Blender classes, in registration order (data types first: operators and
    panels refer to them). Imported here, not at package import: `import blender_addon` stays
    cheap until Blender (or a script) registers it."""
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
