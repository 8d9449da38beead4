"""pytest fixture that starts simulators on demand and stops them all at teardown."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from .client import ExchangeSim

StartSim = Callable[..., ExchangeSim]


@pytest.fixture
def exchange_sim(tmp_path: Path) -> Iterator[StartSim]:
    """`start(*cli_args, port=None) -> ExchangeSim`; every started simulator is stopped after
    the test, and its output is printed when the test failed (pytest shows captured stdout)."""
    started: List[ExchangeSim] = []

    def start(*args: str, port: Optional[int] = None) -> ExchangeSim:
        sim = ExchangeSim.start(tmp_path, *args, port=port)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
        print(f"--- exchange-sim :{sim.port} output (tail) ---\n{sim.output()[-3000:]}")
