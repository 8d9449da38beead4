"""The line-protocol files of the no-database mode: finding them and reading their points."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterator, List, Optional

from workers.errors import (
    ConfigError,
)
from workers.storage.sink import is_point_line


def lp_files(lp_dir: Path, worker: Optional[str]) -> List[Path]:
    """The files of every worker (or of `worker`) under `lp_dir`, oldest first per worker;
    `lp_dir` may also be one worker's directory.

    Raises ConfigError for a directory or a worker that is not there.
    """
    if not lp_dir.is_dir():
        raise ConfigError(f"{lp_dir}: no such directory: the no-database mode writes its files "
                          "to DATA_DIR/lp (pass --lp-dir if they are elsewhere)")
    if worker is not None:
        dirs = [lp_dir / worker]
        if not dirs[0].is_dir():
            known = ", ".join(sorted(p.name for p in lp_dir.iterdir() if p.is_dir())) or "none"
            raise ConfigError(f"--worker {worker}: no {lp_dir / worker} (workers with files: "
                              f"{known})")
    else:  # every worker's directory, or lp_dir itself when it is one worker's directory
        dirs = [lp_dir] + sorted(p for p in lp_dir.iterdir() if p.is_dir())
    files: List[Path] = []
    for directory in dirs:
        files.extend(sorted(p for p in directory.iterdir() if p.is_file()
                            and (p.name.endswith(".lp") or p.name.endswith(".lp.gz"))))
    return files


def point_batches(path: Path, size: int) -> Iterator[List[str]]:
    """The point lines of a file in lists of at most `size`. A last line without its newline
    (a crash in the middle of an append) is not a whole point and is left out."""
    opener = gzip.open if path.name.endswith(".gz") else open
    batch: List[str] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n") or not is_point_line(line):
                continue
            batch.append(line.rstrip("\n"))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
