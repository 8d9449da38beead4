"""`config/symbols.yaml`: which pairs to capture and how they are grouped into workers.

    symbols:            # each one its own worker, named in lowercase: btcusdt, ethusdt
      - BTCUSDT
    groups:             # one worker per group, one combined connection, for quiet pairs
      alts: [SOLUSDT, XRPUSDT, 1000SATSUSDT]

Errors name the file, the line and the fix, because people edit this file by hand.

The file is the user's and not tracked by git (so `git pull` never conflicts with it): on first
use it is created from `config/symbols.example.yaml`, which is tracked.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .errors import ConfigError
from .settings import PROJECT_ROOT

log = logging.getLogger(__name__)
DEFAULT_SYMBOLS_FILE = PROJECT_ROOT / "config" / "symbols.yaml"
EXAMPLE_NAME = "symbols.example.yaml"  # tracked; symbols.yaml is created from it on first use

# Binance symbols are uppercase letters and digits, may start with digits (1000SATSUSDT), and
# since 2025-12 may contain non-ASCII letters; nothing else (no spaces, slashes or dashes).
_SYMBOL = re.compile(r"^(?:[A-Z0-9]|[^\x00-\x7f])(?:[A-Z0-9]|[^\x00-\x7f]){1,39}$")
# Worker names become supervisor program names: ':' separates groups there, so keep it simple.
_WORKER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED_NAMES = frozenset({"reconciler", "supervisord", "all"})
KNOWN_KEYS = ("symbols", "groups")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its name (the supervisor program name) and the symbols it captures."""

    name: str
    symbols: tuple[str, ...]
    line: int  # where it is defined, for messages
    is_group: bool  # a named group (one combined connection) rather than a bare symbol


def _err(path: Path, node: Optional[yaml.Node], message: str) -> ConfigError:
    where = f"{path}:{node.start_mark.line + 1}" if node is not None else str(path)
    return ConfigError(f"{where}: {message}")


