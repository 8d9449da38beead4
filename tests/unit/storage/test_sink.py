"""Where batches go: how InfluxDB's answers are classified, and the no-database file sink.

Facts: influxdb-client's write_api (which statuses it retries), InfluxDB's write API docs
(partial writes per server) and the 1.x `influx -import` header of line-protocol files.
"""
from __future__ import annotations

import gzip
import logging
import os

import pytest

from workers.errors import ContentRefused, PartialWrite, PermanentWriteError, RetryableWriteError
from workers.settings import InfluxSettings
from workers.storage.sink import FileSink, classify_status, is_point_line, lp_header, server_message

TOKEN = "s3cr3t-T0KEN-value=="
SETTINGS = InfluxSettings(url="http://influx:8086", token=TOKEN, org="acme", bucket="ticks",
                          measurement="price_ticks", health_measurement="streamer_health",
                          timeout_s=10.0, gzip=False)


# -- classify_status ----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_busy_or_failing_server_is_retryable_with_its_retry_after(status):
    error = classify_status(status, "busy", 7.0, SETTINGS)

    assert isinstance(error, RetryableWriteError)
    assert error.status == status
    assert error.retry_after == 7.0
    assert str(status) in str(error)


def test_retryable_without_retry_after_has_none():
    error = classify_status(503, "", None, SETTINGS)
    assert isinstance(error, RetryableWriteError) and error.retry_after is None


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_is_permanent_and_names_the_setting_to_fix(status):
    error = classify_status(status, "unauthorized access", None, SETTINGS)

    assert isinstance(error, PermanentWriteError)
    assert not isinstance(error, PartialWrite)
    assert error.status == status
    assert "INFLUXDB_TOKEN" in str(error)
    assert "'ticks'" in str(error)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_message_never_contains_the_token(status):
    body = f'{{"message":"token {TOKEN} is not authorized"}}'  # even if the server echoes it

    assert TOKEN not in str(classify_status(status, body, None, SETTINGS))


def test_missing_bucket_is_permanent_and_names_bucket_and_org():
    error = classify_status(404, '{"code":"not found","message":"bucket \\"ticks\\" not found"}',
                            None, SETTINGS)

    assert isinstance(error, PermanentWriteError)
    assert "bucket 'ticks'" in str(error)
    assert "'acme'" in str(error)


@pytest.mark.parametrize("status, body", [
    (400, '{"error":"partial write: field type conflict: input field \\"price\\" on '
          'measurement \\"price_ticks\\" is type integer, already exists as type float '
          'dropped=1"}'),  # InfluxDB 1.x
    (422, '{"code":"unprocessable entity","message":"failure writing points to database: '
          'partial write: points beyond retention policy dropped=2"}'),  # OSS 2.x
    (400, '{"error":"partial write of line protocol occurred"}'),  # v3 / Serverless
])
def test_partial_write_is_recognised_as_such(status, body):
    error = classify_status(status, body, None, SETTINGS)

    assert isinstance(error, PartialWrite)
    assert isinstance(error, PermanentWriteError)
    assert error.status == status


def test_partial_write_message_keeps_the_servers_dropped_count():
    body = '{"error":"partial write: points beyond retention policy dropped=3"}'

    assert "dropped=3" in str(classify_status(400, body, None, SETTINGS))


def test_malformed_request_is_permanent_but_not_a_partial_write():
    error = classify_status(400, '{"error":"unable to parse \'x\': missing fields"}', None,
                            SETTINGS)

    assert type(error) is ContentRefused and isinstance(error, PermanentWriteError)
    assert "unable to parse" in str(error)
    assert error.reason == "unable to parse 'x': missing fields"


