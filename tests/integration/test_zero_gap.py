"""Zero-gap capture through faults: each scenario ends with the stored ids equal to the ledger.

Timings are compressed (the 24 h cut becomes 6 s, the stall threshold a few seconds) so the
scenarios run in seconds; the mechanisms are the ones production uses.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Dict

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.procs import REPO_ROOT, wait_until
from tests.support.tradeids import wait_for_exact_ids

PAUSED = '{"action": "pause"}'
ONE = "symbols: [BTCUSDT]\n"


def start(tmp_path, exchange_sim, influx_front, influx_db, *sim_args: str, **env: str) -> Capture:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", *sim_args, "--fault", PAUSED)
    proc = new_worker(tmp_path / "btcusdt", "btcusdt", ONE, sim, influx_front, influx_db, **env)
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    sim.fault("resume")
    return cap


def rest_calls(cap: Capture, path: str) -> int:
    return sum(cap.sim.stats()["rest"].get(path, {}).values())


DROPS, DROP_EVERY_S = 15, 2.0  # each drop costs a reconnect (up to 1 s) and a backfill


@pytest.mark.slow
def test_connections_dropped_every_two_seconds_fifteen_times(tmp_path, exchange_sim,
                                                           influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    for i in range(DROPS):  # a close every 2 s, alternately clean and abrupt
        time.sleep(DROP_EVERY_S)
        cap.sim.fault("close", code=1000 + (i % 2), abrupt=(i % 3 == 2))
    cap.assert_exactly_once(["BTCUSDT"], timeout=60)
    wait_until(lambda: cap.worker.status()["reconnects"] >= 10, 30,
               what="the status file to count the reconnects")


def ledger_us(cap: Capture, symbol: str, first: int, last: int) -> Dict[int, int]:
    """Trade id -> the simulator's trade time in µs, for ids first..last."""
    out: Dict[int, int] = {}
    while first <= last:
        rows = cap.sim.trades(symbol, first, 10000, micro=True)
        if not rows:
            break
        out.update((r["t"], r["T"]) for r in rows if r["t"] <= last)
        first = rows[-1]["t"] + 1
    return out


def test_a_span_withheld_from_the_stream_is_backfilled(tmp_path, exchange_sim, influx_front,
                                                       influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    time.sleep(1)
    span = cap.sim.fault("withhold", symbol="BTCUSDT", count=1500)  # more than one REST page
    time.sleep(10)
    cap.assert_exactly_once(["BTCUSDT"])
    assert "event=backfilled" in cap.worker.output()
    # Live (stream) and backfilled (REST) trades alike store the exchange's µs as time_us.
    stored = {int(r["trade_id"]): r["time_us"] for r in cap.stored("BTCUSDT")}
    sent = ledger_us(cap, "BTCUSDT", min(stored), max(stored))
    withheld = set(range(span["from_id"], span["to_id"] + 1))
    for source, ids in (("REST", withheld), ("stream", set(stored) - withheld)):
        assert ids and all(stored[i] == sent[i] for i in ids), f"{source} time_us differs"
        assert sum(1 for i in ids if sent[i] % 1000) > len(ids) // 2, \
            f"the {source} trades had whole milliseconds: their µs went untested"


@pytest.mark.slow
def test_connection_age_capped_at_6_s_rotates_without_gap_or_rest_call(
        tmp_path, exchange_sim, influx_front, influx_db):
    # Binance cuts at 24 h, the worker rotates at 23 h; here 6 s and 3.5 s, so a rotation
    # every ~4 s: 30 s hold about seven of them.
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "--max-conn-age", "6",
                STREAM_MAX_AGE_S="3.5")
    time.sleep(30)
    cap.assert_exactly_once(["BTCUSDT"])
    assert cap.worker.output().count("event=rotate_done") >= 5
    assert rest_calls(cap, "/api/v3/historicalTrades") == 0, "rotation needed a backfill"


@pytest.mark.slow
def test_connection_age_cut_without_rotation_is_backfilled(tmp_path, exchange_sim,
                                                           influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "--max-conn-age", "5")
    time.sleep(16)
    cap.assert_exactly_once(["BTCUSDT"])


