"""Faults end in clear errors, never in a LATEST that names an incomplete generation or a
restore that silently lacks data."""
from __future__ import annotations

import os
import threading
import time

import pytest

import lance_store

from lance_dr import (ManifestError, NothingShipped, TargetError, load_latest, restore, ship,
                      verify_target)
from lance_dr.manifest import LATEST, manifest_path

from .conftest import append_more, fresh_target, records_of, write_topics
from .test_ship import lance_dr_local


def _stop_after_first_whole_segment(daemon, folder: str, sizes: dict[str, int]) -> None:
    """Take the rsync daemon (and its transfers) down as soon as one segment has arrived whole
    (rsync appends in place, so a file's name appears with its first bytes)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for root, _dirs, files in os.walk(folder):
            for f in files:
                try:
                    if os.path.getsize(os.path.join(root, f)) == sizes.get(f):
                        daemon.stop()
                        return
                except FileNotFoundError:
                    pass
        time.sleep(0.005)


def test_a_target_that_disappears_mid_ship(tmp_path, rsyncd):
    data = str(tmp_path / "data")
    write_topics(data, batches=90, per_batch=100, topics=("orders",), pad=100,
                 config=lance_store.StoreConfig(segment_max_bytes=128 << 10))
    target = fresh_target("rsync", tmp_path, rsyncd=rsyncd)
    folder = os.path.join(rsyncd.root, target.url.rsplit("/", 1)[1])
    sizes = {f: os.path.getsize(os.path.join(data, "segments", "orders", f))
             for f in os.listdir(os.path.join(data, "segments", "orders")) if "-" in f and f.endswith(".lnc")}
    killer = threading.Thread(target=_stop_after_first_whole_segment, args=(rsyncd, folder, sizes))
    killer.start()
    try:
        with pytest.raises(TargetError, match="rsync exited"):
            ship(data, target, bwlimit=512 << 10)      # 1.1 MB at 512 KiB/s
    finally:
        killer.join()
    rsyncd.restart()
    assert target.stat(LATEST) is None                  # nothing was published
    arrived = {p: s for p, s in target.list().items() if p.endswith(".lnc")}
    result = ship(data, target)
    assert result.generation == 1
    # Sealed segments that arrived whole before the cut are not sent again.
    shipped = load_latest(target).objects()
    whole = [p for p, s in arrived.items() if shipped[p].sealed and s == shipped[p].size]
    assert 0 < len(whole) < len(shipped)
    assert result.uploaded_files == len(shipped) - len(whole)
    assert not verify_target(target).damaged
    restore(target, tmp_path / "r")
    assert records_of(tmp_path / "r") == records_of(data)


def test_latest_pointing_at_a_missing_manifest(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    target.write(LATEST, b"5\n")
    report = verify_target(target)
    assert report.damaged and "generation 5 has no manifest" in report.findings[-1].what
    with pytest.raises(ManifestError, match="generation 5 has no manifest"):
        restore(target, tmp_path / "r")
    assert not os.path.exists(tmp_path / "r")


def test_a_damaged_latest_manifest_does_not_stop_the_next_ship(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    with open(target.local_path(manifest_path(1)), "r+b") as f:
        f.seek(50)
        f.write(b"#")
    append_more(data_dir, "orders", 1)
    result = ship(data_dir, target)
    assert result.generation == 2
    assert not verify_target(target).damaged
    assert verify_target(target, generation=1).damaged


def test_restoring_from_an_empty_target_says_nothing_was_shipped(tmp_path):
    with pytest.raises(NothingShipped, match="no LATEST"):
        restore(lance_dr_local(tmp_path, "empty"), tmp_path / "r")


def test_an_unreachable_rsync_target_is_a_clear_error(data_dir, tmp_path):
    from lance_dr import open_target
    from lance_dr.testing.servers import free_port
    target = open_target(f"rsync://127.0.0.1:{free_port()}/dr/copy")
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"rsync exited \d+ \("):
        ship(data_dir, target)
    assert time.monotonic() - started < 30


def test_a_source_that_is_not_a_data_directory(tmp_path):
    from lance_store import LanceError
    with pytest.raises(LanceError, match="no such data directory"):
        ship(str(tmp_path / "nowhere"), lance_dr_local(tmp_path))
