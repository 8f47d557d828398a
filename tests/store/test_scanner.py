"""Tests of lance_store.scanner: every case runs against the C kernel and the Python reference.

Segments come from the project's record and batch-header encoders; damage is made by hand.
"""
import json
import mmap
import os
import pathlib
import struct
import subprocess
import sys

import crc32c
import lz4.block
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lance_store import records
from lance_store import scanner as scanner_module
from lance_store.segment.header import BatchHeader
from lance_store.scanner import Fault, ScanError, Scanner, value_at, values

REPO = pathlib.Path(__file__).resolve().parents[2]
VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[2] / "spec" / "format_vectors.json").read_text())
# Both kernels, unless LANCE_NO_EXTENSIONS keeps the C one out (see the first test).
IMPLEMENTATIONS = sorted(scanner_module.KERNELS)
FORCED_PYTHON = os.environ.get("LANCE_NO_EXTENSIONS", "") not in ("", "0")
BATCH_FIELDS = ("pos", "base_offset", "first_ts", "first_key", "last_ts", "producer_id",
                "producer_seq", "record_count", "payload_length", "header_crc", "flags")
RECORD_FIELDS = ("offset", "value_pos", "length", "type", "ext_type", "timestamp", "key_low",
                 "batch")


# ---- building segments with the project's own encoders ----------------------------------

def tlv(kind: int, value: bytes) -> bytes:
    return records.encode([(kind, value)])[0]


def ext(ext_type: int, value: bytes) -> bytes:
    return records.encode([(records.EXTENDED, ext_type, value)])[0]


def raw_tlv(kind: int, value: bytes) -> bytes:
    """A record of a type the encoder refuses (0xFD, 0xFE), for hand-made streams."""
    return bytes([kind]) + struct.pack("<I", len(value)) + value


def padding(n: int) -> bytes:
    return records.padding(5 + n)


def encode_batch(base, recs, *, ts=1_700_000_000_000_000_000, key=1 << 48, last_ts=None,
                 producer_id=0, producer_seq=0, flags=0, record_count=None, payload=None):
    payload = b"".join(recs) if payload is None else payload
    header = BatchHeader(base_offset=base, first_timestamp_ns=ts, first_key_low=key,
                         last_timestamp_ns=ts if last_ts is None else last_ts,
                         record_count=len(recs) if record_count is None else record_count,
                         payload_length=len(payload), payload_crc=crc32c.crc32c(payload),
                         producer_id=producer_id, producer_seq=producer_seq, flags=flags)
    return header.pack() + payload


def resealed(batch: bytes, at: int, patch: bytes) -> bytes:
    """batch with header bytes [at, at+len(patch)) replaced and header_crc made right again."""
    data = bytearray(batch)
    data[5 + at:5 + at + len(patch)] = patch
    data[73:77] = struct.pack("<I", crc32c.crc32c(bytes(data[5:73])))
    return bytes(data)


class SegmentBuilder:
    """Appends batches and padding, remembering what each batch should scan back as."""

    def __init__(self, base=0):
        self.base = base
        self.data = bytearray()
        self.batches = []  # (pos, end, records, header fields)
        self.padding_bytes = 0

    def add(self, records, **fields):
        pos = len(self.data)
        self.data += encode_batch(self.base + pos, records, **fields)
        self.batches.append((pos, len(self.data), records, fields))
        return pos

    def pad(self, n):
        self.data += padding(n)
        self.padding_bytes += 5 + n

    def bytes(self):
        return bytes(self.data)

    def expected_records(self):
        """The RecordScan columns, computed record by record from what was encoded."""
        rows = {name: [] for name in RECORD_FIELDS}
        for index, (pos, _, records, fields) in enumerate(self.batches):
            at = pos + 77
            for i, record in enumerate(records):
                header = 7 if record[0] == 0xFF else 5
                rows["offset"].append(self.base + at)
                rows["value_pos"].append(at + header)
                rows["length"].append(len(record) - header)
                rows["type"].append(record[0])
                rows["ext_type"].append(struct.unpack_from("<H", record, 1)[0] if header == 7 else 0)
                rows["timestamp"].append(fields.get("ts", 1_700_000_000_000_000_000))
                rows["key_low"].append((fields.get("key", 1 << 48) + i) % (1 << 64))
                rows["batch"].append(index)
                at += len(record)
        return rows


