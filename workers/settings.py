"""Settings from the environment and `.env.local` (the process environment wins).

Every setting is listed, with its default and a one-line comment, in `.env.example`, and by
name in SETTINGS below (a spec keeps the two the same).
A missing or invalid value raises ConfigError with one line that names the variable and the fix.

A line of `.env.local` that cannot be read, or a key that is no setting (`LOG_LEVL`), is a
warning naming the file, the line and the fix ("did you mean LOG_LEVEL?"), never its value (it
could be a token). A warning, not a configuration error: the worker must not stop capturing
(and supervisord must not give up on it) for a leftover or harmless line, and the line that
matters is named by every command reading the settings (the worker's log at start,
scripts/status, gap-audit, plot, load-files), each warning once per process.

The only module that reads the environment (a spec greps workers/ for it): the others take a
Settings, or call one of the functions at the end for the few variables that only the process
environment carries (supervisord's, a library's, the crash specs' test seam).
"""
from __future__ import annotations

import difflib
import io
import logging
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional, Set, Tuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from dotenv.parser import Binding, parse_stream

from workers.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = PROJECT_ROOT / ".env.local"

T = TypeVar("T")
log = logging.getLogger(__name__)

# ---- every setting: the one list ---------------------------------------------------------------
# Name -> what it is. The keys a `.env.local` may hold: any other key there gets a warning.
SETTINGS: Dict[str, str] = {
    "INFLUXDB_URL": "base URL of the InfluxDB written to (empty: line-protocol files)",
    "INFLUXDB_TOKEN": "token with write access to the bucket",
    "INFLUXDB_ORG": "organisation name",
    "INFLUXDB_BUCKET": "bucket written to",
    "INFLUXDB_MEASUREMENT": "measurement of the trades",
    "INFLUXDB_HEALTH_MEASUREMENT": "measurement of the workers' self-metrics",
    "INFLUXDB_TIMEOUT_S": "seconds one write request may take",
    "INFLUXDB_GZIP": "gzip request bodies",
    "INFLUXDB_WRITE_LIMIT": "the server's write quota, SIZE/WINDOW (e.g. 5MB/5m)",
    "BINANCE_WS_URL": "stream host",
    "BINANCE_REST_URL": "REST host",
    "BINANCE_ARCHIVE_URL": "public trade archive: past days and their checks",
    "WS_CONNECT_LIMIT": "connection attempts N/S of all workers of the host",
    "CAPTURE_HOST": "this host's name",
    "WRITE_BATCH_SIZE": "lines per write request at most",
    "WRITE_FLUSH_INTERVAL_MS": "a batch is sent at the latest this long after its first trade",
    "WRITE_RETRY_INITIAL_MS": "first retry delay of a failed write",
    "WRITE_RETRY_MAX_DELAY_S": "longest wait between two retries",
    "WRITE_RETRY_BUDGET_S": "seconds a batch is retried before it goes to the spool",
    "WRITE_QUEUE_BATCHES": "full batches held in memory",
    "STREAM_DEAD_AFTER_S": "no frame for this long: reconnect",
    "STREAM_STALL_AFTER_S": "no trade for this long: ask REST",
    "STREAM_MAX_AGE_S": "rotate the connection at this age",
    "BACKFILL_MAX_TRADES": "largest gap backfilled",
    "RESUME_LOOKBACK_H": "hours of InfluxDB searched for a pair without a checkpoint",
    "RECONCILER_REVIVE_AFTER_S": "seconds a FATAL worker stays down",
    "DATA_DIR": "checkpoints, spool and line-protocol files",
    "RUN_DIR": "status files",
    "FILE_ROTATE_S": "no-database mode: a new file this often",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "SUMMARY_INTERVAL_S": "seconds between two summary lines",
}
# Read from the process environment only (see the functions at the end): in .env.local they
# would do nothing.
PROCESS_ONLY: Tuple[str, ...] = ("SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME",
                                 "WEBSOCKET_CLIENT_CA_BUNDLE", "WORKER_INJECT_FAULT")


@dataclass(frozen=True)
class InfluxSettings:
    url: str
    token: str
    org: str
    bucket: str
    measurement: str
    health_measurement: str
    timeout_s: float
    gzip: bool


