"""Small HTTP helpers shared by the REST client (rest.py), the stream (connection.py) and the
InfluxDB clients (storage): Retry-After and the TLS trust."""
from __future__ import annotations

import functools
import math
import os
import re
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import Any, Optional

# OpenSSL's lookup names in a CA directory: the subject hash and a counter (`c_rehash`).
_HASHED_CA = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def retry_after_s(headers: Any, now: Optional[float] = None) -> Optional[float]:
    """Seconds a server's `Retry-After` header asks to wait; None when absent or unusable.

    Takes any mapping with `.get` (urllib3's HTTPHeaderDict, http.client's HTTPMessage, a dict)
    or None. Both forms of RFC 9110 are read: delay-seconds ("120", also "1.5") and an
    HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"; `now` is the wall clock, for tests). A date in
    the past or a negative number gives 0.0; garbage, NaN and infinity give None.
    """
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
        if value is None:
            value = headers.get("retry-after")  # a plain dict is case-sensitive
    except (AttributeError, TypeError):
        return None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@functools.lru_cache(maxsize=None)
def system_ca_dir() -> Optional[str]:
    """The system's hashed CA directory, for a TLS client to verify servers with instead of
    the default trust store; None: keep the default.

    The default store loads the whole CA bundle file (~140 certificates) into every TLS context:
    ~0.8 MB of RSS each (measured). From the directory, OpenSSL reads only the certificates a
    verification looks up. Used only when both the bundle and the directory are the platform's
    own (SSL_CERT_FILE and SSL_CERT_DIR unset, or naming the same files), which the
    distribution keeps in step (Debian and Alpine: update-ca-certificates), and the directory
    holds hashed names (RHEL's does not: None there).
    """
    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    if capath is None or not paths.openssl_capath or not paths.openssl_cafile:
        return None
    same = os.path.realpath
    if same(capath) != same(paths.openssl_capath):
        return None  # SSL_CERT_DIR names another directory
    if paths.cafile is not None and same(paths.cafile) != same(paths.openssl_cafile):
        return None  # SSL_CERT_FILE names another bundle: it may hold more than the directory
    try:
        hashed = any(_HASHED_CA.fullmatch(entry.name) for entry in os.scandir(capath))
    except OSError:
        return None
    return capath if hashed else None


@functools.lru_cache(maxsize=None)
def verifying_context() -> ssl.SSLContext:
    """One TLS client context per process that verifies servers (certificate and host name)
    against the system's hashed CA directory (system_ca_dir), or the default trust store where
    that directory cannot stand in for it. Shared by every connection that takes it, so even
    the default store is loaded once, not per connection."""
    ca_dir = system_ca_dir()
    return ssl.create_default_context(capath=ca_dir) if ca_dir else ssl.create_default_context()
