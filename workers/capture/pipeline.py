"""Sequencing and batching: from checked trades to line-protocol batches, each trade once.

Spot trade ids are consecutive per symbol. The sequencer drops a repeat, and reports a jump as
a gap for the backfiller; filled gaps come back through `accept` like live trades. Every batch
carries the checkpoint that becomes true once it and all batches before it are stored: per
symbol, the highest id below which nothing is missing.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from workers.storage.batch import Batch
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

Gap = Tuple[int, int]  # first and last missing trade id, inclusive


class SymbolSequence:
    """What one symbol has accepted so far, and which id ranges are still missing."""

    def __init__(self, last_id: Optional[int]) -> None:
        self.last_id = last_id  # highest id accepted; None until the first trade
        self.resumed_from = last_id  # the checkpoint's (or database's) id, never changed
        self.gaps: List[Gap] = []  # sorted, disjoint

    def take(self, trade_id: int) -> Tuple[bool, Optional[Gap]]:
        """(accept?, new gap) for an arriving id."""
        last = self.last_id
        if last is None or trade_id == last + 1:
            self.last_id = trade_id
            return True, None
        if trade_id > last:
            gap = (last + 1, trade_id - 1)
            self.gaps.append(gap)
            self.last_id = trade_id
            return True, gap
        return self._fill(trade_id), None

    def _fill(self, trade_id: int) -> bool:
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= trade_id <= hi:
                pieces = [(a, b) for a, b in ((lo, trade_id - 1), (trade_id + 1, hi)) if a <= b]
                self.gaps[i:i + 1] = pieces
                return True
        return False  # already accepted: a duplicate

    def give_up(self, lo: int, hi: int) -> None:
        """Stop waiting for ids lo..hi (the exchange no longer serves them)."""
        kept: List[Gap] = []
        for a, b in self.gaps:
            if b < lo or a > hi:
                kept.append((a, b))
            else:
                kept.extend(p for p in ((a, lo - 1), (hi + 1, b)) if p[0] <= p[1])
        self.gaps = kept

    def checkpoint(self) -> Optional[int]:
        if self.last_id is None:
            return None
        return self.gaps[0][0] - 1 if self.gaps else self.last_id


class Pipeline:
    """Thread-safe: stream readers and the backfiller call `accept`; the writer takes batches."""

    def __init__(self, renderer: LineRenderer, batch_size: int,
                 resume_from: Dict[str, int], on_gap: Callable[[str, Gap], None],
                 on_batch: Callable[[Batch], None]) -> None:
        self.renderer = renderer
        self.batch_size = batch_size
        self.on_gap = on_gap
        self.on_batch = on_batch
        self.sequences: Dict[str, SymbolSequence] = {}
        self.resume_from = dict(resume_from)
        self.lock = threading.Lock()
        self._lines: List[str] = []
        self._others: List[int] = []  # indices in _lines of the lines that are not trades
        self._first_time_ms = 0
        self._opened_at = 0.0
        self._trades = 0  # trade lines in the open batch (it may also hold health lines)
        self._seq = 0
        self.accepted = 0
        self.duplicates = 0

    def resume(self, last_ids: Dict[str, int]) -> None:
        """Resume these symbols from ids found elsewhere (the database), before their first
        trade."""
        with self.lock:
            for symbol, last in last_ids.items():
                if symbol not in self.sequences:
                    self.resume_from[symbol] = last

    def sequence(self, symbol: str) -> SymbolSequence:
        seq = self.sequences.get(symbol)
        if seq is None:
            seq = self.sequences[symbol] = SymbolSequence(self.resume_from.get(symbol))
        return seq

    def accept(self, trade: Trade) -> bool:
        """Take one trade; False when it is a duplicate and was dropped."""
        gap = batch = None
        lock = self.lock
        lock.acquire()  # not `with`: 0.1 us a trade less (measured on 3.11), same release
        try:
            seq = self.sequences.get(trade.symbol) or self.sequence(trade.symbol)
            if seq.last_id is not None and trade.trade_id == seq.last_id + 1:
                seq.last_id = trade.trade_id  # the common case, without a call
            else:
                ok, gap = seq.take(trade.trade_id)
                if not ok:
                    self.duplicates += 1
                    return False
            self.accepted += 1
            lines = self._lines
            if not lines:
                self._opened_at = time.monotonic()
            if not self._trades:
                self._first_time_ms = trade.time_ms
            self._trades += 1
            lines.append(self.renderer.line(trade))
            if len(lines) >= self.batch_size:
                batch = self._cut()
        finally:
            lock.release()
        if gap is not None:
            self.on_gap(trade.symbol, gap)
        if batch is not None:
            self.on_batch(batch)
        return True

    def flush(self, older_than: float = 0.0) -> Optional[Batch]:
        """Cut the open batch (if its first line is at least `older_than` s old) and hand it on."""
        with self.lock:
            if not self._lines or time.monotonic() - self._opened_at < older_than:
                return None
            batch = self._cut()
        self.on_batch(batch)
        return batch

    def add_line(self, line: str) -> None:
        """Add a line that is not a trade (the worker's health point) to the open batch."""
        with self.lock:
            if not self._lines:
                self._opened_at = time.monotonic()
            self._others.append(len(self._lines))
            self._lines.append(line)

    def expect_up_to(self, symbol: str, last_id: int) -> None:
        """REST says trades up to `last_id` exist: report what we have not seen as a gap."""
        with self.lock:
            seq = self.sequence(symbol)
            gap = None
            if seq.last_id is not None and last_id > seq.last_id:
                gap = (seq.last_id + 1, last_id)
                seq.gaps.append(gap)
                seq.last_id = last_id
        if gap is not None:
            self.on_gap(symbol, gap)

    def is_resume_gap(self, symbol: str, gap: Gap) -> bool:
        """True for the gap between the id this process resumed from and its first trade:
        those trades came before the stream opened, so no connection will deliver them."""
        seq = self.sequences.get(symbol)
        return seq is not None and seq.resumed_from is not None and \
            gap[0] == seq.resumed_from + 1

    def give_up(self, symbol: str, lo: int, hi: int) -> None:
        with self.lock:
            self.sequence(symbol).give_up(lo, hi)

    def open_gaps(self) -> Dict[str, List[Gap]]:
        with self.lock:
            return {s: list(q.gaps) for s, q in self.sequences.items() if q.gaps}

    def last_ids(self) -> Dict[str, Optional[int]]:
        """Per symbol, the highest id accepted (or resumed from, before the first trade)."""
        with self.lock:
            ids: Dict[str, Optional[int]] = dict(self.resume_from)
            ids.update((s, q.last_id) for s, q in self.sequences.items())
            return ids

    def _cut(self) -> Batch:
        self._seq += 1
        marks = {}
        for symbol, seq in self.sequences.items():
            mark = seq.checkpoint()
            if mark is not None:
                marks[symbol] = mark
        batch = Batch(self._seq, self._lines, self._trades, marks, self._first_time_ms,
                      others=self._others)
        self._lines = []
        self._others = []
        self._trades = 0
        return batch