def three_batches(base=0):
    seg = SegmentBuilder(base)
    seg.add([tlv(1, b'{"a": 1}'), tlv(0, b"raw"), tlv(0x10, b"")], ts=10, key=(1 << 48) | 5,
            last_ts=12, producer_id=7, producer_seq=3)
    seg.add([ext(0x1234, b"extended value"), tlv(2, b"\x81\xa1a\x01")], ts=20, key=(1 << 48) | 8,
            last_ts=25)
    seg.add([tlv(0, bytes(range(40)))], ts=30, key=(1 << 48) | 10)
    return seg


# ---- helpers ------------------------------------------------------------------------------

@pytest.fixture(params=IMPLEMENTATIONS)
def scanner(request):
    return Scanner(request.param)


def columns(scan, names):
    return {name: getattr(scan, name).tolist() for name in names}


def assert_batches_match(scan, seg, count=None):
    expected = seg.batches if count is None else seg.batches[:count]
    assert scan.pos.tolist() == [pos for pos, _, _, _ in expected]
    assert scan.base_offset.tolist() == [seg.base + pos for pos, _, _, _ in expected]
    assert scan.record_count.tolist() == [len(records) for _, _, records, _ in expected]
    assert scan.payload_length.tolist() == [end - pos - 77 for pos, end, _, _ in expected]
    assert scan.first_ts.tolist() == [f.get("ts", 1_700_000_000_000_000_000) for *_, f in expected]


def assert_same_scan(a, b):
    """Two scans (from the two kernels) agree on every array and every fault."""
    names = [n for n in BATCH_FIELDS + RECORD_FIELDS + ("skipped_batches",) if hasattr(a, n)]
    for name in names:
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        assert np.array_equal(left, right), name
    assert a.valid_end == b.valid_end
    assert a.error == b.error
    assert getattr(a, "errors", None) == getattr(b, "errors", None)
    assert getattr(a, "padding_bytes", None) == getattr(b, "padding_bytes", None)


def records_or_error(scanner, buf, batches):
    try:
        return scanner.scan_records(buf, batches)
    except ScanError as e:
        return e.fault


# ---- the kernels ----------------------------------------------------------------------------

def test_c_kernel_is_built_and_chosen_by_default():
    if FORCED_PYTHON:
        assert (scanner_module.IMPLEMENTATION, IMPLEMENTATIONS) == ("python", ["python"])
    else:
        assert "c" in scanner_module.KERNELS, "build it: python lance_store/_native/build_scan.py"
        assert scanner_module.IMPLEMENTATION == "c" and IMPLEMENTATIONS == ["c", "python"]


def test_no_extensions_env_forces_python_kernel():
    env = {**os.environ, "LANCE_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c",
         "import lance_store.scanner as s; print(s.IMPLEMENTATION, sorted(s.KERNELS))"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", "['python']"]


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="'rust'"):
        Scanner("rust")


def test_crc_check_value(scanner):
    assert scanner.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 255, 767, 768, 769, 24575, 24576, 24577,
                                    3 * 24576 + 13, 262144])
@pytest.mark.parametrize("misalign", [0, 1, 5])
def test_c_crc_matches_crc32c_package(length, misalign):
    from lance_store._native import c_kernel

    data = memoryview(os.urandom(length + misalign))[misalign:]
    expected = crc32c.crc32c(data)
    assert c_kernel.crc32c(data) == expected
    assert c_kernel.crc32c_portable(data) == expected
    assert c_kernel.crc32c(data, 0xDEADBEEF) == crc32c.crc32c(data, 0xDEADBEEF)


