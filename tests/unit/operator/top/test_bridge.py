"""The local TCP bridge `rayguard top CLUSTER` puts in front of a port-forward, on real sockets."""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

from rayguard_operator.top.bridge import TcpBridge, pump


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP server that sends back what it gets, upper-cased, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        listener.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def test_bytes_go_both_ways_on_each_connection(echo_server: tuple[str, int]) -> None:
    with TcpBridge(lambda: socket.create_connection(echo_server)) as bridge:
        for _ in range(2):  # one upstream per connection
            with socket.create_connection((bridge.host, bridge.port), timeout=5) as client:
                payload = b"ping" * 100_000  # larger than one chunk
                threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
                assert recv_exactly(client, len(payload)) == payload.upper()
        assert bridge.connections == 2 and bridge.last_error is None


def test_a_failed_connect_closes_the_connection_and_says_why() -> None:
    def refuse() -> socket.socket:
        raise ConnectionRefusedError("no port-forward today")

    with TcpBridge(refuse) as bridge:
        with socket.create_connection((bridge.host, bridge.port), timeout=5) as client:
            assert client.recv(1) == b""  # closed
        assert isinstance(bridge.last_error, ConnectionRefusedError)


def test_the_connection_ends_when_the_far_side_closes() -> None:
    a, far = socket.socketpair()
    b, near = socket.socketpair()
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(pump(a, b, threading.Event())))
    thread.start()
    far.sendall(b"hello")
    assert near.recv(5) == b"hello"
    far.close()
    thread.join(5)
    assert done == [5]
    for s in (a, b, near):
        s.close()


def test_close_stops_listening(echo_server: tuple[str, int]) -> None:
    bridge = TcpBridge(lambda: socket.create_connection(echo_server))
    bridge.start()
    port = bridge.port
    bridge.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
