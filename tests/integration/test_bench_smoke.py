"""Smoke test of `scripts/bench` (tests/support/bench): the report renders, and one tiny section
runs against the real simulator and InfluxDB. No timed assertions: rows and cells only."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.bench import ceilings, machine, targets
from tests.support.bench.cli import parse_args
from tests.support.bench.report import Section, render_document
from tests.support.bench.rig import QUICK, Rig
from tests.support.influx_server import InfluxdNotFound, find_influxd
from tests.support.procs import ON_CI

TINY = dataclasses.replace(QUICK, name="smoke", warmup_s=0.5, ceiling_s=1.0,
                           backlog_trades=20_000, backlog_rounds=1)


def rows(markdown: str) -> list:
    """First cells of every table row."""
    return [line.split("|")[1].strip() for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]


def test_the_report_renders_every_target_and_section() -> None:
    facts = {"recv_rate": 100_000.0, "ramp_best_rate": 50_000.0,
             "latency": {"1000": {"p50": 500.0, "p99": 1050.0}},
             "idle": {"rss_mb": 44.0}, "group_1000": {"rss_mb": 47.0},
             "scale": {"rss_mb": 420.0, "pss_mb": 300.0, "processes": 10, "cores_typical": 0.1,
                       "cores_10x": 0.4, "offered_typical": 900.0, "zero_loss": True}}
    sec = Section("memory", "5. Memory per worker process")
    sec.table("worker", "RSS").add("btcusdt", "44.0 MB")
    doc = render_document("smoke", [("CPU", "test")], targets.evaluate(facts), [sec], 0.0, 1.0,
                          "scripts/bench --quick")
    first_cells = rows(doc)
    for expected in ("CPU", "latency p99 at 1,000 trades/s", "RSS, idle single-symbol worker",
                     "RSS, group of 1,000 quiet symbols", "~1,500 pairs: CPU at the typical rate",
                     "btcusdt"):
        assert expected in first_cells, doc
    assert "## 5. Memory per worker process" in doc
    assert "**missed**" in doc  # 44 MB idle is over the 40 MB target


def test_options_parse() -> None:
    args = parse_args(["--quick", "--only", "memory,scale", "--out", "x.md"])
    assert args.quick and args.sections == ["memory", "scale"] and args.out == Path("x.md")
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])


@pytest.mark.slow
def test_the_ceilings_section_runs_and_fills_its_table(tmp_path: Path) -> None:
    try:
        find_influxd()
    except InfluxdNotFound as exc:
        if ON_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    rig = Rig(tmp_path, TINY).start()
    try:
        sec = ceilings.run(rig, TINY)
    finally:
        assert rig.close() == []
    labels = rows(sec.render())
    assert labels == ["reader", ceilings.LABELS["plain"], ceilings.LABELS["fast"],
                      ceilings.LABELS["worker"],
                      "ceiling", "simulator send rate (1 connection)",
                      "bare websockets (asyncio) receive loop, flat out",
                      "InfluxDB ingest, 5,000-line bodies, front",
                      "InfluxDB ingest, 5,000-line bodies, direct"], sec.render()
    like, other = sec.tables
    assert all(row[2] != "–" and row[4] != "–" for row in like.rows)  # rate, per CPU-second
    assert like.rows[2][7] == "yes", sec.render()  # the worker stored every queued trade once
    assert all(row[1] and row[1] != "–" for row in other.rows)  # every rate filled
    assert {"sim_rate", "recv_rate", "backlog", "ingest_front", "ingest_direct"} <= set(sec.facts)
    assert [row[0] for row in machine.describe(rig.influxd_binary, tmp_path)[:2]] == [
        "code under test", "CPU"]
