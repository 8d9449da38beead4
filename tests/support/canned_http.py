"""A canned HTTP endpoint on 127.0.0.1 for the unit specs of the InfluxDB read client and the
worker's resume query: it answers what the spec set and records what was asked.

    with CannedHttp() as served:      # or a fixture: `yield from canned_http()`
        served.body = {...}
        ... served.url ... served.requests

Shared by tests/unit/storage/test_influx_query.py and tests/unit/capture/test_worker.py.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Dict, Iterator, List, Optional, Tuple, Type
from urllib.parse import parse_qs, urlsplit

# A request as recorded: its path, its query parameters, its headers.
Request = Tuple[str, Dict[str, List[str]], Dict[str, str]]

# How often the serving thread looks for a shutdown: a stop within a tick, not the default 0.5 s
# that each spec using the server would wait at its teardown.
POLL_S = 0.05
HOLD_MAX_S = 10.0  # a held answer goes out after this long whatever the spec does


class CannedHttp:
    """Answers every GET with `status` and `body` (bytes, or anything JSON), or the next body
    of `queue`, or for a path in `paths` its (status, body); records each request in
    `requests` and counts TCP connections (HTTP/1.1 keep-alive, as InfluxDB); `hold` keeps
    answers back while cleared."""

    def __init__(self, body: object = None) -> None:
        self.status = 200
        self.body: object = {"results": [{"statement_id": 0}]} if body is None else body
        self.queue: List[object] = []
        self.paths: Dict[str, Tuple[int, object]] = {}
        self.requests: List[Request] = []
        self.connections = 0
        self.hold = threading.Event()
        self.hold.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(POLL_S,), daemon=True).start()

    def answer(self, path: str) -> Tuple[int, bytes]:
        """The (status, payload) for a GET of `path`, in the order of the class docstring."""
        status, body = self.status, self.body
        if path in self.paths:
            status, body = self.paths[path]
        elif self.queue:
            body = self.queue.pop(0)
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "CannedHttp":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def _handler(self) -> Type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                served.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                served.requests.append((parts.path, parse_qs(parts.query), dict(self.headers)))
                served.hold.wait(HOLD_MAX_S)
                status, payload = served.answer(parts.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client under test gave up first (a timeout spec): not a failure

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def canned_http(body: object = None) -> Iterator[CannedHttp]:
    """The body of a pytest fixture: a CannedHttp for one spec, closed after it."""
    with CannedHttp(body) as served:
        yield served
