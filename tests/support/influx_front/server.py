"""The front's aiohttp server: routes, the flavor's rules, faults, stats, the listening site.

See the package docstring (tests/support/influx_front/__init__.py) for what it serves, and
dialects.py for what each flavor does and where the reference says so.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import struct
import time
import urllib.parse
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import aiohttp
from aiohttp import web

from tests.support.influx_front.dbrp import DbrpTable
from tests.support.influx_front.dialects import (
    Dialect,
    Limits,
    query_authorized,
    render_error,
    write_authorized,
)
from tests.support.influx_front.faults import (
    REQUEST_FAULTS,
    STATUS_FAULTS,
    Fault,
    FrontStats,
    parse_fault,
)
from tests.support.influx_front.influxql import span_refusal, unsupported_feature
from tests.support.influx_front.lineproto import data_lines, measurement_of
from tests.support.influx_front.quota import FixedWindowQuota
from tests.support.influx_front.writes import (
    Answer,
    Checked,
    Schema,
    check_lines,
    native_kind,
    native_partial,
    refusal,
)

log = logging.getLogger("influx_front")

# v2 precision name -> 1.6.7 /write precision. 1.6.7 reads any unknown value (`ns`, `us`)
# as nanoseconds without complaint, so the v2 names must never reach it unmapped.
PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
UPSTREAM_TIMEOUT_S = 60.0
REBIND_ATTEMPTS = 25  # x 0.2 s after a refuse period
BUSY_WAIT_STEPS = 50  # x 0.02 s for in-flight answers before a refuse closes connections
FORM = "application/x-www-form-urlencoded"
AUTH_FAILED = {"1.8": "authorization failed"}  # 1.x's words (influxdb.md §8, auth enabled)
# servers.md, Writes: "too large" row; 1.x's and influxdb3's own words (influxdb3 http.rs
# RequestSizeExceeded); Cloud Serverless answers nginx's HTML page (dialects.render_error).
TOO_LARGE = {"1.8": "http: request body too large",
             "3core": "max request size ({limit} bytes) exceeded"}
FAULT_MESSAGES = {"unauthorized": "unauthorized access",
                  "overloaded": "this service is overloaded, please try again later"}


@dataclass
class WritePlan:
    """What goes to influxd: the body as sent, until a fault or the flavor's check narrows it."""

    body: bytes
    gzipped: bool
    lines: List[bytes]
    dropped: int = 0  # lines a `partial` or `conflict` fault refused
    message: str = ""  # that fault's partial-write message
    fault: str = ""  # which of the two

    def forward_only(self, lines: List[bytes]) -> None:
        self.lines, self.body, self.gzipped = lines, b"\n".join(lines), False


def with_db(params: Mapping[str, str], target: Tuple[str, str]) -> Dict[str, str]:
    """Query parameters with `db` (and `rp`) set to where a DBRP mapping points."""
    out = dict(params)
    out["db"] = target[0]
    if target[1]:
        out["rp"] = target[1]
    else:
        out.pop("rp", None)
    return out