# ---- format vectors ---------------------------------------------------------------------------

def test_vector_batches_alone(scanner):
    batch_1 = bytes.fromhex(VECTORS["batch_1"]["hex"])
    batch_2 = bytes.fromhex(VECTORS["batch_2"]["hex"])
    one = scanner.scan_batches(batch_1, 0)
    assert (len(one), one.valid_end, one.error) == (1, 97, None)
    assert one.record_count.tolist() == [2] and one.producer_id.tolist() == [0]
    two = scanner.scan_batches(batch_2, 97)
    assert (len(two), two.valid_end, two.error) == (1, 92, None)
    assert two.base_offset.tolist() == [97]
    assert (two.producer_id.tolist(), two.producer_seq.tolist()) == ([7], [1])
    records = scanner.scan_records(batch_2, two)
    assert records.offset.tolist() == [97 + 77]
    assert bytes(value_at(batch_2, records, 0)) == b"x" * 10


def test_vector_segment(scanner):
    seg = bytes.fromhex(VECTORS["segment"]["hex"])
    ts = 1706918400000000000
    node_1 = 1 << 48
    scan = scanner.scan_batches(seg, 0)
    assert scan.error is None and scan.errors == ()
    assert scan.valid_end == VECTORS["segment"]["high_watermark"] == 189
    assert columns(scan, BATCH_FIELDS[:-1]) == {
        "pos": [0, 97], "base_offset": [0, 97], "first_ts": [ts, ts + 1000],
        "first_key": [node_1, node_1 + 2], "last_ts": [ts, ts + 1000],
        "producer_id": [0, 7], "producer_seq": [0, 1], "record_count": [2, 1],
        "payload_length": [20, 15], "header_crc": [0xB2CCB0B8, 0x1A76F605],
    }
    assert scan.flags.tolist() == [0, 0]
    assert scan.end.tolist() == [97, 189]
    records = scanner.scan_records(seg, scan)
    assert columns(records, RECORD_FIELDS) == {
        "offset": [77, 87, 174], "value_pos": [82, 92, 179], "length": [5, 5, 10],
        "type": [1, 1, 1], "ext_type": [0, 0, 0], "timestamp": [ts, ts, ts + 1000],
        "key_low": [node_1, node_1 + 1, node_1 + 2], "batch": [0, 0, 1],
    }
    assert [bytes(v) for v in values(seg, records)] == [b"hello", b"world", b"x" * 10]


def test_array_dtypes(scanner):
    seg = bytes.fromhex(VECTORS["segment"]["hex"])
    scan = scanner.scan_batches(seg, 0)
    assert {name: getattr(scan, name).dtype.str for name in BATCH_FIELDS} == {
        **{name: "<u8" for name in BATCH_FIELDS[:7]},
        "record_count": "<u4", "payload_length": "<u4", "header_crc": "<u4", "flags": "|u1",
    }
    records = scanner.scan_records(seg, scan)
    assert {name: getattr(records, name).dtype.str for name in RECORD_FIELDS} == {
        "offset": "<u8", "value_pos": "<u8", "length": "<u4", "type": "|u1",
        "ext_type": "<u2", "timestamp": "<u8", "key_low": "<u8", "batch": "<u4",
    }


# ---- good segments ----------------------------------------------------------------------------

def test_segment_with_padding_and_extended_records(scanner):
    seg = SegmentBuilder(base=4096)
    seg.add([tlv(1, b"one"), ext(7, b"seven")], ts=5, key=100)
    seg.pad(0)
    seg.pad(300)
    seg.add([ext(0xFFFF, b""), tlv(0xFC, b"app")], ts=6, key=102, producer_id=9, producer_seq=4)
    seg.pad(11)
    data = seg.bytes()
    scan = scanner.scan_batches(data, 4096)
    assert scan.error is None and scan.valid_end == len(data)
    assert scan.padding_bytes == seg.padding_bytes == 5 + 305 + 16
    assert_batches_match(scan, seg)
    assert (scan.producer_id.tolist(), scan.producer_seq.tolist()) == ([0, 9], [0, 4])
    records = scanner.scan_records(data, scan)
    assert columns(records, RECORD_FIELDS) == seg.expected_records()
    assert records.ext_type.tolist() == [0, 7, 0xFFFF, 0]
    assert [bytes(v) for v in values(data, records)] == [b"one", b"seven", b"", b"app"]


