"""`scripts/status`: one line per worker, from supervisord and the workers' status files.

    WORKER  HEALTH  STATE  UPTIME  SYMBOLS  LAST TRADE  TRADES/S  LAG p50/p99  SPOOL  GAPS/FILLED
        REJECTED  LAST ERROR

Exit code (the table of workers/errors.py): 0 every worker healthy, 1 at least one is not (or
the reconciler is down, or the symbols file has an error), 3 supervisord does not answer (a
runtime failure, as with every command). `--json` prints the same as one JSON object.

A worker is unhealthy when (and only when), each a rule of PROBLEMS below:
  - supervisord does not have it RUNNING (STARTING counts as healthy: it lasts `startsecs`);
  - it exited unexpectedly CRASH_LOOP_EXITS (3) times in the last RESTART_WINDOW_S (10 min),
    counted from supervisord's log (workers/ops/restarts.py says why there): a crash loop,
    however healthy each fresh start looks (STARTING, uptime 0-3 s); fewer exits are a warning;
  - it has run for 30 s and its status file (written every second) is older than 30 s or was
    written by another process: the worker is hung;
  - its spool holds data: InfluxDB writes have failed for over a minute (the data is safe on
    disk, but not in the database yet);
  - it is disconnected and has had no trade for 60 s (or has not connected once in its first
    60 s: until then that is a warning with the cause, shown at once).
Every problem line names the worker's log file, and the error behind it in full (the last
crash's cause, the configuration error, the write error, why the connection ended). The table
keeps its columns: a LAST ERROR too long for the terminal's width is cut there and printed in
full below the table, and the lines below are wrapped to the width, never cut.
TRADES/S, LAG and LAST TRADE come only from a status file of the running process: a stopped
worker shows them blank. LAST TRADE is the newest trade's age when the worker last wrote its
status (at most FRESH_S ago). LAG (trade time to stored) covers the trades stored in the
worker's last 10 s (capture/reporter.py LAG_WINDOW_S): `-` when none was stored in them.
An error of the symbols file, a symbol unknown to the exchange included (the reconciler's
finding: run/symbols-error.json), is shown in full, and the rows are the workers it last applied.
A file with 'hosts:' (shards) gives the rows of this host's share (CAPTURE_HOST) only; the
workers that run on other hosts only are named on one line below the table, not as missing.
A long time without a trade is NOT unhealthy by itself: quiet pairs go minutes without one, and
the worker asks the exchange's REST API whether trades happened before it calls a stream stale
(and then reconnects and backfills on its own). Trade ids given up after the backfill cap are a
warning (each warning is a rule of WARNINGS below): shown, but the exit code stays 0, since
restarting cannot bring them back. So are a connection waiting for the host's connection budget
or for a refused handshake's Retry-After (the exchange's 429/418: the wait and its end are
shown), and lines InfluxDB refused (REJECTED: trade lines, plus health lines after a `+`): they
are kept in `data/<worker>/rejected.lp` and need a person, not a restart.

With INFLUXDB_WRITE_LIMIT set (e.g. Cloud Serverless's free plan, 5MB/5m), a line below the
table says how much of the current window's quota this host's workers used and how many trades/s
it allows (at the bytes per trade line the workers measured) against what the host's pairs
produce; QUOTA_WARNINGS warn before it is used up (80 %, or the current rate reaching it before
the window ends) and when the pairs produce more than it allows. `--json`: the `quota` object.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from workers.common.timefmt import iso_seconds
from workers.errors import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, ConfigError, exit_codes_help
from workers.health import ConnectionState, StatusFile, as_status, read_status
from workers.ops.reconcile import config_error
from workers.ops.restarts import (
    RESTART_WINDOW_S,
    WORKER_TAIL_BYTES,
    Exit,
    History,
    crash_cause,
    read_exits,
)
from workers.ops.supervisor_render import RenderSettings, parse_rendered, read_text
from workers.ops.supervisor_rpc import (
    RPC_ERRORS,
    connect,
    exit_config_error,
    log_tail,
    unreachable,
)
from workers.settings import PROJECT_ROOT, WriteLimit, load_env, load_settings
from workers.symbols import load_file, this_host

STALE_S = 30.0  # a status file older than this (30 missed writes) means a hung worker
GRACE_S = 30.0  # a worker younger than this may not have written its first status yet
DISCONNECTED_S = 60.0
FRESH_S = 2.0  # a status file this young tells LAST TRADE as of its write (written every 1 s)
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_NO_SUPERVISORD = EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME
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
    log: str = ""  # the worker's log file, relative to the project root when inside it


UP = ("RUNNING", "STARTING")  # supervisord states of a process that is (being) up
DOWN = ("FATAL", "EXITED", "BACKOFF")  # ... of one that exited: its log says why
WIDTH = 100  # the lines' width when the output is not a terminal (and COLUMNS is unset)
LAST_ERROR_MIN = 30  # the LAST ERROR column's width at least, however wide the others are


@dataclass
class Facts:
    """What the health rules look at: one worker's supervisor info and status file at `now`,
    and its row as filled from both."""
    row: Row
    info: Optional[Dict[str, Any]]  # supervisord's process info; None: not loaded in it
    status: Optional[StatusFile]
    live: bool  # the status file is the running process's own
    fresh: bool  # ... and was written within stale_s
    never: List[ConnectionState]  # the live process's connections never open since its start
    history: History = field(default_factory=History)  # its recent exits and their cause

    @property
    def past_grace(self) -> bool:
        """RUNNING for longer than a first status file may take."""
        return self.row.state == "RUNNING" and (self.row.uptime_s or 0.0) > GRACE_S


def assess(name: str, symbols: List[str], info: Optional[Dict[str, Any]],
           status: Optional[Mapping[str, Any]], now: float, stale_s: float = STALE_S,
           log: str = "", history: Optional[History] = None) -> Row:
    """One worker's row and health, from its supervisor info (None: unknown to supervisord),
    its status file (parsed JSON, None: none) and its recent exits (None: none known).

    `log` is the worker's log file, named in every problem line (default `logs/<name>.log`).
    """
    log = log or f"logs/{name}.log"
    facts = gather(name, symbols, info, as_status(status), now, stale_s, log, history)
    row = facts.row
    row.problems = [text for rule in PROBLEMS for text in rule(facts)]
    row.warnings = [text for rule in WARNINGS for text in rule(facts)]
    if info is not None:  # (a worker supervisord lacks points to the reconciler's log)
        row.problems = [_with_log(p, log) for p in row.problems]
    row.healthy = not row.problems
    return row


def gather(name: str, symbols: List[str], info: Optional[Dict[str, Any]],
           status: Optional[StatusFile], now: float, stale_s: float = STALE_S,
           log: str = "", history: Optional[History] = None) -> Facts:
    """The facts the rules read: the row filled from supervisord, the status file and the
    worker's recent exits."""
    history = history or History()
    row = Row(worker=name, state=info["statename"] if info else "MISSING", symbols=symbols,
              log=log)
    if info is not None and info["statename"] in UP:
        row.pid = info["pid"]
        row.uptime_s = max(0.0, now - info["start"])
    # Only a file of the running process tells how it is now; an older one (a stopped worker,
    # or a new process before its first write) keeps its counters but not its live figures.
    live = status is not None and row.pid is not None and status.get("pid") == row.pid
    fresh = live and status is not None and now - status.get("updated", 0.0) <= stale_s
    never: List[ConnectionState] = []
    if status is not None:
        _fill_counters(row, status, now)
        if live:
            _fill_live(row, status, now)
            never = [c for c in status.get("connections") or []
                     if c.get("connected_once") is False and not c.get("connected")]
    if info is not None and info["statename"] in DOWN:
        # Why it is down, rather than an older error of its last run.
        row.last_error = history.config_error or history.cause or info.get("spawnerr") or \
            row.last_error
    elif history.exits and history.cause:
        row.last_error = history.cause  # up again, or starting again: why it last crashed
    return Facts(row, info, status, live, fresh, never, history)