def bump(counter: Dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


class FrontServer:
    """The running front: routes, the flavor, fault state, stats, and the listening site."""

    def __init__(self, influx_url: str, host: str, port: int, token: Optional[str],
                 flavor: Dialect, limits: Limits, dbrps: Sequence[Mapping[str, Any]] = ()
                 ) -> None:
        self.influx_url = influx_url.rstrip("/")
        self.host = host
        self.port = port
        self.token = token
        self.dialect = flavor
        self.limits = limits
        self.quota = None if limits.quota is None else FixedWindowQuota(limits.quota)
        self.dbrps = DbrpTable()
        for doc in dbrps:
            self.dbrps.create(doc)
        self.faults: list[Fault] = []
        self.stats = FrontStats(flavor=flavor.name)
        self.refusing = False
        self.runner: Optional[web.AppRunner] = None
        self.site: Optional[web.TCPSite] = None
        self.session: Optional[aiohttp.ClientSession] = None
        self.reopen_task: Optional[asyncio.Task[None]] = None

    # -- lifecycle --

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_post("/api/v2/write", self.handle_write)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/ping", self.handle_ping)  # HEAD comes with GET
        app.router.add_route("GET", "/query", self.handle_query)
        app.router.add_route("POST", "/query", self.handle_query)
        if self.dialect.name in ("2.7", "serverless"):
            app.router.add_post("/api/v2/dbrps", self.handle_dbrp_create)
            app.router.add_get("/api/v2/dbrps", self.handle_dbrp_list)
            app.router.add_get("/api/v2/buckets", self.handle_buckets)
        app.router.add_post("/_front/fault", self.handle_fault)
        app.router.add_get("/_front/stats", self.handle_stats)
        app.router.add_post("/_front/reset", self.handle_reset)
        return app

    async def start(self, initial: Sequence[Fault]) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S), auto_decompress=True)
        self.stats.upstream_version = await self.upstream_version()
        # auto_decompress=False: gzip bodies must reach influxd still gzipped, as sent.
        self.runner = web.AppRunner(self.make_app(), auto_decompress=False, access_log=None)
        await self.runner.setup()
        now = time.monotonic()
        self.faults = [f for f in initial if f.action != "refuse"]
        refuse = max((f.seconds or 0.0 for f in initial if f.action == "refuse"), default=0.0)
        if refuse > 0:
            log.info("refusing connections for %.1fs before the first listen", refuse)
            await asyncio.sleep(refuse)
        await self.listen()
        log.info("influx-front (flavor %s, %s) on http://%s:%d -> %s (token %s), faults %s",
                 self.dialect.name, self.limits, self.host, self.port, self.influx_url,
                 "required" if self.token else "not checked",
                 [f.describe(now) for f in self.faults])

    async def listen(self) -> None:
        assert self.runner is not None
        self.site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await self.site.start()
        self.refusing = False

    async def close(self) -> None:
        if self.reopen_task is not None:
            self.reopen_task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def upstream_version(self) -> str:
        assert self.session is not None
        try:
            async with self.session.get(f"{self.influx_url}/ping",
                                        timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                return str(resp.headers.get("X-Influxdb-Version", "unknown"))
        except Exception as exc:  # the front must come up even while influxd is down
            log.warning("influxd at %s not reachable yet: %s", self.influx_url, exc)
            return "unknown"

    async def refuse_for(self, seconds: float, keep: object) -> None:
        """Close the listener and idle keep-alive connections; listen again after `seconds`."""
        assert self.site is not None and self.runner is not None
        assert self.runner.server is not None
        self.refusing = True
        await self.site.stop()

        def busy(conn: object) -> bool:
            return conn is not keep and bool(getattr(conn, "_request_in_progress", False))

        # A handler can still be finishing an answer its client already has; closing that
        # connection later would reset the client's next request on it instead of making the
        # client reconnect (and be refused). Give such answers a moment to finish.
        for _ in range(BUSY_WAIT_STEPS):
            if not any(busy(conn) for conn in self.runner.server.connections):
                break
            await asyncio.sleep(0.02)
        closing = [conn for conn in self.runner.server.connections if conn is not keep]
        for conn in closing:
            # Busy ones close after their answer; idle keep-alive ones must have their
            # transport closed now (close() alone would leave them open but unread).
            if busy(conn):
                conn.close()
            else:
                conn.force_close()
        # transport.close() only schedules the socket close; let it happen before the caller
        # hears back, or its client could reuse a connection whose FIN is not out yet.
        await asyncio.sleep(0.05)
        log.info("refusing connections for %.1fs (closed %d open connection(s))", seconds,
                 len(closing))

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            for _ in range(REBIND_ATTEMPTS):
                try:
                    await self.listen()
                    log.info("listening again on port %d", self.port)
                    return
                except OSError as exc:  # someone else took the port meanwhile
                    log.error("cannot listen on port %d again: %s", self.port, exc)
                    await asyncio.sleep(0.2)

        self.reopen_task = asyncio.ensure_future(reopen())

    # -- answers --

    def json_response(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None,
                      write: bool = True) -> web.Response:
        if write:
            bump(self.stats.by_status, str(status))
        return web.json_response(payload, status=status, headers=headers)

    def refuse(self, kind: str, status: int, message: str,
               headers: Optional[Mapping[str, str]] = None, write: bool = True,
               query: bool = False) -> web.Response:
        """An error answer in the flavor's form, counted by status (writes) and by kind."""
        bump(self.stats.refusals, kind)
        if write:
            bump(self.stats.by_status, str(status))
        body, ctype = render_error(self.dialect, status, message, query=query)
        return web.Response(status=status, text=body.decode(), content_type=ctype,
                            headers=dict(headers or {}))

    def take_faults(self) -> tuple[float, Optional[Fault]]:
        """Consume the armed faults for one write: total slow delay, and at most one outcome."""
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.live(now)]
        delay, outcome = 0.0, None
        for fault in self.faults:
            if fault.action == "slow":
                delay += fault.delay
                fault.use()
            elif outcome is None and fault.action in REQUEST_FAULTS:
                outcome = fault
                fault.use()
        return delay, outcome

    def abort(self, request: web.Request) -> web.StreamResponse:
        """Drop the connection with a TCP RST and no answer."""
        self.stats.by_status["reset"] = self.stats.by_status.get("reset", 0) + 1
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns close into RST, what a crashed proxy or LB looks like.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=204)  # never sent; aiohttp drops it quietly

    # -- writes --

    async def handle_write(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:  # a keep-alive connection that outlived the listener
            log.info("write on a connection kept open while refusing: reset")
            return self.abort(request)
        body = await request.read()
        st = self.stats
        st.write_requests += 1
        st.bodies_received += 1
        st.bytes_received += len(body)
        gzipped = request.headers.get("Content-Encoding", "").lower() == "gzip"
        st.gzip_bodies += int(gzipped)
        try:
            plain = gzip.decompress(body) if gzipped else body
        except (OSError, EOFError, zlib.error) as exc:
            return self.refuse("gzip", 400, f"unable to decompress body: {exc}")
        lines = data_lines(plain)
        st.lines_received += len(lines)
        for line in lines:
            bump(st.lines_by_measurement, measurement_of(line))

        refused = self.refuse_request(request, len(body), len(plain))
        if refused is not None:
            return refused
        delay, fault = self.take_faults()
        if delay:
            await asyncio.sleep(delay)
        plan = WritePlan(body, gzipped, lines)
        if fault is not None:
            early = self.apply_fault(request, fault, plan)
            if early is not None:
                return early
        if self.quota is not None:
            # servers.md, Writes: "quota / overload", Cloud Serverless: 429 + Retry-After,
            # fixed windows; the free plan counts uncompressed line protocol (gzip or not).
            wait = self.quota.admit(len(plain), time.time())
            st.quota_used_bytes = self.quota.used_in(time.time())
            if wait is not None:
                return self.refuse("quota", 429, "write quota exceeded for this window "
                                   f"({self.quota.spec.describe()})", {"Retry-After": str(wait)})
        precision = request.query.get("precision", "ns")
        db = request.query["bucket"].partition("/")[0]
        answer = await self.check(plan, db, precision)
        if answer is not None and not answer.forward:
            return self.refuse(answer.kind, answer.status, answer.message)
        return await self.forward_write(request.query["bucket"], precision, plan, answer)

    def refuse_request(self, request: web.Request, sent: int,
                       inflated: int) -> Optional[web.Response]:
        """The refusals that do not depend on the lines: auth, size, precision, bucket."""
        d, limits = self.dialect, self.limits
        if not write_authorized(d, self.token, request.headers.get("Authorization", "")):
            return self.refuse("auth", 401, AUTH_FAILED.get(d.name, "unauthorized access"))
        for size, limit in ((sent, limits.max_body), (inflated, limits.max_inflated)):
            if limit is not None and size > limit:
                # servers.md, Writes: "too large" row (the flavor's limit, its words).
                return self.refuse("too_large", 413, TOO_LARGE.get(
                    d.name, "request body too large ({limit} bytes)").format(limit=limit))
        if request.query.get("precision", "ns") not in PRECISIONS:
            return self.refuse("precision", 400,
                               "invalid precision; valid precision units are ns, us, ms, and s")
        if not request.query.get("bucket", ""):
            return self.refuse("bucket", 400, "bucket is required")
        return None

    def apply_fault(self, request: web.Request, fault: Fault,
                    plan: WritePlan) -> Optional[web.StreamResponse]:
        """The fault's answer, or None after it changed what is forwarded (partial, conflict)."""
        if fault.action == "reset":
            return self.abort(request)
        if fault.action in STATUS_FAULTS:
            status = STATUS_FAULTS[fault.action]
            if fault.action == "overloaded":
                status = self.dialect.overloaded_status
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            message = FAULT_MESSAGES.get(fault.action, f"{fault.action} (fault)")
            return self.refuse(f"fault_{fault.action}", status, message, headers)
        lines = plan.lines
        if fault.action == "partial":
            plan.fault, plan.dropped = fault.action, min(fault.drop, len(lines))
            plan.forward_only(lines[plan.dropped:])
            plan.message = f"partial write: influx-front rejected the first {plan.dropped} " \
                           f"line(s) dropped={plan.dropped}"
        if fault.action == "conflict":
            assert fault.match is not None
            needle = fault.match.encode()
            refused = [ln for ln in lines if needle in ln]
            plan.fault, plan.dropped = fault.action, len(refused)
            plan.forward_only([ln for ln in lines if needle not in ln])
            measurement = refused[0].split(b",", 1)[0].decode() if refused else "?"
            plan.message = (f'partial write: field type conflict: input field "price_str" on '
                            f'measurement "{measurement}" is type string, already exists as '
                            f"type float dropped={plan.dropped}")
        return None

    async def check(self, plan: WritePlan, db: str, precision: str) -> Optional[Answer]:
        """The flavor's own refusals of lines (writes.py); narrows `plan` to the accepted ones
        when the flavor stores the rest."""
        d = self.dialect
        by_schema = d.type_conflict != "native"
        if d.parse_error == "native" and not by_schema and self.limits.retention_ns is None:
            return None
        schema = await self.schema(db) if by_schema else None
        checked: Checked = check_lines(plan.lines, d, schema, precision,
                                       self.limits.retention_ns, time.time_ns())
        answer = refusal(d, checked)
        if answer is not None and answer.forward:
            plan.forward_only(checked.accepted)
        return answer

    async def forward_write(self, bucket: str, precision: str, plan: WritePlan,
                            answer: Optional[Answer]) -> web.StreamResponse:
        db, _, rp = bucket.partition("/")
        try:
            status, text = await self.post_write(db, rp, precision, plan)
            if status == 404 and self.dialect.creates_database:
                # servers.md, Writes: "target", 3 Core: the database is created on first write.
                await self.influxql(f'CREATE DATABASE "{db}"', None)
                status, text = await self.post_write(db, rp, precision, plan)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self.refuse("upstream", 503, f"influxd unreachable: {exc}")
        self.stats.lines_forwarded += len(plan.lines)
        if 200 <= status < 300 and plan.dropped:
            fault_status, message = native_partial(self.dialect, plan.message)
            return self.refuse(f"fault_{plan.fault}", fault_status, message)
        if 200 <= status < 300 and answer is not None:
            return self.refuse(answer.kind, answer.status, answer.message)
        if 200 <= status < 300:
            bump(self.stats.by_status, str(status))
            return web.Response(status=status)
        return self.translate_error(status, text, bucket, answer)

    async def post_write(self, db: str, rp: str, precision: str,
                         plan: WritePlan) -> Tuple[int, str]:
        params = {"db": db, "precision": PRECISIONS[precision]}
        if rp:
            params["rp"] = rp
        headers = {"Content-Encoding": "gzip"} if plan.gzipped else {}
        assert self.session is not None
        async with self.session.post(f"{self.influx_url}/write", params=params,
                                     data=plan.body, headers=headers) as resp:
            return resp.status, await resp.text()

    def translate_error(self, status: int, text: str, bucket: str,
                        answer: Optional[Answer]) -> web.Response:
        try:
            message = str(json.loads(text).get("error", text))
        except (ValueError, AttributeError):
            message = text.strip()
        if status == 400 and "partial write" in message:
            return self.native_refusal(message, answer)
        if self.dialect.error_style == "v1":  # 1.8: 1.6.7's answers are 1.x's own
            return self.refuse("bucket" if status == 404 else "refused", status, message)
        # A missing db or rp is a missing bucket to a 2.x client (1.6.7 says 500 for the rp).
        if status == 404 or "retention policy not found" in message:
            return self.refuse("bucket", 404, f'bucket "{bucket}" not found')
        return self.refuse("refused", status, message)

    def native_refusal(self, message: str, answer: Optional[Answer]) -> web.Response:
        """influxd stored part of the batch: its answer in the flavor's words (writes.py)."""
        d = self.dialect
        kind = native_kind(message)
        mode = {"parse": d.parse_error, "type_conflict": d.type_conflict}.get(kind, "native")
        status, text = native_partial(d, message)
        if mode != "native":  # the flavor's own check should have refused it before influxd
            self.stats.precheck_missed += 1
            log.warning("influxd refused lines flavor %s let through: %s", d.name, message)
        if mode == "whole":
            status, text = 400, message
        if answer is not None:
            text = f"{answer.message}; {text}"
        return self.refuse(kind, status, text)

    async def influxql(self, q: str, db: Optional[str]) -> Dict[str, Any]:
        """One statement straight to influxd (schema lookups, CREATE DATABASE)."""
        form = {"q": q} if db is None else {"q": q, "db": db}
        assert self.session is not None
        async with self.session.post(f"{self.influx_url}/query", data=form) as resp:
            payload: Dict[str, Any] = await resp.json(content_type=None)
            return payload

    async def schema(self, db: str) -> Schema:
        """Field types per measurement of `db` as influxd holds them (a missing db: none)."""
        out: Schema = {}
        for result in (await self.influxql("SHOW FIELD KEYS", db)).get("results", []):
            for series in result.get("series") or []:
                table = out.setdefault(series["name"], {})
                for key, kind in series.get("values") or []:
                    table.setdefault(key, kind)
        return out

    # -- reads --

    async def handle_query(self, request: web.Request) -> web.StreamResponse:
        self.stats.query_requests += 1
        body = await request.read()
        form = self.form_of(request, body)
        params = {**request.query, **form}
        if not query_authorized(self.dialect, self.token,
                                request.headers.get("Authorization", ""), params):
            return self.refuse("query_auth", 401, AUTH_FAILED.get(self.dialect.name,
                                                                  "unauthorized access"),
                               write=False, query=True)
        judged = self.judge_query(params)
        if isinstance(judged, web.Response):
            return judged
        query: Mapping[str, str] = request.query
        if judged is not None:  # the db a DBRP mapping names
            if "db" in form:
                body = urllib.parse.urlencode(with_db(form, judged)).encode()
            else:
                query = with_db(request.query, judged)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "content-encoding", "accept")}
        assert self.session is not None
        try:
            async with self.session.request(request.method, f"{self.influx_url}/query",
                                            params=query, data=body or None,
                                            headers=headers) as resp:
                payload = await resp.read()
                ctype = resp.headers.get("Content-Type", "application/json")
                status = resp.status
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self.refuse("upstream", 503, f"influxd unreachable: {exc}", write=False,
                               query=True)
        if self.dialect.missing_db_404 and status == 200 and b"database not found" in payload:
            # servers.md, Reads: "no mapping", 3 Core: no such database: 404 {"error":"..."}.
            return self.refuse("database_not_found", 404,
                               f"database not found: {params.get('db', '')}", write=False,
                               query=True)
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    @staticmethod
    def form_of(request: web.Request, body: bytes) -> Dict[str, str]:
        if request.method != "POST" or not request.content_type.startswith(FORM):
            return {}
        return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))

    def judge_query(self, params: Mapping[str, str]
                    ) -> Union[web.Response, Tuple[str, str], None]:
        """A refusal, the (db, rp) a DBRP mapping sends the query to, or None (as asked)."""
        d = self.dialect
        q, db = params.get("q", ""), params.get("db", "")
        target = None
        if db and d.name in ("2.7", "serverless"):
            bucket = self.dbrps.bucket(db, params.get("rp"))
            if bucket is None and d.dbrp_required:
                # servers.md, Reads: "no mapping", Cloud Serverless: `database not found: <db>`
                # in a 200 body ({"results":[{"error":...}]}).
                bump(self.stats.refusals, "dbrp")
                return web.json_response({"results": [
                    {"statement_id": 0, "error": f"database not found: {db}"}]})
            if bucket is not None:
                real_db, _, real_rp = bucket.partition("/")
                target = (real_db, real_rp)
        if d.influxql_v3:
            feature = unsupported_feature(q)
            if feature is not None:
                # servers.md, Reads: "not implemented", 3 Core and Cloud Serverless (status and
                # wording ours: 400 and DataFusion's "This feature is not implemented").
                return self.refuse("influxql_unsupported", 400,
                                   f"This feature is not implemented: {feature}", write=False,
                                   query=True)
        if self.limits.query_span_ns is not None:
            refused = span_refusal(q, time.time_ns(), self.limits.query_span_ns)
            if refused is not None:
                # servers.md, Reads: "limits", 3 Core: > 432 Parquet files (~72 h) refused.
                return self.refuse("query_span", 400, refused, write=False, query=True)
        return target

    async def handle_dbrp_create(self, request: web.Request) -> web.StreamResponse:
        """POST /api/v2/dbrps (servers.md, Reads: "Creating a mapping")."""
        if not write_authorized(self.dialect, self.token,
                                request.headers.get("Authorization", "")):
            return self.refuse("auth", 401, "unauthorized access", write=False)
        try:
            doc = await request.json()
            if not isinstance(doc, dict):
                raise ValueError("body must be a JSON object")
            made = self.dbrps.create(doc)
        except ValueError as exc:
            return self.refuse("dbrp_invalid", 400, str(exc), write=False)
        log.info("dbrp mapping created: %s", made)
        return web.json_response(made.as_doc(), status=201)

    async def handle_dbrp_list(self, request: web.Request) -> web.StreamResponse:
        if not write_authorized(self.dialect, self.token,
                                request.headers.get("Authorization", "")):
            return self.refuse("auth", 401, "unauthorized access", write=False)
        found = self.dbrps.find(request.query.get("db"))
        return web.json_response({"content": [m.as_doc() for m in found]})

    async def handle_buckets(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v2/buckets?name=: a bucket's id, what `influx v1 dbrp create --bucket-id`
        needs (servers.md, Reads: "Creating a mapping"). The front's bucket id is its name
        (dbrp.py); a database influxd does not have is no bucket. With a retention of the
        front's own (--retention, the flavor's), each bucket has its `expire` rule as 2.x
        reports it (retentionRules, everySeconds: workers/storage/retention.py); without one,
        an empty list, as 2.x answers for a bucket kept forever (influxdb 2.x
        http/bucket_service.go newBucket: an `expire` rule only when the period is > 0)."""
        if not write_authorized(self.dialect, self.token,
                                request.headers.get("Authorization", "")):
            return self.refuse("auth", 401, "unauthorized access", write=False)
        shown = await self.influxql("SHOW DATABASES", None)
        names = [str(row[0]) for result in shown.get("results", [])
                 for series in result.get("series") or [] for row in series.get("values") or []]
        wanted = request.query.get("name")
        kept = self.limits.retention_ns
        rules = [] if kept is None else [{"type": "expire",
                                          "everySeconds": kept // 1_000_000_000}]
        return web.json_response({"buckets": [{"id": name, "name": name, "orgID": "front",
                                               "retentionRules": rules}
                                              for name in names if wanted in (None, name)]})

    # -- ping and health --

    async def handle_ping(self, request: web.Request) -> web.StreamResponse:
        """influxdb.md §4 "Health endpoints": 1.x/2.x 204 with version headers; 3 Core 200
        JSON with a token, HEAD 404; Cloud Serverless documents neither (404 here)."""
        d = self.dialect
        if d.ping == "absent" or (d.ping == "core" and request.method == "HEAD"):
            return web.Response(status=404, text="404 page not found")
        if d.ping == "core":
            if not write_authorized(d, self.token, request.headers.get("Authorization", "")):
                return self.refuse("auth", 401, "authentication required", write=False)
            return web.json_response(
                {"version": d.version, "revision": "influx-front", "process_id": "influx-front"},
                headers={"x-influxdb-version": d.version, "x-influxdb-build": "Core"})
        return web.Response(status=204, headers={"X-Influxdb-Version": d.version,
                                                 "X-Influxdb-Build": "OSS"})

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        d = self.dialect
        if d.ping == "absent":
            return web.Response(status=404, text="404 page not found")
        if d.ping == "core" and not write_authorized(d, self.token,
                                                     request.headers.get("Authorization", "")):
            return self.refuse("auth", 401, "authentication required", write=False)
        assert self.session is not None
        try:
            async with self.session.get(f"{self.influx_url}/ping",
                                        timeout=aiohttp.ClientTimeout(total=5.0)) as resp:
                ok = resp.status == 204
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        if d.ping == "core":
            return web.Response(status=200 if ok else 503, text="OK" if ok else "not ready")
        doc = {"name": "influxdb", "message": "ready for queries and writes", "status": "pass",
               "version": d.version}
        if not ok:
            doc.update(message="influxd is not answering /ping", status="fail")
        return self.json_response(200 if ok else 503, doc, write=False)

    # -- control API --

    async def handle_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            fault = parse_fault(spec, time.monotonic())
        except (ValueError, TypeError) as exc:  # TypeError: e.g. {"delay": null}
            return self.refuse("fault_invalid", 400, str(exc), write=False)
        now = time.monotonic()
        log.info("fault armed: %s", fault.describe(now))
        if fault.action == "clear":
            self.faults = []
        elif fault.action == "refuse":
            await self.refuse_for(fault.seconds or 0.0, keep=request.protocol)
        else:
            self.faults.append(fault)
        resp = self.json_response(200, {"armed": fault.describe(now)}, write=False)
        if fault.action == "refuse":
            resp.force_close()  # the caller's connection must not outlive the listener either
        return resp

    async def handle_stats(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.stats.active_faults = [f.describe(now) for f in self.faults if f.live(now)]
        if self.quota is not None:
            self.stats.quota_used_bytes = self.quota.used_in(time.time())
        return self.json_response(200, asdict(self.stats), write=False)

    async def handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.faults = []
        self.stats = FrontStats(upstream_version=self.stats.upstream_version,
                                flavor=self.dialect.name)
        if self.quota is not None:
            self.quota.reset()
        return self.json_response(200, {"reset": True}, write=False)