@dataclass(frozen=True)
class WriteLimit:
    """`limit_bytes` of uncompressed line protocol per fixed window of `window_s` seconds,
    windows aligned to the epoch (Cloud Serverless's free plan: 5 MB per 5 minutes)."""
    limit_bytes: int
    window_s: float


QUOTA_WINDOW_S = 300.0  # Cloud Serverless's fixed window: the writer counts per this without one
SIZE_UNITS = {"kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}  # decimal, as the Cloud plans say
WINDOW_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_LIMIT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]+)\s*/\s*(\d+(?:\.\d+)?)\s*([a-z]+)$")


def _write_limit(raw: str) -> WriteLimit:
    """`5MB/5m` -> WriteLimit(5_000_000, 300.0): kB/MB/GB (decimal) per s/m/h."""
    match = _LIMIT_RE.match(raw.lower())
    if not match or match.group(2) not in SIZE_UNITS or match.group(4) not in WINDOW_UNITS:
        raise ValueError(raw)
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
    window = float(match.group(3)) * WINDOW_UNITS[match.group(4)]
    if size < 1 or not window > 0:
        raise ValueError(raw)
    return WriteLimit(size, window)


@dataclass(frozen=True)
class WriteSettings:
    batch_size: int  # lines per request at most
    flush_interval_s: float  # a batch is sent at the latest this long after its first line
    retry_initial_s: float
    retry_max_delay_s: float
    retry_budget_s: float  # after this long failing, a batch goes to the disk spool
    queue_batches: int  # full batches held in RAM before they go to the spool
    # INFLUXDB_WRITE_LIMIT: the server's write quota (None: none); the writer counts its bytes
    # per window of this length (5 minutes without one), scripts/status warns before it is used
    write_limit: Optional[WriteLimit] = None


@dataclass(frozen=True)
class Settings:
    influx: Optional[InfluxSettings]  # None: no database, write line-protocol files
    file_database: str  # the database named in the header of those files
    measurement: str  # of the trades: InfluxDB's (influx.measurement) and the files' readers'
    ws_url: str  # base URL, e.g. wss://stream.binance.com:9443
    rest_url: str
    archive_url: str  # Binance's public archive of daily and monthly trade files
    write: WriteSettings
    data_dir: Path
    run_dir: Path
    file_rotate_s: float
    log_level: str
    summary_interval_s: float
    dead_after_s: float  # no frame at all (not even a ping) for this long: reconnect
    stall_after_s: float  # no trade for this long: ask REST whether the stream is stale
    max_conn_age_s: float  # rotate the connection before Binance's 24 h cut
    backfill_max_trades: int  # give up (and log the ids) on a gap larger than this
    connect_limit: int  # WebSocket connection attempts of all workers of the host ...
    connect_window_s: float  # ... in any span of this many seconds (WS_CONNECT_LIMIT=N/S)
    capture_host: str  # this host's name: tag `host` of health points, shards of symbols.yaml
    # A symbol with no local checkpoint resumes from the highest trade id InfluxDB holds for
    # it within this many hours (a longer span would be a backfill over BACKFILL_MAX_TRADES
    # for a busy pair anyway, and costs the query more points to scan).
    resume_lookback_h: float


def load_env(env_file: Optional[Path] = None) -> dict[str, str]:
    """The process environment over the values of `env_file` (default `.env.local`); a line
    of the file that cannot be read, or a key that is no setting, is a warning (once)."""
    path = env_file or DEFAULT_ENV_FILE
    values: dict[str, str] = {}
    if path.exists():
        _warn_once(env_file_problems(path))
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    elif env_file is not None:
        raise ConfigError(f"{path}: env file not found; create it from .env.example or drop "
                          "--env-file")
    values.update(os.environ)
    return values


