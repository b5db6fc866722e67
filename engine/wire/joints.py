"""The canonical 2D skeleton: the one list of joints, bones and colours every part of pix2dance uses.

Stdlib only: the Blender add-on ships a copy of this file (copied at build time, never committed).

Keypoints everywhere are arrays of shape (J, 3) or (N, J, 3) in the order of `JOINTS`, each row
(x, y, visibility): x right and y down in pixels of some image, visibility in [0, 1]. A joint with
visibility below `VISIBLE` is not drawn. The joint set is OpenPose-like (BODY_25 without the small
toes and the mid-hip split), chosen so that both MediaPipe's 33 landmarks and a rig's bones can
fill every joint.
"""

from __future__ import annotations

JOINTS: tuple[str, ...] = (
    "nose",             # 0
    "neck",             # 1  (mid-shoulder)
    "right_shoulder",   # 2
    "right_elbow",      # 3
    "right_wrist",      # 4
    "left_shoulder",    # 5
    "left_elbow",       # 6
    "left_wrist",       # 7
    "mid_hip",          # 8
    "right_hip",        # 9
    "right_knee",       # 10
    "right_ankle",      # 11
    "left_hip",         # 12
    "left_knee",        # 13
    "left_ankle",       # 14
    "right_eye",        # 15
    "left_eye",         # 16
    "right_ear",        # 17
    "left_ear",         # 18
    "right_toe",        # 19
    "right_heel",       # 20
    "left_toe",         # 21
    "left_heel",        # 22
)
INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINTS)}
NUM_JOINTS = len(JOINTS)

# Below this visibility a joint counts as unseen: not drawn, not used for statistics.
VISIBLE = 0.5

# Face points: drawn only when the face is seen (see skeleton.hide_unseen_face).
FACE: tuple[str, ...] = ("nose", "right_eye", "left_eye", "right_ear", "left_ear")

# Joints a frame must show to be a usable training pair, and a rig must map to be rendered.
CORE: tuple[str, ...] = (
    "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
)


def mirror_name(name: str) -> str:
    """The joint on the other side of the body: left_knee <-> right_knee; centre joints stay."""
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# Index permutation that swaps left and right (for mirrored augmentation).
MIRROR: tuple[int, ...] = tuple(INDEX[mirror_name(n)] for n in JOINTS)

# Bones as (parent, child) joint names, with an RGB colour each. Right limbs are warm
# (reds, oranges, yellows), left limbs cool (greens, cyans, blues), the trunk and head neutral
# (magenta, white, pinks): the generator must tell left from right, and front from back.
BONES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("neck", "mid_hip", (255, 0, 255)),
    ("neck", "nose", (255, 255, 255)),
    ("neck", "right_shoulder", (255, 0, 0)),
    ("right_shoulder", "right_elbow", (255, 96, 0)),
    ("right_elbow", "right_wrist", (255, 192, 0)),
    ("neck", "left_shoulder", (0, 96, 255)),
    ("left_shoulder", "left_elbow", (0, 192, 255)),
    ("left_elbow", "left_wrist", (0, 255, 255)),
    ("mid_hip", "right_hip", (192, 0, 64)),
    ("right_hip", "right_knee", (255, 64, 128)),
    ("right_knee", "right_ankle", (255, 160, 160)),
    ("right_ankle", "right_heel", (160, 80, 0)),
    ("right_ankle", "right_toe", (255, 255, 0)),
    ("mid_hip", "left_hip", (0, 128, 64)),
    ("left_hip", "left_knee", (0, 255, 0)),
    ("left_knee", "left_ankle", (128, 255, 128)),
    ("left_ankle", "left_heel", (0, 128, 128)),
    ("left_ankle", "left_toe", (0, 255, 160)),
    ("nose", "right_eye", (255, 128, 255)),
    ("right_eye", "right_ear", (255, 192, 255)),
    ("nose", "left_eye", (128, 128, 255)),
    ("left_eye", "left_ear", (192, 192, 255)),
)
BONE_INDEX: tuple[tuple[int, int], ...] = tuple((INDEX[a], INDEX[b]) for a, b, _ in BONES)

