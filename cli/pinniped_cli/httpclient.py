"""HTTPS for the IdP and the concierge: one way to ask, with every answer bounded as it is read.

The servers the CLI talks to are named by a kubeconfig or flags, which may
come from someone else, so their answers are outside input and may be
hostile. `exchange` is the only way the CLI sends a request:

- Size: the body is read in chunks and reading stops at `MAX_RESPONSE_BYTES`
  (an answer from an IdP or the concierge is a few KiB), so a huge body never
  sits in memory. Only identity encoding is asked for and accepted, since a
  compressed body could inflate far past the bound in a single chunk.
- Time: httpx's timeouts are per operation, so a server sending one byte
  every few seconds would hold the CLI forever. The whole exchange (connect,
  send, headers, body) runs in a worker thread that the caller waits for at
  most `DEADLINE_SECONDS`; past that the worker is told to stop and left to
  die with the process (it holds at most one bounded body).
- Errors name the server's host and the bound that was hit, and never the
  request (which may carry a token or a password).

httpx is imported only when a login needs it.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pinniped_cli.redact import printable

if TYPE_CHECKING:
    import httpx

    from pinniped_cli.errors import CLIError

#: Per network operation (connect, one read, one write).
TIMEOUT_SECONDS = 30.0
#: For a whole exchange, from connecting to the last byte of the body.
DEADLINE_SECONDS = 30.0
#: Answers from the IdP or the concierge are a few KiB; reading stops past this.
MAX_RESPONSE_BYTES = 1 << 20


def new_client(ca_pem: str | None, timeout: float = TIMEOUT_SECONDS) -> httpx.Client:
    """A client that trusts exactly `ca_pem` when given, else the default CA store.

    Redirects are not followed: a token endpoint that redirects is misconfigured
    and following it could send a secret somewhere unexpected.
    """
    import httpx

    verify: ssl.SSLContext | bool = True
    if ca_pem:
        verify = ssl.create_default_context(cadata=ca_pem)
    return httpx.Client(verify=verify, timeout=timeout, follow_redirects=False,
                        headers={"User-Agent": "pinniped-py-cli"})


def describe_transport_error(exc: Exception, what: str, ca_flag: str) -> str:
    """Turn an httpx/ssl failure into a sentence that says what to check."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, ssl.SSLError):
        return (f"cannot verify the TLS certificate of {what}: {text}. "
                f"Pass the CA that signed it with {ca_flag}.")
    return f"cannot reach {what}: {text}. Check the URL and that the server is running."


class Answer:
    """What a server answered: its status, headers, and body as a JSON object.

    `body` is {} when the body is not a JSON object; callers turn that into an
    error that names what they expected.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: dict[str, Any]) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def exchange(http: httpx.Client, method: str, url: str, *, what: str, ca_flag: str,
             fail: type[CLIError], max_bytes: int = MAX_RESPONSE_BYTES,
             deadline: float = DEADLINE_SECONDS, **request: Any) -> Answer:
    """Send one request and read its answer within `max_bytes` and `deadline` seconds.

    `what` names the server for messages ("the identity provider (OIDC
    discovery)"), `ca_flag` the flag that fixes a TLS failure. Every failure
    to get an answer raises `fail`; `request` goes to httpx (data=, json=,
    headers=).
    """
    stop = threading.Event()
    outcome: list[Answer | BaseException] = []

    def work() -> None:
        try:
            outcome.append(_read(http, method, url, what=what, ca_flag=ca_flag, fail=fail,
                                 max_bytes=max_bytes, stop=stop, request=request))
        except BaseException as exc:  # handed to the caller's thread, raised there
            outcome.append(exc)

    worker = threading.Thread(target=work, name="pinniped-http", daemon=True)
    worker.start()
    worker.join(deadline)
    if not outcome:
        stop.set()
        raise fail(f"{what} at {host_of(url)} did not finish answering within {deadline:g} s, "
                   "so pinniped gave up. Check that the server is healthy and reachable "
                   "quickly from here, then try again.")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _read(http: httpx.Client, method: str, url: str, *, what: str, ca_flag: str,
          fail: type[CLIError], max_bytes: int, stop: threading.Event,
          request: dict[str, Any]) -> Answer:
    import httpx

    headers = {"Accept": "application/json", **request.pop("headers", {}),
               "Accept-Encoding": "identity"}
    too_big = (f"{what} at {host_of(url)} sent an answer of more than {max_bytes // 1024} KiB "
               "(the most pinniped reads), so pinniped stopped reading. Check that the URL "
               "points at the right server; if it does, its administrator must fix it.")
    try:
        with http.stream(method, url, headers=headers, **request) as response:
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise fail(f"{what} at {host_of(url)} answered with Content-Encoding "
                           f"{printable(encoding, 40)!r}, which pinniped did not ask for; "
                           "ask its administrator.")
            if _declared_length(response.headers) > max_bytes:
                raise fail(too_big)
            body = bytearray()
            for chunk in response.iter_bytes():  # identity encoding: the bytes as sent
                if stop.is_set():
                    raise fail(f"{what} at {host_of(url)}: gave up reading")
                if len(body) + len(chunk) > max_bytes:
                    raise fail(too_big)
                body += chunk
    except httpx.HTTPError as exc:
        raise fail(describe_transport_error(exc, what, ca_flag)) from exc
    return Answer(response.status_code, response.headers, json_object(bytes(body)))


def _declared_length(headers: Mapping[str, str]) -> int:
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0


def json_object(body: bytes) -> dict[str, Any]:
    """`body` as a JSON object, or {} when it is not JSON or not an object.

    A body within the size bound can still nest deeply enough to exhaust the
    parser's recursion limit; that is "not JSON" too, not a crash.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def host_of(url: str) -> str:
    """The host (and port) of `url`, for messages: never its path, query or user info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return printable(f"{host}:{port}" if port else host, 120)
