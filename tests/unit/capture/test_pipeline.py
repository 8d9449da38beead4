"""Sequencing and batching: each trade once, gaps reported, checkpoints that never skip a hole.

Fact: spot trade ids grow by exactly 1 per symbol, across halts too (a Binance maintainer in
binance/binance-public-data#114).
"""
from __future__ import annotations

import re
import threading
from types import SimpleNamespace
from typing import List, Tuple

import pytest

from workers.capture import pipeline as pipeline_module
from workers.capture.pipeline import Gap, Pipeline
from workers.storage.batch import Batch
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

BASE_MS = 1_757_522_615_939
ID_RE = re.compile(r",trade_id=(\d+)i,")


def trade(trade_id: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, trade_id, "100.00000000", "0.50000000", BASE_MS + trade_id, False,
                 (BASE_MS + trade_id) * 1000)


class Recorder:
    def __init__(self) -> None:
        self.gaps: List[Tuple[str, Gap]] = []
        self.batches: List[Batch] = []
        self.lock = threading.Lock()

    def on_gap(self, symbol, gap):
        with self.lock:
            self.gaps.append((symbol, gap))

    def on_batch(self, batch: Batch):
        with self.lock:
            self.batches.append(batch)

    def ids(self, symbol="BTCUSDT"):
        return [int(m.group(1)) for b in self.batches for line in b.lines
                if f"symbol={symbol} " in line for m in [ID_RE.search(line)] if m]


def make(batch_size=1000, resume_from=None):
    rec = Recorder()
    pipe = Pipeline(LineRenderer("price_ticks"), batch_size, resume_from or {}, rec.on_gap,
                    rec.on_batch)
    return pipe, rec


def accept_all(pipe, ids, symbol="BTCUSDT"):
    return [pipe.accept(trade(i, symbol)) for i in ids]


def checkpoint_now(pipe):
    """The checkpoint a batch cut now would carry."""
    pipe.add_line("probe x=1i 1")
    return pipe.flush().checkpoint


# -- accepting and dropping -----------------------------------------------------------------------

def test_consecutive_ids_are_all_accepted_into_one_batch():
    pipe, rec = make()

    assert accept_all(pipe, range(1, 6)) == [True] * 5
    batch = pipe.flush()

    assert rec.batches == [batch]
    assert rec.ids() == [1, 2, 3, 4, 5]
    assert batch.trades == 5
    assert batch.checkpoint == {"BTCUSDT": 5}
    assert rec.gaps == []
    assert pipe.accepted == 5


def test_a_repeated_trade_is_dropped_and_counted():
    pipe, rec = make()

    assert accept_all(pipe, [1, 2, 2, 1, 3]) == [True, True, False, False, True]
    pipe.flush()

    assert rec.ids() == [1, 2, 3]
    assert pipe.duplicates == 2
    assert pipe.accepted == 3


def test_each_symbol_has_its_own_id_sequence():
    pipe, rec = make()

    accept_all(pipe, [10, 11], "BTCUSDT")
    accept_all(pipe, [10, 11], "ETHUSDT")
    batch = pipe.flush()

    assert pipe.duplicates == 0
    assert batch.checkpoint == {"BTCUSDT": 11, "ETHUSDT": 11}


def test_batch_body_is_its_lines_joined_by_newlines():
    pipe, rec = make()
    accept_all(pipe, [1, 2])

    batch = pipe.flush()

    assert batch.body() == "\n".join(batch.lines)
    assert not batch.body().endswith("\n")


# -- gaps -----------------------------------------------------------------------------------------

def test_a_jump_reports_exactly_one_gap_with_first_and_last_missing_id():
    pipe, rec = make()

    accept_all(pipe, [1, 2, 6, 7, 8])

    assert rec.gaps == [("BTCUSDT", (3, 5))]
    assert pipe.open_gaps() == {"BTCUSDT": [(3, 5)]}


def test_the_trade_after_a_jump_is_accepted_and_written():
    pipe, rec = make()

    assert accept_all(pipe, [1, 6]) == [True, True]
    pipe.flush()

    assert rec.ids() == [1, 6]


def test_checkpoint_stays_below_an_open_gap():
    pipe, rec = make()
    accept_all(pipe, [1, 2, 6, 7, 8])

    assert pipe.flush().checkpoint == {"BTCUSDT": 2}


def test_filled_gap_ids_are_accepted_once_in_any_order_and_the_checkpoint_follows():
    pipe, rec = make()
    accept_all(pipe, [1, 2, 6])

    assert pipe.accept(trade(5)) is True
    assert checkpoint_now(pipe) == {"BTCUSDT": 2}
    assert pipe.accept(trade(3)) is True
    assert checkpoint_now(pipe) == {"BTCUSDT": 3}
    assert pipe.accept(trade(4)) is True
    assert checkpoint_now(pipe) == {"BTCUSDT": 6}

    assert pipe.accept(trade(4)) is False  # a second copy of a filled id
    assert sorted(rec.ids()) == [1, 2, 3, 4, 5, 6]
    assert rec.gaps == [("BTCUSDT", (3, 5))]  # filling reports nothing new
    assert pipe.open_gaps() == {}


