"""Talking to the issuer: discovery, token-endpoint grants, JWKS and revocation.

Every grant the CLI uses (authorization code, device code, password,
refresh) is a form POST to one endpoint answering with the same JSON, so
they share `token_request`, which turns OAuth errors into messages that say
what to do and never include a token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pinniped_cli.errors import LoginError
from pinniped_cli.httpclient import Answer, exchange
from pinniped_cli.redact import printable

if TYPE_CHECKING:
    import httpx

DISCOVERY_PATH = "/.well-known/openid-configuration"


#: OAuth error codes that say "not now" rather than "no" (RFC 6749 5.2, 4.1.2.1).
TRANSIENT_OAUTH_ERRORS = ("server_error", "temporarily_unavailable")


class OAuthError(LoginError):
    """The IdP answered a grant with an OAuth error code (RFC 6749 5.2)."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error


class IdPUnavailable(LoginError):
    """No answer about the request itself: the IdP could not be reached, was too slow, sent
    too much or nonsense, or said it is overloaded or failing (HTTP 429 or 5xx)."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None


@dataclass(frozen=True)
class TokenResponse:
    """A token endpoint's answer; the caller checks the ID token (a refresh may omit it)."""

    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)


class Provider:
    """One issuer, reached through one httpx client (so one TLS setup, one connection pool)."""

    def __init__(self, http: httpx.Client, issuer: str, client_id: str) -> None:
        self.http = http
        self.issuer = issuer
        self.client_id = client_id
        self._metadata: ProviderMetadata | None = None

    @property
    def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            self._metadata = self._discover()
        return self._metadata

    def _discover(self) -> ProviderMetadata:
        doc = self._get_json(self.issuer.rstrip("/") + DISCOVERY_PATH, "OIDC discovery")
        if doc.get("issuer") != self.issuer:
            raise LoginError(
                f"the issuer's discovery document names issuer "
                f"{printable(str(doc.get('issuer')))!r}, not "
                f"{self.issuer!r}. Use exactly the issuer URL your administrator gave you "
                "(trailing slashes matter).")

        def endpoint(name: str, required: bool = True) -> str | None:
            value = doc.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or urlsplit(value).scheme != "https":
                raise LoginError(f"the issuer's discovery document has no https {name}; "
                                 "ask the identity provider's administrator.")
            return value

        return ProviderMetadata(
            issuer=self.issuer,
            authorization_endpoint=str(endpoint("authorization_endpoint")),
            token_endpoint=str(endpoint("token_endpoint")),
            jwks_uri=str(endpoint("jwks_uri")),
            device_authorization_endpoint=endpoint("device_authorization_endpoint",
                                                   required=False),
            revocation_endpoint=endpoint("revocation_endpoint", required=False),
        )

    def jwks(self) -> dict[str, Any]:
        return self._get_json(self.metadata.jwks_uri, "the issuer's signing keys (JWKS)")

    def token_request(self, data: dict[str, str], what: str) -> TokenResponse:
        """POST a grant to the token endpoint; OAuthError when the IdP refuses it."""
        body = self.post_form(self.metadata.token_endpoint, {**data, "client_id": self.client_id},
                              what)
        return TokenResponse(id_token=_nonempty(body.get("id_token")),
                             refresh_token=_nonempty(body.get("refresh_token")))

    def post_form(self, url: str, data: dict[str, str], what: str) -> dict[str, Any]:
        """POST a form; OAuth error answers raise OAuthError naming the error code."""
        answer = self._exchange("POST", url, what, data=data)
        body = answer.body
        if answer.status != 200:
            error = body.get("error")
            if isinstance(error, str) and error:
                description = body.get("error_description")
                detail = f": {printable(description)}" if isinstance(description, str) else ""
                raise OAuthError(f"the identity provider refused the {what} "
                                 f"({printable(error, 60)}{detail})", error)
            raise _refusal(answer.status)(
                f"the identity provider answered the {what} with HTTP {answer.status}; try "
                "again, or ask its administrator.")
        return body

    def revoke(self, token: str, hint: str) -> bool:
        """Best effort: revoke a refresh token at logout (RFC 7009); False if not possible."""
        url = self.metadata.revocation_endpoint
        if url is None:
            return False
        try:
            self.post_form(url, {"token": token, "token_type_hint": hint,
                                 "client_id": self.client_id}, "token revocation")
        except LoginError:
            return False
        return True

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        answer = self._exchange("GET", url, what)
        if answer.status != 200:
            raise _refusal(answer.status)(
                f"fetching {what} from {url} failed with HTTP {answer.status}; check --issuer.")
        if not answer.body:
            raise IdPUnavailable(f"{what} at {url} is not a JSON object; check --issuer.")
        return answer.body

    def _exchange(self, method: str, url: str, what: str, **request: Any) -> Answer:
        return exchange(self.http, method, url, what=f"the identity provider ({what})",
                        ca_flag="--ca-bundle", fail=IdPUnavailable, **request)


def _refusal(status: int) -> type[LoginError]:
    """IdPUnavailable when an HTTP status says the IdP cannot answer now (429, 5xx), rather
    than "no"; else LoginError."""
    return IdPUnavailable if status == 429 or status >= 500 else LoginError


def _nonempty(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
