"""One WebSocket session: the buffered reader under websocket-client, SUBSCRIBE pacing and acks."""
from __future__ import annotations

import socket
import threading
import time

import orjson
import pytest
from websocket import ABNF, WebSocketConnectionClosedException
from websocket._abnf import frame_buffer

from workers.exchange.connection import (
    ACK_TIMEOUT_S,
    SUBSCRIBE_SPACING_S,
    SUBSCRIBE_TRIES,
    BufferedReader,
    Connection,
)
from workers.exchange.protocol import ControlReply
from workers.exchange.stream_plan import plan_connections


def server_frame(text: bytes) -> bytes:
    return ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, text).format()  # unmasked, as servers send


def parser_reading(sock: socket.socket) -> frame_buffer:
    """websocket-client's frame parser with the worker's reader plugged in, as the worker does."""
    def unused(size: int) -> bytes:
        raise AssertionError("the library's own recv must not be used once the reader is in")
    parser = frame_buffer(unused, True)
    # what plug_into sets on a WebSocket
    parser.recv_strict = BufferedReader(sock).recv_strict  # type: ignore[method-assign,assignment]
    return parser


def test_frames_split_anywhere_across_reads_come_out_whole_and_in_order():
    ours, theirs = socket.socketpair()
    payloads = ([b'{"t":%d}' % i for i in range(500)] + [b""] + [b"x" * 70000]  # > READ_CHUNK
                + [b"y" * 200 for _ in range(5)])
    wire = b"".join(server_frame(p) for p in payloads)
    theirs.sendall(wire[:12345])  # a read boundary in the middle of a frame
    parser = parser_reading(ours)
    got = []
    theirs.sendall(wire[12345:])
    for _ in payloads:
        got.append(parser.recv_frame().data)
    assert got == payloads


def test_a_frame_arriving_byte_by_byte_comes_out_whole():
    ours, theirs = socket.socketpair()
    wire = server_frame(b"z" * 300) + server_frame(b"after")
    parser = parser_reading(ours)

    def trickle() -> None:  # while the parser reads: a socket buffer holds few tiny sends
        for i in range(len(wire)):
            theirs.sendall(wire[i:i + 1])
            time.sleep(0.0005)
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    assert parser.recv_frame().data == b"z" * 300
    assert parser.recv_frame().data == b"after"
    sender.join(5)


def test_plug_into_makes_a_websocket_read_through_the_reader():
    import websocket
    ours, theirs = socket.socketpair()
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.sock, ws.connected = ours, True
    BufferedReader(ours).plug_into(ws)
    theirs.sendall(server_frame(b"one") + server_frame(b"two"))
    assert [ws.recv_data(), ws.recv_data()] == [(ABNF.OPCODE_TEXT, b"one"),
                                                (ABNF.OPCODE_TEXT, b"two")]


def test_a_closed_peer_ends_the_read_with_the_librarys_closed_error():
    ours, theirs = socket.socketpair()
    theirs.sendall(b"\x81")  # half a header, then the peer goes
    theirs.close()
    with pytest.raises(WebSocketConnectionClosedException):
        BufferedReader(ours).recv_strict(2)


# -- SUBSCRIBE: paced, acknowledged, retried ------------------------------------------------


class FakeSocket:
    """Stands in for the websocket: records what the connection sends."""

    def __init__(self) -> None:
        self.sent: list = []
        self.sock = None

    def send(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


def open_connection(symbols: int = 1000) -> tuple:
    plan, = plan_connections("ws://127.0.0.1:9", [f"Q{i:04d}USDT" for i in range(symbols)])
    conn = Connection("w", plan, "s1c1", lambda *a: None)
    fake = FakeSocket()
    conn.ws = fake  # type: ignore[assignment]
    conn.opened_at = 100.0
    return conn, fake, plan


def test_subscribe_messages_go_one_per_spacing_and_never_faster():
    conn, fake, plan = open_connection()
    assert len(plan.subscribe) >= 2
    conn.pump(100.0)
    conn.pump(100.0 + SUBSCRIBE_SPACING_S / 2)
    assert len(fake.sent) == 1
    conn.pump(100.0 + SUBSCRIBE_SPACING_S)
    assert len(fake.sent) == 2
    first = fake.sent[0]
    assert first["method"] == "SUBSCRIBE" and tuple(first["params"]) == plan.subscribe[0]


def test_acknowledged_subscriptions_make_the_connection_fully_subscribed():
    conn, fake, plan = open_connection()
    now = 100.0
    while not conn.fully_subscribed:
        conn.pump(now)
        for msg in fake.sent:
            conn.control_reply(ControlReply(msg["id"], None, None))
        fake.sent.clear()
        now += SUBSCRIBE_SPACING_S
    assert conn.subscribed == plan.streams == 1000


def test_an_error_reply_is_sent_again_with_a_new_id():
    conn, fake, plan = open_connection()
    conn.pump(100.0)
    first = fake.sent.pop()
    conn.control_reply(ControlReply(first["id"], None, {"code": 2, "msg": "Invalid request"}))
    conn.pump(100.0 + SUBSCRIBE_SPACING_S)
    again = fake.sent.pop()
    assert again["params"] == first["params"] and again["id"] != first["id"]


def test_a_missing_acknowledgement_is_retried_then_the_connection_is_given_up():
    conn, fake, plan = open_connection(symbols=600)
    assert len(plan.subscribe) == 1
    now = 100.0
    for attempt in range(SUBSCRIBE_TRIES):
        conn.pump(now)
        assert len(fake.sent) == attempt + 1, "re-sent once the acknowledgement is overdue"
        now += ACK_TIMEOUT_S + 0.1
    conn.pump(now)
    assert "SUBSCRIBE failed 3 times" in conn._closing_reason
    assert not conn.fully_subscribed
