"""The conformance suite every DR target passes: inherit `TargetConformance` and supply a
`target` fixture that yields a fresh, empty target.

Each test states one promise of `lance_dr.targets.base.Target`; capability
flags decide only what a test may assume about cost, never about results.
"""
from __future__ import annotations

import os

import pytest

from lance_dr.errors import ObjectMissing, TargetError
from lance_dr.targets.base import Target, Upload

SIZE = 200_000


def _bytes(n: int, seed: int = 1) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


class TargetConformance:
    """Subclasses provide `target`; every test here then runs against it."""

    @pytest.fixture
    def target(self) -> Target:  # pragma: no cover - supplied by each backend's test module
        raise NotImplementedError

    @pytest.fixture
    def source(self, tmp_path) -> str:
        path = tmp_path / "source.bin"
        path.write_bytes(_bytes(SIZE))
        return str(path)

    def test_capabilities_are_declared(self, target):
        caps = target.capabilities
        assert set(caps) == {"ranged_reads", "appendable", "atomic_publish"}
        assert all(isinstance(v, bool) for v in caps.values())

    def test_fresh_target_lists_nothing(self, target):
        assert target.list() == {}
        assert target.stat("node.json") is None

    def test_write_then_read_back(self, target):
        target.write("segments/orders/metadata.json", b'{"id": 1}')
        assert target.read("segments/orders/metadata.json") == b'{"id": 1}'
        assert target.list() == {"segments/orders/metadata.json": 9}
        assert target.stat("segments/orders/metadata.json") == 9

    def test_write_replaces_the_whole_object(self, target):
        target.write("LATEST", b"12345678\n")
        target.write("LATEST", b"9\n")
        assert target.read("LATEST") == b"9\n"

    def test_write_many_publishes_each_object_whole(self, target):
        target.write("segments/a/metadata.json", b"old")
        target.write_many({"node.json": b"{}", "segments/a/metadata.json": b"new", "offsets/g/x": b"7"})
        assert target.list() == {"node.json": 2, "segments/a/metadata.json": 3, "offsets/g/x": 1}
        assert target.read("segments/a/metadata.json") == b"new"

    def test_ranged_reads_return_exactly_the_range(self, target):
        data = _bytes(5000)
        target.write("obj", data)
        assert target.read("obj", 100, 1100) == data[100:1100]
        assert target.read("obj", 4990) == data[4990:]

    def test_reading_an_absent_object_names_it(self, target):
        with pytest.raises(ObjectMissing, match="manifests/00000000000000000007.json"):
            target.read("manifests/00000000000000000007.json")

    def test_list_under_a_prefix_keeps_full_paths(self, target):
        target.write("segments/a/x", b"1")
        target.write("segments/b/y", b"22")
        target.write("manifests/m", b"333")
        assert target.list("segments") == {"segments/a/x": 1, "segments/b/y": 2}
        assert target.list("nothing-here") == {}

    def test_upload_sends_whole_files_and_prefixes(self, target, source):
        target.upload([Upload(source, "segments/t/whole.lnc", SIZE),
                       Upload(source, "segments/t/prefix.lnc", 12_345)])
        data = _bytes(SIZE)
        assert target.read("segments/t/whole.lnc") == data
        assert target.read("segments/t/prefix.lnc") == data[:12_345]

    def test_upload_counts_progress_in_bytes(self, target, source):
        seen = []
        target.upload([Upload(source, "seg.lnc", SIZE)], progress=seen.append)
        assert sum(seen) == SIZE

    def test_an_object_grows_from_what_it_kept(self, target, source):
        target.upload([Upload(source, "seg.lnc", 40_000)])
        seen = []
        target.upload([Upload(source, "seg.lnc", SIZE, keep=40_000)], progress=seen.append)
        assert target.read("seg.lnc") == _bytes(SIZE)
        if target.appendable:
            assert sum(seen) <= SIZE - 40_000

    def test_upload_replaces_a_longer_object(self, target, source):
        target.write("seg.lnc", _bytes(SIZE + 999, seed=5))
        target.upload([Upload(source, "seg.lnc", 50_000)])
        assert target.read("seg.lnc") == _bytes(SIZE)[:50_000]

    def test_upload_replaces_an_equal_sized_object_with_other_bytes(self, target, source):
        target.write("seg.lnc", _bytes(50_000, seed=9))
        target.upload([Upload(source, "seg.lnc", 50_000)])
        assert target.read("seg.lnc") == _bytes(SIZE)[:50_000]

    def test_upload_replaces_a_shorter_object_with_other_bytes(self, target, source):
        target.write("seg.lnc", _bytes(10_000, seed=9))
        target.upload([Upload(source, "seg.lnc", SIZE)])
        assert target.read("seg.lnc") == _bytes(SIZE)

    def test_a_failed_upload_publishes_nothing_under_its_name(self, target, source, tmp_path):
        short = tmp_path / "short.bin"
        short.write_bytes(_bytes(1000))
        with pytest.raises(TargetError):
            target.upload([Upload(str(short), "segments/t/seg.lnc", 5000)])
        assert target.stat("segments/t/seg.lnc") is None
        target.upload([Upload(source, "segments/t/seg.lnc", 5000)])
        assert target.read("segments/t/seg.lnc") == _bytes(SIZE)[:5000]

    def test_download_fetches_a_prefix(self, target, source, tmp_path):
        target.upload([Upload(source, "seg.lnc", SIZE)])
        dest = tmp_path / "out"
        target.download("seg.lnc", str(dest), 70_000)
        assert dest.read_bytes() == _bytes(SIZE)[:70_000]

    def test_download_continues_an_interrupted_one(self, target, source, tmp_path):
        target.upload([Upload(source, "seg.lnc", SIZE)])
        dest = tmp_path / "out"
        dest.write_bytes(_bytes(SIZE)[:33_333])
        target.download("seg.lnc", str(dest), SIZE)
        assert dest.read_bytes() == _bytes(SIZE)

    def test_download_cuts_a_local_file_longer_than_asked(self, target, source, tmp_path):
        target.upload([Upload(source, "seg.lnc", SIZE)])
        dest = tmp_path / "out"
        dest.write_bytes(_bytes(SIZE))
        target.download("seg.lnc", str(dest), 1000)
        assert dest.read_bytes() == _bytes(SIZE)[:1000]

    def test_download_of_an_absent_object_names_it(self, target, tmp_path):
        with pytest.raises(ObjectMissing, match="segments/t/gone.lnc"):
            target.download("segments/t/gone.lnc", str(tmp_path / "out"), 10)

    def test_download_of_a_short_object_says_how_short(self, target, tmp_path):
        target.write("seg.lnc", b"x" * 100)
        with pytest.raises(TargetError, match="holds 100 bytes, expected at least 500"):
            target.download("seg.lnc", str(tmp_path / "out"), 500)

    def test_delete_removes_only_the_named_objects(self, target):
        for path in ("segments/a/1.lnc", "segments/a/2.lnc", "segments/b/3.lnc", "node.json"):
            target.write(path, b"data")
        target.delete(["segments/a/1.lnc", "node.json", "segments/never/was.lnc"])
        assert sorted(target.list()) == ["segments/a/2.lnc", "segments/b/3.lnc"]

    def test_paths_may_not_leave_the_root(self, target):
        for bad in ("../escape", "/abs", "a//b", "a/./b"):
            with pytest.raises(ValueError, match="relative path"):
                target.write(bad, b"x")

    def test_local_path_is_a_real_copy_when_offered(self, target):
        target.write("segments/t/x.lnc", b"abc")
        local = target.local_path("segments/t/x.lnc")
        if local is not None:
            with open(local, "rb") as f:
                assert f.read() == b"abc"
            assert os.path.isabs(local)