# -- the health rules: each returns its problem or warning lines (none: the rule holds) ----------
def not_loaded(f: Facts) -> List[str]:
    """supervisord does not have the worker: the reconciler has not applied it."""
    if f.info is not None:
        return []
    return ["not loaded in supervisord (the reconciler has not applied it: see "
            "logs/reconciler.log)"]


def not_running(f: Facts) -> List[str]:
    """supervisord has it, but not RUNNING (STARTING counts: it lasts `startsecs`); with the
    configuration error that stopped it, or its last crash's cause."""
    if f.info is None or f.info["statename"] in UP:
        return []
    state, h = f.info["statename"], f.history
    if h.config_error:
        return [f"{state}: configuration error, not restarted: {h.config_error} (fix it, then "
                f"scripts/supervisorctl start {f.row.worker})"]
    text = f"{state}: {f.info.get('description') or 'not running'}"
    if state == "STOPPED":  # by hand (supervisorctl stop): it stays down until started
        text += f"; scripts/supervisorctl start {f.row.worker} starts it again"
    if h.cause and not h.crash_loop:  # (crash_loop says it)
        text += f"; last error: {h.cause}"
    return [text]


def crash_loop(f: Facts) -> List[str]:
    """Exited unexpectedly CRASH_LOOP_EXITS times in RESTART_WINDOW_S: the restarts do not cure
    it, however fresh its row looks (STARTING, uptime 0-3 s, at every sample)."""
    if not f.history.crash_loop or f.history.config_error:  # (not_running says that one)
        return []
    return [f"crash loop: {_exits(f.history.exits)}, restarted by supervisord each time; "
            f"last error: {f.history.cause or 'none found at the end of its log'}"]


