"""The exchange's REST API: symbol checks, the latest trade id, and historical trades by id.

Request weight is per IP and shared by every worker on the box, and every answer says how much
of it is used (`X-MBX-USED-WEIGHT-1M`). Each worker slows down as that figure rises, so many
workers back off together without talking to each other; 429/418 and Retry-After are obeyed.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Mapping, Optional

from .backoff import Backoff
from .protocol import InvalidMessage, Trade, trade_from_rest

log = logging.getLogger(__name__)
WEIGHT_LIMIT_1M = 6000  # Binance's REQUEST_WEIGHT per minute per IP
PAGE = 1000  # historicalTrades' largest page


class RestError(Exception):
    def __init__(self, message: str, status: Optional[int] = None, code: Optional[int] = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RestClient:
    def __init__(self, base_url: str, worker: str, timeout_s: float = 10.0,
                 stopping: Optional[threading.Event] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.worker = worker
        self.timeout_s = timeout_s
        self.stopping = stopping or threading.Event()
        self.used_weight = 0
        self.requests = 0

    def get(self, path: str, params: Mapping[str, Any], attempts: int = 8) -> Any:
        """GET with retries on 429/418/5xx and network errors; RestError on a 4xx answer."""
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        backoff = Backoff(1.0, 60.0)
        for attempt in range(attempts):
            self._pace()
            self.requests += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    self._note_weight(resp.headers)
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                self._note_weight(exc.headers)
                body = _error_body(exc)
                if exc.code in (418, 429) or exc.code >= 500:
                    wait = backoff.next_delay(_retry_after(exc.headers))
                    log.warning("worker=%s event=rest_backoff path=%s status=%d wait_s=%.1f "
                                "msg=%r", self.worker, path, exc.code, wait, body.get("msg"))
                    if self.stopping.wait(wait):
                        break
                    continue
                raise RestError(f"{path} answered {exc.code}: {body.get('msg', '')}", exc.code,
                                body.get("code")) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                wait = backoff.next_delay()
                log.warning("worker=%s event=rest_error path=%s error=%r wait_s=%.1f",
                            self.worker, path, str(exc)[:200], wait)
                if attempt == attempts - 1 or self.stopping.wait(wait):
                    break
        raise RestError(f"{path} failed after {attempts} attempts")

    def _note_weight(self, headers: Any) -> None:
        try:
            self.used_weight = int(headers.get("X-MBX-USED-WEIGHT-1M"))
        except (TypeError, ValueError, AttributeError):
            pass

    def _pace(self) -> None:
        """Sleep more as the IP's used weight nears the limit (every worker sees the same figure)."""
        share = self.used_weight / WEIGHT_LIMIT_1M
        if share > 0.9:
            self.stopping.wait(10.0)
        elif share > 0.5:
            self.stopping.wait(share)

    # -- endpoints ---------------------------------------------------------------------
    def symbol_statuses(self, symbols: Iterable[str]) -> Dict[str, str]:
        """symbol -> status (TRADING, HALT, BREAK ...); unknown symbols are absent."""
        wanted = list(symbols)
        try:
            info = self.get("/api/v3/exchangeInfo",
                            {"symbols": json.dumps(wanted, separators=(",", ":"))}, attempts=3)
        except RestError as exc:
            if exc.code != -1121:  # -1121: one of them is unknown; find out which
                raise
            info = self.get("/api/v3/exchangeInfo", {}, attempts=3)
        return {s["symbol"]: s.get("status", "") for s in info.get("symbols", [])
                if s.get("symbol") in wanted}

    def latest_trade_id(self, symbol: str) -> Optional[int]:
        rows = self.get("/api/v3/trades", {"symbol": symbol, "limit": 1})
        return int(rows[-1]["id"]) if rows else None

    def trades_from(self, symbol: str, from_id: int, limit: int = PAGE) -> List[Trade]:
        """Up to `limit` trades from `from_id` on, ascending; rows that fail checks are skipped."""
        rows = self.get("/api/v3/historicalTrades",
                        {"symbol": symbol, "fromId": from_id, "limit": min(PAGE, limit)})
        trades = []
        for row in rows if isinstance(rows, list) else []:
            try:
                trades.append(trade_from_rest(symbol, row))
            except InvalidMessage as exc:
                log.error("worker=%s symbol=%s event=rest_row_invalid reason=%s", self.worker,
                          symbol, exc)
        return trades


def _retry_after(headers: Any) -> float:
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError, AttributeError):
        return 0.0


def _error_body(exc: urllib.error.HTTPError) -> Dict[str, Any]:
    try:
        data = json.loads(exc.read())
        return data if isinstance(data, dict) else {}
    except (ValueError, OSError):
        return {}
