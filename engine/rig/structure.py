"""Auto-mapping by a skeleton's structure: which bone is which joint, whatever the bones are called.

    bones = [Bone("b000", None, head=(0, 0, 1.0), tail=(0, 0, 1.1)), ...]   # world rest pose, Z up
    found = map_bones(bones)          # {"preset": "auto", "joints": {...}, "how": {joint: "structure", ...}}
    map_bones(quadruped)              # NotHumanoid: "more than two limbs reach the floor (four legs?)"

Works on plain data (no bpy): `automap` reads an armature into this list. A humanoid's skeleton says
where its limbs are, and rest-pose geometry settles what the hierarchy leaves open:

- legs: the two chains that hang from one bone down to the floor; the hips are where they meet a
  spine, the chain that rises from there (or from a bone above);
- arms: the two longest chains branching off the spine, above the hips; the head: the top of the
  spine, below its end;
- along a limb, shoulder / elbow / wrist (hip / knee / ankle) are bone heads picked by the limb's
  proportions (upper arm about 1.25 forearms, thigh about one shin, a hand or a horizontal foot
  beyond): clavicles and pelvis bones start on the body's midline, twist and roll bones split a
  segment, palms and fingers branch where the hand starts;
- left and right: the side of the body seen from the rig's front, the way its feet point.

Names only break ties between what the structure allows, and never override it. Each joint says
how it was found: "name" (the structure allows it and its name says so), "structure" (the
hierarchy alone puts it there: consecutive joints down the limb, an arm's wrist where its fingers
branch) or "geometry" (lengths and directions chose among the bones the hierarchy allows: twist
bones or a clavicle skipped, a wrist at the palms' root). A skeleton that is not a
standing humanoid (four legs, a single chain, lying down) raises NotHumanoid with one line.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .names import side_of, tokens


@dataclasses.dataclass(frozen=True)
class Bone:
    name: str
    parent: str | None
    head: tuple[float, float, float]      # world rest position, Blender's Z up
    tail: tuple[float, float, float]
    deform: bool = True


class NotHumanoid(ValueError):
    """The skeleton is not a standing humanoid; the message says why, in one line."""


# Body proportions (Drillis & Contini, fractions of standing height) the limb search expects.
UPPER_ARM, FOREARM, HAND = 0.186, 0.146, 0.108
THIGH, SHIN, FOOT = 0.245, 0.246, 0.152
MIDLINE = 0.05          # a point this close (x height) to the spine's vertical is not a shoulder
PELVIS = 0.025          # ... nor a hip joint
FLOOR = 0.1             # leaves this close to the lowest point stand on the floor


# --- the skeleton as arrays -------------------------------------------------------------------

class _Skeleton:
    """Bones in pre-order with their subtrees as index ranges, heads as an (N, 3) array, and the
    points (heads, plus leaf tails that lie near the body: glTF imports give leaves arbitrary tails)."""

    def __init__(self, bones: list[Bone]):
        bones = _deform_only(bones)
        by_name = {b.name: b for b in bones}
        kids: dict[str | None, list[str]] = {}
        for b in bones:
            kids.setdefault(b.parent if b.parent in by_name else None, []).append(b.name)
        order: list[str] = []
        stack = list(reversed(kids.get(None, [])))
        while stack:
            n = stack.pop()
            order.append(n)
            stack.extend(reversed(kids.get(n, [])))
        self.names = order
        self.index = {n: i for i, n in enumerate(order)}
        n = len(order)
        self.parent = np.array([self.index.get(by_name[x].parent, -1) if by_name[x].parent in by_name else -1
                                for x in order], np.int64)
        self.children = [[self.index[c] for c in kids.get(x, [])] for x in order]
        self.head = np.array([by_name[x].head for x in order], np.float64).reshape(n, 3)
        self.tail = np.array([by_name[x].tail for x in order], np.float64).reshape(n, 3)
        self.end = np.arange(n)                     # subtree of i: bones i .. end[i]
        for i in reversed(range(n)):
            if self.children[i]:
                self.end[i] = max(self.end[c] for c in self.children[i])
        lo, hi = self.head.min(axis=0), self.head.max(axis=0)
        margin = 0.2 * float(np.max(hi - lo)) if n else 0.0
        leaf = np.array([not c for c in self.children])
        near = np.all((self.tail >= lo - margin) & (self.tail <= hi + margin), axis=1)
        self.has_tail = leaf & near                 # leaf tails that can be trusted as points
        pts = np.concatenate([self.head, self.tail[self.has_tail]]) if n else np.zeros((0, 3))
        self.zmin, self.zmax = (float(pts[:, 2].min()), float(pts[:, 2].max())) if n else (0.0, 0.0)
        self.height = self.zmax - self.zmin
        self.size = float(np.max(pts.max(axis=0) - pts.min(axis=0))) if n else 0.0
        self.eps = 1e-3 * max(self.size, 1e-9)

    def points(self, i: int) -> np.ndarray:
        """(M, 3) points of bone i's subtree."""
        sl = slice(i, self.end[i] + 1)
        return np.concatenate([self.head[sl], self.tail[sl][self.has_tail[sl]]])

    def is_ancestor(self, a: int, b: int) -> bool:
        """a is b or one of its ancestors."""
        return a <= b <= self.end[a]

    def path(self, top: int, bottom: int) -> list[int]:
        """Bones from top (inclusive) down to bottom (inclusive)."""
        out = [bottom]
        while out[-1] != top:
            out.append(int(self.parent[out[-1]]))
        return out[::-1]

    def lca(self, idx) -> int:
        idx = list(idx)
        a = idx[0]
        while not all(self.is_ancestor(a, b) for b in idx):
            a = int(self.parent[a])
        return a

    def child_toward(self, a: int, b: int) -> int:
        """The child of a on the way down to b."""
        return next(c for c in self.children[a] if self.is_ancestor(c, b))

    def reach(self, i: int, origin: np.ndarray) -> float:
        return float(np.linalg.norm(self.points(i) - origin, axis=1).max())


