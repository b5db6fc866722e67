"""`pix2dance map RIG`: a rig file's auto-mapping, joint by joint, and how each joint was found.

    arm = open_rig(Path("hero.glb"))                 # the armature, imported into an empty scene
    mapping = map_rig(Path("hero.glb"), out=Path("hero.json"))   # prints the table, writes --mapping JSON

A .blend opens as it is (its first armature, or `armature`); .glb/.gltf, .fbx and .bvh are
imported into an empty scene. The mapping is `engine.rig.automap.auto_map`'s, the one the add-on
and `render` use; the file it writes is what `render --mapping` reads, plus a per-joint "how". A
rig that is not a standing humanoid is a UserError, and nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.atomic import atomic_file
from engine.errors import UserError
from engine.quiet import quiet_fds
from engine.rig import automap
from engine.rig import mapping as mapping_mod
from engine.wire import joints

from . import blend, bvh, rigs

RIG_EXTENSIONS = (".blend", ".glb", ".gltf", ".fbx", ".bvh")


def open_rig(path: Path, armature: str | None = None, verbose: bool = False):
    """The armature of a rig file, opened (.blend) or imported into an empty scene; UserError otherwise."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in RIG_EXTENSIONS:
        raise UserError(f"unknown rig file type {path.suffix or '(none)'!r} for {path.name}: "
                        "use .blend, .glb, .gltf, .fbx or .bvh")
    if not path.is_file():
        raise UserError(f"rig file not found: {path}")
    if ext == ".blend":
        bpy = blend.open_blend(path, verbose)
        return blend.find_armature(bpy, bpy.context.scene, armature, path.name)
    if ext == ".bvh":
        bvh.check(path)
    bpy = rigs.need_bpy()
    with quiet_fds(verbose, what="Blender"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        with quiet_fds(verbose, what="Blender", replay_on_error=True):
            if ext == ".bvh":
                bvh.bvh_reader.import_bvh(str(path.resolve()), bpy.context.scene)
            elif ext == ".fbx":
                bpy.ops.import_scene.fbx(filepath=str(path.resolve()))
            else:
                bpy.ops.import_scene.gltf(filepath=str(path.resolve()))
    except (RuntimeError, ValueError) as e:
        raise UserError(f"Blender could not import {path} ({str(e).strip().splitlines()[-1]})") from None
    return blend.find_armature(bpy, bpy.context.scene, armature, path.name)


def table(mapping: dict) -> str:
    """The mapping as text: one line per canonical joint (bone, place along it, how it was found)."""
    how = mapping.get("how", {})
    rows = [("joint", "bone", "at", "how")]
    for j in joints.JOINTS:
        e = mapping["joints"].get(j)
        if j in mapping_mod.DERIVED:
            a, b = mapping_mod.DERIVED[j]
            rows.append((j, f"(midpoint of {a} and {b})", "", "derived"))
        elif e is None:
            rows.append((j, "-", "", "unmapped"))
        else:
            rows.append((j, e["bone"], f"{float(e.get('at', 0.0)):g}", how.get(j, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)


def map_rig(path: Path, out: Path | None = None, armature: str | None = None, verbose: bool = False) -> dict:
    """Auto-map the rig's armature, print the table on stdout and, given `out`, write the mapping
    JSON there atomically. UserError (nothing written) when the rig is not a humanoid."""
    arm = open_rig(path, armature, verbose)
    try:
        mapping = automap.auto_map(arm)
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from None
    missing = mapping_mod.required_missing(mapping)
    if missing:          # the structure finds all or refuses; a guard for what it may let through
        raise UserError(f"armature {arm.name!r}: no bone found for {', '.join(missing)}")
    sys.stdout.write(f"{Path(path).name}: armature {arm.name!r}, {len(arm.data.bones)} bones, "
                     f"preset {mapping['preset']}\n{table(mapping)}\n")
    if out is not None:
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(mapping, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return mapping