def restarted(f: Facts) -> List[str]:
    """Exited unexpectedly, fewer than CRASH_LOOP_EXITS times: the restart did its job, but
    the crash and its cause are shown."""
    exits = f.history.exits
    if not exits or f.history.crash_loop:
        return []
    return [f"{_exits(exits)} (last at {iso_seconds(exits[-1].at)}), restarted by supervisord; "
            f"last error: {f.history.cause or 'none found at the end of its log'} "
            f"(log: {f.row.log})"]


def _exits(exits: List[Exit]) -> str:
    """`exited unexpectedly 4 times in the last 10 min (exit status 1)`."""
    hows = ", ".join(dict.fromkeys(e.how for e in exits))
    times = "once" if len(exits) == 1 else f"{len(exits)} times"
    return (f"exited unexpectedly {times} in the last {RESTART_WINDOW_S / 60:.0f} min "
            f"({hows})")


def hung(f: Facts) -> List[str]:
    """Past its grace period, its status file is stale or another process's."""
    if not f.past_grace or f.fresh:
        return []
    if f.status is None:
        age = "no status file"
    else:
        age = f"status file written {f.row.status_age_s or 0.0:.0f} s ago" + (
            "" if f.status.get("pid") == f.row.pid else " by another process")
    return [f"hung? {age} (it is rewritten every second)"]


def disconnected(f: Facts) -> List[str]:
    """Disconnected with no trade for DISCONNECTED_S, once it has run that long."""
    row = f.row
    if not (f.past_grace and f.fresh and row.connected is False
            and (row.uptime_s or 0.0) > DISCONNECTED_S):
        return []
    if row.last_trade_age_s is not None and row.last_trade_age_s <= DISCONNECTED_S:
        return []  # a reconnect caught in the act
    if f.never:
        return [f"has not connected to the exchange once in {row.uptime_s or 0.0:.0f} s: "
                f"{_why(f.never[0])} (it keeps retrying)"]
    ended = [c.get("last_end", "") for c in (f.status or {}).get("connections") or []
             if not c.get("connected") and c.get("last_end")]
    why = f": {ended[0]}" if ended else ""
    return [f"disconnected from the exchange, no trade for over {DISCONNECTED_S:.0f} s{why} "
            "(it keeps retrying)"]


def spool_backlog(f: Facts) -> List[str]:
    """Data waits in the spool: InfluxDB writes have failed for over a minute."""
    backlog = f.row.spool_backlog_bytes or 0
    if not (f.past_grace and f.fresh and backlog > 0):
        return []
    return [f"InfluxDB writes failing: {backlog} bytes wait in the spool (replayed once "
            "InfluxDB accepts them)" + _last_error(f)]


def connection_waits(f: Facts) -> List[str]:
    """A live connection refused by the exchange (429/418) or waiting for the host's budget."""
    if not f.live or f.status is None:
        return []
    warnings = []
    for conn in f.status.get("connections") or []:
        label = f"connection {conn.get('conn')} ({conn.get('streams')} streams)"
        refused = conn.get("refused")
        if refused:
            warnings.append(f"{label}: {refused.get('detail')}")
        elif conn.get("waiting_budget_s"):
            warnings.append(f"{label} waits for the host's connection budget "
                            f"(WS_CONNECT_LIMIT): next attempt in about "
                            f"{conn.get('waiting_budget_s', 0.0):.0f} s; its trades are "
                            "backfilled when it connects")
    return warnings


def not_connected_yet(f: Facts) -> List[str]:
    """In its first DISCONNECTED_S, a connection that has not opened once: the cause, at once
    (after that, `disconnected` makes it a problem)."""
    uptime = f.row.uptime_s
    if uptime is not None and uptime > DISCONNECTED_S:
        return []
    up = f"{uptime:.0f} s" if uptime is not None else "its start"
    return [f"connection {conn.get('conn')} has not connected to the exchange since the "
            f"worker started ({up} ago): {_why(conn)} (log: {f.row.log})" for conn in f.never]


def given_up(f: Facts) -> List[str]:
    """Trade ids given up after the backfill cap: a restart cannot bring them back."""
    if (f.row.given_up or 0) <= 0:
        return []
    return [f"{f.row.given_up} trade ids given up after the backfill cap "
            f"(see event=gap_given_up in {f.row.log})"]


def rejected(f: Facts) -> List[str]:
    """Lines InfluxDB refused, kept in rejected.lp: they need a person, not a restart."""
    row = f.row
    if (row.rejected_lines or 0) <= 0:
        return []
    return [f"InfluxDB refused {row.rejected_lines} lines ({row.rejected_trades or 0} trades), "
            f"kept in data/{row.worker}/rejected.lp: see event=lines_rejected in {row.log} "
            "for the reason and the fix"]


def write_quota_wait(f: Facts) -> List[str]:
    """InfluxDB answered 429 (its write quota is used up): writes wait until it ends."""
    if not f.live or f.status is None:
        return []
    until, written = f.status.get("write_quota_until", 0.0), f.status.get("updated", 0.0)
    if until <= written:
        return []
    return [f"InfluxDB's write quota is used up (429): writes resume at {iso_seconds(until)} "
            f"(in {until - written:.0f} s); batches wait in the spool meanwhile, none is lost"]


