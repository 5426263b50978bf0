"""Free ports for local pods (and for the tests and benchmarks that start nodes the same way).

A port the kernel hands out for `bind(0)` comes from its ephemeral range, where every outgoing
connection also takes its local port: between the moment it was found free and the moment a
pod's redis-server or raylet binds it, a connection of any process may have taken it
("Address already in use"). Local ports are therefore drawn from below the ephemeral range
(32768 and up on Linux) and above Ray's worker ports (10002 to 19999 by default), checked
free on every address, and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading

from rayguard_node.errors import RayguardError

LOCAL_PORTS = range(20000, 32768)
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    with _lock:
        for _ in range(500):
            port = random.choice(LOCAL_PORTS)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("", port))  # every address: pods bind 0.0.0.0 or their 127.0.0.x
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RayguardError(f"no free port in {LOCAL_PORTS.start}-{LOCAL_PORTS.stop - 1} after 500 tries")
