"""Per symbol, the highest trade id known stored (in InfluxDB, a data file or the spool).

Batches can become durable out of order (one spooled while an older one is still retrying), so
the checkpoint only moves over an unbroken run of durable batches, and each batch carries the
checkpoint that holds once it and everything before it are stored (see pipeline.Batch).

A symbol moved to another worker (from a bare symbol into a group, say) resumes from the
checkpoint its old worker left: on start, the files of sibling workers are read too, and the
highest id per symbol wins (ids only grow, and each file only claims what was stored).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Dict, Iterable, Set

from workers.common import diskerrors
from workers.common.atomic import write_atomic

log = logging.getLogger(__name__)


class Checkpoint:
    def __init__(self, path: Path, worker: str, symbols: Iterable[str] = ()) -> None:
        self.path = path
        self.worker = worker
        self.lock = threading.Lock()
        self.ids: Dict[str, int] = self._load(path)
        self._adopt(set(symbols))
        self._next_seq = 1
        self._done: Dict[int, Dict[str, int]] = {}

    def _adopt(self, symbols: Set[str]) -> None:
        """Take the ids other workers' checkpoints hold for our symbols, where higher."""
        if not symbols:
            return
        for sibling in sorted(self.path.parent.parent.glob(f"*/{self.path.name}")):
            if sibling == self.path:
                continue
            for symbol, last in self._load(sibling).items():
                if symbol in symbols and last > self.ids.get(symbol, -1):
                    log.info("worker=%s symbol=%s event=checkpoint_adopted from=%s last_id=%d",
                             self.worker, symbol, sibling.parent.name, last)
                    self.ids[symbol] = last

    def _load(self, path: Path) -> Dict[str, int]:
        try:
            data = json.loads(path.read_text())
            return {str(k): int(v) for k, v in data.get("last_stored_id", {}).items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError, TypeError) as exc:
            # A corrupt checkpoint must not stop capture: start from the live stream, say so.
            log.error("worker=%s event=checkpoint_unreadable file=%s error=%s", self.worker,
                      path, exc)
            return {}

    def batch_durable(self, seq: int, marks: Dict[str, int]) -> bool:
        """Note batch `seq` as stored; True when the checkpoint moved (and was saved)."""
        with self.lock:
            self._done[seq] = marks
            ids = dict(self.ids)
            moved = False
            while self._next_seq in self._done:
                for symbol, mark in self._done.pop(self._next_seq).items():
                    if mark > ids.get(symbol, -1):
                        ids[symbol] = mark
                        moved = True
                self._next_seq += 1
            if moved:
                self._save(ids)  # a failed save (disk full) leaves the old marks in force
                self.ids = ids
            return moved

    def _save(self, ids: Dict[str, int]) -> None:
        try:
            write_atomic(self.path, json.dumps({"worker": self.worker, "last_stored_id": ids},
                                               sort_keys=True))
        except OSError as exc:
            # Said with its real cause and fix before it ends the worker (the writer thread's
            # crash): a read-only disk is not a full one.
            log.error("worker=%s event=checkpoint_failed file=%s cause=%s error=%s fix='%s'",
                      self.worker, self.path, diskerrors.cause(exc), exc,
                      diskerrors.fix(exc, str(self.path.parent), "DATA_DIR"))
            raise

    def snapshot(self) -> Dict[str, int]:
        with self.lock:
            return dict(self.ids)
