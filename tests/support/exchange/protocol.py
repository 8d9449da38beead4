"""Stream URLs and the live control methods of a stream connection (binance.md 1 and 3.1).

Stream names are checked only for shape (`<name>@<type>`): a well-formed stream of an unknown
or upper-case symbol is accepted and stays silent, as on the exchange.  Only lower-case
`<symbol>@trade` streams carry data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import orjson

if TYPE_CHECKING:
    from .connection import Connection
    from .hub import Hub

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
STREAM_RE = re.compile(r"^!?[A-Za-z0-9_.\-]+@[A-Za-z0-9_@.\-]+$")
ID_STR_RE = re.compile(r"^[A-Za-z0-9_\-]{1,36}$")
TIME_UNITS = {"MICROSECOND": True, "microsecond": True, "MILLISECOND": False,
              "millisecond": False}


class HandshakeError(Exception):
    """A stream URL that is refused before the upgrade (HTTP 400); `kind` is its key in
    stats["refusals"]: "too_many_streams" or "invalid_url"."""

    def __init__(self, message: str, kind: str = "invalid_url") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class StreamTarget:
    """What a connection URL asks for."""

    streams: List[str]
    combined: bool
    micro: bool


def valid_stream(stream: Any) -> bool:
    return isinstance(stream, str) and len(stream) <= 200 and bool(STREAM_RE.match(stream))


def trade_symbol(stream: str) -> Optional[str]:
    """`btcusdt@trade` -> `BTCUSDT`; None for other streams and upper-case names."""
    if not stream.endswith("@trade"):
        return None
    name = stream[:-6]
    if name and name.isascii() and name.isalnum() and name == name.lower():
        return name.upper()
    return None


def parse_target(path: str, query: Mapping[str, str], max_streams: int) -> StreamTarget:
    """`/ws`, `/ws/<s1>/<s2>`, `/stream?streams=<s1>/<s2>` plus `timeUnit` -> StreamTarget."""
    combined = path.rstrip("/") == "/stream"
    if combined:
        names = query.get("streams", "").split("/")
    else:
        names = path[len("/ws"):].split("/")
    streams = list(dict.fromkeys(n for n in names if n))
    for stream in streams:
        if not valid_stream(stream):
            raise HandshakeError(f"Invalid request: invalid stream {stream[:60]!r}")
    if len(streams) > max_streams:
        raise HandshakeError(f"Too many streams: {len(streams)} streams in the URL, "
                             f"at most {max_streams} per connection", "too_many_streams")
    unit = query.get("timeUnit")
    if unit is not None and unit not in TIME_UNITS:
        raise HandshakeError(f"Invalid timeUnit {unit[:30]!r}: MICROSECOND or MILLISECOND")
    return StreamTarget(streams, combined, bool(unit and TIME_UNITS[unit]))


def error(code: int, msg: str, req_id: Any) -> Dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": req_id}


def valid_id(req_id: Any) -> bool:
    if req_id is None:
        return True
    if isinstance(req_id, bool):
        return False
    if isinstance(req_id, int):
        return -(2 ** 63) <= req_id < 2 ** 63
    return isinstance(req_id, str) and bool(ID_STR_RE.match(req_id))


def handle_text(hub: "Hub", conn: "Connection", text: str) -> Dict[str, Any]:
    """Answer one JSON control message; the result is sent back on the same connection."""
    try:
        req = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return error(3, f"Invalid JSON: {exc}", None)
    if not isinstance(req, dict):
        return error(2, "Invalid request: expected a JSON object", None)
    req_id = req.get("id")
    if not valid_id(req_id):
        return error(2, "Invalid request: 'id' must be an integer, a string of up to 36 "
                        "alphanumeric characters, or null", None)
    method = req.get("method")
    if method is None:
        return error(2, "Invalid request: missing field `method`", req_id)
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        return error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                        f"{expected}", req_id)
    params = req.get("params", [])
    if not isinstance(params, list):
        return error(2, "Invalid request: `params` must be an array", req_id)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _subscription(hub, conn, method, params, req_id)
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": list(conn.streams), "id": req_id}
    return _property(conn, method, params, req_id)


def _subscription(hub: "Hub", conn: "Connection", method: str, params: List[Any],
                  req_id: Any) -> Dict[str, Any]:
    if not all(valid_stream(p) for p in params):
        return error(2, "Invalid request: invalid stream", req_id)
    if method == "UNSUBSCRIBE":
        hub.unsubscribe(conn, params)
        return {"result": None, "id": req_id}
    wanted = set(conn.streams) | set(params)
    if len(wanted) > hub.config.max_streams:  # all or nothing: none of them is added
        hub.stats.refuse("subscribe_over_limit")
        return error(4, "Too many subscriptions", req_id)
    hub.subscribe(conn, params)
    return {"result": None, "id": req_id}


def _property(conn: "Connection", method: str, params: List[Any], req_id: Any
              ) -> Dict[str, Any]:
    size = 2 if method == "SET_PROPERTY" else 1
    if len(params) != size:
        return error(2, f"Invalid request: {method} takes {size} parameter(s)", req_id)
    if not isinstance(params[0], str):
        return error(2, "Invalid request: property name must be a string", req_id)
    if params[0] != "combined":
        return error(0, "Unknown property", req_id)
    if method == "GET_PROPERTY":
        return {"result": conn.combined, "id": req_id}
    if not isinstance(params[1], bool):
        return error(1, "Invalid value type: expected Boolean", req_id)
    conn.combined = params[1]
    return {"result": None, "id": req_id}
