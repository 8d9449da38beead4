"""The aiohttp application: WebSocket streams, REST and control on one port."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, AsyncIterator, Dict, List, Optional

import orjson
from aiohttp import WSMsgType, web

from .archive import Archive
from .archive import add_routes as add_archive_routes
from .config import SimConfig, SymbolSpec
from .connection import Connection
from .control import add_routes as add_control_routes
from .control import apply_action
from .faults import FaultState
from .frames import close_frame
from .hub import Hub
from .limits import ConnectLimiter
from .market import Market
from .protocol import HandshakeError, handle_text, parse_target
from .replay import ReplayPlayer, ReplayTrade, specs
from .rest import WeightWindow, make_middleware
from .rest import add_routes as add_rest_routes
from .stats import SimStats

SIM_KEY: web.AppKey["Simulator"] = web.AppKey("simulator")
HOUSEKEEPING_S = 0.05  # resolution of pings, pong timeouts and age limits


class Simulator:
    """Owns the market, the connections and the fault state of one run."""

    def __init__(self, config: SimConfig, replay: Optional[List[ReplayTrade]] = None) -> None:
        self.config = config
        self.log = logging.getLogger("exchange_sim")
        self.market = Market(config)
        self.faults = FaultState(config.server_pings, config.answer_pings, config.max_conn_age)
        self.stats = SimStats()
        self.hub = Hub(config, self.market, self.faults, self.stats)
        self.weights = WeightWindow(config.weight_limit)
        self.connects = ConnectLimiter(config)
        self.replay = replay
        for spec in config.symbols:
            self.market.add(spec)
        if replay:
            for spec in specs(replay):
                self.market.add(spec, generated=False)
        for n in range(1, config.quiet_symbols + 1):
            self.market.add(SymbolSpec(f"Q{n:04d}USDT", 0.0, 10 * 10 ** 8))
        self.archive = Archive(config, self.market, self.stats)
        for params in config.past_days:  # the days before the start, before any live trade
            apply_action(self, {"action": "past_days", **params})
        self._tasks: List["asyncio.Task[None]"] = []

    # --- background loops ---------------------------------------------------------------

    async def _generation_loop(self) -> None:
        while True:
            try:
                now = time.monotonic()
                self.hub.deliver(self.market.tick(now), now)
            except Exception:  # keep generating: one bad tick must not end the run
                self.log.exception("generation tick failed")
            await asyncio.sleep(self.market.tick_interval())

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                self.hub.housekeeping(time.monotonic())
            except Exception:
                self.log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_S)

    async def _parent_watch(self) -> None:
        parent = os.getppid()
        while os.getppid() == parent:  # a dead parent makes init (or a subreaper) our parent
            await asyncio.sleep(0.5)
        self.log.warning("parent process %d is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)  # the same graceful stop as a test's stop()

    async def _scheduled_fault(self, params: Dict[str, Any]) -> None:
        action = {k: v for k, v in params.items() if k not in ("at", "every")}
        await asyncio.sleep(float(params.get("at", 0)))
        while True:
            try:
                apply_action(self, action)
            except Exception as exc:
                self.log.error("scheduled fault %s failed: %s", action, exc)
            if params.get("every") is None:
                return
            await asyncio.sleep(float(params["every"]))

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        # Faults for the start (no "at"/"every") apply before the first trade is generated, so
        # `--fault '{"action":"pause"}'` really starts paused.
        at_start = [f for f in self.config.faults if "at" not in f and "every" not in f]
        for params in at_start:
            apply_action(self, dict(params))
        loops = [self._generation_loop(), self._housekeeping_loop()]
        loops += [self._scheduled_fault(f) for f in self.config.faults if f not in at_start]
        if self.config.exit_with_parent:
            loops.append(self._parent_watch())
        if self.replay:
            cfg = self.config
            loops.append(ReplayPlayer(self, self.replay, cfg.replay_timing, cfg.replay_speed,
                                      cfg.replay_wait).run())
        self._tasks = [asyncio.ensure_future(c) for c in loops]
        yield
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.archive.cleanup()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Say goodbye like a restarting exchange node, then do not wait for slow readers.
        for conn in list(self.hub.connections.values()):
            conn.close(1001, "Server stopping", "server_stop")
        await asyncio.sleep(0.1)
        for conn in list(self.hub.connections.values()):
            if not conn.transport.is_closing():
                conn.abort("server_stop")

    # --- WebSocket ----------------------------------------------------------------------

    def _refuse(self, kind: str, status: int, text: str) -> web.Response:
        self.stats.refuse(kind)
        return web.Response(status=status, text=text)

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        # Checked in this order: the attempt budget (every attempt counts, limits.py), the
        # URL length, the streams in the URL, the upgrade itself.
        refusal = self.connects.attempt(request.remote or "?", time.monotonic())
        if refusal is not None:
            self.stats.refuse(refusal.kind)
            self.log.info("handshake refused with %d: %s", refusal.status, refusal.msg)
            return web.Response(status=refusal.status, body=orjson.dumps(refusal.body()),
                                content_type="application/json",
                                headers={"Retry-After": str(refusal.retry_after)})
        target_len = len(request.raw_path)  # path + query exactly as the client sent them
        if target_len > self.config.max_url_length:
            return self._refuse("url_too_long", 414, f"URL too long: {target_len} characters, "
                                                     f"at most {self.config.max_url_length}")
        try:
            target = parse_target(request.path, request.query, self.config.max_streams)
        except HandshakeError as exc:
            return self._refuse(exc.kind, 400, str(exc))
        ws = web.WebSocketResponse(autoping=False, autoclose=False, compress=False,
                                   max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            return self._refuse("not_websocket", 426, "WebSocket upgrade expected")
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        conn = self.hub.open(transport, target, request.path_qs)
        try:
            await self._read_loop(ws, conn)
        finally:
            self.hub.drop(conn, "connection_lost")
            if not transport.is_closing():
                transport.close()  # flushes what is queued, then closes
        return ws

    async def _read_loop(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        cfg = self.config
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                return
            if kind == WSMsgType.CLOSE:
                if conn.open:  # the client started the close: echo its code (RFC 6455 5.5.1)
                    code = msg.data if isinstance(msg.data, int) and 1000 <= msg.data < 5000 \
                        and msg.data not in (1005, 1006, 1015) else 1000
                    conn.transport.write(close_frame(code))
                    conn.close_cause = "client_close"
                return
            if conn.closing:
                continue  # after our close frame only the client's close matters
            now = time.monotonic()
            if conn.count_incoming(now, cfg.max_incoming_per_sec):
                conn.close(1008, "Too many requests", "too_many_requests")
                self.stats.refuse("too_many_requests_1008")
                continue
            if kind == WSMsgType.PING:
                if self.faults.answer_pings and not self.faults.pings_silenced(
                        conn.opened_at, conn.symbols, now):
                    conn.send_pong(msg.data)
            elif kind == WSMsgType.PONG:
                conn.on_pong(msg.data)
            elif kind == WSMsgType.TEXT:
                conn.send_json(handle_text(self.hub, conn, msg.data))

    # --- app ----------------------------------------------------------------------------

    def stats_dict(self) -> Dict[str, Any]:
        now = time.monotonic()
        out = self.stats.as_dict()
        out["open"] = [c.info(now) for c in self.hub.connections.values()]
        out["weight_used"] = self.weights.used
        out["connect_attempts"] = self.connects.snapshot(now)
        cfg = self.config
        out["limits"] = {"max_url_length": cfg.max_url_length, "max_streams": cfg.max_streams,
                         "max_incoming_per_sec": cfg.max_incoming_per_sec,
                         "max_connect_attempts": cfg.max_connect_attempts,
                         "connect_window": cfg.connect_window, "ban_seconds": cfg.ban_seconds}
        out["symbols"] = {s.name: {"rate": s.rate, "status": s.status, "paused": s.paused,
                                   "generated": s.history.count}
                          for s in self.market.symbols.values()
                          if s.history.count or s.rate > 0}
        return out

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[make_middleware(self)])
        app[SIM_KEY] = self
        app.router.add_get("/ws", self.ws_handler)
        app.router.add_get("/ws/{tail:.*}", self.ws_handler)
        app.router.add_get("/stream", self.ws_handler)
        add_rest_routes(app, self)
        add_archive_routes(app, self.archive)
        add_control_routes(app, self)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._on_shutdown)
        return app
