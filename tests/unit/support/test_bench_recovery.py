"""The recovery benchmark's own logic: the exactly-once verdict from influxd's aggregates, the
spool it builds with the worker's code (replayable, in order, the checkpoint at its last id),
the REST ceiling, and the goal/measured/verdict rows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from tests.support.bench import recovery
from tests.support.bench.rig import FULL, QUICK
from workers.storage.lineproto import trade_timestamp_ns
from workers.storage.spool import Spool


def test_exactly_once_needs_count_distinct_and_both_ends() -> None:
    assert recovery.judge_ids(5, 5, 10, 14, 10, 14)[0] is True
    # One id missing and another stored twice (two timestamps): the count alone would pass.
    ok, text = recovery.judge_ids(5, 4, 10, 14, 10, 14)
    assert not ok and "1 duplicate points" in text
    # As many distinct ids, shifted: the ends give it away.
    assert recovery.judge_ids(5, 5, 11, 15, 10, 14)[0] is False
    # An id outside the range instead of one inside it.
    assert recovery.judge_ids(5, 5, 10, 99, 10, 14)[0] is False
    ok, text = recovery.judge_ids(0, 0, None, None, 10, 14)
    assert not ok and "expected 5 ids" in text


def test_rest_ceiling_is_240k_trades_a_minute() -> None:
    assert recovery.rest_ceiling_rate() == 4_000.0
    assert recovery.rest_ceiling_rate(1_200) == 800.0


def test_spool_lines_are_one_trade_a_millisecond_ending_at_the_end() -> None:
    lines = list(recovery.spool_lines(500, 3, end_ms=1_700_000_000_002))
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith("price_ticks,symbol=BTCUSDT price=")
        assert f",trade_id={500 + i}i," in line
        assert line.endswith(f" {trade_timestamp_ns(1_700_000_000_000 + i, 500 + i)}")
    assert lines == list(recovery.spool_lines(500, 3, end_ms=1_700_000_000_002))  # seeded


def test_built_spool_replays_every_id_once_in_order(tmp_path: Path) -> None:
    built = recovery.build_spool(tmp_path, "db", "w", 1_000, 12_345, end_ms=1_700_000_000_000)
    assert built["segments"] == 1 and built["bytes"] > 12_345 * 100
    checkpoint = json.loads((tmp_path / "w" / "checkpoint.json").read_text())
    assert checkpoint["last_stored_id"] == {"BTCUSDT": 1_000 + 12_345 - 1}
    spool = Spool(tmp_path / "w" / "spool", "db", "w")  # as the worker opens it
    ids = []
    while True:
        chunk = spool.peek(recovery.BATCH)
        if chunk is None:
            break
        body, segment, end = chunk
        ids += [int(line.split(",trade_id=")[1].split("i,")[0]) for line in body.split("\n")]
        spool.commit(segment, end)
    assert ids == list(range(1_000, 1_000 + 12_345))


def test_plans_follow_the_profile() -> None:
    assert recovery.plan_for(QUICK) is recovery.QUICK_PLAN
    assert recovery.plan_for(FULL).spool_trades == 3_600_000
    assert recovery.plan_for(FULL).gap_trades == 600_000


def test_targets_give_one_row_per_figure() -> None:
    assert [t.met for t in recovery.targets({})] == [None, None, None, None]
    facts: Dict[str, Any] = {"recovery": {
        "drain": {"rate": 90_000.0, "x_live": 90.0, "trades": 3_600_000, "drained_s": 40.0,
                  "check": "exactly once (3,600,000 ids)", "exact": True},
        "backfill": {"rate": 2_400.0, "share": 0.6, "gap": 600_000, "closed_s": 250.0,
                     "check": "exactly once (600,000 ids)", "exact": True},
        "first_trade": {"median_s": 1.2, "max_s": 1.3},
        "kill9": {"catchup_s": 3.2, "check": "exactly once (8,000 ids)", "exact": True}}}
    rows = recovery.targets(facts)
    assert [t.verdict for t in rows] == ["met", "**missed**", "met", "met"]
    assert "60 %" in rows[1].measured
    # A measurement that lost or doubled an id misses its goal whatever its speed.
    facts["recovery"]["kill9"]["exact"] = False
    assert recovery.targets(facts)[3].met is False
    assert "error: boom" in recovery.targets(
        {"recovery": {"drain": {"error": "boom"}}})[0].measured


def test_each_attempt_has_its_own_homes(tmp_path: Path) -> None:
    """A disturbed section runs again: its workers must not resume from the first attempt's
    checkpoints or replay its spool."""
    class FakeRig:
        root = tmp_path / "bench"

    first = recovery.Bench(FakeRig(), recovery.QUICK_PLAN)  # type: ignore[arg-type]
    again = recovery.Bench(FakeRig(), recovery.QUICK_PLAN)  # type: ignore[arg-type]
    assert first.base != again.base and first.base.parent == again.base.parent
