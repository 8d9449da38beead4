"""TLS trust without the bundle in every context: the REST client (https), the stream (wss) and
the InfluxDB writes and reads (https, one context for both) verify servers against the system's
hashed CA directory, read on demand (~0.8 MB of RSS less per TLS context than loading the
~140-certificate bundle), and only where that directory is the platform's own."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import pytest
import websocket

from workers.common import httputil
from workers.errors import RestError, RetryableWriteError, SinkError
from workers.exchange import connection, rest
from workers.exchange.rest import RestClient
from workers.settings import InfluxSettings
from workers.storage import influx_http
from workers.storage.influx_query import InfluxQuery
from workers.storage.sink import InfluxSink


def paths(cafile: Optional[str], capath: Optional[str], default_file: str,
          default_dir: str) -> ssl.DefaultVerifyPaths:
    """What ssl.get_default_verify_paths() answers: the effective file and directory (None when
    missing), the platform's defaults and the variables that override them."""
    # typeshed says str; at run time a missing file or directory is None
    return ssl.DefaultVerifyPaths(cafile, capath, "SSL_CERT_FILE",  # type: ignore[arg-type]
                                  default_file, "SSL_CERT_DIR", default_dir)


@pytest.fixture
def ca_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tuple[Path, Path]]:
    """A platform-like trust store: a bundle file and a directory with one hashed name."""
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "some-ca.pem").write_text("")
    (certs / "002c0b4f.0").symlink_to(certs / "some-ca.pem")
    httputil.system_ca_dir.cache_clear()
    yield bundle, certs
    httputil.system_ca_dir.cache_clear()


def use_paths(monkeypatch: pytest.MonkeyPatch, found: ssl.DefaultVerifyPaths) -> None:
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: found)
    httputil.system_ca_dir.cache_clear()


def test_the_platforms_own_directory_is_used(ca_dirs, monkeypatch):
    bundle, certs = ca_dirs
    use_paths(monkeypatch, paths(str(bundle), str(certs), str(bundle), str(certs)))
    assert httputil.system_ca_dir() == str(certs)


def test_variables_naming_the_platforms_own_files_change_nothing(ca_dirs, monkeypatch, tmp_path):
    bundle, certs = ca_dirs
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "cert.pem").symlink_to(bundle)
    (tmp_path / "lib" / "certs").symlink_to(certs)
    use_paths(monkeypatch, paths(str(bundle), str(certs), str(tmp_path / "lib" / "cert.pem"),
                                 str(tmp_path / "lib" / "certs")))
    assert httputil.system_ca_dir() == str(certs)


def test_another_bundle_named_by_ssl_cert_file_keeps_the_default_store(ca_dirs, monkeypatch,
                                                                        tmp_path):
    bundle, certs = ca_dirs
    own = tmp_path / "corporate.pem"
    own.write_text("")
    use_paths(monkeypatch, paths(str(own), str(certs), str(bundle), str(certs)))
    assert httputil.system_ca_dir() is None


def test_another_directory_named_by_ssl_cert_dir_keeps_the_default_store(ca_dirs, monkeypatch,
                                                                          tmp_path):
    bundle, certs = ca_dirs
    own = tmp_path / "own-certs"
    shutil.copytree(certs, own, symlinks=True)
    use_paths(monkeypatch, paths(str(bundle), str(own), str(bundle), str(certs)))
    assert httputil.system_ca_dir() is None


def test_a_directory_without_hashed_names_keeps_the_default_store(ca_dirs, monkeypatch):
    """RHEL's /etc/pki/tls/certs holds the bundle itself, no `<hash>.0` links."""
    bundle, certs = ca_dirs
    (certs / "002c0b4f.0").unlink()
    use_paths(monkeypatch, paths(str(bundle), str(certs), str(bundle), str(certs)))
    assert httputil.system_ca_dir() is None


def test_no_directory_keeps_the_default_store(ca_dirs, monkeypatch):
    bundle, certs = ca_dirs
    use_paths(monkeypatch, paths(str(bundle), None, str(bundle), str(certs)))
    assert httputil.system_ca_dir() is None


# -- the REST client over real TLS -----------------------------------------------------------

@pytest.fixture(scope="module")
def server_cert(tmp_path_factory) -> Tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1, its key, and its OpenSSL subject hash."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
                                  check=True, capture_output=True, text=True,
                                  timeout=60).stdout.strip()
    return cert, key, subject_hash


@pytest.fixture
def https_server(server_cert) -> Iterator[str]:
    cert, key, _ = server_cert

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    with serving_tls(Handler, cert, key) as port:
        yield f"https://127.0.0.1:{port}"


@contextlib.contextmanager
def serving_tls(handler: type, cert: Path, key: Path) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 over TLS with `cert`, in a thread; yields its port."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_the_rest_client_verifies_https_against_the_ca_directory(server_cert, https_server,
                                                                 tmp_path, monkeypatch):
    cert, _, subject_hash = server_cert
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / f"{subject_hash}.0").symlink_to(cert)
    monkeypatch.setattr(rest, "system_ca_dir", lambda: str(certs))
    client = RestClient(https_server, "t", timeout_s=5.0)
    try:
        assert client.get("/api/v3/ping", {}, attempts=1) == {}
    finally:
        client.close()


