"""Choosing a free TCP port on loopback for a server this program starts.

Ports the kernel hands out for `bind(0)` come from its ephemeral range, the same range outgoing
connections draw from, so such a port can be taken again between the choice and the server's
start. A port below that range (Linux: 32768 and up) is taken only by a server that asks for it.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000  # below Linux's and macOS's ephemeral ranges
_TRIES = 50


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range if possible."""
    rng = random.SystemRandom()
    for _ in range(_TRIES):
        port = rng.randrange(_LOW, _HIGH)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