def test_a_partial_fill_splits_the_gap():
    pipe, rec = make()
    accept_all(pipe, [1, 10])

    pipe.accept(trade(5))

    assert pipe.open_gaps() == {"BTCUSDT": [(2, 4), (6, 9)]}
    pipe.accept(trade(2))
    pipe.accept(trade(9))
    assert pipe.open_gaps() == {"BTCUSDT": [(3, 4), (6, 8)]}


def test_a_second_jump_adds_a_second_gap_and_the_checkpoint_waits_for_the_first():
    pipe, rec = make()
    accept_all(pipe, [1, 5, 6, 9])

    assert rec.gaps == [("BTCUSDT", (2, 4)), ("BTCUSDT", (7, 8))]
    accept_all(pipe, [7, 8])
    assert checkpoint_now(pipe) == {"BTCUSDT": 1}
    accept_all(pipe, [2, 3, 4])
    assert checkpoint_now(pipe) == {"BTCUSDT": 9}


def test_a_gap_in_one_symbol_does_not_hold_back_another():
    pipe, rec = make()
    accept_all(pipe, [1, 5], "BTCUSDT")
    accept_all(pipe, [1, 2, 3], "ETHUSDT")

    assert pipe.flush().checkpoint == {"BTCUSDT": 1, "ETHUSDT": 3}


def test_give_up_removes_the_range_and_lets_the_checkpoint_pass():
    pipe, rec = make()
    accept_all(pipe, [1, 10])

    pipe.give_up("BTCUSDT", 2, 9)

    assert pipe.open_gaps() == {}
    assert checkpoint_now(pipe) == {"BTCUSDT": 10}


def test_give_up_of_the_older_part_keeps_waiting_for_the_rest():
    pipe, rec = make()
    accept_all(pipe, [1, 10])

    pipe.give_up("BTCUSDT", 2, 5)

    assert pipe.open_gaps() == {"BTCUSDT": [(6, 9)]}
    assert checkpoint_now(pipe) == {"BTCUSDT": 5}


def test_give_up_in_the_middle_of_a_gap_keeps_both_ends():
    pipe, rec = make()
    accept_all(pipe, [1, 10])

    pipe.give_up("BTCUSDT", 4, 6)

    assert pipe.open_gaps() == {"BTCUSDT": [(2, 3), (7, 9)]}


def test_a_given_up_id_that_arrives_later_is_dropped():
    pipe, rec = make()
    accept_all(pipe, [1, 5])
    pipe.give_up("BTCUSDT", 2, 4)

    assert pipe.accept(trade(3)) is False


# -- resuming and REST hints ----------------------------------------------------------------------

def test_resume_makes_the_first_live_trade_report_the_gap_from_the_checkpoint():
    pipe, rec = make(resume_from={"BTCUSDT": 100})

    pipe.accept(trade(105))

    assert rec.gaps == [("BTCUSDT", (101, 104))]
    assert pipe.flush().checkpoint == {"BTCUSDT": 100}


def test_resume_with_the_next_id_reports_no_gap():
    pipe, rec = make(resume_from={"BTCUSDT": 100})

    pipe.accept(trade(101))

    assert rec.gaps == []
    assert pipe.flush().checkpoint == {"BTCUSDT": 101}


def test_after_resume_trades_at_or_below_the_checkpoint_are_duplicates():
    pipe, rec = make(resume_from={"BTCUSDT": 100})

    assert accept_all(pipe, [99, 100]) == [False, False]


def test_without_a_checkpoint_the_first_trade_starts_the_sequence_without_a_gap():
    pipe, rec = make()

    pipe.accept(trade(5225367649))

    assert rec.gaps == []


def test_expect_up_to_reports_unseen_ids_as_a_gap():
    pipe, rec = make()
    accept_all(pipe, [1, 2, 3])

    pipe.expect_up_to("BTCUSDT", 10)

    assert rec.gaps == [("BTCUSDT", (4, 10))]
    assert checkpoint_now(pipe) == {"BTCUSDT": 3}
    assert pipe.accept(trade(11)) is True
    assert rec.gaps == [("BTCUSDT", (4, 10))]  # 11 follows the expected 10: no new gap


def test_expect_up_to_at_or_below_what_we_have_does_nothing():
    pipe, rec = make()
    accept_all(pipe, [1, 2, 3])

    pipe.expect_up_to("BTCUSDT", 3)
    pipe.expect_up_to("BTCUSDT", 1)

    assert rec.gaps == []


