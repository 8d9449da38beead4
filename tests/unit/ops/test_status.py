"""scripts/status: health rules, the table, the JSON and the exit codes."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from workers.health import as_status, read_status
from workers.ops import status as st
from workers.ops.status import assess, collect, table
from workers.ops.supervisor_rpc import unreachable
from workers.settings import WriteLimit

NOW = 1_700_000_000.0


def info(name: str = "btcusdt", state: str = "RUNNING", pid: int = 42,
         up_s: float = 300.0, **extra: Any) -> Dict[str, Any]:
    return {"name": name, "group": name, "statename": state, "pid": pid,
            "start": NOW - up_s, "stop": 0, "now": NOW, "exitstatus": 0, "spawnerr": "",
            "description": f"pid {pid}", "stdout_logfile": "", **extra}


def status(pid: int = 42, age_s: float = 2.0, **extra: Any) -> Dict[str, Any]:
    data = {"worker": "btcusdt", "symbols": ["BTCUSDT"], "pid": pid, "started": NOW - 300,
            "updated": NOW - age_s, "trades_per_s": 12.5, "lag_p50_ms": 40.0,
            "lag_p99_ms": 180.0, "spool_backlog_bytes": 0,
            "last_trade_ms": {"BTCUSDT": int((NOW - 1.5) * 1000)}, "received": 100,
            "written": 100, "invalid": {}, "reconnects": 1, "gaps": 2, "backfilled": 30,
            "given_up": 0, "last_error": "", "connected": True, "checkpoint": {"BTCUSDT": 9}}
    data.update(extra)
    return data


def test_a_running_worker_with_a_fresh_status_is_healthy() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), status(), NOW)
    assert row.healthy and row.problems == []
    assert row.last_trade_age_s == pytest.approx(1.5, abs=0.01)
    assert (row.trades_per_s, row.lag_p99_ms, row.gaps, row.backfilled) == (12.5, 180.0, 2, 30)
    assert row.uptime_s == 300


@pytest.mark.parametrize("state", ["FATAL", "BACKOFF", "STOPPED", "EXITED", "STOPPING"])
def test_not_running_is_unhealthy(state: str) -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(state=state, pid=0), status(), NOW)
    assert not row.healthy and row.problems[0].startswith(state)


def test_a_worker_stopped_by_hand_says_how_to_start_it() -> None:
    row = assess("solusdt", ["SOLUSDT"], info("solusdt", "STOPPED", pid=0), status(), NOW)
    assert "; scripts/supervisorctl start solusdt starts it again" in row.problems[0]
    crashed = assess("solusdt", ["SOLUSDT"], info("solusdt", "FATAL", pid=0), status(), NOW)
    assert "supervisorctl start" not in crashed.problems[0]  # its cause is what to read


def test_starting_is_healthy() -> None:
    assert assess("btcusdt", ["BTCUSDT"], info(state="STARTING", up_s=1), None, NOW).healthy


def test_unknown_to_supervisord_is_unhealthy() -> None:
    row = assess("solusdt", ["SOLUSDT"], None, None, NOW)
    assert not row.healthy and "not loaded in supervisord" in row.problems[0]


@pytest.mark.parametrize("stat,why", [
    (status(age_s=45), "status file written 45 s ago"),
    (status(pid=41), "by another process"),
    (None, "no status file"),
])
def test_a_stale_status_file_means_hung(stat: Optional[Dict[str, Any]], why: str) -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), stat, NOW)
    assert not row.healthy and why in row.problems[0]


def test_a_young_worker_gets_a_grace_period_for_its_first_status() -> None:
    assert assess("btcusdt", ["BTCUSDT"], info(up_s=10), None, NOW).healthy


def test_a_quiet_pair_without_trades_for_an_hour_is_healthy() -> None:
    quiet = status(last_trade_ms={"QUIETUSDT": int((NOW - 3600) * 1000)}, trades_per_s=0.0)
    row = assess("quiet", ["QUIETUSDT"], info(), quiet, NOW)
    assert row.healthy and row.last_trade_age_s == pytest.approx(3600, abs=1)


def test_disconnected_without_trades_is_unhealthy() -> None:
    down = status(connected=False, last_trade_ms={"BTCUSDT": int((NOW - 120) * 1000)})
    row = assess("btcusdt", ["BTCUSDT"], info(), down, NOW)
    assert not row.healthy and "disconnected" in row.problems[0]
    # A reconnect caught in the act, with trades a moment ago, is not a problem.
    assert assess("btcusdt", ["BTCUSDT"], info(), status(connected=False), NOW).healthy


def test_a_spool_backlog_is_unhealthy() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), status(spool_backlog_bytes=4096), NOW)
    assert not row.healthy and "4096 bytes wait in the spool" in row.problems[0]


def test_given_up_ids_are_a_warning_only() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), status(given_up=7), NOW)
    assert row.healthy and "7 trade ids given up" in row.warnings[0]


def test_rejected_lines_are_a_warning_naming_the_file() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(),
                 status(rejected_lines=12, rejected_trades=9), NOW)
    assert row.healthy and row.problems == []
    assert "InfluxDB refused 12 lines (9 trades)" in row.warnings[0]
    assert "data/btcusdt/rejected.lp" in row.warnings[0] and "lines_rejected" in row.warnings[0]
    assert (row.rejected_lines, row.rejected_trades) == (12, 9)


def test_no_rejected_lines_no_warning() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), status(rejected_lines=0, rejected_trades=0), NOW)
    assert row.warnings == []


@pytest.mark.parametrize("extra, shown", [
    ({"rejected_lines": 12, "rejected_trades": 9}, "9+3"),
    ({"rejected_lines": 5, "rejected_trades": 5}, "5"),
    ({"rejected_lines": 0, "rejected_trades": 0}, "0"),
    ({"rejected_lines": 4}, "4"),  # a worker from before rejected_trades
    ({}, "-"),
])
def test_the_table_has_a_rejected_column(extra: Dict[str, Any], shown: str) -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(), status(**extra), NOW)
    text = table({"workers": [asdict(row)], "supervisord": "running", "problems": [],
                  "healthy": True, "reconciler": "RUNNING"})
    header, line = text.splitlines()[:2]
    at = header.index("REJECTED")
    assert line[at:].split()[0] == shown


class FakeRpc:
    def __init__(self, infos: List[Dict[str, Any]], logs: Optional[Dict[str, str]] = None,
                 supervisord_log: str = ""):
        self.infos = infos
        self.logs = logs or {}
        self.supervisord_log = supervisord_log

    @property
    def supervisor(self) -> "FakeRpc":
        return self

    def getAllProcessInfo(self) -> List[Dict[str, Any]]:
        return self.infos

    def tailProcessStdoutLog(self, name: str, offset: int, length: int) -> list:
        return [self.logs.get(name, ""), 0, False]

    def readLog(self, offset: int, length: int) -> str:
        return self.supervisord_log[offset:] if offset < 0 else self.supervisord_log


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "symbols.yaml").write_text(
        "symbols: [BTCUSDT]\ngroups:\n  alts: [SOLUSDT, XRPUSDT, DOGEUSDT]\n")
    (tmp_path / "run" / "status").mkdir(parents=True)
    (tmp_path / "run" / "status" / "btcusdt.json").write_text(json.dumps(status()))
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    return tmp_path


def test_collect_joins_supervisord_and_status_files(root: Path) -> None:
    rpc = FakeRpc([info(), info("alts", "FATAL", pid=0), info("reconciler", pid=7)],
                  {"alts": "w event=config_error error=DOGEUSDT unknown to the exchange\n"})
    report = collect(root, rpc, now=lambda: NOW)
    rows = {r["worker"]: r for r in report["workers"]}
    assert list(rows) == ["btcusdt", "alts"]  # the reconciler is not a worker row
    assert rows["btcusdt"]["healthy"] and not rows["alts"]["healthy"]
    assert rows["alts"]["last_error"] == "DOGEUSDT unknown to the exchange"
    assert report["reconciler"] == "RUNNING" and report["healthy"] is False
    text = table(report)
    assert text.splitlines()[0].split()[:3] == ["WORKER", "HEALTH", "STATE"]
    assert "SOLUSDT,+2" in text and "2/30" in text and "40/180" in text
    assert text.endswith("UNHEALTHY")


def test_a_stopped_reconciler_is_a_problem(root: Path) -> None:
    rpc = FakeRpc([info(), info("alts"), info("reconciler", "FATAL", pid=0)])
    report = collect(root, rpc, now=lambda: NOW)
    assert not report["healthy"] and "reconciler is FATAL" in report["problems"][0]


def test_exit_codes(root: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture) -> None:
    (root / "run" / "status" / "alts.json").write_text(json.dumps(status(pid=43)))
    healthy = FakeRpc([info(), info("alts", pid=43), info("reconciler", pid=7)])
    monkeypatch.setattr(st, "collect", lambda: collect(root, healthy, now=lambda: NOW))
    assert st.main([]) == 0
    assert capsys.readouterr().out.rstrip().endswith("healthy")
    assert st.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["healthy"] is True

    sick = FakeRpc([info(), info("alts", "BACKOFF", pid=0), info("reconciler", pid=7)])
    monkeypatch.setattr(st, "collect", lambda: collect(root, sick, now=lambda: NOW))
    assert st.main([]) == 1


def test_no_supervisord_is_a_runtime_failure_exit_3(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Exit 3 (EXIT_RUNTIME), not 2 as before the one table: 2 is a configuration error."""
    monkeypatch.setattr(st, "collect", lambda: collect(root, now=lambda: NOW))
    assert st.main([]) == 3
    out = capsys.readouterr().out
    assert "supervisord: not running: no socket at " in out and "run/supervisor.sock" in out
    assert "start it with scripts/run" in out and "Error" not in out