def _deform_only(bones: list[Bone]) -> list[Bone]:
    """Control rigs (Rigify) hang IK targets and mechanism bones beside the deforming skeleton:
    with enough deforming bones, keep those, each under its nearest deforming ancestor."""
    deform = {b.name for b in bones if b.deform}
    if len(deform) == len(bones) or len(deform) < 12:
        return bones
    by_name = {b.name: b for b in bones}
    out = []
    for b in bones:
        if b.name in deform:
            p = b.parent
            while p is not None and p not in deform:
                p = by_name[p].parent if p in by_name else None
            out.append(dataclasses.replace(b, parent=p))
    return out


# --- the trunk: legs, hips, spine, arms, head --------------------------------------------------

@dataclasses.dataclass
class _Trunk:
    hips: int                      # where the legs and the spine meet
    legs: list[int]                # the two leg roots (children of `floor_root`)
    spine: list[int]               # hips .. the top bone
    arms: list[tuple[int, int]]    # (branch bone on the spine, arm root)
    head: int | None


def _trunk(sk: _Skeleton) -> _Trunk:
    h = sk.height
    if not len(sk.names) or h <= 0 or h < 0.4 * sk.size:
        raise NotHumanoid("it does not stand up along Z in its rest pose (lying down?): a humanoid is taller than it is long")
    # Legs: leaves on the floor that hang from something well above it.
    floor = [i for i in range(len(sk.names)) if not sk.children[i]
             and sk.points(i)[:, 2].min() <= sk.zmin + FLOOR * h
             and any(sk.head[a, 2] >= sk.zmin + 0.35 * h for a in _ancestors(sk, i))]
    if len(floor) < 2:
        raise NotHumanoid("no two legs reach the floor (a single chain?)")
    root = sk.lca(floor)
    groups = [c for c in sk.children[root] if any(sk.is_ancestor(c, f) for f in floor)]
    if len(groups) < 2:
        raise NotHumanoid("no two legs reach the floor (a single chain?)")
    descent = {c: sk.head[root, 2] - sk.points(c)[:, 2].min() for c in groups}
    groups.sort(key=lambda c: -descent[c])
    if len(groups) > 2 and descent[groups[2]] >= 0.6 * descent[groups[1]]:
        raise NotHumanoid(f"{len(groups)} limbs reach the floor (four legs?): a humanoid stands on two")
    legs = groups[:2]
    if min(descent[c] for c in legs) < 0.25 * h:
        raise NotHumanoid("its legs are too short for its height")
    # Hips: the first bone from the legs' root upwards with a chain rising well above it.
    hips, below = root, None
    while True:
        cands = [c for c in sk.children[hips] if c not in legs and c != below]
        rise = {c: sk.points(c)[:, 2].max() for c in cands}
        up = [c for c in cands if rise[c] >= sk.head[hips, 2] + 0.25 * h]
        if up:
            spine_root = max(up, key=lambda c: rise[c])
            break
        if sk.parent[hips] < 0:
            raise NotHumanoid("nothing rises above its legs: no spine")
        below, hips = hips, int(sk.parent[hips])
    pts = sk.points(spine_root)
    top_bone = _owner(sk, spine_root, int(np.argmax(pts[:, 2])))
    spine = [hips] + sk.path(spine_root, top_bone)
    rise = sk.head[top_bone] - sk.head[hips]
    if rise[2] < math.cos(math.radians(45)) * np.linalg.norm(rise):
        raise NotHumanoid("its spine is not upright in the rest pose (lying down, or on four legs?)")
    # Arms: the two chains reaching furthest from the spine, rooted above the hips.
    on_spine = set(spine)
    branches = []
    for b in spine:
        for c in sk.children[b]:
            if c in on_spine or c in legs or (b == hips and sk.is_ancestor(c, legs[0])):
                continue
            if sk.head[c, 2] < sk.head[hips, 2] + 0.15 * h:
                continue
            branches.append((sk.reach(c, sk.head[c]), b, c))
    branches.sort(reverse=True)
    if len(branches) < 2 or branches[1][0] < 0.15 * h:
        raise NotHumanoid("no two arms branch from its spine")
    arms = [(b, c) for _, b, c in branches[:2]]
    chest = max((b for b, _ in arms), key=lambda b: spine.index(b))
    neck = spine[spine.index(chest) + 1:]
    top = float(sk.points(spine_root)[:, 2].max())
    heads = [b for b in neck if sk.head[b, 2] <= top - 0.05 * h]
    return _Trunk(hips=hips, legs=legs, spine=spine, arms=arms, head=heads[-1] if heads else None)


