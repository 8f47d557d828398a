"""cffi (API mode) build of the io_uring group writer, `lance_store.uring._uring`.

setup.py lists this file's `ffi` when liburing's headers exist; running it directly
compiles the module in place.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


ffi = FFI()
ffi.cdef(_read("uring.h"))
ffi.set_source(
    "lance_store.uring._uring",
    _read("uring.c"),
    libraries=["uring"],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    # The module name carries the package path, so compiling from the project root
    # drops the extension beside this file.
    ffi.compile(tmpdir=os.path.dirname(os.path.dirname(HERE)), verbose=False)
    # The object file is a by-product of an in-place build; only the .so is used.
    for name in os.listdir(HERE):
        if name.startswith("_uring") and name.endswith(".o"):
            os.remove(os.path.join(HERE, name))
