"""The audit log: one JSON line per request, and never a token.

Clients of a failed login only learn "authentication failed", so this log is
where an operator finds out why. Tokens appear only as `token_digest`, a short
SHA-256 prefix: enough to correlate two lines about the same token, useless for
replaying it.

Each line has: `time` (RFC 3339 UTC, milliseconds), `request` (login, whoami,
logout), `outcome` (success, failure, error), `reason` (an `errors.Reason`),
`authenticator`, `username`, `groups`, `session`, `client` (address:port),
`tokenHash`, `httpStatus`, `kubeApiCalls` (how many Kubernetes API calls the
request cost, to keep the warm path honest) and, for failures, `detail` (a
short human explanation such as "expired 40s ago", never token material).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


def token_digest(token: str) -> str:
    """A correlation handle for a token: 12 hex digits of its SHA-256."""
    return "sha256:" + short_digest(token)


def short_digest(value: str) -> str:
    """12 hex digits of the SHA-256 of `value`: to correlate what must not be logged as it is
    (a token, or text from a client that could forge log lines)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass
class AuditEvent:
    request: str
    client: str
    outcome: str = "error"
    reason: str = "internal_error"
    authenticator: str | None = None
    username: str | None = None
    groups: Sequence[str] = ()
    session: str | None = None
    token_hash: str | None = None
    http_status: int = 500
    kube_api_calls: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self, when: dt.datetime) -> str:
        record: dict[str, object] = {
            "time": when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "request": self.request,
            "outcome": self.outcome,
            "reason": self.reason,
            "authenticator": self.authenticator,
            "username": self.username,
            "groups": list(self.groups),
            "session": self.session,
            "client": self.client,
            "tokenHash": self.token_hash,
            "httpStatus": self.http_status,
            "kubeApiCalls": self.kube_api_calls,
        }
        record.update(self.extra)
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class AuditLog:
    """Appends audit lines to a stream; one lock so concurrent lines never interleave."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._owned = False

    @classmethod
    def open(cls, path: Path | None) -> AuditLog:
        """Append to `path` (created 0600: it names people), or standard output when None."""
        if path is None:
            return cls(sys.stdout)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = cls(os.fdopen(fd, "a", encoding="utf-8", buffering=1))
        log._owned = True
        return log

    def record(self, event: AuditEvent) -> None:
        line = event.to_json(dt.datetime.now(dt.UTC))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
