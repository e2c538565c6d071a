"""Logging in at the running concierge as many distinct users, and reading what it recorded.

ID tokens come from the stack's `MintingIssuer` (the concierge trusts it as
the `minted` authenticator), so a thousand users need no thousand IdP
logins. Tokens are minted before a batch starts: minting is the IdP's work,
not the concierge's, and is never timed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pinniped_apis import wire
from tests.benchmark.load import Job
from tests.benchmark.stack import Stack
from tests.benchmark.timed_http import KeepAlive


def email(kind: str, index: int) -> str:
    return f"{kind}-{index}@example.com"


def username(stack: Stack, kind: str, index: int) -> str:
    """The name the concierge maps `email(kind, index)` to (the `minted:` prefix)."""
    return f"minted:{email(kind, index)}"


def groups(index: int) -> list[str]:
    """Three groups, as the scale figure's users have."""
    return ["devs", f"team-{index % 100}", f"user-{index}-group"]


def login_body(stack: Stack, kind: str, index: int) -> dict[str, Any]:
    """A TokenCredentialRequest for user (`kind`, `index`) with a freshly minted ID token."""
    token = stack.minting.mint({"groups": groups(index)}, email=email(kind, index))
    return wire.TokenCredentialRequest.create(
        token=token, authenticator_name=stack.minted_authenticator).to_wire()


def login_job(body: dict[str, Any]) -> Job:
    """One login; it must come back with a credential (a failure is an error, not a sample)."""

    def job(connection: KeepAlive) -> None:
        answer = json.loads(connection.expect("POST", wire.TOKEN_CREDENTIAL_REQUEST_PATH, body))
        credential = (answer.get("status") or {}).get("credential") or {}
        if not credential.get("token"):
            raise RuntimeError(f"login refused: {(answer.get('status') or {}).get('message')}")

    return job


def login_jobs(stack: Stack, kind: str, indexes: Sequence[int]) -> list[Job]:
    return [login_job(login_body(stack, kind, index)) for index in indexes]


def audit_mark(stack: Stack) -> int:
    """Where the concierge's audit log ends now (pass to `logins_since`)."""
    return len(stack.concierge.audit_lines())


def logins_since(stack: Stack, mark: int) -> list[dict[str, Any]]:
    """The login lines the concierge wrote after `mark`, each one checked to be a success."""
    lines = [line for line in stack.concierge.audit_lines()[mark:]
             if line.get("request") == "login"]
    failed = [line for line in lines if line.get("outcome") != "success"]
    if failed:
        raise RuntimeError(f"{len(failed)} logins did not succeed; first: reason "
                           f"{failed[0].get('reason')}, {failed[0].get('detail')}")
    return lines
