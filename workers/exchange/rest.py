"""The exchange's REST API: symbol checks, the latest trade id, and historical trades by id.

One persistent urllib3 pool (keep-alive, so a backfill of many pages costs one TCP and no
further handshakes), a connect and a read timeout on every request, and ONE retry policy:
429, 418, 5xx and network errors are retried with capped, jittered backoff
(workers/common/backoff.py) that never waits less than the server's `Retry-After`; urllib3's
own retries are off. Every wait is on the client's clock, so specs run it on a fake one.
Every request asks for trade times in µs (`X-MBX-TIME-UNIT: MICROSECOND`; protocol.py reads
either unit).

Request weight is per IP and shared by every worker on the box, and every answer says how much
of it is used (`X-MBX-USED-WEIGHT-1M`). Each worker slows down as that figure rises, so many
workers back off together without talking to each other. A 429 or 418 holds every request of
this client (both threads) until its Retry-After has passed; a 418 (an IP ban, 2 min to 3 days,
longer for repeat offenders) is logged once, with the time it ends.

Errors, and who should catch what:
- RestError(message, status, code): the exchange refused the request (a 4xx other than
  418/429, e.g. 400 code -1121), or the retries ran out. Callers catch it and carry on.
- RestStopped(RestError): the client's `stopping` event was set; no request is made after it.
- RestShapeError: the answer is not what the API documents (not JSON, a dict where a list is
  expected, a trade row without an integer id, ids not ascending from `fromId`). Deliberately
  NOT a RestError: it is a bug or an incompatible exchange change, not a condition to retry,
  and should end the worker with a traceback (exit 1).

Thread-safe: the backfiller and a stall-probe thread share one client.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Tuple

import urllib3

from workers.common.backoff import SYSTEM_CLOCK, Backoff, Clock
from workers.common.httputil import retry_after_s, system_ca_dir
from workers.common.timefmt import iso_seconds
from workers.errors import InvalidMessage, RestError, RestShapeError, RestStopped
from workers.exchange.protocol import trade_from_rest
from workers.trade import Trade

log = logging.getLogger(__name__)
WEIGHT_LIMIT_1M = 6000  # Binance's REQUEST_WEIGHT per minute per IP
WEIGHTS = {"/api/v3/historicalTrades": 25, "/api/v3/trades": 25, "/api/v3/exchangeInfo": 20}
WEIGHT_WINDOW_S = 60.0
# Retries of a failed request: the first after about a second (a 5xx or a dropped keep-alive
# connection is usually gone by then), doubling up to one weight window: after a minute the
# weight that made the exchange busy has left its count, so a longer wait gains nothing (a 429
# or 418 waits its Retry-After, however long).
REST_RETRY_INITIAL_S, REST_RETRY_MAX_S = 1.0, WEIGHT_WINDOW_S
# Pacing by the IP's used weight (every answer says it): the headroom left under PACE_CEILING
# of the limit may be used up within PACE_HORIZON_S, and each client takes the part of it that
# matches its own share of the used weight (so several workers split it without talking to
# each other); at the ceiling, PACE_OVER_S pauses. A lone backfill settles at ~85 % of the
# limit (simulated, tests/unit/exchange/test_rest_pacing.py; the earlier flat pause of `share`
# seconds measured 61 % of the REST ceiling in the recovery bench, this one 106 % with the first
# burst).
PACE_CEILING, PACE_HORIZON_S, PACE_OVER_S = 0.9, 2.0, 10.0

PAGE = 1000  # historicalTrades' largest page
EXCHANGE_INFO_LIST_MAX = 100  # symbols named in one exchangeInfo request; more: the whole list
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # Binance itself times a request out after 10 s (-1007)
BAN_WITHOUT_RETRY_AFTER_S = 120.0  # the shortest ban Binance hands out
BANNED_UNTIL_RE = re.compile(r"banned until (\d{12,14})")


def pace_s(used_share: float, own_share: float, weight: int) -> float:
    """The pause before a request of `weight`: `used_share` of the IP's weight per minute is
    used, `own_share` (0..1] of that is this client's own."""
    if used_share >= PACE_CEILING:
        return PACE_OVER_S
    allowed = (PACE_CEILING - used_share) * WEIGHT_LIMIT_1M / PACE_HORIZON_S  # weight/s
    return min(PACE_OVER_S, weight / (allowed * own_share))