def test_a_server_whose_ca_is_not_in_the_directory_is_refused(https_server, tmp_path,
                                                              monkeypatch):
    certs = tmp_path / "certs"
    certs.mkdir()
    monkeypatch.setattr(rest, "system_ca_dir", lambda: str(certs))
    client = RestClient(https_server, "t", timeout_s=5.0)
    try:
        with pytest.raises(RestError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("/api/v3/ping", {}, attempts=1)
    finally:
        client.close()


# -- the stream over real TLS (wss) ----------------------------------------------------------

@pytest.fixture
def wss_server(server_cert) -> Iterator[str]:
    """Answers a WebSocket upgrade over TLS (enough for websocket-client's handshake)."""
    cert, key, _ = server_cert

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    with serving_tls(Handler, cert, key) as port:
        yield f"wss://127.0.0.1:{port}/ws/btcusdt@trade"


def test_the_stream_verifies_wss_against_the_ca_directory(server_cert, wss_server, tmp_path,
                                                         monkeypatch):
    cert, _, subject_hash = server_cert
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / f"{subject_hash}.0").symlink_to(cert)
    monkeypatch.delenv("WEBSOCKET_CLIENT_CA_BUNDLE", raising=False)
    monkeypatch.setattr(connection, "system_ca_dir", lambda: str(certs))
    assert connection.tls_options() == {"ca_cert_path": str(certs)}
    ws = websocket.create_connection(wss_server, timeout=5, sslopt=connection.tls_options())
    assert ws.connected and ws.sock is not None
    ws.sock.close()


def test_a_wss_server_whose_ca_is_not_in_the_directory_is_refused(wss_server, tmp_path,
                                                                  monkeypatch):
    certs = tmp_path / "certs"
    certs.mkdir()
    monkeypatch.delenv("WEBSOCKET_CLIENT_CA_BUNDLE", raising=False)
    monkeypatch.setattr(connection, "system_ca_dir", lambda: str(certs))
    with pytest.raises(ssl.SSLCertVerificationError):
        websocket.create_connection(wss_server, timeout=5, sslopt=connection.tls_options())


def test_a_bundle_the_user_names_for_websocket_client_keeps_its_meaning(tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "system_ca_dir", lambda: str(tmp_path))
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(tmp_path / "mine.pem"))
    assert connection.tls_options() == {}
    monkeypatch.delenv("WEBSOCKET_CLIENT_CA_BUNDLE")
    monkeypatch.setattr(connection, "system_ca_dir", lambda: None)
    assert connection.tls_options() == {}


# -- InfluxDB: writes and reads with one TLS trust -------------------------------------------

def influx(url: str) -> InfluxSettings:
    return InfluxSettings(url=url, token="tok", org="o", bucket="ticks", measurement="m",
                          health_measurement="h", timeout_s=5.0, gzip=False)


@pytest.fixture
def trusting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Optional[Path]], None]]:
    """Makes the system's CA directory `certs` (or none: the default store) for the process's
    one verifying context, built again for each test."""
    def trust(certs: Optional[Path]) -> None:
        found = None if certs is None else str(certs)
        monkeypatch.setattr(httputil, "system_ca_dir", lambda: found)
        httputil.verifying_context.cache_clear()

    yield trust
    httputil.verifying_context.cache_clear()


def test_the_verifying_context_reads_the_ca_directory_on_demand(trusting, tmp_path):
    trusting(tmp_path)
    context = httputil.verifying_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing loaded up front
    assert httputil.verifying_context() is context  # one per process


def test_influx_writes_and_reads_of_https_share_the_one_verifying_context(trusting, tmp_path):
    trusting(tmp_path)
    settings = influx("https://influx.example:8086")
    sink, query = InfluxSink(settings), InfluxQuery(settings)
    try:
        writes = sink.client.api_client.rest_client.pool_manager.connection_pool_kw
        reads = query.pool.connection_pool_kw
        assert writes["ssl_context"] is reads["ssl_context"] is httputil.verifying_context()
        assert writes["cert_reqs"] == reads["cert_reqs"] == ssl.CERT_REQUIRED
    finally:
        sink.close()
        query.close()


def test_plain_http_to_influx_builds_no_tls_context(trusting, tmp_path):
    trusting(tmp_path)
    assert influx_http.tls_context(influx("http://127.0.0.1:8086")) is None
    assert influx_http.client_tls_options(influx("http://127.0.0.1:8086")) == {
        "verify_ssl": True, "ssl_context": None}
    assert httputil.verifying_context.cache_info().currsize == 0


@pytest.fixture
def influx_https(server_cert) -> Iterator[str]:
    """Answers an InfluxQL query (GET /query) and a write (POST /api/v2/write) over TLS."""
    cert, key, _ = server_cert

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.answer(200, b'{"results": [{"statement_id": 0}]}')

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer(204, b"")

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with serving_tls(Handler, cert, key) as port:
        yield f"https://127.0.0.1:{port}"


def test_influx_writes_and_reads_verify_https_against_the_ca_directory(server_cert, influx_https,
                                                                       trusting, tmp_path):
    cert, _, subject_hash = server_cert
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / f"{subject_hash}.0").symlink_to(cert)
    trusting(certs)
    settings = influx(influx_https)
    sink, query = InfluxSink(settings), InfluxQuery(settings)
    try:
        sink.write("m,symbol=A x=1 1")
        assert query.query("SELECT 1") == []
    finally:
        sink.close()
        query.close()


def test_an_influx_whose_ca_is_not_in_the_directory_is_refused_by_writes_and_reads(
        influx_https, trusting, tmp_path):
    trusting(tmp_path)  # a CA directory without the server's CA
    settings = influx(influx_https)
    sink, query = InfluxSink(settings), InfluxQuery(settings)
    try:
        # Retried, then spooled: never taken for a refusal of the batch's content.
        with pytest.raises(RetryableWriteError, match="unreachable: .*CERTIFICATE_VERIFY_FAILED"):
            sink.write("m,symbol=A x=1 1")
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            query.query("SELECT 1")
        assert caught.value.status is None
    finally:
        sink.close()
        query.close()
