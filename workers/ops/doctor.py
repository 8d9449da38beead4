"""`scripts/doctor`: one command to check a set-up, once `.env.local` is filled in.

    CHECK      RESULT  DETAIL
    reachable  ok      http://influx:8086 answered /ping (plain http: no TLS)
    product    ok      InfluxDB OSS 2.7.12
    ...

One row per check, each `ok`, `warn`, `FAIL` or `skip` with a one-line detail; every FAIL
(and warn) has its fix below the table. The checks, in order (influxdb-servers.md says what
each server does):
  reachable  /ping answers at all; over https the certificate and host name are verified
             (the storage room's one HTTP stack: storage/influx_http.py);
  product    which server and version: /ping's X-Influxdb-Version/-Build headers (1.x, 2.x),
             3.x's /ping JSON, /health, or the host name of InfluxDB Cloud (Serverless
             answers neither /ping nor /health);
  write      the token may write to the bucket: an EMPTY write (see write_probe);
  read       the token may read: the read client's own bounded query (the last hour);
  dbrp       InfluxQL finds the bucket: Cloud Serverless needs a DBRP mapping (the fix is
             the read client's `influx v1 dbrp create ...`, with the bucket id when known);
  retention  the bucket's retention against RESUME_LOOKBACK_H, where the server tells it
             (2.x/Cloud: /api/v2/buckets retentionRules; 1.x: SHOW RETENTION POLICIES);
  schema     the field types already in the measurement against ours (storage/lineproto.py):
             another tool's `price_ticks` with price as integer refuses every line on 3.x;
  quota      trades/s the plan's write quota allows for this host's pairs (INFLUXDB_WRITE_LIMIT).

Exit codes (workers/errors.py): 0 nothing FAILed (warnings and skips included); 1 a check
FAILed (a person must fix it; an untrusted TLS certificate is one); 2 configuration (no
INFLUXDB_URL, a bad setting); 3 runtime: InfluxDB did not answer at all (down, or a wrong
host or port: try again later), the other rows then skipped.

`--first-start` is what scripts/run calls: once per database set-up (a stamp under RUN_DIR
names the URL, bucket and measurement checked), nothing at all without INFLUXDB_URL. Neither
a FAIL nor InfluxDB not answering stops scripts/run: the table and one line saying so are
printed, the service starts, and the check runs again at the next start. Stopping would lose
the live trades of every minute until a person acts (the exchange's REST no longer serves old
ids), while a running worker keeps them: spooled while writes are refused, set aside in
rejected.lp with the reason when a line is refused, and resumed from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlencode, urlsplit

import urllib3

from workers.common.atomic import write_atomic
from workers.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    ConfigError,
    NoMapping,
    SinkError,
    exit_codes_help,
)
from workers.settings import InfluxSettings, Settings, load_env, load_settings
from workers.storage.influx_query import NOT_FOUND, InfluxQuery
from workers.storage.lineproto import PRECISION, LineRenderer
from workers.storage.retention import buckets_retention_s, policy_retention_s
from workers.storage.sink import classify_status, overloaded, server_message, shown_body
from workers.symbols import load_file, this_host
from workers.trade import Trade

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
PROBE_TIMEOUT_S = 10.0
STAMP_NAME = "doctor.ok"
# influxdb-servers.md, "Who runs what": the regions of InfluxDB Cloud that are Serverless
# (every other cloud2 region is the 2.x TSM Cloud).
SERVERLESS_REGIONS = ("us-east-1-1", "eu-central-1-1")
CLOUD_HOST = ".cloud2.influxdata.com"
# influxdb-servers.md, Writes: "BTCUSDT alone averages ~35 trades/s and bursts far above it".
BUSY_PAIR_TRADES_S = 35.0
# A trade as Binance sends BTCUSDT's: the size of our line for it is what a quota counts.
TYPICAL_TRADE = Trade(symbol="BTCUSDT", trade_id=3_123_456_789, price="60123.45000000",
                      qty="0.00123000", time_ms=1_700_000_000_123, buyer_maker=True,
                      time_us=1_700_000_000_123_456)


@dataclass(frozen=True)
class Check:
    name: str
    result: str  # OK, WARN, FAIL or SKIP
    detail: str
    fix: str = ""
    runtime: bool = False  # a FAIL that trying again later may clear (no answer at all)


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers (names lower-cased) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Product:
    kind: str  # "1.x", "2.x", "3.x", "cloud-serverless", "cloud-tsm", "unknown"
    name: str


@dataclass(frozen=True)
class NoAnswer:
    """No HTTP answer at all; `tls` when the TLS handshake (the certificate) failed. A value,
    not an error class: those live in workers/errors.py only."""

    detail: str
    tls: bool

    def __str__(self) -> str:
        return self.detail


# ---- judgements: each check's verdict on the server's answers (pure, specified in units) ----

def judge_reach(url: str, error: Optional[NoAnswer]) -> Check:
    https = url.lower().startswith("https:")
    if error is None:
        how = ("TLS verified: certificate and host name" if https else "plain http: no TLS")
        return Check("reachable", OK, f"{url} answered /ping ({how})")
    if error.tls:
        return Check("reachable", FAIL, f"{url}: TLS not verified: {error}",
                     "the server's certificate is not trusted by this machine: install its CA "
                     "in the system's store (update-ca-certificates), or fix INFLUXDB_URL's "
                     "host name to the one the certificate names")
    return Check("reachable", FAIL, f"{url} did not answer: {error}",
                 "is InfluxDB running, and are INFLUXDB_URL's host and port right (8086 for "
                 "1.x/2.x, 8181 for 3 Core)? Try again once it answers", runtime=True)


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2])


def judge_product(url: str, ping: Answer, health: Optional[Answer]) -> Tuple[Product, Check]:
    """Which server answers: 1.x and 2.x name themselves in /ping's headers, 3.x in its /ping
    JSON too (with a token), InfluxDB Cloud by its host name (influxdb-servers.md)."""
    version = ping.headers.get("x-influxdb-version", "")
    build = ping.headers.get("x-influxdb-build", "")
    doc = ping.json() if ping.status == 200 else None
    if not version and isinstance(doc, dict) and doc.get("version"):
        version = str(doc["version"])
    health_doc = health.json() if health is not None and health.status == 200 else None
    if not version and isinstance(health_doc, dict) and health_doc.get("version"):
        version = str(health_doc["version"])
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(CLOUD_HOST):
        region = host.split(".")[0]  # us-east-1-1.aws.cloud2.influxdata.com
        if region in SERVERLESS_REGIONS:
            return (Product("cloud-serverless", "InfluxDB Cloud Serverless"),
                    Check("product", OK, f"InfluxDB Cloud Serverless ({region}: InfluxDB 3 "
                                         "engine, InfluxQL reads need a DBRP mapping)"))
        return (Product("cloud-tsm", "InfluxDB Cloud (TSM)"),
                Check("product", OK, f"InfluxDB Cloud, TSM ({region}: InfluxDB 2 engine)"))
    numbers = _version_tuple(version)
    if build.lower() in ("core", "enterprise") or (numbers and numbers[0] == 3):
        name = f"InfluxDB 3 {build or 'Core'} {version}".strip()
        return Product("3.x", name), Check("product", OK, name)
    if numbers and numbers[0] == 2:
        name = f"InfluxDB {build or 'OSS'} {version}"
        return Product("2.x", name), Check("product", OK, name)
    if numbers and numbers[0] == 1:
        name = f"InfluxDB {build or 'OSS'} {version}"
        if numbers < (1, 8):
            return Product("1.x", name), Check(
                "product", FAIL, f"{name}: no /api/v2/write before 1.8",
                "upgrade InfluxDB to 1.8 or later (this service writes with the v2 API)")
        return Product("1.x", name), Check("product", OK, name)
    if ping.status == 401:
        return Product("3.x", "InfluxDB 3"), Check(
            "product", WARN, "/ping refused the token (401): an InfluxDB 3 asks one there",
            "check INFLUXDB_TOKEN in .env.local (the write check below says more)")
    said = f"/ping answered {ping.status}" + (
        f", /health {health.status}" if health is not None else "")
    return Product("unknown", "unknown"), Check(
        "product", WARN, f"unknown: {said} with no version (InfluxDB Cloud Serverless names "
                         "none; a proxy may hide it)",
        "nothing to do if this is InfluxDB Cloud Serverless behind another host name; else "
        "check that INFLUXDB_URL is the InfluxDB itself")


def judge_write(answer: Answer, s: InfluxSettings) -> Check:
    """The verdict on write_probe's empty write."""
    words = shown_body(answer.text)
    if 200 <= answer.status < 300:
        return Check("write", OK, f"the token may write to bucket {s.bucket!r} (probed with an "
                                  "empty write: nothing stored)")
    if answer.status == 400 and not overloaded(answer.text):
        # 2.x answers an empty write `writing requires points`, 3.x and Cloud alike: only
        # after the token, the bucket and the permission to write there were accepted.
        return Check("write", OK, f"the token may write to bucket {s.bucket!r} (an empty write "
                                  f"refused as empty: {server_message(answer.text)[:80]})")
    error = classify_status(answer.status, answer.text, None, s)
    if answer.status in (429, 503) or answer.status >= 500 or overloaded(answer.text):
        return Check("write", WARN, f"InfluxDB is busy ({answer.status}: {words[:80]})",
                     "try again later; the workers wait and keep trades on disk meanwhile")
    return Check("write", FAIL, f"the write was refused ({answer.status}: {words[:80]})",
                 str(error))


