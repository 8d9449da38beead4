"""The Grafana data sources of config/grafana/provisioning/datasources/, one per InfluxDB.

Each file is a Grafana provisioning document for the InfluxDB data source in InfluxQL mode,
with the fields Grafana reads for that product (../shared/reference/influxdb-servers.md,
"Grafana"): 1.x database + user/password; 2.x the DBRP name + `Authorization: Token` header;
Cloud Serverless the DBRP-mapped name + token as password, with the mapping's command; 3 Core
port 8181, database + any user + token as password, product "InfluxDB Enterprise 3.x". Every
value that differs per installation comes from Grafana's environment, never a literal secret.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.support.grafana import (
    DEFAULT_FILE,
    ENV_REFERENCE,
    FLAVOR_FILES,
    GrafanaInfluxQL,
    basic,
    datasources_of,
    provisioning_files,
)

# Grafana's InfluxDB data source: jsonData.product's values (its product list) and the root,
# jsonData and secureJsonData fields it reads in InfluxQL mode.
PRODUCTS = {"InfluxDB OSS 1.x", "InfluxDB OSS 2.x", "InfluxDB Cloud Serverless",
            "InfluxDB Enterprise 3.x"}
ROOT_FIELDS = {"name", "uid", "type", "access", "url", "user", "basicAuth", "basicAuthUser",
               "isDefault", "editable", "jsonData", "secureJsonData"}
JSON_FIELDS = {"product", "version", "dbName", "httpMode", "timeInterval"}
SECURE_FIELDS = {"password", "basicAuthPassword"}
SECRET_WORDS = re.compile(r"token|password|secret", re.IGNORECASE)
ENV = {"INFLUXDB_URL": "http://influx.example:8086", "INFLUXDB_BUCKET": "ticks",
       "INFLUXDB_TOKEN": "tok-123", "INFLUXDB_USER": "reader", "INFLUXDB_PASSWORD": "pw-456"}
ALL_FILES = provisioning_files()


def only_env(value: str) -> str:
    """What is left of a value once its ${VAR} references are taken out."""
    return ENV_REFERENCE.sub("", value)


def the_source(path: Path) -> Dict[str, Any]:
    (source,) = datasources_of(path)
    return source


def test_there_is_the_default_file_and_one_per_influxdb_flavor() -> None:
    assert set(ALL_FILES) == {DEFAULT_FILE, *FLAVOR_FILES.values()}
    assert set(FLAVOR_FILES) == {"1.8", "2.7", "serverless", "3core"}


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_each_file_is_one_influxql_datasource_with_grafanas_fields(path: Path) -> None:
    source = the_source(path)
    assert source["type"] == "influxdb" and source["access"] == "proxy"
    # One uid for all: the dashboards' $datasource finds whichever file is mounted.
    assert source["uid"] == "tick-capture-influxql" and source["isDefault"] is True
    assert set(source) <= ROOT_FIELDS, set(source) - ROOT_FIELDS
    data = source["jsonData"]
    assert data["version"] == "InfluxQL" and data["httpMode"] == "POST"
    assert data["dbName"] == "${INFLUXDB_BUCKET}" and source["url"] == "${INFLUXDB_URL}"
    headers = {k for k in data if re.fullmatch(r"httpHeaderName\d+", k)}
    assert set(data) - headers <= JSON_FIELDS, set(data) - headers - JSON_FIELDS
    assert data.get("product", "InfluxDB OSS 2.x") in PRODUCTS
    secure = source["secureJsonData"]
    values = {f"httpHeaderValue{k[len('httpHeaderName'):]}" for k in headers}
    assert set(secure) <= SECURE_FIELDS | values, set(secure)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_no_file_names_a_literal_secret(path: Path) -> None:
    source = the_source(path)
    for key, value in source["secureJsonData"].items():
        assert ENV_REFERENCE.search(value), (key, value)
        assert only_env(value).strip() in ("", "Token"), (key, value)
    outside = [k for k in {**source, **source["jsonData"]} if k != "secureJsonData"]
    assert not [k for k in outside if SECRET_WORDS.search(k)], "a secret outside secureJsonData"
    assert not re.search(r"\b[A-Za-z0-9_-]{40,}={0,2}", path.read_text()), "a token-like text"


def auth_of(flavor: str) -> str:
    return GrafanaInfluxQL.provisioned(FLAVOR_FILES[flavor], ENV).headers["Authorization"]


def test_1_8_sends_database_user_and_password() -> None:
    source = GrafanaInfluxQL.provisioned(FLAVOR_FILES["1.8"], ENV)
    assert (source.url, source.database, source.method) == (ENV["INFLUXDB_URL"], "ticks", "POST")
    assert source.headers == {"Authorization": basic("reader", "pw-456")}
    assert the_source(FLAVOR_FILES["1.8"])["jsonData"]["product"] == "InfluxDB OSS 1.x"


def test_1_8_with_auth_off_sends_no_credentials() -> None:
    source = GrafanaInfluxQL.provisioned(FLAVOR_FILES["1.8"],
                                         {"INFLUXDB_URL": "http://x:8086", "INFLUXDB_BUCKET": "b"})
    assert source.headers == {}


def test_2x_and_the_default_send_the_token_as_an_authorization_header() -> None:
    assert auth_of("2.7") == "Token tok-123"
    assert GrafanaInfluxQL.provisioned(DEFAULT_FILE, ENV).headers == {
        "Authorization": "Token tok-123"}


@pytest.mark.parametrize("flavor", ["serverless", "3core"])
def test_3x_engines_take_any_user_and_the_token_as_password(flavor: str) -> None:
    user = the_source(FLAVOR_FILES[flavor])["user"]
    assert user and not ENV_REFERENCE.search(user)
    assert auth_of(flavor) == basic(user, "tok-123")


def test_3_core_is_the_enterprise_3x_product_on_port_8181() -> None:
    source = the_source(FLAVOR_FILES["3core"])
    assert source["jsonData"]["product"] == "InfluxDB Enterprise 3.x"
    assert ":8181" in FLAVOR_FILES["3core"].read_text()


def test_serverless_names_the_dbrp_mapping_it_needs() -> None:
    text = FLAVOR_FILES["serverless"].read_text()
    assert the_source(FLAVOR_FILES["serverless"])["jsonData"]["product"] == \
        "InfluxDB Cloud Serverless"
    assert re.search(r'^# +influx v1 dbrp create --db "\$INFLUXDB_BUCKET" --rp autogen '
                     r'--bucket-id \S+ .*--default$', text, re.MULTILINE)


def test_environment_lookups_expand_as_grafana_does() -> None:
    source = GrafanaInfluxQL.provisioned(FLAVOR_FILES["2.7"], {"INFLUXDB_URL": "http://h:8086/"})
    assert (source.url, source.database) == ("http://h:8086", "")
    assert source.headers == {"Authorization": "Token "}
