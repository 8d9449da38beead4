"""Handshakes the exchange refuses: 429 and 418 are waited out whole, 414 makes the URL shorter.

The simulator refuses exactly as Binance does (429 with Retry-After past the connection-attempt
budget, 418 to an IP that tries again before that Retry-After passed, 414 past the URL limit).
In each scenario the worker's own budget is looser than the exchange, so only its handling of
the refusal stands between it and a ban; every scenario ends with the ledger stored once.
"""
from __future__ import annotations

import time

import pytest
import websocket

from tests.support.capture import Capture, new_worker
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'


def start(tmp_path, exchange_sim, influx_front, influx_db, symbols_yaml: str, name: str,
          sim_args, **env: str) -> Capture:
    sim = exchange_sim(*sim_args, "--fault", PAUSED)
    proc = new_worker(tmp_path / name, name, symbols_yaml, sim, influx_front, influx_db,
                      WS_CONNECT_LIMIT="100/10", **env)
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    sim.fault("resume")
    return cap


def attempt(sim) -> int:
    """One handshake from the test itself (the same IP as the worker): its HTTP status."""
    try:
        websocket.create_connection(f"{sim.ws_url}/ws/btcusdt@trade", timeout=5).close()
        return 101
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code


def refusals(cap: Capture) -> dict:
    return cap.sim.stats()["refusals"]


@pytest.mark.slow
def test_a_429_is_waited_out_whole_so_the_ip_is_never_banned(tmp_path, exchange_sim,
                                                             influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                "btcusdt", ["--symbol", "BTCUSDT:rate=100", "--max-connect-attempts", "3",
                            "--connect-window", "8", "--ban-seconds", "60"])
    for _ in range(4):  # each close costs a reconnect: the 4th attempt in the window is refused
        time.sleep(1.5)
        cap.sim.fault("close", code=1001)
    wait_until(lambda: refusals(cap)["attempts_429"] >= 1, 20, what="a 429 from the exchange")
    wait_until(lambda: cap.worker.status().get("connected") is True, 30,
               what="the worker to connect after the Retry-After")
    cap.assert_exactly_once(["BTCUSDT"])
    cap.assert_values_exact("BTCUSDT")
    assert refusals(cap)["banned_418"] == 0, "the worker tried again before the Retry-After"
    assert "event=handshake_refused" in cap.worker.output()
    assert "status=429" in cap.worker.output()


@pytest.mark.slow
def test_a_ban_is_waited_out_whole_logged_once_with_its_end_and_shown_in_status(
        tmp_path, exchange_sim, influx_front, influx_db):
    cap = start(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                "btcusdt", ["--symbol", "BTCUSDT:rate=100", "--max-connect-attempts", "3",
                            "--connect-window", "10", "--ban-seconds", "12"])
    # A worker without a checkpoint starts at the first trade it sees: let it see some first.
    wait_until(lambda: bool(cap.stored_ids("BTCUSDT")), 15, what="the first trades stored")
    # Another program on the host spends the IP's budget and tries again at once: banned.
    statuses = [attempt(cap.sim) for _ in range(4)]
    assert statuses[-2:] == [429, 418], statuses
    banned_at = time.monotonic()
    cap.sim.fault("close", code=1001)  # the worker must reconnect into the ban
    wait_until(lambda: any(c.get("refused") for c in cap.worker.status().get("connections", [])),
               15, what="the ban in the worker's status file")
    wait_until(lambda: cap.worker.status().get("connected") is True, 60,
               what="the worker to connect once the ban is over")
    assert time.monotonic() - banned_at >= 11, "connected before the ban ended"
    cap.assert_exactly_once(["BTCUSDT"])
    cap.assert_values_exact("BTCUSDT")
    out = cap.worker.output()
    assert out.count("event=handshake_refused") == 1, "a ban is said once, not per retry"
    assert "banned by the exchange until 20" in out
    # One 418 for the test's own early retry, at most one for the worker's first reconnect:
    # the worker then waited the whole Retry-After.
    assert refusals(cap)["banned_418"] <= 2


@pytest.mark.slow
def test_a_url_the_exchange_finds_too_long_moves_streams_to_subscribe(
        tmp_path, exchange_sim, influx_front, influx_db):
    symbols = [f"Q{i:04d}USDT" for i in range(1, 31)]
    sim_args = [arg for s in symbols for arg in ("--symbol", f"{s}:rate=3")]
    cap = start(tmp_path, exchange_sim, influx_front, influx_db,
                f"groups:\n  tail: [{', '.join(symbols)}]\n", "tail",
                [*sim_args, "--max-url-length", "300"])
    time.sleep(15)
    cap.assert_exactly_once(symbols)
    assert refusals(cap)["url_too_long"] >= 1
    assert all(len(c["path"]) <= 300 for c in cap.sim.stats()["open"])
    assert "event=subscribed" in cap.worker.output()
