"""Short fingerprints of secrets, so messages can correlate tokens without showing them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def fingerprint(secret: str) -> str:
    """The first 12 hex digits of SHA-256: enough to tell tokens apart, useless to an attacker."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def printable(text: str, limit: int = 200) -> str:
    """`text` from outside (an IdP, a callback URL) made safe to show on a terminal.

    Control characters are dropped so a crafted error_description cannot
    inject terminal escape sequences; long text is cut at `limit`.
    """
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def status_message(body: Mapping[str, object], limit: int = 300) -> str:
    """The `message` of a Kubernetes Status (what the concierge sends on errors), made safe
    to print; "no details" without one."""
    message = body.get("message")
    return printable(message, limit) if isinstance(message, str) and message else "no details"
