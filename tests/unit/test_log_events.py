"""Every `event=NAME` a reader is told to look for is one the code really logs.

Operators grep the logs for the events the README, the dashboards' notes and `scripts/status`
name. An event renamed in the code but not in the text sends them looking for nothing (it
happened: status pointed at `event=backfill_given_up`, the code logs `gap_given_up`).
"Logged" means: the text of a logging call (`log.info(...)`, the reconciler's `say(...)`),
or a marker constant the supervisor helpers look for in a worker's log.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workers"
EVENT = re.compile(r"event=([a-z_]+)")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log", "say"}
MARKERS = {"CONFIG_ERROR_MARK", "STARTED_MARK"}  # workers/ops/supervisor_rpc.py


def _strings(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value


def logged_events(source: str) -> Set[str]:
    """The events a module's logging calls and marker constants emit."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in LOG_METHODS:
                for text in _strings(node):
                    found.update(EVENT.findall(text))
        elif isinstance(node, ast.Assign):
            targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if targets & MARKERS:
                for text in _strings(node.value):
                    found.update(EVENT.findall(text))
    return found


def emitted() -> Set[str]:
    out: Set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        out |= logged_events(path.read_text())
    return out


def named_in(paths: List[Path]) -> Dict[str, List[str]]:
    """event -> where a text names it (file:line)."""
    where: Dict[str, List[str]] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for event in EVENT.findall(line):
                where.setdefault(event, []).append(f"{path.relative_to(ROOT)}:{number}")
    return where


def test_the_collector_reads_log_calls_and_not_other_strings():
    source = ('log.info("worker=%s event=gap first=%d", w, 1)\n'
              'self.say("t", 1, f"event=share host={h}")\n'
              'CONFIG_ERROR_MARK = "event=config_error"\n'
              'advice = "see event=made_up in the log"\n')
    assert logged_events(source) == {"gap", "share", "config_error"}


def test_every_event_the_docs_and_code_comments_name_is_logged():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted(PACKAGE.rglob("*.py"))]
    logged = emitted()  # once: it parses every module
    unknown = {event: places for event, places in named_in(texts).items()
               if event not in logged}
    assert unknown == {}, f"events named but never logged: {unknown}"


def test_status_advice_names_only_logged_events():
    """What `scripts/status` prints (problem and warning lines) points at real events."""
    from workers.ops import status

    advice = set(EVENT.findall(Path(status.__file__).read_text()))
    assert advice, "status names events for operators to grep"
    assert advice <= emitted()
