"""The authenticators logins may use right now: swapped whole, read without a lock.

File authenticators are fixed at start; JWTAuthenticator objects come and go
(`cluster_authenticators`). Each change publishes a new immutable view, and a
login reads whichever view is current when it starts: replacing one attribute
is atomic, so the hot path takes no lock and never sees half an update. The
view also says why a known JWTAuthenticator is not usable, so that a login
naming it gets its own audit reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol

from pinniped_concierge.identity import IdentityMapper


class TokenVerifier(Protocol):
    @property
    def name(self) -> str: ...

    async def verify(self, token: str) -> dict[str, object]: ...

    async def ready(self) -> bool: ...


@dataclass(frozen=True)
class Authenticator:
    verifier: TokenVerifier
    mapper: IdentityMapper
    #: What the CredentialIssuer publishes about it.
    issuer: str = ""
    audience: str = ""
    source: Literal["config", "cluster"] = "config"
    #: Base64 of the PEM bundle that verifies the issuer's https; None: the system store.
    issuer_ca_data: str | None = None



@dataclass(frozen=True)
class _View:
    usable: Mapping[str, Authenticator]
    #: JWTAuthenticator objects that exist but are not used, with a short why.
    refused: Mapping[str, str]


class AuthenticatorSet:
    """The authenticators logins may use right now, the file's and the Ready objects'.

    Logins read it on every request while the reconciler replaces the cluster part
    from another task: one immutable view swapped whole (`publish`) lets the hot
    path read without locks and never see half an update. It also remembers why an
    object is not used, so a login naming one gets that reason, not "unknown".
    """

    def __init__(self, file: Mapping[str, Authenticator]) -> None:
        self.file: Mapping[str, Authenticator] = MappingProxyType(dict(file))
        self._view = _View(self.file, MappingProxyType({}))
        self._listeners: list[Callable[[], None]] = []

    @property
    def usable(self) -> Mapping[str, Authenticator]:
        """Every usable authenticator: the file's, then the Ready JWTAuthenticators."""
        return self._view.usable

    def lookup(self, name: str) -> tuple[Authenticator | None, str | None]:
        """The authenticator called `name`, or None and why not (None if nobody knows it)."""
        view = self._view
        return view.usable.get(name), view.refused.get(name)

    def publish(self, cluster: Mapping[str, Authenticator], refused: Mapping[str, str]) -> None:
        """Make `cluster` (the Ready objects) usable beside the file's, in one swap.

        A name in the file always means the file's authenticator; listeners
        (the CredentialIssuer) hear of it when the usable set changed.
        """
        usable = dict(self.file) | {n: a for n, a in cluster.items() if n not in self.file}
        changed = usable != dict(self._view.usable)
        self._view = _View(MappingProxyType(usable), MappingProxyType(dict(refused)))
        if changed:
            for listener in self._listeners:
                listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
