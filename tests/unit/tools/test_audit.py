"""scripts/gap-audit's exit codes: a configuration error and a runtime failure are told apart."""
from __future__ import annotations

import json
import os

import pytest

from workers.errors import EXIT_CONFIG, EXIT_RUNTIME
from workers.tools import audit


@pytest.fixture
def influx_env(monkeypatch, refused_url):
    for name in list(os.environ):
        if name.startswith(("INFLUXDB_", "BINANCE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INFLUXDB_URL", refused_url)
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


# -- issue 21.4: a misspelt symbol is not a pass; 21.9: a refused token in one line ------------

from typing import Dict, List, Optional  # noqa: E402

from workers.errors import EXIT_PROBLEM, RestError, SinkError  # noqa: E402


class FakeInflux:
    ids: Dict[str, List[int]] = {}
    held = ["BTCUSDT", "ETHUSDT"]
    refuse: Optional[SinkError] = None

    def __init__(self, settings) -> None:
        pass

    def trade_ids(self, symbol, since_ns, until_ns, window_s):
        if self.refuse is not None:
            raise self.refuse
        return iter(self.ids.get(symbol, []))

    def symbols(self, since_ns, until_ns):
        return list(self.held)


class FakeExchange:
    known = {"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "SOLUSDT": "TRADING"}
    down = False

    def __init__(self, *args, **kwargs) -> None:
        pass

    def symbol_statuses(self, symbols, max_wait_s=None):
        if self.down:
            raise RestError("exchange unreachable")
        return {s: self.known[s] for s in symbols if s in self.known}

    def close(self) -> None:
        pass


@pytest.fixture
def fakes(influx_env, monkeypatch):
    monkeypatch.setattr(audit, "InfluxQuery", FakeInflux)
    monkeypatch.setattr(audit, "RestClient", FakeExchange)
    FakeInflux.ids = {"BTCUSDT": [1, 2, 3]}
    FakeInflux.refuse = None
    FakeExchange.down = False
    return FakeInflux


def run(*argv: str) -> int:
    return audit.main([*argv, "--since", "1h", "--env-file", os.devnull])


def test_a_symbol_unknown_to_the_exchange_is_a_configuration_error_naming_what_is_stored(
        fakes, capsys):
    assert run("BTCUSTD") == EXIT_CONFIG
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("gap-audit: BTCUSTD is unknown to the exchange (exchangeInfo at ")
    assert out.err.rstrip().endswith("fix the spelling; stored symbols: BTCUSDT, ETHUSDT")
    assert len(out.err.splitlines()) == 1


def test_a_known_symbol_with_nothing_stored_in_the_span_is_not_a_pass(fakes, capsys):
    """Issue 21.4: `0 trades stored ... 0 missing`, exit 0."""
    assert run("SOLUSDT") == EXIT_PROBLEM
    err = capsys.readouterr().err
    assert err.startswith("gap-audit: nothing stored for SOLUSDT between 20")
    assert ("is the symbol right? stored symbols: BTCUSDT, ETHUSDT; the exchange knows SOLUSDT: "
            "is a worker capturing it into this bucket?") in err


def test_nothing_stored_is_still_a_problem_when_the_exchange_cannot_be_asked(fakes, capsys):
    FakeExchange.down = True
    assert run("BTCUSTD") == EXIT_PROBLEM
    err = capsys.readouterr().err
    assert "nothing stored for BTCUSTD" in err and "the exchange could not be asked" in err


def test_nothing_stored_in_json_is_a_report_with_the_error(fakes, capsys):
    assert run("SOLUSDT", "--json") == EXIT_PROBLEM
    report = json.loads(capsys.readouterr().out)
    assert report["stored"] == 0 and "nothing stored for SOLUSDT" in report["error"]


def test_stored_trades_without_a_gap_pass(fakes, capsys):
    assert run("BTCUSDT") == 0
    assert "BTCUSDT: 3 trades stored, ids 1..3, 0 missing" in capsys.readouterr().out


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_one_readable_line_naming_the_fix(fakes, capsys, status):
    """Issue 21.9: the raw body was printed, `b'{"code":"unauthorized",...}'`."""
    from workers.settings import InfluxSettings
    from workers.storage.influx_query import query_refused

    influx = InfluxSettings(url="http://influx:8086", token="t", org="acme", bucket="ticks",
                            measurement="price_ticks", health_measurement="streamer_health",
                            timeout_s=10.0, gzip=False)
    body = b'{"code":"unauthorized","message":"unauthorized access"}'
    FakeInflux.refuse = SinkError(query_refused(status, body, influx), status)
    assert run("BTCUSDT") == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err == (f"gap-audit: InfluxDB refused the token for a read ({status}): check "
                   "INFLUXDB_TOKEN in .env.local; it needs read access to bucket 'ticks' of org "
                   "'acme' "
                   f"(/query answered {status}: unauthorized access)\n")
    assert "b'" not in err
