"""`python -m tests.support.influx_front`: run the front (cli.py)."""
import sys

from tests.support.influx_front.cli import main

sys.exit(main())
