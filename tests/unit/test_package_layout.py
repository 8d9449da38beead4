"""The rooms of `workers/` and who may import whom, read from the imports themselves.

    common/    helpers with no knowledge of trades, exchange or database
    exchange/  Binance: protocol, connections, REST        } import only common/, errors,
    storage/   InfluxDB and files: lines, writes, reads    } settings, trade and health
    capture/   wires exchange and storage into a worker
    history/   past days: Binance's archive loaded and each stored day verified against it
    ops/       supervisord, the reconciler, scripts/status: never the capture core
    tools/     command-line tools: nothing imports them, nor do they import each other

The shared records at the top (`errors`, `settings`, `trade`, `health`, `symbols`) import only
`common/` and each other. `workers/__main__.py` is the worker's command line: it may wire
anything but tools.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "workers"
ROOMS = ("common", "exchange", "storage", "capture", "history", "ops", "tools")
RECORDS = ("errors", "settings", "trade", "health", "symbols")

# room -> the rooms and records it may import (its own room always allowed)
ALLOWED: Dict[str, Set[str]] = {
    "common": {"errors"},
    "exchange": {"common", "errors", "settings", "trade", "health"},
    "storage": {"common", "errors", "settings", "trade", "health"},
    "capture": {"common", "exchange", "storage", "errors", "settings", "trade", "health",
                "symbols"},
    # history wires exchange (the archive) and storage (the worker's write path), as capture does
    "history": {"common", "exchange", "storage", "errors", "settings", "trade", "health",
                "symbols"},
    "ops": {"common", "exchange", "storage", "errors", "settings", "trade", "health", "symbols"},
    "tools": {"common", "exchange", "storage", "history", "errors", "settings", "trade",
              "health", "symbols"},
    # the shared records
    "errors": set(),
    "settings": {"errors"},
    "trade": set(),
    "health": {"common", "errors"},
    "symbols": {"common", "errors", "settings"},
    "__main__": {"common", "capture", "errors", "settings", "symbols"},
    "__init__": set(),
}


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_rooms(path: Path) -> Iterator[Tuple[int, str, str]]:
    """(line, room or record, dotted name) of every import of our own package in a file,
    lazy imports inside functions included."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "workers":  # from workers import settings
                names = [f"workers.{alias.name}" for alias in node.names]
            else:
                names = [module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "workers" and len(parts) > 1:
                yield getattr(node, "lineno", 0), parts[1], name


def modules() -> Iterator[Path]:
    return iter(sorted(PACKAGE.rglob("*.py")))


def test_every_module_sits_in_a_known_room_or_is_a_shared_record():
    strays = [str(p.relative_to(PACKAGE)) for p in modules()
              if room_of(p) not in ALLOWED]
    assert strays == [], f"modules outside the rooms {ROOMS} and records {RECORDS}: {strays}"


@pytest.mark.parametrize("path", list(modules()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_dependency_rule(path: Path):
    room = room_of(path)
    bad = [f"line {line}: {name}" for line, target, name in imported_rooms(path)
           if target != room and target not in ALLOWED.get(room, set())]
    assert bad == [], f"{path.relative_to(PACKAGE)} ({room}/) may not import: {bad}"


def test_tools_import_no_other_tool():
    for path in (PACKAGE / "tools").glob("*.py"):
        others = [name for _, target, name in imported_rooms(path)
                  if target == "tools" and name != f"workers.tools.{path.stem}"]
        assert others == [], f"{path.name} imports another tool: {others}"


def test_the_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The spec itself can fail: a storage module importing the capture core is caught."""
    fake = tmp_path / "workers"
    (fake / "storage").mkdir(parents=True)
    bad = fake / "storage" / "leak.py"
    bad.write_text("from workers.capture.pipeline import Pipeline\n"
                   "def f():\n    from workers.tools import audit\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    found = [target for _, target, _ in imported_rooms(bad)]
    assert found == ["capture", "tools"]
    assert not {"capture", "tools"} <= ALLOWED["storage"]


def test_unit_specs_mirror_the_package():
    """tests/unit/<room>/test_<module>[_<aspect>].py specifies workers/<room>/<module>.py."""
    specs = PACKAGE.parent / "tests" / "unit"
    strays = []
    for room in ROOMS:
        modules = {p.stem for p in (PACKAGE / room).glob("*.py")}
        for spec in sorted((specs / room).glob("test_*.py")):
            name = spec.stem[len("test_"):]
            if not any(name == m or name.startswith(m + "_") for m in modules):
                strays.append(str(spec.relative_to(specs)))
    assert strays == [], f"unit specs named after no module of their room: {strays}"
