"""cffi (API mode) build of the C record scanner, `lance_store._native._scan`.

setup.py lists this file's `ffi`; running it directly compiles the module in place.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


ffi = FFI()
ffi.cdef(_read("scan.h"))
ffi.set_source(
    "lance_store._native._scan",
    _read("scan.c"),
    # Relative to the project root, where setup.py (and `python -m` of this file) runs.
    sources=["lance_store/_native/crc32c.c"],
    include_dirs=[HERE],
    extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    # The module name carries the package path, so compiling from the project root
    # drops the extension beside this file.
    ffi.compile(tmpdir=os.path.dirname(os.path.dirname(HERE)), verbose=False)
    # The object file is a by-product of an in-place build; only the .so is used.
    for name in os.listdir(HERE):
        if name.endswith(".o"):
            os.remove(os.path.join(HERE, name))
