"""The REST endpoints a collector uses, with request weights and REST faults (binance.md 4).

A `rest_hang` fault holds /api requests until it ends and then answers them as usual (the
requests held are counted in the stats under "rest_hung").

Every /api answer carries `X-MBX-USED-WEIGHT-1M`, the weight used in the last 60 s.  Past
`--weight-limit` a request gets 429, code -1003 and `Retry-After` (seconds until enough weight
has expired); rejected requests add no weight, so a client that honours Retry-After recovers.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Deque, Dict, List, Optional, Tuple

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from .config import fmt8, split_symbol

if TYPE_CHECKING:
    from .market import SymbolState
    from .server import Simulator

WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20,
           "/api/v3/trades": 25, "/api/v3/historicalTrades": 25}
SYMBOL_PARAM_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
SYMBOLS_PARAM_RE = re.compile(r'^\[("[A-Z0-9\-_.]{1,20}"(,"[A-Z0-9\-_.]{1,20}")*)?\]$')
DIGITS_RE = re.compile(r"^[0-9]{1,20}$")
FAULT_BODIES = {
    418: (-1003, "Way too much request weight used; IP banned until {until}. "
                 "Please use WebSocket Streams for live updates to avoid bans."),
    429: (-1003, "Too much request weight used; current limit is {limit} request weight per "
                 "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the "
                 "API."),
    500: (-1001, "Internal error; unable to process your request. Please try again."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a "
                 "few minutes."),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: HTTP status plus Binance's {"code", "msg"} body."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


class WeightWindow:
    """Request weight used in a rolling 60 s window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._entries: Deque[Tuple[float, int]] = deque()

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - 60.0:
            self.used -= self._entries.popleft()[1]

    def take(self, weight: int, now: float) -> Optional[int]:
        """Add `weight`, or return the seconds to wait when it would pass the limit."""
        self._expire(now)
        if self.used + weight <= self.limit:
            self._entries.append((now, weight))
            self.used += weight
            return None
        freed = 0
        for when, w in self._entries:
            freed += w
            if self.used - freed + weight <= self.limit:
                return max(1, math.ceil(when + 60.0 - now))
        return 60


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_response(code: int, msg: str, status: int) -> web.Response:
    return json_response({"code": code, "msg": msg}, status)


def make_middleware(sim: "Simulator") -> Middleware:
    @web.middleware
    async def rest_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/api/"):
            return await handler(request)
        now = time.monotonic()
        hang = sim.faults.rest_hang_left(path, now)
        if hang > 0:  # an endpoint that hangs: hold the request, then answer it as usual
            sim.stats.count_rest_hung(path)
            while hang > 0:
                await asyncio.sleep(hang)
                now = time.monotonic()
                hang = sim.faults.rest_hang_left(path, now)
        resp: Optional[web.StreamResponse] = _fault_response(sim, path, now)
        if resp is None:
            wait = sim.weights.take(WEIGHTS.get(path, 1), now)
            if wait is not None:
                msg = FAULT_BODIES[429][1].format(limit=sim.weights.limit)
                resp = error_response(-1003, msg, 429)
                resp.headers["Retry-After"] = str(wait)
        if resp is None:
            try:
                resp = await handler(request)
            except ApiError as exc:
                resp = error_response(exc.code, exc.msg, exc.status)
            except web.HTTPException as exc:  # unknown path or method
                resp = error_response(-1000, f"{exc.reason}: {request.method} {path}",
                                      exc.status)
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(sim.weights.used)
        sim.stats.count_rest(path, resp.status)
        return resp

    return rest_middleware


def _fault_response(sim: "Simulator", path: str, now: float) -> Optional[web.Response]:
    fault = sim.faults.take_rest_fault(path, now)
    if fault is None:
        return None
    code, msg = FAULT_BODIES.get(fault.status, (-1001, FAULT_BODIES[500][1]))
    until = time.time_ns() // 1_000_000 + fault.retry_after * 1000
    resp = error_response(code, msg.format(limit=sim.weights.limit, until=until), fault.status)
    if fault.status in (418, 429):
        resp.headers["Retry-After"] = str(fault.retry_after)
    return resp