def judge_read(error: Optional[SinkError], product: Product, s: InfluxSettings,
               symbols: int = 0) -> Tuple[Check, Check]:
    """(read, dbrp) from the read client's bounded query: its error, or None and the number of
    symbols it found stored in the last hour."""
    db = s.bucket.partition("/")[0]
    if error is None:
        read = Check("read", OK, f"the token may read: InfluxQL over the last hour found "
                                 f"{symbols} symbol(s) in {s.measurement!r}")
        if product.kind == "3.x":
            return read, Check("dbrp", OK, f"3.x reads database {db!r} by name: no mapping "
                                           "needed")
        if product.kind == "1.x":
            return read, Check("dbrp", OK, f"database {db!r} exists (1.x: no mapping needed)")
        return read, Check("dbrp", OK, f"InfluxQL finds database {db!r} (a DBRP mapping, or "
                                       "2.x's own one per bucket)")
    if isinstance(error, NoMapping):
        skipped = Check("read", SKIP, "InfluxQL finds no database (see dbrp)")
        if product.kind == "1.x":
            return skipped, Check("dbrp", FAIL, f"database {db!r} does not exist",
                                  f"create it: influx -execute 'CREATE DATABASE \"{db}\"'")
        # NoMapping's message: "InfluxDB query error: database not found: <db>: <the fix>"
        fix = str(error).partition(f"{NOT_FOUND}: {db}: ")[2] or str(error)
        return skipped, Check("dbrp", FAIL, f"no DBRP mapping: database {db!r} not found by "
                                            "InfluxQL", fix)
    if error.status == 404 and product.kind == "3.x":
        return (Check("read", WARN, f"database {db!r} does not exist yet (3.x creates it on "
                                    "the first write)", "nothing to do: start the service"),
                Check("dbrp", SKIP, "3.x needs no mapping"))
    return (Check("read", FAIL, f"the read was refused: {str(error)[:100]}", str(error)),
            Check("dbrp", SKIP, "cannot tell: the read failed"))


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} d" if seconds >= 86400 else f"{seconds / 3600:g} h"


