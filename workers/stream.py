"""The exchange connection: websocket-client, thread-based and blocking, kept alive forever.

A `Connection` is one WebSocket session read by its own thread. Before it connects it takes a
token from the host's connection budget (connect_budget.py); once open, the streams its URL could
not hold are added with SUBSCRIBE messages, paced at two a second and each checked for its
acknowledgement (stream_plan.py says which). The `StreamKeeper` owns the current connection of
one plan: it reconnects with capped, jittered backoff and honours a refused handshake's
Retry-After; closes a connection that has received no frame at all (not even Binance's 20 s
ping) for `dead_after_s`; and rotates make-before-break (new connection first, old one closed
once the new one is fully subscribed and delivers) before Binance's 24 h cut or when
`serverShutdown` arrives. The keeper never waits on the network or on REST: it ticks four times a
second and only looks at state. Pings are answered by websocket-client on the reader thread,
which never blocks on the network, so a slow InfluxDB cannot cost us the connection.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Tuple

import orjson
import websocket

from .backoff import Backoff
from .httputil import retry_after_s
from .protocol import ControlReply
from .stream_plan import PER_MESSAGE, ConnectionPlan, plan_one

log = logging.getLogger(__name__)

OP_TEXT = websocket.ABNF.OPCODE_TEXT
OP_BINARY = websocket.ABNF.OPCODE_BINARY
OP_CLOSE = websocket.ABNF.OPCODE_CLOSE
CONNECT_TIMEOUT_S = 10.0
HEALTHY_AFTER_S = 30.0  # a connection that lived this long (or got trades) resets the backoff
QUIET_SWITCH_S = 10.0  # rotation: a quiet pair's new connection takes over after this long
# SUBSCRIBE pacing: the exchange closes a connection that sends over 5 messages in any second
# (pongs included); two a second plus the pong to its 20 s ping stays far below.
SUBSCRIBE_SPACING_S = 0.5
ACK_TIMEOUT_S = 5.0
SUBSCRIBE_TRIES = 3  # then the connection is dropped and a new one starts over
REFUSAL_MAX_WAIT_S = 3 * 86400.0  # a 418 ban lasts up to 3 days
# Network-side failures end a session and the keeper reconnects; anything else is a bug.
CONNECTION_ERRORS = (websocket.WebSocketException, OSError)


READ_CHUNK = 65536


class BufferedReader:
    """Feeds websocket-client's frame parser from 64 KiB socket reads.

    The library reads each frame with separate small recv() calls for its header and its
    payload, each through a wrapper that asks the socket its timeout first. Serving those reads
    from one large read halves the receive cost (measured here: 8.4 -> 4.8 us per message, the
    bare loop from ~113k to ~200k messages/s), which is most of a worker's per-trade budget.
    It plugs in as `frame_buffer.recv`, the one callable the parser reads through.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(READ_CHUNK)
            if not buf:
                raise websocket.WebSocketConnectionClosedException("connection closed by peer")
            self._buf, pos = buf, 0
        self._pos = pos + size
        return buf[pos:pos + size]


class Budget(Protocol):
    """The host's connection budget (connect_budget.ConnectBudget)."""

    def acquire(self, stopping: threading.Event, on_wait: Callable[[float], None]) -> bool: ...

    def hold(self, until: float, reason: str) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """A handshake the exchange answered with an HTTP error instead of an upgrade."""

    status: int
    retry_after: float  # seconds, 0 when the answer did not say
    body: str
    at: float  # time.time() of the answer

    @classmethod
    def of(cls, exc: websocket.WebSocketBadStatusException) -> "Refusal":
        headers = {str(k).lower(): v for k, v in (exc.resp_headers or {}).items()}
        retry_after = min(retry_after_s(headers) or 0.0, REFUSAL_MAX_WAIT_S)
        body = (exc.resp_body or b"").decode("utf-8", "replace").strip()
        return cls(exc.status_code, retry_after, body[:200], time.time())

    @property
    def until(self) -> float:
        return self.at + self.retry_after

    def describe(self) -> str:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.until))
        cause = {
            429: f"too many connection attempts from this IP: waiting {self.retry_after:.0f}s "
                 f"(Retry-After)",
            418: f"this IP is banned by the exchange until {until} (418, Retry-After "
                 f"{self.retry_after:.0f}s): every worker of the host waits",
            414: "the stream URL is too long for the exchange: moving streams to SUBSCRIBE "
                 "messages",
        }.get(self.status, "refused by the exchange")
        return f"handshake refused: HTTP {self.status}: {cause}; answer={self.body!r}"