def _symbol(path: Path, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value.strip() == "":
        raise _err(path, node, "expected a symbol such as BTCUSDT here")
    raw = node.value.strip()
    symbol = raw.upper() if raw.isascii() else raw
    if not _SYMBOL.match(symbol):
        raise _err(path, node, f"{raw!r} is not a Binance spot symbol: use letters and digits "
                               "only, as Binance writes it, e.g. BTCUSDT or 1000SATSUSDT")
    return symbol


def _symbol_list(path: Path, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise _err(path, node, f"{what} must be a list, e.g. [BTCUSDT, ETHUSDT] or one "
                               "'- SYMBOL' per line")
    return [(_symbol(path, item), item) for item in node.value]


def parse_symbols(text: str, path: Path) -> list[WorkerSpec]:
    """Parse the text of a symbols file into worker specs, checking everything a file can get wrong."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem}); check the indentation and "
                          "the ':' and '-' around that line") from None
    if root is None:
        raise ConfigError(f"{path}: the file is empty; list pairs under 'symbols:' "
                          f"(see config/{EXAMPLE_NAME})")
    if not isinstance(root, yaml.MappingNode):
        raise _err(path, root, "expected 'symbols:' and/or 'groups:' at the top level")

    workers: list[WorkerSpec] = []
    seen_symbols: dict[str, int] = {}
    seen_names: dict[str, int] = {}

    def add(name: str, name_node: yaml.Node, symbols: list[tuple[str, yaml.Node]],
            is_group: bool) -> None:
        line = name_node.start_mark.line + 1
        for symbol, node in symbols:
            if symbol in seen_symbols:
                raise _err(path, node, f"{symbol} is listed twice (first on line "
                                       f"{seen_symbols[symbol]}): keep it in one place only")
            seen_symbols[symbol] = node.start_mark.line + 1
        if name in seen_names:
            raise _err(path, name_node, f"worker name {name!r} is already used on line "
                                        f"{seen_names[name]}: rename the group")
        if name in RESERVED_NAMES:
            raise _err(path, name_node, f"{name!r} is a reserved name: rename the group")
        seen_names[name] = line
        workers.append(WorkerSpec(name, tuple(s for s, _ in symbols), line, is_group))

    sections = {}
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in KNOWN_KEYS:
            raise _err(path, key_node, f"unknown key {key!r}: the file knows "
                                       f"{' and '.join(repr(k) for k in KNOWN_KEYS)}")
        if key in sections:
            raise _err(path, key_node, f"{key!r} appears twice: merge the two lists")
        sections[key] = value_node

    if "symbols" in sections:
        for symbol, node in _symbol_list(path, sections["symbols"], "'symbols'"):
            if not symbol.isascii():
                raise _err(path, node, f"{symbol} has non-ASCII letters, so it cannot name a "
                                       "worker: put it in a named group under 'groups:'")
            add(symbol.lower(), node, [(symbol, node)], False)
    groups = sections.get("groups")
    if groups is not None and not (isinstance(groups, yaml.ScalarNode) and groups.value == ""):
        if not isinstance(groups, yaml.MappingNode):
            raise _err(path, groups, "'groups' must map a group name to a list of symbols, "
                                     "e.g. 'alts: [SOLUSDT, XRPUSDT]'")
        for name_node, list_node in groups.value:
            name = str(name_node.value)
            if not isinstance(name_node, yaml.ScalarNode) or not _WORKER_NAME.match(name):
                raise _err(path, name_node, f"group name {name!r} is not usable: use lowercase "
                                            "letters, digits, '-' or '_' (it becomes the "
                                            "supervisor program name)")
            members = _symbol_list(path, list_node, f"group {name!r}")
            if not members:
                raise _err(path, list_node, f"group {name!r} has no symbols: add some or "
                                            "remove the group")
            add(name, name_node, members, True)
    if not workers:
        raise _err(path, root, "no symbols configured: list pairs under 'symbols:' or 'groups:'")
    return workers


def create_from_example(path: Path) -> bool:
    """Create `path` as a copy of the `symbols.example.yaml` beside it, unless it exists.

    True when it was created (never overwrites: the file is the user's).
    """
    try:
        text = (path.parent / EXAMPLE_NAME).read_text(encoding="utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except (FileNotFoundError, FileExistsError):
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    log.warning("event=symbols_file_created file=%s from=%s note='first use: edit it to list "
                "your pairs (git does not track it)'", path, EXAMPLE_NAME)
    return True


def first_use(root: Path = PROJECT_ROOT) -> bool:
    """No worker was ever rendered here (run/workers.conf absent or empty): the first start.

    Only then is a missing symbols file created from the example. Later, a missing file is an
    error that changes nothing, so that one deleted by mistake (or by a `git pull` of the commit
    that stopped tracking it) never replaces the running workers with the example's.
    """
    try:  # scripts/run writes it empty on a fresh clone
        return "[program:" not in (root / "run" / "workers.conf").read_text()
    except OSError:
        return True


def load_symbols(path: Optional[Path] = None,
                 create: Optional[bool] = None) -> list[WorkerSpec]:
    """Read and check the symbols file (default `config/symbols.yaml`).

    `create`: create a missing file from the example beside it; by default only the default
    file on the project's first use.
    """
    path = Path(path or DEFAULT_SYMBOLS_FILE)
    if create is None:
        create = path == DEFAULT_SYMBOLS_FILE and first_use()
    if create and not path.exists():
        create_from_example(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        example = path.parent / EXAMPLE_NAME
        how = f"cp {example} {path}" if example.exists() else "see config/" + EXAMPLE_NAME
        raise ConfigError(f"{path}: file not found; create it ({how}, then list your pairs) "
                          "or pass --config FILE") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    return parse_symbols(text, path)


def find_worker(workers: list[WorkerSpec], name: str, path: Path) -> WorkerSpec:
    """The worker called `name`; a ConfigError listing the known names otherwise."""
    for worker in workers:
        if worker.name == name.lower():
            return worker
    known = ", ".join(w.name for w in workers)
    raise ConfigError(f"{path}: no worker named {name!r}; the file defines: {known}")
