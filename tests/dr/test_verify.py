"""Verify: every byte of a shipped copy, and how far each topic restores."""
from __future__ import annotations

import json
import os

import pytest

from lance_dr import load_latest, ship, verify_target
from lance_dr.manifest import LATEST, Manifest, manifest_path
from lance_dr.state import VerifyState

from .conftest import append_more, flip_bit
from .test_ship import lance_dr_local


@pytest.fixture
def shipped(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    return target


def _damage(report):
    return [f for f in report.findings if f.severity == "damage"]


def _orders(report):
    return next(t for t in report.topics if t.name == "orders")


def test_a_clean_copy_is_restorable_to_its_end(shipped, data_dir):
    report = verify_target(shipped)
    assert not report.damaged, [str(f) for f in report.findings]
    manifest = load_latest(shipped)
    orders = _orders(report)
    assert orders.complete and orders.restorable_offset == manifest.topic("orders").high
    assert orders.restorable_ts == manifest.topic("orders").last_ts
    assert str(orders).startswith(f"restorable to offset {orders.restorable_offset} / time ")
    assert report.files_checked == len(manifest.objects())
    assert report.bytes_checked == manifest.bytes


def test_a_flipped_bit_is_named_with_the_offset_and_cuts_the_verdict(shipped):
    manifest = load_latest(shipped)
    segs = manifest.topic("orders").segments
    flip_bit(shipped.local_path(segs[1].object), 300)
    report = verify_target(shipped)
    damage = _damage(report)
    assert {f.path for f in damage} == {f"{shipped.url}/{segs[1].object}"}
    assert any("BLAKE3 digest differs" in f.what for f in damage)
    assert any("invalid batch" in f.what and f.offset == segs[1].first_offset for f in damage)
    orders = _orders(report)
    assert not orders.complete and orders.restorable_offset == segs[0].end_offset
    assert next(t for t in report.topics if t.name == "clicks").complete


def test_a_truncated_object_is_reported_with_both_sizes(shipped):
    seg = load_latest(shipped).topic("clicks").segments[0]
    os.truncate(shipped.local_path(seg.object), seg.size - 7)
    damage = _damage(verify_target(shipped))
    assert len(damage) == 1
    assert (damage[0].expected, damage[0].found) == (seg.size, seg.size - 7)
    assert "truncated" in damage[0].what


def test_a_missing_object_is_named(shipped):
    seg = load_latest(shipped).topic("orders").segments[-1]
    os.unlink(shipped.local_path(seg.object))
    damage = _damage(verify_target(shipped))
    assert [f.path for f in damage] == [f"{shipped.url}/{seg.object}"]
    assert "the target lacks it" in damage[0].what


def test_a_tampered_manifest_fails_its_checksum(shipped):
    path = shipped.local_path(manifest_path(1))
    doc = json.loads(open(path).read())
    doc["topics"][0]["segments"][0]["size"] += 1
    with open(path, "w") as f:
        json.dump(doc, f)
    report = verify_target(shipped)
    assert report.damaged and "manifest checksum mismatch" in _damage(report)[0].what
    assert report.topics == []


def test_a_gap_between_segments_is_damage(shipped):
    manifest = load_latest(shipped)
    del manifest.topics[0].segments[1]
    shipped.write(manifest_path(1), manifest.encode())
    report = verify_target(shipped)
    gap = [f for f in _damage(report) if "offset gap" in f.what]
    assert len(gap) == 1 and not report.topics[0].complete
    assert report.topics[0].restorable_offset == manifest.topics[0].segments[0].end_offset


def test_no_latest_means_nothing_to_restore(tmp_path):
    report = verify_target(lance_dr_local(tmp_path, "empty"))
    assert report.damaged and "no LATEST" in _damage(report)[0].what


def test_an_unfinished_generation_is_noted_not_trusted(shipped):
    shipped.write(manifest_path(2), b"{")
    report = verify_target(shipped)
    assert not report.damaged and report.generation == 1
    assert any(f.severity == "note" and "not named by LATEST" in f.what for f in report.findings)


def test_since_last_rechecks_only_what_changed(shipped, data_dir, tmp_path):
    state = VerifyState(str(tmp_path / "state.json"))
    first = verify_target(shipped, since_last=True, state=state)
    assert first.files_skipped == 0 and first.files_checked > 2
    append_more(data_dir, "orders", 2)
    ship(data_dir, shipped)
    second = verify_target(shipped, since_last=True, state=VerifyState(state.path))
    assert second.files_checked == 1 and second.files_skipped == first.files_checked - 1
    assert not second.damaged


def test_since_last_still_sees_a_size_change(shipped, tmp_path):
    state = VerifyState(str(tmp_path / "state.json"))
    verify_target(shipped, since_last=True, state=state)
    seg = load_latest(shipped).topic("orders").segments[0]
    os.truncate(shipped.local_path(seg.object), 100)
    report = verify_target(shipped, since_last=True, state=VerifyState(state.path))
    assert report.damaged
    # A damaged run does not become the new baseline.
    assert VerifyState(state.path).clean_objects(shipped.url)[seg.object][0] == seg.size


def test_verify_of_an_older_generation_after_the_active_segment_grew(shipped, data_dir):
    append_more(data_dir, "orders", 3)
    ship(data_dir, shipped)
    assert shipped.read(LATEST) == b"2\n"
    assert not verify_target(shipped, generation=1).damaged
    assert Manifest.decode(shipped.read(manifest_path(1)), "m").generation == 1