def test_empty_buffer_and_empty_batch(scanner):
    empty = scanner.scan_batches(b"", 0)
    assert (len(empty), empty.valid_end, empty.error) == (0, 0, None)
    assert len(scanner.scan_records(b"", empty)) == 0
    data = encode_batch(0, [])
    scan = scanner.scan_batches(data, 0)
    assert (len(scan), scan.valid_end) == (1, 77)
    assert len(scanner.scan_records(data, scan)) == 0


def test_many_small_batches_grow_the_output(scanner):
    seg = SegmentBuilder()
    for i in range(5000):
        seg.add([tlv(0, i.to_bytes(4, "little"))], ts=i, key=i)
    data = seg.bytes()
    scan = scanner.scan_batches(data, 0)
    assert len(scan) == 5000 and scan.error is None
    assert_batches_match(scan, seg)
    records = scanner.scan_records(data, scan)
    assert records.key_low.tolist() == list(range(5000))


def test_key_low_wraps_as_unsigned_64_bit(scanner):
    data = encode_batch(0, [tlv(0, b"a"), tlv(0, b"b")], key=(1 << 64) - 1)
    records = scanner.scan_records(data, scanner.scan_batches(data, 0))
    assert records.key_low.tolist() == [(1 << 64) - 1, 0]


def test_buffer_kinds(scanner, tmp_path):
    seg = three_batches()
    data = seg.bytes()
    reference = scanner.scan_batches(data, 0)
    for buf in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert_same_scan(scanner.scan_batches(buf, 0), reference)
    path = tmp_path / "00000000000000000000_1.lnc"
    path.write_bytes(data)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        scan = scanner.scan_batches(mapped, 0)
        records = scanner.scan_records(mapped, scan)
        assert_same_scan(scan, reference)
        assert bytes(value_at(mapped, records, 2)) == b""
        assert len(scanner.scan_legacy(mapped)) == 9
        mapped.close()  # raises BufferError if a scan kept the buffer exported


def test_base_offset_out_of_range(scanner):
    with pytest.raises(ValueError, match="base_offset"):
        scanner.scan_batches(b"", -1)
    with pytest.raises(ValueError, match="base_offset"):
        scanner.scan_batches(b"", 1 << 64)


# ---- damage ------------------------------------------------------------------------------------

def test_wrong_segment_base(scanner):
    data = three_batches(base=0).bytes()
    scan = scanner.scan_batches(data, 1000)
    assert len(scan) == 0 and scan.valid_end == 0
    assert scan.error == Fault(0, 1000, "base offset mismatch", 1000, 0)


def test_torn_tail_at_every_length(scanner):
    seg = three_batches()
    seg.pad(20)
    data = seg.bytes()
    boundaries = [0] + [end for _, end, _, _ in seg.batches] + [len(data)]
    for cut in range(len(data) + 1):
        scan = scanner.scan_batches(data[:cut], 0)
        valid_end = max(b for b in boundaries if b <= cut)
        assert scan.valid_end == valid_end, cut
        assert len(scan) == sum(end <= cut for _, end, _, _ in seg.batches)
        if cut == valid_end:
            assert scan.error is None
        else:
            assert scan.error.pos == valid_end
            torn = "torn padding" if valid_end == seg.batches[-1][1] else "torn batch"
            assert scan.error.reason == torn
            assert scan.error.found == cut - valid_end
        assert_same_scan(scan, Scanner("python").scan_batches(data[:cut], 0))


