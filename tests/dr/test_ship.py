"""Shipping: incremental, read-only on the source, never two histories in one file."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

import lance_store
from lance_dr import SourceDamage, load_latest, load_manifest, restore, ship, verify_target
from lance_dr.generations import list_generations
from lance_dr.manifest import LATEST

from .conftest import SMALL_SEGMENTS, append_more, flip_bit, records_of, segment_objects


def _tree(path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for folder, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            st = os.stat(full)
            with open(full, "rb") as f:
                out[full] = (st.st_size, st.st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
    return out


def test_the_first_ship_describes_every_segment(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    result = ship(data_dir, target)
    assert (result.generation, result.latest) == (1, 1)
    manifest = load_latest(target)
    with lance_store.open(data_dir, readonly=True) as store:
        assert manifest.node["node_id"] == store.node_id
        for topic in store.topics():
            shipped = manifest.topic(topic.name)
            assert [(s.name, s.size, s.sealed) for s in shipped.segments] == \
                [(os.path.basename(s.path), s.size, s.sealed) for s in topic.segments]
            assert (shipped.low, shipped.high) == (topic.low_watermark, topic.high_watermark)
            assert sum(s.sealed for s in shipped.segments) >= 2
    assert target.read(LATEST) == b"1\n"


def lance_dr_local(tmp_path, name: str = "copy"):
    from lance_dr import open_target
    return open_target(str(tmp_path / name))


def test_a_reship_with_nothing_changed_sends_and_publishes_nothing(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    before = target.list()
    again = ship(data_dir, target)
    assert again.generation is None and again.latest == 1
    assert again.uploaded_bytes == 0 and again.uploaded_files == 0
    assert target.list() == before


def test_new_batches_ship_as_a_new_generation_and_older_ones_still_verify(data_dir, tmp_path, any_target):
    first = ship(data_dir, any_target)
    active = [s for s in load_latest(any_target).topic("orders").segments if not s.sealed][0]
    added = append_more(data_dir, "orders", 3)
    second = ship(data_dir, any_target)
    assert second.generation == first.generation + 1
    grown = load_latest(any_target).segment("orders", active.name)
    assert grown.object == active.object and grown.size == active.size + sum(r.next_offset - r.offset
                                                                             for r in added)
    if any_target.appendable:
        assert second.uploaded_bytes == grown.size - active.size
    else:
        assert second.uploaded_bytes == grown.size
    for generation in (1, 2):
        report = verify_target(any_target, generation=generation)
        assert not report.damaged, [str(f) for f in report.findings]


def test_ship_never_writes_to_the_data_directory(data_dir, tmp_path):
    before = _tree(data_dir)
    ship(data_dir, lance_dr_local(tmp_path))
    assert _tree(data_dir) == before


def test_ship_runs_next_to_a_writing_broker(tmp_path):
    path = str(tmp_path / "data")
    target = lance_dr_local(tmp_path)
    stop = threading.Event()
    written = []
    with lance_store.open(path, create=True, node_id=2, config=SMALL_SEGMENTS) as store:
        topic = store.create_topic("live")

        def produce():
            i = 0
            while not stop.is_set():
                written.append(topic.append([b"live-%d-%d" % (i, j) for j in range(20)]))
                i += 1

        writer = threading.Thread(target=produce)
        writer.start()
        try:
            results = [ship(path, target) for _ in range(4)]
        finally:
            stop.set()
            writer.join()
    assert any(r.generation for r in results)
    report = verify_target(target)
    assert not report.damaged, [str(f) for f in report.findings]
    restored = tmp_path / "restored"
    restore(target, restored)
    shipped = records_of(restored)["live"]
    source = records_of(path)["live"]
    assert shipped and shipped == source[:len(shipped)]


def test_a_torn_tail_at_the_source_is_not_shipped(data_dir, tmp_path):
    with lance_store.open(data_dir, readonly=True) as store:
        active = store.topic("orders").active
        valid = active.size
    with open(active.path, "ab") as f:
        f.write(b"\xfe" + b"\x17" * 100)      # the start of a batch that never completed
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    entry = load_latest(target).segment("orders", os.path.basename(active.path))
    assert entry.size == valid
    restore(target, tmp_path / "r")
    assert records_of(tmp_path / "r") == records_of(data_dir)


def test_a_lost_tail_ships_under_a_name_of_its_own(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    before = records_of(data_dir)
    with lance_store.open(data_dir, readonly=True) as store:
        active = store.topic("orders").active
    # A crash lost the last (unsynced) bytes it had shipped; the broker then wrote other batches.
    os.truncate(active.path, active.size - 30)
    append_more(data_dir, "orders", 2, tag=b"after-crash")
    second = ship(data_dir, target)
    name = os.path.basename(active.path)
    assert second.forked == [f"segments/orders/{name}~g2"]
    assert load_manifest(target, 1).segment("orders", name).object == f"segments/orders/{name}"
    for generation in (1, 2):
        assert not verify_target(target, generation=generation).damaged
    restore(target, tmp_path / "old", generation=1)
    restore(target, tmp_path / "new", generation=2)
    assert records_of(tmp_path / "old") == before
    assert records_of(tmp_path / "new") == records_of(data_dir)


def test_keep_prunes_what_no_kept_generation_names(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target, keep=1)
    old_active = [p for p in segment_objects(target) if "-" not in os.path.basename(p)]
    with lance_store.open(data_dir, config=SMALL_SEGMENTS) as store:
        store.topic("orders").seal_active()
    ship(data_dir, target, keep=1)
    gens = list_generations(target)
    assert [g.number for g in gens] == [2]
    remaining = set(target.list())
    orders_active = [p for p in old_active if "/orders/" in p]
    assert orders_active and not remaining & set(orders_active)
    assert set(load_latest(target).objects()) <= remaining
    assert not verify_target(target).damaged


def test_retention_at_the_source_drops_segments_from_later_generations(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target, keep=2)
    first = load_latest(target).topic("clicks")
    with lance_store.open(data_dir, config=SMALL_SEGMENTS) as store:
        topic = store.topic("clicks")
        topic.set_retention(max_bytes=topic.high_watermark // 3)
        removed = topic.apply_retention()
    assert removed
    ship(data_dir, target, keep=2)
    second = load_latest(target).topic("clicks")
    assert second.low > first.low and second.high == first.high
    assert any(p.endswith(removed[0]) for p in target.list())   # generation 1 still names it
    append_more(data_dir, "orders", 1)
    ship(data_dir, target, keep=2)
    assert not any(p.endswith(removed[0]) for p in target.list())
    restore(target, tmp_path / "r")
    assert records_of(tmp_path / "r")["clicks"] == records_of(data_dir)["clicks"]


def test_small_files_are_embedded_and_mirrored(data_dir, tmp_path):
    offsets = os.path.join(data_dir, "offsets")
    os.makedirs(offsets)
    with open(os.path.join(offsets, "group-a.json"), "w") as f:
        f.write('{"orders": 77}')
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    with open(os.path.join(offsets, "group-a.json"), "w") as f:
        f.write('{"orders": 99}')
    ship(data_dir, target)
    assert load_manifest(target, 1).file("offsets/group-a.json").raw() == b'{"orders": 77}'
    assert load_manifest(target, 2).file("offsets/group-a.json").raw() == b'{"orders": 99}'
    assert target.read("offsets/group-a.json") == b'{"orders": 99}'
    restore(target, tmp_path / "r", generation=1)
    assert (tmp_path / "r" / "offsets" / "group-a.json").read_bytes() == b'{"orders": 77}'


def test_a_damaged_sealed_segment_at_the_source_is_not_shipped(data_dir, tmp_path):
    with lance_store.open(data_dir, readonly=True) as store:
        sealed = store.topic("orders").segments[1]
    flip_bit(sealed.path, 500)
    target = lance_dr_local(tmp_path)
    with pytest.raises(SourceDamage, match=os.path.basename(sealed.path)):
        ship(data_dir, target)
    assert target.stat(LATEST) is None


def test_an_unfinished_generation_never_becomes_latest(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    target.write("manifests/00000000000000000002.json", b'{"generation": 2, "trunc')
    append_more(data_dir, "orders", 1)
    result = ship(data_dir, target)
    assert result.generation == 3
    assert [g.number for g in list_generations(target)] == [1, 3]


def test_an_interrupted_upload_is_resumed_from_its_partial_file(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    with lance_store.open(data_dir, readonly=True) as store:
        seg = store.topic("orders").segments[0]
    rel = f"segments/orders/{os.path.basename(seg.path)}"
    partial = os.path.join(target.root, "segments", "orders", f".{os.path.basename(seg.path)}.lance-dr-partial")
    os.makedirs(os.path.dirname(partial))
    with open(seg.path, "rb") as src, open(partial, "wb") as out:
        out.write(src.read(seg.size // 2))
    ship(data_dir, target)
    assert not os.path.exists(partial)
    with open(seg.path, "rb") as src:
        assert target.read(rel) == src.read()
    assert not verify_target(target).damaged


def test_a_target_holds_one_node(data_dir, tmp_path):
    from lance_dr import DRError
    from .conftest import write_topics
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    other = str(tmp_path / "other")
    write_topics(other, batches=2, topics=("orders",), node_id=9)
    with pytest.raises(DRError, match="holds a copy of cluster .* node 7, but .* node 9"):
        ship(other, target)
    assert target.read(LATEST) == b"1\n"
