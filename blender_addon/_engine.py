"""The engine layers the add-on uses, from one place: `engine.wire` and `engine.rig` (and `engine.atomic`).

`pix2dance addon` ships those two packages inside the extension zip, as `<add-on>/engine/` (with
engine/__init__.py, and atomic.py for never-half-written frames); in a checkout they are the repository's `engine`
package. This module picks whichever is there, so every other add-on module imports only from here:

    from ._engine import atomic, joints, protocol, client, mapping, automap, projection, bvh, camera, retarget
"""

from importlib import import_module
from pathlib import Path

# The built extension carries its own copy; a checkout (tests, scripts) uses the engine package.
_ROOT = f"{__package__}.engine" if (Path(__file__).parent / "engine").is_dir() else "engine"

atomic = import_module(f"{_ROOT}.atomic")
joints = import_module(f"{_ROOT}.wire.joints")
protocol = import_module(f"{_ROOT}.wire.protocol")
client = import_module(f"{_ROOT}.wire.client")
mapping = import_module(f"{_ROOT}.rig.mapping")
automap = import_module(f"{_ROOT}.rig.automap")
projection = import_module(f"{_ROOT}.rig.projection")
bvh = import_module(f"{_ROOT}.rig.bvh")
camera = import_module(f"{_ROOT}.rig.camera")
retarget = import_module(f"{_ROOT}.rig.retarget")
