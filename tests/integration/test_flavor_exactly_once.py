"""The core exactly-once specs on every InfluxDB our users run (issue 19.1): capture, an outage
and a restart, each with the real worker on the front of one flavor (`1.8`, `2.7`, `3core`,
`serverless`; tests/support/influx_front/dialects.py).

Each proves its promise the way tests/integration/test_worker_capture.py does: the trade ids
stored in InfluxDB equal the simulator's ledger, once each, with the exact strings and times
the exchange sent (tests/support/capture.py assert_exactly_once / assert_values_exact). Rates
are small and outages short: a case takes a few seconds, twelve of them run in every suite.

The fronts speak the documented dialects in front of Debian's influxd 1.6.7; no live 2.x or
3.x server runs here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.influx_fixtures import SERVERS, FrontFor, InfluxDb
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
RATE = 150  # trades/s: enough for many batches and same-millisecond trades, cheap to check


def capture_on(flavor: str, front_for: FrontFor, exchange_sim: Any, influx_db: InfluxDb,
               tmp_path: Path, **env: str) -> Capture:
    """A worker capturing BTCUSDT into `influx_db` through the flavor's front, set up as the
    README says for that server (on Serverless: the DBRP mapping), connected, trades flowing."""
    front = front_for(flavor)
    if flavor == "serverless":
        front.create_dbrp(influx_db.name, influx_db.name)
    sim = exchange_sim("--symbol", f"BTCUSDT:rate={RATE}", "--fault", PAUSED)
    worker = new_worker(tmp_path / "host", "btcusdt", "symbols: [BTCUSDT]\n", sim, front,
                        influx_db, **env)
    cap = Capture(sim, influx_db, front, worker).start_worker()
    sim.fault("resume")
    return cap


@pytest.mark.parametrize("flavor", SERVERS)
def test_capture_stores_every_trade_once_on_every_flavor(
        flavor, front_for, exchange_sim, influx_db, tmp_path):
    cap = capture_on(flavor, front_for, exchange_sim, influx_db, tmp_path)
    time.sleep(2)

    cap.assert_exactly_once(["BTCUSDT"])  # the exact strings and µs times included
    cap.assert_sent_once(["BTCUSDT"])
    assert cap.front is not None and cap.front.stats().refusals == {}
    assert cap.worker.stop() == 0


@pytest.mark.parametrize("flavor", SERVERS)
def test_an_outage_of_influxdb_loses_nothing_on_every_flavor(
        flavor, front_for, exchange_sim, influx_db, tmp_path):
    # A budget of 1 s puts the batches of the outage in the spool, so its replay is proven too.
    cap = capture_on(flavor, front_for, exchange_sim, influx_db, tmp_path,
                     WRITE_RETRY_BUDGET_S="1", WRITE_RETRY_MAX_DELAY_S="0.5")
    front = cap.front
    assert front is not None
    time.sleep(1)
    front.fault("refuse", seconds=3)  # unreachable: nothing listens on its port
    time.sleep(3.5)
    # then refusing in its own words: 3 Core's 400 `invalid` at its request limit, 503 elsewhere
    front.fault("overloaded", seconds=2)
    time.sleep(2.5)

    cap.assert_exactly_once(["BTCUSDT"], timeout=45)
    assert front.stats().refused("fault_overloaded") > 0
    wait_until(lambda: cap.worker.status().get("replayed", 0) >=
               cap.worker.status().get("spooled", 0) > 0, 20,
               what="the status file to count the spooled and replayed trades")
    assert cap.worker.status()["rejected_lines"] == 0
    assert cap.worker.stop() == 0


@pytest.mark.parametrize("flavor", SERVERS)
def test_a_worker_killed_and_restarted_loses_nothing_on_every_flavor(
        flavor, front_for, exchange_sim, influx_db, tmp_path):
    cap = capture_on(flavor, front_for, exchange_sim, influx_db, tmp_path)
    time.sleep(2)
    cap.worker.kill9()  # no flush: what was in memory is lost to this run
    time.sleep(2)  # trades go on while the worker is dead
    cap.start_worker()
    time.sleep(2)  # the downtime's gap past its grace period, backfilled from REST

    cap.assert_exactly_once(["BTCUSDT"])
    assert "resume_from=BTCUSDT:" in cap.worker.output().split("event=starting")[-1]
    assert cap.worker.stop() == 0
