"""The HTTP stack of one InfluxDB: urllib3, with one TLS trust for writes and reads.

Writes go through influxdb-client (sink.InfluxSink), which builds its own urllib3 PoolManager
from its options; reads (influx_query.InfluxQuery, InfluxQL over /query) use a PoolManager of
their own. Both take their TLS settings from here, so a server one trusts the other trusts too:
certificate and host name verified against the system's hashed CA directory, as the REST client
and the stream do (httputil.system_ca_dir), in one SSLContext per process (httputil.
verifying_context), built only for an https URL.
"""
from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

import urllib3

from workers.common.httputil import verifying_context
from workers.settings import InfluxSettings


def tls_context(settings: InfluxSettings) -> Optional[ssl.SSLContext]:
    """The TLS context of connections to this InfluxDB; None for plain http (no TLS to set up,
    and no trust store to load)."""
    return verifying_context() if settings.url.lower().startswith("https:") else None


def client_tls_options(settings: InfluxSettings) -> Dict[str, Any]:
    """InfluxDBClient's TLS options, which it hands to its PoolManager: the same as read_pool's."""
    return {"verify_ssl": True, "ssl_context": tls_context(settings)}


def read_pool(settings: InfluxSettings) -> urllib3.PoolManager:
    """A PoolManager for reads, with the writes' TLS trust and the token sent as on writes.

    One connection kept alive: reads are one query at a time (resume, status, audit, plot).
    No retries: a failed read is reported to the caller, who decides (as on writes).
    """
    return urllib3.PoolManager(num_pools=1, maxsize=1, block=False, retries=False,
                               cert_reqs=ssl.CERT_REQUIRED, ssl_context=tls_context(settings),
                               headers={"Authorization": f"Token {settings.token}",
                                        "Accept": "application/json"})
