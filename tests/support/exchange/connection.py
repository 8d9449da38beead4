"""One client WebSocket connection: its framing, subscriptions, liveness and writes.

Everything the server sends is written straight to the asyncio transport (frames.py builds
the bytes), so no send ever waits: a slow reader makes the transport buffer grow, as an
exchange would, until `max_send_buffer` is passed and the connection is aborted.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Set, Tuple

import orjson

from .frames import OP_PING, OP_PONG, close_frame, frame, framing_of, text_frame

log = logging.getLogger(__name__)

# How long a closing connection may take to answer our close frame before it is aborted.
CLOSE_GRACE_S = 5.0


class Connection:
    """State of one accepted WebSocket; the hub and the reader task both drive it."""

    def __init__(self, conn_id: int, transport: asyncio.Transport, path: str, combined: bool,
                 micro: bool, max_send_buffer: int) -> None:
        self.id = conn_id
        self.transport = transport
        self.path = path
        self.combined = combined
        self.micro = micro
        self.max_send_buffer = max_send_buffer
        self.streams: Dict[str, None] = {}  # ordered set, in subscription order
        self.symbols: Set[str] = set()  # uppercase symbols of the @trade streams held
        self.opened_at = time.monotonic()
        self.frames_received = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.trades_sent = 0
        self._incoming: Deque[float] = deque()
        self.pings: Deque[Tuple[bytes, float]] = deque()  # unanswered (payload, sent at)
        self.next_ping_at = 0.0
        self.closing = False
        self.close_deadline: Optional[float] = None
        self.close_cause: Optional[str] = None
        # (when, code, reason, cause): set by a serverShutdown with a delay
        self.scheduled_close: Optional[Tuple[float, int, str, str]] = None

    @property
    def framing(self) -> int:
        return framing_of(self.combined, self.micro)

    @property
    def open(self) -> bool:
        return not self.closing and not self.transport.is_closing()

    def write(self, data: bytes, frames: int = 1) -> bool:
        """Queue bytes for the client; aborts a client that fell hopelessly behind."""
        if not self.open:
            return False
        self.transport.write(data)
        self.frames_sent += frames
        self.bytes_sent += len(data)
        backlog = self.transport.get_write_buffer_size()
        if backlog > self.max_send_buffer:
            log.warning("connection %d (%s) is %d bytes behind (limit %d): aborting it",
                        self.id, ",".join(self.streams) or self.path, backlog,
                        self.max_send_buffer)
            self.abort("slow_client")
            return False
        return True

    def send_json(self, obj: Any) -> None:
        self.write(text_frame(orjson.dumps(obj)))

    def send_ping(self, now: float) -> None:
        payload = str(time.time_ns() // 1_000_000).encode()
        if self.write(frame(OP_PING, payload)):
            self.pings.append((payload, now))

    def send_pong(self, payload: bytes) -> None:
        self.write(frame(OP_PONG, payload[:125]))

    def on_pong(self, payload: bytes) -> bool:
        """Drop the answered ping and older ones; False for an unsolicited pong."""
        for i, (sent, _) in enumerate(self.pings):
            if sent == payload:
                for _ in range(i + 1):
                    self.pings.popleft()
                return True
        return False

    def pong_overdue(self, now: float, timeout: float) -> bool:
        return bool(self.pings) and now - self.pings[0][1] > timeout

    def count_incoming(self, now: float, limit: int) -> bool:
        """Count one client frame; True when more than `limit` arrived in the last second."""
        self.frames_received += 1
        incoming = self._incoming
        incoming.append(now)
        while incoming and incoming[0] <= now - 1.0:
            incoming.popleft()
        return len(incoming) > limit

    def close(self, code: int, reason: str, cause: str) -> None:
        """Send a close frame (after anything already queued) and wait for the answer."""
        if not self.open:
            return
        self.transport.write(close_frame(code, reason))
        self.closing = True
        self.close_cause = self.close_cause or cause
        self.close_deadline = time.monotonic() + CLOSE_GRACE_S

    def abort(self, cause: str) -> None:
        """Drop the TCP connection at once: no close frame, queued data discarded."""
        self.close_cause = self.close_cause or cause
        self.closing = True
        self.transport.abort()

    def info(self, now: float) -> Dict[str, Any]:
        return {"id": self.id, "path": self.path, "streams": list(self.streams),
                "combined": self.combined, "micro": self.micro,
                "age": round(now - self.opened_at, 3), "frames_received": self.frames_received,
                "frames_sent": self.frames_sent, "trades_sent": self.trades_sent,
                "bytes_sent": self.bytes_sent, "closing": self.closing,
                "send_buffer": self.transport.get_write_buffer_size()}
