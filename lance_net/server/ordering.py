"""Replies that finish out of order but must leave in the order their requests came.

Owns one ordered stream of frames per connection; what the frames say is decided elsewhere.
"""
from __future__ import annotations

from collections import deque
from typing import Callable


class Slot:
    """A place in an ordered stream, filled later with the frame's buffers."""

    __slots__ = ("buffers",)

    def __init__(self) -> None:
        self.buffers: list | None = None


class OrderedReplies:
    """Slots are reserved in request order; a filled slot leaves once every earlier one has.

    A filled head is flushed at the end of the current event-loop turn, together
    with every slot filled behind it meanwhile, in one `write(buffers)` call: a
    group commit that acks many batches of a connection costs one socket write.
    """

    __slots__ = ("_slots", "_write", "_call_soon", "_flush_pending")

    def __init__(self, write: Callable[[list], None], call_soon: Callable):
        self._slots: deque[Slot] = deque()
        self._write = write
        self._call_soon = call_soon
        self._flush_pending = False

    def __len__(self) -> int:
        return len(self._slots)

    def reserve(self) -> Slot:
        slot = Slot()
        self._slots.append(slot)
        return slot

    def fill(self, slot: Slot, buffers: list) -> None:
        slot.buffers = buffers
        if not self._flush_pending and self._slots and self._slots[0] is slot:
            self._flush_pending = True
            self._call_soon(self._flush)

    def send(self, buffers: list) -> None:
        """A reply that is ready now: it leaves at once unless earlier ones are pending."""
        if not self._slots:
            self._write(buffers)
        else:
            self.fill(self.reserve(), buffers)

    def _flush(self) -> None:
        self._flush_pending = False
        slots = self._slots
        out: list = []
        while slots and slots[0].buffers is not None:
            out += slots.popleft().buffers
        if out:
            self._write(out)

    def clear(self) -> None:
        self._slots.clear()