def test_torn_batch_reports_bytes_needed(scanner):
    data = three_batches().bytes()
    cut = data[:-3]
    scan = scanner.scan_batches(cut, 0)
    last_pos = int(scanner.scan_batches(data, 0).pos[-1])
    assert scan.error == Fault(last_pos, last_pos, "torn batch", len(data) - last_pos,
                               len(data) - last_pos - 3)
    assert scan.valid_end == last_pos
    head_only = scanner.scan_batches(data[:last_pos + 3], 0)
    assert head_only.error == Fault(last_pos, last_pos, "torn batch", 77, 3)


def byte_region_reason(offset_in_batch):
    if offset_in_batch == 0:
        return "unexpected record type"
    if offset_in_batch < 5:
        return "bad batch header length"
    if offset_in_batch < 9:
        return "bad magic"
    if offset_in_batch == 9:
        return "bad version"
    if offset_in_batch < 77:
        return "header crc mismatch"
    return "payload crc mismatch"


def test_bit_flip_at_every_byte(scanner):
    seg = three_batches()
    data = seg.bytes()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 1 << (i % 8)
        k = next(k for k, (pos, end, _, _) in enumerate(seg.batches) if pos <= i < end)
        pos = seg.batches[k][0]
        scan = scanner.scan_batches(damaged, 0)
        assert (scan.valid_end, len(scan), scan.error.pos, scan.error.offset) == (pos, k, pos, pos), i
        assert scan.error.reason == byte_region_reason(i - pos), i
        assert_batches_match(scan, seg, k)
        resynced = scanner.scan_batches(damaged, 0, stop_at_invalid=False)
        assert resynced.pos.tolist() == [p for j, (p, _, _, _) in enumerate(seg.batches) if j != k]
        assert resynced.errors == (scan.error,) and resynced.prefix_count == k
        assert resynced.valid_end == pos


def test_crc_faults_report_stored_and_computed_values(scanner):
    data = bytearray(encode_batch(0, [tlv(0, b"abc")]))
    stored_payload_crc = crc32c.crc32c(bytes(data[77:]))
    data[-1] ^= 0xFF
    scan = scanner.scan_batches(data, 0)
    assert scan.error == Fault(0, 0, "payload crc mismatch", stored_payload_crc,
                               crc32c.crc32c(bytes(data[77:])))
    assert "expected 0x" in str(scan.error)
    data = bytearray(encode_batch(0, []))
    data[20] ^= 1
    scan = scanner.scan_batches(data, 0)
    assert scan.error.reason == "header crc mismatch"
    assert scan.error.expected == struct.unpack_from("<I", data, 73)[0]
    assert scan.error.found == crc32c.crc32c(bytes(data[5:73]))


def test_bad_magic_version_and_header_length(scanner):
    bad_magic = resealed(encode_batch(0, []), 0, b"LNCX")
    assert scanner.scan_batches(bad_magic, 0).error == Fault(
        0, 0, "bad magic", int.from_bytes(b"LNCB", "little"), int.from_bytes(b"LNCX", "little"))
    assert "b'LNCX'" in str(scanner.scan_batches(bad_magic, 0).error)
    bad_version = resealed(encode_batch(0, []), 4, b"\x02")
    assert scanner.scan_batches(bad_version, 0).error == Fault(0, 0, "bad version", 1, 2)
    bad_length = b"\xfe" + struct.pack("<I", 71) + encode_batch(0, [])[5:]
    assert scanner.scan_batches(bad_length, 0).error == Fault(0, 0, "bad batch header length", 72, 71)


def test_zero_tail_is_told_apart_from_damage(scanner):
    seg = three_batches(base=8192)
    data = seg.bytes()
    zero_tail = scanner.scan_batches(data + bytes(4096), 8192)
    assert zero_tail.error == Fault(len(data), 8192 + len(data), "zero tail", None, None)
    assert zero_tail.valid_end == len(data) and len(zero_tail) == 3
    assert "zero tail at offset" in str(zero_tail.error)
    # A partly written batch in front of the zeros is damage, not a zero tail.
    torn = data + encode_batch(8192 + len(data), [tlv(0, b"late")])[:40] + bytes(4096)
    assert scanner.scan_batches(torn, 8192).error.reason == "header crc mismatch"
    stray = data + bytes(100) + b"\x01" + bytes(100)
    assert scanner.scan_batches(stray, 8192).error == Fault(
        len(data), 8192 + len(data), "unexpected record type", 0xFE, 0)


