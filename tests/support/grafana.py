"""What Grafana makes of config/grafana/provisioning/datasources/*.yaml, and what it sends.

Test support, not product. Grafana's InfluxDB data source in InfluxQL mode (the fields of its
provisioning: root `url`, `user`, `basicAuth`/`basicAuthUser`; `jsonData.dbName`, `httpMode`,
`httpHeaderName<N>`; `secureJsonData.password`, `basicAuthPassword`, `httpHeaderValue<N>`):
- every string value has `$VAR` / `${VAR}` replaced from Grafana's environment (provisioning's
  environment lookups; a variable not set becomes empty);
- a query is `POST /query?db=<dbName>&epoch=ms` with the form body `q=...` (httpMode POST), or
  `GET` with `q` in the URL;
- auth: `basicAuth` with basicAuthUser/basicAuthPassword, else a non-empty `user` with
  `password`, is HTTP Basic (Grafana's datasource service builds the client's BasicAuth from
  them); each `httpHeaderName<N>` is sent with `httpHeaderValue<N>`.
"""
from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping

import yaml

REPO = Path(__file__).resolve().parents[2]
DATASOURCES = REPO / "config" / "grafana" / "provisioning" / "datasources"
DEFAULT_FILE = DATASOURCES / "tick-capture.yaml"
# One provisioning file per InfluxDB the users run (the front's flavor names as keys).
FLAVOR_FILES = {
    "1.8": DATASOURCES / "flavors" / "influxdb-1.8.yaml",
    "2.7": DATASOURCES / "flavors" / "influxdb-2.x.yaml",
    "serverless": DATASOURCES / "flavors" / "influxdb-cloud-serverless.yaml",
    "3core": DATASOURCES / "flavors" / "influxdb-3-core.yaml",
}
ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def provisioning_files() -> List[Path]:
    """Every datasource provisioning file of the project (the default and one per flavor)."""
    return sorted(DATASOURCES.rglob("*.yaml"))


def expand(value: Any, env: Mapping[str, str]) -> Any:
    """Grafana's environment lookups in every string of a parsed provisioning document."""
    if isinstance(value, str):
        return ENV_REFERENCE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    return value


def datasources_of(path: Path) -> List[Dict[str, Any]]:
    """The `datasources:` entries of a provisioning file, as parsed (nothing expanded)."""
    doc = yaml.safe_load(path.read_text())
    found: List[Dict[str, Any]] = doc["datasources"]
    return found


@dataclass
class GrafanaInfluxQL:
    """One provisioned InfluxQL data source as Grafana would use it, its variables expanded."""

    url: str
    database: str
    method: str
    headers: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def provisioned(cls, path: Path, env: Mapping[str, str]) -> "GrafanaInfluxQL":
        (source,) = datasources_of(path)
        ds = expand(source, env)
        data, secure = ds.get("jsonData", {}), ds.get("secureJsonData", {})
        headers = {data[k]: secure.get(f"httpHeaderValue{k[len('httpHeaderName'):]}", "")
                   for k in data if k.startswith("httpHeaderName")}
        if ds.get("basicAuth"):
            headers["Authorization"] = basic(ds.get("basicAuthUser", ""),
                                             secure.get("basicAuthPassword", ""))
        elif ds.get("user"):
            headers["Authorization"] = basic(ds["user"], secure.get("password", ""))
        return cls(url=ds["url"].rstrip("/"), database=data.get("dbName", ""),
                   method=data.get("httpMode", "GET"), headers=headers)

    def query(self, q: str) -> Dict[str, Any]:
        """The /query answer to `q` as Grafana asks it; an HTTP error as {"status", "body"}."""
        params = {"db": self.database, "epoch": "ms"}
        headers = dict(self.headers)
        body = None
        if self.method == "POST":
            body = urllib.parse.urlencode({"q": q}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            params["q"] = q
        req = urllib.request.Request(f"{self.url}/query?{urllib.parse.urlencode(params)}",
                                     data=body, method=self.method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer: Dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as err:
            return {"status": err.code, "body": err.read().decode(errors="replace")}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
