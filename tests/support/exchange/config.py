"""Option values of one simulator run and the per-symbol specs parsed from the command line."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Dict, List, Optional

UNITS = 100_000_000  # prices and quantities are kept as integers of 1e-8

STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK", "CANCEL_ONLY")

# Longest first, so that FDUSD wins over USD and USDT over USD.
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL",
                "JPY", "USD", "DAI")

# Start prices for well-known base assets; anything else starts at 10.
KNOWN_PRICES = {"BTC": "60000.00", "ETH": "3000.00", "BNB": "600.00", "SOL": "150.00",
                "XRP": "0.5000", "DOGE": "0.15000", "1000SATS": "0.0003000",
                "SHIB": "0.00002000", "PEPE": "0.00001000"}

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


class ConfigError(ValueError):
    """A command-line value or control request that cannot be used."""


DAY_US = 86_400_000_000


def parse_day(text: str, what: str = "date") -> date:
    """`YYYY-MM-DD` -> date (UTC days throughout)."""
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a date YYYY-MM-DD") from None


def day_start_us(day: date) -> int:
    """Microseconds since the epoch at 00:00 UTC of `day`."""
    return (day - date(1970, 1, 1)).days * DAY_US


def parse_utc_us(text: str) -> int:
    """`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]` (UTC) -> microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text[:-1] if text.endswith("Z") else text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a UTC time YYYY-MM-DD[THH:MM:SS]") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def to_units(text: str, what: str = "value") -> int:
    """Decimal string -> integer number of 1e-8; more than 8 decimals is an error."""
    try:
        value = Decimal(text) * UNITS
    except InvalidOperation:
        raise ConfigError(f"{what} {text!r} is not a decimal number") from None
    if value != value.to_integral_value():
        raise ConfigError(f"{what} {text!r} has more than 8 decimals")
    return int(value)


def fmt8(units: int) -> str:
    """Integer 1e-8 units -> the exchange's fixed 8-decimal string."""
    return f"{units // UNITS}.{units % UNITS:08d}"


def quote_units(price_units: int, qty_units: int) -> int:
    """price*qty rounded to 1e-8 units: one value behind REST's quoteQty and the archive's."""
    return (price_units * qty_units + UNITS // 2) // UNITS


def fmt_quote(price_units: int, qty_units: int) -> str:
    """price*qty rounded to 8 decimals, trailing zeros stripped (REST quoteQty is unpadded)."""
    text = fmt8(quote_units(price_units, qty_units)).rstrip("0")
    return text + "0" if text.endswith(".") else text


def tick_units(price_units: int) -> int:
    """Price step for a price level: about 1e-4 of the price as a power of ten, 1e-8..0.01."""
    exponent = math.floor(math.log10(max(price_units, 1) / UNITS)) - 4
    return min(int(10 ** max(exponent + 8, 0)), UNITS // 100)


def step_units(price_units: int) -> int:
    """Quantity step: cheap coins trade in whole units, BTC in 1e-5, as on the exchange."""
    exponent = -(math.floor(math.log10(max(price_units, 1) / UNITS)) + 1)
    return min(int(10 ** max(exponent + 8, 0)), UNITS)


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) by a known quote suffix; unknown suffixes are all base, quote USDT."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, "USDT"


def default_price(symbol: str) -> str:
    return KNOWN_PRICES.get(split_symbol(symbol)[0], "10.00")


@dataclass(frozen=True)
class SymbolSpec:
    """One listed symbol: `name` uppercase, `rate` trades/s, start price in 1e-8 units."""

    name: str
    rate: float
    price_units: int
    status: str = "TRADING"
    start_id: Optional[int] = None  # None: the run's --start-id

    @property
    def tick(self) -> int:
        return tick_units(self.price_units)

    @property
    def step(self) -> int:
        return step_units(self.price_units)


def check_symbol(name: str) -> str:
    upper = name.upper()
    if not SYMBOL_RE.match(upper):
        raise ConfigError(f"bad symbol name {name!r}: expected 2-30 letters/digits")
    return upper


def check_status(status: str) -> str:
    upper = status.upper()
    if upper not in STATUSES:
        raise ConfigError(f"bad status {status!r}: one of {', '.join(STATUSES)}")
    return upper


def parse_symbol_spec(text: str, default_rate: float) -> SymbolSpec:
    """`BTCUSDT[:rate=200][:price=60000.00][:status=HALT][:start=100000]` -> SymbolSpec."""
    name, *options = text.split(":")
    name = check_symbol(name)
    values: Dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("rate", "price", "status", "start"):
            raise ConfigError(f"bad symbol option {option!r} in {text!r}: "
                              "use rate=, price=, status= or start=")
        values[key] = value
    return make_spec(name, values.get("rate", default_rate), values.get("price"),
                     values.get("status", "TRADING"), values.get("start"))


def make_spec(name: str, rate: Any, price: Optional[Any], status: str = "TRADING",
              start: Optional[Any] = None) -> SymbolSpec:
    """Validated SymbolSpec from loose values (command line or a control request)."""
    try:
        rate_value = float(rate)
        start_id = None if start is None else int(start)
    except (TypeError, ValueError):
        raise ConfigError(f"bad rate {rate!r} or start id {start!r} for {name}") from None
    if not 0 <= rate_value <= 1_000_000:
        raise ConfigError(f"rate for {name} must be 0..1000000 trades/s, got {rate!r}")
    price_units = to_units(str(price if price is not None else default_price(name)), "price")
    if price_units <= 0:
        raise ConfigError(f"price for {name} must be positive")
    return SymbolSpec(check_symbol(name), rate_value, price_units, check_status(status), start_id)


@dataclass
class SimConfig:
    """Everything one run was started with (cli.py fills it; tests may build it directly)."""

    port: int = 0
    host: str = "127.0.0.1"
    symbols: List[SymbolSpec] = field(default_factory=list)
    quiet_symbols: int = 0
    seed: int = 1
    start_id: int = 100_000
    history: int = 2_000_000
    legacy_fields: bool = False
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    server_pings: bool = True
    answer_pings: bool = True
    max_incoming_per_sec: int = 5
    max_streams: int = 1024
    max_url_length: int = 8000  # request target (path + query) of a stream connection
    max_connect_attempts: int = 300  # handshake attempts per IP per connect_window
    connect_window: float = 300.0
    ban_seconds: float = 120.0  # 418 ban for an attempt before its 429's Retry-After
    max_conn_age: Optional[float] = None
    max_send_buffer: int = 64 * 1024 * 1024
    weight_limit: int = 6000
    strict_limit: bool = False
    replay: Optional[Path] = None
    replay_timing: str = "original"
    replay_speed: float = 1.0
    replay_wait: bool = False
    faults: List[Dict[str, Any]] = field(default_factory=list)
    exit_with_parent: bool = False
    # The simulator's clock is the wall clock plus this offset (--clock sets it in the past):
    # trade times, serverTime and which archive days are over all follow it.
    clock_offset_us: int = 0
    past_days: List[Dict[str, Any]] = field(default_factory=list)  # past_days actions at start
    archive_dir: Optional[Path] = None  # where archive zips are built (None: a temp dir)

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self.clock_offset_us
