"""The engine's open sequences: the last frame of each, so the next request of a sequence continues from it.

    store = Sequences()                             # the server holds one; it calls it under its own lock
    ticket = store.begin(ref, count)                # a request of sequence ref.id is queued
    store.waits(ticket)                             # True while an earlier queued or running request
                                                    # of that sequence will produce frame ref.frame - 1
    previous = store.previous(ref)                  # the kept frame when it is frame ref.frame - 1, else None
    store.end(ticket, last)                         # done (keeps `last`, a sequence.Previous) or failed (None)

A temporal model (engine.model.temporal) draws each frame from its pose and its own previous frame.
A client names a timeline by a sequence id (protocol "sequence"); the engine keeps that timeline's
last generated frame (RGBA at the model's size, S x S x 4 bytes: 256 KiB at 256 px) and its frame
number. Bounded: at most MAX_SEQUENCES sequences, the least recently used dropped first, and each
is dropped SEQUENCE_TTL_S after its last use, so a client that vanishes leaks nothing.

Tickets order a sequence's requests: a request waits only for an EARLIER one (a lower ticket)
that ends on the frame before its first, so one queued later never holds up one queued before it
(and waits only ever point to earlier frames: no cycle). A failed predecessor ends its ticket
without a frame: its follower then starts cold.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.wire.protocol import SequenceRef

if TYPE_CHECKING:
    from engine.model.sequence import Previous

MAX_SEQUENCES = 64          # open sequences kept; 16 MiB of frames at 256 px
SEQUENCE_TTL_S = 60.0       # seconds a sequence is kept after its last use


@dataclass
class Kept:
    """A sequence's last generated frame and its number."""
    frame: int
    previous: "Previous"
    used: float              # clock time of the last use


@dataclass(frozen=True)
class Ticket:
    """A queued request of a sequence: it produces frames [first, last] of `id`; `order` ranks requests."""
    id: str
    first: int
    last: int
    order: int


class Sequences:
    """Sequence id -> its kept frame (LRU, TTL), and the requests of each sequence in progress.

    Not thread-safe: the server calls it under its lock. clock: seconds, monotonic (tests pass their own)."""

    def __init__(self, limit: int = MAX_SEQUENCES, ttl_s: float = SEQUENCE_TTL_S, clock=time.monotonic):
        self.limit, self.ttl_s, self.clock = limit, ttl_s, clock
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._producing: dict[tuple[str, int], set[int]] = {}     # (id, last frame) -> orders in progress
        self._orders = itertools.count()

    def __len__(self) -> int:
        self._expire()
        return len(self._kept)

    def __contains__(self, sequence_id: str) -> bool:
        self._expire()
        return sequence_id in self._kept

    def begin(self, ref: SequenceRef, count: int) -> Ticket:
        """A request of `count` frames continuing `ref` is queued."""
        ticket = Ticket(ref.id, ref.frame, ref.frame + count - 1, next(self._orders))
        self._producing.setdefault((ticket.id, ticket.last), set()).add(ticket.order)
        return ticket

    def waits(self, ticket: Ticket) -> bool:
        """Whether an earlier request still in progress will produce the frame before this one's first."""
        orders = self._producing.get((ticket.id, ticket.first - 1), ())
        return any(order < ticket.order for order in orders)

    def end(self, ticket: Ticket, last: "Previous | None" = None) -> None:
        """The request is done (`last`: its last frame, kept) or failed (None); ending twice is harmless."""
        orders = self._producing.get((ticket.id, ticket.last))
        if orders is not None:
            orders.discard(ticket.order)
            if not orders:
                del self._producing[(ticket.id, ticket.last)]
        if last is not None:
            self.keep(ticket.id, ticket.last, last)

    def previous(self, ref: SequenceRef) -> "Previous | None":
        """The kept frame of `ref.id` when it is frame ref.frame - 1 (the request continues it), else None."""
        self._expire()
        kept = self._kept.get(ref.id)
        if kept is None:
            return None
        kept.used = self.clock()
        self._kept.move_to_end(ref.id)
        return kept.previous if kept.frame == ref.frame - 1 else None

    def keep(self, sequence_id: str, frame: int, previous: "Previous") -> None:
        """Keep `previous` as frame number `frame` of the sequence, dropping the least recently used beyond the limit."""
        self._expire()
        self._kept[sequence_id] = Kept(frame, previous, self.clock())
        self._kept.move_to_end(sequence_id)
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        while self._kept:
            oldest = next(iter(self._kept.values()))     # least recently used first: stop at the first fresh one
            if oldest.used > cutoff:
                return
            self._kept.popitem(last=False)
