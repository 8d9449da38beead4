"""The buffered reader that feeds websocket-client's frame parser from large socket reads."""
from __future__ import annotations

import socket

import pytest
from websocket import ABNF, WebSocketConnectionClosedException
from websocket._abnf import frame_buffer

from workers.stream import BufferedReader


def server_frame(text: bytes) -> bytes:
    return ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, text).format()  # unmasked, as servers send


def test_frames_split_anywhere_across_reads_come_out_whole_and_in_order():
    ours, theirs = socket.socketpair()
    payloads = [b'{"t":%d}' % i for i in range(500)] + [b"x" * 70000]  # one over READ_CHUNK
    wire = b"".join(server_frame(p) for p in payloads)
    theirs.sendall(wire[:12345])  # a read boundary in the middle of a frame
    parser = frame_buffer(BufferedReader(ours).recv, True)
    got = []
    theirs.sendall(wire[12345:])
    for _ in payloads:
        got.append(parser.recv_frame().data)
    assert got == payloads


def test_a_closed_peer_ends_the_read_with_the_librarys_closed_error():
    ours, theirs = socket.socketpair()
    theirs.close()
    with pytest.raises(WebSocketConnectionClosedException):
        BufferedReader(ours).recv(2)
