"""`scripts/status`: one line per worker, from supervisord and the workers' status files.

    WORKER  HEALTH  STATE  UPTIME  SYMBOLS  LAST TRADE  TRADES/S  LAG p50/p99  SPOOL  GAPS/FILLED
        REJECTED  LAST ERROR

Exit code: 0 every worker healthy, 1 at least one is not (or the reconciler is down),
2 supervisord does not answer. `--json` prints the same as one JSON object.

A worker is unhealthy when (and only when):
  - supervisord does not have it RUNNING (STARTING counts as healthy: it lasts `startsecs`);
  - it has run for 30 s and its status file (written every 5 s) is older than 30 s or was written
    by another process: the worker is hung;
  - its spool holds data: InfluxDB writes have failed for over a minute (the data is safe on
    disk, but not in the database yet);
  - it is disconnected and has had no trade for 60 s.
A long time without a trade is NOT unhealthy by itself: quiet pairs go minutes without one, and
the worker asks the exchange's REST API whether trades happened before it calls a stream stale
(and then reconnects and backfills on its own). Trade ids given up after the backfill cap are a
warning: shown, but the exit code stays 0, since restarting cannot bring them back. So are a
connection waiting for the host's connection budget or for a refused handshake's Retry-After
(the exchange's 429/418: the wait and its end are shown), and
lines InfluxDB refused (REJECTED: trade lines, plus health lines after a `+`): they are kept in
`data/<worker>/rejected.lp` and need a person, not a restart.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ConfigError
from .settings import PROJECT_ROOT, load_env, load_settings
from .supervisor_render import RenderSettings, parse_rendered, read_text
from .supervisor_rpc import RPC_ERRORS, connect, describe, exit_config_error
from .symbols import load_symbols

STALE_S = 30.0  # a status file older than this (6 missed writes) means a hung worker
GRACE_S = 30.0  # a worker younger than this may not have written its first status yet
DISCONNECTED_S = 60.0
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_NO_SUPERVISORD = 0, 1, 2
RECONCILER = "reconciler"


@dataclass
class Row:
    worker: str
    state: str
    healthy: bool = True
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    pid: Optional[int] = None
    uptime_s: Optional[float] = None
    symbols: List[str] = field(default_factory=list)
    last_trade_age_s: Optional[float] = None
    trades_per_s: Optional[float] = None
    lag_p50_ms: Optional[float] = None
    lag_p99_ms: Optional[float] = None
    spool_backlog_bytes: Optional[int] = None
    gaps: Optional[int] = None
    backfilled: Optional[int] = None
    given_up: Optional[int] = None
    rejected_lines: Optional[int] = None  # lines InfluxDB refused, kept in rejected.lp
    rejected_trades: Optional[int] = None  # of them, trades
    reconnects: Optional[int] = None
    connected: Optional[bool] = None
    status_age_s: Optional[float] = None
    last_error: str = ""


def assess(name: str, symbols: List[str], info: Optional[Dict[str, Any]],
           status: Optional[Dict[str, Any]], now: float, stale_s: float = STALE_S) -> Row:
    """One worker's row and health, from its supervisor info (None: unknown to supervisord)."""
    row = Row(worker=name, state=info["statename"] if info else "MISSING", symbols=symbols)
    if info is None:
        row.problems.append("not loaded in supervisord (the reconciler has not applied it: "
                            "see logs/reconciler.log)")
    elif info["statename"] not in ("RUNNING", "STARTING"):
        row.problems.append(f"{info['statename']}: {info.get('description') or 'not running'}")
    if info is not None and info["statename"] in ("RUNNING", "STARTING"):
        row.pid = info["pid"]
        row.uptime_s = max(0.0, now - info["start"])
    fresh = (status is not None and info is not None and status.get("pid") == info["pid"]
             and now - float(status.get("updated", 0)) <= stale_s)
    if status is not None:
        _fill_from_status(row, status, now)
    if row.uptime_s is not None and row.uptime_s > GRACE_S and row.state == "RUNNING":
        if not fresh:
            age = "no status file" if status is None else (
                f"status file written {row.status_age_s:.0f} s ago"
                + ("" if status.get("pid") == row.pid else " by another process"))
            row.problems.append(f"hung? {age} (it is rewritten every 5 s)")
        elif row.connected is False and (row.last_trade_age_s is None
                                         or row.last_trade_age_s > DISCONNECTED_S) \
                and row.uptime_s > DISCONNECTED_S:
            row.problems.append("disconnected from the exchange, no trade for over "
                                f"{DISCONNECTED_S:.0f} s (it keeps retrying: see its log)")
        if fresh and (row.spool_backlog_bytes or 0) > 0:
            row.problems.append(f"InfluxDB writes failing: {row.spool_backlog_bytes} bytes wait "
                                "in the spool (replayed once InfluxDB accepts them)")
    if (row.given_up or 0) > 0:
        row.warnings.append(f"{row.given_up} trade ids given up after the backfill cap "
                            "(see event=backfill_given_up in its log)")
    if (row.rejected_lines or 0) > 0:
        trades = row.rejected_trades or 0
        row.warnings.append(f"InfluxDB refused {row.rejected_lines} lines ({trades} trades), kept "
                            f"in data/{name}/rejected.lp: see event=lines_rejected in its log "
                            "for the reason and the fix")
    row.healthy = not row.problems
    return row