# Joint dot colour: the colour of the bone that ends in it (the neck gets the trunk's).
JOINT_COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    next((c for a, b, c in BONES if b == name), (255, 0, 255)) for name in JOINTS
)

# MediaPipe Pose's 33 landmarks (mediapipe.tasks PoseLandmarker), by index.
MEDIAPIPE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
_MP = {name: i for i, name in enumerate(MEDIAPIPE_LANDMARKS)}

# Each canonical joint as the mean of these MediaPipe landmarks (visibility: their minimum).
FROM_MEDIAPIPE: tuple[tuple[int, ...], ...] = tuple(
    {
        "neck": (_MP["left_shoulder"], _MP["right_shoulder"]),
        "mid_hip": (_MP["left_hip"], _MP["right_hip"]),
        "right_toe": (_MP["right_foot_index"],),
        "left_toe": (_MP["left_foot_index"],),
    }.get(name, (_MP.get(name, -1),))
    for name in JOINTS
)
assert all(i >= 0 for group in FROM_MEDIAPIPE for i in group), "every joint maps to MediaPipe"


# --- Body statistics for global pose normalization ("Everybody Dance Now", section 3.3) ---------
# Pure Python on nested sequences, so the client inside Blender can compute a clip's statistics
# without numpy; the engine's normalize.py applies them.


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile of a non-empty list, q in [0, 100]."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _segment(frame, a: str, b: str) -> float | None:
    pa, pb = frame[INDEX[a]], frame[INDEX[b]]
    if pa[2] < VISIBLE or pb[2] < VISIBLE:
        return None
    return ((pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2) ** 0.5


def _side_mean(frame, pairs) -> float | None:
    lengths = [d for d in (_segment(frame, a, b) for a, b in pairs) if d is not None]
    return sum(lengths) / len(lengths) if lengths else None


def body_height(frame) -> float | None:
    """Neck-to-ankle length along the body (torso + thigh + shin), in pixels; None if unseen.

    Summing segment lengths, rather than measuring vertical extent, makes it independent of
    in-plane rotation and bent knees, so a crouch or a handstand does not shrink the dancer.
    """
    torso = _segment(frame, "neck", "mid_hip")
    thigh = _side_mean(frame, [("right_hip", "right_knee"), ("left_hip", "left_knee")])
    shin = _side_mean(frame, [("right_knee", "right_ankle"), ("left_knee", "left_ankle")])
    if torso is None or thigh is None or shin is None:
        return None
    return torso + thigh + shin


def ankle_y(frame) -> float | None:
    """Mean image y of the visible ankles; None if neither is seen."""
    ys = [frame[INDEX[n]][1] for n in ("right_ankle", "left_ankle") if frame[INDEX[n]][2] >= VISIBLE]
    return sum(ys) / len(ys) if ys else None


def body_stats(frames) -> dict | None:
    """A clip's body statistics for global pose normalization, or None if no frame shows a body.

    frames: a sequence of (J, 3) keypoints (lists or arrays), all in pixels of one image.
    Returns a JSON-ready dict: median `height`, `ankle_y` and `center_x` (mid-hip), plus the
    `ankle_far`/`ankle_near` ankle heights (5th/95th percentile of image y: far from and near to
    the camera) and the median body height among the frames at each end (`height_far`/`height_near`).
    """
    rows = []
    for frame in frames:
        h, a = body_height(frame), ankle_y(frame)
        hip = frame[INDEX["mid_hip"]]
        if h is not None and a is not None and h > 0 and hip[2] >= VISIBLE:
            rows.append((float(h), float(a), float(hip[0])))
    if not rows:
        return None
    heights, ankles, centres = zip(*rows)
    far, near = _percentile(list(ankles), 5), _percentile(list(ankles), 95)
    lo, hi = _percentile(list(ankles), 20), _percentile(list(ankles), 80)
    return {
        "frames": len(rows),
        "height": _percentile(list(heights), 50),
        "ankle_y": _percentile(list(ankles), 50),
        "center_x": _percentile(list(centres), 50),
        "ankle_far": far,
        "ankle_near": near,
        "height_far": _percentile([h for h, a, _ in rows if a <= lo], 50),
        "height_near": _percentile([h for h, a, _ in rows if a >= hi], 50),
    }
