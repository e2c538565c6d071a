"""Raw client sockets for tests of what a server does to connections it is not served on.

The front-door tests hold connections open half-sent, stalled or idle, and
need to know whether (and with what) the server closed each one, without
ever waiting longer than they say.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing `sock`, or None if it is still open after
    `within` seconds. A reset (the server aborted it) counts as closed."""
    received = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except OSError:  # reset, or a TLS error on an aborted connection
            return received
        if not chunk:
            return received
        received += chunk
    return None


@contextlib.contextmanager
def held(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """`sockets` (to which more may be added inside), all closed on the way out."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
