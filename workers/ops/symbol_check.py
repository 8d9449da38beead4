"""Asking the exchange whether the symbols of an edited symbols file exist, before any worker
is restarted for them (a worker would only find out at its start, and exit with a config error)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Set

from workers.errors import ConfigError
from workers.settings import load_settings
from workers.symbols import WorkerSpec

log = logging.getLogger(__name__)

# symbols -> the subset the exchange knows; raises when the exchange cannot be asked.
SymbolCheck = Callable[[List[str]], Set[str]]


def exchange_check(env: Mapping[str, str], who: str = "reconciler") -> Optional[SymbolCheck]:
    """A check against the exchange of the settings (None when the settings are unusable)."""
    from workers.exchange.rest import RestClient

    try:
        settings = load_settings(env)
    except ConfigError as exc:
        log.warning("%s event=symbol_check_off reason=%r", who, str(exc))
        return None
    client = RestClient(settings.rest_url, who, timeout_s=5.0)

    def check(symbols: List[str]) -> Set[str]:
        return set(client.symbol_statuses(symbols))
    return check


def unknown_symbols_error(path: Path, text: str, specs: List[WorkerSpec],
                          unknown: List[str]) -> ConfigError:
    """One error naming each unknown symbol with its file:line, and the fix."""
    where = "; ".join(f"{path}:{line_of(text, specs, s)}: {s}" for s in unknown)
    return ConfigError(f"{where}: unknown to the exchange: fix the spelling or remove "
                       f"{'it' if len(unknown) == 1 else 'them'}")


def line_of(text: str, specs: List[WorkerSpec], symbol: str) -> int:
    """The line a symbol is written on (its worker's line if not found, e.g. in a flow list)."""
    spec = next(s for s in specs if symbol in s.symbols)
    lines = text.splitlines()
    for number in range(spec.line, len(lines) + 1):
        if symbol.lower() in lines[number - 1].lower().split("#")[0]:
            return number
    return spec.line
