"""HTTPS clients for the IdP and the concierge (httpx, imported only when a login needs it)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

TIMEOUT_SECONDS = 30.0
#: Answers from the IdP or the concierge are a few KiB; a bigger one is not read as JSON.
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


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object, or {} when it is too big, not JSON or not an object.

    Callers turn {} into an error that names what they expected, so one reader
    serves both the IdP and the concierge.
    """
    if len(response.content) > MAX_RESPONSE_BYTES:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
