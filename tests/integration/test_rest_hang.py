"""REST never blocks the connection: with the exchange's REST API hanging
for 50 s while the stream connection drops twice, a quiet-ish pair's worker is connected and
streaming again within seconds of each drop, and once REST answers every trade is stored once.

Why this fails on the old design, where the keeper thread ran the REST probes itself: the pair
goes quiet for longer than STREAM_STALL_AFTER_S (5 s) before each drop, so the keeper asks REST
for the latest trade id. That request hangs: the REST client waits its 10 s read timeout, then
retries with backoff (up to 8 attempts), so the call only returns when the hang ends, some 40 s
later. A keeper inside that call does not tick: it neither notices that its connection ended nor
opens a new one, so the worker stays disconnected until REST answers, far beyond the 10 s this
test allows (measured at over 30 s). With the probes on the prober thread
(workers/capture/prober.py) only the probe waits; the keeper reconnects within about a second.
"""
from __future__ import annotations

import time
from typing import Tuple

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
ONE = "symbols: [BTCUSDT]\n"
HANG_S = 50.0
STALL_AFTER_S = 5.0
BACK_WITHIN_S = 10.0  # generous: the keeper's first reconnect comes after about 1 s
WITHHELD = 5  # trades lost at each drop, for the backfill once REST answers


def drop_and_wait_for_reconnect(cap: Capture, abrupt: bool) -> Tuple[float, float]:
    """Drop the stream connection; wait until the simulator accepted a new one and the worker's
    status file (rewritten every second) says connected. Returns both delays in seconds."""
    accepted = cap.sim.stats()["accepted"]
    dropped_wall, dropped = time.time(), time.monotonic()
    assert cap.sim.fault("close", code=1001, abrupt=abrupt)["connections"] == 1
    wait_until(lambda: cap.sim.stats()["accepted"] > accepted, BACK_WITHIN_S,
               what=f"a new stream connection within {BACK_WITHIN_S:.0f}s of the drop, REST "
                    f"hanging\n{cap.worker.output()[-3000:]}")
    accepted_after = time.monotonic() - dropped
    wait_until(lambda: cap.worker.status().get("updated", 0) > dropped_wall
               and cap.worker.status().get("connected") is True,
               BACK_WITHIN_S - accepted_after + 6.0, interval=0.2,
               what=f"the status file to say connected after the drop\n"
                    f"{cap.worker.output()[-3000:]}")
    return accepted_after, time.monotonic() - dropped


def resume_and_wait_for_streaming(cap: Capture) -> float:
    """Trading resumes, its first WITHHELD trades lost "at the drop" (a gap that only REST can
    fill, and REST hangs); the trades after them reach InfluxDB live all the same. Returns how
    long after the resume the first live trade was stored."""
    withheld = cap.sim.fault("withhold", symbol="BTCUSDT", count=WITHHELD)
    first_live = withheld["to_id"] + 1
    resumed = time.monotonic()
    cap.sim.fault("resume")
    wait_until(lambda: max(cap.stored_ids("BTCUSDT"), default=0) >= first_live, BACK_WITHIN_S,
               interval=0.2, what=f"trade {first_live} (after the drop) stored live\n"
                                  f"{cap.worker.output()[-3000:]}")
    return time.monotonic() - resumed


@pytest.mark.slow
def test_rest_hanging_50s_while_connections_drop_never_delays_a_reconnect(
        tmp_path, exchange_sim, influx_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=10", "--fault", PAUSED)
    worker = new_worker(tmp_path / "btcusdt", "btcusdt", ONE, sim, influx_front, influx_db,
                        STREAM_STALL_AFTER_S=f"{STALL_AFTER_S:.0f}")
    cap = Capture(sim, influx_db, influx_front, worker).start_worker()
    sim.fault("resume")
    time.sleep(3)  # trades stored, a checkpoint to resume from
    wait_until(lambda: bool(cap.stored_ids("BTCUSDT")), 10, what="the first trades stored")

    # Every REST path the worker uses (trades, historicalTrades, exchangeInfo) hangs for 50 s.
    sim.fault("rest_hang", seconds=HANG_S)
    hang_ends = time.monotonic() + HANG_S
    observed = []
    for drop, abrupt in ((1, False), (2, True)):
        # Quiet for longer than the stall threshold: a stall probe is asked for and hangs
        # (the first time it really goes out; the second time the first one is still hanging).
        sim.fault("pause")
        time.sleep(STALL_AFTER_S + 1.5)
        wait_until(lambda: sim.stats()["rest_hung"].get("/api/v3/trades", 0) >= 1, 5,
                   what="a stall probe held by the hanging REST")
        accepted_after, connected_after = drop_and_wait_for_reconnect(cap, abrupt)
        streaming_after = resume_and_wait_for_streaming(cap)
        observed.append(f"drop {drop} ({'abort' if abrupt else 'close 1001'}): new connection "
                        f"after {accepted_after:.1f}s, status connected after "
                        f"{connected_after:.1f}s, live trades stored {streaming_after:.1f}s "
                        f"after trading resumed")
        time.sleep(2)  # trades on the new connection
    assert time.monotonic() < hang_ends - 5, "the drops must happen while REST still hangs"
    wait_until(lambda: sim.stats()["rest_hung"].get("/api/v3/historicalTrades", 0) >= 1, 5,
               what="the backfill of a drop's gap held by the hanging REST")
    print("\n".join(observed))  # shown with -rP or -s

    # REST answers again: the drops' gaps are backfilled and every trade is there, once.
    time.sleep(max(0.0, hang_ends - time.monotonic()))
    answered = time.monotonic()
    cap.assert_exactly_once(["BTCUSDT"], timeout=60)
    cap.assert_values_exact("BTCUSDT")
    print(f"every trade stored {time.monotonic() - answered:.1f}s after REST answered again")
    out = worker.output()
    assert out.count("event=backfilled") >= 1, out[-3000:]
    assert worker.proc is not None and worker.proc.alive(), "the worker died"
    assert "event=thread_crashed" not in out
