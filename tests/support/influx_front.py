"""A loopback front that makes InfluxDB 1.6.7 look like the InfluxDB 2.x write API, with faults.

Test support, not product. Debian's influxd 1.6.7 has no `/api/v2/write`, so the official
`influxdb-client` cannot write to it. This front accepts

    POST /api/v2/write?org=..&bucket=db[/rp]&precision=ns|us|ms|s   (Authorization: Token ..)

and forwards the body to influxd's `/write?db=..&rp=..&precision=n|u|ms|s`, translating the
answers into 2.x-style JSON errors. It also serves `GET /health`, `GET|HEAD /ping` and proxies
InfluxQL `/query`.

Faults are armed at start (`--fault`) or at run time on the control API:

    POST /_front/fault  {"action": ACTION, "count": N, "seconds": S, ...}
    GET  /_front/stats
    POST /_front/reset  (clears faults and stats)

ACTION is one of (each for the next `count` write requests and/or `seconds`; default count=1):

    throttle      429 with `Retry-After: retry_after` (default 1 s; null leaves it out)
    unavailable   503 (optional retry_after)
    server_error  500 (optional retry_after)
    unauthorized  401 whatever the token
    slow          wait `delay` seconds (default 1) before going on; stacks with the others
    reset         abort the connection (TCP RST) after reading the body, no response
    partial       forward all but the first `drop` lines (default 1), answer 400 partial write
    conflict      like InfluxDB 1.x meeting a field type conflict: lines containing `match`
                  (e.g. "symbol=ETHUSDT") are not forwarded, the rest are, and the answer is 400
                  "partial write: field type conflict: ... dropped=N" with N the refused lines.
                  Refusal follows the content, as the real server's does, so arm it with
                  `seconds` for a writer that writes the lines again in parts. The real server
                  does this too (tests/integration/test_partial_writes.py): use this fault
                  where a conflict by symbol, or one that ends, is wanted.
    refuse        stop listening for `seconds` (required), then listen on the same port again
    clear         disarm every fault (stats are kept)

Run: python -m tests.support.influx_front --influx-url http://127.0.0.1:8086 --port 9999
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import logging
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import aiohttp
from aiohttp import web

from tests.support.procs import ManagedProcess, free_port, python_argv
from workers.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME

log = logging.getLogger("influx_front")

# v2 precision name -> 1.6.7 /write precision. 1.6.7 reads any unknown value (`ns`, `us`)
# as nanoseconds without complaint, so the v2 names must never reach it unmapped.
PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
FRONT_VERSION = "2.7.0-influx-front"
STATUS_FAULTS = {"throttle": 429, "unavailable": 503, "server_error": 500, "unauthorized": 401}
REQUEST_FAULTS = set(STATUS_FAULTS) | {"slow", "reset", "partial", "conflict"}
ACTIONS = REQUEST_FAULTS | {"refuse", "clear"}
ERROR_CODES = {400: "invalid", 401: "unauthorized", 404: "not found", 413: "request too large",
               429: "too many requests", 500: "internal error", 503: "unavailable"}
UPSTREAM_TIMEOUT_S = 60.0
REBIND_ATTEMPTS = 25  # x 0.2 s after a refuse period
BUSY_WAIT_STEPS = 50  # x 0.02 s for in-flight answers before a refuse closes connections


# --- faults and stats (shared by the server and the controller) ----------------------------

@dataclass
class Fault:
    """One armed fault. Ends when `count` requests are used up or at `until` (monotonic)."""

    action: str
    count: Optional[int] = None
    until: Optional[float] = None
    retry_after: Optional[int] = None
    delay: float = 0.0
    drop: int = 1
    seconds: Optional[float] = None
    match: Optional[str] = None

    def live(self, now: float) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.until is None or now < self.until

    def use(self) -> None:
        if self.count is not None:
            self.count -= 1

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        extra = {"slow": "delay", "partial": "drop", "conflict": "match"}.get(self.action,
                                                                             "retry_after")
        for key in ("count", "seconds", extra):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.until is not None:
            out["seconds_left"] = round(max(0.0, self.until - now), 3)
        return out


def parse_fault(spec: Mapping[str, Any], now: float) -> Fault:
    """A Fault from a control-API/CLI mapping; ValueError explains what is wrong."""
    known = {"action", "count", "seconds", "retry_after", "delay", "drop", "match"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown fault parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    action = str(spec.get("action", ""))
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
    count = spec.get("count")
    seconds = spec.get("seconds")
    if action == "refuse":
        if seconds is None or count is not None:
            raise ValueError("refuse takes `seconds` (and no `count`)")
    elif action in REQUEST_FAULTS and count is None and seconds is None:
        count = 1
    default_retry = 1 if action == "throttle" else None
    retry_after = spec.get("retry_after", default_retry)
    fault = Fault(action=action,
                  count=None if count is None else int(count),
                  until=None if seconds is None else now + float(seconds),
                  retry_after=None if retry_after is None else int(retry_after),
                  delay=float(spec.get("delay", 1.0 if action == "slow" else 0.0)),
                  drop=int(spec.get("drop", 1)),
                  seconds=None if seconds is None else float(seconds),
                  match=None if spec.get("match") is None else str(spec["match"]))
    if action == "conflict" and not fault.match:
        raise ValueError("conflict takes `match`: the text of the lines to refuse")
    if (fault.count is not None and fault.count < 0) or fault.delay < 0 or fault.drop < 0:
        raise ValueError("count, delay and drop must not be negative")
    return fault


def parse_fault_arg(text: str) -> dict[str, Any]:
    """`--fault` value: JSON object, or `action[:key=value,...]` such as `throttle:count=3`."""
    if text.lstrip().startswith("{"):
        spec: dict[str, Any] = json.loads(text)
        return spec
    action, _, rest = text.partition(":")
    spec = {"action": action.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault parameter {item!r} is not key=value")
        spec[key.strip()] = None if value in ("", "null", "none") else json.loads(value)
    return spec


@dataclass
class FrontStats:
    """Counters since start or the last reset. `by_status` keys: "204", "429", ..., "reset"."""

    write_requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    bodies_received: int = 0
    gzip_bodies: int = 0
    bytes_received: int = 0
    lines_received: int = 0
    lines_by_measurement: dict[str, int] = field(default_factory=dict)  # received, per name
    lines_forwarded: int = 0
    query_requests: int = 0
    upstream_version: str = ""
    active_faults: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: int | str) -> int:
        return self.by_status.get(str(status), 0)


def data_lines(body: bytes) -> list[bytes]:
    """Line-protocol lines that carry a point (no blanks, no `#` comments)."""
    return [ln for ln in body.split(b"\n") if ln.strip() and not ln.lstrip().startswith(b"#")]


def measurement_of(line: bytes) -> str:
    """The measurement of a line-protocol line (up to the first unescaped comma or space)."""
    i = 0
    while i < len(line) and line[i:i + 1] not in (b",", b" "):
        i += 2 if line[i:i + 1] == b"\\" else 1
    return line[:i].decode("utf-8", "replace")


def error_body(status: int, message: str) -> dict[str, str]:
    return {"code": ERROR_CODES.get(status, "internal error"), "message": message}


# --- the aiohttp server --------------------------------------------------------------------

class FrontServer:
    """The running front: routes, fault state, stats, and the listening site."""

    def __init__(self, influx_url: str, host: str, port: int, token: Optional[str]) -> None:
        self.influx_url = influx_url.rstrip("/")
        self.host = host
        self.port = port
        self.token = token
        self.faults: list[Fault] = []
        self.stats = FrontStats()
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
        log.info("influx-front on http://%s:%d -> %s (token %s), faults %s", self.host, self.port,
                 self.influx_url, "required" if self.token else "not checked",
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

    # -- helpers --

    def json_response(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None,
                      write: bool = True) -> web.Response:
        if write:
            self.stats.by_status[str(status)] = self.stats.by_status.get(str(status), 0) + 1
        return web.json_response(payload, status=status, headers=headers)

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        if header == f"Token {self.token}":
            return True
        # The 1.x-compatible /query of 2.x also takes the token as password (p= or Basic).
        if request.path == "/query":
            if request.query.get("p") == self.token:
                return True
            if header.startswith("Basic "):
                try:
                    _, _, password = base64.b64decode(header[6:]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return password == self.token
        return False

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

    # -- handlers --

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
            return self.json_response(400, error_body(400, f"unable to decompress body: {exc}"))
        lines = data_lines(plain)
        st.lines_received += len(lines)
        for line in lines:
            name = measurement_of(line)
            st.lines_by_measurement[name] = st.lines_by_measurement.get(name, 0) + 1

        if not self.authorized(request):
            return self.json_response(401, error_body(401, "unauthorized access"))
        precision = request.query.get("precision", "ns")
        if precision not in PRECISIONS:
            return self.json_response(400, error_body(
                400, "invalid precision; valid precision units are ns, us, ms, and s"))
        bucket = request.query.get("bucket", "")
        if not bucket:
            return self.json_response(400, error_body(400, "bucket is required"))
        db, _, rp = bucket.partition("/")

        delay, fault = self.take_faults()
        if delay:
            await asyncio.sleep(delay)
        forward_body, forward_gzip, dropped = body, gzipped, 0
        partial_message = ""
        if fault is not None:
            if fault.action == "reset":
                return self.abort(request)
            if fault.action in STATUS_FAULTS:
                status = STATUS_FAULTS[fault.action]
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                message = "unauthorized access" if status == 401 else f"{fault.action} (fault)"
                return self.json_response(status, error_body(status, message), headers)
            if fault.action == "partial":
                dropped = min(fault.drop, len(lines))
                forward_body, forward_gzip = b"\n".join(lines[dropped:]), False
                lines = lines[dropped:]
                partial_message = f"partial write: influx-front rejected the first {dropped} " \
                                  f"line(s) dropped={dropped}"
            if fault.action == "conflict":
                assert fault.match is not None
                needle = fault.match.encode()
                kept = [ln for ln in lines if needle not in ln]
                refused = [ln for ln in lines if needle in ln]
                dropped = len(refused)
                forward_body, forward_gzip, lines = b"\n".join(kept), False, kept
                measurement = refused[0].split(b",", 1)[0].decode() if refused else "?"
                partial_message = (f'partial write: field type conflict: input field "price_str" '
                                   f'on measurement "{measurement}" is type string, already '
                                   f"exists as type float dropped={dropped}")

        params = {"db": db, "precision": PRECISIONS[precision]}
        if rp:
            params["rp"] = rp
        headers = {"Content-Encoding": "gzip"} if forward_gzip else {}
        assert self.session is not None
        try:
            async with self.session.post(f"{self.influx_url}/write", params=params,
                                         data=forward_body, headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self.json_response(503, error_body(503, f"influxd unreachable: {exc}"))
        st.lines_forwarded += len(lines)
        if status == 204 and dropped:
            return self.json_response(400, error_body(400, partial_message))
        if 200 <= status < 300:
            st.by_status[str(status)] = st.by_status.get(str(status), 0) + 1
            return web.Response(status=status)
        return self.translate_error(status, text, bucket)

    def translate_error(self, status: int, text: str, bucket: str) -> web.Response:
        try:
            message = str(json.loads(text).get("error", text))
        except (ValueError, AttributeError):
            message = text.strip()
        # A missing db or rp is a missing bucket to a 2.x client (1.6.7 says 500 for the rp).
        if status == 404 or "retention policy not found" in message:
            return self.json_response(404, error_body(404, f'bucket "{bucket}" not found'))
        return self.json_response(status, error_body(status, message))

    async def handle_health(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        doc = {"name": "influxdb", "message": "ready for queries and writes", "status": "pass",
               "version": FRONT_VERSION}
        try:
            async with self.session.get(f"{self.influx_url}/ping",
                                        timeout=aiohttp.ClientTimeout(total=5.0)) as resp:
                ok = resp.status == 204
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        if not ok:
            doc.update(message="influxd is not answering /ping", status="fail")
        return self.json_response(200 if ok else 503, doc, write=False)

    async def handle_ping(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"X-Influxdb-Version": FRONT_VERSION,
                                                 "X-Influxdb-Build": "OSS"})

    async def handle_query(self, request: web.Request) -> web.StreamResponse:
        self.stats.query_requests += 1
        if not self.authorized(request):
            return self.json_response(401, error_body(401, "unauthorized access"), write=False)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "content-encoding", "accept")}
        assert self.session is not None
        try:
            async with self.session.request(request.method, f"{self.influx_url}/query",
                                            params=request.query, data=body or None,
                                            headers=headers) as resp:
                payload = await resp.read()
                ctype = resp.headers.get("Content-Type", "application/json")
                return web.Response(status=resp.status, body=payload,
                                    headers={"Content-Type": ctype})
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return self.json_response(503, error_body(503, f"influxd unreachable: {exc}"),
                                      write=False)

    async def handle_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            fault = parse_fault(spec, time.monotonic())
        except (ValueError, TypeError) as exc:  # TypeError: e.g. {"delay": null}
            return self.json_response(400, error_body(400, str(exc)), write=False)
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
        return self.json_response(200, asdict(self.stats), write=False)

    async def handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.faults = []
        self.stats = FrontStats(upstream_version=self.stats.upstream_version)
        return self.json_response(200, {"reset": True}, write=False)


async def serve(influx_url: str, host: str, port: int, token: Optional[str],
                faults: Sequence[Fault]) -> None:
    """Run the front until SIGTERM or SIGINT."""
    server = FrontServer(influx_url, host, port, token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(faults)
        await stop.wait()
    finally:
        await server.close()
    log.info("influx-front stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.influx_front",
        description="Serve the InfluxDB 2.x write API on loopback in front of an InfluxDB 1.x "
                    "server, with faults on demand (see the module docstring for actions).")
    parser.add_argument("--influx-url", required=True,
                        help="the influxd 1.x HTTP URL, e.g. http://127.0.0.1:8086")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--token", default=None,
                        help="require `Authorization: Token TOKEN` (default: accept any)")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                        help="arm a fault at start: `action[:key=value,...]` or a JSON object, "
                             "e.g. `throttle:count=3,retry_after=2`; repeatable")
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        faults = [parse_fault(parse_fault_arg(text), time.monotonic()) for text in args.fault]
    except (ValueError, TypeError) as exc:
        print(f"influx-front: bad --fault: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        asyncio.run(serve(args.influx_url, args.host, args.port, args.token, faults))
    except OSError as exc:  # typically the port is taken
        print(f"influx-front: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


# --- the controller used by tests ----------------------------------------------------------

@dataclass
class InfluxFront:
    """A front running as a child process. Create with `InfluxFront.start(...)`."""

    port: int
    influx_url: str
    token: Optional[str]
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, tmp_dir: Path, influx_url: str, token: Optional[str] = None,
              port: Optional[int] = None, faults: Sequence[Mapping[str, Any]] = (),
              timeout: float = 15.0) -> "InfluxFront":
        """Run `python -m tests.support.influx_front` (log in `tmp_dir`) and wait for /ping.

        `faults` are armed before the first request, e.g. [{"action": "throttle", "count": 2}];
        with a `refuse` fault the wait includes the refusal.
        """
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        attempts = 1 if port is not None else 3  # a picked port can be taken before we bind
        output = ""
        for _ in range(attempts):
            chosen = port if port is not None else free_port()
            argv = python_argv("-m", "tests.support.influx_front", "--influx-url", influx_url,
                               "--port", str(chosen))
            if token is not None:
                argv += ["--token", token]
            for spec in faults:
                argv += ["--fault", json.dumps(dict(spec))]
            proc = ManagedProcess(f"influx-front-{chosen}", argv,
                                  tmp / f"influx-front-{chosen}.log").start()
            front = cls(chosen, influx_url, token, proc)
            if front._wait_ready(timeout):
                return front
            proc.stop()
            output = proc.output()[-2000:]
            if "address already in use" not in output.lower():
                break
        raise RuntimeError(f"influx-front did not answer /ping; its output:\n{output}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.alive():
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as resp:
                    if resp.status == 204:
                        return True
            except OSError:  # refused until the child has bound the port
                pass
            time.sleep(0.02)
        return False

    def _call(self, method: str, path: str, payload: Optional[Any] = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10.0) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise ValueError(f"{method} {path}: {err.code} {err.read().decode()}") from None

    def fault(self, action: str, **params: Any) -> dict[str, Any]:
        """Arm a fault, e.g. `fault("throttle", count=2, retry_after=1)`; returns its summary."""
        armed: dict[str, Any] = self._call("POST", "/_front/fault", {"action": action, **params})
        return armed

    def clear_faults(self) -> None:
        self._call("POST", "/_front/fault", {"action": "clear"})

    def reset(self) -> None:
        """Disarm all faults and zero the stats."""
        self._call("POST", "/_front/reset", {})

    def stats(self) -> FrontStats:
        raw = self._call("GET", "/_front/stats")
        return FrontStats(**raw)

    def stop(self) -> Optional[int]:
        return self.process.stop(timeout=10.0)


if __name__ == "__main__":
    sys.exit(main())