def _fill_from_status(row: Row, status: Dict[str, Any], now: float) -> None:
    row.status_age_s = max(0.0, now - float(status.get("updated", 0)))
    last = [int(v) for v in (status.get("last_trade_ms") or {}).values()]
    row.last_trade_age_s = max(0.0, now - max(last) / 1000.0) if last else None
    for key in ("trades_per_s", "lag_p50_ms", "lag_p99_ms", "spool_backlog_bytes", "gaps",
                "backfilled", "given_up", "rejected_lines", "rejected_trades", "reconnects",
                "connected"):
        setattr(row, key, status.get(key))
    row.last_error = row.last_error or str(status.get("last_error") or "")
    for conn in status.get("connections") or []:
        label = f"connection {conn.get('conn')} ({conn.get('streams')} streams)"
        if not conn.get("connected") and conn.get("last_end"):
            # While it is down, why it is down says more than any older error.
            row.last_error = f"{label}: {conn['last_end']}"
        if conn.get("refused"):
            row.warnings.append(f"{label}: {conn['refused'].get('detail')}")
        elif conn.get("waiting_budget_s"):
            row.warnings.append(f"{label} waits for the host's connection budget "
                                f"(WS_CONNECT_LIMIT): next attempt in about "
                                f"{float(conn['waiting_budget_s']):.0f} s; its trades are "
                                "backfilled when it connects")


def collect(root: Path = PROJECT_ROOT, rpc: Any = None,
            now: Callable[[], float] = time.time) -> Dict[str, Any]:
    """Everything the table shows, as one JSON-able dict."""
    settings = RenderSettings.for_root(root)
    report: Dict[str, Any] = {"healthy": True, "problems": [], "supervisord": "running"}
    try:
        expected = {s.name: list(s.symbols) for s in load_symbols(settings.symbols_file)}
    except ConfigError as exc:
        report["problems"].append(f"symbols file: {exc}")
        expected = {n: list(s) for n, s in
                    parse_rendered(read_text(settings.include_path)).items()}
    try:
        run_dir = load_settings(load_env()).run_dir
    except ConfigError:
        run_dir = root / "run"
    infos: Optional[List[Dict[str, Any]]] = None
    try:
        rpc = rpc or connect(settings.socket_url)
        infos = rpc.supervisor.getAllProcessInfo()
    except RPC_ERRORS as exc:
        report["supervisord"] = f"not reachable at {settings.socket_url}: {describe(exc)}"
    by_name = {i["name"]: i for i in infos or []}
    names = list(expected) + sorted(n for n in by_name if n not in expected and n != RECONCILER)
    t = now()
    rows = []
    for name in names:
        info = by_name.get(name)
        symbols = expected.get(name) or []
        if infos is None:
            row = Row(worker=name, state="UNKNOWN", healthy=False, symbols=symbols,
                      problems=["supervisord not reachable"])
        else:
            row = assess(name, symbols, info, _read_status(run_dir, name), t)
            if name not in expected:
                row.warnings.append("not in the symbols file any more: being removed")
            if info is not None and info["statename"] in ("FATAL", "EXITED", "BACKOFF"):
                row.last_error = exit_config_error(info, rpc) or info.get("spawnerr") or \
                    row.last_error
        rows.append(row)
    if infos is not None:
        rec = by_name.get(RECONCILER)
        report["reconciler"] = rec["statename"] if rec else "MISSING"
        if report["reconciler"] != "RUNNING":
            report["problems"].append(f"the reconciler is {report['reconciler']}: edits of the "
                                      "symbols file are not applied, FATAL workers not revived")
    report["workers"] = [asdict(r) for r in rows]
    report["healthy"] = infos is not None and not report["problems"] and \
        all(r.healthy for r in rows)
    return report