PROBLEMS: Tuple[Callable[[Facts], List[str]], ...] = (
    not_loaded, not_running, crash_loop, hung, disconnected, spool_backlog)
WARNINGS: Tuple[Callable[[Facts], List[str]], ...] = (
    restarted, connection_waits, not_connected_yet, given_up, rejected, write_quota_wait)


# -- the host's use of InfluxDB's write quota (INFLUXDB_WRITE_LIMIT) ------------------------------
QUOTA_WARN_SHARE = 0.8  # warn once this share of the window's bytes is used
# Bytes per trade line until a worker has sent any (then its own sent_bytes / sent_lines):
# the median of BTCUSDT and ETHUSDT lines, measured by `scripts/bench --only quota`.
BYTES_PER_LINE = 194.0  # with time_us (168.5 without)


@dataclass
class Quota:
    """This host's use of the write quota in the current fixed window, from its workers'
    status files (other hosts writing to the same bucket use the same quota unseen here)."""
    limit_bytes: int
    window_s: float
    window_end: float  # epoch s: the current window ends (and the count restarts) then
    used_bytes: int  # sent by this host's workers in this window (writer.py: what counts)
    used_share: float  # used_bytes / limit_bytes
    bytes_per_line: float  # measured by the workers, BYTES_PER_LINE before they sent any
    allowed_trades_per_s: float  # limit_bytes / window_s / bytes_per_line
    host_trades_per_s: float  # the running workers' recent trades/s, summed
    projected_bytes: int  # used_bytes + what the host's rate adds until the window ends
    uncounted: List[str] = field(default_factory=list)  # workers counting another window
    warnings: List[str] = field(default_factory=list)


def host_quota(limit: WriteLimit, statuses: Mapping[str, Optional[StatusFile]],
               rows: List[Row], now: float) -> Quota:
    """The quota's figures at `now` from each worker's status file ({worker: file}) and row
    (TRADES/S: running workers only), its warnings (QUOTA_WARNINGS) filled in."""
    start = math.floor(now / limit.window_s) * limit.window_s
    files = [f for f in statuses.values() if f is not None]
    counted = [f for f in files if f.get("quota_window_s") == limit.window_s]
    used = sum(f.get("quota_window_bytes", 0) for f in counted
               if f.get("quota_window_start") == start)
    lines = sum(f.get("sent_lines", 0) for f in files)
    per_line = sum(f.get("sent_bytes", 0) for f in files) / lines if lines else BYTES_PER_LINE
    rate = sum(r.trades_per_s or 0.0 for r in rows)
    end = start + limit.window_s
    quota = Quota(limit.limit_bytes, limit.window_s, end, used, used / limit.limit_bytes,
                  per_line, limit.limit_bytes / limit.window_s / per_line, rate,
                  int(used + rate * per_line * max(0.0, end - now)),
                  uncounted=sorted(w for w, f in statuses.items() if f is not None and
                                   f.get("quota_window_s", limit.window_s) != limit.window_s))
    quota.warnings = [text for rule in QUOTA_WARNINGS for text in rule(quota)]
    return quota


def quota_near(q: Quota) -> List[str]:
    """QUOTA_WARN_SHARE of the window's bytes used, or the host's rate uses the rest before
    the window ends: writes will wait (429) until it does."""
    ends = f"the window that ends at {iso_seconds(q.window_end)}"
    wait = "writes then wait until it ends (spooled, none lost)"
    if q.used_bytes >= q.limit_bytes * QUOTA_WARN_SHARE:
        return [f"InfluxDB write quota: {_mb(q.used_bytes)} of {_mb(q.limit_bytes)} used in "
                f"{ends} ({q.used_share:.0%}); past the limit, {wait}"]
    if q.projected_bytes > q.limit_bytes:
        left = (q.limit_bytes - q.used_bytes) / (q.host_trades_per_s * q.bytes_per_line)
        return [f"InfluxDB write quota: at this host's {q.host_trades_per_s:.1f} trades/s the "
                f"{_mb(q.limit_bytes)} of {ends} are used up in about {left:.0f} s "
                f"({q.used_share:.0%} used now); {wait}"]
    return []


def quota_too_small(q: Quota) -> List[str]:
    """This host's pairs produce more trades/s than the quota allows: writes will wait in
    every window and the spool grow."""
    if q.host_trades_per_s <= q.allowed_trades_per_s:
        return []
    return [f"this host's pairs produce {q.host_trades_per_s:.1f} trades/s, the write quota "
            f"(INFLUXDB_WRITE_LIMIT, {_mb(q.limit_bytes)} per {q.window_s:g} s) allows "
            f"{q.allowed_trades_per_s:.1f} at {q.bytes_per_line:.0f} bytes per trade line: "
            "writes wait part of every window and the spool grows; capture fewer pairs or "
            "raise the plan"]


