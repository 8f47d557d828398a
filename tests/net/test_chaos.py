"""`lance-net chaos` against real brokers: a clean run, a run with SIGKILLs, and its loss detector."""
from __future__ import annotations

import asyncio
import json
import subprocess

import numpy as np

from lance_net.chaos import Ledger, judge, sequences_of, stamp
from lance_net.client import Consumer, Producer

from .conftest import lance_net_command


def chaos(*args: str, timeout: float = 120) -> tuple[int, dict, str]:
    """Run `lance-net chaos ... --json`; (exit code, the JSON line, stderr)."""
    done = subprocess.run([*lance_net_command(), "chaos", *args, "--json"], capture_output=True,
                          text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output (exit {done.returncode}): {done.stderr}"
    return done.returncode, json.loads(lines[-1]), done.stderr


def test_clean_run_consumes_every_acknowledged_record_once(broker):
    # Records already in the topic are before the run's start offset and must not count.
    with broker.client() as client:
        topic_id = client.create_topic("chaos")["id"]
        client.produce(topic_id, 1, [b"older record, not this run's"] * 5)

    code, report, stderr = chaos("-e", broker.endpoint, "--duration", "2", "--rate", "400",
                                 "--msg-size", "100")
    assert code == 0, stderr
    assert report["ok"] is True
    assert report["start_offset"] > 0
    assert report["produced"] > 0
    assert report["produced"] == report["sent"]
    assert report["consumed"] == report["produced"]
    assert report["gaps"] == 0 and report["duplicates"] == 0 and report["out_of_order"] == 0
    assert report["kills"] == 0


def test_spawned_broker_killed_every_1_5_s_loses_nothing(tmp_path):
    data_dir = tmp_path / "data"
    code, report, stderr = chaos("--spawn", "--data-dir", str(data_dir), "--duration", "6",
                                 "--rate", "500", "--kill-leader-every", "1.5")
    assert code == 0, stderr
    assert report["kills"] >= 2, stderr
    assert report["gaps"] == 0, report["first_gaps"]
    assert report["duplicates"] == 0
    assert report["produced"] > 0 and report["consumed"] == report["produced"]
    assert report["kill_to_ack_median_s"] is not None and report["kill_to_ack_median_s"] > 0
    assert report["producer_reconnects"] >= 1
    assert any(data_dir.iterdir())  # the given data directory stays


def test_a_spawned_l3_cluster_whose_leader_is_killed_loses_nothing():
    """Three nodes on a real etcd; the leader is SIGKILLed twice and the clients, given every
    node, follow the new leader: nothing acknowledged is lost or consumed twice.

    A kill waits for the restarted node and for an ack from the new leader (an election takes
    up to the 3 s lease), so a kill every 3 s needs about 16 s of run for two of them."""
    code, report, stderr = chaos("--spawn", "--nodes", "3", "--duration", "16", "--rate", "400",
                                 "--kill-leader-every", "3", timeout=240)
    assert code == 0, (stderr, report)
    assert report["endpoint"].count(",") == 2
    assert report["kills"] >= 2, stderr
    assert report["gaps"] == 0, report["first_gaps"]
    assert report["duplicates"] == 0 and report["out_of_order"] == 0
    assert report["produced"] > 0 and report["consumed"] == report["produced"]
    assert report["producer_reconnects"] >= 1   # the clients did move to a new leader
    assert "spawned an L3 cluster of 3 nodes" in stderr


def test_cluster_options_need_spawn_and_three_nodes():
    for args in (["--nodes", "3"], ["--spawn", "--nodes", "2"]):
        done = subprocess.run([*lance_net_command(), "chaos", *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "--nodes" in done.stderr


def test_kill_needs_a_spawned_broker(broker):
    done = subprocess.run([*lance_net_command(), "chaos", "-e", broker.endpoint,
                           "--kill-leader-every", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--spawn" in done.stderr


def test_verdict_counts_gaps_duplicates_and_reordering():
    acked = np.ones(10, bool)
    clean = judge(10, acked, np.arange(10, dtype=np.uint64))
    assert clean.ok and clean.gaps == 0 and clean.duplicates == 0 and clean.out_of_order == 0

    lost = judge(10, acked, np.array([0, 1, 2, 4, 5, 6, 7, 8, 9], np.uint64))
    assert lost.lost and not lost.ok
    assert (lost.gaps, lost.first_gaps) == (1, [3])

    twice = judge(10, acked, np.array([0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9], np.uint64))
    assert not twice.ok and twice.duplicates == 1 and twice.gaps == 0

    swapped = judge(10, acked, np.array([0, 1, 3, 2, 4, 5, 6, 7, 8, 9], np.uint64))
    assert swapped.ok and swapped.out_of_order == 1

    # An unacknowledged record that never arrived is not loss; one that arrived is counted.
    partly = np.array([True] * 8 + [False, False])
    unacked = judge(10, partly, np.arange(9, dtype=np.uint64))
    assert unacked.ok and unacked.gaps == 0 and unacked.unacked_consumed == 1


def test_detector_finds_a_batch_withheld_from_what_a_real_broker_returned(broker):
    run_id = 0x1234_5678_9ABC_DEF0

    async def produce_and_consume() -> tuple[Ledger, list[np.ndarray], int]:
        ledger = Ledger()
        async with Producer(broker.endpoint, "chaos-detector", create_topic=True) as producer:
            for _ in range(4):
                first = ledger.take(50)
                ack = await producer.send_payload(stamp(run_id, first, 50, 40), 50)
                ledger.acknowledged(first, ack.record_count)
        fetched, foreign = [], 0
        async with Consumer(broker.endpoint, "chaos-detector", start_from="earliest",
                            max_bytes=4096) as consumer:
            while sum(map(len, fetched)) < 200:
                batch = await consumer.poll_batch(timeout=5)
                fetched.append(sequences_of(batch, run_id))
                foreign += len(sequences_of(batch, run_id + 1))
        return ledger, fetched, foreign

    ledger, fetched, foreign = asyncio.run(produce_and_consume())
    assert np.concatenate(fetched).tolist() == list(range(200))
    assert foreign == 0  # another run's id reads none of these records

    withheld = fetched[len(fetched) // 2]
    assert len(withheld)
    for part in fetched:
        if part is not withheld:
            ledger.consumed(part)
    verdict = ledger.verdict()
    assert verdict.lost and not verdict.ok
    assert verdict.gaps == len(withheld)
    assert verdict.first_gaps == withheld.tolist()[:len(verdict.first_gaps)]