@pytest.mark.parametrize("exc, said", [
    (FileNotFoundError(2, "No such file or directory"),
     "not running: no socket at /srv/t/run/supervisor.sock; start it with scripts/run"),
    (ConnectionRefusedError(111, "Connection refused"),
     "not running: nothing answers at /srv/t/run/supervisor.sock (a stopped supervisord's "
     "socket); start it with scripts/run"),
    (PermissionError(13, "Permission denied"),
     "not reachable: no permission to open /srv/t/run/supervisor.sock; run this as the user "
     "who started supervisord"),
    (TimeoutError("timed out"), "not reachable at unix:///srv/t/run/supervisor.sock: "
                                "TimeoutError: timed out"),
])
def test_no_supervisord_is_said_with_what_to_do(exc: BaseException, said: str) -> None:
    assert unreachable("unix:///srv/t/run/supervisor.sock", exc).startswith(said)


def test_a_broken_symbols_file_is_a_problem_but_rows_come_from_the_include(
        root: Path) -> None:
    (root / "run" / "workers.conf").write_text("[program:btcusdt]\n"
                                               'environment=WORKER_SYMBOLS="BTCUSDT"\n')
    (root / "config" / "symbols.yaml").write_text("symbols: [BTCUSDT\n")
    report = collect(root, FakeRpc([info(), info("reconciler", pid=7)]), now=lambda: NOW)
    assert [w["worker"] for w in report["workers"]] == ["btcusdt"]
    assert report["workers"][0]["healthy"] and not report["healthy"]
    assert "symbols.yaml:2: not valid YAML" in report["problems"][0]


def test_a_connection_waiting_for_the_host_budget_is_shown_as_a_warning() -> None:
    conns = [{"conn": "s1", "streams": 1000, "connected": False, "subscribed": 0,
              "waiting_budget_s": 42.3, "refused": None}]
    row = assess("alts", ["SOLUSDT"], info(), status(connections=conns), NOW)
    assert row.healthy
    assert "connection s1 (1000 streams) waits for the host's connection budget" in \
        row.warnings[0] and "about 42 s" in row.warnings[0]


def test_a_refused_handshake_shows_its_cause_and_end() -> None:
    detail = ("handshake refused: HTTP 418: this IP is banned by the exchange until "
              "2026-11-30T05:00:00Z (418, Retry-After 120s): every worker of the host waits")
    conns = [{"conn": "s1", "streams": 1, "connected": False, "subscribed": 0,
              "waiting_budget_s": 0.0, "refused": {"status": 418, "until": NOW + 120,
                                                   "detail": detail}}]
    row = assess("btcusdt", ["BTCUSDT"], info(), status(connections=conns), NOW)
    assert row.warnings == [f"connection s1 (1 streams): {detail}"]


def test_a_connection_that_is_down_says_why_in_last_error() -> None:
    conns = [{"conn": "s1", "streams": 1, "connected": False, "subscribed": 0,
              "waiting_budget_s": 0.0, "refused": None,
              "last_end": "2026-11-30T04:12:03Z connect failed: WebSocketAddressException: "
                          "[Errno -2] Name or service not known"}]
    row = assess("btcusdt", ["BTCUSDT"], info(),
                 status(connected=False, connections=conns, last_error="older"), NOW)
    assert row.last_error == ("connect failed: WebSocketAddressException: [Errno -2] Name or "
                              "service not known")


