"""The benchmark's README table: regenerated from a run, between two markers, nothing else
touched; every figure names the section that measures it."""
from __future__ import annotations

import pytest

from tests.support.bench.cli import README_BEGIN, README_END, readme_block, replace_between_markers
from tests.support.bench.targets import evaluate

BOX = [("code under test", "abc1234, workers/ as committed"), ("CPU", "Test CPU"),
       ("cores (logical)", "2"), ("RAM", "4.0 GiB"), ("Python", "3.11.7 (CPython)"),
       ("influxd", "InfluxDB v1.6.7"), ("websocket-client", "1.9.2"),
       ("influxdb-client", "1.50.0")]


def test_the_block_between_the_markers_is_replaced_and_the_rest_kept():
    text = f"intro\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    out = replace_between_markers(text, "NEW")
    assert out == f"intro\n{README_BEGIN}\nNEW\n{README_END}\nafter\n"
    assert replace_between_markers(out, "NEWER").count("NEW") == 1


def test_a_readme_without_markers_is_refused_rather_than_appended_to():
    with pytest.raises(SystemExit, match="markers"):
        replace_between_markers("no markers here", "NEW")


def test_the_block_names_the_run_the_machine_and_a_command_per_figure():
    facts = {"backlog": {
        "plain": {"per_cpu_s": 120_000.0, "us_per_message": 8.3, "mid_rate": 118_000.0},
        "fast": {"per_cpu_s": 380_000.0, "us_per_message": 2.6, "mid_rate": 350_000.0},
        "worker": {"per_cpu_s": 100_000.0, "us_per_message": 10.0, "mid_rate": 70_000.0,
                   "exactly_once": True}}}
    block = readme_block("full", BOX, evaluate(facts), 0.0, 600.0, "scripts/bench")
    assert "by `scripts/bench` (full run, 10.0 min) on 2 x Test CPU" in block
    row = next(line for line in block.splitlines() if line.startswith("| worker CPU"))
    assert "83 % of the library loop" in row and "| met |" in row
    assert "`scripts/bench --only ceilings`" in row
    rows = [line for line in block.splitlines() if line.startswith("| ") and "figure" not in line]
    assert rows and all("`scripts/bench --only " in r for r in rows)


def test_a_worker_below_the_like_for_like_goal_is_missed():
    facts = {"backlog": {
        "plain": {"per_cpu_s": 120_000.0, "us_per_message": 8.3, "mid_rate": 1.0},
        "fast": {"per_cpu_s": 380_000.0, "us_per_message": 2.6, "mid_rate": 1.0},
        "worker": {"per_cpu_s": 60_000.0, "us_per_message": 16.7, "mid_rate": 1.0,
                   "exactly_once": True}}}
    first = evaluate(facts)[0]
    assert first.met is False and first.verdict == "**missed**"


def test_the_workers_spooled_count_is_read_from_its_last_summary_line():
    from tests.support.bench.backlog import summary_count
    log = ("... event=summary trades_per_s=1.0 received=10 written=10 spooled=0 rejected=0\n"
           "... event=summary trades_per_s=9.0 received=90 written=40 spooled=50 "
           "spool_backlog_bytes=0\n")
    assert summary_count(log, "spooled") == 50
    assert summary_count("no summary yet", "spooled") is None
