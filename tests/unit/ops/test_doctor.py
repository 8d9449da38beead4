"""scripts/doctor's judgements: each check's verdict on canned answers of the servers
(influxdb-servers.md), its exit code, and scripts/run's first-start policy."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from workers.errors import NoMapping, SinkError
from workers.ops.doctor import (
    FAIL,
    OK,
    SKIP,
    WARN,
    Answer,
    Check,
    NoAnswer,
    Product,
    bucket_retention_s,
    exit_code,
    first_start,
    judge_product,
    judge_quota,
    judge_reach,
    judge_read,
    judge_retention,
    judge_schema,
    judge_write,
    line_bytes,
    our_field_types,
    policy_retention_s,
    table,
)
from workers.settings import InfluxSettings, load_settings
from workers.storage.retention import go_duration_s

S = InfluxSettings(url="http://influx:8086", token="t", org="o", bucket="ticks",
                   measurement="price_ticks", health_measurement="streamer_health",
                   timeout_s=10.0, gzip=False)


def answer(status: int, body: Any = b"", **headers: str) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, raw)


NOT_FOUND = answer(404, b"404 page not found")


# ---- reachable --------------------------------------------------------------------------------

def test_reachable_says_whether_tls_was_verified():
    assert judge_reach("https://h:8086", None).detail.endswith("(TLS verified: certificate "
                                                               "and host name)")
    assert judge_reach("http://h:8086", None).result == OK


def test_no_answer_is_a_runtime_failure_an_untrusted_certificate_is_not():
    down = judge_reach("http://h:8086", NoAnswer("Connection refused", tls=False))
    untrusted = judge_reach("https://h", NoAnswer("CERTIFICATE_VERIFY_FAILED", tls=True))
    assert (down.result, down.runtime) == (FAIL, True) and "8181 for 3 Core" in down.fix
    assert (untrusted.result, untrusted.runtime) == (FAIL, False)
    assert "CA" in untrusted.fix
    assert exit_code([down]) == 3 and exit_code([untrusted]) == 1


# ---- product ----------------------------------------------------------------------------------

def test_the_product_from_ping_headers_json_or_the_cloud_host():
    cases = [
        (answer(204, x_influxdb_version="1.8.10", x_influxdb_build="OSS"), "1.x",
         "InfluxDB OSS 1.8.10"),
        (answer(204, x_influxdb_version="v2.7.12", x_influxdb_build="OSS"), "2.x",
         "InfluxDB OSS v2.7.12"),
        (answer(200, {"version": "3.10.0", "revision": "x"}, x_influxdb_build="Core"), "3.x",
         "InfluxDB 3 Core 3.10.0"),
        (answer(200, {"version": "3.2.1"}), "3.x", "InfluxDB 3 Core 3.2.1"),
    ]
    for ping, kind, name in cases:
        product, check = judge_product("http://h:8086", ping, None)
        assert (product.kind, check.result, check.detail) == (kind, OK, name)


def test_influxdb_cloud_is_named_by_its_region():
    serverless, check = judge_product("https://us-east-1-1.aws.cloud2.influxdata.com",
                                      NOT_FOUND, NOT_FOUND)
    assert serverless.kind == "cloud-serverless" and check.result == OK
    tsm, _ = judge_product("https://us-west-2-1.aws.cloud2.influxdata.com", NOT_FOUND, None)
    assert tsm.kind == "cloud-tsm"


def test_a_server_naming_no_version_is_a_warning_and_before_1_8_a_failure():
    product, check = judge_product("http://h:8086", NOT_FOUND, NOT_FOUND)
    assert (product.kind, check.result) == ("unknown", WARN)
    old, check = judge_product("http://h", answer(204, x_influxdb_version="1.6.7"), None)
    assert check.result == FAIL and "1.8" in check.fix


# ---- write ------------------------------------------------------------------------------------

def test_an_empty_write_accepted_or_refused_as_empty_proves_the_token():
    assert judge_write(answer(204), S).result == OK
    refused_as_empty = judge_write(
        answer(400, {"code": "invalid", "message": "writing requires points"}), S)
    assert refused_as_empty.result == OK and "writing requires points" in refused_as_empty.detail


def test_a_refused_token_or_a_missing_bucket_fails_with_the_fix():
    token = judge_write(answer(401, {"code": "unauthorized", "message": "unauthorized access"}),
                        S)
    assert token.result == FAIL and token.fix.startswith("InfluxDB refused the token (401): "
                                                         "check INFLUXDB_TOKEN")
    bucket = judge_write(answer(404, {"code": "not found", "message": 'bucket "ticks" not '
                                                                      'found'}), S)
    assert bucket.result == FAIL and "check that bucket 'ticks' exists" in bucket.fix


def test_a_busy_server_is_a_warning():
    for busy in (answer(429, b"", retry_after="30"), answer(503, b""),
                 answer(400, {"code": "invalid", "message": "this service is overloaded, "
                                                           "please try again later"})):
        assert judge_write(busy, S).result == WARN


# ---- read and dbrp ----------------------------------------------------------------------------

V2 = Product("2.x", "InfluxDB OSS v2.7.12")


def test_a_read_that_works_passes_read_and_dbrp():
    read, dbrp = judge_read(None, V2, S, 2)
    assert (read.result, dbrp.result) == (OK, OK) and "2 symbol(s)" in read.detail


def test_no_mapping_fails_dbrp_with_the_read_clients_fix():
    fix = ("bucket 'ticks' has no DBRP mapping for InfluxQL reads (...): create it with "
           "`influx v1 dbrp create --db ticks --rp autogen --bucket-id abc --default`")
    error = NoMapping(f"InfluxDB query error: database not found: ticks: {fix}")
    read, dbrp = judge_read(error, Product("unknown", "unknown"), S)
    assert (read.result, dbrp.result, dbrp.fix) == (SKIP, FAIL, fix)
    _, on_1x = judge_read(error, Product("1.x", "InfluxDB 1.8.10"), S)
    assert on_1x.fix == "create it: influx -execute 'CREATE DATABASE \"ticks\"'"


def test_3core_without_the_database_yet_is_only_a_warning():
    error = SinkError("InfluxDB /query answered 404: database not found: ticks", 404)
    read, dbrp = judge_read(error, Product("3.x", "InfluxDB 3 Core"), S)
    assert (read.result, dbrp.result) == (WARN, SKIP)


def test_a_token_that_cannot_read_fails_the_read():
    error = SinkError("InfluxDB refused the token for a read (403): check INFLUXDB_TOKEN", 403)
    read, dbrp = judge_read(error, V2, S)
    assert (read.result, dbrp.result) == (FAIL, SKIP) and read.fix == str(error)


# ---- retention --------------------------------------------------------------------------------

def test_retention_from_buckets_and_from_retention_policies():
    buckets = answer(200, {"buckets": [{"name": "other", "retentionRules": []},
                                       {"name": "ticks", "retentionRules": [
                                           {"type": "expire", "everySeconds": 2592000}]}]})
    assert bucket_retention_s(buckets, "ticks") == 2592000
    assert bucket_retention_s(answer(200, {"buckets": [{"name": "ticks",
                                                        "retentionRules": []}]}), "ticks") == 0
    assert bucket_retention_s(answer(200, {"buckets": [{"name": "ticks"}]}), "ticks") is None
    policies = [{"columns": ["name", "duration", "shardGroupDuration", "replicaN", "default"],
                 "values": [["autogen", "0s", "168h0m0s", 1, False],
                            ["week", "168h0m0s", "24h0m0s", 1, True]]}]
    assert policy_retention_s(policies, "") == 7 * 86400
    assert policy_retention_s(policies, "autogen") == 0
    assert policy_retention_s(policies, "missing") is None
    assert go_duration_s("1h30m0s") == 5400


def test_a_retention_shorter_than_the_look_back_is_a_warning_with_the_fix():
    short = judge_retention(7200, "bucket 'ticks'", 24)
    assert short.result == WARN and short.fix.startswith("set RESUME_LOOKBACK_H=2 (or less)")
    assert judge_retention(30 * 86400, "bucket 'ticks'", 24).detail == \
        "bucket 'ticks': kept 30 d, RESUME_LOOKBACK_H 24 h"
    assert judge_retention(0, "bucket 'ticks'", 24).result == OK
    assert judge_retention(None, "bucket 'ticks'", 24).result == SKIP


# ---- schema -----------------------------------------------------------------------------------

def test_our_field_types_follow_the_point_model():
    assert our_field_types("price_ticks") == {
        "price": "float", "price_str": "string", "qty": "float", "qty_str": "string",
        "trade_id": "integer", "time_us": "integer", "buyer_maker": "boolean"}


def show_field_keys(*rows: List[str]) -> List[Dict[str, Any]]:
    return [{"name": "price_ticks", "columns": ["fieldKey", "fieldType"], "values": list(rows)}]


def test_another_tools_price_ticks_with_integer_prices_fails_with_the_fix():
    check = judge_schema(show_field_keys(["price", "integer"], ["volume", "float"]),
                         "price_ticks")
    assert check.result == FAIL
    assert check.detail == ("measurement 'price_ticks' holds another schema: price is integer "
                            "there, float in ours")
    assert "INFLUXDB_MEASUREMENT" in check.fix and "new bucket" in check.fix


def test_our_own_schema_or_none_yet_passes():
    ours = [[k, v] for k, v in our_field_types("price_ticks").items()]
    assert judge_schema(show_field_keys(*ours), "price_ticks").result == OK
    assert "also fields not ours: volume" in judge_schema(
        show_field_keys(*ours, ["volume", "float"]), "price_ticks").detail
    assert judge_schema([], "price_ticks").detail.endswith("not there yet: the first write "
                                                           "sets its field types")
    # 1.x lists a field once per type its shards hold: one other type is a conflict
    assert judge_schema(show_field_keys(["price", "float"], ["price", "integer"]),
                        "price_ticks").result == FAIL


# ---- quota ------------------------------------------------------------------------------------

def test_the_quota_row_is_skipped_without_a_limit():
    assert judge_quota(None, ["BTCUSDT"], "price_ticks") == Check(
        "quota", SKIP, "INFLUXDB_WRITE_LIMIT not set")


def test_the_free_plans_quota_in_trades_per_second_for_the_pairs():
    free_plan = (5_000_000.0, 300.0)  # 5 MB per 5 minutes (a fake setting's value)
    per_s = 5_000_000 / 300 / line_bytes("price_ticks")
    one = judge_quota(free_plan, ["BTCUSDT"], "price_ticks")
    assert one.result == OK and f"~{per_s:.0f} trades/s" in one.detail
    four = judge_quota(free_plan, ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"], "price_ticks")
    assert four.result == WARN and "averages ~35 trades/s" in four.fix
    assert 130 < line_bytes("price_ticks") < 200


# ---- exit code, table, first start ------------------------------------------------------------

def test_exit_codes_and_the_table_with_its_fixes():
    checks = [Check("reachable", OK, "answered"), Check("dbrp", FAIL, "none", "create it"),
              Check("retention", WARN, "short", "lower it"), Check("quota", SKIP, "unset")]
    assert exit_code(checks) == 1 and exit_code(checks[2:]) == 0
    shown = table(S, checks).splitlines()
    assert shown[1:6] == ["CHECK      RESULT DETAIL", "reachable  ok     answered",
                          "dbrp       FAIL   none", "retention  warn   short",
                          "quota      skip   unset"]
    assert shown[-2:] == ["fix dbrp: create it", "fix retention: lower it"]


def settings_for(run_dir: Path, url: Optional[str] = "http://influx:8086") -> Any:
    env = {"RUN_DIR": str(run_dir)}
    if url:
        env.update(INFLUXDB_URL=url, INFLUXDB_TOKEN="t", INFLUXDB_ORG="o",
                   INFLUXDB_BUCKET="ticks")
    return load_settings(env)


def test_first_start_checks_once_per_set_up(tmp_path, capsys):
    calls: List[int] = []

    def fine(_: Any) -> List[Check]:
        calls.append(1)
        return [Check("reachable", OK, "answered")]

    settings = settings_for(tmp_path)
    assert first_start(settings, fine) == 0 and first_start(settings, fine) == 0
    assert len(calls) == 1, "the stamp spares the second start"
    moved = dataclasses.replace(settings, influx=dataclasses.replace(settings.influx,
                                                                     bucket="other"))
    assert first_start(moved, fine) == 0 and len(calls) == 2, "another bucket: checked again"
    assert first_start(settings_for(tmp_path, url=None), fine) == 0 and len(calls) == 2


def test_first_start_goes_on_while_influxdb_is_down_and_on_a_failure(tmp_path, capsys):
    """A stopped service misses live trades; a running one keeps on disk what is refused."""
    down = [judge_reach("http://influx:8086", NoAnswer("refused", tls=False))]
    assert first_start(settings_for(tmp_path), lambda _: down) == 0
    assert "starting anyway" in capsys.readouterr().out
    assert not (tmp_path / "doctor.ok").exists(), "checked again at the next start"

    failed = [Check("reachable", OK, "answered"), Check("schema", FAIL, "conflict", "rename")]
    assert first_start(settings_for(tmp_path), lambda _: failed) == 0
    assert "the set-up check FAILED (above): starting anyway" in capsys.readouterr().out
    assert not (tmp_path / "doctor.ok").exists()


def test_the_quota_row_reads_the_write_limit_setting():
    from workers.ops.doctor import write_limit
    from workers.settings import load_settings

    assert write_limit(load_settings({})) is None
    assert write_limit(load_settings({"INFLUXDB_WRITE_LIMIT": "5MB/5m"})) == (5_000_000.0, 300.0)
