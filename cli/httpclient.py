"""HTTPS clients for the IdP and the concierge (httpx, imported only when a login needs it)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

TIMEOUT_SECONDS = 30.0


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