def _ancestors(sk: _Skeleton, i: int):
    p = int(sk.parent[i])
    while p >= 0:
        yield p
        p = int(sk.parent[p])


def _owner(sk: _Skeleton, root: int, point: int) -> int:
    """The bone of the subtree of `root` that owns its `point`-th point (heads first, then tails)."""
    n = sk.end[root] - root + 1
    if point < n:
        return root + point
    tails = [i for i in range(root, sk.end[root] + 1) if sk.has_tail[i]]
    return tails[point - n]


# --- limbs: a chain of candidate points and the best triple on it -------------------------------

@dataclasses.dataclass
class _Point:
    pos: np.ndarray
    entry: dict                   # the mapping entry for a joint here: {"bone": name, "at": 0 or 1}
    beyond: float                 # reach of what hangs below this point (hand, foot), 0 at a chain's end
    far: np.ndarray | None        # the farthest point below it (the toe tip, the finger tip)
    names: list[str]              # name words of its bone


def _chain(sk: _Skeleton, root: int) -> tuple[list[_Point], int]:
    """The points along a limb from its root bone down to where it ends or branches into fingers
    or toes; and the index of the point at the branching (or last) bone: the hierarchy's guess
    for the wrist or the ankle."""
    bones, b = [root], root
    while True:
        kids = sk.children[b]
        if not kids:
            break
        reach = {c: sk.reach(c, sk.head[b]) for c in kids}
        main = max(kids, key=lambda c: reach[c])
        others = [c for c in kids if c != main and reach[c] >= 0.4 * reach[main] and not _helper(sk, b, c, main, reach)]
        if others:
            break                       # fingers, palms or toes branch here
        bones.append(main)
        b = main
    pts: list[_Point] = []
    for i in bones:
        if pts and np.linalg.norm(sk.head[i] - pts[-1].pos) < sk.eps:
            continue                    # a bone in the same place as its parent: the same joint
        pts.append(_point(sk, i, sk.head[i], {"bone": sk.names[i], "at": 0.0}))
    last = bones[-1]
    guess = len(pts) - 1
    kids = sk.children[last]
    if kids:                            # branching: the hand or foot root may be a child's head
        centre = np.mean([sk.head[c] for c in kids], axis=0)
        c = min(kids, key=lambda k: np.linalg.norm(sk.head[k] - centre))
        if np.linalg.norm(sk.head[c] - pts[-1].pos) > sk.eps:
            pts.append(_point(sk, c, sk.head[c], {"bone": sk.names[c], "at": 0.0}))
    elif sk.has_tail[last]:
        pts.append(_Point(sk.tail[last], {"bone": sk.names[last], "at": 1.0}, 0.0, None, tokens(sk.names[last])))
    return pts, guess


