"""All open connections: trade fan-out, pings and timeouts, and fault broadcasts."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Dict, Iterable, List, Optional, Set

from .config import SimConfig
from .connection import Connection
from .faults import FaultState, malformed_frame
from .market import Market, Release, SymbolState
from .protocol import StreamTarget, trade_symbol
from .stats import SimStats

log = logging.getLogger(__name__)

RESEND_CHUNK = 10_000  # trades encoded per join when re-sending a long span


class Hub:
    """Connections by id and by the symbols they carry."""

    def __init__(self, config: SimConfig, market: Market, faults: FaultState,
                 stats: SimStats) -> None:
        self.config = config
        self.market = market
        self.faults = faults
        self.stats = stats
        self.connections: Dict[int, Connection] = {}
        self.subscribers: Dict[str, Set[Connection]] = {}
        self._next_id = 1

    def open(self, transport: asyncio.Transport, target: StreamTarget, path: str) -> Connection:
        conn = Connection(self._next_id, transport, path, target.combined, target.micro,
                          self.config.max_send_buffer)
        self._next_id += 1
        conn.next_ping_at = conn.opened_at + self.config.ping_interval
        self.connections[conn.id] = conn
        self.stats.accepted += 1
        self.subscribe(conn, target.streams)
        log.info("connection %d opened: %s", conn.id, path[:200])
        return conn

    def drop(self, conn: Connection, cause: str) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        for symbol in conn.symbols:
            self.subscribers.get(symbol, set()).discard(conn)
        final = conn.close_cause or cause
        self.stats.closes[final] += 1
        log.info("connection %d closed (%s) after %.1fs, %d trades sent", conn.id, final,
                 time.monotonic() - conn.opened_at, conn.trades_sent)

    def subscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in conn.streams:
                continue
            conn.streams[stream] = None
            symbol = trade_symbol(stream)
            if symbol is not None:
                conn.symbols.add(symbol)
                self.subscribers.setdefault(symbol, set()).add(conn)

    def unsubscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in conn.streams:
                del conn.streams[stream]
                symbol = trade_symbol(stream)
                if symbol is not None:
                    conn.symbols.discard(symbol)
                    self.subscribers.get(symbol, set()).discard(conn)

    def select(self, symbol: Optional[str]) -> List[Connection]:
        """Open connections carrying `symbol`'s trades, or all open ones for None."""
        conns = (self.connections.values() if symbol is None
                 else self.subscribers.get(symbol.upper(), set()))
        return [c for c in conns if c.open]

    # --- trades -------------------------------------------------------------------------

    def deliver(self, releases: List[Release], now: float) -> None:
        for rel in releases:
            if rel.send_from <= rel.last and self.subscribers.get(rel.state.name):
                self._send_span(rel.state, rel.send_from, rel.last, now)

    def _send_span(self, state: SymbolState, first: int, last: int, now: float) -> int:
        """Write ids first..last to every receiving subscriber; returns connections reached."""
        groups: Dict[int, List[Connection]] = {}
        silences = self.faults.silences
        for conn in self.subscribers.get(state.name, ()):
            if conn.open and not (silences and self.faults.data_silenced(conn.opened_at,
                                                                          state.name, now)):
                groups.setdefault(conn.framing, []).append(conn)
        cache: Dict[bool, List[str]] = {}
        count = last - first + 1
        reached = 0
        for framing, group in groups.items():
            blob = state.encoder.frames(state.history, first, last, framing, cache)
            for conn in group:
                if conn.write(blob, count):
                    conn.trades_sent += count
                    self.stats.trades_sent += count
                    reached += 1
        return reached

    def resend(self, state: SymbolState, first: int, last: int) -> int:
        """Send stored ids first..last again to current subscribers (duplicates)."""
        now = time.monotonic()
        reached = 0
        for start in range(first, last + 1, RESEND_CHUNK):
            end = min(start + RESEND_CHUNK - 1, last)
            reached = self._send_span(state, start, end, now)
            self.stats.resent += reached * (end - start + 1)
        state.ledger.resent.add(first, last)
        return reached

    # --- liveness -----------------------------------------------------------------------

    def housekeeping(self, now: float) -> None:
        """Pings, pong timeouts, age limit, scheduled closes and close deadlines."""
        faults = self.faults
        faults.prune(now)
        cfg = self.config
        for conn in list(self.connections.values()):
            if conn.transport.is_closing():
                continue
            if conn.closing:
                if conn.close_deadline is not None and now >= conn.close_deadline:
                    conn.abort(conn.close_cause or "close_timeout")
                continue
            scheduled = conn.scheduled_close
            if scheduled is not None and now >= scheduled[0]:
                conn.close(scheduled[1], scheduled[2], scheduled[3])
            elif faults.max_conn_age is not None and now - conn.opened_at >= faults.max_conn_age:
                conn.close(1001, "Connection reached its maximum age", "max_age")
            elif conn.pong_overdue(now, cfg.pong_timeout):
                conn.close(1008, "Pong timeout", "pong_timeout")
            elif (faults.server_pings and now >= conn.next_ping_at
                  and not faults.pings_silenced(conn.opened_at, conn.symbols, now)):
                conn.send_ping(now)
                conn.next_ping_at = now + cfg.ping_interval

    # --- fault broadcasts ---------------------------------------------------------------

    def close_matching(self, symbol: Optional[str], code: int, reason: str, abrupt: bool
                       ) -> int:
        conns = self.select(symbol)
        for conn in conns:
            if abrupt:
                conn.abort("fault_abort")
            else:
                conn.close(code, reason, "fault_close")
        return len(conns)

    def server_shutdown(self, symbol: Optional[str], close_after: Optional[float], code: int,
                        reason: str) -> int:
        conns = self.select(symbol)
        now = time.monotonic()
        for conn in conns:
            event = {"e": "serverShutdown",
                     "E": self.config.now_us() // (1 if conn.micro else 1000)}
            conn.send_json({"stream": "!serverShutdown", "data": event} if conn.combined
                           else event)
            if close_after is not None:
                conn.scheduled_close = (now + close_after, code, reason, "server_shutdown")
        return len(conns)

    def send_malformed(self, kind: str, count: int, symbol: Optional[str], size: int) -> int:
        frames = 0
        for conn in self.select(symbol):
            name = symbol or (min(conn.symbols) if conn.symbols else "BTCUSDT")
            state = self.market.symbols.get(name.upper())
            last_id = (state.history.last_id if state and state.history.last_id is not None
                       else self.config.start_id)
            data = malformed_frame(kind, name, last_id, conn.combined, conn.micro, size,
                                   self.config.now_us())
            if conn.write(data * count, count):
                frames += count
        self.stats.malformed[kind] += frames
        return frames
