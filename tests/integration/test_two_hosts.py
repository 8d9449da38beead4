"""Two hosts capturing the same pair into one InfluxDB: redundancy without a coordinator.

Each host is its own project home (its own data/ and run/, CAPTURE_HOST a or b), both against
one simulator and one InfluxDB. Host a is frozen while b captures, b is killed and comes back,
then both stop, host a loses its data/ (a lost disk, or a new host) and only a starts again: it
resumes from the highest id stored in InfluxDB and backfills. Every trade of the ledger ends up
stored exactly once with its exact strings, and each host's health points carry its own tag.
"""
from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
ONE = "symbols: [BTCUSDT]\n"


def wait_connected(worker, timeout: float = 30) -> None:
    try:
        wait_until(lambda: worker.status().get("connected") is True and
                   worker.status().get("pid") == worker.proc.pid, timeout, interval=0.2,
                   what=f"{worker.home.name} connected")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{worker.output()[-3000:]}") from None


@pytest.mark.slow
def test_a_frozen_host_a_killed_host_and_a_lost_disk_lose_nothing(tmp_path, exchange_sim,
                                                                   influx_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=100", "--fault", PAUSED)
    a, b = (new_worker(tmp_path / f"host-{h}", "btcusdt", ONE, sim, influx_front, influx_db,
                       CAPTURE_HOST=h) for h in ("a", "b"))
    for host in (a, b):
        host.start()
    for host in (a, b):
        wait_connected(host)
    sim.fault("resume")
    time.sleep(3)

    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)  # host a frozen: b captures alone
    time.sleep(15)
    a.proc.send_signal(signal.SIGCONT)
    time.sleep(3)

    b.kill9()  # host b dies and comes back: a captures meanwhile
    time.sleep(5)
    b.start()
    wait_connected(b)
    time.sleep(3)

    assert a.stop() == 0 and b.stop() == 0  # both down while trading goes on
    time.sleep(5)
    shutil.rmtree(a.data_dir)  # host a's disk is lost: no checkpoint at all
    a.start()
    wait_connected(a)
    time.sleep(5)

    Capture(sim, influx_db, influx_front, a).assert_exactly_once(["BTCUSDT"], timeout=60)
    assert "event=resumed_from_db" in a.output(), a.output()[-3000:]
    hosts = {row["value"] for row in
             influx_db.query('SHOW TAG VALUES FROM streamer_health WITH KEY = "host"')}
    assert hosts == {"a", "b"}, hosts
