"""The write quota seen coming (issue 19.3): a real worker on a front whose quota it overruns,
and what scripts/status (workers/ops/status.py) makes of its status file.

On every flavor: a quota is Cloud's (Serverless, and Cloud TSM, which speaks the 2.x API, as
the 2.7 front does); the OSS servers have none of their own, but a proxy or gateway in front of
them may answer 429 in their dialect, and the worker must not care which server said it.

The front counts uncompressed bytes per fixed window and answers 429 with Retry-After past its
quota (tests/support/influx_front/quota.py). Here the quota is the free plan's shrunk to 6 kB
per 6 s window and the pair trades at about twice what it allows, for three windows: the worker
waits each 429 out with its batches in the spool, and every trade of the ledger is stored once.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.influx_front import InfluxFront
from workers.health import as_status
from workers.ops import status as st
from workers.settings import WriteLimit

PAUSED = '{"action": "pause"}'
TOKEN = "quota-token-0123"
LIMIT, QUOTA = "6kB/6s", WriteLimit(6_000, 6.0)
RATE = 11  # trades/s: ~2x the ~5.2 trades/s that 1 kB/s allows at ~192 bytes per line
WINDOWS = 3


@pytest.fixture(params=["serverless", "2.7", "3core", "1.8"])
def quota_front(request, influx_server, tmp_path: Path) -> Iterator[InfluxFront]:
    token = f"quota:{TOKEN}" if request.param == "1.8" else TOKEN
    front = InfluxFront.start(tmp_path / "front", influx_server.url, token=token,
                              flavor=request.param, write_quota=LIMIT)
    yield front
    front.stop()


def supervisor_info(status: Dict[str, Any]) -> Dict[str, Any]:
    """What supervisord would say of the worker: RUNNING as the process of its status file."""
    return {"name": "btcusdt", "statename": "RUNNING", "pid": status.get("pid"),
            "start": status.get("started", 0.0), "description": "", "spawnerr": ""}


@pytest.mark.slow  # three quota windows: ~23 s
def test_a_quota_run_at_twice_the_allowed_rate_loses_nothing_and_status_shows_wait_and_headroom(
        tmp_path, exchange_sim, quota_front, influx_db, capsys):
    sim = exchange_sim("--symbol", f"BTCUSDT:rate={RATE}", "--fault", PAUSED)
    worker = new_worker(tmp_path / "host", "btcusdt", "symbols: [BTCUSDT]\n", sim,
                        quota_front, influx_db, INFLUXDB_WRITE_LIMIT=LIMIT)
    cap = Capture(sim, influx_db, quota_front, worker).start_worker()
    sim.fault("resume")
    waits: List[str] = []
    seen: List[st.Quota] = []
    began = time.time()
    while time.time() - began < WINDOWS * QUOTA.window_s:
        time.sleep(0.5)
        status, now = worker.status(), time.time()
        row = st.assess("btcusdt", ["BTCUSDT"], supervisor_info(status), status, now)
        waits += [w for w in row.warnings if "write quota is used up (429)" in w]
        seen.append(st.host_quota(QUOTA, {"btcusdt": as_status(status)}, [row], now))

    cap.assert_exactly_once(["BTCUSDT"], timeout=30)  # every trade id of the ledger, once
    assert quota_front.stats().refused("quota") >= 2  # the quota was overrun, twice or more
    assert waits, "scripts/status never showed the 429's wait"
    assert "writes resume at" in waits[0] and "none is lost" in waits[0]
    last = seen[-1]
    assert 120 <= last.bytes_per_line <= 220  # measured by the worker from what it sent
    assert last.allowed_trades_per_s == pytest.approx(1_000 / last.bytes_per_line)
    assert any(q.host_trades_per_s > 1.5 * q.allowed_trades_per_s for q in seen)
    said = [w for q in seen for w in q.warnings]
    assert any(w.startswith("this host's pairs produce ") for w in said), said
    assert any(w.startswith("InfluxDB write quota: ") for w in said), said  # before or at 80 %
    assert any(0 < q.used_bytes <= QUOTA.limit_bytes + 3_000 for q in seen)  # the window's use
    status = worker.status()
    with capsys.disabled():
        print(f"\n[quota {LIMIT} on {quota_front.flavor}] "
              f"{len(sim.ledger_ids('BTCUSDT'))} trades stored once, "
              f"{quota_front.stats().refused('quota')} x 429, {last.bytes_per_line:.0f} "
              f"B/line, allows {last.allowed_trades_per_s:.1f} trades/s, peak "
              f"{max(q.host_trades_per_s for q in seen):.1f}; {waits[0]}")
    assert status["rejected_lines"] == 0 and status["spooled"] > 0
    assert worker.stop() == 0
