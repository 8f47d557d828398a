"""The C scanner kernel: thin adapters from numpy arrays and buffers to `_scan` (scan.c).

Same functions and results as `py_kernel`; importing it fails when the extension is not built.
"""
from ._scan import ffi, lib
from . import Stop

NAME = "c"
lib.lnc_init()
CRC_IMPLEMENTATION = "sse4.2" if lib.lnc_crc32c_accelerated() else "table"


def crc32c(data, value: int = 0) -> int:
    with ffi.from_buffer(data) as p:
        return lib.lnc_crc32c(value, p, len(p))


def crc32c_portable(data, value: int = 0) -> int:
    """The table-driven path, which CPUs without SSE4.2 take."""
    with ffi.from_buffer(data) as p:
        return lib.lnc_crc32c_portable(value, p, len(p))


def all_zero(buf, pos: int) -> bool:
    with ffi.from_buffer(buf) as p:
        return bool(lib.lnc_all_zero(p, len(p), pos))


def _stop(s) -> Stop:
    return Stop(s.status, s.pos, s.padding_bytes, s.fault_pos, s.offset, s.reason, s.expected, s.found)


def scan_batches(buf, pos: int, seg_base: int, out) -> tuple:
    stop = ffi.new("lnc_stop *")
    with ffi.from_buffer(buf) as p, ffi.from_buffer("lnc_batch[]", out, require_writable=True) as rows:
        k = lib.lnc_scan_batches(p, len(p), pos, seg_base, rows, len(out), stop)
    return k, _stop(stop)


def find_batch(buf, pos: int, seg_base: int) -> int:
    with ffi.from_buffer(buf) as p:
        return lib.lnc_find_batch(p, len(p), pos, seg_base)


def _columns(out, keep: list):
    """An lnc_records pointing into the numpy columns of out; keep holds the views alive."""
    if out is None:
        return ffi.NULL
    cols = ffi.new("lnc_records *")
    for name, array in out.items():
        view = ffi.from_buffer(f"uint{array.dtype.itemsize * 8}_t[]", array, require_writable=True)
        keep.append(view)
        setattr(cols, name, view)
    cols.cap = len(out["offset"])
    keep.append(cols)
    return cols


def walk_records(buf, start, end, delta, ts, key0, batch, limit, out) -> tuple:
    stop = ffi.new("lnc_stop *")
    keep = []
    cols = _columns(out, keep)
    with ffi.from_buffer(buf) as p:
        n = lib.lnc_walk_records(p, len(p), start, end, delta & 0xFFFFFFFFFFFFFFFF, ts, key0, batch,
                                 limit, cols, stop)
    return n, _stop(stop)


def batch_records(buf, batches, out) -> tuple:
    stop = ffi.new("lnc_stop *")
    keep = []
    cols = _columns(out, keep)
    with ffi.from_buffer(buf) as p, ffi.from_buffer("lnc_batch[]", batches) as rows:
        n = lib.lnc_batch_records(p, len(p), rows, len(batches), cols, stop)
    return n, _stop(stop)