def judge_retention(seconds: Optional[float], where: str, lookback_h: float) -> Check:
    """`seconds` of retention (0: forever, None: the server did not say), against the
    look-back of a resume from the database (RESUME_LOOKBACK_H)."""
    if seconds is None:
        return Check("retention", SKIP, f"{where} does not say")
    if seconds <= 0:
        return Check("retention", OK, f"{where}: kept forever (RESUME_LOOKBACK_H "
                                      f"{lookback_h:g} h)")
    if seconds < lookback_h * 3600:
        return Check("retention", WARN, f"{where}: kept {_days(seconds)}, less than "
                                        f"RESUME_LOOKBACK_H={lookback_h:g} h",
                     f"set RESUME_LOOKBACK_H={seconds / 3600:g} (or less) in .env.local, or "
                     "lengthen the bucket's retention: a resume looks for trades it no longer "
                     "keeps, and a backfill older than it is refused")
    return Check("retention", OK, f"{where}: kept {_days(seconds)}, RESUME_LOOKBACK_H "
                                  f"{lookback_h:g} h")


def bucket_retention_s(answer: Answer, bucket: str) -> Optional[float]:
    """The retention of `bucket` in a /api/v2/buckets answer (storage/retention.py)."""
    return buckets_retention_s(answer.json() if answer.status == 200 else None, bucket)