class Connection:
    """One WebSocket session of a plan; frames go to `on_frame(data, opcode, conn)`."""

    def __init__(self, worker: str, plan: ConnectionPlan, label: str,
                 on_frame: Callable[[bytes, int, "Connection"], None],
                 budget: Optional[Budget] = None) -> None:
        self.worker = worker
        self.plan = plan
        self.url = plan.url
        self.label = label
        self.on_frame = on_frame
        self.budget = budget
        self.ws: Optional[websocket.WebSocket] = None
        self.opened_at = 0.0
        self.last_frame_at = 0.0
        self.trades = 0  # trades this connection delivered (the worker counts them)
        self.last_trade_at = 0.0
        self.shutdown_announced = False
        self.stale_reason = ""  # set by the prober when REST shows trades this one missed
        self.opening_probed = False  # the prober's one REST check of a quiet new connection
        self.waiting_budget_s = 0.0  # > 0 while the host's connection budget is spent
        self.refusal: Optional[Refusal] = None
        self.ended = threading.Event()
        self.end_reason = ""
        self._closing_reason = ""
        self._cancel = threading.Event()
        # Subscriptions: the URL's streams count as subscribed once the connection is open.
        self._lock = threading.Lock()
        self._pending: Deque[Tuple[Tuple[str, ...], int]] = deque((s, 0) for s in plan.subscribe)
        self._inflight: Dict[int, Tuple[Tuple[str, ...], float, int]] = {}
        self._next_id = 0
        self._last_sent = 0.0
        self.subscribed = plan.streams - sum(len(s) for s in plan.subscribe)
        self.thread = threading.Thread(target=self._run, name=f"ws-{worker}-{label}",
                                       daemon=True)

    def start(self) -> "Connection":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            if self.budget is not None and not self.budget.acquire(self._cancel,
                                                                   self._budget_wait):
                self.end_reason = self._closing_reason or "stopped before connecting"
                return
            self.waiting_budget_s = 0.0
            try:
                self.ws = websocket.create_connection(self.url, timeout=CONNECT_TIMEOUT_S,
                                                      skip_utf8_validation=True,
                                                      enable_multithread=True)
            except websocket.WebSocketBadStatusException as exc:
                self.refusal = Refusal.of(exc)
                self.end_reason = self.refusal.describe()
                return
            except CONNECTION_ERRORS as exc:
                self.end_reason = f"connect failed: {type(exc).__name__}: {exc}"[:200]
                return
            self.ws.settimeout(None)  # the keeper detects a dead peer; no per-recv timeout cost
            # After the handshake, which reads its reply byte by byte from the raw socket, so
            # nothing of the stream is behind us.
            if self.ws.sock is not None and hasattr(self.ws.frame_buffer, "recv"):
                self.ws.frame_buffer.recv = BufferedReader(self.ws.sock).recv
            self.opened_at = self.last_frame_at = time.monotonic()
            log.info("worker=%s event=connected conn=%s streams=%d in_url=%d url_chars=%d",
                     self.worker, self.label, self.plan.streams, self.subscribed, len(self.url))
            self.end_reason = self._read()
        finally:
            self._close_socket()
            self.ended.set()

    def _budget_wait(self, seconds: float) -> None:
        if not self.waiting_budget_s:
            log.warning("worker=%s event=connect_budget_wait conn=%s wait_s=%.1f note='the "
                        "host's connection budget (WS_CONNECT_LIMIT) is spent: waiting; trades "
                        "meanwhile are backfilled'", self.worker, self.label, seconds)
        self.waiting_budget_s = max(seconds, 0.001)

    def _read(self) -> str:
        ws = self.ws
        assert ws is not None
        on_frame = self.on_frame
        while True:
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except CONNECTION_ERRORS as exc:  # the session ended; a handler's bug is not this
                return self._closing_reason or f"{type(exc).__name__}: {exc}"[:200]
            self.last_frame_at = time.monotonic()
            if opcode == OP_TEXT or opcode == OP_BINARY:
                on_frame(data, opcode, self)
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                reason = data[2:].decode("utf-8", "replace")
                return f"server closed: code={code} reason={reason!r}"
            elif not data and opcode == 0 and self._closing_reason:
                return self._closing_reason

    # -- subscriptions (the keeper's tick sends, the reader thread takes the replies) -------
    @property
    def fully_subscribed(self) -> bool:
        return (bool(self.opened_at) and not self._pending and not self._inflight
                and not self._closing_reason)

    def pump(self, now: float) -> None:
        """Send the next SUBSCRIBE when its turn has come; re-send the unacknowledged ones."""
        if not self.opened_at or self.ended.is_set() or self._closing_reason:
            return
        message = None
        with self._lock:
            for req_id, (streams, sent_at, tries) in list(self._inflight.items()):
                if now - sent_at > ACK_TIMEOUT_S:
                    del self._inflight[req_id]
                    self._retry(streams, tries, f"no acknowledgement of id {req_id} in "
                                                f"{ACK_TIMEOUT_S:.0f}s")
            if self._pending and now - self._last_sent >= SUBSCRIBE_SPACING_S:
                streams, tries = self._pending.popleft()
                self._next_id += 1
                self._inflight[self._next_id] = (streams, now, tries + 1)
                self._last_sent = now
                message = orjson.dumps({"method": "SUBSCRIBE", "params": list(streams),
                                        "id": self._next_id})
        ws = self.ws
        if message is not None and ws is not None:
            try:
                ws.send(message.decode())
            except CONNECTION_ERRORS as exc:
                self.close(f"SUBSCRIBE send failed: {type(exc).__name__}: {exc}"[:200])

    def control_reply(self, reply: ControlReply) -> None:
        """The answer to one of our SUBSCRIBE messages (reader thread)."""
        with self._lock:
            entry = self._inflight.pop(reply.request_id, None)
            if entry is None:
                log.warning("worker=%s event=control_reply_unexpected conn=%s reply=%r",
                            self.worker, self.label, (reply.request_id, reply.error))
                return
            streams, _, tries = entry
            if reply.error:
                self._retry(streams, tries, f"error reply {reply.error!r}")
                return
            self.subscribed += len(streams)
            done = not self._pending and not self._inflight
        if done:
            log.info("worker=%s event=subscribed conn=%s streams=%d took_s=%.1f", self.worker,
                     self.label, self.subscribed, self.age)

    def _retry(self, streams: Tuple[str, ...], tries: int, why: str) -> None:
        """Under the lock: send a failed SUBSCRIBE again, or give this connection up."""
        if tries >= SUBSCRIBE_TRIES:
            log.error("worker=%s event=subscribe_failed conn=%s streams=%d tries=%d why=%r "
                      "action=reconnect", self.worker, self.label, len(streams), tries, why)
            self._closing_reason = self._closing_reason or f"SUBSCRIBE failed {tries} times: {why}"
            self._cancel.set()
            self._close_socket(shutdown_only=True)
            return
        log.warning("worker=%s event=subscribe_retry conn=%s streams=%d try=%d why=%r",
                    self.worker, self.label, len(streams), tries + 1, why)
        self._pending.appendleft((streams, tries))

    # -- ending --------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """End the session from another thread (unblocks the reader, or a budget wait)."""
        if not self._closing_reason:
            self._closing_reason = reason
        self._cancel.set()
        self._close_socket(shutdown_only=True)

    def _close_socket(self, shutdown_only: bool = False) -> None:
        ws = self.ws
        if ws is None or ws.sock is None:
            return
        try:
            if shutdown_only:
                ws.sock.shutdown(socket.SHUT_RDWR)
            else:
                ws.close(timeout=1)
        except Exception:
            pass  # already gone

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened_at if self.opened_at else 0.0

    @property
    def connected(self) -> bool:
        return bool(self.opened_at) and not self.ended.is_set()


