"""Warm start: restore, then a real `lance-net serve` on the result, ready on its HTTP port."""
from __future__ import annotations

import json
import signal
import urllib.request

import pytest

from lance_dr import DRError, RestorePoint, ship, warm_start
from lance_dr.testing.servers import free_port

from .test_ship import lance_dr_local


def test_warm_start_serves_the_restored_directory(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    http = f"127.0.0.1:{free_port()}"
    started = warm_start(target, tmp_path / "node", listen=f"127.0.0.1:{free_port()}", http=http,
                         node_id=4, ready_timeout=60)
    try:
        with urllib.request.urlopen(f"http://{http}/health/ready", timeout=5) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["topics"] == 2
        assert started.restore.node_id == 4
    finally:
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(30) == 0


def test_a_broker_that_cannot_start_is_reported_with_its_output(data_dir, tmp_path):
    target = lance_dr_local(tmp_path)
    ship(data_dir, target)
    with pytest.raises(DRError, match=r"exited with code \d+ .*broker output: .*\S"):
        warm_start(target, tmp_path / "node", listen="not-an-address", http=f"127.0.0.1:{free_port()}",
                   point=RestorePoint(), ready_timeout=30)
    assert (tmp_path / "node" / "node.json").exists()     # the restore itself stands
