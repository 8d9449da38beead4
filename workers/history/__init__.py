"""Past days: Binance's archive loaded through the worker's write path (load.py), and each
stored UTC day verified against its archive file (verify.py)."""
