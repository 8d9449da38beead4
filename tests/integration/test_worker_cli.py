"""The worker's command line: a configuration error is one clear line and exit code 2."""
from __future__ import annotations

from tests.support.workerproc import WorkerProcess

ONE = "symbols: [BTCUSDT]\n"


def run_until_exit(proc: WorkerProcess) -> int:
    proc.start()
    code = proc.proc.wait(30) if proc.proc else None
    assert code is not None, "the worker did not exit on a configuration error"
    return code


def error_lines(proc: WorkerProcess) -> list:
    return [line for line in proc.output().splitlines() if " ERROR " in line]


def test_influxdb_url_without_token_org_bucket_is_one_line_and_exit_2(tmp_path):
    proc = WorkerProcess(tmp_path, "btcusdt", ONE, {"INFLUXDB_URL": "http://127.0.0.1:9"})
    assert run_until_exit(proc) == 2
    errors = error_lines(proc)
    assert len(errors) == 1 and "Traceback" not in proc.output()
    assert "INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET" in errors[0]


def test_a_bad_symbols_line_names_file_line_and_fix(tmp_path):
    proc = WorkerProcess(tmp_path, "btcusdt", "symbols:\n  - BTCUSDT\n  - BTC-USDT\n", {})
    assert run_until_exit(proc) == 2
    (error,) = error_lines(proc)
    assert f"{proc.config}:3:" in error and "'BTC-USDT'" in error and "e.g. BTCUSDT" in error


def test_a_symbol_unknown_to_the_exchange_is_named_and_exit_2(tmp_path, exchange_sim):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=1")
    proc = WorkerProcess(tmp_path, "alts", "groups:\n  alts: [BTCUSDT, NOPEUSDT]\n",
                         {"BINANCE_WS_URL": sim.ws_url, "BINANCE_REST_URL": sim.rest_url})
    assert run_until_exit(proc) == 2
    (error,) = error_lines(proc)
    assert "unknown to the exchange: NOPEUSDT" in error and "BTCUSDT," not in error


def test_an_unknown_worker_name_lists_the_known_ones(tmp_path):
    proc = WorkerProcess(tmp_path, "nosuch", ONE, {})
    assert run_until_exit(proc) == 2
    (error,) = error_lines(proc)
    assert "no worker named 'nosuch'" in error and "btcusdt" in error
