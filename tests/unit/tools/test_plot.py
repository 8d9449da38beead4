"""scripts/plot's choices (workers/tools/plot.py): the range it draws, the legend it keeps
readable and the time it shades red (issue 21.10); the PNG goes under charts/ by default."""
from __future__ import annotations

import os
import time

from workers.settings import PROJECT_ROOT
from workers.tools import plot
from workers.tools.plot import (
    MIN_SPAN_S,
    NS,
    OTHERS_COLOUR,
    PALETTE,
    SHADE_COLOUR,
    cap_legend,
    health_legend,
    merge_spans,
    nonzero_spans,
    pick_range,
    spool_spans,
)

HOUR = 3600 * NS
UNTIL = 1_764_478_800 * NS  # 2025-11-30T05:00:00Z
SINCE = UNTIL - HOUR


# -- the range: from the data, unless given --------------------------------------------------------

def test_four_minutes_of_data_in_the_last_hour_draw_four_minutes_not_an_hour():
    first = UNTIL - 240 * NS

    assert pick_range(first, SINCE, UNTIL, since_given=False) == (first, UNTIL)


def test_a_given_since_is_drawn_as_given_however_little_data_there_is():
    assert pick_range(UNTIL - 240 * NS, SINCE, UNTIL, since_given=True) == (SINCE, UNTIL)


def test_no_data_leaves_the_range_looked_at():
    assert pick_range(None, SINCE, UNTIL, since_given=False) == (SINCE, UNTIL)


def test_a_range_picked_from_the_data_is_at_least_a_minute_and_ends_at_the_end():
    # the end stays the end (now or --until): a capture that stopped shows as an empty tail
    assert pick_range(UNTIL - 5 * NS, SINCE, UNTIL, False) == (UNTIL - MIN_SPAN_S * NS, UNTIL)
    assert pick_range(SINCE - HOUR, SINCE, UNTIL, False) == (SINCE, UNTIL)  # never before since


# -- the legend: capped, no colour twice -----------------------------------------------------------

def test_up_to_eight_series_each_get_their_own_colour_busiest_first():
    legend = cap_legend({"a": 1.0, "b": 30.0, "c": 20.0})

    assert legend.named == ["b", "c", "a"] and legend.others == []
    assert [legend.colours[n] for n in legend.named] == list(PALETTE[:3])


def test_more_series_than_colours_keep_the_busiest_named_and_the_rest_as_others():
    volumes = {f"w{i:02d}": float(i) for i in range(15)}

    legend = cap_legend(volumes)

    assert legend.named == [f"w{i:02d}" for i in range(14, 6, -1)]  # the 8 busiest
    assert sorted(legend.others) == [f"w{i:02d}" for i in range(7)]
    named_colours = [legend.colours[n] for n in legend.named]
    assert len(set(named_colours)) == len(named_colours) == len(PALETTE)  # none repeated
    assert {legend.colours[n] for n in legend.others} == {OTHERS_COLOUR}
    assert OTHERS_COLOUR not in PALETTE and SHADE_COLOUR not in PALETTE


def test_the_health_legend_ranks_workers_by_trades_received_over_the_range():
    health = {"quiet": {"received": [100, 110]}, "busy": {"received": [5, 900]},
              "restarted": {"received": [800, 20]}}  # a restart resets its counter: 20 more

    assert health_legend(health).named == ["busy", "restarted", "quiet"]


# -- the red zone: only while the spool held data --------------------------------------------------

T = [UNTIL + i * 10 * NS for i in range(7)]


def test_shading_covers_the_points_with_a_spool_until_the_next_point():
    spans = nonzero_spans(T, [0, 500, 900, 0, 0, 300, 0], 10 * NS)

    assert spans == [(T[1], T[3]), (T[5], T[6])]


def test_a_spool_still_held_at_the_last_point_is_shaded_one_step_and_unknown_is_not_shaded():
    assert nonzero_spans(T, [0, None, 0, 0, 0, 0, 7], 10 * NS) == [(T[6], T[6] + 10 * NS)]
    assert nonzero_spans(T, [0] * 7, 10 * NS) == []


def test_the_spans_of_all_workers_are_joined():
    assert merge_spans([(5, 9), (1, 3), (3, 4), (8, 12)]) == [(1, 4), (5, 12)]
    health = {"a": {"time": T, "spool_bytes": [0, 1, 0, 0, 0, 0, 0]},
              "b": {"time": T, "spool_bytes": [0, 0, 1, 0, 0, 0, 0]}}
    assert spool_spans(health, 10) == [(T[1], T[3])]


# -- where the PNG goes ----------------------------------------------------------------------------

def test_without_out_the_chart_goes_under_charts_which_git_ignores(tmp_path, monkeypatch, capsys):
    lp = tmp_path / "lp" / "btcusdt"
    lp.mkdir(parents=True)
    now = time.time_ns()
    lines = "".join(f'price_ticks,symbol=BTCUSDT price={100 + i % 7},price_str="1",qty=0.5,'
                    f'qty_str="0.5",trade_id={i}i,buyer_maker={"true" if i % 2 else "false"} '
                    f"{now - (240 - i) * NS}\n" for i in range(240))
    (lp / "btcusdt-20261124T100000Z.lp").write_text("# DML\n" + lines)
    assert plot.CHARTS_DIR == PROJECT_ROOT / "charts"
    assert "/charts/" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
    monkeypatch.setattr(plot, "CHARTS_DIR", tmp_path / "charts")

    code = plot.main(["btcusdt", "--lp-dir", str(tmp_path / "lp"), "--env-file", os.devnull])

    assert code == 0
    (written,) = (tmp_path / "charts").glob("market-BTCUSDT-files-*.png")
    assert capsys.readouterr().out == f"plot: wrote {written}\n"  # says where


# -- read in windows: 3 Core refuses a query over more than ~72 h ------------------------------

DAY = 86400 * plot.NS


def test_a_week_is_read_a_day_at_a_time_cut_at_whole_days():
    since, until = 5 * DAY + 3600 * plot.NS, 12 * DAY

    windows = plot.read_windows(since, until, step_s=3600)

    assert windows[0] == (since, 6 * DAY) and windows[-1] == (11 * DAY, until)
    assert len(windows) == 7 and all(b == c for (_, b), (c, _) in zip(windows, windows[1:]))
    assert max(b - a for a, b in windows) <= plot.READ_WINDOW_S * plot.NS


def test_each_interval_lies_in_one_window_whatever_the_step():
    step_s = 7000  # no divisor of a day: windows of 12 steps (84,000 s)
    windows = plot.read_windows(0, 3 * DAY, step_s)

    assert all(a % (step_s * plot.NS) == 0 for a, _ in windows)
    assert windows[1][0] == 84000 * plot.NS


def test_an_interval_longer_than_a_day_is_one_window_of_its_own():
    assert plot.read_windows(0, 4 * DAY, step_s=2 * 86400) == [(0, 2 * DAY), (2 * DAY, 4 * DAY)]
