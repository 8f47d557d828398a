"""The installed `lance-store` console script: every command with and without --json,
its help, usage errors (exit 2) and one-line errors for paths that do not exist."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import lance_store

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
COMMANDS = ("verify", "inspect", "dump", "repair", "reindex", "demo", "bench")
HEALTHY = FIXTURES / "healthy"


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def segment(fixture: str, topic: str, index: int = 0) -> Path:
    return sorted((FIXTURES / fixture / "segments" / topic).glob("*.lnc"))[index]


# ---- help and usage --------------------------------------------------------------------

def test_main_help_lists_every_command(lance_store_cli):
    proc = lance_store_cli("--help")
    assert proc.returncode == 0 and lance_store_cli("-h").stdout == proc.stdout
    for command in COMMANDS:
        assert f"  {command} " in proc.stdout
    assert "Exit codes" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(lance_store_cli, command):
    proc = lance_store_cli(command, "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"Usage: lance-store {command} [OPTIONS]")
    assert "Exit codes: 0 success, 1 damage found or the command failed, 2 usage error." in proc.stdout


def test_version(lance_store_cli):
    proc = lance_store_cli("--version")
    assert proc.returncode == 0 and lance_store.__version__ in proc.stdout


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["verify"],
    ["verify", HEALTHY, "--no-such-option"],
    ["dump", segment("healthy", "clicks"), "--limit", "many"],
    ["dump", HEALTHY / "node.json"],
    ["inspect", HEALTHY / "node.json"],
    ["repair", HEALTHY, "extra-argument"],
], ids=["unknown command", "missing path", "unknown option", "bad option value", "not a segment name",
        "file for a directory", "extra argument"])
def test_usage_errors_exit_2(lance_store_cli, args):
    proc = lance_store_cli(*args)
    assert proc.returncode == 2
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["verify", "inspect", "repair", "reindex", "dump"])
def test_missing_path_is_one_clear_line(lance_store_cli, tmp_path, command):
    missing = tmp_path / "nowhere" / ("00000000000000000000_1.lnc" if command == "dump" else "data")
    proc = lance_store_cli(command, missing)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ---- verify ----------------------------------------------------------------------------

def test_verify_text_and_json_agree(lance_store_cli, fixture_manifest):
    text = lance_store_cli("verify", HEALTHY)
    doc = json.loads(lance_store_cli("verify", HEALTHY, "--json").stdout)
    assert text.returncode == 0 and "clean" in text.stdout
    assert doc["ok"] and doc["bytes_checked"] > 0 and doc["path"] == str(HEALTHY)
    for topic in doc["topics"]:
        expect = fixture_manifest["healthy"]["topics"][topic["name"]]
        assert topic["high"] == expect["high"] and topic["name"] in text.stdout
        assert [s["status"] for s in topic["segments"]] == \
            ["sealed"] * len(expect["indexes"]) + ["active"]


@pytest.mark.parametrize("target", ["topic folder", "segment file"])
def test_verify_a_topic_folder_or_one_segment(lance_store_cli, fixture_manifest, target):
    damage = fixture_manifest["bit-flip"]["damage"]
    path = FIXTURES / "bit-flip" / damage["path"]
    if target == "topic folder":
        path = path.parent
    proc = lance_store_cli("verify", path, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    damaged = [(f["path"], f["offset"]) for f in doc["findings"] if f["severity"] == "damage"]
    assert damaged == [(str(FIXTURES / "bit-flip" / damage["path"]), damage["offset"])]


# ---- inspect ---------------------------------------------------------------------------

def test_inspect(lance_store_cli, fixture_manifest):
    doc = json.loads(lance_store_cli("inspect", HEALTHY, "--json").stdout)
    assert (doc["node_id"], doc["legacy"], doc["warnings"]) == (1, False, [])
    text = lance_store_cli("inspect", HEALTHY)
    assert text.returncode == 0
    for topic in doc["topics"]:
        expect = fixture_manifest["healthy"]["topics"][topic["name"]]
        assert (topic["low"], topic["high"]) == (expect["low"], expect["high"])
        assert [s["file"] for s in topic["segments"]] == [Path(p).name for p in expect["segments"]]
        assert f"topic {topic['name']} (id {topic['id']}) offsets [{topic['low']}, {topic['high']})" in text.stdout
        rows = expect["batches"]
        assert topic["segments"][0]["first_ts"] == rows[0][2]


def test_inspect_legacy(lance_store_cli, fixture_manifest):
    doc = json.loads(lance_store_cli("inspect", FIXTURES / "legacy", "--json").stdout)
    (topic,) = doc["topics"]
    assert doc["legacy"] and topic["legacy"] and topic["high"] == fixture_manifest["legacy"]["topics"]["events"]["high"]
    assert topic["retention"] == {"max_age_secs": 0, "max_bytes": 0}      # upstream "retention": null
    assert "(upstream layout)" in lance_store_cli("inspect", FIXTURES / "legacy").stdout


# ---- dump ------------------------------------------------------------------------------

def test_dump_json_has_one_object_per_batch(lance_store_cli, fixture_manifest):
    rows = fixture_manifest["healthy"]["topics"]["clicks"]["batches"]
    proc = lance_store_cli("dump", segment("healthy", "clicks"), "--json", "--limit", "0")
    assert proc.returncode == 0
    batches = json_lines(proc.stdout)
    assert [(b["offset"], b["records"], b["first_ts"], b["first_key_low"]) for b in batches] == \
        [(r[0], r[4], r[2], r[3]) for r in rows]
    assert len(json_lines(lance_store_cli("dump", segment("healthy", "clicks"), "--json", "--limit", "2").stdout)) == 2


def test_dump_text_shows_batches_and_records(lance_store_cli, fixture_maker):
    proc = lance_store_cli("dump", segment("healthy", "clicks"), "--limit", "1")
    assert proc.returncode == 0
    assert "batch 0 offset 0" in proc.stdout and "batch 1 " not in proc.stdout
    for _type, value in fixture_maker.clicks_batch(0):
        assert value.decode() in proc.stdout
    hexed = lance_store_cli("dump", segment("healthy", "clicks"), "--limit", "1", "--hex")
    assert fixture_maker.clicks_batch(0)[0][1].hex() in hexed.stdout


def test_dump_torn_segment_says_where_it_stops(lance_store_cli, fixture_manifest):
    damage = fixture_manifest["torn-tail"]["damage"]
    proc = lance_store_cli("dump", FIXTURES / "torn-tail" / damage["path"], "--limit", "0")
    assert proc.returncode == 0
    assert f"stops at byte {damage['position']}" in proc.stdout


def test_dump_legacy_segment_lists_its_records(lance_store_cli, fixture_manifest, fixture_maker):
    first = fixture_manifest["legacy"]["topics"]["events"]["segments"][0]
    proc = lance_store_cli("dump", FIXTURES / "legacy" / first["path"], "--json")
    records = json_lines(proc.stdout)
    values = [rec[-1] for rec in fixture_maker.legacy_segment(first["content"])]
    assert proc.returncode == 0 and [bytes.fromhex(r["value_hex"]) for r in records] == values


# ---- repair and reindex ----------------------------------------------------------------

def test_repair_healthy_has_nothing_to_do(lance_store_cli, fixture_copy):
    path = fixture_copy("healthy")
    text = lance_store_cli("repair", path)
    assert text.returncode == 0 and "nothing to repair" in text.stdout
    doc = json.loads(lance_store_cli("repair", path, "--json").stdout)
    assert (doc["plan"], doc["done"], doc["dry_run"]) == ([], [], False)


def test_reindex(lance_store_cli, fixture_copy, fixture_manifest):
    idx = fixture_manifest["missing-index"]["damage"]["path"]
    path = fixture_copy("missing-index")
    doc = json.loads(lance_store_cli("reindex", path, "--json").stdout)
    assert doc["rebuilt"] == [[str(path / idx), (HEALTHY / idx).stat().st_size // 24]]
    assert (path / idx).read_bytes() == (HEALTHY / idx).read_bytes()
    text = lance_store_cli("reindex", path / idx.replace(".idx", ".lnc"))
    assert text.returncode == 0 and "1 index files rebuilt" in text.stdout


# ---- demo ------------------------------------------------------------------------------

def test_demo_writes_a_clean_directory(lance_store_cli, tmp_path):
    doc = json.loads(lance_store_cli("demo", tmp_path / "demo", "--records", "3000", "--json").stdout)
    assert doc["clean"] and doc["records"] == 4000
    assert sum(t["records"] for t in doc["topics"]) == doc["records"]
    assert lance_store_cli("verify", tmp_path / "demo").returncode == 0
    text = lance_store_cli("demo", tmp_path / "demo2", "--records", "500")
    assert text.returncode == 0 and "verify: clean" in text.stdout
    assert f"lance-store inspect {tmp_path / 'demo2'}" in text.stdout
