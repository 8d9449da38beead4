"""scripts/status under the real supervisord: a worker that crashes at every start is a crash
loop, unhealthy (exit 1) with its restart count and its error in full (issue 21.2: it said
`healthy` at every sample, rows `ok STARTING` with uptime 0-3 s)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict

import pytest

from tests.integration.test_supervisor import (  # noqa: F401 (fixtures)
    Supervisor,
    env,
    make_project,
    run_status,
    sim,
)
from tests.support.exchange.fixtures import exchange_sim  # noqa: F401
from tests.support.influx_fixtures import influx_db, influx_front, influx_server  # noqa: F401
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow
CRASH = "exited: btcusdt (exit status 1; not expected)"
CAUSE = "RuntimeError: injected fault in main"


def test_a_worker_crashing_at_every_start_is_unhealthy_with_its_restarts_and_its_error(
        tmp_path: Path, env: Dict[str, str]) -> None:  # noqa: F811
    # The test seam of capture/worker.py: the main loop's first health point raises, the worker
    # exits 1 after its 5 s crash pause, supervisord starts it again: every 6-7 s, for ever.
    sup = Supervisor(make_project(tmp_path / "project", "symbols:\n  - BTCUSDT\n"),
                     {**env, "WORKER_INJECT_FAULT": "main"})
    supervisord_log = sup.root / "logs" / "supervisord.log"
    try:
        sup.proc.start()
        wait_until(lambda: supervisord_log.exists() and
                   supervisord_log.read_text().count(CRASH) >= 3, 60, 0.5,
                   what="three crashes of btcusdt in supervisord.log")
        seen = set()
        for _ in range(8):  # every sample, whatever the state of the moment
            out = run_status(sup)
            text = " ".join(out.stdout.split("\n    "))  # the wrapped lines joined again
            row = out.stdout.splitlines()[1].split()
            seen.add(row[2])
            assert out.returncode == 1, out.stdout
            assert row[:2] == ["btcusdt", "FAIL"], out.stdout
            assert "btcusdt: crash loop: exited unexpectedly " in text, out.stdout
            assert ("in the last 10 min (exit status 1), restarted by supervisord each time; "
                    f"last error: {CAUSE} (log: logs/btcusdt.log)") in text, out.stdout
            assert out.stdout.rstrip().endswith("UNHEALTHY")
            time.sleep(1.0)
        print(f"states seen: {sorted(seen)}\n{out.stdout}")
        report = json.loads(run_status(sup, "--json").stdout)
        (worker,) = report["workers"]
        assert not worker["healthy"] and worker["last_error"] == CAUSE
        count = supervisord_log.read_text().count(CRASH)
        assert any(f"exited unexpectedly {n} times" in worker["problems"][0]
                   for n in range(3, count + 1)), worker["problems"]
    finally:
        sup.stop()
