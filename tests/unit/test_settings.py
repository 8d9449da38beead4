"""Settings from the environment and .env.local: defaults, one clear error per bad value."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import pytest
from dotenv import dotenv_values

from workers.errors import EXIT_CONFIG, ConfigError
from workers.exchange.stream_plan import plan_connections
from workers.settings import (
    PROCESS_ONLY,
    PROJECT_ROOT,
    REVIVE_AFTER_S,
    SETTINGS,
    InfluxSettings,
    WriteLimit,
    default_host,
    injected_fault,
    load_env,
    load_settings,
    revive_after_s,
    stream_base_url,
    supervisor_process_name,
    supervisor_server_url,
    websocket_ca_bundle_set,
)

INFLUX = {
    "INFLUXDB_URL": "http://localhost:8086",
    "INFLUXDB_TOKEN": "tok-123",
    "INFLUXDB_ORG": "acme",
    "INFLUXDB_BUCKET": "ticks",
}


def config_error(env: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return str(info.value)


# -- defaults ------------------------------------------------------------------------------------

def test_empty_environment_gives_file_mode_and_documented_defaults():
    s = load_settings({})

    assert s.influx is None
    assert s.file_database == "ticks"
    assert s.ws_url == "wss://stream.binance.com:9443"
    assert s.rest_url == "https://api.binance.com"
    assert s.write.batch_size == 5000
    assert s.write.flush_interval_s == 1.0
    assert s.write.retry_initial_s == 0.5
    assert s.write.retry_max_delay_s == 30.0
    assert s.write.retry_budget_s == 60.0
    assert s.write.queue_batches == 20
    assert s.data_dir == PROJECT_ROOT / "data"
    assert s.run_dir == PROJECT_ROOT / "run"
    assert s.log_level == "INFO"
    assert s.max_conn_age_s < 24 * 3600  # rotate before Binance's 24 h cut


def test_blank_values_count_as_unset():
    assert load_settings({"WRITE_BATCH_SIZE": "  ", "INFLUXDB_URL": ""}) == load_settings({})


def test_env_example_documents_the_defaults():
    example = {k: v or "" for k, v in dotenv_values(PROJECT_ROOT / ".env.example").items()}

    assert load_settings(example) == load_settings({})


def test_every_variable_the_code_reads_is_listed_in_env_example():
    class Recording(dict):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.read = set()

        def get(self, key, default=None):
            self.read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

    env = Recording(INFLUX)
    load_settings(env)
    documented = set(dotenv_values(PROJECT_ROOT / ".env.example"))

    assert env.read - documented == set()


# -- InfluxDB --------------------------------------------------------------------------------------

def test_complete_influx_settings_are_read_and_trimmed():
    s = load_settings({**INFLUX, "INFLUXDB_TOKEN": " tok-123 \n", "INFLUXDB_GZIP": "yes",
                       "INFLUXDB_TIMEOUT_S": "2.5", "INFLUXDB_MEASUREMENT": "trades"})

    assert s.influx is not None
    assert (s.influx.url, s.influx.token, s.influx.org, s.influx.bucket) == \
        ("http://localhost:8086", "tok-123", "acme", "ticks")
    assert s.influx.gzip is True
    assert s.influx.timeout_s == 2.5
    assert s.influx.measurement == "trades"
    assert s.influx.health_measurement == "streamer_health"


def test_url_without_token_org_and_bucket_is_one_error_naming_all_three():
    message = config_error({"INFLUXDB_URL": "http://localhost:8086"})

    assert "INFLUXDB_TOKEN, INFLUXDB_ORG, INFLUXDB_BUCKET are not" in message
    assert "unset INFLUXDB_URL" in message


def test_url_with_only_some_credentials_names_just_the_missing_ones():
    message = config_error({"INFLUXDB_URL": "http://localhost:8086", "INFLUXDB_TOKEN": "t",
                            "INFLUXDB_ORG": "   "})

    assert "INFLUXDB_ORG, INFLUXDB_BUCKET are not" in message
    assert "INFLUXDB_TOKEN" not in message


def test_missing_credentials_error_never_shows_the_token():
    message = config_error({"INFLUXDB_URL": "http://h:8086", "INFLUXDB_TOKEN": "s3cr3t-value"})

    assert "s3cr3t-value" not in message


def test_influx_url_without_scheme_is_refused():
    message = config_error({**INFLUX, "INFLUXDB_URL": "localhost:8086"})

    assert message.startswith("INFLUXDB_URL='localhost:8086' is invalid")


@pytest.mark.parametrize("name", ["_trades", "#trades"])
def test_measurement_names_influx_reserves_are_refused(name):
    message = config_error({"INFLUXDB_MEASUREMENT": name})

    assert message.startswith("INFLUXDB_MEASUREMENT=")


def test_measurement_with_a_backslash_is_refused():
    message = config_error({"INFLUXDB_MEASUREMENT": "price\\ticks"})

    assert message.startswith("INFLUXDB_MEASUREMENT=")


# -- numbers and other values ------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("WRITE_BATCH_SIZE", "abc"),
    ("WRITE_BATCH_SIZE", "0"),
    ("WRITE_BATCH_SIZE", "-5"),
    ("WRITE_FLUSH_INTERVAL_MS", "1.5"),
    ("WRITE_RETRY_INITIAL_MS", "0"),
    ("WRITE_RETRY_MAX_DELAY_S", "-1"),
    ("WRITE_RETRY_BUDGET_S", "nan"),
    ("WRITE_QUEUE_BATCHES", "twenty"),
    ("STREAM_DEAD_AFTER_S", "0"),
    ("STREAM_STALL_AFTER_S", "1m"),
    ("STREAM_MAX_AGE_S", "0.0"),
    ("BACKFILL_MAX_TRADES", "5e6"),
    ("FILE_ROTATE_S", "-3600"),
    ("SUMMARY_INTERVAL_S", "x"),
])
def test_invalid_number_names_the_variable_and_the_value(name, value):
    message = config_error({name: value})

    assert message.startswith(f"{name}={value!r} is invalid: expected ")


def test_invalid_number_in_the_influx_section_names_the_variable():
    message = config_error({**INFLUX, "INFLUXDB_TIMEOUT_S": "ten"})

    assert message.startswith("INFLUXDB_TIMEOUT_S='ten' is invalid")


def influx_of(env: Dict[str, str]) -> InfluxSettings:
    """The InfluxDB settings of an environment that configures a database."""
    influx = load_settings(env).influx
    assert influx is not None, "no database configured"
    return influx


def test_gzip_accepts_the_usual_spellings_and_refuses_others():
    assert influx_of({**INFLUX, "INFLUXDB_GZIP": "On"}).gzip is True
    assert influx_of({**INFLUX, "INFLUXDB_GZIP": "0"}).gzip is False
    assert config_error({**INFLUX, "INFLUXDB_GZIP": "maybe"}).startswith("INFLUXDB_GZIP=")


def test_milliseconds_settings_are_converted_to_seconds():
    s = load_settings({"WRITE_FLUSH_INTERVAL_MS": "250", "WRITE_RETRY_INITIAL_MS": "100"})

    assert (s.write.flush_interval_s, s.write.retry_initial_s) == (0.25, 0.1)


def test_retry_max_delay_below_the_initial_delay_is_a_config_error():
    message = config_error({"WRITE_RETRY_INITIAL_MS": "5000", "WRITE_RETRY_MAX_DELAY_S": "1"})

    assert "WRITE_RETRY_MAX_DELAY_S" in message and "WRITE_RETRY_INITIAL_MS" in message


def test_log_level_is_case_insensitive_and_checked():
    assert load_settings({"LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert config_error({"LOG_LEVEL": "verbose"}).startswith("LOG_LEVEL='verbose' is invalid")


def test_relative_directories_are_under_the_project_and_absolute_ones_kept(tmp_path):
    s = load_settings({"DATA_DIR": "var/data", "RUN_DIR": str(tmp_path)})

    assert s.data_dir == PROJECT_ROOT / "var" / "data"
    assert s.run_dir == tmp_path


def test_file_database_follows_the_bucket_name():
    assert load_settings({"INFLUXDB_BUCKET": "mydb"}).file_database == "mydb"


# -- connection budget -----------------------------------------------------------------------------

def test_connect_limit_defaults_to_200_attempts_per_300_seconds_under_binances_300():
    s = load_settings({})

    assert (s.connect_limit, s.connect_window_s) == (200, 300.0)
    assert s.connect_limit / s.connect_window_s <= 300 / 300


def test_connect_limit_reads_attempts_per_seconds():
    s = load_settings({"WS_CONNECT_LIMIT": " 50 / 60.5 "})

    assert (s.connect_limit, s.connect_window_s) == (50, 60.5)


@pytest.mark.parametrize("value", ["abc", "200", "0/300", "-1/300", "200/0", "200/-5",
                                   "1.5/300", "200/nan", "200/inf", "200/300/1", "/300"])
def test_bad_connect_limit_names_the_setting_and_shows_the_form(value):
    message = config_error({"WS_CONNECT_LIMIT": value})

    assert message.startswith(f"WS_CONNECT_LIMIT={value!r} is invalid: expected N/S")
    assert "e.g. 200/300" in message


# -- Binance URLs --------------------------------------------------------------------------------

ORIGINAL_SCRIPT_URL = "wss://stream.binance.com:9443/stream?streams=btcusdt@trade"


def test_original_scripts_full_combined_url_becomes_the_base_url():
    s = load_settings({"BINANCE_WS_URL": ORIGINAL_SCRIPT_URL})

    assert s.ws_url == "wss://stream.binance.com:9443"
    # the same URL, asking for µs times
    assert plan_connections(s.ws_url, ["BTCUSDT"])[0].url == \
        ORIGINAL_SCRIPT_URL + "&timeUnit=MICROSECOND"


@pytest.mark.parametrize("raw, base", [
    ("wss://stream.binance.com:9443", "wss://stream.binance.com:9443"),
    ("wss://stream.binance.com:9443/", "wss://stream.binance.com:9443"),
    ("wss://stream.binance.com:9443/ws/btcusdt@trade", "wss://stream.binance.com:9443"),
    ("wss://stream.binance.com:443/stream?streams=a@trade/b@trade",
     "wss://stream.binance.com:443"),
    ("wss://data-stream.binance.vision/stream", "wss://data-stream.binance.vision"),
    ("ws://127.0.0.1:9100", "ws://127.0.0.1:9100"),
    ("ws://proxy:80/binance/stream?streams=btcusdt@trade", "ws://proxy:80/binance"),
    ("ws://proxy:80/streams/ws", "ws://proxy:80/streams"),
])
def test_stream_base_url_strips_the_raw_and_combined_forms(raw, base):
    assert stream_base_url(raw) == base


def test_raw_stream_url_behind_a_path_that_starts_with_ws_is_cut_too():
    assert stream_base_url("ws://proxy:80/wsgate/ws/btcusdt@trade") == "ws://proxy:80/wsgate"


@pytest.mark.parametrize("raw", ["https://stream.binance.com", "stream.binance.com:9443",
                                 "wss://", "ftp://x"])
def test_non_websocket_stream_url_is_refused_naming_the_variable(raw):
    message = config_error({"BINANCE_WS_URL": raw})

    assert message.startswith("BINANCE_WS_URL=")
    assert "wss://stream.binance.com:9443" in message  # an example of the right form


def test_rest_url_loses_its_trailing_slash_and_must_be_http():
    assert load_settings({"BINANCE_REST_URL": "https://api1.binance.com/"}).rest_url == \
        "https://api1.binance.com"
    assert config_error({"BINANCE_REST_URL": "wss://api.binance.com"}).startswith(
        "BINANCE_REST_URL=")


# -- .env.local and the process environment ------------------------------------------------------

def test_process_environment_wins_over_the_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / ".env.local"
    env_file.write_text("TC_TEST_A=from-file\nTC_TEST_B=from-file\n")
    monkeypatch.setenv("TC_TEST_A", "from-process")
    monkeypatch.delenv("TC_TEST_B", raising=False)

    env = load_env(env_file)

    assert env["TC_TEST_A"] == "from-process"
    assert env["TC_TEST_B"] == "from-file"


def test_env_file_values_reach_the_settings(tmp_path, monkeypatch):
    env_file = tmp_path / ".env.local"
    env_file.write_text("WRITE_BATCH_SIZE=777\n# a comment\nLOG_LEVEL=warning\n")
    monkeypatch.delenv("WRITE_BATCH_SIZE", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)

    s = load_settings(load_env(env_file))

    assert (s.write.batch_size, s.log_level) == (777, "WARNING")


def test_env_file_key_without_value_is_ignored(tmp_path, monkeypatch):
    env_file = tmp_path / ".env.local"
    env_file.write_text("TC_TEST_NOVALUE\n")
    monkeypatch.delenv("TC_TEST_NOVALUE", raising=False)

    assert "TC_TEST_NOVALUE" not in load_env(env_file)


def test_explicit_env_file_that_does_not_exist_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.env"

    with pytest.raises(ConfigError) as info:
        load_env(missing)

    assert str(missing) in str(info.value)
    assert "--env-file" in str(info.value)


def test_without_an_env_file_the_process_environment_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr("workers.settings.DEFAULT_ENV_FILE", Path(tmp_path / "absent"))
    monkeypatch.setenv("TC_TEST_ONLY_PROCESS", "1")

    assert load_env()["TC_TEST_ONLY_PROCESS"] == "1"


def test_capture_host_defaults_to_the_machines_short_name_and_refuses_odd_names():
    assert load_settings({}).capture_host == default_host()
    assert load_settings({"CAPTURE_HOST": "capture-a"}).capture_host == "capture-a"
    with pytest.raises(ConfigError, match="CAPTURE_HOST"):
        load_settings({"CAPTURE_HOST": "a b"})


def test_resume_lookback_defaults_to_24_hours_and_must_be_positive():
    assert load_settings({}).resume_lookback_h == 24.0
    assert load_settings({"RESUME_LOOKBACK_H": "6"}).resume_lookback_h == 6.0
    assert load_settings({"RESUME_LOOKBACK_H": "0.5"}).resume_lookback_h == 0.5
    for bad in ("0", "-1", "a day"):
        with pytest.raises(ConfigError, match="RESUME_LOOKBACK_H"):
            load_settings({"RESUME_LOOKBACK_H": bad})


# -- read only here --------------------------------------------------------------------------------

def test_no_module_but_settings_reads_the_environment():
    """Every setting goes through settings.py, where a bad value is a ConfigError naming it."""
    readers = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\.get\b")
    package = PROJECT_ROOT / "workers"
    found = [f"{path.relative_to(PROJECT_ROOT)}:{n}" for path in sorted(package.rglob("*.py"))
             if path.name != "settings.py" or path.parent != package
             for n, line in enumerate(path.read_text().splitlines(), 1) if readers.search(line)]

    assert found == []


def test_the_measurement_is_read_with_or_without_a_database():
    assert load_settings({}).measurement == "price_ticks"
    assert load_settings({"INFLUXDB_MEASUREMENT": "trades"}).measurement == "trades"
    assert influx_of({**INFLUX, "INFLUXDB_MEASUREMENT": "trades"}).measurement == "trades"
    with pytest.raises(ConfigError, match="INFLUXDB_MEASUREMENT"):
        load_settings({"INFLUXDB_MEASUREMENT": "_reserved"})


def test_revive_after_defaults_to_env_examples_30_s_and_a_bad_value_names_the_variable():
    example = {k: v or "" for k, v in dotenv_values(PROJECT_ROOT / ".env.example").items()}

    assert revive_after_s({}) == revive_after_s(example) == REVIVE_AFTER_S == 30.0
    assert revive_after_s({"RECONCILER_REVIVE_AFTER_S": "2"}) == 2.0
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="RECONCILER_REVIVE_AFTER_S=.*seconds > 0"):
            revive_after_s({"RECONCILER_REVIVE_AFTER_S": bad})


def test_a_bad_revive_after_is_a_configuration_error_of_the_reconciler(monkeypatch, capsys):
    from workers.ops import reconcile

    monkeypatch.setattr("workers.settings.DEFAULT_ENV_FILE", PROJECT_ROOT / "absent.env")
    monkeypatch.setenv("RECONCILER_REVIVE_AFTER_S", "soon")

    assert reconcile.main(["--once", "--no-symbol-check"]) == EXIT_CONFIG
    assert "RECONCILER_REVIVE_AFTER_S='soon' is invalid" in capsys.readouterr().err


def test_process_only_variables_come_from_the_process_not_the_env_file(tmp_path, monkeypatch):
    """supervisord's variables, websocket-client's and the crash specs' seam: a value only in
    .env.local would say one thing while the process does another."""
    names = ("SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME", "WEBSOCKET_CLIENT_CA_BUNDLE",
             "WORKER_INJECT_FAULT")
    env_file = tmp_path / ".env.local"
    env_file.write_text("".join(f"{n}=from-file\n" for n in names))
    monkeypatch.setattr("workers.settings.DEFAULT_ENV_FILE", env_file)
    for name in names:
        monkeypatch.delenv(name, raising=False)

    assert (supervisor_server_url(), supervisor_process_name("reconciler"),
            websocket_ca_bundle_set(), injected_fault()) == (None, "reconciler", False, "")
    for name in names:
        monkeypatch.setenv(name, "set")
    assert (supervisor_server_url(), supervisor_process_name("reconciler"),
            websocket_ca_bundle_set(), injected_fault()) == ("set", "set", True, "set")


# -- .env.local mistakes: named with their file and line (issue 21.9) ------------------------------

def env_file_warnings(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
                      ) -> Dict[int, str]:
    """Line number -> the warning load_env gives about that line of a .env.local holding `text`."""
    path = tmp_path / ".env.local"
    path.write_text(text)
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_env(path)
    found: Dict[int, str] = {}
    for record in caplog.records:
        message = record.getMessage()
        assert "python-dotenv could not parse" not in message  # its vague line is replaced
        match = re.match(re.escape(str(path)) + r":(\d+): ", message)
        assert match, message  # every warning begins with the file and the line
        found[int(match.group(1))] = message
    return found


def test_an_unreadable_line_is_named_by_file_line_and_key_with_the_fix_never_its_value(
        tmp_path, caplog):
    found = env_file_warnings(tmp_path, 'LOG_LEVEL=INFO\nWRITE_BATCH_SIZE: 4321\n'
                              'INFLUXDB_ORG="acme" corp\nINFLUXDB_TOKEN="s3cret-t0ken\n', caplog)

    assert sorted(found) == [2, 3, 4]
    assert "WRITE_BATCH_SIZE" in found[2] and "WRITE_BATCH_SIZE=" in found[2]  # the right form
    assert "INFLUXDB_ORG" in found[3] and "after the closing quote" in found[3]
    assert "INFLUXDB_TOKEN" in found[4] and "close the quote" in found[4]
    assert all("ignored" in m for m in found.values())
    for secret in ("s3cret", "4321", "acme", "corp"):
        assert not any(secret in m for m in found.values()), secret


def test_a_quote_left_open_names_every_line_it_swallowed(tmp_path, caplog):
    found = env_file_warnings(tmp_path, 'INFLUXDB_TOKEN="abc\nLOG_LEVEL=DEBUG\n'
                              'INFLUXDB_ORG="acme"\n', caplog)

    (message,) = found.values()
    assert list(found) == [1] and "lines 1-3" in message and "INFLUXDB_TOKEN" in message
    assert "abc" not in message and "acme" not in message


def test_a_misspelt_key_gets_a_did_you_mean_and_the_default_still_applies(tmp_path, caplog,
                                                                          monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    found = env_file_warnings(tmp_path, "# comment\nLOG_LEVL=DEBUG\nlog_level=debug\n"
                              "INFLUX_URL=http://x:8086\n", caplog)

    assert sorted(found) == [2, 3, 4]
    assert "LOG_LEVL" in found[2] and "did you mean LOG_LEVEL?" in found[2]
    assert "did you mean LOG_LEVEL?" in found[3]
    assert "did you mean INFLUXDB_URL?" in found[4]
    assert all("ignored" in m and "DEBUG" not in m for m in found.values())
    # a warning, not an error: the worker runs (with the default the operator is told about)
    assert load_settings(load_env(tmp_path / ".env.local")).log_level == "INFO"


def test_an_unknown_key_that_could_be_a_pasted_secret_is_not_printed(tmp_path, caplog):
    found = env_file_warnings(tmp_path, "LOG_LEVEL=INFO\nqT4kZ9vB1xw==\nGRAFANA_PORT=3000\n",
                              caplog)

    assert sorted(found) == [2, 3]
    assert "qT4kZ9vB1xw" not in found[2] and "not a setting" in found[2]
    assert "GRAFANA_PORT is not a setting" in found[3] and "did you mean" not in found[3]


def test_a_process_only_variable_in_the_env_file_is_said_to_be_ignored(tmp_path, caplog):
    found = env_file_warnings(tmp_path, "SUPERVISOR_SERVER_URL=unix:///x.sock\n", caplog)

    assert "SUPERVISOR_SERVER_URL" in found[1] and "process environment" in found[1]


def test_known_keys_and_the_process_environment_give_no_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("SOME_SHELL_VARIABLE", "1")  # the process environment holds everything

    assert env_file_warnings(tmp_path, "LOG_LEVEL=INFO\nexport DATA_DIR=data\n"
                             "INFLUXDB_URL=\n\n# LOG_LEVL=DEBUG\n", caplog) == {}


def test_each_env_file_warning_is_given_once_per_process(tmp_path, caplog):
    path = tmp_path / ".env.local"
    path.write_text("LOG_LEVL=DEBUG\n")
    with caplog.at_level("WARNING"):
        load_env(path)
        load_env(path)  # status, the reconciler's polls: the same file read again

    assert len(caplog.records) == 1


def test_the_settings_table_is_env_example_and_holds_every_variable_read():
    example = list(dotenv_values(PROJECT_ROOT / ".env.example"))

    assert sorted(example) == sorted(SETTINGS)
    assert all(doc.strip() for doc in SETTINGS.values())
    assert set(PROCESS_ONLY).isdisjoint(SETTINGS)


# -- INFLUXDB_WRITE_LIMIT --------------------------------------------------------------------------

@pytest.mark.parametrize("raw, limit_bytes, window_s", [
    ("5MB/5m", 5_000_000, 300.0),  # Cloud Serverless's free plan
    ("50kB/60s", 50_000, 60.0),
    ("1.5 GB / 1h", 1_500_000_000, 3600.0),
    ("250kb/0.5m", 250_000, 30.0),
])
def test_the_write_limit_is_bytes_decimal_per_window(raw, limit_bytes, window_s):
    limit = load_settings({"INFLUXDB_WRITE_LIMIT": raw}).write.write_limit

    assert limit == WriteLimit(limit_bytes, window_s)


def test_no_write_limit_by_default():
    assert load_settings({}).write.write_limit is None
    assert load_settings({"INFLUXDB_WRITE_LIMIT": " "}).write.write_limit is None


@pytest.mark.parametrize("raw", ["5MB", "5MB/", "5/5m", "5MiB/5m", "5MB/5d", "0MB/5m",
                                 "5MB/0s", "-5MB/5m", "five MB/5m", "5MB per 5m"])
def test_a_bad_write_limit_names_the_variable_and_an_example(raw):
    text = config_error({"INFLUXDB_WRITE_LIMIT": raw})

    assert text.startswith(f"INFLUXDB_WRITE_LIMIT={raw!r} is invalid")
    assert "e.g. 5MB/5m" in text