def our_field_types(measurement: str) -> Dict[str, str]:
    """{field: InfluxQL type} of the lines we write, read off a line our renderer makes, so
    this follows the point model (storage/lineproto.py) wherever it goes."""
    line = LineRenderer(measurement).line(TYPICAL_TRADE)
    fields = line.split(" ")[1]
    types: Dict[str, str] = {}
    for part in re.findall(r'([^,=]+)=("(?:[^"\\]|\\.)*"|[^,]*)', fields):
        key, value = part
        if value.startswith('"'):
            types[key] = "string"
        elif value in ("true", "false"):
            types[key] = "boolean"
        elif value.endswith("i"):
            types[key] = "integer"
        else:
            types[key] = "float"
    return types


def judge_schema(series: Sequence[Mapping[str, Any]], measurement: str) -> Check:
    """The SHOW FIELD KEYS answer for our measurement against the types we write."""
    ours = our_field_types(measurement)
    stored: Dict[str, List[str]] = {}
    for one in series:
        for row in one.get("values") or []:
            stored.setdefault(str(row[0]), []).append(str(row[1]))
    if not stored:
        return Check("schema", OK, f"measurement {measurement!r} is not there yet: the first "
                                   "write sets its field types")
    conflicts = [f"{key} is {'/'.join(kinds)} there, {ours[key]} in ours"
                 for key, kinds in sorted(stored.items())
                 if key in ours and any(kind != ours[key] for kind in kinds)]
    if conflicts:
        return Check("schema", FAIL, f"measurement {measurement!r} holds another schema: "
                                     f"{'; '.join(conflicts)}",
                     "InfluxDB refuses every line of a field typed otherwise (3.x and Cloud "
                     "Serverless for ever): set INFLUXDB_MEASUREMENT to another name in "
                     ".env.local, or use a new bucket (INFLUXDB_BUCKET)")
    others = sorted(set(stored) - set(ours))
    more = f"; also fields not ours: {', '.join(others)}" if others else ""
    return Check("schema", OK, f"measurement {measurement!r}: the field types match ours{more}")


def line_bytes(measurement: str) -> int:
    """Bytes of one trade line as written (the newline included): what a quota counts."""
    return len(LineRenderer(measurement).line(TYPICAL_TRADE).encode()) + 1