# --- parameters ---------------------------------------------------------------------------

def _symbol_state(sim: "Simulator", request: web.Request) -> "SymbolState":
    symbol = request.query.get("symbol", "")
    if not symbol:
        raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                              "or malformed.")
    if not SYMBOL_PARAM_RE.match(symbol):
        raise ApiError(-1100, "Illegal characters found in parameter 'symbol'; legal range "
                              "is '^[A-Z0-9-_.]{1,20}$'.")
    state = sim.market.symbols.get(symbol)
    if state is None:
        raise ApiError(-1121, "Invalid symbol.")
    return state


def _int_param(request: web.Request, name: str) -> Optional[int]:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if not DIGITS_RE.match(text):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                              "is '^[0-9]{1,20}$'.")
    return int(text)


def _limit(sim: "Simulator", request: web.Request) -> int:
    limit = _int_param(request, "limit")
    if limit is None:
        return 500
    if limit < 1 or (limit > 1000 and sim.config.strict_limit):
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, 1000)


def _micro(request: web.Request) -> bool:
    return request.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND"


# --- endpoints ----------------------------------------------------------------------------

def add_routes(app: web.Application, sim: "Simulator") -> None:
    async def ping(request: web.Request) -> web.Response:
        return json_response({})

    async def server_time(request: web.Request) -> web.Response:
        return json_response({"serverTime": sim.config.now_us() // 1000})

    async def exchange_info(request: web.Request) -> web.Response:
        return json_response(_exchange_info(sim, request))

    async def trades(request: web.Request) -> web.Response:
        state = _symbol_state(sim, request)
        rows = state.history.recent(_limit(sim, request))
        micro = _micro(request)
        return json_response([r.rest(micro) for r in rows])

    async def historical_trades(request: web.Request) -> web.Response:
        state = _symbol_state(sim, request)
        limit = _limit(sim, request)
        from_id = _int_param(request, "fromId")
        history = state.history
        rows = history.recent(limit) if from_id is None else history.rows(from_id, limit)
        micro = _micro(request)
        return json_response([r.rest(micro) for r in rows])

    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    app.router.add_get("/api/v3/trades", trades)
    app.router.add_get("/api/v3/historicalTrades", historical_trades)


def _exchange_info(sim: "Simulator", request: web.Request) -> Dict[str, Any]:
    query = request.query
    symbol, symbols_param = query.get("symbol"), query.get("symbols")
    status = query.get("symbolStatus")
    if status is not None and (symbol is not None or symbols_param is not None):
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    if symbol is not None and symbols_param is not None:
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    if symbol is not None:
        states = [_symbol_state(sim, request)]
    elif symbols_param is not None:
        if not SYMBOLS_PARAM_RE.match(symbols_param):
            raise ApiError(-1100, "Illegal characters found in parameter 'symbols'; legal "
                                  "range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\")"
                                  "{0,}){0,1}\\]$'.")
        names: List[str] = orjson.loads(symbols_param)
        missing = [n for n in names if n not in sim.market.symbols]
        if missing or not names:
            raise ApiError(-1121, "Invalid symbol.")
        states = [sim.market.symbols[n] for n in dict.fromkeys(names)]
    else:
        states = [s for s in sim.market.symbols.values() if status in (None, s.status)]
    return {"timezone": "UTC", "serverTime": sim.config.now_us() // 1000,
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": sim.weights.limit},
                           {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE",
                            "intervalNum": 5, "limit": 300000}],
            "exchangeFilters": [], "symbols": [_symbol_info(s) for s in states]}


def _symbol_info(state: "SymbolState") -> Dict[str, Any]:
    base, quote = split_symbol(state.name)
    tick, step = fmt8(state.spec.tick), fmt8(state.spec.step)
    return {"symbol": state.name, "status": state.status, "baseAsset": base,
            "baseAssetPrecision": 8, "quoteAsset": quote, "quotePrecision": 8,
            "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": tick,
                         "maxPrice": "1000000.00000000", "tickSize": tick},
                        {"filterType": "LOT_SIZE", "minQty": step,
                         "maxQty": "9000000000.00000000", "stepSize": step}],
            "permissions": [], "permissionSets": [["SPOT"]]}
