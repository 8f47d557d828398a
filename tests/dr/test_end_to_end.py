"""Write topics with lance_store, ship, damage the source, restore into a new directory and
compare every record, on every kind of target."""
from __future__ import annotations

import os
import shutil

import lance_store
from lance_dr import restore, ship, verify_target

from .conftest import append_more, flip_bit, records_of


def test_ship_damage_restore_compare(data_dir, tmp_path, any_target):
    ship(data_dir, any_target)
    append_more(data_dir, "orders", 5)
    with lance_store.open(data_dir, readonly=True) as store:
        store_segments = [s.path for t in store.topics() for s in t.segments if s.size]
    ship(data_dir, any_target)
    expected = records_of(data_dir)

    # The source is lost: bits flipped, a segment gone, then the folder itself.
    flip_bit(store_segments[0], 100)
    os.unlink(store_segments[-1])
    shutil.rmtree(data_dir)

    report = verify_target(any_target)
    assert not report.damaged, [str(f) for f in report.findings]
    assert all(t.complete for t in report.topics)
    result = restore(any_target, tmp_path / "restored", node_id=8)
    assert result.generation == 2
    assert records_of(tmp_path / "restored") == expected
