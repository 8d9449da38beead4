"""What a worker process loads: memory is won by not loading what a worker never uses."""
from __future__ import annotations


def test_a_worker_process_keeps_numpy_out_of_influxdb_client():
    """influxdb-client imports numpy when installed (~15 MB RSS per worker); a worker refuses it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from workers.__main__ import keep_numpy_out\n"
            "keep_numpy_out()\n"
            "from influxdb_client.client.write_api import SYNCHRONOUS\n"
            "assert sys.modules.get('numpy') is None, 'numpy was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
