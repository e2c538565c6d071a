"""The password login for CI (RFC 6749 4.3): credentials from the environment, never flags.

Flags end up in shell history and in `ps` output; PINNIPED_USERNAME and
PINNIPED_PASSWORD do not, and CI systems already keep secrets in variables.
"""

from __future__ import annotations

from collections.abc import Mapping

from pinniped_cli.errors import LoginError, UsageError
from pinniped_cli.login_options import PASSWORD_VAR, USERNAME_VAR
from pinniped_cli.oidc.provider import OAuthError, Provider, TokenResponse


def credentials_from(env: Mapping[str, str]) -> tuple[str, str] | None:
    username, password = env.get(USERNAME_VAR), env.get(PASSWORD_VAR)
    return (username, password) if username and password else None


def login(provider: Provider, *, scopes: tuple[str, ...], env: Mapping[str, str]) -> TokenResponse:
    creds = credentials_from(env)
    if creds is None:
        raise UsageError(f"--flow password needs {USERNAME_VAR} and {PASSWORD_VAR} in the "
                         "environment; set both, or choose another --flow.")
    username, password = creds
    try:
        return provider.token_request({"grant_type": "password", "username": username,
                                       "password": password, "scope": " ".join(scopes)},
                                      "password login")
    except OAuthError as exc:
        if exc.error in ("invalid_grant", "unauthorized_client", "invalid_request"):
            raise LoginError(f"the identity provider refused the password login for "
                             f"{username!r} ({exc.error}); check {USERNAME_VAR} and "
                             f"{PASSWORD_VAR}, and that the client allows the password grant."
                             ) from exc
        raise