QUOTA_WARNINGS: Tuple[Callable[[Quota], List[str]], ...] = (quota_near, quota_too_small)


def quota_line(q: Quota) -> str:
    """The headroom, shown below the table whenever INFLUXDB_WRITE_LIMIT is set."""
    line = (f"write quota: {_mb(q.used_bytes)} of {_mb(q.limit_bytes)} used by this host in "
            f"the window that ends at {iso_seconds(q.window_end)} ({q.used_share:.0%}); it "
            f"allows {q.allowed_trades_per_s:.1f} trades/s at {q.bytes_per_line:.0f} bytes per "
            f"trade line, this host's pairs produce {q.host_trades_per_s:.1f}")
    if q.uncounted:
        line += (f"; not counted: {', '.join(q.uncounted)} (count per another window: restart "
                 "them to apply INFLUXDB_WRITE_LIMIT)")
    return line


def _mb(n: int) -> str:
    """Decimal units, as the plans state them: `4.20 MB`, `950 kB`."""
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _last_error(f: Facts) -> str:
    """`; last error: <the status file's last error>`, or nothing without one."""
    return f"; last error: {f.row.last_error}" if f.row.last_error else ""


def _with_log(text: str, log: str) -> str:
    """`text (log: logs/x.log)`, or `text (detail; log: logs/x.log)` after a parenthesis."""
    return f"{text[:-1]}; log: {log})" if text.endswith(")") else f"{text} (log: {log})"


def _why(conn: ConnectionState) -> str:
    return conn.get("last_end") or "its first attempt is under way"


def _fill_counters(row: Row, status: StatusFile, now: float) -> None:
    """What happened, from any status file of the worker (a stopped one's included)."""
    row.status_age_s = max(0.0, now - status.get("updated", 0.0))
    row.spool_backlog_bytes = status.get("spool_backlog_bytes")
    row.gaps = status.get("gaps")
    row.backfilled = status.get("backfilled")
    row.given_up = status.get("given_up")
    row.rejected_lines = status.get("rejected_lines")
    row.rejected_trades = status.get("rejected_trades")
    row.reconnects = status.get("reconnects")
    row.last_error = status.get("last_error") or ""


def _fill_live(row: Row, status: StatusFile, now: float) -> None:
    """How it is now: TRADES/S, LAG, LAST TRADE and the connections, from the running
    process's own file only."""
    row.trades_per_s = status.get("trades_per_s")
    row.lag_p50_ms = status.get("lag_p50_ms")
    row.lag_p99_ms = status.get("lag_p99_ms")
    row.connected = status.get("connected")
    row.last_trade_age_s = last_trade_age(status, now)
    connections = status.get("connections") or []
    for conn in connections:
        if not conn.get("connected") and conn.get("last_end"):
            # While it is down, why it is down says more than any older error; the cause first
            # (the column is narrow; the warning line below has the time).
            cause = conn.get("last_end", "").split("Z ", 1)[-1]
            row.last_error = cause if len(connections) == 1 else f"{conn.get('conn')}: {cause}"


def last_trade_age(status: StatusFile, now: float) -> Optional[float]:
    """LAST TRADE: the newest trade's age when the worker last wrote its status file, if that
    was within FRESH_S (it writes every second); from an older file, its age now.

    Counting from now would add the file's age (up to a second) to a pair trading 200/s.
    """
    file_age = max(0.0, now - status.get("updated", 0.0))
    at_write = status.get("last_trade_age_s")
    if at_write is not None and file_age <= FRESH_S:
        return max(0.0, at_write)
    last = status.get("last_trade_ms") or {}
    return max(0.0, now - max(last.values()) / 1000.0) if last else None


def collect(root: Path = PROJECT_ROOT, rpc: Any = None,
            now: Callable[[], float] = time.time) -> Dict[str, Any]:
    """Everything the table shows, as one JSON-able dict."""
    settings = RenderSettings.for_root(root)
    report: Dict[str, Any] = {"healthy": True, "problems": [], "supervisord": "running",
                              "host": None, "elsewhere": []}
    expected, elsewhere = _expected(settings, report)
    limit: Optional[WriteLimit] = None
    try:
        loaded = load_settings(load_env())
        run_dir, limit = loaded.run_dir, loaded.write.write_limit
    except ConfigError:
        run_dir = root / "run"
    infos: Optional[List[Dict[str, Any]]] = None
    try:
        rpc = rpc or connect(settings.socket_url)
        infos = rpc.supervisor.getAllProcessInfo()
    except RPC_ERRORS as exc:
        report["supervisord"] = unreachable(settings.socket_url, exc)
    by_name = {i["name"]: i for i in infos or []}
    names = list(expected) + sorted(n for n in by_name if n not in expected and n != RECONCILER)
    t = now()
    exits = read_exits(rpc, t) if infos is not None else {}
    if exits is None:
        report["restarts"] = ("not counted: supervisord's log cannot be read over its socket "
                              "(its logfile setting)")
    rows = []
    statuses: Dict[str, Optional[StatusFile]] = {}
    for name in names:
        symbols = expected.get(name) or []
        if infos is None:
            rows.append(Row(worker=name, state="UNKNOWN", healthy=False, symbols=symbols,
                            problems=["supervisord not reachable"]))
            continue
        info = by_name.get(name)
        statuses[name] = _read_status(run_dir, name)
        row = assess(name, symbols, info, statuses[name], t,
                     log=_log_path(name, info, settings),
                     history=_history(info, (exits or {}).get(name, []), rpc))
        rows.append(_placed(row, expected, elsewhere))
    if infos is not None:
        rec = by_name.get(RECONCILER)
        report["reconciler"] = rec["statename"] if rec else "MISSING"
        if report["reconciler"] != "RUNNING":
            report["problems"].append(f"the reconciler is {report['reconciler']}: edits of the "
                                      "symbols file are not applied, FATAL workers not revived")
    report["workers"] = [asdict(r) for r in rows]
    report["quota"] = asdict(host_quota(limit, statuses, rows, t)) if limit else None
    report["healthy"] = infos is not None and not report["problems"] and \
        all(r.healthy for r in rows)
    return report