# -- issue 14: what a newcomer needs from scripts/status ---------------------------------

@pytest.mark.parametrize("state", ["STOPPED", "FATAL", "EXITED"])
def test_a_stopped_worker_shows_no_live_figures(state: str) -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(state=state, pid=0), status(), NOW)
    assert (row.trades_per_s, row.lag_p50_ms, row.lag_p99_ms, row.last_trade_age_s,
            row.connected) == (None, None, None, None, None)
    assert (row.gaps, row.backfilled) == (2, 30)  # counters of what happened stay
    text = table({"workers": [asdict(row)], "supervisord": "running", "problems": [],
                  "healthy": False, "reconciler": "RUNNING"})
    header, line = text.splitlines()[:2]
    for column in ("LAST TRADE", "TRADES/S", "LAG p50/p99 ms"):
        assert line[header.index(column):].split()[0] in ("-", "-/-"), (column, line)


def test_lag_is_a_dash_when_nothing_was_stored_recently() -> None:
    """Issue 21.8: the worker writes null lags once nothing was stored in its last 10 s."""
    row = assess("btcusdt", ["BTCUSDT"], info(), status(lag_p50_ms=None, lag_p99_ms=None), NOW)
    text = table({"workers": [asdict(row)], "supervisord": "running", "problems": [],
                  "healthy": True, "reconciler": "RUNNING"})
    header, line = text.splitlines()[:2]
    assert line[header.index("LAG p50/p99 ms"):].split()[0] == "-"


def test_a_new_process_before_its_first_write_shows_no_old_figures() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(pid=43, up_s=2), status(pid=42), NOW)
    assert row.healthy and row.trades_per_s is None and row.last_trade_age_s is None


@pytest.mark.parametrize("inf,stat", [
    (info(state="FATAL", pid=0), status()),
    (info(), status(age_s=45)),
    (info(), None),
    (info(), status(spool_backlog_bytes=10)),
    (info(), status(connected=False, last_trade_ms={"BTCUSDT": int((NOW - 120) * 1000)})),
    (info(), status(connected=False, last_trade_ms={}, connections=[
        {"conn": "s1", "streams": 1, "connected": False, "connected_once": False,
         "last_end": "2026-11-30T04:12:03Z connect failed: Name or service not known"}])),
])
def test_every_problem_line_names_the_log_file(inf: Dict[str, Any],
                                               stat: Optional[Dict[str, Any]]) -> None:
    row = assess("btcusdt", ["BTCUSDT"], inf, stat, NOW)
    assert row.problems and all(p.endswith("log: logs/btcusdt.log)") for p in row.problems), \
        row.problems


def test_the_log_file_comes_from_supervisord(root: Path) -> None:
    rpc = FakeRpc([info(stdout_logfile=str(root / "logs" / "btcusdt.log")),
                   info("alts", "FATAL", pid=0, stdout_logfile="/var/log/tc/alts.log"),
                   info("reconciler", pid=7)])
    rows = {r["worker"]: r for r in collect(root, rpc, now=lambda: NOW)["workers"]}
    assert rows["btcusdt"]["log"] == "logs/btcusdt.log"
    assert rows["alts"]["problems"][0] == "FATAL: pid 0 (log: /var/log/tc/alts.log)"


def never_connected(why: str = "2026-11-30T04:12:03Z connect failed: "
                               "WebSocketAddressException: [Errno -2] Name or service not known"
                    ) -> Dict[str, Any]:
    conns = [{"conn": "s1", "streams": 1, "connected": False, "connected_once": False,
              "subscribed": 0, "waiting_budget_s": 0.0, "refused": None, "last_end": why}]
    return status(connected=False, connections=conns, last_trade_ms={}, trades_per_s=0.0)


def test_a_worker_that_never_connected_is_a_warning_at_once_with_the_cause() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(up_s=4), never_connected(), NOW)
    assert row.healthy  # not yet a problem: the same 60 s as a disconnect
    assert len(row.warnings) == 1
    assert "has not connected to the exchange since the worker started (4 s ago)" in \
        row.warnings[0] and "Name or service not known" in row.warnings[0]
    assert row.warnings[0].endswith("(log: logs/btcusdt.log)")
    assert "Name or service not known" in row.last_error
    # Its first attempt still under way: said so, no cause yet.
    row = assess("btcusdt", ["BTCUSDT"], info(up_s=1), never_connected(why=""), NOW)
    assert "its first attempt is under way" in row.warnings[0]


def test_a_worker_that_never_connected_in_60_s_is_unhealthy() -> None:
    row = assess("btcusdt", ["BTCUSDT"], info(up_s=75), never_connected(), NOW)
    assert not row.healthy and row.warnings == []
    assert row.problems[0].startswith("has not connected to the exchange once in 75 s: "
                                      "2026-11-30T04:12:03Z connect failed")
    assert row.problems[0].endswith("(it keeps retrying; log: logs/btcusdt.log)")


def test_a_worker_that_connected_once_is_no_such_warning() -> None:
    conns = [{"conn": "s1", "streams": 1, "connected": False, "connected_once": True,
              "last_end": "2026-11-30T04:12:03Z closed"}]
    row = assess("btcusdt", ["BTCUSDT"], info(up_s=10), status(connected=False,
                                                               connections=conns), NOW)
    assert row.healthy and row.warnings == []


def test_last_trade_is_its_age_at_the_last_write_of_a_fresh_status_file() -> None:
    # 200 trades/s: the newest trade was 0.02 s old when the file was written 0.9 s ago.
    busy = status(age_s=0.9, last_trade_age_s=0.02,
                  last_trade_ms={"BTCUSDT": int((NOW - 0.92) * 1000)})
    row = assess("btcusdt", ["BTCUSDT"], info(), busy, NOW)
    assert row.last_trade_age_s == pytest.approx(0.02)
    # An older file cannot vouch for now: the age is counted from now.
    old = status(age_s=10, last_trade_age_s=0.02,
                 last_trade_ms={"BTCUSDT": int((NOW - 10.02) * 1000)})
    assert assess("btcusdt", ["BTCUSDT"], info(), old, NOW).last_trade_age_s == \
        pytest.approx(10.02, abs=0.01)
    # A worker from before last_trade_age_s: from now, as before.
    assert assess("btcusdt", ["BTCUSDT"], info(), status(age_s=0.5), NOW).last_trade_age_s == \
        pytest.approx(1.5, abs=0.01)