def test_server_shutdown_moves_to_a_new_connection_at_once(tmp_path, exchange_sim,
                                                           influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    time.sleep(2)
    cap.sim.fault("server_shutdown", close_after=3)
    time.sleep(6)
    cap.assert_exactly_once(["BTCUSDT"])
    out = cap.worker.output()
    assert "event=server_shutdown" in out and "event=rotate_done" in out
    assert rest_calls(cap, "/api/v3/historicalTrades") == 0


def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path, exchange_sim, influx_front,
                                                      influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    time.sleep(3)
    cap.worker.kill9()
    time.sleep(3)  # trades go on while the worker is dead
    cap.start_worker()
    time.sleep(3)
    cap.assert_exactly_once(["BTCUSDT"])
    assert "resume_from=BTCUSDT:" in cap.worker.output().split("event=starting")[-1]


@pytest.mark.slow
def test_influxdb_refusing_then_503_beyond_the_retry_budget_loses_nothing(
        tmp_path, exchange_sim, influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, WRITE_RETRY_BUDGET_S="3",
                WRITE_RETRY_MAX_DELAY_S="1")
    time.sleep(1)
    influx_front.fault("refuse", seconds=8)
    time.sleep(9)
    influx_front.fault("unavailable", seconds=8)
    time.sleep(9)
    cap.assert_exactly_once(["BTCUSDT"], timeout=60)
    wait_until(lambda: cap.worker.status()["replayed"] >= cap.worker.status()["spooled"] > 0, 30,
               what="the status file to count the spooled and replayed trades")
    assert cap.worker.status()["spool_backlog_bytes"] == 0


def test_rest_429_during_a_backfill_is_waited_out(tmp_path, exchange_sim, influx_front,
                                                  influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    time.sleep(1)
    cap.sim.fault("rest", status=429, count=3, retry_after=1, path="/api/v3/historicalTrades")
    cap.sim.fault("withhold", symbol="BTCUSDT", count=300)
    time.sleep(10)
    cap.assert_exactly_once(["BTCUSDT"])
    assert "status=429" in cap.worker.output()


@pytest.mark.slow
def test_a_silent_socket_is_caught_by_the_stall_watchdog(tmp_path, exchange_sim,
                                                         influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, STREAM_STALL_AFTER_S="3")
    time.sleep(2)
    cap.sim.fault("silence", seconds=12)  # pings go on: only the data stops
    time.sleep(14)
    cap.assert_exactly_once(["BTCUSDT"])
    assert "stalled: REST shows newer trades" in cap.worker.output()


@pytest.mark.slow
def test_a_dead_peer_without_pings_is_dropped_and_backfilled(tmp_path, exchange_sim,
                                                             influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "--ping-interval", "1",
                STREAM_DEAD_AFTER_S="4", STREAM_STALL_AFTER_S="600")
    time.sleep(2)
    cap.sim.fault("silence", seconds=10, pings=False)
    time.sleep(12)
    cap.assert_exactly_once(["BTCUSDT"])
    assert "dead peer" in cap.worker.output()


# A quiet pair, on a clock four times as fast as production's defaults (pings every 20 s, a
# stall probe after 60 s of no trade, dead after 70 s of no frame): pings every second, a probe
# after 3 s, dead after 6 s. Quiet for 36 s is twelve stall periods and 36 pings, as two minutes
# were with a probe after 10 s and pings every 5 s.
QUIET_S, QUIET_PING_S, QUIET_STALL_S, QUIET_DEAD_S = 36, 1, 3, 6


@pytest.mark.slow
def test_a_quiet_symbol_for_twelve_stall_periods_causes_no_reconnect_storm(
        tmp_path, exchange_sim, influx_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0", "--ping-interval", f"{QUIET_PING_S}")
    proc = new_worker(tmp_path / "q", "btcusdt", ONE, sim, influx_front, influx_db,
                      STREAM_STALL_AFTER_S=f"{QUIET_STALL_S}",
                      STREAM_DEAD_AFTER_S=f"{QUIET_DEAD_S}")
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    sim.fault("set_rate", symbol="BTCUSDT", rate=2)  # a first trade, so the probe has a base
    time.sleep(1.5)
    sim.fault("set_rate", symbol="BTCUSDT", rate=0)
    time.sleep(QUIET_S)
    sim.fault("set_rate", symbol="BTCUSDT", rate=5)  # trading resumes
    time.sleep(2)
    cap.assert_exactly_once(["BTCUSDT"])
    assert sim.stats()["accepted"] == 1, "the quiet pair reconnected"
    assert "event=disconnected" not in proc.output()
    probes = rest_calls(cap, "/api/v3/trades")
    assert probes >= QUIET_S // QUIET_STALL_S // 2, f"only {probes} stall probes: not quiet enough"


def test_gap_audit_finds_a_punched_hole_and_repair_fills_it(tmp_path, exchange_sim,
                                                            influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)
    time.sleep(4)
    expected = cap.assert_exactly_once(["BTCUSDT"])["BTCUSDT"]
    cap.worker.stop()
    rows = sorted(cap.stored("BTCUSDT"), key=lambda r: r["trade_id"])
    lo, hi = rows[100], rows[179]
    influx_db.query(f"DELETE FROM price_ticks WHERE symbol = 'BTCUSDT' AND "
                    f"time >= {lo['time']} AND time <= {hi['time']}")
    punched = {r["trade_id"] for r in rows} - set(cap.stored_ids("BTCUSDT"))
    assert punched and min(punched) == lo["trade_id"] and max(punched) == hi["trade_id"]

    def audit(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers.tools.audit", "BTCUSDT",
                               "--since", "1h", "--json", "--env-file", "/dev/null", *extra],
                              env=cap.worker.env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=60)

    found = audit()
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["missing"] == [[min(punched), max(punched)]]
    repaired = audit("--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repaired"] == len(punched)
    stored = cap.stored_ids("BTCUSDT")
    assert len(stored) == len(set(stored)) and set(stored) == expected
    cap.assert_values_exact("BTCUSDT")


def test_gap_audit_of_a_misspelt_or_uncaptured_symbol_or_with_a_wrong_token_is_no_pass(
        tmp_path, exchange_sim, influx_front, influx_db):
    """Issue 21.4: `gap-audit BTCUSTD --since 1h` printed `0 trades stored ... 0 missing`, exit
    0; 21.9: a refused token printed InfluxDB's raw b'...' body."""
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "--symbol", "ETHUSDT:rate=5")
    wait_until(lambda: len(cap.stored_ids("BTCUSDT")) > 10, 20, what="BTCUSDT trades stored")

    def audit(symbol: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers.tools.audit", symbol, "--since",
                               "1h", "--env-file", "/dev/null"], env={**cap.worker.env, **env},
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    misspelt = audit("BTCUSTD")
    assert misspelt.returncode == 2 and misspelt.stdout == ""
    assert misspelt.stderr == (f"gap-audit: BTCUSTD is unknown to the exchange (exchangeInfo at "
                               f"{cap.sim.rest_url}): fix the spelling; stored symbols: "
                               "BTCUSDT\n")
    uncaptured = audit("ETHUSDT")  # the exchange knows it; no worker captures it
    assert uncaptured.returncode == 1
    assert uncaptured.stderr.startswith("gap-audit: nothing stored for ETHUSDT between ")
    assert "is the symbol right? stored symbols: BTCUSDT; the exchange knows ETHUSDT" in \
        uncaptured.stderr
    refused = audit("BTCUSDT", INFLUXDB_TOKEN="wrong")
    assert refused.returncode == 2
    assert refused.stderr.startswith("gap-audit: InfluxDB refused the token for a read (401): "
                                     "check INFLUXDB_TOKEN in .env.local; it needs read access")
    assert len(refused.stderr.splitlines()) == 1  # the server's words, not its raw b'...' body
    assert refused.stderr.endswith("(/query answered 401: unauthorized access)\n")
    print(misspelt.stderr, uncaptured.stderr, refused.stderr, sep="")


def test_a_gap_over_the_backfill_cap_gives_up_the_oldest_ids_and_names_them(
        tmp_path, exchange_sim, influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, BACKFILL_MAX_TRADES="100")
    time.sleep(1)
    withheld = cap.sim.fault("withhold", symbol="BTCUSDT", count=300)
    time.sleep(6)
    cap.sim.fault("pause")
    lo, hi = withheld["from_id"], withheld["to_id"]
    given_up = set(range(lo, hi - 100 + 1))  # the newest 100 of the gap are fetched
    expected = cap.sim.ledger_ids("BTCUSDT") - given_up
    wait_for_exact_ids(expected, lambda: cap.stored_ids("BTCUSDT"), 30)
    assert f"event=gap_given_up first_id={lo} last_id={hi - 100}" in cap.worker.output()
    time.sleep(5.5)
    assert cap.worker.status()["given_up"] == len(given_up)


def test_trades_lost_at_a_disconnect_of_a_pair_that_then_goes_quiet_are_backfilled_at_once(
        tmp_path, exchange_sim, influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db)  # stall check stays at 60 s
    time.sleep(2)
    cap.sim.fault("withhold", symbol="BTCUSDT", count=20)  # the last trades before the cut
    time.sleep(0.5)
    cap.sim.fault("pause")
    cap.sim.fault("abort")
    cap.assert_exactly_once(["BTCUSDT"], timeout=15)  # long before the 60 s stall check
