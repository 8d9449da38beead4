"""Server-side WebSocket frames built by hand, and trade messages encoded once per framing.

Frames go straight to the transport: many trade frames are joined and written with one
`transport.write`, which is what makes tens of thousands of trades a second cheap.  Server
frames are never masked (RFC 6455 5.1), so a frame is just header + payload.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Tuple

from .history import BURST_FLAG, MAKER_FLAG, TradeHistory

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Framing of a connection: bit 1 = combined (wrapped) messages, bit 0 = microsecond times.
RAW_MS, RAW_US, COMBINED_MS, COMBINED_US = 0, 1, 2, 3


def framing_of(combined: bool, micro: bool) -> int:
    return (2 if combined else 0) | (1 if micro else 0)


def header(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode  # FIN set: every message is one frame
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame(opcode: int, payload: bytes) -> bytes:
    return header(opcode, len(payload)) + payload


def text_frame(payload: bytes) -> bytes:
    return frame(OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    # Control frame payloads are limited to 125 bytes, 2 of them the code.
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


# Text-frame headers as latin-1 strings, so a batch of frames can be built as one str and
# encoded once: trade messages are ASCII, and latin-1 maps chars 0..255 to the same bytes.
_HEADERS: Dict[int, str] = {}


def _text_header(length: int) -> str:
    hdr = _HEADERS.get(length)
    if hdr is None:
        hdr = _HEADERS[length] = header(OP_TEXT, length).decode("latin-1")
    return hdr


class TradeEncoder:
    """Builds the `@trade` messages of one symbol (fields as binance.md 2.1, in that order)."""

    # Synthetic order ids for the pre-2024 `b`/`a` fields: one per taker order, one per maker.
    ORDER_ID_BASE = 5_000_000_000

    def __init__(self, symbol: str, legacy_fields: bool) -> None:
        self.symbol = symbol
        self.stream = symbol.lower() + "@trade"
        self.legacy = legacy_fields
        self.wrap_head = '{"stream":"' + self.stream + '","data":'

    def payloads(self, history: TradeHistory, first: int, last: int, micro: bool) -> List[str]:
        """The bare payloads of ids first..last (ASCII str, one per trade)."""
        base = history.base_id
        prices, qtys, times, delays, flags = (history.prices, history.qtys, history.times_us,
                                              history.e_delays, history.flags)
        sym = self.symbol
        div = 1 if micro else 1000
        out: List[str] = []
        taker = history.burst_start_id(first) if self.legacy else 0
        for trade_id in range(first, last + 1):
            i = trade_id - base
            t_us = times[i]
            f = flags[i]
            p = prices[i]
            q = qtys[i]
            # Inlined fmt8: this loop runs for every trade, tens of thousands a second.
            ps = f"{p // 100000000}.{p % 100000000:08d}"
            qs = f"{q // 100000000}.{q % 100000000:08d}"
            m = "true" if f & MAKER_FLAG else "false"
            if self.legacy:
                if f & BURST_FLAG:
                    taker = trade_id
                buyer, seller = self._order_ids(taker, trade_id, bool(f & MAKER_FLAG))
                out.append(f'{{"e":"trade","E":{(t_us + delays[i]) // div},"s":"{sym}",'
                           f'"t":{trade_id},"p":"{ps}","q":"{qs}","b":{buyer},"a":{seller},'
                           f'"T":{t_us // div},"m":{m},"M":true}}')
            else:
                out.append(f'{{"e":"trade","E":{(t_us + delays[i]) // div},"s":"{sym}",'
                           f'"t":{trade_id},"p":"{ps}","q":"{qs}","T":{t_us // div},'
                           f'"m":{m},"M":true}}')
        return out

    def _order_ids(self, taker_first_id: int, trade_id: int, buyer_is_maker: bool
                   ) -> Tuple[int, int]:
        taker = self.ORDER_ID_BASE + 2 * taker_first_id
        maker = self.ORDER_ID_BASE + 2 * trade_id + 1
        return (maker, taker) if buyer_is_maker else (taker, maker)

    def wrap(self, payload: str) -> str:
        return self.wrap_head + payload + "}"

    def frames(self, history: TradeHistory, first: int, last: int, framing: int,
               cache: Dict[bool, List[str]]) -> bytes:
        """Text frames for ids first..last in `framing`, joined; `cache` shares payloads
        between framings of one batch (raw and combined use the same payload)."""
        micro = bool(framing & 1)
        payloads = cache.get(micro)
        if payloads is None:
            payloads = cache[micro] = self.payloads(history, first, last, micro)
        parts: List[str] = []
        append = parts.append
        if framing & 2:
            head = self.wrap_head
            extra = len(head) + 1
            for p in payloads:
                append(_text_header(len(p) + extra))
                append(head)
                append(p)
                append("}")
        else:
            for p in payloads:
                append(_text_header(len(p)))
                append(p)
        return "".join(parts).encode("latin-1")
