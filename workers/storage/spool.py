"""The disk spool: batches InfluxDB could not take yet, kept in order and replayed later.

Segments are plain line-protocol files with the `# DML` header (so `influx -import` can load one
by hand), appended and fsynced per batch (atomic.append_durable). Its short form, without the
`# DDL` section of the no-database files: the spool and rejected.lp belong to a database the
worker already writes to, and the worker's replay must meet nothing but comments and points. A
`position` file records how far replay got, so a restart neither loses nor re-sends more than
the last batch.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from workers.common.atomic import append_durable, write_atomic
from workers.common.timefmt import iso_seconds
from workers.storage.sink import lp_header

log = logging.getLogger(__name__)
SEGMENT_BYTES = 64 * 1024 * 1024


class RejectedFile:
    """`data/<worker>/rejected.lp`: one place for every line the server refused, beside the
    worker's spool. scripts/load-files sets aside there too, without opening the spool (a
    running worker may be appending to it)."""

    def __init__(self, path: Path, database: str) -> None:
        self.path = path
        self._header = lp_header(database, create=False).encode()

    @property
    def rejected_path(self) -> Path:
        return self.path

    def reject(self, groups: Sequence[Tuple[str, Sequence[str]]]) -> Path:
        """Append lines the server refused, durably.

        Each group is (reason, lines): a `# <UTC time> <reason>` comment, then its lines as
        they were sent. With the `# DML` header the file loads with `influx -import` (which,
        like every line-protocol reader, skips `#` lines). Raises OSError, and then keeps
        nothing of this call, so the caller can try again with the same lines.
        """
        stamp = iso_seconds()
        parts: List[str] = []
        for reason, lines in groups:
            parts.append(f"# {stamp} {' '.join(reason.split())}\n")
            parts.extend(f"{line}\n" for line in lines)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_durable(self.path, "".join(parts).encode("utf-8"), self._header)
        return self.path


class Spool:
    def __init__(self, directory: Path, database: str, worker: str) -> None:
        self.directory = directory
        self.database = database
        self.worker = worker
        self.lock = threading.Lock()
        self._header = lp_header(database, create=False).encode()
        self.rejected = RejectedFile(directory.parent / "rejected.lp", database)
        directory.mkdir(parents=True, exist_ok=True)
        self._position_file = directory / "position"
        self._repair_tail()
        # Known empty: the writer asks before every batch, and a directory scan plus a read of
        # the position file each time would be wasted I/O on the write path.
        self._unsent = bool(self._segments())

    def _segments(self) -> List[Path]:
        return sorted(self.directory.glob("*.lp"))

    def _repair_tail(self) -> None:
        """Cut a half-written last line left by a crash in the middle of an append."""
        segments = self._segments()
        if not segments:
            return
        last = segments[-1]
        data = last.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(last, "r+b") as fh:
                fh.truncate(keep)
            log.warning("worker=%s event=spool_tail_repaired file=%s dropped_bytes=%d",
                        self.worker, last.name, len(data) - keep)

    def append(self, body: str) -> None:
        """Add a batch at the tail, durably. Raises OSError (e.g. disk full) and then keeps nothing
        (nor a new segment without its import header: atomic.append_durable)."""
        data = body.encode("utf-8") + b"\n"
        with self.lock:
            segments = self._segments()
            path = segments[-1] if segments else None
            if path is None or path.stat().st_size + len(data) > SEGMENT_BYTES:
                number = int(path.stem) + 1 if path is not None else 1
                path = self.directory / f"{number:08d}.lp"
            append_durable(path, data, self._header)
            self._unsent = True

    def reject(self, groups: Sequence[Tuple[str, Sequence[str]]]) -> Path:
        """Append lines the server refused to `rejected.lp` beside the spool (RejectedFile)."""
        with self.lock:
            return self.rejected.reject(groups)

    @property
    def rejected_path(self) -> Path:
        return self.rejected.path

    def backlog_bytes(self) -> int:
        with self.lock:
            segments = self._segments()
            total = sum(p.stat().st_size for p in segments)
            return max(0, total - self._read_position()[1]) if segments else 0

    def _read_position(self) -> Tuple[str, int]:
        try:
            name, offset = self._position_file.read_text().split()
            return name, int(offset)
        except (FileNotFoundError, ValueError):
            return "", 0

    def _write_position(self, name: str, offset: int) -> None:
        # Not fsynced: a position lost in a crash only replays lines again, which is harmless
        # (points are idempotent), and the replay stays fast.
        write_atomic(self._position_file, f"{name} {offset}\n", durable=False)

    def peek(self, max_lines: int) -> Optional[Tuple[str, str, int]]:
        """The oldest unsent lines: (body, segment name, end offset), or None when empty."""
        with self.lock:
            if not self._unsent:
                return None
            for path in self._segments():
                name, offset = self._read_position()
                start = offset if name == path.name else 0
                with open(path, "rb") as fh:
                    fh.seek(start)
                    lines: List[bytes] = []
                    end = start
                    for raw in fh:
                        end += len(raw)
                        if raw.startswith(b"#") or not raw.strip():
                            continue
                        lines.append(raw.rstrip(b"\n"))
                        if len(lines) >= max_lines:
                            break
                if lines:
                    return b"\n".join(lines).decode("utf-8"), path.name, end
                if path != self._segments()[-1]:
                    path.unlink()  # fully replayed and not the one being appended to
                    self._write_position("", 0)
                    continue
            self._unsent = False
            return None

    def commit(self, name: str, end: int) -> None:
        """Record that everything up to `end` of segment `name` is stored in InfluxDB."""
        with self.lock:
            path = self.directory / name
            segments = self._segments()
            if path.exists() and end >= path.stat().st_size and path != segments[-1]:
                path.unlink()
                self._write_position("", 0)
            else:
                self._write_position(name, end)
