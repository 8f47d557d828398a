"""Manifests: self-checksummed, immutable descriptions of a generation."""
from __future__ import annotations

import json

import pytest

from lance_dr.errors import ManifestError
from lance_dr.manifest import (FileEntry, Manifest, SegmentEntry, TopicEntry, decode_latest, encode_latest,
                               forked_object, generation_of, manifest_path)


def _manifest(generation: int = 3) -> Manifest:
    seg = SegmentEntry("00000000000000000000_1.lnc", "segments/orders/00000000000000000000_1.lnc", 154,
                       "ab" * 32, False, 0, 154, 77, 10, 10, 2, last_batch_pos=77, last_batch_crc=12345)
    return Manifest(generation, 1000, 900, {"host": "h", "data_dir": "/d"},
                    {"format": 1, "node_id": 7, "cluster_id": "c"},
                    [TopicEntry("orders", 1, {"name": "orders"}, [seg])],
                    [FileEntry.of("node.json", b'{"node_id": 7}')])


def test_a_manifest_reads_back_as_written():
    m = _manifest()
    back = Manifest.decode(m.encode(), "here")
    assert back == m
    assert back.checksum.startswith("blake3:")
    assert back.topic("orders").segments[0].last_batch_crc == 12345
    assert back.file("node.json").raw() == b'{"node_id": 7}'


def test_any_changed_value_fails_the_checksum():
    doc = json.loads(_manifest().encode())
    doc["topics"][0]["segments"][0]["size"] = 155
    with pytest.raises(ManifestError, match="manifests/x.json: manifest checksum mismatch"):
        Manifest.decode(json.dumps(doc).encode(), "manifests/x.json")


def test_a_missing_checksum_is_refused():
    doc = json.loads(_manifest().encode())
    del doc["checksum"]
    with pytest.raises(ManifestError, match="checksum mismatch"):
        Manifest.decode(json.dumps(doc).encode(), "m")


def test_a_truncated_manifest_is_refused_with_its_name():
    data = _manifest().encode()
    with pytest.raises(ManifestError, match="m7: not valid JSON"):
        Manifest.decode(data[: len(data) // 2], "m7")


def test_same_data_ignores_generation_and_times():
    a, b = _manifest(3), _manifest(4)
    b.created_at_ns, b.snapshot_at_ns = 5, 6
    assert a.same_data(b)
    b.topics[0].segments[0] = SegmentEntry(**{**a.topics[0].segments[0].__dict__, "size": 1})
    assert not a.same_data(b)


def test_generation_paths_sort_in_number_order():
    paths = [manifest_path(g) for g in (9, 10, 100)]
    assert sorted(paths) == paths
    assert [generation_of(p) for p in paths] == [9, 10, 100]
    assert generation_of("manifests/notes.txt") is None


def test_latest_holds_a_generation_number():
    assert decode_latest(encode_latest(42), "LATEST") == 42
    with pytest.raises(ManifestError, match="LATEST must hold a generation number"):
        decode_latest(b"{garbage", "t/LATEST")


def test_forked_objects_are_not_segment_names():
    from lance_store.segment import naming
    name = "00000000000000000000_1.lnc"
    assert naming.parse(forked_object("orders", name, 5).rsplit("/", 1)[1]) is None
    assert forked_object("orders", name, 5) == f"segments/orders/{name}~g5"
