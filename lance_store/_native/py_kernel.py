"""The pure-Python scanner kernel: the readable reference the C kernel must match bit for bit.

It walks one record at a time, so it is slow; `lance_store.scanner` uses it only without the C build.
"""
import struct

import crc32c as _crc32c

from . import (
    BATCH_HEADER, BATCH_OVERHEAD, EXT_HEADER_LEN, EXTENDED, FLAG_LZ4, HEADER_LEN, HEADER_SIZE,
    MAGIC, PADDING, REASON_CODE, STATUS_END, STATUS_FAULT, STATUS_FULL, U64, VERSION, Stop,
)

NAME = "python"
CRC_IMPLEMENTATION = "crc32c package"
_MAGIC = struct.unpack("<I", MAGIC)[0]
_FIELDS = struct.Struct("<IBBHQQQQQQIIII")  # the 72-byte batch header
_ZERO_CHUNK = bytes(1 << 16)


def crc32c(data, value: int = 0) -> int:
    return _crc32c.crc32c(data, value)


def all_zero(buf: memoryview, pos: int) -> bool:
    for at in range(pos, len(buf), len(_ZERO_CHUNK)):
        chunk = buf[at:at + len(_ZERO_CHUNK)]
        if chunk != _ZERO_CHUNK[:len(chunk)]:
            return False
    return True


def _fault(pos, offset, reason, expected, found, padding=0):
    return Stop(STATUS_FAULT, pos, padding, pos, offset & U64, REASON_CODE[reason], expected, found)


def _check_batch(buf: memoryview, pos: int, seg_base: int):
    """None when the batch at pos is valid, else the Stop describing why not."""
    rem = len(buf) - pos
    offset = (seg_base + pos) & U64
    if rem < HEADER_LEN:
        return _fault(pos, offset, "torn batch", BATCH_OVERHEAD, rem)
    (hlen,) = struct.unpack_from("<I", buf, pos + 1)
    if hlen != HEADER_SIZE:
        return _fault(pos, offset, "bad batch header length", HEADER_SIZE, hlen)
    if rem < BATCH_OVERHEAD:
        return _fault(pos, offset, "torn batch", BATCH_OVERHEAD, rem)
    h = pos + HEADER_LEN
    magic, version = struct.unpack_from("<IB", buf, h)
    if magic != _MAGIC:
        return _fault(pos, offset, "bad magic", _MAGIC, magic)
    if version != VERSION:
        return _fault(pos, offset, "bad version", VERSION, version)
    (stored,) = struct.unpack_from("<I", buf, h + 68)
    computed = _crc32c.crc32c(buf[h:h + 68])
    if stored != computed:
        return _fault(pos, offset, "header crc mismatch", stored, computed)
    (base,) = struct.unpack_from("<Q", buf, h + 8)
    if base != offset:
        return _fault(pos, offset, "base offset mismatch", offset, base)
    (plen, stored) = struct.unpack_from("<II", buf, h + 60)
    if plen > rem - BATCH_OVERHEAD:
        return _fault(pos, offset, "torn batch", BATCH_OVERHEAD + plen, rem)
    start = pos + BATCH_OVERHEAD
    computed = _crc32c.crc32c(buf[start:start + plen])
    if stored != computed:
        return _fault(pos, offset, "payload crc mismatch", stored, computed)
    return None