def test_partial_write_carries_the_servers_message_and_dropped_count():
    body = ('{"code":"invalid","message":"partial write: field type conflict: input field '
            '\\"price_str\\" on measurement \\"price_ticks\\" is type string, already exists '
            'as type float dropped=3"}')  # 1.x through a 2.x-style front
    error = classify_status(400, body, None, SETTINGS)

    assert isinstance(error, PartialWrite) and error.dropped == 3
    assert error.reason == ('partial write: field type conflict: input field "price_str" on '
                            'measurement "price_ticks" is type string, already exists as type '
                            'float dropped=3')


def test_a_partial_write_without_a_count_has_dropped_none():
    error = classify_status(400, '{"error":"partial write of line protocol occurred"}', None,
                            SETTINGS)

    assert isinstance(error, PartialWrite) and error.dropped is None


def test_the_servers_message_is_found_in_a_body_cut_short():
    assert server_message('{"error":"partial write: field \\"a\\" on meas') == \
        'partial write: field "a" on meas'
    assert server_message("plain text answer ") == "plain text answer"


def test_request_too_large_says_to_lower_the_batch_size():
    error = classify_status(413, "", None, SETTINGS)

    assert isinstance(error, PermanentWriteError)
    assert "WRITE_BATCH_SIZE" in str(error)


def test_3_cores_overload_answer_is_retryable_not_a_refusal_of_the_batch():
    # influxdb-servers.md, Writes, "quota / overload": 400 `invalid` at the request limit
    body = '{"code":"invalid","message":"this service is overloaded, please try again later"}'
    error = classify_status(400, body, None, SETTINGS)

    assert isinstance(error, RetryableWriteError) and error.status == 400
    assert "overloaded" in str(error)


@pytest.mark.parametrize("body, shown", [
    ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
     "Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
     "InfluxDB answered 502: 502 Bad Gateway (an HTML page, likely from a proxy)"),
    ("<!DOCTYPE html><html><body><p>Too\nMany</p></body></html>",
     "InfluxDB answered 429: Too Many (an HTML page, likely from a proxy)"),
    ("", "InfluxDB answered 503: (an empty body)"),
    ("upstream\nconnect error  ", "InfluxDB answered 503: upstream connect error"),
])
def test_a_body_that_is_not_json_is_read_into_one_line(body, shown):
    # Cloud Serverless and proxies: "never assume JSON" (influxdb-servers.md, "error body")
    status = int(shown.split()[2].rstrip(":"))
    error = classify_status(status, body, None, SETTINGS)

    assert isinstance(error, RetryableWriteError) and str(error) == shown


def test_a_content_refusal_with_an_html_body_gives_a_one_line_reason():
    error = classify_status(400, "<html><head><title>400 Bad Request</title></head></html>",
                            None, SETTINGS)

    assert isinstance(error, ContentRefused)
    assert error.reason == "400 Bad Request (an HTML page, likely from a proxy)"
    assert "\n" not in str(error)


def test_long_server_bodies_are_cut_in_the_message():
    error = classify_status(400, "x" * 10_000, None, SETTINGS)

    assert len(str(error)) < 500


# -- FileSink -----------------------------------------------------------------------------------

def read_gz(path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read()


HEADER = "# DDL\nCREATE DATABASE \"ticks\"\n\n# DML\n# CONTEXT-DATABASE: ticks\n"


def test_header_creates_then_names_the_database_for_influx_import():
    # influx -import runs the `# DDL` statements first, then loads the `# DML` part into the
    # CONTEXT-DATABASE: the file loads into a server that does not have the database yet.
    assert lp_header("ticks") == HEADER


def test_header_quotes_the_database_in_the_statement_only():
    assert lp_header('my-db"1') == ('# DDL\nCREATE DATABASE "my-db\\"1"\n\n'
                                    '# DML\n# CONTEXT-DATABASE: my-db"1\n')


def test_header_of_a_1_8_bucket_names_its_retention_policy():
    assert lp_header("ticks/autogen") == HEADER + "# CONTEXT-RETENTION-POLICY: autogen\n"


def test_header_without_create_is_the_dml_part_alone():
    assert lp_header("ticks", create=False) == "# DML\n# CONTEXT-DATABASE: ticks\n"


@pytest.mark.parametrize("line, point", [
    ("# DDL", False), ('CREATE DATABASE "ticks"', False), ("", False), ("  \n", False),
    ("# CONTEXT-DATABASE: ticks", False), ("# 2026-11-24T10:00:00Z reason", False),
    ("price_ticks,symbol=BTCUSDT price=1,trade_id=1i 1", True),
    ("CREATE,symbol=A x=1 1", True),
])
def test_is_point_line_skips_every_header_and_comment_line(line, point):
    assert is_point_line(line) is point


def test_file_sink_writes_the_header_then_each_batch_on_its_own_lines(tmp_path):
    sink = FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)

    sink.write("m,symbol=A x=1 1\nm,symbol=A x=2 2")
    sink.write("m,symbol=A x=3 3")

    (open_file,) = tmp_path.glob("btcusdt-*.lp")
    assert open_file.read_text() == (HEADER +
                                     "m,symbol=A x=1 1\nm,symbol=A x=2 2\nm,symbol=A x=3 3\n")
    sink.close()


