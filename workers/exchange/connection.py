"""One WebSocket session of the exchange: websocket-client, thread-based and blocking.

A `Connection` is read by its own thread. Before it connects it takes a token from the host's
connection budget (connect_budget.py); a handshake the exchange refuses becomes a `Refusal` with
its Retry-After. Once open, the streams its URL could not hold are added with SUBSCRIBE messages,
paced at two a second and each checked for its acknowledgement (stream_plan.py says which).
Pings are answered by websocket-client on the reader thread, which never blocks on the network,
so a slow InfluxDB cannot cost us the connection. stream.py's keeper decides when to open,
replace and close connections.
"""
from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Optional, Protocol, Tuple

import orjson
import websocket

from workers.common.httputil import retry_after_s, system_ca_dir
from workers.common.timefmt import iso_seconds
from workers.exchange.protocol import ControlReply
from workers.exchange.stream_plan import ConnectionPlan
from workers.settings import websocket_ca_bundle_set

log = logging.getLogger(__name__)

OP_TEXT = websocket.ABNF.OPCODE_TEXT
OP_BINARY = websocket.ABNF.OPCODE_BINARY
OP_CLOSE = websocket.ABNF.OPCODE_CLOSE
CONNECT_TIMEOUT_S = 10.0
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
    """Serves websocket-client's frame parser exact byte counts from 64 KiB socket reads.

    The library reads each frame as three exact reads (header, extended length, payload) through
    `frame_buffer.recv_strict`, which sums and joins a list of pieces on every call, over a
    `recv` wrapper that asks the socket its timeout first; that is half of its per-frame cost.
    This replaces both: a frame that lies whole in the buffer costs one slice per read
    (measured: the library's loop through a real socket 8.7 us per message, through this
    reader 2.9 us; `scripts/bench --only ceilings`, stage by stage `--only hotpath`).
    It plugs in as `frame_buffer.recv_strict`, the one callable the frame parser reads through
    once the handshake is done.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv_strict(self, size: int) -> bytes:
        """Exactly `size` bytes; blocks for more; raises the library's error when the peer
        closed."""
        pos = self._pos
        end = pos + size
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        return self._refill(size)

    def _refill(self, size: int) -> bytes:
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < size:
            chunk = self._sock.recv(max(READ_CHUNK, size - have))
            if not chunk:
                raise websocket.WebSocketConnectionClosedException("connection closed by peer")
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts)  # a large frame is joined once, not grown read by read
        self._pos = size
        return self._buf[:size]

    def plug_into(self, ws: websocket.WebSocket) -> None:
        """Make `ws`'s frame parser read through this reader (after the handshake, which reads
        its reply byte by byte from the raw socket, so nothing of the stream is behind us)."""
        ws.frame_buffer.recv_strict = self.recv_strict  # type: ignore[method-assign,assignment]


def tls_options() -> Dict[str, str]:
    """websocket-client's TLS options for wss: verify against the system's hashed CA directory,
    read on demand, instead of loading the whole bundle into the context (a context: 0.4 MB of
    RSS instead of 1.6 MB, measured; httputil.system_ca_dir says when the directory is used). A
    WEBSOCKET_CLIENT_CA_BUNDLE the user set keeps its meaning. Plain ws ignores the options."""
    ca_dir = system_ca_dir()
    if ca_dir is None or websocket_ca_bundle_set():
        return {}
    return {"ca_cert_path": ca_dir}


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
        until = iso_seconds(self.until)
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
                                                      enable_multithread=True,
                                                      sslopt=tls_options())
            except websocket.WebSocketBadStatusException as exc:
                self.refusal = Refusal.of(exc)
                self.end_reason = self.refusal.describe()
                return
            except CONNECTION_ERRORS as exc:
                self.end_reason = f"connect failed: {type(exc).__name__}: {exc}"[:200]
                return
            self.ws.settimeout(None)  # the keeper detects a dead peer; no per-recv timeout cost
            if self.ws.sock is not None:
                BufferedReader(self.ws.sock).plug_into(self.ws)
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
        recv_data_frame = ws.recv_data_frame  # what ws.recv_data wraps, one call less a frame
        while True:
            try:
                opcode, frame = recv_data_frame(True)
            except CONNECTION_ERRORS as exc:  # the session ended; a handler's bug is not this
                return self._closing_reason or f"{type(exc).__name__}: {exc}"[:200]
            self.last_frame_at = time.monotonic()
            data = frame.data
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