def _point(sk: _Skeleton, bone: int, pos: np.ndarray, entry: dict) -> _Point:
    p = sk.points(bone)
    d = np.linalg.norm(p - pos, axis=1)
    k = int(np.argmax(d))
    return _Point(pos, entry, float(d[k]), p[k] if d[k] > 0 else None, tokens(sk.names[bone]))


def _helper(sk: _Skeleton, b: int, c: int, main: int, reach: dict) -> bool:
    """A twist or roll bone beside the limb: a leaf whose head lies inside the segment from b to
    the main child (a thumb starts at the wrist or off that line), reaching less far."""
    if sk.children[c] or reach[c] > 0.9 * reach[main]:
        return False
    a, m = sk.head[b], sk.head[main]
    seg = m - a
    t = float((sk.head[c] - a) @ seg / max(seg @ seg, 1e-12))
    return 0.1 <= t <= 1.0 and np.linalg.norm(a + t * seg - sk.head[c]) <= 0.01 * sk.height


def _q(x: float, centre: float, lo: float, hi: float) -> float:
    """Cost of a ratio: small around `centre`, steep outside [lo, hi]."""
    if x <= 0:
        return 10.0
    c = 0.25 * math.log(x / centre) ** 2
    if x < lo:
        c += 4 * math.log(x / lo) ** 2
    if x > hi:
        c += 4 * math.log(x / hi) ** 2
    return c


_WORDS = {
    "shoulder": ({"arm", "upperarm", "uparm", "upper", "shoulder", "humerus"}, {"fore", "lower", "low", "hand", "elbow", "forearm"}),
    "elbow": ({"forearm", "fore", "lower", "lowerarm", "elbow", "radius", "ulna"}, {"upper", "hand"}),
    "wrist": ({"hand", "wrist", "palm"}, {"finger", "thumb", "index"}),
    "hip": ({"thigh", "upleg", "hip", "femur", "upperleg"}, {"joint", "pelvis"}),
    "knee": ({"shin", "calf", "knee", "lowerleg", "leg", "tibia"}, {"up", "upper", "upleg", "thigh"}),
    "ankle": ({"foot", "ankle"}, {"toe", "ball"}),
    "toe": ({"toe", "toes", "ball", "end"}, set()),
}


def _says(words: list[str], part: str, side: str | None = None, name: str = "") -> bool:
    """The bone's name says it is this part (and, given a side, not the other side)."""
    yes, no = _WORDS[part]
    w = set(words)
    if part == "hip" and "up" in w and "leg" in w:
        w.add("upleg")
    if not (yes & w) or (no & w):
        return False
    return side is None or side_of(name) in (None, side)