def _expected(settings: RenderSettings,
              report: Dict[str, Any]) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """This host's workers ({name: symbols}) and those that run on other hosts only ({name:
    hosts}), from the symbols file; sets the report's host and elsewhere. A file with an error
    is a problem of the report, and the workers are those the reconciler last applied."""
    elsewhere: Dict[str, List[str]] = {}
    try:
        file = load_file(settings.symbols_file, create=False)
        report["host"] = host = this_host()
        expected = {s.name: list(s.symbols) for s in file.share(host)}
        elsewhere = {w.name: list(w.hosts) for w in file.elsewhere(host)}
        report["elsewhere"] = [{"worker": w.name, "hosts": list(w.hosts),
                                "symbols": list(w.symbols)} for w in file.elsewhere(host)]
        refused = config_error(settings)  # e.g. a symbol the exchange does not know
        if refused:
            raise ConfigError(refused)
    except ConfigError as exc:
        report["problems"].append(f"symbols file: {exc} (nothing changed: the running workers "
                                  "go on)")
        applied = parse_rendered(read_text(settings.include_path))
        expected = {n: list(s) for n, s in applied.items()}
    return expected, elsewhere


def _placed(row: Row, expected: Dict[str, List[str]], elsewhere: Dict[str, List[str]]) -> Row:
    """The row, with why a worker that should not run here still does."""
    if row.worker in elsewhere:
        row.warnings.append(f"not this host's share any more (it runs on "
                            f"{', '.join(elsewhere[row.worker])}): being stopped here")
    elif row.worker not in expected:
        row.warnings.append("not in the symbols file any more: being removed")
    return row


def _history(info: Optional[Dict[str, Any]], exits: List[Exit], rpc: Any) -> History:
    """The worker's recent exits, and why: the configuration error that stopped it, or its
    last crash's cause from its log (read only for a worker that exited)."""
    if info is None:
        return History()
    down = info["statename"] in DOWN
    config = (exit_config_error(info, rpc) or "") if down else ""
    cause = crash_cause(log_tail(rpc, info["name"], WORKER_TAIL_BYTES)) \
        if (exits or down) and not config else ""
    return History(exits, cause, config)


def _log_path(name: str, info: Optional[Dict[str, Any]],
              settings: RenderSettings) -> str:
    """The worker's log, as supervisord has it (stdout_logfile), relative to the root."""
    path = Path((info or {}).get("stdout_logfile") or settings.logfile(name))
    try:
        return str(path.relative_to(settings.root))
    except ValueError:
        return str(path)


def _read_status(run_dir: Path, name: str) -> Optional[StatusFile]:
    return read_status(run_dir / "status" / f"{name}.json")


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


def _lag(r: Dict[str, Any]) -> str:
    """`180/420`, or `-`: nothing stored in the worker's last LAG_WINDOW_S (or not running)."""
    if r["lag_p50_ms"] is None and r["lag_p99_ms"] is None:
        return "-"
    return f"{_num(r['lag_p50_ms'])}/{_num(r['lag_p99_ms'])}"


def _symbols(symbols: List[str]) -> str:
    return ",".join(symbols) if len(symbols) <= 2 else f"{symbols[0]},+{len(symbols) - 1}"


HEADER = ("WORKER", "HEALTH", "STATE", "UPTIME", "SYMBOLS", "LAST TRADE", "TRADES/S",
          "LAG p50/p99 ms", "SPOOL", "GAPS/FILLED", "REJECTED", "LAST ERROR")


