"""What a worker process loads: memory is won by not loading what a worker never uses.

Each spec runs in a fresh interpreter: what is imported is a property of the whole process.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

# What a worker never loads: reactivex and asyncio (influxdb-client's batching and asynchronous
# modes; the names its write_api.py imports come from stand-ins whose docstring says so),
# dateutil's parser and tz (query results) and importlib.metadata with zipfile (urllib3's HTTP/2;
# a stand-in until first use).
NOT_LOADED = """
import sys


def not_loaded():
    stand_ins = ('reactivex', 'reactivex.operators', 'reactivex.scheduler', 'reactivex.subject')
    assert all(sys.modules[m].__doc__.startswith('Stand-in') for m in stand_ins if m in sys.modules)
    assert sys.modules['importlib.metadata'].__doc__.startswith('Stand-in until first use')
    return [m for m in sys.modules if m.startswith(('asyncio', 'reactivex', 'dateutil.parser.',
                                                    'dateutil.tz', 'importlib.metadata.',
                                                    'zipfile')) and m not in stand_ins]
"""


def run_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", NOT_LOADED + textwrap.dedent(code)], check=True,
                   timeout=60, stdout=subprocess.DEVNULL)


def test_a_worker_process_keeps_numpy_out_of_influxdb_client():
    """influxdb-client imports numpy when installed (~15 MB RSS per worker); a worker refuses it."""
    run_python("""
        from workers.common.lean_imports import keep_numpy_out
        keep_numpy_out()
        from influxdb_client.client.write_api import SYNCHRONOUS
        assert sys.modules.get('numpy') is None, 'numpy was imported'
        """)


def test_the_worker_entry_point_keeps_unused_imports_out_before_anything_else():
    """main() installs the rules first: even `--help` leaves a process that imports the write
    path without numpy, reactivex, asyncio or dateutil's parser."""
    run_python("""
        from workers.__main__ import main
        try:
            main(['--help'])
        except SystemExit:
            pass
        import influxdb_client
        import urllib3
        from influxdb_client.client.write_api import SYNCHRONOUS
        assert sys.modules.get('numpy') is None, 'numpy was imported'
        assert not_loaded() == [], not_loaded()
        """)


def test_a_worker_process_writes_synchronously_without_reactivex():
    """influxdb-client's write_api imports reactivex (and with it asyncio, ~4 MB RSS) for its
    batching and asynchronous modes only; the worker's SYNCHRONOUS writes work without it."""
    run_python("""
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer
        from workers.common.lean_imports import keep_unused_imports_out
        keep_unused_imports_out()
        from workers.settings import InfluxSettings
        from workers.storage.sink import InfluxSink

        got = []
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append((self.path, self.rfile.read(int(self.headers['Content-Length']))))
                self.send_response(204)
                self.send_header('Content-Length', '0')
                self.end_headers()
            def log_message(self, *args):
                pass
        server = HTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sink = InfluxSink(InfluxSettings(
            url=f'http://127.0.0.1:{server.server_port}', token='tok', org='acme',
            bucket='ticks', measurement='price_ticks', health_measurement='streamer_health',
            timeout_s=5.0, gzip=False))
        sink.write('price_ticks,symbol=BTCUSDT trade_id=1i 1')
        sink.close()
        server.shutdown()
        assert len(got) == 1 and got[0][0].startswith('/api/v2/write?'), got
        assert got[0][1] == b'price_ticks,symbol=BTCUSDT trade_id=1i 1', got
        assert not_loaded() == [], not_loaded()
        """)


def test_influxdb_clients_batching_mode_is_refused_with_a_clear_error_in_a_worker():
    run_python("""
        from workers.common.lean_imports import REACTIVEX_REFUSED, keep_unused_imports_out
        keep_unused_imports_out()
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import WriteOptions
        client = InfluxDBClient(url='http://127.0.0.1:9', token='tok', org='acme')
        try:
            client.write_api(write_options=WriteOptions(batch_size=10))
        except RuntimeError as exc:
            assert str(exc) == REACTIVEX_REFUSED, exc
        else:
            raise AssertionError('the batching mode was not refused')
        """)


def test_dateutils_parser_is_loaded_only_when_used_and_then_works():
    """influxdb-client imports dateutil.parser (~1 MB RSS with dateutil.tz) for query results,
    which a worker never reads; it is loaded on first use instead of at import."""
    run_python("""
        from workers.common.lean_imports import keep_unused_imports_out
        keep_unused_imports_out()
        import influxdb_client
        from influxdb_client.client.util import date_utils
        assert 'dateutil.parser._parser' not in sys.modules, 'dateutil.parser was loaded'
        from dateutil.parser import parse
        assert parse('2026-01-02T03:04:05Z').year == 2026
        assert date_utils.parser.isoparse('2026-01-02').day == 2
        assert 'dateutil.parser._parser' in sys.modules
        """)


def test_importlib_metadata_is_loaded_only_when_used_and_then_works():
    """urllib3 2.x imports importlib.metadata's `version` (with zipfile, ~0.7 MB RSS) for HTTP/2
    only; until first use it is a stand-in that answers from the real module once asked."""
    run_python("""
        from workers.common.lean_imports import keep_unused_imports_out
        keep_unused_imports_out()
        import urllib3
        from importlib.metadata import version  # what urllib3/http2/__init__.py does
        assert not_loaded() == [], not_loaded()
        assert version('urllib3') == urllib3.__version__
        import importlib, importlib.metadata
        real = sys.modules['importlib.metadata']
        assert importlib.metadata is real
        assert not (real.__doc__ or '').startswith('Stand-in'), real.__doc__
        assert real.distribution('urllib3').metadata['Name'] == 'urllib3'
        assert 'zipfile' in sys.modules
        """)


def test_importlib_metadata_read_before_first_use_loads_the_real_module():
    run_python("""
        from workers.common.lean_imports import keep_unused_imports_out
        keep_unused_imports_out()
        import importlib.metadata
        assert 'orjson' in {d.metadata['Name'] for d in importlib.metadata.distributions()}
        from importlib.metadata import entry_points
        assert entry_points(group='console_scripts') is not None
        """)
