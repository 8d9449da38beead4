"""scripts/doctor against the front of every flavor (issue 19.5), and scripts/run's first start.

Each run is the real command line (`python -m workers.ops.doctor --env-file FILE`), so its
table and exit code are what a user sees. What it printed for each flavor is kept under
`DOCTOR_OUTPUT_DIR` when that is set (the issue's note quotes it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from tests.support.influx_fixtures import InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxServer
from tests.support.procs import REPO_ROOT, plain_env

TOKEN = "doctor-token-0123"
TOKENS = {"1.8": "tester:" + TOKEN}  # 1.8 with auth on: `Token user:password`
FLAVORS = ("lenient", "1.8", "2.7", "3core", "serverless")


@pytest.fixture(scope="module")
def fronts(influx_server: InfluxServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, InfluxFront]]:
    started = {flavor: InfluxFront.start(tmp_path_factory.mktemp(f"front-{flavor}"),
                                         influx_server.url, token=TOKENS.get(flavor, TOKEN),
                                         flavor=flavor) for flavor in FLAVORS}
    yield started
    for front in started.values():
        front.stop()


def env_file(tmp_path: Path, url: str, token: str, bucket: str, **more: str) -> Path:
    path = tmp_path / "doctor.env"
    settings = {"INFLUXDB_URL": url, "INFLUXDB_TOKEN": token, "INFLUXDB_ORG": "test-org",
                "INFLUXDB_BUCKET": bucket, "RUN_DIR": str(tmp_path / "run"), **more}
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return path


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in plain_env().items() if not k.startswith("INFLUXDB_")}
    return subprocess.run([sys.executable, "-m", "workers.ops.doctor", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def run_doctor(front: InfluxFront, db: InfluxDb, tmp_path: Path, *args: str,
               saved_as: str = "") -> Tuple[subprocess.CompletedProcess[str], List[dict]]:
    path = env_file(tmp_path, front.url, front.token or "", db.name)
    shown = doctor("--env-file", str(path), *args)
    keep = os.environ.get("DOCTOR_OUTPUT_DIR")
    if keep and saved_as:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{saved_as}.txt").write_text(
            f"$ scripts/doctor   # flavor {front.flavor}, exit {shown.returncode}\n"
            f"{shown.stdout}{shown.stderr}")
    as_json = doctor("--env-file", str(path), "--json")
    return shown, json.loads(as_json.stdout)["checks"]


def results(checks: List[dict]) -> dict[str, str]:
    return {c["name"]: c["result"] for c in checks}


@pytest.mark.parametrize("flavor, product, retention", [
    ("lenient", "InfluxDB OSS 2.7.0-influx-front",  # no buckets API: asked the 1.x way
     "ok     retention policy '(default)': kept forever"),
    ("1.8", "InfluxDB OSS 1.8.10", "ok     retention policy '(default)': kept forever"),
    # a 2.x bucket kept forever lists no `expire` rule (retentionRules: [])
    ("2.7", "InfluxDB OSS v2.7.12", "ok     bucket '{db}': kept forever"),
    ("3core", "InfluxDB 3 Core 3.10.0", "skip   3.x does not tell it over the v1/v2 APIs")])
def test_a_good_set_up_passes_on_every_server(fronts, influx_db, tmp_path, flavor, product,
                                              retention):
    shown, checks = run_doctor(fronts[flavor], influx_db, tmp_path, saved_as=flavor)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    found = results(checks)
    assert [c["name"] for c in checks] == ["reachable", "product", "write", "read", "dbrp",
                                           "retention", "schema", "quota"]
    assert {found[n] for n in ("reachable", "product", "write", "read", "dbrp",
                               "schema")} == {"ok"}, shown.stdout
    assert f"product    ok     {product}" in shown.stdout
    assert "retention  " + retention.format(db=influx_db.name) in shown.stdout, shown.stdout
    assert "quota      skip   INFLUXDB_WRITE_LIMIT not set" in shown.stdout
    assert influx_db.query('SHOW MEASUREMENTS') == [], "the write probe stored something"


def test_serverless_without_a_mapping_fails_with_the_dbrp_fix_then_passes_with_one(
        fronts, influx_db, tmp_path):
    front = fronts["serverless"]
    shown, checks = run_doctor(front, influx_db, tmp_path, saved_as="serverless-no-dbrp")

    assert shown.returncode == 1, shown.stdout
    assert results(checks)["dbrp"] == "FAIL" and results(checks)["write"] == "ok"
    fix = next(c["fix"] for c in checks if c["name"] == "dbrp")
    assert fix.startswith(f"bucket {influx_db.name!r} has no DBRP mapping"), fix
    assert (f"influx v1 dbrp create --db {influx_db.name} --rp autogen --bucket-id "
            f"{influx_db.name} --default") in fix
    assert "fix dbrp: " in shown.stdout

    front.create_dbrp(influx_db.name, influx_db.name)
    shown, checks = run_doctor(front, influx_db, tmp_path, saved_as="serverless")
    assert shown.returncode == 0, shown.stdout
    assert results(checks)["dbrp"] == results(checks)["read"] == "ok"


@pytest.mark.parametrize("flavor", ["3core", "1.8"])
def test_a_price_ticks_of_another_tool_with_integer_prices_fails_with_the_fix(
        fronts, influx_db, tmp_path, flavor):
    influx_db.write_lines("price_ticks,symbol=BTCUSDT price=60000i,qty=1i 1700000000000000000")
    shown, checks = run_doctor(fronts[flavor], influx_db, tmp_path,
                               saved_as=f"{flavor}-conflict")

    assert shown.returncode == 1, shown.stdout
    schema = next(c for c in checks if c["name"] == "schema")
    assert schema["result"] == "FAIL"
    assert "price is integer there, float in ours" in schema["detail"]
    assert "qty is integer there, float in ours" in schema["detail"]
    assert "INFLUXDB_MEASUREMENT" in schema["fix"] and "new bucket" in schema["fix"]


def test_a_refused_token_fails_the_write_with_its_fix(fronts, influx_db, tmp_path):
    path = env_file(tmp_path, fronts["2.7"].url, "not-the-token", influx_db.name)
    shown = doctor("--env-file", str(path))

    assert shown.returncode == 1, shown.stdout
    assert "write      FAIL   the write was refused (401" in shown.stdout
    assert "fix write: InfluxDB refused the token (401): check INFLUXDB_TOKEN" in shown.stdout


def test_retention_shorter_than_the_look_back_is_a_warning(fronts, influx_server, influx_db,
                                                          tmp_path):
    influx_server.query(f'CREATE RETENTION POLICY "short" ON "{influx_db.name}" DURATION 2h '
                        "REPLICATION 1")
    path = env_file(tmp_path, fronts["1.8"].url, fronts["1.8"].token or "",
                    f"{influx_db.name}/short", RESUME_LOOKBACK_H="24")
    shown = doctor("--env-file", str(path))

    assert shown.returncode == 0, shown.stdout
    assert "retention  warn   retention policy 'short': kept 2 h, less than " \
           "RESUME_LOOKBACK_H=24 h" in shown.stdout
    assert "fix retention: set RESUME_LOOKBACK_H=2 (or less)" in shown.stdout


def test_nothing_answering_is_a_runtime_failure_and_no_url_a_configuration_one(tmp_path,
                                                                                refused_url):
    path = env_file(tmp_path, refused_url, TOKEN, "ticks")
    shown = doctor("--env-file", str(path))
    assert shown.returncode == 3, shown.stdout
    assert "reachable  FAIL   http://127.0.0.1:" in shown.stdout
    assert "product    skip   InfluxDB not reached" in shown.stdout

    (tmp_path / "none.env").write_text("INFLUXDB_URL=\n")
    shown = doctor("--env-file", str(tmp_path / "none.env"))
    assert (shown.returncode, shown.stdout) == (2, "")
    assert shown.stderr.startswith("scripts/doctor: INFLUXDB_URL is not set"), shown.stderr


def test_the_first_start_checks_once_and_starts_anyway_while_influxdb_is_down(
        fronts, influx_db, tmp_path, refused_url):
    down = env_file(tmp_path, refused_url, TOKEN, influx_db.name)
    first = doctor("--env-file", str(down), "--first-start")
    assert first.returncode == 0, first.stdout
    assert "starting anyway" in first.stdout
    assert not (tmp_path / "run" / "doctor.ok").exists()

    good = env_file(tmp_path, fronts["2.7"].url, TOKEN, influx_db.name)
    checked = doctor("--env-file", str(good), "--first-start")
    assert checked.returncode == 0 and "CHECK" in checked.stdout, checked.stdout
    assert (tmp_path / "run" / "doctor.ok").exists()
    again = doctor("--env-file", str(good), "--first-start")
    assert (again.returncode, again.stdout) == (0, ""), "checked once per set-up"