def test_an_unknown_symbol_is_shown_as_the_config_error_not_as_a_phantom_worker(
        root: Path) -> None:
    from workers.ops.reconcile import Reconciler
    from workers.ops.supervisor_render import RenderSettings, render
    from workers.symbols import parse_symbols

    settings = RenderSettings.for_root(root)
    applied = "symbols: [BTCUSDT]\ngroups:\n  alts: [SOLUSDT, XRPUSDT, DOGEUSDT]\n"
    settings.include_path.write_text(render(parse_symbols(applied, settings.symbols_file),
                                            settings))
    settings.symbols_file.write_text(applied.replace("[BTCUSDT]", "[BTCUSDT, NOPEUSDT]"))
    known = {"BTCUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"}
    def no_supervisord() -> Any:
        raise ConnectionRefusedError("not needed here")
    rec = Reconciler(settings, no_supervisord, check=lambda symbols: known & set(symbols))
    assert rec.pass_once() is False  # refused: nothing applied

    rpc = FakeRpc([info(), info("alts"), info("reconciler", pid=7)])
    report = collect(root, rpc, now=lambda: NOW)
    assert [w["worker"] for w in report["workers"]] == ["btcusdt", "alts"]  # no nopeusdt
    assert report["problems"] == [
        f"symbols file: {settings.symbols_file}:1: NOPEUSDT: unknown to the exchange: fix the "
        "spelling or remove it (nothing changed: the running workers go on)"]
    assert not report["healthy"]
    assert "nopeusdt" not in table(report)

    # Fixed (the file changes): the reconciler's old finding no longer applies.
    settings.symbols_file.write_text(applied + "# fixed\n")
    report = collect(root, rpc, now=lambda: NOW)
    assert report["problems"] == []
    # ... and its next pass clears it.
    assert rec.pass_once() is True  # to be retried: no supervisord here, but the file is good
    assert not (settings.run_dir / "symbols-error.json").exists()


# -- shards: this host's share only; the others' workers named, not missing (issue 12.3) -----

SHARDED = ("symbols: [BTCUSDT, ETHUSDT]\ngroups:\n  alts: [SOLUSDT, XRPUSDT, DOGEUSDT]\n"
           "hosts:\n  a: [btcusdt]\n  b: [alts, btcusdt]\n")


