"""The sparse index of a segment: which batch starts where, and when.

See `sparse` for the file format (FORMAT.md section 5).
"""
from .sparse import ENTRY_DTYPE, SparseIndex, build_entries, load, write_atomic

__all__ = ["ENTRY_DTYPE", "SparseIndex", "build_entries", "load", "write_atomic"]