def test_record_outside_a_batch(scanner):
    data = three_batches().bytes() + tlv(1, b"{}")
    scan = scanner.scan_batches(data, 0)
    assert scan.error.reason == "unexpected record type" and scan.error.found == 1


def test_bad_padding(scanner):
    head = encode_batch(0, [tlv(0, b"x")])
    not_zero = head + raw_tlv(0xFD, b"\0\0\x07\0")
    assert scanner.scan_batches(not_zero, 0).error == Fault(len(head), len(head), "padding not zero", 0, 7)
    torn = head + padding(50)[:30]
    assert scanner.scan_batches(torn, 0).error == Fault(len(head), len(head), "torn padding", 55, 30)
    assert scanner.scan_batches(head + b"\xfd\0", 0).error == Fault(len(head), len(head), "torn padding", 5, 2)


def test_resync_skips_every_damaged_region(scanner):
    seg = SegmentBuilder()
    for i in range(6):
        seg.add([tlv(0, bytes([i]) * 30)], ts=i, key=i)
    data = bytearray(seg.bytes())
    data[seg.batches[1][0] + 80] ^= 0x40
    data[seg.batches[4][0] + 30] ^= 0x01
    data += b"garbage"
    scan = scanner.scan_batches(data, 0, stop_at_invalid=False)
    assert scan.pos.tolist() == [seg.batches[i][0] for i in (0, 2, 3, 5)]
    assert [(e.pos, e.reason) for e in scan.errors] == [
        (seg.batches[1][0], "payload crc mismatch"),
        (seg.batches[4][0], "header crc mismatch"),
        (seg.batches[5][1], "unexpected record type"),
    ]
    assert scan.error == scan.errors[0] and scan.valid_end == seg.batches[1][0]
    assert scan.prefix_count == 1
    records = scanner.scan_records(data, scan)
    assert records.batch.tolist() == [0, 1, 2, 3] and records.key_low.tolist() == [0, 2, 3, 5]


# ---- records inside batches ------------------------------------------------------------------

def test_record_count_mismatch_names_the_batch(scanner):
    good = encode_batch(0, [tlv(0, b"a")])
    data = good + encode_batch(len(good), [tlv(0, b"a"), tlv(0, b"b")], record_count=3)
    scan = scanner.scan_batches(data, 0)
    assert scan.error is None
    with pytest.raises(ScanError) as raised:
        scanner.scan_records(data, scan)
    err = raised.value
    assert (err.pos, err.offset, err.reason, err.expected, err.found) == (
        len(good), len(good), "record count mismatch", 3, 2)
    assert f"offset {len(good)}" in str(err)


def test_forged_record_count_is_refused_without_a_huge_allocation(scanner):
    data = encode_batch(0, [tlv(0, b"a")], record_count=0xFFFFFFFF)
    with pytest.raises(ScanError, match="record count mismatch") as raised:
        scanner.scan_records(data, scanner.scan_batches(data, 0))
    assert (raised.value.expected, raised.value.found) == (0xFFFFFFFF, 1)


def test_record_overrunning_its_payload(scanner):
    payload = tlv(0, b"abc") + b"\x00\x10\x00\x00\x00xy"
    data = encode_batch(1000, [], payload=payload, record_count=2)
    with pytest.raises(ScanError) as raised:
        scanner.scan_records(data, scanner.scan_batches(data, 1000))
    err = raised.value
    assert (err.pos, err.offset, err.reason, err.expected, err.found) == (
        85, 1085, "torn record", 21, 7)
    short_ext = encode_batch(0, [], payload=b"\xff\x01\x00\x00", record_count=1)
    with pytest.raises(ScanError, match="torn record") as raised:
        scanner.scan_records(short_ext, scanner.scan_batches(short_ext, 0))
    assert (raised.value.expected, raised.value.found) == (7, 4)


