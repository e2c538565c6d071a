"""The browser login: authorization code with PKCE S256 and a loopback redirect (RFC 8252).

The listener on 127.0.0.1 starts before the browser is opened: Python's
webbrowser runs a `BROWSER` command and waits for it to exit, and a command
that completes the login by itself would otherwise hit a port nobody is
listening on. The browser is opened from a daemon thread for the same
reason (a real browser command may not return until the window closes).
The URL is printed too, so a person can paste it when no browser opens.

The listener answers each connection in its own thread, with a time limit
on each: anything can connect to a loopback port, and one idle connection
must neither hold up the browser's real callback nor keep close() (and so
the login lock) waiting. Only a callback carrying this login's state counts;
others (a stale tab, a forged request) get a 403 and the login keeps waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pinniped_cli.errors import LoginError
from pinniped_cli.oidc.provider import Provider, TokenResponse
from pinniped_cli.redact import printable

CALLBACK_PATH = "/callback"
#: How long one connection to the listener may take to send its request.
CONNECTION_TIMEOUT = 5.0
#: How long close() waits for the listener's loop to stop.
CLOSE_TIMEOUT = 2.0

_DONE_PAGE = (b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pinniped</title></head>"
              b"<body><h1>%s</h1><p>%s</p></body></html>")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


@dataclass(frozen=True)
class CallbackResult:
    code: str | None = None
    error: str | None = None


class CallbackListener:
    """A one-shot HTTP listener on 127.0.0.1 that takes the IdP's redirect for one `state`."""

    def __init__(self, port: int, state: str) -> None:
        self._state = state
        self._results: queue.Queue[CallbackResult] = queue.Queue()
        self._answered = threading.Event()
        self._lock = threading.Lock()
        self._refused = 0
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        except OSError as exc:
            raise LoginError(f"cannot listen for the browser's callback on 127.0.0.1:{port} "
                             f"({exc.strerror}); pick a free --listen-port or leave it out for "
                             "a random one.") from exc
        self._server.daemon_threads = True  # a hung connection never delays our exit
        self.port = int(self._server.server_address[1])
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> str:
        """The authorization code, or LoginError (timeout, IdP error, no code)."""
        try:
            result = self._results.get(timeout=timeout)
        except queue.Empty:
            refused = ""
            if self._refused:
                refused = (f" ({self._refused} callback(s) with a state that does not match this "
                           "login, from a stale browser tab or a forged request, were refused.)")
            raise LoginError(
                f"no browser login finished within {timeout:g}s.{refused} Run the command again "
                "and complete the login in the browser (or open the printed link yourself); on "
                "a machine without a browser use --flow device.") from None
        if result.error is not None:
            raise LoginError(result.error)
        assert result.code is not None
        return result.code

    def close(self) -> None:
        """Stop listening, waiting at most CLOSE_TIMEOUT for the serving loop."""
        if self._thread.is_alive():
            stopper = threading.Thread(target=self._server.shutdown, daemon=True)
            stopper.start()
            stopper.join(CLOSE_TIMEOUT)
        self._server.server_close()

    def _deliver(self, query: dict[str, str]) -> tuple[int, bytes]:
        state = query.get("state", "")
        if not hmac.compare_digest(state.encode(), self._state.encode()):
            with self._lock:
                self._refused += 1
            return 403, _page("Login refused", "This is not the login pinniped is waiting for "
                              "(the state parameter does not match). Use the newest link.")
        with self._lock:
            if self._answered.is_set():
                return 409, _page("Already done", "This login has already finished.")
            self._answered.set()
        if "error" in query:
            description = printable(query.get("error_description", ""))
            self._results.put(CallbackResult(error=(
                f"the identity provider ended the login with {printable(query['error'], 60)}"
                f"{': ' + description if description else ''}. Run the command again.")))
            return 400, _page("Login failed", "The identity provider refused the login.")
        code = query.get("code")
        if not code:
            self._results.put(CallbackResult(error=(
                "the browser callback carried no authorization code. Run the command again.")))
            return 400, _page("Login failed", "No authorization code.")
        self._results.put(CallbackResult(code=code))
        return 200, _page("Login succeeded", "You can close this tab and return to the terminal.")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CONNECTION_TIMEOUT  # socket timeout: an idle connection is dropped

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != CALLBACK_PATH:
                    self._reply(404, _page("Not found", "Nothing here."))
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                self._reply(*listener._deliver(query))

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the request line carries the authorization code."""

        return Handler


def _page(title: str, text: str) -> bytes:
    return _DONE_PAGE % (title.encode(), text.encode())


@dataclass(frozen=True)
class BrowserLogin:
    tokens: TokenResponse
    nonce: str


def login(provider: Provider, *, scopes: tuple[str, ...], listen_port: int | None,
          skip_browser: bool, timeout: float, say: Callable[[str], None],
          open_browser: Callable[[str], bool]) -> BrowserLogin:
    """Run the browser login and exchange the code; the caller verifies the ID token's nonce."""
    metadata = provider.metadata
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    listener = CallbackListener(listen_port or 0, state)
    listener.start()
    try:
        url = metadata.authorization_endpoint + ("&" if "?" in metadata.authorization_endpoint
                                                 else "?") + urlencode({
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": listener.redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        })
        say(f"Log in by visiting this link (waiting up to {timeout:g}s):\n\n    {url}\n")
        if not skip_browser:
            threading.Thread(target=_open, args=(open_browser, url, say), daemon=True).start()
        code = listener.wait(timeout)
    finally:
        listener.close()
    tokens = provider.token_request({
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": listener.redirect_uri,
        "code_verifier": verifier,
    }, "authorization code exchange")
    return BrowserLogin(tokens=tokens, nonce=nonce)


def _open(open_browser: Callable[[str], bool], url: str, say: Callable[[str], None]) -> None:
    try:
        opened = open_browser(url)
    except Exception as exc:  # a broken BROWSER setting must not hide the printed link
        say(f"could not start a browser ({type(exc).__name__}); open the link above yourself.")
        return
    if not opened:
        say("could not open a browser; open the link above yourself.")