def judge_quota(limit: Optional[Tuple[float, float]], pairs: Sequence[str],
                measurement: str) -> Check:
    """The write quota (bytes per window of seconds) in trades/s, against this host's pairs."""
    if limit is None:
        return Check("quota", SKIP, "INFLUXDB_WRITE_LIMIT not set")
    size, window_s = limit
    per_s = size / window_s / line_bytes(measurement)
    if not pairs:
        return Check("quota", OK, f"the plan allows ~{per_s:.0f} trades/s; no pair configured")
    per_pair = per_s / len(pairs)
    detail = (f"the plan allows ~{per_s:.0f} trades/s (~{line_bytes(measurement)} bytes a "
              f"trade), ~{per_pair:.0f}/s for each of {len(pairs)} pair(s)")
    if per_pair < BUSY_PAIR_TRADES_S:
        return Check("quota", WARN, detail,
                     f"a busy pair (BTCUSDT) averages ~{BUSY_PAIR_TRADES_S:.0f} trades/s and "
                     "bursts far above: expect writes to wait for the next window (nothing is "
                     "lost: trades wait on disk); a larger plan or fewer pairs per bucket "
                     "avoids it")
    return Check("quota", OK, detail)


# ---- probes: the questions asked of the server ------------------------------------------------

class Server:
    """The probes, over the read client's pool: the storage room's one HTTP stack and TLS
    trust (influx_http.read_pool), the token sent as on writes."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.reader = InfluxQuery(settings)

    def request(self, method: str, path: str, fields: Optional[Mapping[str, str]] = None,
                body: Optional[bytes] = None) -> Union[Answer, NoAnswer]:
        url = f"{self.settings.url}{path}"
        try:
            if body is None:
                resp = self.reader.pool.request(method, url, fields=fields,
                                                timeout=PROBE_TIMEOUT_S)
            else:
                query = urlencode(dict(fields or {}))
                resp = self.reader.pool.request(method, f"{url}?{query}", body=body,
                                                timeout=PROBE_TIMEOUT_S)
        except urllib3.exceptions.SSLError as exc:
            return NoAnswer(_one_line(exc), tls=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return NoAnswer(_one_line(exc), tls="CERTIFICATE_VERIFY_FAILED" in str(exc))
        return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.data)

    def write_probe(self) -> Union[Answer, NoAnswer]:
        """An EMPTY write to the bucket. Never a point, not even to a throwaway measurement:
        3.x fixes a table's column types for ever on its first write (and Core caps tables),
        Cloud Serverless counts every byte against the quota, and no flavor lets us delete a
        point cleanly. Every server checks the token, the bucket and the permission to write
        before it reads the body, so a 204, or a 400 for the body being empty, proves them;
        nothing is stored."""
        s = self.settings
        return self.request("POST", "/api/v2/write", {"org": s.org, "bucket": s.bucket,
                                                      "precision": PRECISION}, body=b"")

    def close(self) -> None:
        self.reader.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _query_checks(server: Server, product: Product, settings: Settings) -> List[Check]:
    s = server.settings
    try:
        found = server.reader.last_trades(None, 1.0, PROBE_TIMEOUT_S)
        read, dbrp = judge_read(None, product, s, len(found))
        readable = True
    except SinkError as exc:
        read, dbrp = judge_read(exc, product, s)
        readable = False
    checks = [read, dbrp, retention_check(server, product, settings.resume_lookback_h)]
    if not readable:
        return checks + [Check("schema", SKIP, "cannot tell: InfluxQL reads fail (see above)")]
    try:
        series = server.reader.query(f"SHOW FIELD KEYS FROM {_ident(s.measurement)}",
                                     PROBE_TIMEOUT_S)
    except SinkError as exc:
        return checks + [Check("schema", WARN, f"SHOW FIELD KEYS failed: {_one_line(exc)}",
                               "check the field types by hand: SHOW FIELD KEYS FROM "
                               f"{_ident(s.measurement)}")]
    return checks + [judge_schema(series, s.measurement)]


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def retention_check(server: Server, product: Product, lookback_h: float) -> Check:
    s = server.settings
    db, _, rp = s.bucket.partition("/")
    if product.kind == "3.x":
        return Check("retention", SKIP, "3.x does not tell it over the v1/v2 APIs "
                                        "(`influxdb3 show databases` does)")
    if product.kind != "1.x":
        answer = server.request("GET", "/api/v2/buckets", {"name": s.bucket, "org": s.org})
        if isinstance(answer, NoAnswer):
            return Check("retention", SKIP, f"cannot tell: {answer}")
        if answer.status == 200:
            return judge_retention(bucket_retention_s(answer, s.bucket),
                                   f"bucket {s.bucket!r}", lookback_h)
        if answer.status != 404:
            return Check("retention", SKIP, f"cannot tell: /api/v2/buckets answered "
                                            f"{answer.status} (the token may not read buckets)")
        # 404: no buckets API on this server (a 1.x behind a 2.x write API): the 1.x way
    try:
        series = server.reader.query(f"SHOW RETENTION POLICIES ON {_ident(db)}",
                                     PROBE_TIMEOUT_S)
    except SinkError as exc:
        return Check("retention", SKIP, f"cannot tell: {_one_line(exc)[:100]}")
    return judge_retention(policy_retention_s(series, rp),
                           f"retention policy {rp or '(default)'!r}", lookback_h)


def write_limit(settings: Settings) -> Optional[Tuple[float, float]]:
    """INFLUXDB_WRITE_LIMIT as (bytes, window seconds); None when unset."""
    limit = settings.write.write_limit
    return None if limit is None else (float(limit.limit_bytes), limit.window_s)


def host_pairs() -> List[str]:
    """The pairs this host captures (config/symbols.yaml); none when the file cannot be read
    (the reconciler and scripts/status say why)."""
    try:
        return sorted({s for w in load_file(create=False).share(this_host()) for s in w.symbols})
    except ConfigError:
        return []


def run_checks(settings: Settings, pairs: Sequence[str]) -> List[Check]:
    """Every check in order. After a `reachable` FAIL the rest are skipped."""
    assert settings.influx is not None
    server = Server(settings.influx)
    quota = judge_quota(write_limit(settings), pairs, settings.measurement)
    try:
        ping = server.request("GET", "/ping")
        if isinstance(ping, NoAnswer):
            rest = ("product", "write", "read", "dbrp", "retention", "schema")
            return ([judge_reach(settings.influx.url, ping)]
                    + [Check(name, SKIP, "InfluxDB not reached") for name in rest] + [quota])
        health = None
        if not ping.headers.get("x-influxdb-version"):
            asked = server.request("GET", "/health")
            health = asked if isinstance(asked, Answer) else None
        product, product_check = judge_product(settings.influx.url, ping, health)
        checks = [judge_reach(settings.influx.url, None), product_check]
        probe = server.write_probe()
        checks.append(judge_write(probe, settings.influx) if isinstance(probe, Answer) else
                      Check("write", FAIL, f"no answer to the write: {probe}",
                            "try again; the connection broke", runtime=True))
        return checks + _query_checks(server, product, settings) + [quota]
    finally:
        server.close()


def exit_code(checks: Sequence[Check]) -> int:
    """EXIT_PROBLEM when a check FAILed for good; EXIT_RUNTIME when the only FAILs are ones
    that trying later may clear (InfluxDB not answering)."""
    failed = [c for c in checks if c.result == FAIL]
    if not failed:
        return EXIT_OK
    return EXIT_RUNTIME if all(c.runtime for c in failed) else EXIT_PROBLEM


# ---- output -----------------------------------------------------------------------------------

def table(s: InfluxSettings, checks: Sequence[Check], width: int = 100) -> str:
    lines = [f"InfluxDB {s.url}, bucket {s.bucket!r}, org {s.org!r}, measurement "
             f"{s.measurement!r}", f"{'CHECK':<10} {'RESULT':<6} DETAIL"]
    lines += [f"{c.name:<10} {c.result:<6} {c.detail}" for c in checks]
    fixes = [c for c in checks if c.fix and c.result in (FAIL, WARN)]
    if fixes:
        lines.append("")
    for c in fixes:
        lines.append("\n".join(textwrap.wrap(f"fix {c.name}: {c.fix}", width,
                                             subsequent_indent="    ",
                                             break_long_words=False, break_on_hyphens=False)))
    return "\n".join(lines)


def report(s: InfluxSettings, checks: Sequence[Check]) -> Dict[str, Any]:
    return {"url": s.url, "bucket": s.bucket, "org": s.org, "measurement": s.measurement,
            "checks": [asdict(c) for c in checks], "exit": exit_code(checks)}


# ---- the first start of scripts/run ------------------------------------------------------------

def stamp_text(s: InfluxSettings) -> str:
    """What the stamp records: a change of database, bucket or measurement checks again."""
    return f"{s.url} {s.bucket} {s.measurement}\n"


def first_start(settings: Settings,
                checks_of: Optional[Callable[[Settings], List[Check]]] = None) -> int:
    """scripts/run's check: always 0, the service starts (see the module's docstring); the
    stamp only when nothing FAILed. `checks_of(settings)` stands in for run_checks in the
    specs."""
    s = settings.influx
    if s is None:
        return EXIT_OK  # files, no database: nothing to check
    stamp = settings.run_dir / STAMP_NAME
    try:
        if stamp.read_text() == stamp_text(s):
            return EXIT_OK
    except OSError:
        pass
    print("scripts/run: first start with this database: checking the set-up (scripts/doctor)")
    checks = (checks_of or (lambda st: run_checks(st, host_pairs())))(settings)
    print(table(s, checks))
    code = exit_code(checks)
    if code == EXIT_OK:
        write_atomic(stamp, stamp_text(s))
        return EXIT_OK
    if code == EXIT_RUNTIME:
        print("scripts/run: InfluxDB did not answer: starting anyway (the workers keep trades "
              "on disk until it does); the check runs again at the next start")
        return EXIT_OK
    print("scripts/run: the set-up check FAILED (above): starting anyway, so that no live trade "
          "is missed (the workers keep on disk what InfluxDB refuses); fix what it says, then "
          "check again with scripts/doctor (it runs again at the next start too)")
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/doctor",
        description="Check the InfluxDB set-up of .env.local: reachable and TLS, product and "
                    "version, the token can write and read, the DBRP mapping, the retention, "
                    "the measurement's schema, the write quota. Each row ok, warn, FAIL or "
                    "skip; each FAIL says its fix.",
        epilog=exit_codes_help(ok="no check failed (warnings allowed)",
                               problem="a check failed (its fix is printed)",
                               config="no INFLUXDB_URL, a bad setting or argument",
                               runtime="InfluxDB did not answer"))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--env-file", type=Path, default=None,
                        help="read the settings from this file instead of .env.local")
    parser.add_argument("--first-start", action="store_true",
                        help="scripts/run's check: once per database set-up, nothing without "
                             "INFLUXDB_URL; InfluxDB down does not stop the start")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(load_env(args.env_file))
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.first_start:
        return first_start(settings)
    if settings.influx is None:
        print(f"{parser.prog}: INFLUXDB_URL is not set (in the environment or "
              f"{args.env_file or '.env.local'}): nothing to check; fill in INFLUXDB_URL, "
              "INFLUXDB_TOKEN, INFLUXDB_ORG and INFLUXDB_BUCKET (see .env.example)",
              file=sys.stderr)
        return EXIT_CONFIG
    checks = run_checks(settings, host_pairs())
    if args.json:
        print(json.dumps(report(settings.influx, checks), indent=2))
    else:
        print(table(settings.influx, checks))
    return exit_code(checks)


if __name__ == "__main__":
    sys.exit(main())
