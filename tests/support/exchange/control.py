"""Control API under /_sim/ (JSON over HTTP; never counted as request weight).

    POST /_sim/fault   {"action": ..., params}  -> {"ok": true, ...details}
    GET  /_sim/ledger  [?symbol=S]  -> {SYMBOL: {first, last, count, withheld, resent,
                                                  oldest_served}}
    GET  /_sim/stats   -> connections (accepted, refused, open with streams/age/combined/frames),
                          refusals by kind (url_too_long, too_many_streams, invalid_url,
                          not_websocket, attempts_429, banned_418, too_many_requests_1008,
                          subscribe_over_limit), connect_attempts per IP, limits in force,
                          closes by cause, malformed frames sent, REST requests by path/status,
                          REST requests held by a hang (rest_hung, by path),
                          weight used, per-symbol rate/status/generated
    GET  /_sim/trades  ?symbol=S&from_id=N&limit=N (max 100000)[&time_unit=MICROSECOND]:
                          stored trades in stream field names (t, p, q, T, E in ms, or in µs
                          with time_unit, m), for comparisons in tests
    GET  /data/spot/{daily,monthly}/trades/...   the archive of the ledger (archive.py)

Fault actions (the same JSON works for `--fault` at start, with optional "at": seconds after
start and "every": seconds to repeat).  `symbol` is optional where shown as [symbol]:
without it the action applies to every connection or symbol.

    close            [symbol] code=1000 reason="" abrupt=false   close frame, or TCP abort
    abort            [symbol]                                    = close with abrupt=true
    withhold         symbol count                                next `count` ids are
                     generated and stored (REST, ledger) but never sent on any stream
    resend           symbol from_id to_id | count                send stored ids again
    silence          seconds [symbol] pings=true new_connections=false
                     no trade frames for `seconds` (trades still generated); pings=false also
                     stops pings and pong answers; new_connections=true also mutes new ones
    server_shutdown  [symbol] close_after=null code=1001 reason="Server shutdown"
                     serverShutdown event (raw or combined framing), optional close later
    max_conn_age     seconds (null: off)                         close 1001 at that age
    malformed        kind count=1 [symbol] size=3145728          kind: invalid_json,
                     missing_fields, wrong_types, unknown_event, huge, binary
    stop_pings | start_pings                                     server ping frames
    stop_pongs | start_pongs                                     answers to client pings
    set_rate         symbol rate                                 trades/s (0 stops)
    pause | resume   [symbol]                                    generation on/off
    add_symbol       symbol rate=0 price=<default> status=TRADING start_id=<--start-id>
    set_status       symbol status                               non-TRADING stops trades
    rest             status=429 count=N | seconds=S retry_after=5 path=<prefix>
                     answer REST with 429/418 (Retry-After) or 5xx; no count/seconds: 1
    rest_hang        seconds path=<prefix>                       hold REST requests (every
                     /api path, or those starting with path) until `seconds` from now, then
                     answer them as usual; held requests count in stats "rest_hung"
    past_days        symbol from=YYYY-MM-DD to=<from> per_day=1000
                     generate per_day trades (whole taker orders: up to 10 more) on each UTC
                     day from..to at once, spread over the day, sent on no stream: the past
                     REST and the archive serve.  Days must be over on the simulator's clock
                     and later than the symbol's last trade; before 2025 times are whole ms.
                     Answers {"days": {date: [first id, last id]}}; --past-days at start
    archive_defect   symbol date=YYYY-MM-DD|YYYY-MM defect [options]   an archive file's
                     defect: unpublished [seconds] (404), truncated [keep=0.5] (cut zip, its
                     .CHECKSUM matching the cut), missing ids=[..] | count=1 (ids left out
                     of the CSV), republish (new version: new sha256, defects lifted),
                     stale_checksum (zip re-published, its .CHECKSUM still the previous
                     version's sha256; lifted by republish); counted in stats
                     "archive_defects"
    clear            drop silences, REST faults and hangs, pending withholds, scheduled
                     closes and archive defects (files back to their first version); pings,
                     pong answers and max age back to the start values
    limits           [max_url_length] [max_streams] [max_incoming_per_sec]
                     [max_connect_attempts] [connect_window] [ban_seconds] forgive=false
                     change connection limits from now on (positive numbers);
                     forgive=true also forgets every connection attempt, wait and ban;
                     answers with the limits in force
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import orjson
from aiohttp import web

from .config import ConfigError, make_spec, parse_day
from .faults import MALFORMED_KINDS, RestFault, RestHang, SilenceWindow
from .history import TradeRow

if TYPE_CHECKING:
    from .server import Simulator

Params = Dict[str, Any]


def _opt_symbol(params: Params) -> Optional[str]:
    symbol = params.get("symbol")
    return None if symbol is None else str(symbol).upper()


_REQUIRED: Any = object()


def _num(params: Params, key: str, default: Any = _REQUIRED,
         kind: Callable[[Any], Any] = float) -> Any:
    """Numeric parameter `key`; without a default it is required."""
    value = params.get(key)
    if value is None:
        if default is _REQUIRED:
            raise ConfigError(f"missing parameter {key!r}")
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {key!r} must be a number, got {value!r}") from None


def apply_action(sim: "Simulator", params: Params) -> Params:
    """Run one fault/control action; raises ConfigError for bad requests."""
    action = params.get("action")
    handler = ACTIONS.get(str(action))
    if handler is None:
        raise ConfigError(f"unknown action {action!r}: one of {', '.join(sorted(ACTIONS))}")
    result = handler(sim, params)
    sim.log.info("fault %s -> %s", orjson.dumps(params).decode()[:300], result)
    return {"ok": True, "action": action, **result}


def _close(sim: "Simulator", p: Params) -> Params:
    abrupt = bool(p.get("abrupt", False)) or p.get("action") == "abort"
    n = sim.hub.close_matching(_opt_symbol(p), _num(p, "code", 1000, int),
                               str(p.get("reason", "")), abrupt)
    return {"connections": n}


def _withhold(sim: "Simulator", p: Params) -> Params:
    state = sim.market.get(str(p.get("symbol")))
    count = _num(p, "count", kind=int)
    if count < 1:
        raise ConfigError("count must be at least 1")
    first = state.history.next_id + state.withhold_pending
    state.withhold_pending += count
    return {"symbol": state.name, "from_id": first, "to_id": first + count - 1}


def _resend(sim: "Simulator", p: Params) -> Params:
    state = sim.market.get(str(p.get("symbol")))
    history = state.history
    if history.last_id is None:
        raise ConfigError(f"{state.name} has no trades yet")
    if "count" in p:
        last = history.last_id
        first = last - max(_num(p, "count", kind=int), 1) + 1
    else:
        first, last = _num(p, "from_id", kind=int), _num(p, "to_id", kind=int)
    if not history.oldest_served <= first <= last <= history.last_id:
        raise ConfigError(f"span {first}..{last} is not in the stored "
                          f"{history.oldest_served}..{history.last_id}")
    n = sim.hub.resend(state, first, last)
    return {"symbol": state.name, "from_id": first, "to_id": last, "connections": n}


def _silence(sim: "Simulator", p: Params) -> Params:
    now = time.monotonic()
    seconds = _num(p, "seconds")
    symbol = _opt_symbol(p)
    if symbol is not None:
        sim.market.get(symbol)
    sim.faults.silences.append(SilenceWindow(now + seconds, now, symbol,
                                             bool(p.get("new_connections", False)),
                                             bool(p.get("pings", True))))
    return {"seconds": seconds}


def _server_shutdown(sim: "Simulator", p: Params) -> Params:
    n = sim.hub.server_shutdown(_opt_symbol(p), _num(p, "close_after", None),
                                _num(p, "code", 1001, int),
                                str(p.get("reason", "Server shutdown")))
    return {"connections": n}


def _max_conn_age(sim: "Simulator", p: Params) -> Params:
    sim.faults.max_conn_age = _num(p, "seconds", None)
    return {"seconds": sim.faults.max_conn_age}


def _malformed(sim: "Simulator", p: Params) -> Params:
    kind = str(p.get("kind"))
    if kind not in MALFORMED_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(MALFORMED_KINDS)}")
    frames = sim.hub.send_malformed(kind, _num(p, "count", 1, int), _opt_symbol(p),
                                    _num(p, "size", 3 * 1024 * 1024, int))
    return {"frames": frames}


def _switch(attr: str, value: bool) -> Callable[["Simulator", Params], Params]:
    def apply(sim: "Simulator", p: Params) -> Params:
        setattr(sim.faults, attr, value)
        return {attr: value}
    return apply


def _set_rate(sim: "Simulator", p: Params) -> Params:
    sim.market.set_rate(str(p.get("symbol")), _num(p, "rate"))
    return {"symbol": str(p.get("symbol")).upper(), "rate": _num(p, "rate")}


def _pause(paused: bool) -> Callable[["Simulator", Params], Params]:
    def apply(sim: "Simulator", p: Params) -> Params:
        sim.market.set_paused(_opt_symbol(p), paused)
        return {"paused": paused}
    return apply


def _add_symbol(sim: "Simulator", p: Params) -> Params:
    spec = make_spec(str(p.get("symbol")), p.get("rate", 0), p.get("price"),
                     str(p.get("status", "TRADING")), p.get("start_id"))
    sim.market.add(spec)
    return {"symbol": spec.name}


def _set_status(sim: "Simulator", p: Params) -> Params:
    sim.market.set_status(str(p.get("symbol")), str(p.get("status")))
    return {"symbol": str(p.get("symbol")).upper(), "status": str(p.get("status")).upper()}


def _rest(sim: "Simulator", p: Params) -> Params:
    status = _num(p, "status", 429, int)
    count = _num(p, "count", None, int)
    seconds = _num(p, "seconds", None)
    if count is None and seconds is None:
        count = 1
    until = None if seconds is None else time.monotonic() + seconds
    path = p.get("path")
    sim.faults.rest.append(RestFault(status, _num(p, "retry_after", 5, int), count, until,
                                     None if path is None else str(path)))
    return {"status": status, "count": count, "seconds": seconds}


def _rest_hang(sim: "Simulator", p: Params) -> Params:
    seconds = _num(p, "seconds")
    if seconds <= 0:
        raise ConfigError("seconds must be positive")
    path = p.get("path")
    sim.faults.rest_hangs.append(RestHang(time.monotonic() + seconds,
                                          None if path is None else str(path)))
    return {"seconds": seconds, "path": path}


def _past_days(sim: "Simulator", p: Params) -> Params:
    first = parse_day(str(p.get("from")), "from")
    last = first if p.get("to") is None else parse_day(str(p.get("to")), "to")
    days = sim.market.generate_days(str(p.get("symbol")), first, last,
                                    _num(p, "per_day", 1000, int))
    return {"symbol": str(p.get("symbol")).upper(),
            "days": {day: list(span) for day, span in days.items()}}


def _archive_defect(sim: "Simulator", p: Params) -> Params:
    return sim.archive.arm(p)


def _clear(sim: "Simulator", p: Params) -> Params:
    sim.faults.clear()
    sim.archive.clear()
    for state in sim.market.symbols.values():
        state.withhold_pending = 0
    for conn in sim.hub.connections.values():
        conn.scheduled_close = None
    return {}


_LIMITS = {"max_url_length": int, "max_streams": int, "max_incoming_per_sec": int,
           "max_connect_attempts": int, "connect_window": float, "ban_seconds": float}


def _limits(sim: "Simulator", p: Params) -> Params:
    values = {key: _num(p, key, None, kind) for key, kind in _LIMITS.items()}
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{key} must be positive")
    for key, value in values.items():
        if value is not None:
            setattr(sim.config, key, value)
    if p.get("forgive"):
        sim.connects.forgive()
    return {key: getattr(sim.config, key) for key in _LIMITS}


ACTIONS: Dict[str, Callable[["Simulator", Params], Params]] = {
    "close": _close, "abort": _close, "withhold": _withhold, "resend": _resend,
    "silence": _silence, "server_shutdown": _server_shutdown, "max_conn_age": _max_conn_age,
    "malformed": _malformed, "stop_pings": _switch("server_pings", False),
    "start_pings": _switch("server_pings", True), "stop_pongs": _switch("answer_pings", False),
    "start_pongs": _switch("answer_pings", True), "set_rate": _set_rate,
    "pause": _pause(True), "resume": _pause(False), "add_symbol": _add_symbol,
    "set_status": _set_status, "rest": _rest, "rest_hang": _rest_hang, "clear": _clear,
    "limits": _limits, "past_days": _past_days, "archive_defect": _archive_defect,
}


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def add_routes(app: web.Application, sim: "Simulator") -> None:
    async def fault(request: web.Request) -> web.Response:
        try:
            params = orjson.loads(await request.read())
            if not isinstance(params, dict):
                raise ConfigError("body must be a JSON object")
            return _json(apply_action(sim, params))
        except (ConfigError, orjson.JSONDecodeError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)

    async def ledger(request: web.Request) -> web.Response:
        wanted = request.query.get("symbol")
        out = {name: state.ledger.as_dict(state.history)
               for name, state in sim.market.symbols.items()
               if (wanted is None and (state.history.count or state.rate > 0))
               or name == (wanted or "").upper()}
        return _json(out)

    async def stats(request: web.Request) -> web.Response:
        return _json(sim.stats_dict())

    async def trades(request: web.Request) -> web.Response:
        try:
            state = sim.market.get(request.query.get("symbol", ""))
            from_id = int(request.query.get("from_id", state.history.oldest_served))
            limit = min(int(request.query.get("limit", 1000)), 100_000)
        except (ConfigError, ValueError) as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        div = 1 if request.query.get("time_unit", "").upper() == "MICROSECOND" else 1000
        return _json([_stream_row(r, div) for r in state.history.rows(from_id, limit)])

    app.router.add_post("/_sim/fault", fault)
    app.router.add_get("/_sim/ledger", ledger)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/trades", trades)


def _stream_row(row: TradeRow, div: int = 1000) -> Params:
    rest = row.rest()
    return {"t": row.id, "p": rest["price"], "q": rest["qty"], "T": row.time_us // div,
            "E": row.event_us // div, "m": row.buyer_is_maker}
