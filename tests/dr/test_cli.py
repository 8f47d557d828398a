"""`lance-dr` as operators run it: config names and URLs, --json, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lance_dr.cli import main

from .conftest import append_more, flip_bit, records_of


def run(*args, env=None, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + (result.stderr if result.stderr_bytes else "")
    return result


@pytest.fixture
def config(tmp_path, s3_server):
    path = tmp_path / "lance.toml"
    opts = s3_server.options
    path.write_text(f"""
[node]
data_dir = "{tmp_path / 'data'}"

[dr.targets.region-b]
url = "{tmp_path / 'region-b'}"
keep = 3

[dr.targets.cloud]
url = "s3://lance-dr/cli-{os.getpid()}-{tmp_path.name}"

[dr.targets.cloud.options]
key = "{opts['key']}"
secret = "{opts['secret']}"
client_kwargs = {{ endpoint_url = "{s3_server.endpoint}", region_name = "us-east-1" }}
""")
    return str(path)


def test_ship_verify_list_restore_by_configured_name(data_dir, tmp_path, config):
    os.rename(data_dir, tmp_path / "data")     # where [node] data_dir points
    shipped = json.loads(run("ship", "--to", "region-b", "--config", config, "--json").output)
    assert shipped["generation"] == 1 and shipped["uploaded_files"] > 0
    again = json.loads(run("ship", "--to", "region-b", "--config", config, "--json").output)
    assert again["generation"] is None and again["uploaded_bytes"] == 0

    report = json.loads(run("verify", "--target", "region-b", "--config", config, "--json").output)
    assert report["ok"] and all(t["verdict"].startswith("restorable to offset") for t in report["topics"])

    listing = json.loads(run("list", "--target", "region-b", "--config", config, "--json").output)
    assert [g["status"] for g in listing["generations"]] == ["latest"]

    restored = json.loads(run("restore", "--from", "region-b", "--to", tmp_path / "new", "--node-id", "3",
                              "--config", config, "--json").output)
    assert restored["node_id"] == 3
    assert records_of(tmp_path / "new") == records_of(tmp_path / "data")


def test_the_config_is_found_through_the_environment(data_dir, config):
    result = run("ship", "--to", "cloud", "--data-dir", data_dir, "--json", env={"LANCE_CONFIG": config})
    assert json.loads(result.output)["url"].startswith("s3://lance-dr/cli-")
    assert json.loads(run("verify", "--target", "cloud", "--json", env={"LANCE_CONFIG": config}).output)["ok"]


def test_an_unknown_target_name_is_a_usage_error(data_dir, tmp_path, config):
    result = run("ship", "--to", "region-c", "--data-dir", data_dir, "--config", config, ok=False)
    assert result.exit_code == 2
    assert "no target named 'region-c' in [dr.targets]" in result.stderr
    assert "region-b" in result.stderr and not (tmp_path / "region-c").exists()


def test_verify_exits_1_on_damage_and_names_it(data_dir, tmp_path):
    copy = tmp_path / "copy"
    run("ship", "--to", copy, "--data-dir", data_dir)
    seg = sorted(p for p in (copy / "segments" / "orders").iterdir() if p.suffix == ".lnc")[0]
    flip_bit(str(seg), 120)
    result = run("verify", copy, ok=False)
    assert result.exit_code == 1
    assert "DAMAGED" in result.output and seg.name in result.output
    restore = run("restore", "--from", copy, "--to", tmp_path / "new", ok=False)
    assert restore.exit_code == 1 and "is as it was" in restore.stderr
    assert not (tmp_path / "new").exists()


def test_restore_at_a_time_and_offsets(data_dir, tmp_path):
    copy = tmp_path / "copy"
    run("ship", "--to", copy, "--data-dir", data_dir)
    run("restore", "--from", copy, "--to", tmp_path / "by-offset", "--offset", "orders=0", "--offset", "5000")
    got = records_of(tmp_path / "by-offset")
    assert got["orders"] == [] and got["clicks"] and max(r[0] for r in got["clicks"]) < 5000
    run("restore", "--from", copy, "--to", tmp_path / "by-time", "--at", "1970-01-01T00:00:01Z")
    assert records_of(tmp_path / "by-time") == {"orders": [], "clicks": []}
    bad = run("restore", "--from", copy, "--to", tmp_path / "x", "--at", "yesterday", ok=False)
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_watch_ships_rounds_and_reports_the_lag(data_dir, tmp_path):
    result = run("ship", "--to", tmp_path / "copy", "--data-dir", data_dir, "--watch", "--rounds", "2",
                 "--interval", "0.1", "--json")
    rounds = [json.loads(line) for line in result.output.splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["ship"]["generation"] == 1 and rounds[1]["ship"]["generation"] is None
    assert rounds[1]["lag"] == {"bytes": 0, "seconds": 0.0, "topics": {"orders": 0, "clicks": 0}}


def test_drill_reports_rto_and_rpo(data_dir, tmp_path):
    copy = tmp_path / "copy"
    run("ship", "--to", copy, "--data-dir", data_dir)
    added = append_more(data_dir, "orders", 2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    report = json.loads(run("drill", "--from", copy, "--data-dir", data_dir, "--workdir", scratch,
                            "--json").output)
    assert report["ok"] and report["rto_seconds"] > 0
    assert report["lag_bytes"] == sum(r.next_offset - r.offset for r in added)
    assert report["rpo_seconds"] > 0
    assert report["records"] == sum(len(v) for v in records_of(data_dir).values()) - 20
    assert os.listdir(scratch) == []


def test_the_console_script_is_installed(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "lance-dr")
    out = subprocess.run([exe, "list", "--target", str(tmp_path / "nothing"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"url": str(tmp_path / "nothing"), "generations": []}


def test_list_marks_unfinished_and_damaged_generations(data_dir, tmp_path):
    copy = tmp_path / "copy"
    run("ship", "--to", copy, "--data-dir", data_dir)
    append_more(data_dir, "orders", 1)
    run("ship", "--to", copy, "--data-dir", data_dir)
    (copy / "manifests" / "00000000000000000003.json").write_text("{}")
    manifest_1 = copy / "manifests" / "00000000000000000001.json"
    manifest_1.write_text(manifest_1.read_text().replace('"generation": 1', '"generation": 11'))
    listing = json.loads(run("list", "--target", copy, "--json").output)
    assert [(g["generation"], g["status"]) for g in listing["generations"]] == \
        [(1, "damaged"), (2, "latest"), (3, "unfinished")]
    latest = listing["generations"][1]
    import lance_store
    with lance_store.open(data_dir, readonly=True) as store:
        assert latest["topics"]["orders"]["high"] == store.topic("orders").high_watermark
    assert "checksum mismatch" in listing["generations"][0]["problem"]
