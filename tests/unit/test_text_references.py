"""Text points only at files that exist: every path of ours named in the README, docs/, the
code's comments and docstrings, the scripts and the tests is a file or folder of the repository.

A module moved without its references following leaves readers (and operators grepping) at a
dead end; this spec fails on the first such path.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, List

ROOT = Path(__file__).resolve().parents[2]
# a path of ours: one of the top-level folders, then path characters
PATH = re.compile(r"(?<![\w./-])((?:workers|scripts|tests|docs|config)/[A-Za-z0-9_./-]+)")
PLACEHOLDERS = ("NAME", "<", "*")  # `scripts/NAME`, `tests/support/influx_*.py`
# made by the user (or by scripts/run from the tracked example), git-ignored: not in a clone
USERS_OWN = ("config/symbols.yaml",)


def texts() -> Iterator[Path]:
    yield ROOT / "README.md"
    yield ROOT / "supervisor.conf"
    yield ROOT / ".env.example"
    for folder in ("docs", "workers", "scripts", "tests", "config"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in ("", ".py", ".md", ".yaml", ".conf", ".json") \
                    and "__pycache__" not in path.parts:
                yield path


def named_paths(text: str) -> Iterator[str]:
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,:;)")
        end = match.end(1)
        if any(p in path for p in PLACEHOLDERS) or text[end:end + 1] in ("*", "<", "{"):
            continue
        yield path


def test_the_finder_reads_paths_and_skips_placeholders():
    text = ("see workers/ops/status.py, `scripts/NAME`, tests/support/influx_*.py and "
            "docs/img/.")
    assert list(named_paths(text)) == ["workers/ops/status.py", "docs/img/"]


def test_every_path_the_text_names_exists():
    missing: Dict[str, List[str]] = {}
    for source in texts():
        try:
            text = source.read_text()
        except UnicodeDecodeError:
            continue
        for path in named_paths(text):
            if path not in USERS_OWN and not (ROOT / path).exists():
                missing.setdefault(path, []).append(str(source.relative_to(ROOT)))
    assert missing == {}, f"paths named but not in the repository: {missing}"
