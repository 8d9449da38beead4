"""`config/symbols.yaml`: which pairs to capture and how they are grouped into workers.

    symbols:            # each one its own worker, named in lowercase: btcusdt, ethusdt
      - BTCUSDT
    groups:             # one worker per group, one combined connection, for quiet pairs
      alts: [SOLUSDT, XRPUSDT, 1000SATSUSDT]

    hosts:              # optional shards: which hosts (CAPTURE_HOST) run which workers
      host-a: [btcusdt, alts]
      host-b: [btcusdt]
    # a worker listed under no host (ethusdt) runs on every host; no 'hosts:' = all on all

Errors name the file, the line and the fix, because people edit this file by hand.

The file is the user's and not tracked by git (so `git pull` never conflicts with it): on first
use it is created from `config/symbols.example.yaml`, which is tracked.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import yaml

from workers.errors import ConfigError
from workers.settings import PROJECT_ROOT

log = logging.getLogger(__name__)
DEFAULT_SYMBOLS_FILE = PROJECT_ROOT / "config" / "symbols.yaml"
EXAMPLE_NAME = "symbols.example.yaml"  # tracked; symbols.yaml is created from it on first use

# Binance symbols are uppercase letters and digits, may start with digits (1000SATSUSDT), and
# since 2025-12 may contain non-ASCII letters; nothing else (no spaces, slashes or dashes).
_SYMBOL = re.compile(r"^(?:[A-Z0-9]|[^\x00-\x7f])(?:[A-Z0-9]|[^\x00-\x7f]){1,39}$")
# Worker names become supervisor program names: ':' separates groups there, so keep it simple.
_WORKER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
RESERVED_NAMES = frozenset({"reconciler", "supervisord", "all"})
KNOWN_KEYS = ("symbols", "groups", "hosts")
# A host is named as its CAPTURE_HOST is set (workers/settings.py checks it the same way).
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its name (the supervisor program name) and the symbols it captures."""

    name: str
    symbols: tuple[str, ...]
    line: int  # where it is defined, for messages
    is_group: bool  # a named group (one combined connection) rather than a bare symbol
    # The hosts that run it, as listed under 'hosts:' (file order); empty: every host.
    hosts: tuple[str, ...] = ()

    def runs_on(self, host: str) -> bool:
        return not self.hosts or host in self.hosts


@dataclass(frozen=True)
class SymbolsFile:
    """The whole file: its workers and, when it has a 'hosts:' section, each host's share."""

    path: Path
    workers: list[WorkerSpec]
    hosts: Dict[str, int] = field(default_factory=dict)  # host -> its line; empty: no shards
    hosts_line: int = 0  # the line of 'hosts:'

    @property
    def sharded(self) -> bool:
        return bool(self.hosts)

    def share(self, host: str) -> list[WorkerSpec]:
        """The workers `host` runs: those listed under it plus those listed under no host.

        A host the file does not name is an error when the file has shards (a CAPTURE_HOST
        left at the machine's name would otherwise run only the unlisted workers, silently).
        """
        if self.sharded and host not in self.hosts:
            raise ConfigError(
                f"{self.path}:{self.hosts_line}: this host (CAPTURE_HOST={host}) is not under "
                f"'hosts:', which names {', '.join(self.hosts)}: set CAPTURE_HOST in .env.local "
                f"to this host's name there, or add '{host}: []' under 'hosts:' to run only the "
                "workers listed under no host")
        return [w for w in self.workers if w.runs_on(host)]

    def elsewhere(self, host: str) -> list[WorkerSpec]:
        """The workers of the file that `host` does not run (they run on the hosts listed)."""
        return [w for w in self.workers if not w.runs_on(host)]


def _err(path: Path, node: Optional[yaml.Node], message: str) -> ConfigError:
    where = f"{path}:{node.start_mark.line + 1}" if node is not None else str(path)
    return ConfigError(f"{where}: {message}")


