"""The CredentialIssuer: how clients reach a concierge, published by the concierge itself.

A cluster-scoped `CredentialIssuer` (`config.concierge.pinniped.dev/v1alpha1`)
is what `pinniped get kubeconfig --kubeconfig FILE` reads, so a user needs
nothing but a kubeconfig that can read the cluster. Field names follow
Pinniped's CredentialIssuer where the meaning is the same (`strategies`,
`frontend`, `tokenCredentialRequestInfo`); `authenticators` is ours: Pinniped
lists JWTAuthenticator objects instead, but authenticators from the
concierge's config file are no objects, and the CLI needs each one's issuer
and audience.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from pinniped_apis.authentication import DNSLabel, Issuer, SpecModel, TLSSpec


class TokenCredentialRequestInfo(SpecModel):
    server: Issuer = Field(description="The concierge's https endpoint, as clients reach it.")
    certificate_authority_data: str = Field(
        max_length=64 * 1024,
        description="Base64 of the PEM bundle that verifies the endpoint's certificate.")


class CredentialIssuerFrontend(SpecModel):
    type: Literal["TokenCredentialRequestAPI"] = "TokenCredentialRequestAPI"
    token_credential_request_info: TokenCredentialRequestInfo


class CredentialIssuerStrategy(SpecModel):
    """How this concierge issues credentials: per-user impersonation-only tokens."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["ImpersonationToken"] = "ImpersonationToken"
    status: Literal["Success", "Error"]
    reason: str = Field(max_length=256)
    message: str = Field(default="", max_length=4096)
    last_update_time: str = Field(description="RFC 3339; when the concierge last wrote this.")
    frontend: CredentialIssuerFrontend | None = None


class PublishedAuthenticator(SpecModel):
    """One authenticator that logins can use right now."""

    model_config = ConfigDict(extra="ignore")

    name: DNSLabel = Field(description="What clients put in `spec.authenticator.name`.")
    kind: Literal["JWTAuthenticator"] = "JWTAuthenticator"
    issuer: Issuer = Field(description="The OIDC issuer clients log in at.")
    audience: str = Field(min_length=1, max_length=256,
                          description="The OIDC client ID clients use (the tokens' `aud`).")
    source: Literal["config", "cluster"] = Field(
        description="Whether it comes from the concierge's config file or a JWTAuthenticator.")
    tls: TLSSpec | None = Field(
        default=None,
        description="How clients trust the issuer's https; omitted: the system trust store.")


class CredentialIssuerStatus(SpecModel):
    model_config = ConfigDict(extra="ignore")

    strategies: tuple[CredentialIssuerStrategy, ...] = Field(default=(), max_length=8)
    authenticators: tuple[PublishedAuthenticator, ...] = Field(default=(), max_length=256)


class CredentialIssuerSpec(SpecModel):
    """Nothing to configure: the concierge writes the status."""
