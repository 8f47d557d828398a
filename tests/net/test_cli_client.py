"""`lance-net produce | consume | topics | status | bench` end to end, as subprocesses."""
import datetime
import json
import subprocess

import pytest

from .conftest import lance_net_command


def lance_net(broker, *args, input: bytes | None = None, check: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([*lance_net_command(), *args, "--endpoint", broker.endpoint],
                            input=input, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"lance-net {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr.decode()}")
    return result


def json_out(result: subprocess.CompletedProcess):
    return json.loads(result.stdout)


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_topics_create_list_get_retention_delete(module_broker):
    created = json_out(lance_net(module_broker, "topics", "create", "cli-admin",
                                 "--max-age-secs", "3600", "--json"))
    assert created["name"] == "cli-admin"
    assert created["retention"] == {"max_age_secs": 3600, "max_bytes": 0}
    listed = json_out(lance_net(module_broker, "topics", "list", "--json"))
    assert created["id"] in [t["id"] for t in listed]
    got = json_out(lance_net(module_broker, "topics", "get", "cli-admin", "--offsets", "--json"))
    assert got["id"] == created["id"] and got["low_watermark"] == got["high_watermark"] == 0
    by_id = json_out(lance_net(module_broker, "topics", "get", f"#{created['id']}", "--json"))
    assert by_id["name"] == "cli-admin"
    changed = json_out(lance_net(module_broker, "topics", "retention", "cli-admin",
                                 "--max-age-secs", "0", "--max-bytes", "1048576", "--json"))
    assert changed["retention"] == {"max_age_secs": 0, "max_bytes": 1048576}
    deleted = json_out(lance_net(module_broker, "topics", "delete", "cli-admin", "--yes", "--json"))
    assert deleted == {"deleted": created["id"]}
    missing = lance_net(module_broker, "topics", "get", "cli-admin", check=False)
    assert missing.returncode == 1 and b"UNKNOWN_TOPIC" in missing.stderr


def test_produce_arguments_then_consume_them_as_json(module_broker):
    produced = json_out(lance_net(module_broker, "produce", "cli-rt", "alpha", "beta", "gamma",
                                  "--create", "--json"))
    assert produced["records"] == 3 and len(produced["offsets"]) == 3
    consumed = json_lines(lance_net(module_broker, "consume", "cli-rt", "--json"))
    assert [r["value"] for r in consumed] == ["alpha", "beta", "gamma"]
    assert [r["offset"] for r in consumed] == produced["offsets"]
    assert [[r["timestamp_ns"], r["key_low"]] for r in consumed] == produced["sortkeys"]
    plain = lance_net(module_broker, "consume", "cli-rt", "--limit", "2")
    assert plain.stdout == b"alpha\nbeta\n"


def test_produce_from_stdin_and_a_file_then_consume_from_a_time(module_broker, tmp_path):
    lance_net(module_broker, "produce", "cli-lines", "--create", input=b"one\ntwo\n")
    after_first = datetime.datetime.now(datetime.timezone.utc)
    lines = tmp_path / "more.txt"
    lines.write_bytes(b"three\nfour\n")
    produced = json_out(lance_net(module_broker, "produce", "cli-lines", "--file", str(lines),
                                  "--json"))
    assert produced["records"] == 2
    everything = lance_net(module_broker, "consume", "cli-lines", "--from", "earliest")
    assert everything.stdout == b"one\ntwo\nthree\nfour\n"
    since = lance_net(module_broker, "consume", "cli-lines", "--from", after_first.isoformat())
    assert since.stdout == b"three\nfour\n"
    by_offset = lance_net(module_broker, "consume", "cli-lines", "--from",
                          str(produced["offsets"][0] - 77), "--json")
    assert [r["value"] for r in json_lines(by_offset)] == ["three", "four"]
    as_ns = lance_net(module_broker, "consume", "cli-lines", "--from",
                      f"{int(after_first.timestamp() * 1e9)}ns")
    assert as_ns.stdout == b"three\nfour\n"
    latest = lance_net(module_broker, "consume", "cli-lines", "--from", "latest")
    assert latest.stdout == b""


def test_consume_with_a_group_resumes_where_it_committed(module_broker, tmp_path):
    lance_net(module_broker, "produce", "cli-group", "--create", "a", "b", "c")
    group = ["--group", "audit", "--offsets-dir", str(tmp_path)]
    first = lance_net(module_broker, "consume", "cli-group", "--limit", "3", *group)
    lance_net(module_broker, "produce", "cli-group", "d")
    second = lance_net(module_broker, "consume", "cli-group", *group)
    assert first.stdout == b"a\nb\nc\n" and second.stdout == b"d\n"
    assert list((tmp_path / "audit").glob("topic-*-consumer-*.offset"))


def test_status_reports_a_standalone_leader(module_broker):
    status = json_out(lance_net(module_broker, "status", "--json"))
    assert status["mode"] == "standalone" and status["is_leader"] is True
    assert status["leader_addr"] == module_broker.endpoint
    assert status["topics"] >= 0


def test_bench_prints_its_report_as_the_last_line(module_broker):
    result = lance_net(module_broker, "bench", "--topic-name", "cli-bench", "--duration", "2",
                       "--msg-size", "512", "--connections", "2", "--pipeline", "4",
                       "--consume", "--broker-pid", str(module_broker.pid), timeout=120)
    last = result.stdout.decode().strip().splitlines()[-1]
    report = json.loads(last)
    for key in ("msgs_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "errors", "messages"):
        assert key in report, key
    assert report["errors"] == 0 and report["messages"] > 0
    assert report["msgs_per_s"] > 0 and report["p50_ms"] <= report["p99_ms"] <= report["p999_ms"]
    assert report["consume_messages"] == report["messages"]
    assert report["broker_peak_rss_mb"] > 0


@pytest.mark.parametrize("args", [["consume", "no-such-topic"],
                                  ["produce", "no-such-topic", "x"]])
def test_a_missing_topic_is_one_line_and_exit_1(module_broker, args):
    result = lance_net(module_broker, *args, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1 and b"UNKNOWN_TOPIC" in result.stderr