@dataclass
class TradePage:
    """One historicalTrades answer, checked.

    `trades` are the rows that passed the checks, ascending; `invalid` holds (id, reason) of
    rows that carry an id but failed the checks (the caller decides: skip, or give the id up).
    `first_id`/`last_id` span every row of the answer, valid or not (None when it was empty),
    so that the next page starts at `last_id + 1` even when the last row was invalid.
    """

    trades: List[Trade] = field(default_factory=list)
    invalid: List[Tuple[int, str]] = field(default_factory=list)
    first_id: Optional[int] = None
    last_id: Optional[int] = None

    @property
    def empty(self) -> bool:
        return self.last_id is None


class RestClient:
    def __init__(self, base_url: str, worker: str, timeout_s: float = READ_TIMEOUT_S,
                 stopping: Optional[threading.Event] = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, clock: Clock = SYSTEM_CLOCK) -> None:
        self.base_url = base_url.rstrip("/")
        self.worker = worker
        self.clock = clock  # every wait, hold and ban end (a spec's fake clock)
        self.timeout_s = timeout_s
        self.stopping = stopping or threading.Event()
        self.timeout = urllib3.Timeout(connect=min(connect_timeout_s, timeout_s), read=timeout_s)
        # maxsize 2: the backfiller and a probe thread each keep one connection alive.
        # ca_cert_dir: https verifies against the system's CA directory, read on demand, not
        # the whole bundle loaded per connection (httputil.system_ca_dir); plain http ignores it.
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=2, block=False, retries=False,
                                        timeout=self.timeout, ca_cert_dir=system_ca_dir(),
                                        headers={"Accept": "application/json",
                                                 "User-Agent": "tick-capture",
                                                 # trade times in µs (protocol.py)
                                                 "X-MBX-TIME-UNIT": "MICROSECOND"})
        self._lock = threading.Lock()
        self.used_weight = 0  # the IP's weight in the last minute, from the latest answer
        self.requests = 0  # requests sent, retries included
        self._own: Deque[Tuple[float, int]] = deque()  # this client's requests, last minute
        self._own_weight = 0
        self._hold_until = 0.0  # monotonic: no request before (a 429's or 418's Retry-After)
        self._banned_until = 0.0  # wall clock end of the last logged 418 ban
        self._held_by: Optional[int] = None  # the status (429/418) that set the hold

    def close(self) -> None:
        self.pool.clear()

    # -- the one request path ----------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any], attempts: int = 8,
            max_wait_s: Optional[float] = None) -> Any:
        """GET `path` and decode its JSON, retrying 429/418/5xx and network errors.

        Raises RestError for any other 4xx (with status and Binance's code), when `attempts`
        are used up, or (with `max_wait_s`) at once instead of a longer wait (a ban: status 418);
        RestStopped when `stopping` is set; RestShapeError when the body is not JSON.
        """
        url = f"{self.base_url}{path}"
        fields = {k: str(v) for k, v in params.items()} if params else None
        backoff = Backoff(REST_RETRY_INITIAL_S, REST_RETRY_MAX_S)
        last = ""
        for attempt in range(attempts):
            self._wait_turn(path, max_wait_s)
            with self._lock:
                self.requests += 1
                self._count_own(WEIGHTS.get(path, 1))
            try:
                resp = self.pool.request("GET", url, fields=fields, retries=False,
                                         timeout=self.timeout, preload_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
                if attempt == attempts - 1:
                    break
                wait = backoff.next_delay()
                log.warning("worker=%s event=rest_error path=%s error=%r attempt=%d wait_s=%.1f",
                            self.worker, path, last, attempt + 1, wait)
                self._sleep(wait, path, max_wait_s, None)
                continue
            self._note_weight(resp.headers)
            status = resp.status
            if 200 <= status < 300:
                try:
                    return json.loads(resp.data)
                except ValueError:
                    raise RestShapeError(path, f"status {status}, not JSON: "
                                               f"{resp.data[:120]!r}") from None
            body = _error_body(resp.data)
            msg, code = str(body.get("msg", ""))[:300], body.get("code")
            last = f"{status} {msg}".strip()
            if status not in (418, 429) and status < 500:
                raise RestError(f"{path} answered {status}: {msg}", status, code)
            if attempt == attempts - 1:
                break
            retry_after = retry_after_s(resp.headers)
            if status == 418:
                wait = self._banned(path, retry_after, msg, backoff)
            elif status == 429:
                wait = backoff.next_delay(retry_after or 0.0)
                self._hold(wait)
                log.warning("worker=%s event=rest_rate_limited path=%s status=429 code=%s "
                            "retry_after_s=%s wait_s=%.1f used_weight=%d", self.worker, path,
                            code, retry_after, wait, self.used_weight)
            else:
                wait = backoff.next_delay(retry_after or 0.0)
                log.warning("worker=%s event=rest_backoff path=%s status=%d code=%s msg=%r "
                            "attempt=%d wait_s=%.1f", self.worker, path, status, code, msg,
                            attempt + 1, wait)
            self._sleep(wait, path, max_wait_s, status)
        raise RestError(f"{path} failed after {attempts} attempts (last: {last})")

    def _banned(self, path: str, retry_after: Optional[float], msg: str,
                backoff: Backoff) -> float:
        """A 418: hold every request until the ban ends; log each new ban once."""
        if retry_after is None:
            match = BANNED_UNTIL_RE.search(msg)
            retry_after = (int(match.group(1)) / 1000 - self.clock.time() if match
                           else BAN_WITHOUT_RETRY_AFTER_S)
            retry_after = max(1.0, retry_after)
        wait = backoff.next_delay(retry_after)
        until = self.clock.time() + wait
        with self._lock:
            new_ban = until > self._banned_until + 5.0  # not the ban another thread logged
            if new_ban:
                self._banned_until = until
            self._hold_until = max(self._hold_until, self.clock.monotonic() + wait)
            self._held_by = 418
        if new_ban:
            log.error("worker=%s event=rest_ip_banned path=%s status=418 until=%s "
                      "retry_after_s=%.0f msg=%r note='no REST request from this worker until "
                      "then; bans grow for repeat offenders'", self.worker, path,
                      iso_seconds(until), retry_after, msg[:200])
        return wait

    def _hold(self, wait: float) -> None:
        with self._lock:
            until = self.clock.monotonic() + wait
            if until > self._hold_until:
                self._hold_until = until
                self._held_by = 429

    def _sleep(self, seconds: float, path: str, max_wait_s: Optional[float] = None,
               status: Optional[int] = None) -> None:
        if max_wait_s is not None and seconds > max_wait_s:
            raise RestError(f"{path}: would wait {seconds:.0f} s (more than {max_wait_s:.0f} s)"
                            f"{'' if status is None else f' after a {status}'}", status)
        if self.clock.sleep(seconds, self.stopping):
            raise RestStopped(f"{path}: stopping")

    def _wait_turn(self, path: str, max_wait_s: Optional[float]) -> None:
        """Before each request: stop, then any 429/418 hold, then pacing by used weight."""
        if self.stopping.is_set():
            raise RestStopped(f"{path}: stopping, no new REST request")
        with self._lock:
            hold = self._hold_until - self.clock.monotonic()
        if hold > 0:
            self._sleep(hold, path, max_wait_s, self._held_by)
        weight = WEIGHTS.get(path, 1)
        with self._lock:
            self._count_own(0)
            used = max(self.used_weight, self._own_weight)  # answers lag our latest requests
            own_share = (self._own_weight + weight) / (used + weight)
        pause = pace_s(used / WEIGHT_LIMIT_1M, own_share, weight)
        if pause > 0.001:
            self._sleep(pause, path)

    def _count_own(self, weight: int) -> None:
        """Under the lock: this client's weight of the last minute, plus a request now."""
        now = self.clock.monotonic()
        own = self._own
        while own and own[0][0] <= now - WEIGHT_WINDOW_S:
            self._own_weight -= own.popleft()[1]
        if weight:
            own.append((now, weight))
            self._own_weight += weight

    def _note_weight(self, headers: Any) -> None:
        try:
            weight = int(headers.get("X-MBX-USED-WEIGHT-1M"))
        except (TypeError, ValueError, AttributeError):
            return
        with self._lock:
            self.used_weight = weight

    # -- endpoints ---------------------------------------------------------------------
    def symbol_statuses(self, symbols: Iterable[str],
                        max_wait_s: Optional[float] = 30.0) -> Dict[str, str]:
        """symbol -> status (TRADING, HALT, BREAK ...); unknown symbols are absent.

        A check at start-up: rather than wait out a ban (up to days), it raises RestError.
        """
        wanted = set(symbols)
        path = "/api/v3/exchangeInfo"
        # The same weight (20) either way; a long list would make a URL the exchange may cut,
        # so a large group asks for the whole list.
        params = {"symbols": json.dumps(sorted(wanted), separators=(",", ":"))} \
            if len(wanted) <= EXCHANGE_INFO_LIST_MAX else {}
        try:
            info = self.get(path, params, attempts=3, max_wait_s=max_wait_s)
        except RestError as exc:
            if exc.code != -1121 or not params:  # -1121: one is unknown; find out which
                raise
            info = self.get(path, {}, attempts=3, max_wait_s=max_wait_s)
        rows = info.get("symbols") if isinstance(info, dict) else None
        if not isinstance(rows, list) or not all(isinstance(s, dict) for s in rows):
            raise RestShapeError(path, f"no list of symbol objects: {str(info)[:120]}")
        return {s["symbol"]: str(s.get("status", "")) for s in rows
                if s.get("symbol") in wanted}

    def latest_trade_id(self, symbol: str) -> Optional[int]:
        """The id of the symbol's latest trade (None if it never traded)."""
        path = "/api/v3/trades"
        rows = self.get(path, {"symbol": symbol, "limit": 1})
        if not isinstance(rows, list):
            raise RestShapeError(path, f"expected a list, got {type(rows).__name__}")
        return _row_id(path, rows[-1]) if rows else None

    def trades_page(self, symbol: str, from_id: int, limit: int = PAGE) -> TradePage:
        """Up to `limit` trades from `from_id` on, checked; see TradePage."""
        path = "/api/v3/historicalTrades"
        rows = self.get(path, {"symbol": symbol, "fromId": from_id, "limit": min(PAGE, limit)})
        if not isinstance(rows, list):
            raise RestShapeError(path, f"expected a list, got {type(rows).__name__}")
        page = TradePage()
        previous = from_id - 1
        for row in rows:
            trade_id = _row_id(path, row)
            if trade_id <= previous:
                raise RestShapeError(path, f"{symbol} fromId={from_id}: id {trade_id} after "
                                           f"{previous}; ids must ascend from fromId")
            previous = trade_id
            try:
                page.trades.append(trade_from_rest(symbol, row))
            except InvalidMessage as exc:
                page.invalid.append((trade_id, str(exc)))
        if rows:
            page.first_id, page.last_id = _row_id(path, rows[0]), previous
        return page

    def trades_from(self, symbol: str, from_id: int, limit: int = PAGE) -> List[Trade]:
        """The valid trades of `trades_page` (invalid rows are logged and skipped)."""
        page = self.trades_page(symbol, from_id, limit)
        for trade_id, reason in page.invalid:
            log.error("worker=%s symbol=%s event=rest_row_invalid trade_id=%d reason=%r",
                      self.worker, symbol, trade_id, reason)
        return page.trades


def _row_id(path: str, row: Any) -> int:
    """A trade row's id; RestShapeError when there is no integer id to name the row by."""
    trade_id = row.get("id") if isinstance(row, dict) else None
    if type(trade_id) is not int or trade_id < 0:
        raise RestShapeError(path, f"a trade row without an integer id: {str(row)[:120]}")
    return trade_id


def _error_body(data: bytes) -> Dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

