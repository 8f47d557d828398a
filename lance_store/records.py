"""TLV records: the type table, the limits, and encoding records into a payload.

Decoding in bulk belongs to `lance_store.scanner` (C with a Python twin); this
module only builds payloads and walks small ones.
"""
from __future__ import annotations

import os
import struct
from itertools import chain, repeat
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

from .errors import InvalidRecordError

RAW, JSON, MSGPACK, PROTOBUF, AVRO = 0x00, 0x01, 0x02, 0x03, 0x04
PADDING = 0xFD
BATCH_HEADER = 0xFE
EXTENDED = 0xFF

HEADER_LEN = 5             # type u8 | length u32
EXT_HEADER_LEN = 7         # 0xFF | ext_type u16 | length u32
MAX_VALUE_LEN = 16 * 1024 * 1024

_TL = struct.Struct("<BI")
_EXT = struct.Struct("<BHI")

RecordInput = Union[bytes, bytearray, memoryview, tuple]


@dataclass(frozen=True, slots=True)
class Record:
    """One record as readers see it."""

    offset: int            # topic byte offset of the record's TLV header
    sortkey: "object"      # lance_store.sortkey.SortKey
    type: int
    value: bytes | memoryview
    ext_type: int = 0


def _check(rtype: int, value_len: int, index: int) -> None:
    if value_len > MAX_VALUE_LEN:
        raise InvalidRecordError(
            f"record {index}: value of {value_len} bytes exceeds the {MAX_VALUE_LEN}-byte limit"
        )
    if rtype in (PADDING, BATCH_HEADER):
        raise InvalidRecordError(f"record {index}: type 0x{rtype:02X} is reserved for the engine")
    if not 0 <= rtype <= 0xFF:
        raise InvalidRecordError(f"record {index}: type {rtype} is not a byte")


def encode(records: Sequence[RecordInput], default_type: int = RAW) -> tuple[bytes, int]:
    """Pack records into one payload; returns (payload, record_count).

    A record is bytes-like (stored with `default_type`), a (type, value) pair,
    or an (0xFF, ext_type, value) triple.
    """
    parts: list = []
    append = parts.append
    tl = _TL.pack
    count = 0
    for count, rec in enumerate(records, 1):
        if isinstance(rec, tuple):
            if len(rec) == 3:
                rtype, ext, value = rec
                _check(EXTENDED, len(value), count - 1)
                append(_EXT.pack(EXTENDED, ext, len(value)))
                append(value)
                continue
            rtype, value = rec
        else:
            rtype, value = default_type, rec
        n = len(value)
        if n > MAX_VALUE_LEN or rtype in (PADDING, BATCH_HEADER, EXTENDED) or rtype < 0 or rtype > 0xFF:
            if rtype == EXTENDED:
                raise InvalidRecordError(f"record {count - 1}: type 0xFF needs (0xFF, ext_type, value)")
            _check(rtype, n, count - 1)
        append(tl(rtype, n))
        append(value)
    return b"".join(parts), count


def encode_uniform(values: Sequence[bytes], rtype: int = RAW) -> tuple[bytes, int]:
    """Fast path for the common case: bytes values that all share one type.

    The C encoder builds the payload in place; its Python twin interleaves
    headers made by map() with the values, so even the twin does no
    Python-level work per record outside C iterators.
    """
    if rtype in (PADDING, BATCH_HEADER, EXTENDED) or not 0 <= rtype <= 0xFF:
        _check(rtype, 0, 0)
    if _native_encode is not None:
        try:
            return _native_encode(values, rtype), len(values)
        except ValueError as exc:
            raise InvalidRecordError(str(exc)) from None
    lengths = list(map(len, values))
    if lengths and max(lengths) > MAX_VALUE_LEN:
        bad = next(i for i, n in enumerate(lengths) if n > MAX_VALUE_LEN)
        _check(rtype, lengths[bad], bad)
    headers = map(_TL.pack, repeat(rtype), lengths)
    return b"".join(chain.from_iterable(zip(headers, values))), len(lengths)


