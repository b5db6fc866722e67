"""Temporal serving: the engine keeps each sequence's last frame (engine/serve/sequences.py) and continues from it.

The store alone first (bounded: LRU and TTL; a request waits only for an earlier one; a failed one
releases its follower), then a real engine process on loopback with a tiny untrained temporal run.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.serve.sequences import MAX_SEQUENCES, Sequences
from engine.wire.protocol import SequenceRef


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_request_continues_only_from_the_frame_just_before_its_first():
    store = Sequences()
    store.keep("a", 9, "frame 9")
    assert store.previous(SequenceRef("a", 10)) == "frame 9"
    assert store.previous(SequenceRef("a", 11)) is None          # a jump: cold
    assert store.previous(SequenceRef("a", 9)) is None           # the same frame again: cold
    assert store.previous(SequenceRef("b", 10)) is None          # another sequence


def test_the_store_is_bounded_least_recently_used_first():
    store = Sequences(limit=3)
    for i in range(3):
        store.keep(f"s{i}", 0, i)
    assert store.previous(SequenceRef("s0", 1)) == 0             # s0 used: s1 is now the oldest
    store.keep("s3", 0, 3)
    assert len(store) == 3 and "s1" not in store and {"s0", "s2", "s3"} == {s for s in ("s0", "s2", "s3") if s in store}
    assert Sequences().limit == MAX_SEQUENCES == 64


def test_sequences_expire_after_their_ttl_without_use():
    clock = Clock()
    store = Sequences(ttl_s=60, clock=clock)
    store.keep("old", 0, "x")
    clock.now += 30
    store.keep("young", 0, "y")
    clock.now += 31                                              # old: 61 s unused, young: 31 s
    assert "old" not in store and "young" in store
    assert store.previous(SequenceRef("young", 1)) == "y"        # a use renews it
    clock.now += 59
    assert "young" in store
    clock.now += 2
    assert len(store) == 0


def test_a_follower_waits_for_an_earlier_predecessor_and_not_after_it_ends_or_fails():
    store = Sequences()
    first = store.begin(SequenceRef("a", 0), 8)                  # frames 0-7
    second = store.begin(SequenceRef("a", 8), 8)                 # frames 8-15: follows the first
    other = store.begin(SequenceRef("b", 8), 8)                  # another sequence: never waits
    assert store.waits(second) and not store.waits(first) and not store.waits(other)
    store.end(first, "frame 7")
    assert not store.waits(second) and store.previous(SequenceRef("a", 8)) == "frame 7"
    third = store.begin(SequenceRef("a", 16), 4)
    assert store.waits(third)
    store.end(second)                                            # failed: nothing kept, the follower goes cold
    store.end(second)                                            # ending twice is harmless
    assert not store.waits(third) and store.previous(SequenceRef("a", 16)) is None


def test_a_request_queued_later_never_holds_up_one_queued_before_it():
    store = Sequences()
    late = store.begin(SequenceRef("a", 8), 8)                   # frames 8-15, queued first
    early = store.begin(SequenceRef("a", 0), 8)                  # frames 0-7, queued after it
    assert not store.waits(late) and not store.waits(early)
