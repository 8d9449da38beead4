"""DBRP mappings: which bucket an InfluxQL `db` (and `rp`) reads. Pure.

influxdb-servers.md, Reads: "mapping db -> bucket" row. Cloud Serverless needs an explicit
mapping (`/api/v2/write` never creates one); 2.7 has a virtual one per bucket (`db=<bucket>`)
and takes explicit ones too. A mapping is made with `POST /api/v2/dbrps` and
`{"bucketID","database","retention_policy","default":true,"orgID"}` ("Creating a mapping"),
which the front serves. The front has no bucket ids: a bucket's id is its name (the influxd
`db[/rp]` the writes go to).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional


@dataclass(frozen=True)
class Dbrp:
    database: str
    retention_policy: str
    bucketID: str  # noqa: N815 (the API's spelling)
    default: bool
    orgID: str = ""  # noqa: N815

    def as_doc(self) -> Dict[str, Any]:
        return {"id": f"{self.database}/{self.retention_policy}", **asdict(self)}


class DbrpTable:
    def __init__(self) -> None:
        self.mappings: List[Dbrp] = []

    def create(self, doc: Mapping[str, Any]) -> Dbrp:
        """A mapping from the body of POST /api/v2/dbrps; ValueError names what is missing."""
        missing = [k for k in ("bucketID", "database") if not str(doc.get(k) or "")]
        if missing:
            raise ValueError(f"missing {' and '.join(missing)}")
        rp = str(doc.get("retention_policy") or "autogen")
        made = Dbrp(str(doc["database"]), rp, str(doc["bucketID"]), bool(doc.get("default", True)),
                    str(doc.get("orgID") or ""))
        self.mappings = [m for m in self.mappings
                         if (m.database, m.retention_policy) != (made.database, rp)]
        if made.default:
            self.mappings = [m if m.database != made.database else
                             Dbrp(m.database, m.retention_policy, m.bucketID, False, m.orgID)
                             for m in self.mappings]
        self.mappings.append(made)
        return made

    def find(self, database: Optional[str] = None) -> List[Dbrp]:
        return [m for m in self.mappings if database is None or m.database == database]

    def bucket(self, database: str, rp: Optional[str] = None) -> Optional[str]:
        """The bucket `db` (with `rp`, else the default mapping) reads; None: no mapping."""
        found = self.find(database)
        if rp:
            found = [m for m in found if m.retention_policy == rp]
        else:
            found = [m for m in found if m.default] or found[:1]
        return found[0].bucketID if found else None