def _encoded_size_py(values: Sequence) -> int:
    lengths = list(map(len, values))
    if lengths and max(lengths) > MAX_VALUE_LEN:
        bad = next(i for i, n in enumerate(lengths) if n > MAX_VALUE_LEN)
        raise InvalidRecordError(f"record {bad}: value of {lengths[bad]} bytes exceeds the "
                                 f"{MAX_VALUE_LEN}-byte limit")
    return HEADER_LEN * len(lengths) + sum(lengths)


def _encode_into_py(values: Sequence, rtype: int, out, pos: int) -> int:
    """Reference twin of the C encoder: TLV records of one type written into `out` at `pos`."""
    if not 0 <= rtype <= 0xFC:
        raise InvalidRecordError(f"record type 0x{rtype:X} cannot be encoded as a plain record")
    view = memoryview(out).cast("B")
    for i, v in enumerate(values):
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise TypeError(f"record {i} is not bytes-like ({type(v).__name__})")
        n = len(v)
        if n > MAX_VALUE_LEN:
            raise InvalidRecordError(f"record {i}: value of {n} bytes exceeds the {MAX_VALUE_LEN}-byte limit")
        if len(view) - pos < HEADER_LEN + n:
            raise BufferError(f"record {i} does not fit: {len(view) - pos} bytes left at {pos}")
        _TL.pack_into(view, pos, rtype, n)
        view[pos + HEADER_LEN:pos + HEADER_LEN + n] = v
        pos += HEADER_LEN + n
    return pos


def _load_encoder():
    if os.environ.get("LANCE_NO_EXTENSIONS", "") not in ("", "0"):
        return _encoded_size_py, _encode_into_py, "python", None
    try:
        from ._native import _encode
    except ImportError:
        return _encoded_size_py, _encode_into_py, "python", None

    def size(values):
        try:
            return _encode.encoded_size(values)
        except ValueError as exc:
            raise InvalidRecordError(str(exc)) from None

    def into(values, rtype, out, pos):
        try:
            return _encode.encode_into(values, rtype, out, pos)
        except ValueError as exc:
            raise InvalidRecordError(str(exc)) from None

    return size, into, "c", _encode.encode


# encoded_size(values) and encode_into(values, type, out, pos): the C encoder
# when built, else its Python twin (LANCE_NO_EXTENSIONS=1 forces the twin).
encoded_size, encode_into, ENCODER, _native_encode = _load_encoder()


def padding(n: int) -> bytes:
    """A padding record occupying exactly n bytes (n >= 5)."""
    out = bytearray(n)
    put_padding(out, 0, n)
    return bytes(out)


def put_padding(buf, pos: int, n: int) -> None:
    """Write a padding record of exactly n bytes (n >= 5) at buf[pos:pos + n], in place
    (its body zeroed: a pooled buffer holds old bytes)."""
    if n < HEADER_LEN:
        raise ValueError(f"a padding record needs at least {HEADER_LEN} bytes, got {n}")
    _TL.pack_into(buf, pos, PADDING, n - HEADER_LEN)
    buf[pos + HEADER_LEN:pos + n] = bytes(n - HEADER_LEN)


def iter_tlv(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int, int]]:
    """Walk a run of TLV records: yields (pos, type, ext_type, value_pos, value_len).

    Raises InvalidRecordError naming the position when a record does not fit.
    For small payloads and tools; bulk work uses the scanner.
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        if pos + HEADER_LEN > end:
            raise InvalidRecordError(f"truncated record header at byte {pos}")
        rtype = buf[pos]
        if rtype == EXTENDED:
            if pos + EXT_HEADER_LEN > end:
                raise InvalidRecordError(f"truncated extended record header at byte {pos}")
            _, ext, n = _EXT.unpack_from(buf, pos)
            vpos = pos + EXT_HEADER_LEN
        else:
            ext = 0
            _, n = _TL.unpack_from(buf, pos)
            vpos = pos + HEADER_LEN
        if vpos + n > end:
            raise InvalidRecordError(
                f"record at byte {pos} claims {n} value bytes but only {end - vpos} remain"
            )
        yield pos, rtype, ext, vpos, n
        pos = vpos + n