# ---- .env.local's mistakes ---------------------------------------------------------------------
class _DropVagueWarning(logging.Filter):
    """python-dotenv's "could not parse statement starting at line N" names neither the file
    nor the fix: env_file_problems says both instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "could not parse statement" not in str(record.msg)


logging.getLogger("dotenv.main").addFilter(_DropVagueWarning())
_warned: Set[str] = set()
_SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,47}$")
_KEY_PART = re.compile(r"\s*(?:export\s+)?([^=\s#:'\"]+)")


def _warn_once(messages: Iterator[str]) -> None:
    for message in messages:
        if message not in _warned:
            _warned.add(message)
            log.warning("%s", message)


def env_file_problems(path: Path) -> Iterator[str]:
    """`PATH:LINE: what is wrong and the fix`, for each line of an env file that cannot be
    read or sets no setting. Only a key is ever shown, and only one that looks like a name."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return  # dotenv_values says it, or the values stay unset
    for binding in parse_stream(io.StringIO(text)):
        where = f"{path}:{binding.original.line}"
        if binding.error:
            yield f"{where}: {_unreadable(binding)}"
        elif binding.key is not None and binding.key not in SETTINGS:
            yield f"{where}: {_unknown(binding.key, path.name)}"
        elif binding.key is not None and "\n" in binding.original.string.rstrip("\r\n"):
            # valid for dotenv (a multi-line value), but no setting has one: a quote left open
            last = binding.original.line + binding.original.string.rstrip("\r\n").count("\n")
            yield (f"{where}: the quoted value of {binding.key} runs over lines "
                   f"{binding.original.line}-{last}, so the lines inside are no settings: "
                   f"close the quote on line {binding.original.line}")


def _shown(key: str, like_a_setting: bool = False) -> str:
    """The key as printed: only a name-like one (a pasted token could stand where a key does)."""
    if like_a_setting or _SETTING_NAME.match(key) or key.upper() in SETTINGS:
        return key
    return f"a key of {len(key)} characters (not shown: it could be a secret)"


def _unknown(key: str, file_name: str) -> str:
    if key in PROCESS_ONLY:
        return (f"{key} is read from the process environment only, never from {file_name}, so "
                "this line is ignored: remove it (or set the variable in the environment)")
    close = difflib.get_close_matches(key.upper(), SETTINGS, n=1, cutoff=0.7)
    hint = f"did you mean {close[0]}?" if close else "every setting is in .env.example"
    return f"{_shown(key, bool(close))} is not a setting, so this line is ignored: {hint}"


def _unreadable(binding: Binding) -> str:
    """Why python-dotenv could not read a statement, and the fix; the key only, never a value."""
    start = binding.original.line
    text = binding.original.string.rstrip("\r\n")
    first = text.split("\n")[0].rstrip("\r")
    match = _KEY_PART.match(first)
    what = f"the line of {_shown(match.group(1))}" if match else "this line"
    if "\n" in text:  # a quote opened on the first line swallowed the next ones
        return (f"cannot read {what}: a quote opened there closes only further down, so lines "
                f"{start}-{start + text.count(chr(10))} are ignored: close the quote on line "
                f"{start}")
    rest = first[match.end():].lstrip() if match else ""
    value = rest[1:].lstrip()
    if not match:
        fix = "write KEY=value (a key before the '=')"
    elif not rest.startswith("="):
        key = match.group(1) if _SETTING_NAME.match(match.group(1)) else "KEY"
        fix = f"write {key}=value, with '='"
    elif value[:1] in ("'", '"') and value.count(value[0]) < 2:
        fix = "close the quote (a value with spaces or '#' goes in quotes: KEY=\"a b\")"
    else:
        fix = "put the whole value inside the quotes: nothing may follow after the closing quote"
    return f"cannot read {what} (its value not shown), so it is ignored: {fix}"


def _get(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], hint: str) -> T:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}={raw!r} is invalid: expected {hint}") from None


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = kind(raw)
        if not value > 0:  # type: ignore[operator]
            raise ValueError(raw)
        return value
    return parse


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def stream_base_url(raw: str) -> str:
    """The base of a Binance stream URL; the original script's full combined URL works too.

    `wss://stream.binance.com:9443/stream?streams=btcusdt@trade` -> `wss://stream.binance.com:9443`
    """
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(raw)
    segments = parts.path.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if segments[i] in ("stream", "ws"):
            segments = segments[:i]
            break
    path = "/".join(segments)
    return urlunsplit((parts.scheme, parts.netloc, path.rstrip("/"), "", ""))


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(raw)
    return raw.strip().rstrip("/")