class StreamKeeper:
    """Keeps one live connection for `plan` until `stop()`; see the module docstring."""

    def __init__(self, worker: str, plan: ConnectionPlan,
                 on_frame: Callable[[bytes, int, Connection], None],
                 dead_after_s: float, max_age_s: float,
                 on_reconnect: Callable[[str], None],
                 stall_check: Optional[Callable[[Connection], None]] = None,
                 budget: Optional[Budget] = None, base_url: str = "") -> None:
        self.worker = worker
        self.plan = plan
        self.base_url = base_url
        self.on_frame = on_frame
        self.dead_after_s = dead_after_s
        self.max_age_s = max_age_s
        self.on_reconnect = on_reconnect
        self.stall_check = stall_check
        self.budget = budget
        self.backoff = Backoff(1.0, 60.0)
        self.current: Optional[Connection] = None
        self.next: Optional[Connection] = None
        self.connections = 0
        self.next_attempt_at = 0.0  # monotonic; no new connection before this
        self.last_refusal: Optional[Refusal] = None
        self.last_end = ""  # why the last connection ended (or failed to open), for status
        self._refusals_logged: Dict[Tuple[int, str], float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"keeper-{worker}-{plan.label}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _new(self, why: str) -> Connection:
        self.connections += 1
        return Connection(self.worker, self.plan, f"{self.plan.label}c{self.connections}",
                          self.on_frame, self.budget).start()

    def _run(self) -> None:
        self.current = self._new("start")
        while not self.stopping.wait(0.25):
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        cur = self.current
        if cur is None:
            if now >= self.next_attempt_at and not self.stopping.is_set():
                self.on_reconnect("reconnect")
                self.current = self._new("reconnect")
            return
        cur.pump(now)
        if cur.ended.is_set():
            self._ended(cur, now)
            return
        if self.next is not None:
            self.next.pump(now)
            self._maybe_switch(now)
        elif cur.opened_at:
            self._check(cur, now)

    def _ended(self, cur: Connection, now: float) -> None:
        self.last_end = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {cur.end_reason}"
        if cur.refusal is not None:
            self._refused(cur.refusal)
        else:
            log.warning("worker=%s event=disconnected conn=%s after_s=%.1f reason=%r",
                        self.worker, cur.label, cur.age, cur.end_reason)
        nxt = self.next
        if nxt is not None and nxt.opened_at and not nxt.ended.is_set():
            self.current, self.next = nxt, None  # the rotation target is already live
            self.on_reconnect(cur.end_reason)
            return
        if cur.opened_at and (cur.trades > 0 or cur.age >= HEALTHY_AFTER_S):
            self.backoff.reset()  # it worked: the next failure starts the backoff afresh
        wait = cur.refusal.retry_after if cur.refusal is not None else 0.0
        delay = self.backoff.next_delay(wait)
        log.info("worker=%s event=reconnecting conn=%s in_s=%.1f", self.worker, self.plan.label,
                 delay)
        self.current = None
        self.next_attempt_at = now + delay

    def _refused(self, refusal: Refusal) -> None:
        """Say once what the exchange refused and why; 429/418 hold every worker of the host."""
        self.last_refusal = refusal
        if refusal.status in (418, 429) and self.budget is not None and refusal.retry_after:
            self.budget.hold(refusal.until, f"HTTP {refusal.status}")
        if refusal.status == 414 and self.base_url:  # the exchange's cut is shorter than ours
            self.plan = plan_one(self.plan.label, self.base_url, self.plan.symbols,
                                 len(self.plan.url) // 2, PER_MESSAGE)
        key = (refusal.status, refusal.body)
        now = time.monotonic()
        if now - self._refusals_logged.get(key, -3600.0) >= 3600.0:
            self._refusals_logged[key] = now
            log.error("worker=%s event=handshake_refused conn=%s status=%d retry_after_s=%.0f "
                      "detail=%r", self.worker, self.plan.label, refusal.status,
                      refusal.retry_after, refusal.describe())

    def _check(self, cur: Connection, now: float) -> None:
        silent = now - cur.last_frame_at
        if silent > self.dead_after_s:
            cur.close(f"no frame for {silent:.0f}s (dead peer)")
        elif cur.stale_reason:
            cur.close(cur.stale_reason)
        elif now < self.next_attempt_at:
            return  # a rotation failed a moment ago: not before its backoff
        elif cur.shutdown_announced:
            self._rotate(cur, "serverShutdown")
        elif cur.age > self.max_age_s:
            self._rotate(cur, f"age {cur.age:.0f}s over {self.max_age_s:.0f}s")
        elif self.stall_check is not None:
            self.stall_check(cur)  # never blocks: REST runs on the prober thread

    def _rotate(self, cur: Connection, why: str) -> None:
        log.info("worker=%s event=rotate_start conn=%s why=%r", self.worker, cur.label, why)
        self.next = self._new("rotate")

    def _maybe_switch(self, now: float) -> None:
        cur, nxt = self.current, self.next
        assert cur is not None and nxt is not None
        if nxt.ended.is_set():  # the new one failed: keep the old one, try again later
            if nxt.refusal is not None:
                self._refused(nxt.refusal)
            log.warning("worker=%s event=rotate_failed reason=%r", self.worker, nxt.end_reason)
            self.next = None
            wait = nxt.refusal.retry_after if nxt.refusal is not None else 0.0
            self.next_attempt_at = now + self.backoff.next_delay(wait)
            return
        if now - cur.last_frame_at > self.dead_after_s:
            cur.close("no frame during rotation (dead peer)")
        if not nxt.fully_subscribed:
            return
        quiet_long_enough = nxt.age >= QUIET_SWITCH_S
        if nxt.trades > 0 or quiet_long_enough or cur.ended.is_set():
            log.info("worker=%s event=rotate_done old=%s new=%s", self.worker, cur.label,
                     nxt.label)
            self.current, self.next = nxt, None
            cur.close("rotated")
            self.backoff.reset()

    def state(self) -> Dict[str, Any]:
        """For the status file: is the connection up, subscribed, waiting or refused."""
        cur = self.current
        refusal = self.last_refusal
        return {
            "conn": self.plan.label, "streams": self.plan.streams,
            "connected": bool(cur and cur.connected),
            "subscribed": cur.subscribed if cur and cur.connected else 0,
            "waiting_budget_s": round(cur.waiting_budget_s, 1) if cur and not cur.opened_at
            else 0.0,
            "refused": None if refusal is None or refusal.until < time.time() else
            {"status": refusal.status, "until": refusal.until, "detail": refusal.describe()},
            "last_end": self.last_end,
        }

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        for conn in (self.current, self.next):
            if conn is not None:
                conn.close("stopping")
        if self.thread.ident is not None:
            self.thread.join(timeout)
        for conn in (self.current, self.next):
            if conn is not None and conn.thread.ident is not None:
                conn.thread.join(timeout)