def test_batches_outside_the_buffer(scanner):
    data = three_batches().bytes()
    scan = scanner.scan_batches(data, 0)
    with pytest.raises(ScanError, match="batch outside buffer") as raised:
        scanner.scan_records(data[:-10], scan)
    assert raised.value.pos == int(scan.pos[-1]) and raised.value.found == len(data) - 10


def test_compressed_batches_are_left_to_scan_payload(scanner):
    raw_records = [tlv(1, b'{"n": %d}' % i) for i in range(20)] + [ext(3, b"e")]
    raw = b"".join(raw_records)
    compressed = struct.pack("<I", len(raw)) + lz4.block.compress(raw, store_size=False)
    seg = SegmentBuilder(base=500)
    seg.add([tlv(0, b"plain")], ts=1, key=10)
    seg.data += encode_batch(500 + len(seg.data), [], payload=compressed, flags=1,
                             record_count=len(raw_records), ts=2, key=11)
    seg.add([tlv(0, b"after")], ts=3, key=32)
    data = seg.bytes()
    scan = scanner.scan_batches(data, 500)
    assert scan.flags.tolist() == [0, 1, 0]
    records = scanner.scan_records(data, scan)
    assert records.skipped_batches.tolist() == [1]
    assert records.batch.tolist() == [0, 2]
    assert [bytes(v) for v in values(data, records)] == [b"plain", b"after"]
    # The caller decompresses and scans the payload as a bare run of records.
    start = int(scan.pos[1]) + 77
    (size,) = struct.unpack_from("<I", data, start)
    payload = lz4.block.decompress(data[start + 4:start + int(scan.payload_length[1])],
                                   uncompressed_size=size)
    inner = scanner.scan_payload(payload, first_offset=int(scan.base_offset[1]) + 77,
                                 timestamp=int(scan.first_ts[1]), first_key_low=int(scan.first_key[1]),
                                 batch=1, record_count=int(scan.record_count[1]))
    assert len(inner) == 21 and inner.valid_end == len(payload)
    assert inner.key_low.tolist() == list(range(11, 32))
    assert set(inner.timestamp.tolist()) == {2} and set(inner.batch.tolist()) == {1}
    assert inner.offset[0] == int(scan.base_offset[1]) + 77
    assert bytes(value_at(payload, inner, 3)) == b'{"n": 3}'
    assert inner.ext_type.tolist()[-1] == 3


def test_scan_payload_framing_errors(scanner):
    with pytest.raises(ScanError, match="record count mismatch"):
        scanner.scan_payload(tlv(0, b"a") * 3, record_count=2)
    with pytest.raises(ScanError) as raised:
        scanner.scan_payload(tlv(0, b"a") + b"\x00\x05", first_offset=100)
    assert (raised.value.pos, raised.value.offset, raised.value.reason) == (6, 106, "torn record")


# ---- legacy segments ---------------------------------------------------------------------------

def test_legacy_stream(scanner):
    stream = tlv(1, b"{}") + raw_tlv(0xFE, bytes(3)) + ext(9, b"xyz") + tlv(0, b"")
    scan = scanner.scan_legacy(stream, base_offset=1000)
    assert (scan.valid_end, scan.error) == (len(stream), None)
    assert columns(scan, RECORD_FIELDS) == {
        "offset": [1000, 1007, 1015, 1025], "value_pos": [5, 12, 22, 30], "length": [2, 3, 3, 0],
        "type": [1, 0xFE, 0xFF, 0], "ext_type": [0, 0, 9, 0], "timestamp": [0] * 4,
        "key_low": [0] * 4, "batch": [0] * 4,
    }


