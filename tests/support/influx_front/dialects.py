"""The flavors of InfluxDB the front can speak, as a table, and the pure rules that read it.

Every row cites the line of `../shared/reference/influxdb-servers.md` (written "servers.md,
<table>: <row>, <column>") or `influxdb.md` (§) it implements. Where the reference gives a
status but not the words, the wording is ours and says so.

- `lenient` (the default): what the front always was, kept exactly so the suite's specs keep
  their meaning. influxd 1.6.7's own write semantics (a line that does not parse or a field
  type conflict: the other lines stored, 400 "partial write: ... dropped=N"), 2.x-style JSON
  errors `{"code","message"}`, `Authorization: Token <token>` on writes, the token as password
  (`p=` alone or Basic) on `/query`. No size, quota, retention or query limit of its own.
- `1.8`, `2.7`, `3core`, `serverless`: see DIALECTS.

Not emulated, documented here:
- Cloud TSM (orgs made before 2023-02): a 204 means "queued"; bad points are dropped later and
  logged to the `_monitoring` bucket (servers.md, "Cloud TSM" note). A front cannot show that
  usefully: every write would look stored.
- 3.x duplicate points (same measurement, tag set and timestamp) with different field values:
  either version may be kept, forever (servers.md, "Duplicate points"). influxd keeps the newest;
  no flavor pretends otherwise. Writing identical values again is harmless on every flavor.
- 3 Core's caps of 5 databases, 2,000 tables, 500 columns; Serverless's 90 s per query, 1,000
  Parquet files, 300 MB read per 5 minutes; 403 for a token without permission (one token here).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from tests.support.influx_front.quota import QuotaSpec, parse_duration, parse_quota, parse_size

LENIENT = "lenient"
# Statuses whose `code` the 2.x-style body names (the front's words since its first version).
ERROR_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found",
               413: "request too large", 422: "unprocessable entity", 429: "too many requests",
               500: "internal error", 503: "unavailable"}
# servers.md, Writes: "error body", Cloud Serverless: "413 may be an nginx page".
NGINX_413 = (b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
             b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx"
             b"</center>\r\n</body>\r\n</html>\r\n")


@dataclass(frozen=True)
class Dialect:
    """What one server does with our writes and reads. Modes: "native" (influxd 1.6.7 decides,
    its answer translated), "whole" (the batch is refused, nothing stored), "partial" (the good
    lines stored, the refused ones listed)."""

    name: str
    version: str  # X-Influxdb-Version of /ping ("" when the server sends none)
    error_style: str  # "v2" {"code","message"}, "v1" {"error"}, "cloud" (v2, or HTML/empty)
    write_schemes: Tuple[str, ...]  # Authorization schemes taking the token on writes
    query_password: str  # /query u+p or Basic: "any_user", "named_user", "user_password"
    query_p_alone: bool  # /query `p=<token>` with no `u`
    parse_error: str  # a line that does not parse: native | whole | partial
    type_conflict: str  # a field of another type than stored: native | whole | partial
    retention: str  # a point older than the retention: whole | partial
    partial_status: int  # status of a partial write (type conflict, retention)
    partial_prefix: str  # before influxd's "partial write: ..." text
    max_body: Optional[str]  # 413 over this many bytes as sent
    max_inflated: Optional[str]  # 413 over this many bytes after gzip
    write_quota: Optional[str]  # 429 beyond SIZE/WINDOW of uncompressed bytes
    retention_period: Optional[str]  # points older than this are refused
    query_span: Optional[str]  # a SELECT over more than this (or unbounded) is refused
    dbrp_required: bool  # /query answers `database not found` until a mapping exists
    missing_db_404: bool  # /query of a missing database: 404 (else influxd's 200 statement error)
    creates_database: bool  # /api/v2/write creates the database
    influxql_v3: bool  # refuses what 3.x InfluxQL lacks
    ping: str  # "204", "core" (200 JSON, token needed, HEAD 404), "absent" (404)
    overloaded_status: int  # the `overloaded` fault
    query_errors: str  # error body of /query: "v1" {"error"} (3.x: servers.md, Reads, 404) or "v2"


DIALECTS: Dict[str, Dialect] = {d.name: d for d in (
    Dialect(
        name=LENIENT, version="2.7.0-influx-front", error_style="v2", write_schemes=("Token",),
        query_password="any_user", query_p_alone=True, parse_error="native",
        type_conflict="native", retention="partial", partial_status=400, partial_prefix="",
        max_body=None, max_inflated=None, write_quota=None, retention_period=None,
        query_span=None, dbrp_required=False, missing_db_404=False, creates_database=False,
        influxql_v3=False, ping="204", overloaded_status=503, query_errors="v2"),
    Dialect(
        # servers.md, Writes, 1.8 column: "one line that does not parse": good lines stored,
        # 400 partial; "field type conflict": 400 partial ... dropped=N; "points older than
        # retention": 400 partial; "error body": v1 {"error"}; "too large": 413 (25 MB);
        # "auth": `Token user:pass`. Reads, 1.8: "auth": u/p or `Token user:pass`.
        name="1.8", version="1.8.10", error_style="v1", write_schemes=("Token",),
        query_password="user_password", query_p_alone=False, parse_error="native",
        type_conflict="native", retention="partial", partial_status=400, partial_prefix="",
        max_body="25MB", max_inflated=None, write_quota=None, retention_period=None,
        query_span=None, dbrp_required=False, missing_db_404=False, creates_database=False,
        influxql_v3=False, ping="204", overloaded_status=503, query_errors="v1"),
    Dialect(
        # servers.md, Writes, 2.7 column: "one line that does not parse": whole batch refused,
        # 400 {"code":"invalid"}; "field type conflict" and "points older than retention":
        # good lines stored, 422 "failure writing points to database: partial write: ...";
        # "auth": `Token <token>`. Reads, 2.7: "auth": `p=<token>` alone fails (u non-empty).
        name="2.7", version="v2.7.12", error_style="v2", write_schemes=("Token",),
        query_password="named_user", query_p_alone=False, parse_error="whole",
        type_conflict="native", retention="partial", partial_status=422,
        partial_prefix="failure writing points to database: ", max_body=None,
        max_inflated=None, write_quota=None, retention_period=None, query_span=None,
        dbrp_required=False, missing_db_404=False, creates_database=False, influxql_v3=False,
        ping="204", overloaded_status=503, query_errors="v2"),
    Dialect(
        # servers.md, Writes, 3 Core column: "target": created on first write; "one line that
        # does not parse", "field type conflict", "points older than retention": whole batch
        # refused, 400 (compat paths force accept_partial=false); "too large": 413 (10 MiB,
        # as sent and inflated: influxdb3 read_body); "quota / overload": 400 `invalid` for the
        # request limit; "auth": Token/Bearer. Reads, 3 Core: 404 for no such database;
        # `Token`/`Bearer` or `p=` (u ignored); the 432-file limit; "not implemented".
        name="3core", version="3.10.0", error_style="v2", write_schemes=("Token", "Bearer"),
        query_password="any_user", query_p_alone=True, parse_error="whole",
        type_conflict="whole", retention="whole", partial_status=400, partial_prefix="",
        max_body="10MiB", max_inflated="10MiB", write_quota=None, retention_period=None,
        query_span="72h", dbrp_required=False, missing_db_404=True, creates_database=True,
        influxql_v3=True, ping="core", overloaded_status=400, query_errors="v1"),
    Dialect(
        # servers.md, Writes, Cloud Serverless column: "one line that does not parse" and
        # "field type conflict": 400, good lines kept, up to 100 refused lines listed;
        # "points older than retention": 400/422 (400 since the 2024 partial-write change);
        # "error body": JSON, empty or text/html; "too large": 413 (50 MB, 250 MB inflated);
        # "quota": 429 + Retry-After, 503 + Retry-After; "auth": `Token`. Free plan: 5 MB per
        # fixed 5 minutes, 30-day retention. Reads, Cloud Serverless: explicit DBRP mapping,
        # `database not found` in a 200 body, `Token` or any user + token as password.
        name="serverless", version="", error_style="cloud", write_schemes=("Token",),
        query_password="any_user", query_p_alone=True, parse_error="partial",
        type_conflict="partial", retention="partial", partial_status=400, partial_prefix="",
        max_body="50MB", max_inflated="250MB", write_quota="5MB/5m", retention_period="30d",
        query_span=None, dbrp_required=True, missing_db_404=False, creates_database=False,
        influxql_v3=True, ping="absent", overloaded_status=503, query_errors="v1"),
)}
FLAVORS = tuple(DIALECTS)


@dataclass(frozen=True)
class Limits:
    """A flavor's limits in numbers; None is off. Each defaults to the flavor's, and each can be
    set (`--write-quota 5MB/5m`, `--max-body 10MiB`, `--retention 30d`, `--query-span 72h`) or
    turned off (`off`)."""

    quota: Optional[QuotaSpec]
    max_body: Optional[int]
    max_inflated: Optional[int]
    retention_ns: Optional[int]
    query_span_ns: Optional[int]


def resolve_limits(d: Dialect, write_quota: Optional[str] = None, max_body: Optional[str] = None,
                   max_inflated: Optional[str] = None, retention: Optional[str] = None,
                   query_span: Optional[str] = None) -> Limits:
    """The limits of flavor `d`, each given value (None: the flavor's own) put in its place."""
    def ns(text: Optional[str]) -> Optional[int]:
        seconds = parse_duration(text)
        return None if seconds is None else int(seconds * 1_000_000_000)

    return Limits(
        quota=parse_quota(d.write_quota if write_quota is None else write_quota),
        max_body=parse_size(d.max_body if max_body is None else max_body),
        max_inflated=parse_size(d.max_inflated if max_inflated is None else max_inflated),
        retention_ns=ns(d.retention_period if retention is None else retention),
        query_span_ns=ns(d.query_span if query_span is None else query_span))


def dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown flavor {name!r}; one of {', '.join(FLAVORS)}") from None


# --- bodies ---------------------------------------------------------------------------------

def error_body(status: int, message: str) -> dict[str, str]:
    """The 2.x-style error document: {"code", "message"}."""
    return {"code": ERROR_CODES.get(status, "internal error"), "message": message}


def render_error(d: Dialect, status: int, message: str,
                 extra: Optional[Mapping[str, Any]] = None, query: bool = False
                 ) -> Tuple[bytes, str]:
    """(body, content type) of an error answer in the flavor's form.

    servers.md, Writes: "error body" row: 1.8 `{"error"}`; 2.7 and 3 Core `{"code","message"}`;
    Cloud Serverless JSON, empty or text/html ("never assume JSON"): here 413 is nginx's HTML
    page, 429 and 503 have an empty body, the rest is JSON (which of the three a status gets is
    our choice; the reference says only that all three occur). `query`: an answer of /query,
    in the flavor's `query_errors` form.
    """
    style = d.query_errors if query else d.error_style
    if style == "cloud" and status == 413:
        return NGINX_413, "text/html"
    if style == "cloud" and status in (429, 503):
        return b"", "text/plain"
    doc: Dict[str, Any] = {"error": message} if style == "v1" else error_body(status, message)
    doc.update(extra or {})
    return json.dumps(doc).encode(), "application/json"


# --- authentication ---------------------------------------------------------------------------

def header_authorized(schemes: Tuple[str, ...], token: str, header: str) -> bool:
    scheme, _, credential = header.partition(" ")
    return scheme in schemes and credential == token


def write_authorized(d: Dialect, token: Optional[str], header: str) -> bool:
    """servers.md, Writes: "auth" row. With no token configured, anything goes."""
    return token is None or header_authorized(d.write_schemes, token, header)


def basic_credentials(header: str) -> Optional[Tuple[str, str]]:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def query_authorized(d: Dialect, token: Optional[str], header: str,
                     params: Mapping[str, str]) -> bool:
    """servers.md, Reads: "auth" row (and Grafana: "any user + token as password" for 3.x).

    The header forms of writes; else `u`/`p` or Basic: "any_user" takes the token as password
    whatever the user, "named_user" (2.7) needs a non-empty user, "user_password" (1.8) needs
    the token to be `user:password` and both to match. `p=` with no `u` only where
    `query_p_alone`.
    """
    if token is None or header_authorized(d.write_schemes, token, header):
        return True
    basic = basic_credentials(header)
    if basic is not None:
        user, password = basic
    elif "p" in params:
        if "u" not in params and not d.query_p_alone:
            return False
        user, password = params.get("u", ""), params["p"]
    else:
        return False
    if d.query_password == "user_password":
        return f"{user}:{password}" == token
    if d.query_password == "named_user" and not user:
        return False
    return password == token
