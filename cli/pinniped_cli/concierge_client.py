"""The concierge's three calls: trade an ID token for a cluster credential, whoami, logout.

The wire shapes are the models in `pinniped_apis`, shared with the server, and every
answer is validated with them before it is used. whoami and
logout carry the cluster credential as the bearer token, so the concierge
answers about (or revokes) exactly the session that credential belongs to.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from pinniped_apis import wire
from pinniped_cli.errors import ConciergeError
from pinniped_cli.httpclient import exchange
from pinniped_cli.redact import printable, status_message

if TYPE_CHECKING:
    import httpx


class ConciergeClient:
    def __init__(self, http: httpx.Client, endpoint: str, authenticator: str) -> None:
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._authenticator = authenticator

    def exchange(self, id_token: str) -> wire.ClusterCredential:
        """POST a TokenCredentialRequest; LoginRejected when the concierge says no."""
        try:
            request = wire.TokenCredentialRequest.create(token=id_token,
                                                         authenticator_name=self._authenticator)
        except wire.WireError as exc:
            raise ConciergeError(_unsendable(exc)) from None
        body = self._post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire(), None, "login")
        try:
            return wire.parse_credential_response(body)
        except wire.WireError as exc:
            raise ConciergeError(f"the concierge's answer is malformed ({exc}); check "
                                 "--concierge-endpoint points at a pinniped concierge.") from exc

    def whoami(self, credential: str) -> tuple[wire.Identity, dt.datetime | None]:
        body = self._post(wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), credential, "whoami")
        try:
            return wire.parse_whoami_response(body)
        except wire.WireError as exc:
            raise ConciergeError(f"the concierge's whoami answer is malformed ({exc}).") from exc

    def logout(self, credential: str) -> bool:
        """End the credential's session; False when it had already ended (or was invalid)."""
        try:
            body = self._post(wire.LOGOUT_REQUEST_PATH, wire.logout_request(), credential,
                              "logout")
        except _Unauthorized:
            return False
        try:
            return wire.parse_logout_response(body)
        except wire.WireError as exc:
            raise ConciergeError(f"the concierge's logout answer is malformed ({exc}).") from exc

    def _post(self, path: str, payload: dict[str, Any], bearer: str | None,
              what: str) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        answer = exchange(self._http, "POST", self._endpoint + path,
                          what=f"the concierge at {self._endpoint}",
                          ca_flag="--concierge-ca-bundle", fail=ConciergeError, json=payload,
                          headers=headers)
        body = answer.body
        status = answer.status
        message = status_message(body)
        if status in (429, 503):  # overloaded, or rate limiting this address
            retry = printable(answer.headers.get("Retry-After", "a few"), 20)
            raise ConciergeError(f"the concierge is temporarily unavailable ({message}); "
                                 f"retry in {retry} seconds.")
        if status == 401:
            raise _Unauthorized(f"the concierge refused the {what} ({message}): your "
                                "cluster credential is no longer valid. Run `pinniped logout`, "
                                "then run kubectl again to log in.")
        if status == 404:
            raise ConciergeError(f"the concierge at {self._endpoint} has no {what} API (HTTP "
                                 "404); check --concierge-endpoint.")
        if status >= 400 or not body:
            raise ConciergeError(f"the concierge answered the {what} with HTTP {status} "
                                 f"({message}); check the pinniped flags, or ask the "
                                 "cluster administrator.")
        return body


class _Unauthorized(ConciergeError):
    """The concierge did not accept the bearer credential (HTTP 401)."""


def _unsendable(exc: wire.WireError) -> str:
    """Why a login cannot be sent at all, and who can fix it (the error never quotes a token)."""
    if exc.field == "spec.token":
        return (f"the identity provider's ID token cannot be sent to the concierge ({exc}). "
                "Ask the identity provider's administrator to make ID tokens smaller, e.g. "
                "with fewer groups in them.")
    return (f"the login cannot be sent to the concierge ({exc}); check "
            "--concierge-authenticator.")
