"""The simulator's connection-attempt budget (limits.py) and refusal counters, without a server."""
from __future__ import annotations

import pytest

from tests.support.exchange.cli import build_parser, config_from_args
from tests.support.exchange.config import ConfigError, SimConfig
from tests.support.exchange.limits import ConnectLimiter
from tests.support.exchange.stats import REFUSAL_KINDS, SimStats


def limiter(attempts: int = 5, window: float = 10.0, ban: float = 3.0) -> ConnectLimiter:
    return ConnectLimiter(SimConfig(max_connect_attempts=attempts, connect_window=window,
                                    ban_seconds=ban))


def test_the_limits_are_on_by_default() -> None:
    config = config_from_args(build_parser().parse_args([]))
    assert (config.max_url_length, config.max_streams, config.max_incoming_per_sec,
            config.max_connect_attempts, config.connect_window, config.ban_seconds) == \
        (8000, 1024, 5, 300, 300.0, 120.0)
    flags = ["--max-url-length", "100", "--max-connect-attempts", "5", "--connect-window", "10",
             "--ban-seconds", "3"]
    config = config_from_args(build_parser().parse_args(flags))
    assert (config.max_url_length, config.max_connect_attempts, config.connect_window,
            config.ban_seconds) == (100, 5, 10.0, 3.0)
    for flag in ("--max-url-length", "--max-connect-attempts", "--connect-window",
                 "--ban-seconds"):
        with pytest.raises(ConfigError, match=flag):
            config_from_args(build_parser().parse_args([flag, "0"]))


def test_attempts_past_the_budget_get_429_with_the_wait_until_one_fits() -> None:
    lim = limiter()
    for n in range(5):
        assert lim.attempt("127.0.0.1", 100.0 + n) is None  # 100, 101, ..., 104
    refusal = lim.attempt("127.0.0.1", 105.0)
    assert refusal is not None and refusal.status == 429 and refusal.kind == "attempts_429"
    # Six attempts (the refused one counts); one more fits when 101 has aged out: at 111.
    assert refusal.retry_after == 6
    assert refusal.body()["code"] == -1003 and "at most 5 per 10 s" in str(refusal.body()["msg"])
    assert lim.attempt("10.0.0.2", 105.5) is None  # another IP has its own budget
    assert lim.attempt("127.0.0.1", 111.0) is None  # came back exactly when told


def test_coming_back_before_retry_after_bans_and_the_ban_counts_down() -> None:
    lim = limiter()
    for _ in range(5):
        lim.attempt("127.0.0.1", 100.0)
    assert lim.attempt("127.0.0.1", 100.0).retry_after == 10  # type: ignore[union-attr]
    banned = lim.attempt("127.0.0.1", 101.0)
    assert banned is not None and (banned.status, banned.retry_after) == (418, 3)
    assert banned.kind == "banned_418" and "banned until" in banned.msg
    for now, left in ((101.5, 3), (102.0, 2), (103.0, 1)):  # the ban is not extended
        during = lim.attempt("127.0.0.1", now)
        assert during is not None and (during.status, during.retry_after) == (418, left)
    # After the ban the attempts made during it still fill the window: 429 again, and the
    # wait counts them (one more fits when the one at 101 ages out, at 111).
    after_ban = lim.attempt("127.0.0.1", 104.5)
    assert after_ban is not None and (after_ban.status, after_ban.retry_after) == (429, 7)
    assert lim.attempt("127.0.0.1", 111.5) is None


def test_an_idle_window_and_forgive_give_the_budget_back() -> None:
    lim = limiter(attempts=1, window=2.0, ban=60.0)
    assert lim.attempt("127.0.0.1", 0.0) is None
    assert lim.attempt("127.0.0.1", 0.5).status == 429  # type: ignore[union-attr]
    assert lim.attempt("127.0.0.1", 0.6).status == 418  # type: ignore[union-attr]
    lim.forgive()
    assert lim.attempt("127.0.0.1", 0.7) is None
    assert lim.attempt("127.0.0.1", 2.8) is None


def test_refusals_are_counted_by_kind_and_handshake_ones_in_refused() -> None:
    stats = SimStats()
    for kind in ("url_too_long", "attempts_429", "banned_418", "too_many_requests_1008",
                 "subscribe_over_limit", "too_many_streams"):
        stats.refuse(kind)
    out = stats.as_dict()
    assert set(out["refusals"]) == set(REFUSAL_KINDS)
    assert out["refusals"]["url_too_long"] == 1 and out["refusals"]["invalid_url"] == 0
    assert out["refused"] == 4  # the HTTP refusals only
    with pytest.raises(ValueError):
        stats.refuse("nope")