def table(report: Dict[str, Any], width: Optional[int] = None) -> str:
    """The table, then a line per problem and warning (and per LAST ERROR cut in the table),
    wrapped to `width` (default: the terminal's, WIDTH when it is not one)."""
    width = width or shutil.get_terminal_size((WIDTH, 24)).columns
    rows, room = _rows(report["workers"], width)
    errors = [" ".join(r["last_error"].split()) for r in report["workers"]]
    out = rows + [_wrap(line, width) for line in _below(report["workers"], errors, room)]
    out += _quota_lines(report, width) + _footer(report, width)
    out.append("healthy" if report["healthy"] else "UNHEALTHY")
    return "\n".join(out)


def _cells(r: Dict[str, Any]) -> Tuple[str, ...]:
    """One worker's cells but LAST ERROR (left empty: its width is what remains)."""
    gaps = "-" if r["gaps"] is None else f"{r['gaps']}/{r['backfilled']}" + (
        f" ({r['given_up']} lost)" if r["given_up"] else "")
    last_trade = _age(r["last_trade_age_s"]) if r["last_trade_age_s"] is not None else "-"
    return (r["worker"], "ok" if r["healthy"] else "FAIL", r["state"], _age(r["uptime_s"]),
            _symbols(r["symbols"]), last_trade, _num(r["trades_per_s"], "{:.1f}"), _lag(r),
            _bytes(r["spool_backlog_bytes"]), gaps, _rejected(r), "")


def _rows(workers: List[Dict[str, Any]], width: int) -> Tuple[List[str], int]:
    """The aligned header and rows, and the room LAST ERROR had in them."""
    lines: List[Tuple[str, ...]] = [HEADER] + [_cells(r) for r in workers]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    room = max(LAST_ERROR_MIN, width - sum(widths[:-1]) - 2 * (len(widths) - 1))
    lines[1:] = [line[:-1] + (_short(" ".join(r["last_error"].split()), room),)
                 for line, r in zip(lines[1:], workers)]
    widths[-1] = max(len(line[-1]) for line in lines)
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines], room


def _below(workers: List[Dict[str, Any]], errors: List[str], room: int) -> List[str]:
    """Each worker's problems and warnings, and its last error whole where the table cut it."""
    below: List[str] = []
    for r, error in zip(workers, errors):
        said = [f"{r['worker']}: {p}" for p in r["problems"]] + \
            [f"{r['worker']}: warning: {w}" for w in r["warnings"]]
        if len(error) > room and not any(error in " ".join(s.split()) for s in said):
            said.append(f"{r['worker']}: last error: {error}")
        below += said
    return below


def _quota_lines(report: Dict[str, Any], width: int) -> List[str]:
    """The write quota's headroom and warnings, when INFLUXDB_WRITE_LIMIT is set."""
    if not report.get("quota"):
        return []
    quota = Quota(**report["quota"])
    return [_wrap(line, width) for line in
            [quota_line(quota)] + [f"warning: {w}" for w in quota.warnings]]


def _footer(report: Dict[str, Any], width: int) -> List[str]:
    """Other hosts' workers, supervisord and the reconciler, restarts, host-wide problems and
    the --stored lines."""
    out: List[str] = []
    if report.get("elsewhere"):
        others = ", ".join(f"{w['worker']} ({', '.join(w['hosts'])})"
                           for w in report["elsewhere"])
        out.append(f"on other hosts only (not this host's share, {report['host']}): {others}")
    if report["supervisord"] != "running":
        out.append(f"supervisord: {report['supervisord']}")
    elif "reconciler" in report:
        out.append(f"reconciler: {report['reconciler']}")
    if "restarts" in report:
        out.append(f"restarts: {report['restarts']}")
    out += [_wrap(f"problem: {p}", width) for p in report["problems"]]
    if "stored" in report:
        out += [_wrap(line, width) for line in stored_lines(report["stored"])]
    if "days" in report:
        out += [_wrap(line, width) for line in day_lines(report["days"])]
    return out


def _rejected(r: Dict[str, Any]) -> str:
    """Trade lines refused, plus other (health) lines after a `+`: `12`, `12+3`, `0+3`."""
    lines = r.get("rejected_lines")
    if lines is None:
        return "-"
    trades = r.get("rejected_trades")
    if trades is None:  # a status file of a worker from before rejected_trades existed
        return str(lines)
    return str(trades) if lines == trades else f"{trades}+{lines - trades}"


NO_DATABASE = "no database configured (INFLUXDB_URL is unset)"
DAY_CHECKS_D = 7  # scripts/status --stored shows the days verified in the last week


def _influx_query() -> Tuple[Any, Any]:
    """(settings, InfluxQuery) of .env.local, for --stored; the query None without a database."""
    from workers.storage.influx_query import (
        InfluxQuery,  # only for --stored: the common case reads no database
    )

    settings = load_settings(load_env())
    return settings, None if settings.influx is None else InfluxQuery(settings.influx)


def _cannot_tell(exc: Exception) -> Dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}  # whole: its fix is at the end


