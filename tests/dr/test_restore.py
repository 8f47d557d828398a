"""Restore: verified byte for byte before anything lands in --to, cut at whole batches."""
from __future__ import annotations

import json
import os

import pytest

import lance_store
from lance_dr import DamageError, RestoreError, RestorePoint, load_latest, restore, ship
from lance_dr.restore import staging_dir

from .conftest import append_more, flip_bit, records_of
from .test_ship import lance_dr_local


@pytest.fixture
def shipped(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    return target


def test_a_restore_holds_every_record(shipped, data_dir, tmp_path):
    result = restore(shipped, tmp_path / "new")
    assert records_of(tmp_path / "new") == records_of(data_dir)
    assert not os.path.exists(staging_dir(str(tmp_path / "new")))
    with lance_store.open(tmp_path / "new") as store:       # a broker can open it for writing
        assert store.node_id == 7
        store.topic("orders").append([b"first write of the new node"])
    assert result.topics["orders"]["high"] == result.topics["orders"]["shipped_high"]


def test_indexes_are_rebuilt(shipped, tmp_path):
    restore(shipped, tmp_path / "new")
    folder = tmp_path / "new" / "segments" / "orders"
    sealed = [f for f in os.listdir(folder) if f.endswith(".lnc") and "-" in f]
    assert sealed and all(os.path.exists(folder / f.replace(".lnc", ".idx")) for f in sealed)
    from lance_store.verify import verify_path
    assert not verify_path(str(tmp_path / "new")).findings


def test_node_id_is_written_for_the_new_node(shipped, tmp_path):
    restore(shipped, tmp_path / "new", node_id=12)
    node = json.loads((tmp_path / "new" / "node.json").read_text())
    assert node["node_id"] == 12
    assert node["cluster_id"] == load_latest(shipped).node["cluster_id"]


def test_restore_to_an_offset_keeps_whole_batches_only(shipped, data_dir, tmp_path):
    batches = _batches(data_dir, "orders")
    middle = batches[len(batches) // 2]
    restore(shipped, tmp_path / "new", point=RestorePoint(topic_offsets={"orders": middle[0] + 10}))
    got = records_of(tmp_path / "new")
    want = records_of(data_dir)
    assert got["orders"] == [r for r in want["orders"] if r[0] < middle[0]]
    assert got["clicks"] == want["clicks"]


def test_a_bare_offset_applies_to_every_topic_within_what_it_holds(shipped, data_dir, tmp_path):
    limit = _batches(data_dir, "clicks")[5][0]
    restore(shipped, tmp_path / "new", point=RestorePoint(offset=limit))
    got, want = records_of(tmp_path / "new"), records_of(data_dir)
    for name in ("orders", "clicks"):
        assert got[name] == [r for r in want[name] if r[0] < limit]


def test_restore_to_a_time(shipped, data_dir, tmp_path):
    when = _batches(data_dir, "orders")[20][1]
    restore(shipped, tmp_path / "new", point=RestorePoint(at_ns=when))
    got, want = records_of(tmp_path / "new"), records_of(data_dir)
    for name in ("orders", "clicks"):
        assert got[name] == [r for r in want[name] if r[1] <= when]
    assert got["orders"] and len(got["orders"]) < len(want["orders"])


def test_a_time_before_everything_restores_empty_topics_at_their_offsets(shipped, tmp_path):
    restore(shipped, tmp_path / "new", point=RestorePoint(at_ns=1))
    with lance_store.open(tmp_path / "new", readonly=True) as store:
        assert {t.name: t.high_watermark for t in store.topics()} == {"orders": 0, "clicks": 0}


def test_an_offset_outside_a_topic_is_refused_before_any_download(shipped, tmp_path):
    high = load_latest(shipped).topic("orders").high
    with pytest.raises(RestoreError, match=f"offset {high + 1} is outside .* high {high}"):
        restore(shipped, tmp_path / "new", point=RestorePoint(topic_offsets={"orders": high + 1}))
    assert not os.path.exists(tmp_path / "new")
    assert not os.path.exists(staging_dir(str(tmp_path / "new")))


def test_an_older_generation_restores_as_it_was(shipped, data_dir, tmp_path):
    before = records_of(data_dir)
    append_more(data_dir, "orders", 4)
    ship(data_dir, shipped)
    restore(shipped, tmp_path / "old", generation=1)
    assert records_of(tmp_path / "old") == before


def test_a_non_empty_destination_is_refused_unless_forced(shipped, data_dir, tmp_path):
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="not empty"):
        restore(shipped, dest)
    assert os.listdir(dest) == ["keep.txt"]
    restore(shipped, dest, force=True)
    assert not (dest / "keep.txt").exists()
    assert records_of(dest) == records_of(data_dir)


def test_an_empty_existing_destination_is_filled(shipped, data_dir, tmp_path):
    dest = tmp_path / "mount"
    dest.mkdir()
    restore(shipped, dest)
    assert records_of(dest) == records_of(data_dir)


@pytest.mark.parametrize("exists", [False, True])
def test_a_damaged_copy_leaves_the_destination_as_it_was(shipped, tmp_path, exists):
    seg = load_latest(shipped).topic("clicks").segments[1]
    flip_bit(shipped.local_path(seg.object), 200)
    dest = tmp_path / "new"
    if exists:
        dest.mkdir()
    with pytest.raises(DamageError, match=seg.object.replace(".", r"\.")) as err:
        restore(shipped, dest)
    assert any("BLAKE3" in f.what for f in err.value.findings)
    assert os.path.exists(dest) == exists and (not exists or os.listdir(dest) == [])
    # The good downloads stay for a retry; the damaged one does not.
    stage = staging_dir(str(dest))
    assert not os.path.exists(os.path.join(stage, "segments", "clicks", seg.name))
    assert os.path.exists(os.path.join(stage, "segments", "orders"))


def test_a_retry_resumes_the_download_it_was_doing(shipped, data_dir, tmp_path):
    dest = tmp_path / "new"
    manifest = load_latest(shipped)
    stage = staging_dir(str(dest))
    # What an interrupted attempt left: the first segments whole, one half-way.
    done = manifest.topic("orders").segments
    os.makedirs(os.path.join(stage, "segments", "orders"))
    for seg in done[:2]:
        with open(shipped.local_path(seg.object), "rb") as src:
            data = src.read()
        with open(os.path.join(stage, "segments", "orders", seg.name), "wb") as out:
            out.write(data if seg is done[0] else data[: len(data) // 2])
    with open(os.path.join(stage, ".lance-dr-restore.json"), "w") as f:
        json.dump({"url": shipped.url, "generation": 1, "checksum": manifest.checksum,
                   "point": {"at_ns": None, "offset": None, "topic_offsets": {}}}, f)
    result = restore(shipped, dest)
    assert result.downloaded_bytes == manifest.bytes - done[0].size - done[1].size // 2
    assert records_of(dest) == records_of(data_dir)


def _batches(data_dir, topic: str) -> list[tuple[int, int]]:
    """(offset, timestamp) of each batch of a topic."""
    out = []
    with lance_store.open(data_dir, readonly=True) as store:
        t = store.topic(topic)
        offset = t.low_watermark
        while offset < t.high_watermark:
            batches, nxt = t.read(offset, 1)
            out.extend((b.offset, b.header.first_timestamp_ns) for b in batches)
            offset = nxt
    return out


def test_a_retry_for_another_point_starts_over(shipped, data_dir, tmp_path):
    dest = tmp_path / "new"
    stage = staging_dir(str(dest))
    os.makedirs(os.path.join(stage, "segments", "orders"))
    with open(os.path.join(stage, "segments", "orders", "00000000000000000000_1.lnc"), "wb") as f:
        f.write(b"what a cut at another point left")
    with open(os.path.join(stage, ".lance-dr-restore.json"), "w") as f:
        json.dump({"url": shipped.url, "generation": 1, "checksum": load_latest(shipped).checksum,
                   "point": {"at_ns": None, "offset": 5, "topic_offsets": {}}}, f)
    restore(shipped, dest)
    assert "00000000000000000000_1.lnc" not in os.listdir(dest / "segments" / "orders")
    assert records_of(dest) == records_of(data_dir)
