"""Connection-attempt budget per IP: HTTP 429 with Retry-After, then 418 bans (binance.md 3).

Binance allows 300 WebSocket connection attempts per IP per 5 minutes, answers an attempt
over that with HTTP 429 and `Retry-After`, and bans an IP that keeps going with HTTP 418
(2 minutes to 3 days).  The simulator enforces it like this, per peer IP (every test client
is 127.0.0.1, so in practice the budget is shared by every client of one simulator, as every
worker on one host shares Binance's):

  * Every handshake attempt on a stream route (/ws..., /stream) counts, refused ones
    included (414, 400, 426, 429, 418 alike), in a rolling window of `connect_window`
    seconds: never more than `max_connect_attempts` in any such span (a log of attempt
    times, not a token bucket).
  * An attempt that would make more than `max_connect_attempts` in the window gets HTTP 429,
    `Retry-After: <s>` = seconds (rounded up, at least 1) until an attempt fits the window
    again, counting every attempt made so far, and the body
    `{"code":-1003,"msg":"Too many connection attempts: ..."}`.
  * An attempt before that Retry-After has passed bans the IP for `ban_seconds`: HTTP 418,
    `Retry-After: <ban_seconds>`, body `{"code":-1003,"msg":"Way too many requests; IP(..)
    banned until <ms> ..."}`.  Every attempt during the ban gets 418 with the remaining
    time (rounded up, at least 1); a ban is not extended by attempts made during it.
  * After the ban the window still holds the attempts made meanwhile, so a client that
    hammered through its ban gets 429 again until they age out.

The ban length is fixed (Binance's grow for repeat offenders); the limits are read from the
SimConfig at every attempt, so the `limits` control action changes them at run time.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Deque, Dict, Optional

if TYPE_CHECKING:
    from .config import SimConfig


@dataclass
class Refusal:
    """An attempt that is refused: HTTP status, Retry-After seconds and the error message."""

    status: int  # 429 or 418
    retry_after: int
    msg: str

    @property
    def kind(self) -> str:
        return "attempts_429" if self.status == 429 else "banned_418"

    def body(self) -> Dict[str, object]:
        return {"code": -1003, "msg": self.msg}


@dataclass
class _Peer:
    attempts: Deque[float] = field(default_factory=deque)  # monotonic times, oldest first
    wait_until: float = 0.0  # a 429 told this peer to wait until then
    banned_until: float = 0.0


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


class ConnectLimiter:
    """Rolling log of handshake attempts per peer IP, with the 429/418 decisions."""

    def __init__(self, config: "SimConfig") -> None:
        self.config = config
        self._peers: Dict[str, _Peer] = {}

    def attempt(self, ip: str, now: float) -> Optional[Refusal]:
        """Count one attempt from `ip` at monotonic `now`; None when it may proceed."""
        cfg = self.config
        limit, window = cfg.max_connect_attempts, cfg.connect_window
        peer = self._peers.setdefault(ip, _Peer())
        attempts = peer.attempts
        attempts.append(now)
        while attempts and attempts[0] <= now - window:
            attempts.popleft()
        if now < peer.banned_until:
            return self._banned(ip, peer, now)
        if now < peer.wait_until:  # came back before its Retry-After: ban
            peer.wait_until = 0.0
            peer.banned_until = now + cfg.ban_seconds
            return self._banned(ip, peer, now)
        if len(attempts) <= limit:
            return None
        # The next attempt fits when at most limit-1 earlier attempts are still in the window,
        # i.e. when attempt [len - limit] (0-based, oldest first) has aged out.
        room_at = attempts[len(attempts) - limit] + window
        retry = _ceil_s(room_at - now)
        peer.wait_until = now + retry
        return Refusal(429, retry,
                       f"Too many connection attempts: {len(attempts)} in the last "
                       f"{window:g} s from IP({ip}), at most {limit} per {window:g} s; "
                       f"retry after {retry} s or this IP is banned")

    def _banned(self, ip: str, peer: _Peer, now: float) -> Refusal:
        until_ms = int((time.time() + (peer.banned_until - now)) * 1000)
        retry = _ceil_s(peer.banned_until - now)
        return Refusal(418, retry,
                       f"Way too many requests; IP({ip}) banned until {until_ms} for "
                       f"connecting again before Retry-After; retry after {retry} s")

    def forgive(self) -> None:
        """Forget every attempt, wait and ban (the `limits` action with forgive=true)."""
        self._peers.clear()

    def snapshot(self, now: float) -> Dict[str, Dict[str, float]]:
        """Per IP: attempts in the current window and seconds of ban left (for /_sim/stats)."""
        window = self.config.connect_window
        return {ip: {"attempts_in_window": sum(1 for t in p.attempts if t > now - window),
                     "banned_for": round(max(p.banned_until - now, 0.0), 3)}
                for ip, p in self._peers.items()}
