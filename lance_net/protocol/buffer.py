"""The receive buffer of a connection: bytes in arrival order, read from the front.

Owns memory and positions only; it knows nothing of frames.

Every byte is copied in once and moved at most O(1) times on average, whatever
the sizes of the chunks that bring it: the storage is a bytearray whose live
bytes are moved to the front only when the free room at the end runs out, and
which doubles when that is not enough. It is kept between frames, because
handing memory back and faulting it in again costs more than the copy itself.
"""
from __future__ import annotations

from .frames import Buffer

# An emptied buffer larger than this is given back, so idle connections stay
# small. It is large enough for the fetch responses consumers ask for (a few
# MiB): regrowing a buffer for every large frame costs more than the copy.
KEEP_CAPACITY = 8 * 1024 * 1024 + 64 * 1024
_MIN_CAPACITY = 4096


class ReceiveBuffer:
    __slots__ = ("data", "start", "end", "consumed")

    def __init__(self) -> None:
        self.data = bytearray()  # live bytes are data[start:end]
        self.start = 0
        self.end = 0
        self.consumed = 0        # stream bytes consumed before data[start]

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, chunk: Buffer) -> None:
        size = len(chunk)
        if self.end + size > len(self.data):
            self._make_room(size)
        self.data[self.end:self.end + size] = chunk
        self.end += size

    def _make_room(self, size: int) -> None:
        live = self.end - self.start
        need = live + size
        capacity = len(self.data)
        if need <= capacity // 2:
            self.data[:live] = self.data[self.start:self.end]
        else:
            grown = bytearray(max(need, 2 * capacity, _MIN_CAPACITY))
            grown[:live] = self.data[self.start:self.end]
            self.data = grown
        self.start = 0
        self.end = live

    def room(self, size: int) -> memoryview:
        """At least `size` free bytes at the end, for a read straight into the
        buffer; `grew(n)` then counts the n bytes that landed there."""
        if self.end + size > len(self.data):
            self._make_room(size)
        return memoryview(self.data)[self.end:]

    def grew(self, nbytes: int) -> None:
        if not 0 <= nbytes <= len(self.data) - self.end:
            raise ValueError(f"{nbytes} bytes cannot have landed in {len(self.data) - self.end} free bytes")
        self.end += nbytes

    def copy(self, offset: int, size: int) -> bytes:
        """size bytes starting offset bytes past the front, as a new bytes object."""
        at = self.start + offset
        with memoryview(self.data) as view:
            return bytes(view[at:at + size])

    def consume(self, size: int) -> None:
        self.start += size
        self.consumed += size
        if self.start == self.end:
            self.start = self.end = 0
            if len(self.data) > KEEP_CAPACITY:
                self.data = bytearray()

    def tail(self) -> bytes:
        """Every live byte, copied."""
        return bytes(self.data[self.start:self.end])


class StreamInput:
    """What every sans-IO decoder does with received bytes: buffer them, note
    the peer's end of stream, and keep failing once a fatal error was raised."""

    # Raised when bytes arrive after the peer's end of stream.
    after_eof_error: type[Exception] = RuntimeError

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._error: Exception | None = None

    @property
    def failed(self) -> Exception | None:
        """The fatal error that ended the stream, if one did."""
        return self._error

    def receive_buffer(self, size: int) -> memoryview:
        """Free room (at least `size` bytes) to read the peer's bytes into, as
        asyncio.BufferedProtocol.get_buffer wants; `received(n)` counts them.
        Saves the copy of receive_data() on large transfers."""
        if self._error is not None:
            raise self._error
        if self._eof:
            raise self.after_eof_error("receive_buffer() after the end of the stream")
        return self._buffer.room(size)

    def received(self, nbytes: int) -> None:
        """`nbytes` bytes were written into the room receive_buffer() gave."""
        self._buffer.grew(nbytes)

    def receive_data(self, data: Buffer) -> None:
        """Buffer bytes read from the peer; b"" means the peer closed its side."""
        if self._error is not None:
            raise self._error
        if not data:
            self._eof = True
            return
        if self._eof:
            raise self.after_eof_error("receive_data() after the end of the stream")
        self._buffer.append(data)