def stored(symbols: List[str], now: Optional[float] = None,
           source: Optional[Tuple[Any, Any]] = None) -> Dict[str, Any]:
    """The last trade stored per pair (any host), read from InfluxDB; never raises. `source`:
    the (settings, query) of _influx_query when the caller opened it already."""
    try:
        settings, query = source or _influx_query()
        if query is None:
            return {"error": NO_DATABASE}
        found = query.last_trades(symbols or None, settings.resume_lookback_h, 10.0)
    except Exception as exc:  # a status report must come out whatever the database does
        return _cannot_tell(exc)
    now = time.time() if now is None else now
    return {"lookback_h": settings.resume_lookback_h,
            "symbols": {s: {"last_id": found[s][0],
                            "age_s": max(0.0, now - found[s][1] / 1e9)} if s in found else None
                        for s in symbols}}


def day_checks(symbols: List[str], now: Optional[float] = None,
               source: Optional[Tuple[Any, Any]] = None) -> Dict[str, Any]:
    """The latest verify of each day checked in the last DAY_CHECKS_D days, per pair (the
    capture_days points scripts/verify writes); never raises. `source` as for stored()."""
    from workers.storage.capture_days import VERIFIED, latest_checks

    now_ns = int((time.time() if now is None else now) * 1e9)
    try:
        _, query = source or _influx_query()
        if query is None:
            return {"error": NO_DATABASE}
        found = latest_checks(query, now_ns - DAY_CHECKS_D * 86_400 * 10**9, now_ns + 1,
                              symbols or None, VERIFIED)
    except Exception as exc:  # as stored(): the report comes out whatever the database does
        return _cannot_tell(exc)
    days: Dict[str, List[Dict[str, Any]]] = {s: [] for s in symbols}
    for (symbol, day), c in sorted(found.items()):
        days.setdefault(symbol, []).append(
            {"day": day.isoformat(), "verified": c.verified, "trades": c.trades,
             "missing": c.missing, "extra": c.extra, "differing": c.differing})
    return {"lookback_d": DAY_CHECKS_D, "symbols": days}


def day_lines(report: Dict[str, Any]) -> List[str]:
    """`days: BTCUSDT verified 2025-03-01..2025-03-04, 2025-03-06; 2025-03-05 3 missing, ...`"""
    if "error" in report:
        return [f"days: cannot tell: {report['error']}"]
    out = []
    for symbol, days in report["symbols"].items():
        if not days:
            out.append(f"days: {symbol} none verified in the last {report['lookback_d']} d "
                       "(scripts/verify)")
            continue
        good = _day_runs([date.fromisoformat(d["day"]) for d in days if d["verified"]])
        bad = [f"{d['day']} " + (f"{d['missing']:,} missing, {d['extra']:,} extra, "
                                 f"{d['differing']:,} differing"
                                 if d["missing"] or d["extra"] or d["differing"]
                                 else "archive file unreadable")
               for d in days if not d["verified"]]
        parts = ([f"verified {good}"] if good else []) + bad
        out.append(f"days: {symbol} " + "; ".join(parts))
    return out


def _day_runs(days: List[date]) -> str:
    """Consecutive days as `first..last`, runs joined by `, `."""
    runs: List[List[date]] = []
    for day in sorted(days):
        if runs and (day - runs[-1][-1]).days == 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(r[0].isoformat() if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def stored_lines(report: Dict[str, Any]) -> List[str]:
    if "error" in report:
        return [f"stored: cannot tell: {report['error']}"]
    return [f"stored: {s} last id {v['last_id']} ({_age(v['age_s'])} ago)" if v else
            f"stored: {s} nothing in the last {report['lookback_h']:g} h"
            for s, v in report["symbols"].items()]


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _wrap(line: str, width: int) -> str:
    """One line below the table, wrapped to `width` (continuations indented), never cut."""
    return "\n".join(textwrap.wrap(line, width, subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False)) or line


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/status", description="Health of every worker (supervisord state and "
        "the workers' status files).",
        epilog=exit_codes_help(ok="every worker healthy",
                               problem="a worker unhealthy, the reconciler down or the symbols "
                                       "file wrong",
                               config="an argument", runtime="supervisord not answering"))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--stored", action="store_true",
                        help="also ask InfluxDB (the settings of .env.local) for the last trade "
                             "stored per pair, by every host together, over RESUME_LOOKBACK_H, "
                             "and the days scripts/verify checked in the last "
                             f"{DAY_CHECKS_D} days")
    args = parser.parse_args(argv)
    report = collect()
    if args.stored:
        symbols = sorted({s for r in report["workers"] for s in r["symbols"]})
        try:  # one settings read and one connection for both reports
            source: Optional[Tuple[Any, Any]] = _influx_query()
        except Exception:  # each report says it on its line, opening by itself
            source = None
        try:
            report["stored"] = stored(symbols, source=source)
            report["days"] = day_checks(symbols, source=source)
        finally:
            if source is not None and source[1] is not None:
                source[1].close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(table(report))
    if not report["supervisord"] == "running":
        return EXIT_NO_SUPERVISORD
    return EXIT_HEALTHY if report["healthy"] else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