def _identifier(raw: str) -> str:
    if raw.startswith(("_", "#")) or any(c in raw for c in "\n\r\t\\"):
        raise ValueError(raw)
    return raw


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build and check every setting; raises ConfigError naming the first bad one."""
    measurement = _get(env, "INFLUXDB_MEASUREMENT", "price_ticks", _identifier,
                       "a measurement name not starting with _ or #")
    influx: Optional[InfluxSettings] = None
    url = env.get("INFLUXDB_URL", "").strip()
    if url:
        url = _get(env, "INFLUXDB_URL", "", _http_url, "an http:// or https:// URL")
        missing = [n for n in ("INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET")
                   if not env.get(n, "").strip()]
        if missing:
            raise ConfigError(f"INFLUXDB_URL is set but {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not: set "
                              f"{'it' if len(missing) == 1 else 'them'} in .env.local "
                              "(see .env.example), or unset INFLUXDB_URL to write files")
        influx = InfluxSettings(
            url=url,
            token=env["INFLUXDB_TOKEN"].strip(),
            org=env["INFLUXDB_ORG"].strip(),
            bucket=env["INFLUXDB_BUCKET"].strip(),
            measurement=measurement,
            health_measurement=_get(env, "INFLUXDB_HEALTH_MEASUREMENT", "streamer_health",
                                    _identifier, "a measurement name"),
            timeout_s=_get(env, "INFLUXDB_TIMEOUT_S", 10.0, _positive(float), "seconds > 0"),
            gzip=_get(env, "INFLUXDB_GZIP", False, _bool, "true or false"),
        )
    write = WriteSettings(
        batch_size=_get(env, "WRITE_BATCH_SIZE", 5000, _positive(int), "an integer > 0"),
        flush_interval_s=_get(env, "WRITE_FLUSH_INTERVAL_MS", 1000, _positive(int),
                              "milliseconds > 0") / 1000.0,
        retry_initial_s=_get(env, "WRITE_RETRY_INITIAL_MS", 500, _positive(int),
                             "milliseconds > 0") / 1000.0,
        retry_max_delay_s=_get(env, "WRITE_RETRY_MAX_DELAY_S", 30.0, _positive(float),
                               "seconds > 0"),
        retry_budget_s=_get(env, "WRITE_RETRY_BUDGET_S", 60.0, _positive(float), "seconds > 0"),
        queue_batches=_get(env, "WRITE_QUEUE_BATCHES", 20, _positive(int), "an integer > 0"),
        write_limit=_get(env, "INFLUXDB_WRITE_LIMIT", None, _write_limit,
                         "SIZE/WINDOW in kB, MB or GB per s, m or h, e.g. 5MB/5m (InfluxDB "
                         "Cloud's free plan), or nothing for no limit"),
    )
    if write.retry_max_delay_s < write.retry_initial_s:
        raise ConfigError(f"WRITE_RETRY_MAX_DELAY_S={write.retry_max_delay_s:g} is below "
                          f"WRITE_RETRY_INITIAL_MS={write.retry_initial_s * 1000:g} ms: raise "
                          "the first or lower the second")
    data_dir = Path(_get(env, "DATA_DIR", str(PROJECT_ROOT / "data"), str, "a directory"))
    run_dir = Path(_get(env, "RUN_DIR", str(PROJECT_ROOT / "run"), str, "a directory"))
    # 200/300: two thirds of Binance's 300 attempts per 5 min per IP, the rest left to other
    # tools on the IP and to a process that does not take from the budget.
    connect_limit, connect_window_s = _get(
        env, "WS_CONNECT_LIMIT", (200, 300.0), _rate,
        "N/S, N connection attempts (>= 1) per S seconds (> 0) for all workers of the host, "
        "e.g. 200/300 (Binance allows 300 per 5 minutes per IP)")
    return Settings(
        influx=influx,
        file_database=env.get("INFLUXDB_BUCKET", "").strip() or "ticks",
        measurement=measurement,
        ws_url=_get(env, "BINANCE_WS_URL", "wss://stream.binance.com:9443", stream_base_url,
                    "a ws:// or wss:// URL such as wss://stream.binance.com:9443"),
        rest_url=_get(env, "BINANCE_REST_URL", "https://api.binance.com", _http_url,
                      "an http:// or https:// URL such as https://api.binance.com"),
        archive_url=_get(env, "BINANCE_ARCHIVE_URL", "https://data.binance.vision", _http_url,
                         "an http:// or https:// URL such as https://data.binance.vision"),
        write=write,
        data_dir=data_dir if data_dir.is_absolute() else PROJECT_ROOT / data_dir,
        run_dir=run_dir if run_dir.is_absolute() else PROJECT_ROOT / run_dir,
        file_rotate_s=_get(env, "FILE_ROTATE_S", 3600.0, _positive(float), "seconds > 0"),
        log_level=_get(env, "LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
        summary_interval_s=_get(env, "SUMMARY_INTERVAL_S", 60.0, _positive(float), "seconds > 0"),
        dead_after_s=_get(env, "STREAM_DEAD_AFTER_S", 70.0, _positive(float), "seconds > 0"),
        stall_after_s=_get(env, "STREAM_STALL_AFTER_S", 60.0, _positive(float), "seconds > 0"),
        max_conn_age_s=_get(env, "STREAM_MAX_AGE_S", 23 * 3600.0, _positive(float), "seconds > 0"),
        backfill_max_trades=_get(env, "BACKFILL_MAX_TRADES", 5_000_000, _positive(int),
                                 "an integer > 0"),
        connect_limit=connect_limit,
        connect_window_s=connect_window_s,
        capture_host=_get(env, "CAPTURE_HOST", default_host(), _host_name,
                          "letters, digits, '.', '-' or '_' (at most 63), e.g. capture-a"),
        resume_lookback_h=_get(env, "RESUME_LOOKBACK_H", 24.0, _positive(float),
                               "hours > 0, e.g. 24"),
    )


def default_host() -> str:
    """The machine's short host name, as CAPTURE_HOST defaults to (`localhost` if unusable)."""
    name = socket.gethostname().split(".")[0]
    return name if HOST_RE.match(name) else "localhost"