def _arm(sk: _Skeleton, root: int, axis_at: np.ndarray, names: bool) -> tuple[list[_Point], tuple[int, int, int], int]:
    pts, guess = _chain(sk, root)
    h = sk.height
    best, pick = None, None
    off = [s for s in range(len(pts)) if np.linalg.norm((pts[s].pos - axis_at)[:2]) >= MIDLINE * h]
    for n, s in enumerate(off):
        for e in range(s + 1, len(pts)):
            for w in range(e + 1, len(pts)):
                u = np.linalg.norm(pts[e].pos - pts[s].pos)
                f = np.linalg.norm(pts[w].pos - pts[e].pos)
                hand = pts[w].beyond
                cost = 2 * _q(u / max(f, 1e-12), UPPER_ARM / FOREARM, 0.75, 2.0) + _q(u / h, UPPER_ARM, 0.1, 0.3)
                cost += 0.3 * _q(hand / f, HAND / FOREARM, 0.2, 1.3) if hand > 0 else 0.6
                cost += 0.15 * n            # the first joint off the midline is the shoulder, unless lengths say not
                cost -= 0.3 * min(_bend(pts[s].pos, pts[e].pos, pts[w].pos) / 30.0, 1.0)
                if names:
                    cost -= 0.05 * sum(_says(pts[i].names, p) for i, p in ((s, "shoulder"), (e, "elbow"), (w, "wrist")))
                if best is None or cost < best:
                    best, pick = cost, (s, e, w)
    if pick is None:
        raise NotHumanoid("an arm has no shoulder, elbow and wrist along it")
    return pts, pick, guess


def _leg(sk: _Skeleton, root: int, axis_at: np.ndarray, names: bool) -> tuple[list[_Point], tuple[int, int, int], int]:
    pts, guess = _chain(sk, root)
    h = sk.height
    best, pick = None, None
    off = [s for s in range(len(pts)) if np.linalg.norm((pts[s].pos - axis_at)[:2]) >= PELVIS * h]
    for n, s in enumerate(off):
        for k in range(s + 1, len(pts)):
            for a in range(k + 1, len(pts)):
                t = np.linalg.norm(pts[k].pos - pts[s].pos)
                sh = np.linalg.norm(pts[a].pos - pts[k].pos)
                cost = 2 * _q(t / max(sh, 1e-12), THIGH / SHIN, 0.6, 1.6) + _q(t / h, THIGH, 0.15, 0.35) + 0.15 * n
                foot = pts[a].far
                if foot is None:
                    cost += 1.0
                else:
                    v = foot - pts[a].pos
                    flat = np.linalg.norm(v[:2]) / max(np.linalg.norm(v), 1e-12)
                    cost += (0.0 if flat >= 0.6 else 1.0) + 0.5 * _q(np.linalg.norm(v) / h, FOOT * 0.85, 0.05, 0.25)
                if (pts[a].pos[2] - sk.zmin) / h > 0.15:
                    cost += 1.0
                if names:
                    cost -= 0.05 * sum(_says(pts[i].names, p) for i, p in ((s, "hip"), (k, "knee"), (a, "ankle")))
                if best is None or cost < best:
                    best, pick = cost, (s, k, a)
    if pick is None:
        raise NotHumanoid("a leg has no hip, knee and ankle along it")
    return pts, pick, guess


