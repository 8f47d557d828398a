"""The committed fixture directories: verify, open, repair and legacy reads against what
fixtures/manifest.json says each one holds."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import lance_store
from lance_store import ReadOnlyError
from lance_store.segment.header import BATCH_OVERHEAD

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DAMAGED = ("torn-tail", "bit-flip", "missing-index")
LANCE_FIXTURES = ("healthy",) + DAMAGED


# ---- what the fixtures hold ------------------------------------------------------------

def content_of(maker, topic: str):
    return {"orders": maker.orders_batch, "clicks": maker.clicks_batch}[topic]


def expected_records(rows: list, make) -> list[tuple]:
    """(offset, (ts, key_low), type, ext_type, value) of every record of the batches."""
    out = []
    for offset, end, ts, key, count, content in rows:
        pos = offset + BATCH_OVERHEAD
        recs = make(content)
        assert len(recs) == count
        for i, rec in enumerate(recs):
            if len(rec) == 3:
                rtype, ext, value = rec
                header = 7
            else:
                (rtype, value), ext, header = rec, 0, 5
            out.append((pos, (ts, key + i), rtype, ext, value))
            pos += header + len(value)
        assert pos == end
    return out


def records_of(topic, start=None) -> list[tuple]:
    return [(r.offset, tuple(r.sortkey), r.type, r.ext_type, bytes(r.value)) for r in topic.records(start)]


def batches_read(topic) -> list[tuple[int, int, int]]:
    """(offset, end, record_count) of every batch from the low to the high watermark, via read()."""
    out, offset = [], topic.low_watermark
    while offset < topic.high_watermark:
        batches, offset = topic.read(offset, max_bytes=700)
        assert batches, f"read() returned nothing at {offset} below high {topic.high_watermark}"
        out += [(b.offset, b.offset + len(b.data), b.header.record_count) for b in batches]
    return out


def verify_json(cli, path) -> tuple[int, dict]:
    proc = cli("verify", path, "--json")
    return proc.returncode, json.loads(proc.stdout)


def findings(doc: dict, severity: str) -> list[dict]:
    return [f for f in doc["findings"] if f["severity"] == severity]


# ---- the fixtures themselves -----------------------------------------------------------

def test_fixtures_regenerate_byte_for_byte(tmp_path, fixture_maker, tree_state):
    fixture_maker.build(str(tmp_path))
    fresh = {k: v[0] for k, v in tree_state(tmp_path).items()}
    committed = {k: v[0] for k, v in tree_state(FIXTURES).items()
                 if k.split(os.sep)[0] in fixture_maker.NAMES or k == "manifest.json"}
    assert sorted(fresh) == sorted(committed)
    for name, data in fresh.items():
        assert data == committed[name], f"fixtures/{name} differs from what make_fixtures.py writes"


@pytest.mark.parametrize("name", LANCE_FIXTURES + ("legacy",))
def test_fixture_survives_git_and_stays_small(name):
    total = 0
    for root, dirs, files in os.walk(FIXTURES / name):
        assert dirs or files, f"{root} is empty: git would drop it"
        for f in files:
            size = os.path.getsize(os.path.join(root, f))
            assert size > 0, f"{root}/{f} is empty"
            total += size
    assert total < 64 << 10


# ---- verify ----------------------------------------------------------------------------

def test_verify_healthy_is_clean(lance_store_cli, fixture_manifest):
    rc, doc = verify_json(lance_store_cli, FIXTURES / "healthy")
    assert rc == 0 and doc["ok"] and doc["findings"] == []
    topics = {t["name"]: t for t in doc["topics"]}
    for name, expect in fixture_manifest["healthy"]["topics"].items():
        assert (topics[name]["low"], topics[name]["high"]) == (expect["low"], expect["high"])
        assert topics[name]["records"] == sum(row[4] for row in expect["batches"])
    proc = lance_store_cli("verify", FIXTURES / "healthy")
    assert proc.returncode == 0 and "clean" in proc.stdout


def test_verify_bit_flip_names_the_segment_and_offset(lance_store_cli, fixture_manifest):
    damage = fixture_manifest["bit-flip"]["damage"]
    segment = str(FIXTURES / "bit-flip" / damage["path"])
    rc, doc = verify_json(lance_store_cli, FIXTURES / "bit-flip")
    assert rc == 1 and not doc["ok"]
    assert [(f["path"], f["offset"]) for f in findings(doc, "damage")] == [(segment, damage["offset"])]
    assert "crc" in findings(doc, "damage")[0]["what"]
    proc = lance_store_cli("verify", FIXTURES / "bit-flip")
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("damage:"))
    assert segment in line and f"at offset {damage['offset']}" in line
    assert "DAMAGED" in proc.stdout


def test_verify_torn_tail_is_a_note(lance_store_cli, fixture_manifest):
    damage = fixture_manifest["torn-tail"]["damage"]
    segment = str(FIXTURES / "torn-tail" / damage["path"])
    rc, doc = verify_json(lance_store_cli, FIXTURES / "torn-tail")
    assert rc == 0 and doc["ok"]
    assert findings(doc, "damage") == [] and findings(doc, "warning") == []
    assert [(f["path"], f["offset"]) for f in findings(doc, "note")] == [(segment, damage["offset"])]
    orders = next(t for t in doc["topics"] if t["name"] == "orders")
    assert orders["high"] == fixture_manifest["torn-tail"]["topics"]["orders"]["high"]
    proc = lance_store_cli("verify", FIXTURES / "torn-tail")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("note:"))
    assert proc.returncode == 0 and segment in line and f"at offset {damage['offset']}" in line


def test_verify_missing_index_is_a_warning(lance_store_cli, fixture_manifest):
    idx = str(FIXTURES / "missing-index" / fixture_manifest["missing-index"]["damage"]["path"])
    rc, doc = verify_json(lance_store_cli, FIXTURES / "missing-index")
    assert rc == 0 and doc["ok"]
    assert [f["path"] for f in findings(doc, "warning")] == [idx]
    proc = lance_store_cli("verify", FIXTURES / "missing-index")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("warning:"))
    assert proc.returncode == 0 and idx in line and "missing" in line


def test_verify_legacy_reports_legacy_segments(lance_store_cli, fixture_manifest):
    expect = fixture_manifest["legacy"]["topics"]["events"]
    rc, doc = verify_json(lance_store_cli, FIXTURES / "legacy")
    assert rc == 0 and doc["ok"] and findings(doc, "damage") == [] and findings(doc, "warning") == []
    (topic,) = doc["topics"]
    assert [s["status"] for s in topic["segments"]] == ["legacy"] * len(expect["segments"])
    # Reported in t0 order, each at its place in the concatenation.
    assert [(os.path.basename(s["path"]), s["first_offset"], s["end_offset"]) for s in topic["segments"]] == \
        [(os.path.basename(s["path"]), s["offset"], s["end"]) for s in expect["segments"]]
    assert topic["records"] == sum(s["record_count"] for s in expect["segments"])
    assert any("legacy" in f["what"] for f in findings(doc, "note"))


# ---- opening them ----------------------------------------------------------------------

def expected_after_recovery(name: str, manifest: dict, maker) -> dict[str, list]:
    """The records each topic must serve after recovery: for bit-flip, the orders
    batches before the damaged one and those of the undamaged active segment."""
    out = {}
    for topic, doc in manifest[name]["topics"].items():
        rows = doc["batches"]
        if name == "bit-flip" and topic == "orders":
            damaged = manifest[name]["damage"]["offset"]
            sealed_end = int(Path(doc["segments"][1]).name.split("_")[0])
            rows = [r for r in rows if r[1] <= damaged or r[0] >= sealed_end]
        out[topic] = expected_records(rows, content_of(maker, topic))
    return out


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
@pytest.mark.parametrize("name", LANCE_FIXTURES)
def test_open_serves_every_valid_record(name, readonly, fixture_copy, fixture_manifest, fixture_maker):
    path = fixture_copy(name)
    expected = expected_after_recovery(name, fixture_manifest, fixture_maker)
    with lance_store.open(path, readonly=readonly) as store:
        assert sorted(t.name for t in store.topics()) == sorted(expected)
        for topic, recs in expected.items():
            t = store.topic(topic)
            doc = fixture_manifest[name]["topics"][topic]
            assert (t.low_watermark, t.high_watermark) == (doc["low"], doc["high"])
            assert records_of(t) == recs
            if name != "bit-flip":
                assert batches_read(t) == [(r[0], r[1], r[4]) for r in doc["batches"]]


def test_open_bit_flip_reads_up_to_the_damage(fixture_copy, fixture_manifest, fixture_maker):
    damage = fixture_manifest["bit-flip"]["damage"]
    rows = fixture_manifest["bit-flip"]["topics"]["orders"]["batches"]
    before = [r for r in rows if r[1] <= damage["offset"]]
    with lance_store.open(fixture_copy("bit-flip"), readonly=True) as store:
        t = store.topic("orders")
        batches, _ = t.read(0, max_bytes=damage["offset"])
        assert [(b.offset, b.header.record_count) for b in batches] == [(r[0], r[4]) for r in before]
        assert records_of(t)[:sum(r[4] for r in before)] == expected_records(before, fixture_maker.orders_batch)


def test_writable_open_cuts_the_torn_tail(fixture_copy, fixture_manifest, fixture_maker):
    damage = fixture_manifest["torn-tail"]["damage"]
    path = fixture_copy("torn-tail")
    segment = path / damage["path"]
    with lance_store.open(path, readonly=True) as store:
        assert store.topic("orders").high_watermark == damage["offset"]
    assert segment.stat().st_size == damage["file_size"]          # read-only: untouched
    with lance_store.open(path) as store:
        t = store.topic("orders")
        assert any(str(segment) in w and f"offset {damage['offset']}" in w for w in store.warnings)
        assert segment.stat().st_size == damage["position"]
        r = t.append([b"after the cut"], timestamp_ns=fixture_maker.EPOCH + 500 * fixture_maker.SECOND)
        assert r.offset == damage["offset"]
    with lance_store.open(path, readonly=True) as store:
        assert records_of(store.topic("orders"), damage["offset"])[0][4] == b"after the cut"


def test_writable_open_rebuilds_the_missing_index(fixture_copy, fixture_manifest):
    idx = fixture_manifest["missing-index"]["damage"]["path"]
    path = fixture_copy("missing-index")
    with lance_store.open(path, readonly=True) as store:
        assert any("index missing" in w for w in store.warnings)
    assert not (path / idx).exists()
    with lance_store.open(path) as store:
        assert any(idx.split("/")[-1] in w for w in store.warnings)
    assert (path / idx).read_bytes() == (FIXTURES / "healthy" / idx).read_bytes()


# ---- legacy ----------------------------------------------------------------------------

def test_legacy_reads_in_t0_order_with_concatenated_offsets(fixture_copy, fixture_manifest, fixture_maker,
                                                            tree_state):
    path = fixture_copy("legacy")
    before = tree_state(path)
    expect = fixture_manifest["legacy"]["topics"]["events"]
    wanted = []
    for seg in expect["segments"]:
        pos = seg["offset"]
        for rec in fixture_maker.legacy_segment(seg["content"]):
            rtype, ext, value = rec if len(rec) == 3 else (rec[0], 0, rec[1])
            wanted.append((pos, rtype, ext, value))
            pos += (7 if len(rec) == 3 else 5) + len(value)
        assert pos == seg["end"]
    with lance_store.open(path, readonly=True) as store:
        assert store.legacy
        t = store.topic("events")
        assert (t.low_watermark, t.high_watermark) == (0, expect["high"])
        got = [(r.offset, r.type, r.ext_type, bytes(r.value)) for r in t.records()]
        assert got == wanted
        with pytest.raises(ReadOnlyError):
            t.append([b"never"])
    assert tree_state(path) == before


def test_legacy_writable_open_fails_clearly_and_writes_nothing(fixture_copy, tree_state):
    path = fixture_copy("legacy")
    before = tree_state(path)
    with pytest.raises(ReadOnlyError, match=re.escape(str(path)) + ".*readonly=True"):
        lance_store.open(path)
    assert tree_state(path) == before


# ---- repair ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", LANCE_FIXTURES + ("legacy",))
def test_repair_dry_run_changes_nothing(name, fixture_copy, lance_store_cli, tree_state):
    path = fixture_copy(name)
    before = tree_state(path)
    proc = lance_store_cli("repair", path, "--dry-run", "--json")
    assert proc.returncode == (1 if name == "bit-flip" else 0), proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["dry_run"] and plan["done"] == []
    assert bool(plan["plan"]) == (name in DAMAGED)
    assert tree_state(path) == before


def test_repair_cuts_the_torn_tail(fixture_copy, fixture_manifest, lance_store_cli):
    damage = fixture_manifest["torn-tail"]["damage"]
    path = fixture_copy("torn-tail")
    proc = lance_store_cli("repair", path, "--json")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)["done"]
    assert [(a["kind"], a["path"], a["size"]) for a in done] == \
        [("cut_tail", str(path / damage["path"]), damage["position"])]
    assert (path / damage["path"]).stat().st_size == damage["position"]
    rc, doc = verify_json(lance_store_cli, path)
    assert rc == 0 and doc["findings"] == []
    for segment in fixture_manifest["torn-tail"]["topics"]["orders"]["segments"][:1]:
        assert (path / segment).read_bytes() == (FIXTURES / "torn-tail" / segment).read_bytes()


def test_repair_rebuilds_the_missing_index(fixture_copy, fixture_manifest, lance_store_cli):
    idx = fixture_manifest["missing-index"]["damage"]["path"]
    path = fixture_copy("missing-index")
    proc = lance_store_cli("repair", path)
    assert proc.returncode == 0, proc.stderr
    assert str(path / idx) in proc.stdout
    assert (path / idx).read_bytes() == (FIXTURES / "healthy" / idx).read_bytes()
    rc, doc = verify_json(lance_store_cli, path)
    assert rc == 0 and doc["findings"] == []


def test_repair_leaves_the_bit_flipped_segment_alone(fixture_copy, fixture_manifest, lance_store_cli,
                                                     tree_state):
    damage = fixture_manifest["bit-flip"]["damage"]
    path = fixture_copy("bit-flip")
    before = tree_state(path)
    proc = lance_store_cli("repair", path, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert [(a["kind"], a["path"]) for a in doc["plan"]] == [("unrepairable", str(path / damage["path"]))]
    assert doc["done"] == []
    after = tree_state(path)
    after.pop(".lock", None)                       # repair holds the writer's lock while it runs
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    text = lance_store_cli("repair", path)
    assert text.returncode == 1 and str(path / damage["path"]) in text.stdout