def scan_batches(buf: memoryview, pos: int, seg_base: int, out) -> tuple:
    """Validates batches from pos into the rows of out until a fault, the end, or out is full."""
    k = 0
    padding = 0
    n = len(buf)
    while pos < n:
        rem = n - pos
        kind = buf[pos]
        if kind == PADDING:
            if rem < HEADER_LEN:
                return k, _fault(pos, seg_base + pos, "torn padding", HEADER_LEN, rem, padding)
            (plen,) = struct.unpack_from("<I", buf, pos + 1)
            if plen > rem - HEADER_LEN:
                return k, _fault(pos, seg_base + pos, "torn padding", HEADER_LEN + plen, rem, padding)
            value = bytes(buf[pos + HEADER_LEN:pos + HEADER_LEN + plen])
            nonzero = value.lstrip(b"\0")
            if nonzero:
                return k, _fault(pos, seg_base + pos, "padding not zero", 0, nonzero[0], padding)
            padding += HEADER_LEN + plen
            pos += HEADER_LEN + plen
            continue
        if kind != BATCH_HEADER:
            if all_zero(buf, pos):
                return k, _fault(pos, seg_base + pos, "zero tail", 0, 0, padding)
            return k, _fault(pos, seg_base + pos, "unexpected record type", BATCH_HEADER, kind, padding)
        if k >= len(out):
            return k, Stop(STATUS_FULL, pos, padding)
        fault = _check_batch(buf, pos, seg_base)
        if fault:
            return k, fault._replace(padding_bytes=padding)
        (_, _, flags, _, base, first_ts, first_key, last_ts, producer_id, producer_seq,
         record_count, payload_length, _, header_crc) = _FIELDS.unpack_from(buf, pos + HEADER_LEN)
        out[k] = (pos, base, first_ts, first_key, last_ts, producer_id, producer_seq,
                  record_count, payload_length, header_crc, flags)
        k += 1
        pos += BATCH_OVERHEAD + payload_length
    return k, Stop(STATUS_END, pos, padding)


def find_batch(buf: memoryview, pos: int, seg_base: int) -> int:
    """The first position at or after pos holding a valid batch, or -1."""
    marker = bytes([BATCH_HEADER])
    while pos < len(buf):
        hit = bytes(buf[pos:pos + len(_ZERO_CHUNK)]).find(marker)
        if hit < 0:
            pos += len(_ZERO_CHUNK)
            continue
        pos += hit
        if _check_batch(buf, pos, seg_base) is None:
            return pos
        pos += 1
    return -1


def _walk(buf, start, end, delta, ts, key0, batch, limit, out, at):
    """Walks the TLV records in [start, end), writing the first `limit` into out from row at."""
    p = start
    i = 0
    while p < end:
        rem = end - p
        kind = buf[p]
        hdr = EXT_HEADER_LEN if kind == EXTENDED else HEADER_LEN
        if rem < hdr:
            return i, _fault(p, p + delta, "torn record", hdr, rem)
        if kind == EXTENDED:
            ext, vlen = struct.unpack_from("<HI", buf, p + 1)
        else:
            ext = 0
            (vlen,) = struct.unpack_from("<I", buf, p + 1)
        if vlen > rem - hdr:
            return i, _fault(p, p + delta, "torn record", hdr + vlen, rem)
        if out is not None and i < limit:
            if at >= len(out["offset"]):
                return i, Stop(STATUS_FULL, p)
            out["offset"][at] = (p + delta) & U64
            out["value_pos"][at] = p + hdr
            out["timestamp"][at] = ts
            out["key_low"][at] = (key0 + i) & U64
            out["length"][at] = vlen
            out["batch"][at] = batch
            out["ext_type"][at] = ext
            out["type"][at] = kind
            at += 1
        i += 1
        p += hdr + vlen
    return i, Stop(STATUS_END, p)


def walk_records(buf, start, end, delta, ts, key0, batch, limit, out) -> tuple:
    """Parses the records in [start, end): (count parsed, Stop); writes them when out is given."""
    end = min(end, len(buf))
    start = min(start, end)
    return _walk(buf, start, end, delta & U64, ts, key0, batch, limit, out, 0)


def batch_records(buf, batches, out) -> tuple:
    """Writes the records of every uncompressed batch row into out: (rows written, Stop)."""
    n = len(buf)
    total = 0
    for b, row in enumerate(batches):
        pos, plen, rc = int(row["pos"]), int(row["payload_length"]), int(row["record_count"])
        base = int(row["base_offset"])
        if int(row["flags"]) & FLAG_LZ4:
            continue
        if pos + BATCH_OVERHEAD + plen > n:
            return total, _fault(pos, base, "batch outside buffer", (pos + BATCH_OVERHEAD + plen) & U64, n)
        start = pos + BATCH_OVERHEAD
        parsed, stop = _walk(buf, start, start + plen, (base - pos) & U64, int(row["first_ts"]),
                             int(row["first_key"]), b, rc, out, total)
        if stop.status != STATUS_END:
            return total, stop
        total += min(parsed, rc)
        if parsed != rc:
            return total, _fault(pos, base, "record count mismatch", rc, parsed)
    return total, Stop(STATUS_END, n)