def _symbol(path: Path, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value.strip() == "":
        raise _err(path, node, "expected a symbol such as BTCUSDT here")
    raw: str = node.value.strip()
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
    """The worker specs of a symbols file, checking everything a file can get wrong."""
    return parse_file(text, path).workers


def parse_file(text: str, path: Path) -> SymbolsFile:
    """The whole file: its workers, and the hosts that run them when it has 'hosts:'."""
    root = _compose(text, path)
    sections = _sections(path, root)
    found = _Workers(path)
    if "symbols" in sections:
        _add_bare_symbols(found, sections["symbols"][1])
    if "groups" in sections:
        _add_groups(found, sections["groups"][1])
    if not found.workers:
        raise _err(path, root, "no symbols configured: list pairs under 'symbols:' or 'groups:'")
    if "hosts" not in sections:
        return SymbolsFile(path, found.workers)
    key_node, hosts_node = sections["hosts"]
    hosts = _hosts(path, hosts_node, found.workers)
    by_worker: Dict[str, list[str]] = {}
    for host, (_, names) in hosts.items():
        for name in names:
            by_worker.setdefault(name, []).append(host)
    workers = [WorkerSpec(w.name, w.symbols, w.line, w.is_group, tuple(by_worker.get(w.name, ())))
               for w in found.workers]
    return SymbolsFile(path, workers, {h: line for h, (line, _) in hosts.items()},
                       key_node.start_mark.line + 1)


def _compose(text: str, path: Path) -> yaml.MappingNode:
    """The file's YAML node tree; a ConfigError naming the line when it is not a mapping."""
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
        raise _err(path, root, "expected 'symbols:' and/or 'groups:' (and optionally "
                               "'hosts:') at the top level")
    return root


def _sections(path: Path, root: yaml.MappingNode) -> Dict[str, Tuple[yaml.Node, yaml.Node]]:
    """The top-level keys, each known and each once: key -> (key node, value node)."""
    sections: Dict[str, Tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in KNOWN_KEYS:
            raise _err(path, key_node, f"unknown key {key!r}: the file knows "
                                       f"{', '.join(repr(k) for k in KNOWN_KEYS[:-1])} and "
                                       f"{KNOWN_KEYS[-1]!r}")
        if key in sections:
            raise _err(path, key_node, f"{key!r} appears twice: merge the two lists")
        sections[key] = (key_node, value_node)
    return sections


class _Workers:
    """The workers found so far, refusing a symbol listed twice and a name used twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.workers: list[WorkerSpec] = []
        self._symbol_lines: Dict[str, int] = {}
        self._name_lines: Dict[str, int] = {}

    def add(self, name: str, name_node: yaml.Node, symbols: list[tuple[str, yaml.Node]],
            is_group: bool) -> None:
        path, line = self.path, name_node.start_mark.line + 1
        for symbol, node in symbols:
            if symbol in self._symbol_lines:
                raise _err(path, node, f"{symbol} is listed twice (first on line "
                                       f"{self._symbol_lines[symbol]}): keep it in one place "
                                       "only")
            self._symbol_lines[symbol] = node.start_mark.line + 1
        if name in self._name_lines:
            raise _err(path, name_node, f"worker name {name!r} is already used on line "
                                        f"{self._name_lines[name]}: rename the group")
        if name in RESERVED_NAMES:
            raise _err(path, name_node, f"{name!r} is a reserved name: rename the group")
        self._name_lines[name] = line
        self.workers.append(WorkerSpec(name, tuple(s for s, _ in symbols), line, is_group))


def _add_bare_symbols(found: _Workers, node: yaml.Node) -> None:
    """'symbols:': each pair its own worker, named in lowercase."""
    for symbol, item in _symbol_list(found.path, node, "'symbols'"):
        if not symbol.isascii():
            raise _err(found.path, item, f"{symbol} has non-ASCII letters, so it cannot name a "
                                         "worker: put it in a named group under 'groups:'")
        found.add(symbol.lower(), item, [(symbol, item)], False)


def _add_groups(found: _Workers, groups: yaml.Node) -> None:
    """'groups:': each named group one worker for its pairs."""
    path = found.path
    if isinstance(groups, yaml.ScalarNode) and groups.value == "":  # 'groups:' and nothing
        return
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
        found.add(name, name_node, members, True)


def _hosts(path: Path, node: yaml.Node,
           workers: list[WorkerSpec]) -> Dict[str, tuple[int, list[str]]]:
    """'hosts:' -> {host: (its line, the names of the workers it runs, globs expanded)}."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise _err(path, node, "'hosts' must map a host name (its CAPTURE_HOST) to a list of "
                               "workers, e.g. 'host-a: [btcusdt, alts]'")
    names = [w.name for w in workers]
    hosts: Dict[str, tuple[int, list[str]]] = {}
    for host_node, list_node in node.value:
        host = str(host_node.value) if isinstance(host_node, yaml.ScalarNode) else ""
        if not _HOST_NAME.match(host):
            raise _err(path, host_node, f"host name {host!r} is not usable: use the host's "
                                        "CAPTURE_HOST, letters, digits, '.', '-' or '_' (at "
                                        "most 63), e.g. capture-a")
        if host in hosts:
            raise _err(path, host_node, f"host {host!r} appears twice (first on line "
                                        f"{hosts[host][0]}): merge the two lists")
        if isinstance(list_node, yaml.ScalarNode) and list_node.tag.endswith(":null"):
            items: list[yaml.Node] = []
        elif isinstance(list_node, yaml.SequenceNode):
            items = list(list_node.value)
        else:
            raise _err(path, list_node, f"host {host!r} must list worker names, e.g. "
                                        "[btcusdt, alts] ([] for only the workers listed "
                                        "under no host)")
        runs: list[str] = []
        for item in items:
            for name in _host_entry(path, item, host, workers, names):
                if name not in runs:
                    runs.append(name)
        hosts[host] = (host_node.start_mark.line + 1, runs)
    return hosts


def _host_entry(path: Path, node: yaml.Node, host: str, workers: list[WorkerSpec],
                names: list[str]) -> list[str]:
    """The worker names one entry under a host means (a glob may mean several)."""
    if not isinstance(node, yaml.ScalarNode) or node.value.strip() == "":
        raise _err(path, node, f"expected a worker name or glob under host {host!r} here, "
                               "e.g. btcusdt, alts or alt-*")
    raw = node.value.strip()
    entry = raw.lower()
    if _GLOB_CHARS & set(entry):
        matched = [n for n in names if fnmatch.fnmatchcase(n, entry)]
        if not matched:
            raise _err(path, node, f"{raw!r} (under host {host!r}) matches no worker of this "
                                   f"file: the workers are {', '.join(names)}")
        return matched
    if entry in names:
        return [entry]
    group = next((w for w in workers if raw.upper() in w.symbols), None)
    if group is not None:
        raise _err(path, node, f"{raw!r} (under host {host!r}) is in group {group.name!r}: "
                               f"a host runs whole workers, so name the group ({group.name}) "
                               "or give the pair its own worker under 'symbols:'")
    raise _err(path, node, f"{raw!r} (under host {host!r}) is not a worker of this file: name a "
                           f"worker ({', '.join(names)}) or add the pair under 'symbols:' or "
                           "'groups:' first")


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
    """Read and check the symbols file (default `config/symbols.yaml`): every worker of it,
    whichever hosts 'hosts:' gives them (`load_file(...).share(host)` is one host's).

    `create`: create a missing file from the example beside it; by default only the default
    file on the project's first use.
    """
    return load_file(path, create).workers


def load_file(path: Optional[Path] = None, create: Optional[bool] = None) -> SymbolsFile:
    """load_symbols(), with the hosts of 'hosts:' (see SymbolsFile.share)."""
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
    return parse_file(text, path)


def this_host(env: Optional[Mapping[str, str]] = None) -> str:
    """This host's name for 'hosts:': CAPTURE_HOST as load_settings reads it (default the
    machine's short host name). Only that setting is read, so that an unrelated bad setting
    does not hide which share is this host's; a bad CAPTURE_HOST is a ConfigError."""
    from workers.settings import load_env, load_settings  # settings imports nothing of ours

    env = load_env() if env is None else env
    return load_settings({k: v for k, v in env.items() if k == "CAPTURE_HOST"}).capture_host


def find_worker(workers: list[WorkerSpec], name: str, path: Path) -> WorkerSpec:
    """The worker called `name`; a ConfigError listing the known names otherwise.

    Any worker of the file, whichever hosts 'hosts:' gives it: `python -m workers NAME` starts
    it by hand on any host (only the reconciler keeps to this host's share).
    """
    for worker in workers:
        if worker.name == name.lower():
            return worker
    known = ", ".join(w.name for w in workers)
    raise ConfigError(f"{path}: no worker named {name!r}; the file defines: {known}")