def _bend(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Degrees the chain a-b-c turns at b."""
    u, v = b - a, c - b
    n = np.linalg.norm(u) * np.linalg.norm(v)
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / n)))) if n > 0 else 0.0


# --- the mapping ----------------------------------------------------------------------------------

def map_bones(bones: list[Bone], names: bool = True) -> dict:
    """The mapping of a humanoid skeleton: {"preset": "auto", "joints": {joint: {"bone", "at"}},
    "how": {joint: "name" | "structure" | "geometry"}}. names=False ignores bone names entirely
    (ties then fall to geometry). NotHumanoid with one line for anything else."""
    sk = _Skeleton(bones)
    trunk = _trunk(sk)
    h = sk.height
    hips_at = sk.head[trunk.hips]
    legs = [_leg(sk, c, hips_at, names) for c in trunk.legs]
    arms = [_arm(sk, c, sk.head[b], names) for b, c in trunk.arms]
    left = _left_axis(sk, legs, names)
    joints: dict[str, dict] = {}
    how: dict[str, str] = {}

    def put(joint: str, point: _Point, structural: bool, part: str | None, side: str | None):
        joints[joint] = dict(point.entry)
        said = names and part is not None and _says(point.names, part, side, point.entry["bone"])
        how[joint] = "name" if said else "structure" if structural else "geometry"

    for kind, limbs, parts in (("leg", legs, ("hip", "knee", "ankle")), ("arm", arms, ("shoulder", "elbow", "wrist"))):
        lateral = [float((pts[pick[0]].pos - hips_at) @ left) for pts, pick, _ in limbs]
        if abs(lateral[0] - lateral[1]) < 0.03 * h or lateral[0] * lateral[1] > 0:
            raise NotHumanoid(f"its {kind}s are not on the two sides of its body")
        for (pts, pick, guess), side in zip(limbs, ("left", "right") if lateral[0] > lateral[1] else ("right", "left")):
            # The hierarchy alone: consecutive joints, an arm's wrist where its fingers branch.
            structural = pick[1] == pick[0] + 1 and pick[2] == pick[1] + 1 and (kind == "leg" or pick[2] == guess)
            for i, part in zip(pick, parts):
                put(f"{side}_{part}", pts[i], structural, part, side)
            if kind == "leg":
                a = pick[2]
                tip = max(range(a + 1, len(pts)), key=lambda i: np.linalg.norm(pts[i].pos - pts[a].pos), default=None)
                if tip is not None:
                    put(f"{side}_toe", pts[tip], tip == len(pts) - 1, "toe", side)
                joints[f"{side}_heel"] = dict(pts[a].entry)
                how[f"{side}_heel"] = how[f"{side}_ankle"]
    if trunk.head is not None:
        _face(sk, trunk.head, joints, how, names)
    return {"preset": "auto", "joints": joints, "how": how}


def _left_axis(sk: _Skeleton, legs, names: bool) -> np.ndarray:
    """The body's left, horizontal: up x forward, forward the way the feet point (toe tips ahead
    of the ankles); without feet, the legs' side names; else Blender's front view (-Y)."""
    fwd = np.zeros(3)
    for pts, pick, _ in legs:
        far = pts[pick[2]].far
        if far is not None:
            fwd += far - pts[pick[2]].pos
    fwd[2] = 0.0
    up = np.array([0.0, 0.0, 1.0])
    if np.linalg.norm(fwd) >= 0.02 * sk.height:
        left = np.cross(up, fwd / np.linalg.norm(fwd))
        return left / np.linalg.norm(left)
    if names:
        sides = [side_of(pts[pick[0]].entry["bone"]) for pts, pick, _ in legs]
        if set(sides) == {"left", "right"}:
            a, b = (pts[pick[0]].pos for pts, pick, _ in legs)
            v = (a - b) if sides[0] == "left" else (b - a)
            v[2] = 0.0
            if np.linalg.norm(v) > 0:
                return v / np.linalg.norm(v)
    return np.array([1.0, 0.0, 0.0])


def _face(sk: _Skeleton, head: int, joints: dict, how: dict, names: bool) -> None:
    """Nose, eyes and ears on the head bone (`anchors` places them by a face model); eye bones
    below the head, when their names say so, give the eyes."""
    name = sk.names[head]
    said = names and "head" in tokens(name)
    for j in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        joints[j] = {"bone": name, "at": 0.0}
        how[j] = "name" if said else "structure"
    if not names:
        return
    for i in range(head + 1, sk.end[head] + 1):
        n = sk.names[i]
        side = side_of(n)
        if "eye" in tokens(n) and side is not None and joints[f"{side}_eye"]["bone"] == name:
            joints[f"{side}_eye"] = {"bone": n, "at": 0.0}
            how[f"{side}_eye"] = "name"