def test_a_sharded_file_shows_this_hosts_share_and_names_the_rest(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_HOST", "a")
    (root / "config" / "symbols.yaml").write_text(SHARDED)
    (root / "run" / "status" / "ethusdt.json").write_text(json.dumps(status(pid=43)))
    rpc = FakeRpc([info(), info("ethusdt", pid=43), info("reconciler", pid=7)])
    report = collect(root, rpc, now=lambda: NOW)
    assert [w["worker"] for w in report["workers"]] == ["btcusdt", "ethusdt"]
    assert report["healthy"] and report["problems"] == []  # alts is not missing here
    assert report["host"] == "a"
    assert report["elsewhere"] == [{"worker": "alts", "hosts": ["b"],
                                    "symbols": ["SOLUSDT", "XRPUSDT", "DOGEUSDT"]}]
    text = table(report)
    assert "on other hosts only (not this host's share, a): alts (b)" in text
    assert text.endswith("\nhealthy")


def test_a_worker_leaving_this_hosts_share_is_shown_as_being_stopped(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_HOST", "a")
    (root / "config" / "symbols.yaml").write_text(SHARDED)
    rpc = FakeRpc([info(), info("alts", pid=44), info("reconciler", pid=7)])
    rows = {r["worker"]: r for r in collect(root, rpc, now=lambda: NOW)["workers"]}
    assert "alts" in rows
    assert "not this host's share any more (it runs on b): being stopped here" in \
        rows["alts"]["warnings"]


def test_a_plain_file_has_no_other_hosts_line(root: Path) -> None:
    report = collect(root, FakeRpc([info(), info("alts", pid=44), info("reconciler", pid=7)]),
                     now=lambda: NOW)
    assert report["elsewhere"] == []
    assert "other hosts" not in table(report)


def test_a_host_the_sharded_file_does_not_name_is_a_problem_with_the_fix(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_HOST", "c")
    (root / "config" / "symbols.yaml").write_text(SHARDED)
    (root / "run" / "workers.conf").write_text("[program:btcusdt]\n"
                                               'environment=WORKER_SYMBOLS="BTCUSDT"\n')
    report = collect(root, FakeRpc([info(), info("reconciler", pid=7)]), now=lambda: NOW)
    assert [w["worker"] for w in report["workers"]] == ["btcusdt"]  # what runs
    assert not report["healthy"]
    assert "symbols.yaml:4: this host (CAPTURE_HOST=c) is not under 'hosts:'" in \
        report["problems"][0]


# -- one rule at a time (issue 18: one small predicate per health rule) ----------------------

def facts(inf: Optional[Dict[str, Any]] = None,
          stat: Optional[Dict[str, Any]] = None) -> st.Facts:
    return st.gather("btcusdt", ["BTCUSDT"], inf, as_status(stat), NOW, log="logs/b.log")


def test_every_rule_is_applied_once():
    rules = list(st.PROBLEMS) + list(st.WARNINGS) + list(st.QUOTA_WARNINGS)
    # crash_loop and restarted (a crash loop seen), write_quota_wait (a 429 waited out),
    # quota_near and quota_too_small (the host's share of INFLUXDB_WRITE_LIMIT)
    assert len(set(rules)) == len(rules) == 14


def test_rule_not_loaded():
    assert st.not_loaded(facts(None)) == [
        "not loaded in supervisord (the reconciler has not applied it: see logs/reconciler.log)"]
    assert st.not_loaded(facts(info(state="FATAL", pid=0))) == []


def test_rule_not_running():
    assert st.not_running(facts(info(state="FATAL", pid=0, description="Exited too quickly"))) \
        == ["FATAL: Exited too quickly"]
    assert st.not_running(facts(info(state="STARTING", up_s=1))) == []
    assert st.not_running(facts(info())) == []
    assert st.not_running(facts(None)) == []  # not_loaded's case


def test_rule_hung():
    assert st.hung(facts(info(), status(age_s=45))) == [
        "hung? status file written 45 s ago (it is rewritten every second)"]
    assert st.hung(facts(info(), status(pid=41))) == [
        "hung? status file written 2 s ago by another process (it is rewritten every second)"]
    assert st.hung(facts(info(), None)) == [
        "hung? no status file (it is rewritten every second)"]
    assert st.hung(facts(info(), status())) == []
    assert st.hung(facts(info(up_s=10), None)) == []  # within GRACE_S
    assert st.hung(facts(info(state="STARTING"), None)) == []  # only RUNNING can hang


def test_rule_disconnected():
    old_trade = {"BTCUSDT": int((NOW - 120) * 1000)}
    assert st.disconnected(facts(info(), status(connected=False, last_trade_ms=old_trade))) \
        == ["disconnected from the exchange, no trade for over 60 s (it keeps retrying)"]
    assert st.disconnected(facts(info(), status(connected=False))) == []  # traded 1.5 s ago
    assert st.disconnected(facts(info(up_s=45), status(connected=False,
                                                       last_trade_ms=old_trade))) == []
    assert st.disconnected(facts(info(), status(age_s=45, connected=False,
                                                last_trade_ms=old_trade))) == []  # hung's case
    assert st.disconnected(facts(info(up_s=75), never_connected())) == [
        "has not connected to the exchange once in 75 s: 2026-11-30T04:12:03Z connect failed: "
        "WebSocketAddressException: [Errno -2] Name or service not known (it keeps retrying)"]


def test_rule_spool_backlog():
    assert st.spool_backlog(facts(info(), status(spool_backlog_bytes=10))) == [
        "InfluxDB writes failing: 10 bytes wait in the spool (replayed once InfluxDB accepts "
        "them)"]
    assert st.spool_backlog(facts(info(), status())) == []
    assert st.spool_backlog(facts(info(), status(age_s=45, spool_backlog_bytes=10))) == []


def test_rule_connection_waits():
    conns = [{"conn": "s1", "streams": 3, "connected": False, "waiting_budget_s": 41.6,
              "refused": None},
             {"conn": "s2", "streams": 2, "connected": False, "waiting_budget_s": 0.0,
              "refused": {"status": 429, "until": NOW + 9, "detail": "too many attempts"}}]
    assert st.connection_waits(facts(info(), status(connections=conns))) == [
        "connection s1 (3 streams) waits for the host's connection budget (WS_CONNECT_LIMIT): "
        "next attempt in about 42 s; its trades are backfilled when it connects",
        "connection s2 (2 streams): too many attempts"]
    # another process's file tells nothing of the connections now
    assert st.connection_waits(facts(info(pid=43), status(connections=conns))) == []


def test_rule_not_connected_yet():
    (line,) = st.not_connected_yet(facts(info(up_s=4), never_connected()))
    assert line.startswith("connection s1 has not connected to the exchange since the worker "
                           "started (4 s ago): 2026-11-30T04:12:03Z connect failed")
    assert line.endswith("(log: logs/b.log)")
    assert st.not_connected_yet(facts(info(up_s=75), never_connected())) == []  # a problem now
    assert st.not_connected_yet(facts(info(up_s=4), status())) == []


def test_rule_given_up_names_the_event_the_backfiller_logs():
    (line,) = st.given_up(facts(info(), status(given_up=7)))
    assert line == ("7 trade ids given up after the backfill cap (see event=gap_given_up in "
                    "logs/b.log)")
    backfill = (Path(st.__file__).parent.parent / "capture" / "backfill.py").read_text()
    assert "event=gap_given_up" in backfill
    assert st.given_up(facts(info(), status())) == []


def test_rule_rejected():
    assert st.rejected(facts(info(), status(rejected_lines=4))) == [
        "InfluxDB refused 4 lines (0 trades), kept in data/btcusdt/rejected.lp: see "
        "event=lines_rejected in logs/b.log for the reason and the fix"]
    assert st.rejected(facts(info(), status(rejected_lines=0, rejected_trades=0))) == []


def test_rule_write_quota_wait():
    # 429: writes wait for the end of the quota's window (workers/storage/writer.py)
    waiting = status(write_quota_until=NOW - 2 + 240)  # 240 s after the file was written
    assert st.write_quota_wait(facts(info(), waiting)) == [
        "InfluxDB's write quota is used up (429): writes resume at 2023-11-14T22:17:18Z (in "
        "240 s); batches wait in the spool meanwhile, none is lost"]
    row = assess("btcusdt", ["BTCUSDT"], info(), waiting, NOW)
    assert row.warnings == st.write_quota_wait(facts(info(), waiting))
    assert st.write_quota_wait(facts(info(), status(write_quota_until=NOW - 10))) == []
    assert st.write_quota_wait(facts(info(), status())) == []  # an older worker's file
    assert st.write_quota_wait(facts(info(pid=7), waiting)) == []  # not the running process's


# -- the status file as read back (workers/health.py: StatusFile) ----------------------------

def test_an_older_status_file_without_most_keys_reads_as_figures_unknown():
    row = assess("btcusdt", ["BTCUSDT"], info(), {"pid": 42, "updated": NOW - 1}, NOW)
    assert row.healthy and row.problems == []
    assert (row.gaps, row.trades_per_s, row.connected, row.last_trade_age_s) == \
        (None, None, None, None)


def test_a_figure_of_the_wrong_type_reads_as_missing():
    row = assess("btcusdt", ["BTCUSDT"], info(),
                 status(gaps="many", spool_backlog_bytes=None, connections="s1"), NOW)
    assert row.healthy and (row.gaps, row.spool_backlog_bytes) == (None, None)
    assert as_status(status(gaps="many")) == {k: v for k, v in status().items() if k != "gaps"}
    assert as_status(status()) == status()


def test_a_status_file_that_is_not_an_object_is_no_status_file(tmp_path: Path):
    path = tmp_path / "btcusdt.json"
    assert read_status(path) is None  # none yet
    path.write_text("[1, 2]")
    assert read_status(path) is None
    path.write_text("{half a file")
    assert read_status(path) is None
    path.write_text(json.dumps(status()))
    assert read_status(path) == status()


# -- issue 21.2: a crash loop is not healthy; 21.5: whole errors, wrapped, never cut ---------

from workers.ops.restarts import Exit, History  # noqa: E402

INJECTED = "RuntimeError: injected fault in main"


def crashed(times: int, cause: str = INJECTED, config_error: str = "") -> History:
    return History([Exit(NOW - 60 + 7 * i, "exit status 1") for i in range(times)], cause,
                   config_error)


def test_rule_crash_loop():
    starting = info(state="STARTING", up_s=2)
    assert st.crash_loop(facts(starting)) == []
    assert st.crash_loop(st.gather("btcusdt", ["BTCUSDT"], starting, None, NOW,
                                   history=crashed(2))) == []  # restarted's (a warning)
    (line,) = st.crash_loop(st.gather("btcusdt", ["BTCUSDT"], starting, None, NOW,
                                      history=crashed(4)))
    assert line == ("crash loop: exited unexpectedly 4 times in the last 10 min (exit status 1), "
                    f"restarted by supervisord each time; last error: {INJECTED}")


def test_rule_restarted():
    f = st.gather("btcusdt", ["BTCUSDT"], info(up_s=40), as_status(status()), NOW,
                  log="logs/b.log", history=crashed(1))
    (line,) = st.restarted(f)
    assert line.startswith("exited unexpectedly once in the last 10 min (exit status 1) (last at ")
    assert line.endswith(f"restarted by supervisord; last error: {INJECTED} (log: logs/b.log)")
    assert st.restarted(facts(info(), status())) == []


@pytest.mark.parametrize("up_s", [0.0, 1.5, 3.0])
def test_a_worker_starting_afresh_at_every_sample_of_a_crash_loop_is_unhealthy(up_s: float):
    """Issue 21.2: rows `ok STARTING`, uptime 0-3 s, while it crashed every 6-7 s."""
    row = assess("btcusdt", ["BTCUSDT"], info(state="STARTING", up_s=up_s), status(pid=41), NOW,
                 history=crashed(3))
    assert not row.healthy
    assert row.problems == [f"crash loop: exited unexpectedly 3 times in the last 10 min (exit "
                            f"status 1), restarted by supervisord each time; last error: "
                            f"{INJECTED} (log: logs/btcusdt.log)"]
    assert row.last_error == INJECTED


def test_one_crash_is_a_warning_with_its_cause_and_the_exit_code_stays_0():
    row = assess("btcusdt", ["BTCUSDT"], info(up_s=40), status(), NOW, history=crashed(1))
    assert row.healthy and INJECTED in row.warnings[0] and row.last_error == INJECTED


def test_a_fatal_worker_names_its_configuration_error_and_the_fix():
    error = ("worker btcusdt (line 2 of the symbols file): unknown to the exchange: BTCUSTD; "
             "fix the spelling or remove it")
    row = assess("btcusdt", ["BTCUSTD"], info(state="FATAL", pid=0,
                                              description="Exited too quickly"), None, NOW,
                 history=crashed(6, cause="", config_error=error))
    # One line: supervisord calls its quick exits "not expected", but it is no crash loop.
    assert row.problems == [f"FATAL: configuration error, not restarted: {error} (fix it, "
                            "then scripts/supervisorctl start btcusdt; log: logs/btcusdt.log)"]
    assert row.last_error == error


def test_a_fatal_worker_names_its_last_crash():
    row = assess("btcusdt", ["BTCUSDT"], info(state="FATAL", pid=0,
                                              description="Exited too quickly"), None, NOW,
                 history=crashed(0, cause="OSError: [Errno 30] Read-only file system"))
    assert row.problems == ["FATAL: Exited too quickly; last error: OSError: [Errno 30] "
                            "Read-only file system (log: logs/btcusdt.log)"]


TOKEN = ("2026-11-30T04:12:03Z InfluxDB refused the token (401): check INFLUXDB_TOKEN in "
         ".env.local; it needs write access to bucket 'ticks' of org 'acme'")


def test_a_spool_backlog_says_why_the_writes_fail():
    row = assess("btcusdt", ["BTCUSDT"], info(),
                 status(spool_backlog_bytes=4096, last_error=TOKEN), NOW)
    assert row.problems == ["InfluxDB writes failing: 4096 bytes wait in the spool (replayed "
                            f"once InfluxDB accepts them); last error: {TOKEN} (log: "
                            "logs/btcusdt.log)"]


def test_a_disconnect_says_why_the_connection_ended():
    conns = [{"conn": "s1", "streams": 1, "connected": False, "connected_once": True,
              "last_end": "2026-11-30T04:12:03Z closed by the server: 1008 policy violation"}]
    row = assess("btcusdt", ["BTCUSDT"], info(), status(
        connected=False, connections=conns,
        last_trade_ms={"BTCUSDT": int((NOW - 120) * 1000)}), NOW)
    assert row.problems == ["disconnected from the exchange, no trade for over 60 s: "
                            "2026-11-30T04:12:03Z closed by the server: 1008 policy violation "
                            "(it keeps retrying; log: logs/btcusdt.log)"]


def report_of(*rows: st.Row) -> Dict[str, Any]:
    return {"workers": [asdict(r) for r in rows], "supervisord": "running", "problems": [],
            "healthy": all(r.healthy for r in rows), "reconciler": "RUNNING"}


def test_a_long_last_error_is_printed_whole_below_the_table_wrapped_to_the_width():
    """Issue 21.5: LAST ERROR was cut at 60 characters, `refused the token (401): ch...`."""
    row = assess("btcusdt", ["BTCUSDT"], info(), status(last_error=TOKEN), NOW)
    text = table(report_of(row), width=100)
    lines = text.splitlines()
    header, first = lines[:2]
    assert header.split()[:3] == ["WORKER", "HEALTH", "STATE"] and header.endswith("LAST ERROR")
    assert first[header.index("LAST ERROR"):].startswith("2026-11-30T04:12:03Z Influx")
    assert first.endswith("...")  # the table keeps its columns: cut there ...
    below = "\n".join(lines[2:])
    assert below.startswith("btcusdt: last error: 2026-11-30T04:12:03Z InfluxDB refused")
    assert TOKEN in " ".join(below.split())  # ... and whole below it
    assert all(len(line) <= 100 for line in lines[2:]), below  # wrapped, not cut


def test_an_error_that_fits_is_not_repeated_below_nor_one_a_problem_line_says():
    short = assess("btcusdt", ["BTCUSDT"], info(), status(last_error="2026 closed"), NOW)
    assert "last error:" not in table(report_of(short), width=400)
    assert table(report_of(short), width=400).splitlines()[1].endswith("2026 closed")
    spool = assess("btcusdt", ["BTCUSDT"], info(),
                   status(spool_backlog_bytes=4096, last_error=TOKEN), NOW)
    text = table(report_of(spool), width=100)
    assert "btcusdt: last error:" not in text
    assert TOKEN in " ".join(text.split())


def test_the_width_is_the_terminals(monkeypatch: pytest.MonkeyPatch):
    row = assess("btcusdt", ["BTCUSDT"], info(), status(last_error=TOKEN * 2), NOW)
    monkeypatch.setenv("COLUMNS", "60")
    assert max(len(line) for line in table(report_of(row)).splitlines()[2:]) <= 60
    monkeypatch.setenv("COLUMNS", "400")
    assert "last error:" not in table(report_of(row))  # room enough in the column


def test_json_carries_the_whole_texts(root: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    (root / "run" / "status" / "btcusdt.json").write_text(json.dumps(status(last_error=TOKEN)))
    rpc = FakeRpc([info(), info("alts", pid=43), info("reconciler", pid=7)])
    monkeypatch.setattr(st, "collect", lambda: collect(root, rpc, now=lambda: NOW))
    st.main(["--json"])
    rows = {r["worker"]: r for r in json.loads(capsys.readouterr().out)["workers"]}
    assert rows["btcusdt"]["last_error"] == TOKEN


def supervisord_log(name: str, times: int) -> str:
    lines = []
    for i in range(times):
        at = NOW - 40 + 7 * i
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + ",000"
        lines += [f"{stamp} INFO spawned: '{name}' with pid {100 + i}",
                  f"{stamp} WARN exited: {name} (exit status 1; not expected)"]
    return "\n".join(lines) + "\n"


WORKER_LOG = ("2026-11-30T04:12:03Z CRITICAL host=h worker=btcusdt event=thread_crashed "
              f"thread=main error='{INJECTED}'\nTraceback (most recent call last):\n"
              '  File "workers/capture/worker.py", line 240, in run\n    self._loop()\n'
              f"{INJECTED}\n2026-11-30T04:12:03Z INFO host=h worker=btcusdt event=stopped exit=1\n")


def test_status_counts_restarts_from_supervisords_log_and_exits_1(
        root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    rpc = FakeRpc([info(state="STARTING", pid=107, up_s=1), info("alts", pid=43),
                   info("reconciler", pid=7)], logs={"btcusdt": WORKER_LOG},
                  supervisord_log=supervisord_log("btcusdt", 5) + supervisord_log("alts", 1))
    (root / "run" / "status" / "alts.json").write_text(json.dumps(status(pid=43)))
    monkeypatch.setattr(st, "collect", lambda: collect(root, rpc, now=lambda: NOW))
    assert st.main([]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["btcusdt", "FAIL", "STARTING"]
    assert ("btcusdt: crash loop: exited unexpectedly 5 times in the last 10 min (exit status 1), "
            f"restarted by supervisord each time; last error: {INJECTED} (log: logs/btcusdt.log)"
            ) in " ".join(out.split("\n    "))
    assert "alts: warning: exited unexpectedly once" in out  # one crash: shown, not a failure
    assert out.rstrip().endswith("UNHEALTHY")


def test_a_supervisord_log_that_cannot_be_read_is_said(root: Path) -> None:
    class NoLog(FakeRpc):
        def readLog(self, offset: int, length: int) -> str:
            raise OSError("no logfile")
    report = collect(root, NoLog([info(), info("alts", pid=43), info("reconciler", pid=7)]),
                     now=lambda: NOW)
    assert "restarts: not counted" in table(report, width=100)


def test_stored_says_a_refused_token_whole_with_its_fix(monkeypatch: pytest.MonkeyPatch):
    from workers.errors import SinkError
    from workers.storage.influx_query import InfluxQuery

    long = ("InfluxDB refused the token for a read (401): check INFLUXDB_TOKEN in .env.local; it "
            "needs read access to bucket 'a-rather-long-bucket-name/autogen' of org "
            "'a-rather-long-organisation-name' (/query answered 401: unauthorized access)")

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise SinkError(long, 401)
    for name, value in (("INFLUXDB_URL", "http://127.0.0.1:9"), ("INFLUXDB_TOKEN", "x"),
                        ("INFLUXDB_ORG", "o"), ("INFLUXDB_BUCKET", "b")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(InfluxQuery, "last_trades", refused)
    report = {**report_of(), "stored": st.stored(["BTCUSDT"])}
    text = table(report, width=100)
    assert f"stored: cannot tell: SinkError: {long}" in " ".join(text.split("\n    "))
    assert all(len(line) <= 100 for line in text.splitlines()[1:])


# -- the host's use of the write quota (INFLUXDB_WRITE_LIMIT) ------------------------------------
FREE_PLAN = WriteLimit(5_000_000, 300.0)
WINDOW = NOW // 300 * 300  # 1_699_999_800: the window of NOW ends in 100 s


def sending(window_bytes: int, trades_per_s: float = 12.5, start: float = WINDOW,
            window_s: float = 300.0, **extra: Any) -> Dict[str, Any]:
    """A worker's status file: `window_bytes` sent in the window from `start`, 170 B a line."""
    return status(quota_window_s=window_s, quota_window_start=start,
                  quota_window_bytes=window_bytes, sent_bytes=1_700_000, sent_lines=10_000,
                  trades_per_s=trades_per_s, **extra)


def quota(**files: Optional[Dict[str, Any]]) -> st.Quota:
    """The quota over workers named by the keywords, each running (its row live) or not."""
    rows = [assess(name, [], info(name, pid=42), f, NOW) for name, f in files.items()]
    return st.host_quota(FREE_PLAN, {n: as_status(f) for n, f in files.items()}, rows, NOW)


def test_the_quota_sums_the_hosts_workers_and_gives_its_headroom_in_trades_per_s():
    q = quota(btcusdt=sending(1_200_000, 30.0), alts=sending(800_000, 12.5))

    assert q.used_bytes == 2_000_000 and q.used_share == 0.4
    assert q.window_end == WINDOW + 300
    assert q.bytes_per_line == 170.0  # the workers' own sent_bytes / sent_lines
    assert q.allowed_trades_per_s == pytest.approx(5_000_000 / 300 / 170)  # 98.0
    assert q.host_trades_per_s == 42.5
    assert q.projected_bytes == 2_000_000 + 42.5 * 170 * 100  # the 100 s left at this rate
    assert q.warnings == []
    assert st.quota_line(q) == (
        "write quota: 2.00 MB of 5.00 MB used by this host in the window that ends at "
        "2023-11-14T22:15:00Z (40%); it allows 98.0 trades/s at 170 bytes per trade line, this "
        "host's pairs produce 42.5")


def test_rule_quota_near_warns_at_80_percent_of_the_window():
    q = quota(btcusdt=sending(4_100_000, 1.0))

    assert st.quota_near(q) == [
        "InfluxDB write quota: 4.10 MB of 5.00 MB used in the window that ends at "
        "2023-11-14T22:15:00Z (82%); past the limit, writes then wait until it ends (spooled, "
        "none lost)"]
    assert st.quota_near(quota(btcusdt=sending(3_900_000, 1.0))) == []


def test_rule_quota_near_warns_when_the_current_rate_reaches_the_limit_before_the_window_ends():
    q = quota(btcusdt=sending(3_000_000, 150.0))  # + 150 x 170 B x 100 s = 5.55 MB

    assert st.quota_near(q) == [
        "InfluxDB write quota: at this host's 150.0 trades/s the 5.00 MB of the window that "
        "ends at 2023-11-14T22:15:00Z are used up in about 78 s (60% used now); writes then "
        "wait until it ends (spooled, none lost)"]
    assert st.quota_near(quota(btcusdt=sending(3_000_000, 100.0))) == []  # 4.7 MB at the end


def test_rule_quota_too_small_when_the_pairs_produce_more_than_it_allows():
    q = quota(btcusdt=sending(0, 60.0), ethusdt=sending(0, 45.0))

    assert st.quota_too_small(q) == [
        "this host's pairs produce 105.0 trades/s, the write quota (INFLUXDB_WRITE_LIMIT, "
        "5.00 MB per 300 s) allows 98.0 at 170 bytes per trade line: writes wait part of "
        "every window and the spool grows; capture fewer pairs or raise the plan"]
    assert st.quota_too_small(quota(btcusdt=sending(0, 98.0))) == []
    assert q.warnings == st.quota_near(q) + st.quota_too_small(q)


def test_the_quota_counts_only_this_windows_bytes_and_running_workers_rates():
    q = quota(btcusdt=sending(900_000),
              old=sending(4_000_000, start=WINDOW - 300),  # the last window's: not now
              stopped=sending(500_000, pid=7))  # another process's file: bytes, no rate

    assert q.used_bytes == 1_400_000
    assert q.host_trades_per_s == 25.0


def test_a_worker_counting_another_window_is_named_not_counted():
    q = quota(btcusdt=sending(900_000), alts=sending(100_000, window_s=60.0, start=NOW - 40))

    assert q.used_bytes == 900_000 and q.uncounted == ["alts"]
    assert st.quota_line(q).endswith(
        "; not counted: alts (count per another window: restart them to apply "
        "INFLUXDB_WRITE_LIMIT)")


def test_before_any_request_the_measured_bytes_per_trade_line_stand_in():
    q = quota(btcusdt=status(trades_per_s=10.0))  # an older worker's file, or nothing sent

    assert q.bytes_per_line == st.BYTES_PER_LINE
    assert q.used_bytes == 0 and q.host_trades_per_s == 10.0


def test_the_table_shows_the_quota_and_its_warnings_and_the_json_its_figures():
    row = assess("btcusdt", ["BTCUSDT"], info(), sending(4_500_000, 40.0), NOW)
    q = quota(btcusdt=sending(4_500_000, 40.0))
    report = {"workers": [asdict(row)], "supervisord": "running", "problems": [],
              "reconciler": "RUNNING", "healthy": True, "quota": asdict(q)}

    text = table(report, width=400)

    assert st.quota_line(q) in text
    assert f"warning: {q.warnings[0]}" in text
    figures = json.loads(json.dumps(report))["quota"]
    assert figures["used_bytes"] == 4_500_000 and figures["limit_bytes"] == 5_000_000
    assert figures["allowed_trades_per_s"] == pytest.approx(98.04, abs=0.01)
    assert figures["host_trades_per_s"] == 40.0


def test_day_lines_join_verified_days_in_runs_and_name_each_day_not_verified() -> None:
    def day(d: str, missing: int = 0, extra: int = 0, differing: int = 0,
            verified: bool = True) -> Dict[str, Any]:
        return {"day": d, "verified": verified, "trades": 9, "missing": missing,
                "extra": extra, "differing": differing}

    report = {"lookback_d": 7, "symbols": {
        "BTCUSDT": [day("2025-03-01"), day("2025-03-02"), day("2025-03-03"),
                    day("2025-03-04", missing=1234, verified=False), day("2025-03-05"),
                    day("2025-03-06", verified=False)],
        "ETHUSDT": []}}
    assert st.day_lines(report) == [
        "days: BTCUSDT verified 2025-03-01..2025-03-03, 2025-03-05; "
        "2025-03-04 1,234 missing, 0 extra, 0 differing; 2025-03-06 archive file unreadable",
        "days: ETHUSDT none verified in the last 7 d (scripts/verify)"]
    assert st.day_lines({"error": "SinkError: x"}) == ["days: cannot tell: SinkError: x"]


def test_stored_opens_one_influxdb_source_for_both_reports_and_closes_it(
        root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from workers.storage.influx_query import InfluxQuery

    (root / "run" / "status" / "alts.json").write_text(json.dumps(status(pid=43)))
    healthy = FakeRpc([info(), info("alts", pid=43), info("reconciler", pid=7)])
    monkeypatch.setattr(st, "collect", lambda: collect(root, healthy, now=lambda: NOW))
    for name, value in (("INFLUXDB_URL", "http://127.0.0.1:9"), ("INFLUXDB_TOKEN", "x"),
                        ("INFLUXDB_ORG", "o"), ("INFLUXDB_BUCKET", "b")):
        monkeypatch.setenv(name, value)
    opened: List[InfluxQuery] = []
    closed: List[InfluxQuery] = []
    real_init = InfluxQuery.__init__

    def init(self: InfluxQuery, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)
    monkeypatch.setattr(InfluxQuery, "__init__", init)
    monkeypatch.setattr(InfluxQuery, "close", lambda self: closed.append(self))
    monkeypatch.setattr(InfluxQuery, "last_trades", lambda self, *a, **k: {})
    monkeypatch.setattr(InfluxQuery, "query", lambda self, q, *a, **k: [])

    st.main(["--stored"])

    out = capsys.readouterr().out
    assert "stored: BTCUSDT nothing in the last 24 h" in out, out
    assert "days: BTCUSDT none verified in the last 7 d (scripts/verify)" in out, out
    assert len(opened) == 1 and closed == opened