def _host_name(raw: str) -> str:
    if not HOST_RE.match(raw):
        raise ValueError(raw)
    return raw


HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _rate(raw: str) -> tuple[int, float]:
    """`N/S`: N (an integer >= 1) per S seconds (> 0)."""
    count, sep, seconds = raw.partition("/")
    if not sep:
        raise ValueError(raw)
    n, s = int(count.strip()), float(seconds.strip())
    if n < 1 or not (s > 0 and math.isfinite(s)):
        raise ValueError(raw)
    return n, s


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(raw)
    return level


REVIVE_AFTER_S = 30.0


def revive_after_s(env: Mapping[str, str]) -> float:
    """RECONCILER_REVIVE_AFTER_S: how long a FATAL worker stays down before the reconciler
    starts it again (not one that failed on a configuration error)."""
    return _get(env, "RECONCILER_REVIVE_AFTER_S", REVIVE_AFTER_S, _positive(float),
                "seconds > 0, e.g. 30")


# ---- the process environment only --------------------------------------------------------------
# Never from .env.local: supervisord sets these for its children, or a library reads them from
# the environment itself (a value only in .env.local would say one thing and do another).

def supervisor_server_url() -> Optional[str]:
    """SUPERVISOR_SERVER_URL: supervisord sets it for its children, so the reconciler talks to
    the supervisord that started it. None outside supervisord."""
    return os.environ.get("SUPERVISOR_SERVER_URL") or None


def supervisor_process_name(default: str) -> str:
    """SUPERVISOR_PROCESS_NAME: the program name supervisord runs this process under."""
    return os.environ.get("SUPERVISOR_PROCESS_NAME") or default


def websocket_ca_bundle_set() -> bool:
    """Whether websocket-client's own WEBSOCKET_CLIENT_CA_BUNDLE is set: the library reads it at
    each connect, and a bundle the user chose keeps its meaning (exchange/connection.py)."""
    return bool(os.environ.get("WEBSOCKET_CLIENT_CA_BUNDLE"))


def injected_fault() -> str:
    """WORKER_INJECT_FAULT=<thread>: the crash specs' test seam (capture/worker.py inject_fault
    names the threads; an unknown one is logged and ignored). Never set in production, hence
    not in .env.example, and read from the process environment only: no .env.local arms it."""
    return os.environ.get("WORKER_INJECT_FAULT", "").strip()
