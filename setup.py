"""Build hooks: the C scanner always, the io_uring layer when liburing is present.

Everything else about the distribution lives in pyproject.toml.
"""
import os
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CFFI_MODULES = ["lance_store/_native/build_scan.py:ffi"]

# The io_uring extension needs the liburing headers; without them the project
# still installs and the pwritev backend runs (startup says so).
if os.path.exists("/usr/include/liburing.h") and os.path.exists(
    "lance_store/uring/build_uring.py"
):
    CFFI_MODULES.append("lance_store/uring/build_uring.py:ffi")

# The TLV encoder uses the CPython API directly: it walks a list of bytes
# objects, which cffi cannot do without a Python-level loop.
EXTENSIONS = [Extension("lance_store._native._encode",
                        ["lance_store/_native/encode.c", "lance_store/_native/crc32c.c"],
                        extra_compile_args=["-O3"])]

setup(cffi_modules=CFFI_MODULES, ext_modules=EXTENSIONS)
