"""An HTTPS server on loopback whose answers attack the client reading them.

The CLI reads answers from servers it does not control (an IdP named by a
kubeconfig someone sent, a concierge behind a proxy). This server plays the
malicious or broken one for the tests that prove those reads are bounded:

- `/huge/...`: a 200 with a JSON document that never ends (chunked, no
  Content-Length, generated on the fly, `HUGE_BYTES` in all), so only a
  reader that counts while it reads is protected;
- `/drip/...`: the status line and headers, then one body byte every
  `DRIP_INTERVAL` seconds, for as long as the client stays;
- `/drip-headers/...`: the status line, then one header byte at a time, so
  the client never even sees the end of the headers.

Paths are prefixes of an issuer (`https://127.0.0.1:PORT/huge`), so the
CLI's discovery request (`ISSUER/.well-known/openid-configuration`) lands on
the attack. Every connection is served by a daemon thread that stops at
`close()` or when the client hangs up.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from localenv import pki

#: 400 MB: the size that took the CLI to 855 MB resident when it read whole bodies.
HUGE_BYTES = 400 * 1000 * 1000
CHUNK_BYTES = 64 * 1024
DRIP_INTERVAL = 0.5
#: What the dripping body claims to be: small, so only a deadline can stop the reader.
DRIP_BODY_BYTES = 4096


class HostileServer:
    """One TLS listener on 127.0.0.1 with the attacks above; counts what it managed to send."""

    def __init__(self, cert: pki.CertPair) -> None:
        self.closing = threading.Event()
        self.sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert_path, cert.key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _count(self, attack: str, sent: int) -> None:
        with self._lock:
            self.sent[attack] = self.sent.get(attack, 0) + sent

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                attack = self.path.strip("/").split("/", 1)[0]
                try:
                    if attack == "huge":
                        self._huge()
                    elif attack == "drip":
                        self._drip_body()
                    elif attack == "drip-headers":
                        self._drip_headers()
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    pass  # the client gave up: that is the point
                finally:
                    self.close_connection = True

            do_POST = do_GET

            def _huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                head = f'{{"issuer": "{server.url}/huge", "padding": "'.encode()
                self._chunk(head)
                sent = len(head)
                filler = b"x" * CHUNK_BYTES
                while sent < HUGE_BYTES and not server.closing.is_set():
                    self._chunk(filler)
                    sent += len(filler)
                    server._count("huge", len(filler))
                self._chunk(b'"}')
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

            def _drip_body(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(DRIP_BODY_BYTES))
                self.end_headers()
                self.wfile.flush()
                self._drip(b'{"issuer": "'.ljust(DRIP_BODY_BYTES), "drip")

            def _drip_headers(self) -> None:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._drip(b"X-Padding: " + b"x" * (1 << 20), "drip-headers")

            def _drip(self, data: bytes, attack: str) -> None:
                for index in range(len(data)):
                    if server.closing.wait(DRIP_INTERVAL):
                        return
                    self.wfile.write(data[index:index + 1])
                    self.wfile.flush()
                    server._count(attack, 1)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: a test asserts on what the client says, not on this log."""

        return Handler

