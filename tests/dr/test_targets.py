"""Every kind of target runs the conformance suite of lance_dr.testing.targets."""
from __future__ import annotations

import pytest

from lance_dr.targets import FsspecTarget, LocalTarget, RsyncTarget, kind_of, open_target
from lance_dr.testing.targets import TargetConformance

from .conftest import fresh_target


class TestLocalFolder(TargetConformance):
    @pytest.fixture
    def target(self, tmp_path):
        return fresh_target("local", tmp_path)


class TestMemory(TargetConformance):
    @pytest.fixture
    def target(self, tmp_path):
        return fresh_target("memory", tmp_path)


class TestRsyncDaemon(TargetConformance):
    @pytest.fixture
    def target(self, tmp_path, rsyncd):
        return fresh_target("rsync", tmp_path, rsyncd=rsyncd)


class TestS3(TargetConformance):
    @pytest.fixture
    def target(self, tmp_path, s3_server):
        return fresh_target("s3", tmp_path, s3_server=s3_server)


@pytest.mark.parametrize("url, kind, cls", [
    ("rsync://backup.example:873/lance/region-b", "rsync", RsyncTarget),
    ("backup.example:/srv/lance", "rsync", RsyncTarget),
    ("ops@backup.example:/srv/lance", "rsync", RsyncTarget),
    ("/srv/lance-copy", "local", LocalTarget),
    ("./copy", "local", LocalTarget),
    ("file:///srv/lance-copy", "local", LocalTarget),
    ("memory://copy", "fsspec", FsspecTarget),
])
def test_the_url_picks_the_backend(url, kind, cls):
    assert kind_of(url) == kind
    assert isinstance(open_target(url), cls)


def test_file_urls_and_paths_name_the_same_folder(tmp_path):
    assert open_target(f"file://{tmp_path}/x").root == open_target(str(tmp_path / "x")).root


def test_capabilities_differ_by_backend(tmp_path):
    assert open_target(str(tmp_path)).capabilities == {"ranged_reads": True, "appendable": True,
                                                       "atomic_publish": True}
    assert open_target("rsync://h/m").capabilities == {"ranged_reads": False, "appendable": True,
                                                       "atomic_publish": True}
    assert open_target("memory://c").capabilities == {"ranged_reads": True, "appendable": False,
                                                      "atomic_publish": True}


def _received_by_daemon(daemon) -> int:
    """Bytes the daemon received in its last session, from its log."""
    with open(f"{daemon.workdir}/rsyncd.log") as f:
        lines = [line for line in f if " received " in line and "sent" in line]
    return int(lines[-1].split(" received ")[1].split()[0].replace(",", ""))


def test_rsync_grows_an_object_by_sending_only_the_new_bytes(tmp_path, rsyncd):
    from lance_dr.targets import Upload
    data = bytes(range(256)) * 4096            # 1 MiB
    src = tmp_path / "seg.lnc"
    src.write_bytes(data)
    target = fresh_target("rsync", tmp_path, rsyncd=rsyncd)
    target.upload([Upload(str(src), "seg.lnc", 900_000)])
    target.upload([Upload(str(src), "seg.lnc", len(data), keep=900_000)])
    assert target.read("seg.lnc") == data
    assert _received_by_daemon(rsyncd) < 200_000