def test_expect_up_to_after_a_restart_reports_the_gap_from_the_checkpoint():
    pipe, rec = make(resume_from={"BTCUSDT": 100})

    pipe.expect_up_to("BTCUSDT", 120)

    assert rec.gaps == [("BTCUSDT", (101, 120))]


def test_expect_up_to_for_a_symbol_never_seen_does_nothing():
    pipe, rec = make()

    pipe.expect_up_to("BTCUSDT", 120)

    assert rec.gaps == []


# -- cutting batches ------------------------------------------------------------------------------

def test_batches_are_cut_at_batch_size_lines_in_sequence_order():
    pipe, rec = make(batch_size=3)

    accept_all(pipe, range(1, 8))

    assert [len(b.lines) for b in rec.batches] == [3, 3]
    assert [b.seq for b in rec.batches] == [1, 2]
    assert [b.checkpoint for b in rec.batches] == [{"BTCUSDT": 3}, {"BTCUSDT": 6}]
    last = pipe.flush()
    assert (last.seq, len(last.lines), last.checkpoint) == (3, 1, {"BTCUSDT": 7})


def test_batch_records_the_time_of_its_oldest_trade():
    pipe, rec = make(batch_size=2)

    accept_all(pipe, [1, 2, 3])

    assert rec.batches[0].first_time_ms == BASE_MS + 1
    assert pipe.flush().first_time_ms == BASE_MS + 3


def test_flush_of_an_empty_batch_hands_on_nothing():
    pipe, rec = make()

    assert pipe.flush() is None
    assert rec.batches == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pipeline_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_flush_older_than_waits_until_the_first_line_is_that_old(clock):
    pipe, rec = make()
    pipe.accept(trade(1))
    clock.now += 0.5
    pipe.accept(trade(2))

    assert pipe.flush(older_than=1.0) is None
    assert rec.batches == []
    clock.now += 0.5
    batch = pipe.flush(older_than=1.0)
    assert rec.batches == [batch]
    assert len(batch.lines) == 2


def test_the_flush_clock_restarts_with_the_next_batch(clock):
    pipe, rec = make()
    pipe.accept(trade(1))
    clock.now += 5
    pipe.flush(older_than=1.0)

    pipe.accept(trade(2))
    clock.now += 0.9

    assert pipe.flush(older_than=1.0) is None


def test_a_non_trade_line_is_batched_but_not_counted_as_a_trade():
    pipe, rec = make()

    pipe.add_line("streamer_health,worker=btcusdt received=1i 1")
    pipe.accept(trade(1))
    batch = pipe.flush()

    assert batch.lines[0].startswith("streamer_health,")
    assert len(batch.lines) == 2
    assert batch.trades == 1
    assert pipe.accepted == 1
    assert batch.first_time_ms == BASE_MS + 1


def test_a_batch_knows_its_trades_times_apart_from_the_health_point():
    pipe, rec = make()
    pipe.accept(trade(1))
    pipe.add_line("streamer_health,worker=btcusdt received=1i 1")
    pipe.accept(trade(2))
    batch = pipe.flush()

    assert batch.others == [1]
    assert batch.trade_times_ms() == [BASE_MS + 1, BASE_MS + 2]
    assert pipe.flush() is None  # the next batch starts with no other lines
    pipe.accept(trade(3))
    assert pipe.flush().others == []


def test_a_batch_of_only_non_trade_lines_has_no_trades():
    pipe, rec = make()
    pipe.add_line("streamer_health,worker=btcusdt received=0i 1")

    batch = pipe.flush()

    assert batch.trades == 0
    assert batch.checkpoint == {}


def test_a_non_trade_line_opens_the_flush_clock(clock):
    pipe, rec = make()
    pipe.add_line("streamer_health,worker=btcusdt received=0i 1")
    clock.now += 1.0

    assert pipe.flush(older_than=1.0) is not None


# -- concurrency --------------------------------------------------------------------------------

def test_two_readers_of_overlapping_streams_emit_every_id_exactly_once():
    """Two connections (make-before-break) deliver the same trades, each missing some."""
    n = 10_000
    pipe, rec = make(batch_size=257)
    stream_a = [i for i in range(1, n + 1) if i % 7 != 0]
    stream_b = [i for i in range(1, n + 1) if i % 7 != 3]
    start = threading.Barrier(2)

    def read(ids):
        start.wait()
        for i in ids:
            pipe.accept(trade(i))

    threads = [threading.Thread(target=read, args=(ids,)) for ids in (stream_a, stream_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    pipe.flush()

    ids = rec.ids()
    assert sorted(ids) == list(range(1, n + 1))
    assert len(ids) == len(set(ids))
    assert pipe.accepted == n
    assert pipe.accepted + pipe.duplicates == len(stream_a) + len(stream_b)
    assert pipe.open_gaps() == {}
    assert sorted(b.seq for b in rec.batches) == list(range(1, len(rec.batches) + 1))
    assert max(rec.batches, key=lambda b: b.seq).checkpoint == {"BTCUSDT": n}
