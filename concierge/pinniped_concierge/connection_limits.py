"""Every connection is bounded in time and in number, whatever its client does (or does not).

Why uvicorn alone is not enough: its h11 protocol arms one timer, the
keep-alive one, and only once a response is complete; the first byte that
arrives cancels it, and nothing re-arms it until the next response. So a
connection that never finishes its request line and headers (or that sends a
byte now and then) is never closed, and since uvicorn's `limit_concurrency`
counts open connections, a few hundred of them get every request 503.
Connections still in their TLS handshake are not counted there at all (the
protocol sees a connection only once the handshake is done) and are closed
only by asyncio's 60 s default handshake timeout, which uvicorn does not let
one change.

Here, each connection is timed from the moment it is accepted:

- it must complete its TLS handshake and its request line and headers
  within `header_timeout_seconds` of being accepted, and within as long of
  the end of each response after that (bytes that trickle in do not extend
  the deadline); a half-received request gets 408, an idle connection is
  just closed;
- while a request is in flight (headers complete, response not yet sent)
  the deadline is off: the app bounds the body (`requestBodyTimeoutSeconds`)
  and the number of requests in flight (`inflight`).

And at most `max_open` connections are open at once, handshaking ones
included: a new connection beyond that closes the connection that has been
waiting longest for its request, since that one costs nothing to drop (its
client has sent no request we would lose); only when every open connection
has a request in flight is the new one refused. So half-sent requests can
never keep a client that sends its request at once from being served.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("concierge.connections")

#: How long a closing TLS connection waits for the client's close_notify (asyncio's default
#: is 30 s, during which the connection is still open).
TLS_SHUTDOWN_TIMEOUT_SECONDS = 2.0
#: At most this much is kept from a client between its TLS handshake and h11 taking over:
#: one loop iteration's read, no more than a request line, headers and some body.
MAX_EARLY_BYTES = 256 * 1024
REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; "
                            b"charset=utf-8\r\ncontent-length: 45\r\nconnection: close\r\n\r\n"
                            b"request line and headers not received in time")

#: Why the server closed a connection, as counted by `on_close`.
HEADER_TIMEOUT = "header_timeout"
EVICTED = "evicted"
REFUSED = "refused"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float
    max_open: int
    #: None: plain HTTP (the separate metrics port).
    tls: ssl.SSLContext | None = None
    tls_shutdown_timeout_seconds: float = TLS_SHUTDOWN_TIMEOUT_SECONDS
    #: Called with HEADER_TIMEOUT, EVICTED or REFUSED each time the server closes one.
    on_close: Callable[[str], None] | None = None


class OpenConnections:
    """Every open connection, from its accept to its close; at most `max_open` of them."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        #: Connections without a request in flight, longest waiting first.
        self._waiting: OrderedDict[Connection, None] = OrderedDict()
        self._busy: set[Connection] = set()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._busy)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def admit(self, connection: Connection) -> bool:
        """Take in a new connection, closing the longest-waiting one if there is no room;
        False (and the new one should be closed) when every open one has a request in flight."""
        while len(self) >= self.max_open:
            if not self._waiting:
                return False
            oldest, _ = self._waiting.popitem(last=False)
            oldest.evict()
        self._waiting[connection] = None
        return True

    def mark_busy(self, connection: Connection) -> None:
        if connection in self._waiting:  # not if it was let go of meanwhile
            del self._waiting[connection]
            self._busy.add(connection)

    def mark_waiting(self, connection: Connection) -> None:
        if connection in self._busy:
            self._busy.discard(connection)
            self._waiting[connection] = None

    def remove(self, connection: Connection) -> None:
        self._waiting.pop(connection, None)
        self._busy.discard(connection)


