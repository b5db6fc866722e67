"""Which sampled frames a dataset keeps, and why not: one dancer, seen whole, her mask agreeing with her pose.

    kp, reason = classify(people)          # (J, 3) keypoints of the dancer, or None and a drop reason
    if mask_mismatch(kp, mask): ...        # her mask is a second person, a shadow, or nothing
    boxed = BoxedMask.of(mask)             # the mask kept small between the dataset's two passes

A frame must show the trunk (shoulders and hips: the body's frame and its measure) and all but
MAX_HIDDEN_LIMB_JOINTS of the elbows, wrists, knees and ankles. An arm hidden behind the body
while the dancer turns is a real pose whose skeleton simply lacks that arm; requiring every core
joint threw away about 40% of dancer_long_320x240.mp4, turns above all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.framing import TORSO_SHARE
from engine.wire.joints import CORE, INDEX, VISIBLE, body_height

DROP_REASONS = ("no_person", "low_visibility", "two_people", "mask_mismatch", "outside_crop")
MAX_HIDDEN_LIMB_JOINTS = 2
MASK_MIN_AREA = 0.05    # a mask smaller than this x body height^2 is not her (a missed or torn mask)
MASK_INSIDE = 0.8       # at least this share of her mask lies in her keypoints' box, grown by
MASK_GROW = 0.25        # this x body height (hair, clothes, limbs between joints)
MASK_FLOOR = 5          # mask values (0-255) below this are noise: not kept
CORE_INDEX = np.array([INDEX[n] for n in CORE])
_TRUNK = np.array([INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")])
_LIMBS = np.array([INDEX[n] for n in CORE if INDEX[n] not in _TRUNK])


def classify(people: list[np.ndarray]) -> tuple[np.ndarray | None, str | None]:
    """(the dancer's keypoints, None) for a usable frame, or (None, drop reason).

    people: the persons found, most confident first. A second person counts only when its limbs
    are seen (mean core visibility >= VISIBLE): a faint ghost does not spoil the frame. The
    keypoints returned are the very array passed in (callers find its mask by identity).
    """
    people = [p for p in people if np.isfinite(p).all() and (p[:, 2] >= VISIBLE).any()]
    if not people:
        return None, "no_person"
    if len(people) >= 2 and float(np.mean(people[1][CORE_INDEX, 2])) >= VISIBLE:
        return None, "two_people"
    kp = people[0]
    if np.any(kp[_TRUNK, 2] < VISIBLE) or np.sum(kp[_LIMBS, 2] < VISIBLE) > MAX_HIDDEN_LIMB_JOINTS:
        return None, "low_visibility"
    return kp, None


def person_box(kp: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around the visible joints of (J, 3) keypoints."""
    xy = kp[kp[:, 2] >= VISIBLE, :2]
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def body_measure(kp: np.ndarray) -> float | None:
    """Neck-to-ankle body height in pixels, from the torso alone when the legs are unseen; None if neither."""
    height = body_height(kp)
    if height:
        return float(height)
    neck, hip = kp[INDEX["neck"]], kp[INDEX["mid_hip"]]
    if neck[2] < VISIBLE or hip[2] < VISIBLE:
        return None
    torso = float(np.hypot(*(neck[:2] - hip[:2])))
    return torso / TORSO_SHARE if torso > 0 else None


def mask_mismatch(kp: np.ndarray, mask: "BoxedMask") -> bool:
    """True when the dancer's mask disagrees with her pose: too small, or mostly outside her body's box."""
    height = body_measure(kp)
    if height is None:
        return False                          # nothing to compare with; classify keeps only trunks
    person = mask.tile > 127
    area = int(person.sum())
    if area < MASK_MIN_AREA * height * height:
        return True
    x0, y0, x1, y1 = person_box(kp)
    grow = MASK_GROW * height
    # The grown box in the tile's pixels, clipped to the tile.
    bx0, by0 = max(0, int(np.floor(x0 - grow)) - mask.x), max(0, int(np.floor(y0 - grow)) - mask.y)
    bx1, by1 = max(0, int(np.ceil(x1 + grow)) + 1 - mask.x), max(0, int(np.ceil(y1 + grow)) + 1 - mask.y)
    inside = int(person[by0:by1, bx0:bx1].sum())
    return inside < MASK_INSIDE * area


@dataclass(frozen=True)
class BoxedMask:
    """A person mask kept as its non-zero box: `tile` (h, w) uint8 0-255 at (x, y) of a (height, width) frame.

    The mask is mostly zeros; between the dataset's passes only the box around the person is held
    (a 1080p frame's mask is 2 MB, the box around a dancer a few hundred kB).
    """
    x: int
    y: int
    tile: np.ndarray
    height: int
    width: int

    @classmethod
    def of(cls, mask: np.ndarray) -> "BoxedMask":
        """Box an (H, W) uint8 mask (values below MASK_FLOOR dropped as noise)."""
        mask = np.asarray(mask, np.uint8)
        h, w = mask.shape
        rows, cols = np.flatnonzero((mask >= MASK_FLOOR).any(axis=1)), np.flatnonzero((mask >= MASK_FLOOR).any(axis=0))
        if not len(rows):
            return cls(0, 0, np.zeros((0, 0), np.uint8), h, w)
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        tile = mask[y0:y1, x0:x1].copy()
        tile[tile < MASK_FLOOR] = 0
        return cls(int(x0), int(y0), tile, h, w)

    def full(self) -> np.ndarray:
        """The (height, width) uint8 mask."""
        out = np.zeros((self.height, self.width), np.uint8)
        th, tw = self.tile.shape
        out[self.y:self.y + th, self.x:self.x + tw] = self.tile
        return out

    def crop(self, crop, size: int) -> np.ndarray:
        """(size, size) uint8: the mask in a person-centred crop (cx, cy, side) of its frame, zero outside.

        Cut from the full mask, not the tile: framing.crop_image's area filter scales whole images,
        and the same scaling as the frame's keeps mask and frame on the same pixels."""
        from engine.data.framing import crop_image
        return crop_image(self.full(), crop, size)
