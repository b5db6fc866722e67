"""Benchmark auto-mapping (`engine.rig.automap.auto_map`): the time the mapping panel waits.

    .venv/bin/python bench/automap.py             # 20 repeats of each
    .venv/bin/python bench/automap.py --repeats 5

Two rigs in one scene: Xbot.glb (Mixamo, 65 bones) and a generated 100-bone humanoid
with meaningless names (b000 ...: twist bones in the limbs, a long spine, five 3-bone fingers per
hand, face bones), so names cannot shortcut anything. For each, the median time of the whole call
(reading the armature from bpy, the structural search, the preset label) and of the structural
search alone on the bones already read. Target: under 50 ms, so the panel feels instant; printed
as the ratio time / 50 ms (below 1 meets it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

from engine.rig import automap  # noqa: E402
from engine.rig.structure import Bone, map_bones  # noqa: E402
from tests.conftest import sample  # noqa: E402
from tests.test_mapping import build_rig  # noqa: E402
from tests.test_rig_structure import humanoid  # noqa: E402

TARGET_S = 0.050


def hundred_bones() -> list[Bone]:
    """The tests' humanoid (twist chains, 6 spine bones) with 5 three-bone fingers per hand and
    face bones under the head, up to 100 bones, renamed b000 ..."""
    bones, _ = humanoid(twist="chain", spine=6, named=True)
    out = [b for b in bones if not b.name.startswith("finger")]
    for side, x in (("left", 1), ("right", -1)):
        hand = next(b for b in out if b.name == f"hand_{side}")
        base = np.array(hand.tail)
        for k in range(5):
            prev, at = hand.name, base + np.array([0.0, 0.02 * (k - 2), 0.0])
            for s in range(3):
                nxt = at + np.array([0.03 * x, 0.0, 0.0])
                out.append(Bone(f"f{k}{s}_{side}", prev, tuple(at), tuple(nxt)))
                prev, at = f"f{k}{s}_{side}", nxt
    k = 0
    while len(out) < 100:       # face bones: short leaves in front of the head
        y = -0.08 - 0.005 * (k % 4)
        out.append(Bone(f"face{k}", "head", (0.02 * ((k % 5) - 2), y, 1.62 + 0.012 * (k // 5)),
                        (0.02 * ((k % 5) - 2), y - 0.02, 1.62 + 0.012 * (k // 5))))
        k += 1
    rename = {b.name: f"b{i:03d}" for i, b in enumerate(out)}
    return [Bone(rename[b.name], rename.get(b.parent), b.head, b.tail) for b in out]


def timed(fn, repeats: int) -> float:
    fn()                                     # warm: first-call imports and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    rows = []
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(sample("rigs/Xbot.glb")))
    xbot = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    rows.append(("Xbot.glb", xbot))
    gen = build_rig({b.name: (b.parent, b.head, b.tail) for b in hundred_bones()}, "Generated")
    rows.append(("generated", gen))
    print(f"auto-map, median of {a.repeats} (target {TARGET_S * 1000:.0f} ms):")
    for label, arm in rows:
        full = timed(lambda: automap.auto_map(arm), a.repeats)
        bones = automap.rest_bones(arm)
        core = timed(lambda: map_bones(bones), a.repeats)
        read = timed(lambda: automap.rest_bones(arm), a.repeats)
        m = automap.auto_map(arm)
        print(f"  {label:10s} {len(arm.data.bones):3d} bones: auto_map {full * 1000:6.2f} ms "
              f"(ratio to target {full / TARGET_S:.3f}); structure alone {core * 1000:6.2f} ms, "
              f"reading bones {read * 1000:5.2f} ms; preset {m['preset']}, how {sorted(set(m['how'].values()))}")


if __name__ == "__main__":
    main()