def _read_status(run_dir: Path, name: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads((run_dir / "status" / f"{name}.json").read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


# -- the table ---------------------------------------------------------------------------
def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{(s % size) // sub_size:02d}{sub}"
    return f"{s}s"


def _bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _num(v: Optional[float], fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _symbols(symbols: List[str]) -> str:
    return ",".join(symbols) if len(symbols) <= 2 else f"{symbols[0]},+{len(symbols) - 1}"


def table(report: Dict[str, Any]) -> str:
    header = ("WORKER", "HEALTH", "STATE", "UPTIME", "SYMBOLS", "LAST TRADE", "TRADES/S",
              "LAG p50/p99 ms", "SPOOL", "GAPS/FILLED", "REJECTED", "LAST ERROR")
    lines: List[Tuple[str, ...]] = [header]
    for r in report["workers"]:
        gaps = "-" if r["gaps"] is None else f"{r['gaps']}/{r['backfilled']}" + (
            f" ({r['given_up']} lost)" if r["given_up"] else "")
        lines.append((r["worker"], "ok" if r["healthy"] else "FAIL", r["state"],
                      _age(r["uptime_s"]), _symbols(r["symbols"]),
                      _age(r["last_trade_age_s"]) if r["last_trade_age_s"] is not None else "-",
                      _num(r["trades_per_s"], "{:.1f}"),
                      f"{_num(r['lag_p50_ms'])}/{_num(r['lag_p99_ms'])}",
                      _bytes(r["spool_backlog_bytes"]), gaps, _rejected(r),
                      _short(r["last_error"], 60)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    for r in report["workers"]:
        out += [f"{r['worker']}: {p}" for p in r["problems"]]
        out += [f"{r['worker']}: warning: {w}" for w in r["warnings"]]
    if report["supervisord"] != "running":
        out.append(f"supervisord: {report['supervisord']}")
    elif "reconciler" in report:
        out.append(f"reconciler: {report['reconciler']}")
    out += [f"problem: {p}" for p in report["problems"]]
    out.append("healthy" if report["healthy"] else "UNHEALTHY")
    return "\n".join(out)


def _rejected(r: Dict[str, Any]) -> str:
    """Trade lines refused, plus other (health) lines after a `+`: `12`, `12+3`, `0+3`."""
    lines = r.get("rejected_lines")
    if lines is None:
        return "-"
    trades = r.get("rejected_trades")
    if trades is None:  # a status file of a worker from before rejected_trades existed
        return str(lines)
    return str(trades) if lines == trades else f"{trades}+{lines - trades}"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/status", description="Health of every worker (supervisord state and "
        "the workers' status files). Exit 0 healthy, 1 unhealthy, 2 supervisord not answering.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(table(report))
    if not report["supervisord"] == "running":
        return EXIT_NO_SUPERVISORD
    return EXIT_HEALTHY if report["healthy"] else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
