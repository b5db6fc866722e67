"""Frames of one sequence in the order a temporal generator needs them, while a batch still fills.

    seq = Sequence(framed, first, count, temporal=True, lanes=4)   # or predictor.sequence(framed, ...)
    while not seq.done:
        indices = seq.take(room)                      # at most one frame per lane, each lane in order
        outputs = predictor.generate(seq.inputs(indices))
        for k, output in seq.feed(indices, outputs):  # the kept frames: k in [0, count)
            ...
    seq.last                                          # Previous: what to continue from in a later request

A temporal generator (engine.model.temporal) sees its own previous output, so the frames of one
sequence must be generated one after the other. To keep a batch full anyway, the wanted frames
[first, first + count) are split into `lanes` contiguous ranges, and each batch advances every lane
by one frame. A lane starts cold (BLANK) `warmup` frames before its first kept frame and drops
those warm-up frames (they settle it: the frame before a lane's first is then generated as the
lane before it generated it, up to what the warm-up forgot); lane 0 warms up on the context poses
`framed` holds before `first`, or continues from `previous` (the last frame of an earlier request
of the same sequence) without any warm-up. So lanes change only how a range starts, and the cost is
`warmup` extra frames per lane: MIN_LANE keeps that at most a quarter.

A non-temporal run goes through the same calls: one lane, frames in order, any number at a time,
no warm-up, so its frames and speed are as they were.

Memory: besides `framed`, a Sequence holds one (S, S, 4) uint8 output and one crop per lane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.model.temporal import WARMUP, condition_uint8

MIN_LANE = 16                 # fewest kept frames per lane (warm-up costs WARMUP per lane)


def lane_count(count: int, max_batch: int, temporal: bool) -> int:
    """Lanes for `count` frames: enough to fill a batch of max_batch, each at least MIN_LANE frames long."""
    if not temporal:
        return 1
    return int(min(max(count // MIN_LANE, 1), max_batch))


def consecutive_runs(values: list[int]) -> list[tuple[int, int]]:
    """Positions [a, b) of each run of consecutive values: [3, 4, 5, 9, 10] -> [(0, 3), (3, 5)]."""
    runs, at = [], 0
    while at < len(values):
        end = at + 1
        while end < len(values) and values[end] == values[end - 1] + 1:
            end += 1
        runs.append((at, end))
        at = end
    return runs


@dataclass
class Previous:
    """What one open sequence holds between requests (S * S * 4 bytes + 3 floats)."""
    rgba: np.ndarray              # (S, S, 4) uint8: the last output crop
    crop: np.ndarray              # (3,) float32: its crop (cx, cy, side) in canvas pixels


@dataclass(eq=False)                          # lanes are told apart by identity
class _Lane:
    """One contiguous range: frames [start, stop) are kept, generation begins at `begin` (<= start)."""
    begin: int
    start: int
    stop: int
    cursor: int = 0                           # the next frame to generate
    pending: bool = False                     # `cursor` was taken and is not fed yet
    rgba: np.ndarray | None = None            # the previous output (None: cold, BLANK)
    crop: np.ndarray | None = None            # its crop

    def __post_init__(self):
        self.cursor = self.begin


class Sequence:
    """Frames [first, first + count) of `framed` (a predictor.Framed, which may hold context poses before
    and after them), handed out, conditioned and collected in the order the generator needs them."""

    def __init__(self, framed, first: int, count: int, *, temporal: bool, lanes: int = 1,
                 warmup: int = WARMUP, previous: Previous | None = None):
        if first < 0 or count < 0 or first + count > len(framed):
            raise ValueError(f"frames [{first}, {first + count}) are not all in a framed sequence of {len(framed)}")
        self.framed, self.first, self.count, self.temporal = framed, first, count, temporal
        self.warm = temporal and previous is not None and count > 0
        self._last: Previous | None = None
        # Taken, not yet fed: framed index -> its lanes, in lane order. A lane's warm-up generates frames
        # the lane before it keeps, so one index may be under way twice (differently conditioned).
        self._taken: dict[int, list[_Lane]] = {}
        if not temporal:
            self._lanes = [_Lane(first, first, first + count)]
            return
        lanes = max(1, min(int(lanes), count))
        bounds = [first + count * k // lanes for k in range(lanes + 1)]
        self._lanes = [_Lane(max(0, a - warmup), a, b) for a, b in zip(bounds, bounds[1:])] if count else []
        if self.warm:
            lane = self._lanes[0]
            lane.begin = lane.cursor = first
            lane.rgba = np.ascontiguousarray(previous.rgba, np.uint8)
            lane.crop = np.asarray(previous.crop, np.float32)

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def done(self) -> bool:
        """Every kept frame fed."""
        return not self._taken and all(lane.cursor == lane.stop for lane in self._lanes)

    @property
    def last(self) -> Previous | None:
        """Output and crop of the last kept frame (frame first + count - 1), once it is fed."""
        return self._last

    def take(self, room: int) -> list[int]:
        """Indices into framed ready to generate, at most `room`; temporal: at most one per lane, none of a
        lane whose last frame is not fed yet. Earlier lanes first: frames then come out nearer their order."""
        if not self.temporal:
            lane = self._lanes[0]
            indices = list(range(lane.cursor, min(lane.cursor + max(room, 0), lane.stop)))
            lane.cursor += len(indices)
            self._taken.update((i, [lane]) for i in indices)
            return indices
        indices = []
        for lane in self._lanes:
            if len(indices) >= room:
                break
            if not lane.pending and lane.cursor < lane.stop:
                lane.pending = True
                indices.append(lane.cursor)
                self._taken.setdefault(lane.cursor, []).append(lane)
        return indices

    def inputs(self, indices: list[int]) -> np.ndarray:
        """(n, S, S, C_in) uint8 for taken frames: skeletons drawn as in training (framed.skeletons) and,
        temporal, each conditioned on its lane's previous output moved into its crop."""
        skeletons = self._skeletons(indices)
        if not self.temporal:
            return skeletons
        lanes = self._lanes_of(indices)
        if all(lane.rgba is None for lane in lanes):
            return condition_uint8(skeletons, None, None, None)
        crops = self._crops(indices)
        size = self.framed.size
        previous = np.stack([np.zeros((size, size, 4), np.uint8) if lane.rgba is None else lane.rgba
                             for lane in lanes])
        # A cold row is all zeros, BLANK whatever its crops: give it its own crop (a finite warp).
        previous_crops = np.stack([crop if lane.crop is None else lane.crop for lane, crop in zip(lanes, crops)])
        return condition_uint8(skeletons, previous, previous_crops, crops)

    def feed(self, indices: list[int], outputs: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Outputs (n, S, S, C) for taken `indices` -> the kept ones as (k, output), k in [0, count);
        warm-up frames are dropped."""
        if len(outputs) != len(indices):
            raise ValueError(f"{len(outputs)} outputs for {len(indices)} frames")
        kept = []
        crops = self._crops(indices) if self.temporal else None
        lanes = self._lanes_of(indices)
        for i, lane in zip(indices, lanes):
            taken = self._taken[i]
            taken.remove(lane)
            if not taken:
                del self._taken[i]
        for n, (i, lane) in enumerate(zip(indices, lanes)):
            output = outputs[n]
            if self.temporal:
                # A copy: a view would keep the whole batch alive for as long as the lane lives.
                lane.rgba, lane.crop, lane.pending = np.array(output[..., :4], np.uint8), crops[n], False
                lane.cursor += 1
            if i >= lane.start:
                kept.append((i - self.first, output))
            if i == self.first + self.count - 1:
                rgba = lane.rgba if self.temporal else np.array(output, np.uint8)
                crop = crops[n] if self.temporal else self._crops([i])[0]
                self._last = Previous(rgba, crop)
        return kept

    def _lanes_of(self, indices: list[int]) -> list[_Lane]:
        """The lane of each taken index: the n-th time an index appears, its n-th lane (take's order)."""
        seen: dict[int, int] = {}
        lanes = []
        for i in indices:
            n = seen[i] = seen.get(i, -1) + 1
            taken = self._taken.get(i, ())
            if n >= len(taken):
                raise ValueError(f"frame {i} was not taken, or was fed already")
            lanes.append(taken[n])
        return lanes

    def _skeletons(self, indices: list[int]) -> np.ndarray:
        """framed.skeletons over each run of consecutive indices (a non-temporal batch is one slice)."""
        parts = [self.framed.skeletons(indices[a], indices[b - 1] + 1) for a, b in consecutive_runs(indices)]
        if not parts:
            return self.framed.skeletons(0, 0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _crops(self, indices: list[int]) -> np.ndarray:
        """(n, 3) float32 crops; a run without crops (one fixed square) warps by nothing."""
        if self.framed.crops is None:
            size = self.framed.size
            return np.tile(np.float32([size / 2, size / 2, size]), (len(indices), 1))
        return np.asarray(self.framed.crops[indices], np.float32)