def test_legacy_stops_at_the_first_record_that_does_not_fit(scanner):
    stream = tlv(1, b"a") + tlv(1, b"bb")
    for cut in range(len(stream) + 1):
        scan = scanner.scan_legacy(stream[:cut])
        valid_end = 0 if cut < 6 else 6 if cut < len(stream) else len(stream)
        assert scan.valid_end == valid_end and len(scan) == (0, 1, 2)[[0, 6, 13].index(valid_end)]
        if cut == valid_end:
            assert scan.error is None
        else:
            assert scan.error.reason == "torn record"
            assert scan.error.found == cut - valid_end


def test_legacy_zero_tail(scanner):
    scan = scanner.scan_legacy(tlv(1, b"a") + bytes(3))
    assert scan.error == Fault(6, 6, "zero tail", None, None)


# ---- untrusted input ---------------------------------------------------------------------------

def check_everything(buf, base):
    """Runs every scan with both kernels: same answers, nothing out of bounds."""
    results = []
    for impl in IMPLEMENTATIONS:
        scanner = Scanner(impl)
        batches = scanner.scan_batches(buf, base)
        resynced = scanner.scan_batches(buf, base, stop_at_invalid=False)
        records = records_or_error(scanner, buf, resynced)
        legacy = scanner.scan_legacy(buf, base)
        for scan in (batches, resynced):
            assert scan.valid_end <= len(buf)
            assert np.all(scan.end <= len(buf))
            assert (scan.error is None) == (scan.valid_end == len(buf))
        for scan in (records, legacy):
            if isinstance(scan, RecordScanType):
                assert np.all(scan.value_pos + scan.length <= len(buf))
        assert legacy.valid_end <= len(buf)
        results.append((batches, resynced, records, legacy))
    first = results[0]
    for other in results[1:]:
        for a, b in zip(first, other):
            if isinstance(a, Fault):
                assert a == b
            else:
                assert_same_scan(a, b)


RecordScanType = scanner_module.RecordScan
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=3000), st.integers(0, (1 << 64) - 1))
def test_random_garbage_never_crashes(buf, base):
    check_everything(buf, base)


records_strategy = st.lists(
    st.one_of(
        st.builds(tlv, st.integers(0, 0xFC), st.binary(max_size=40)),
        st.builds(ext, st.integers(0, 0xFFFF), st.binary(max_size=40)),
    ),
    max_size=6,
)


@st.composite
def damaged_segments(draw):
    seg = SegmentBuilder(base=draw(st.integers(0, 1 << 40)))
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            seg.pad(draw(st.integers(0, 20)))
        seg.add(draw(records_strategy), key=draw(st.integers(0, (1 << 64) - 1)),
                ts=draw(st.integers(0, (1 << 64) - 1)))
    data = bytearray(seg.bytes())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["overwrite", "insert", "truncate", "zeros"]))
        chunk = draw(st.binary(min_size=1, max_size=16))
        if action == "overwrite":
            data[at:at + len(chunk)] = chunk
        elif action == "insert":
            data[at:at] = chunk
        elif action == "truncate":
            del data[at:]
        else:
            data[at:] = bytes(len(data) - at)
    return seg, bytes(data)


@FAST
@given(damaged_segments())
def test_damaged_segments_agree_and_stay_in_bounds(case):
    seg, data = case
    check_everything(data, seg.base)


def first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@FAST
@given(damaged_segments())
def test_valid_prefix_is_exactly_the_undamaged_batches(case):
    seg, data = case
    original = seg.bytes()
    damage = first_difference(original, data) if data != original else len(data)
    originals = {pos: end for pos, end, _, _ in seg.batches}
    for impl in IMPLEMENTATIONS:
        scan = Scanner(impl).scan_batches(data, seg.base)
        prefix = scan.pos[:scan.prefix_count].tolist()
        for pos, end in zip(prefix, scan.end.tolist()):
            assert originals.get(pos) == end and data[pos:end] == original[pos:end]
        assert set(pos for pos, end in originals.items() if end <= damage) <= set(prefix)