class Connection:
    """One accepted connection: its deadline, and whether a request is in flight."""

    def __init__(self, transport: asyncio.Transport, table: OpenConnections,
                 limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport  # the TCP one, under TLS if any
        self.http: _DeadlineH11Protocol | None = None
        self._table = table
        self._limits = limits
        self._loop = loop
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self.closed = False

    def open(self) -> bool:
        """Count it in and start its deadline; False if it was refused (and closed)."""
        if not self._table.admit(self):
            self._close_now(REFUSED)
            return False
        self._arm()
        return True

    def request_started(self) -> None:
        if not self._busy and not self.closed:
            self._busy = True
            self._disarm()
            self._table.mark_busy(self)

    def request_finished(self) -> None:
        """The response is sent: the next request's headers are due within the timeout."""
        if self._busy and not self.closed:
            self._busy = False
            self._table.mark_waiting(self)
            self._arm()

    def evict(self) -> None:
        """Closed to make room for a new connection (the table has let go of it)."""
        self._close_now(EVICTED)

    def lost(self) -> None:
        """The transport is gone, whoever closed it."""
        self.closed = True
        self._disarm()
        self._table.remove(self)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(self._limits.header_timeout_seconds,
                                               self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.closed or self._busy:
            return
        self._count(HEADER_TIMEOUT)
        if self.http is not None:
            self.http.header_timeout()  # answers 408 if part of a request came, then closes
        else:
            self.transport.abort()  # still in its TLS handshake

    def _close_now(self, why: str) -> None:
        self._count(why)
        self.lost()
        self.transport.abort()

    def _count(self, why: str) -> None:
        if self._limits.on_close is not None:
            self._limits.on_close(why)


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, telling its `Connection` when a request starts and ends."""

    def __init__(self, connection: Connection, **uvicorn_arguments: Any) -> None:
        super().__init__(**uvicorn_arguments)
        self._connection = connection
        self._made = False
        #: What TLS decrypted before `connection_made` (asyncio reads on at once after the
        #: handshake, while `start_tls` is still returning): handed to h11 once it is made.
        self._early = bytearray()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._made = True
        super().connection_made(transport)
        self._note_progress()
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        if not self._made:
            self._early += data
            if len(self._early) > MAX_EARLY_BYTES:
                self._connection.evict()
            return
        super().data_received(data)
        self._note_progress()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next (pipelined) request at once
        self._note_progress()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.lost()
        if self._made:  # asyncio reports a failed TLS handshake here too, before any made
            super().connection_lost(exc)

    def _note_progress(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._connection.request_started()
        else:
            self._connection.request_finished()

    def header_timeout(self) -> None:
        """No complete request line and headers in time: 408 if part of a request arrived
        (a client waiting for an answer learns why), else just close an idle connection."""
        if self.transport.is_closing():
            return
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The class to give `uvicorn.Config(http=...)`, with one table of connections.

    uvicorn makes one instance per accepted connection, with the arguments of
    its own protocols; TLS (if `limits.tls`) is done here rather than by
    uvicorn, so that the handshake is timed and counted like the rest.
    """
    front = _FrontDoor(limits, OpenConnections(limits.max_open))

    class BoundedConnection(_Acceptor):
        pass

    BoundedConnection.front = front
    return BoundedConnection


@dataclass
class _FrontDoor:
    """What the connections of one server share."""

    limits: ConnectionLimits
    table: OpenConnections
    #: Handshakes under way, referenced so that they are not garbage-collected mid-way.
    handshakes: set[asyncio.Task[None]] = field(default_factory=set)


class _Acceptor(asyncio.Protocol):
    """A just-accepted TCP connection: counted, timed, then handed to h11 (after TLS)."""

    front: _FrontDoor

    def __init__(self, **uvicorn_arguments: Any) -> None:
        self._uvicorn_arguments = uvicorn_arguments
        self._loop: asyncio.AbstractEventLoop = (uvicorn_arguments.get("_loop")
                                                 or asyncio.get_event_loop())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read until TLS or h11 has the transport
        limits = self.front.limits
        connection = Connection(transport, self.front.table, limits, self._loop)
        if not connection.open():
            return
        http = _DeadlineH11Protocol(connection, **self._uvicorn_arguments)
        if limits.tls is None:
            connection.http = http
            transport.set_protocol(http)
            http.connection_made(transport)
            transport.resume_reading()
            return
        task = self._loop.create_task(self._handshake(connection, http, limits.tls))
        self.front.handshakes.add(task)
        task.add_done_callback(self.front.handshakes.discard)

    async def _handshake(self, connection: Connection, http: _DeadlineH11Protocol,
                         context: ssl.SSLContext) -> None:
        raw = connection.transport
        if connection.closed or raw.is_closing():  # evicted before its turn came
            connection.lost()
            return
        limits = self.front.limits
        try:
            tls = await self._loop.start_tls(
                raw, http, context, server_side=True,
                ssl_handshake_timeout=limits.header_timeout_seconds,
                ssl_shutdown_timeout=limits.tls_shutdown_timeout_seconds)
        except asyncio.CancelledError:  # the server is stopping
            connection.lost()
            raw.abort()
            raise
        except Exception as exc:  # a client that is not speaking TLS, or hung up
            log.debug("TLS handshake failed: %s", type(exc).__name__)
            connection.lost()
            raw.abort()
            return
        if connection.closed or tls is None:
            return
        assert isinstance(tls, asyncio.Transport)
        connection.http = http
        http.connection_made(tls)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only when refused or evicted before TLS or h11 took the transport: counted
