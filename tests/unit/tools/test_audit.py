"""scripts/gap-audit's exit codes: a configuration error and a runtime failure are told apart."""
from __future__ import annotations

import os
import socket

import pytest

from workers.errors import EXIT_CONFIG, EXIT_RUNTIME
from workers.tools import audit


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def influx_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("INFLUXDB_", "BINANCE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INFLUXDB_URL", f"http://127.0.0.1:{closed_port()}")
    for name, value in (("INFLUXDB_TOKEN", "t"), ("INFLUXDB_ORG", "o"), ("INFLUXDB_BUCKET", "b")):
        monkeypatch.setenv(name, value)


def test_an_unreachable_influxdb_is_a_runtime_failure_not_a_configuration_error(influx_env,
                                                                               capsys):
    code = audit.main(["BTCUSDT", "--since", "1h", "--env-file", os.devnull])
    assert code == EXIT_RUNTIME
    assert "unreachable" in capsys.readouterr().err


def test_a_bad_since_is_a_configuration_error(influx_env, capsys):
    assert audit.main(["BTCUSDT", "--since", "24h ago", "--env-file", os.devnull]) == EXIT_CONFIG
    assert "gap-audit:" in capsys.readouterr().err


def test_the_help_names_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        audit.main(["--help"])
    out = capsys.readouterr().out
    assert "2 configuration error" in out and "3 InfluxDB or the exchange failed" in out
    assert "24h, 90m, 7d" in out