def test_closing_the_file_sink_gzips_the_open_file(tmp_path):
    sink = FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)
    sink.write("m,symbol=A x=1 1")

    sink.close()

    assert list(tmp_path.glob("*.lp")) == []
    (done,) = tmp_path.glob("btcusdt-*.lp.gz")
    assert read_gz(done) == HEADER + "m,symbol=A x=1 1\n"


def test_file_sink_rotates_to_a_new_gzipped_file_after_rotate_s(tmp_path):
    sink = FileSink(tmp_path, "btcusdt", "ticks", rotate_s=1e-9)

    sink.write("m,symbol=A x=1 1")
    sink.write("m,symbol=A x=2 2")  # the first file is old enough: rotate
    sink.close()

    files = sorted(tmp_path.glob("btcusdt-*.lp.gz"))
    assert len(files) == 2
    contents = sorted(read_gz(f) for f in files)
    assert contents == [HEADER + "m,symbol=A x=1 1\n",
                        HEADER + "m,symbol=A x=2 2\n"]


def test_file_sink_compresses_files_left_open_by_a_previous_run(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="workers.storage.sink")
    leftover = tmp_path / "btcusdt-20260101T000000Z.lp"
    leftover.write_text(HEADER + "m,symbol=A x=1 1\n")

    FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)

    assert not leftover.exists()
    assert read_gz(tmp_path / "btcusdt-20260101T000000Z.lp.gz") == \
        HEADER + "m,symbol=A x=1 1\n"
    assert any("event=compress_leftover" in r.getMessage() for r in caplog.records)


def test_file_sink_leaves_other_workers_files_alone(tmp_path):
    other = tmp_path / "ethusdt-20260101T000000Z.lp"
    other.write_text("x")

    FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)

    assert other.read_text() == "x"


def test_file_sink_without_writes_creates_no_file(tmp_path):
    FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600).close()

    assert list(tmp_path.iterdir()) == []


def test_a_failed_file_sink_write_is_retryable_and_keeps_nothing_of_that_batch(tmp_path,
                                                                                monkeypatch):
    sink = FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)
    sink.write("m,symbol=A x=1 1")

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RetryableWriteError, match="No space left"):
        sink.write("m,symbol=A x=2 2")
    monkeypatch.undo()
    sink.write("m,symbol=A x=3 3")
    sink.close()

    (done,) = tmp_path.glob("btcusdt-*.lp.gz")
    assert read_gz(done) == HEADER + "m,symbol=A x=1 1\nm,symbol=A x=3 3\n"


def test_a_file_sink_whose_first_write_failed_closes_without_a_file(tmp_path, monkeypatch):
    sink = FileSink(tmp_path, "btcusdt", "ticks", rotate_s=3600)

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RetryableWriteError):
        sink.write("m,symbol=A x=1 1")
    monkeypatch.undo()
    sink.close()

    assert list(tmp_path.iterdir()) == []
