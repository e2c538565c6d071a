"""Who a cluster credential acts as: the values both sides compute with.

Plain frozen dataclasses, not models: the concierge hashes and compares them,
the CLI caches them, and neither needs pydantic for that. `pinniped_apis.models`
converts them to and from their wire documents.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterCredential:
    """The short-lived token the cluster accepts, and the identity it may act as."""

    token: str = field(repr=False)
    expiration: dt.datetime
    identity: Identity
    #: Groups of `identity` granted by an approved elevation (`pinniped_apis.elevation`), not
    #: by the ID token; the expiration is at most the earliest of those elevations' ends.
    elevated_groups: tuple[str, ...] = ()
    #: The user has an elevation pending or active: the plugin asks the concierge for its state
    #: before handing this credential out again (`ELEVATION_STATE_PATH`).
    check_elevation: bool = False

    @property
    def impersonation_headers(self) -> dict[str, list[str]]:
        return impersonation_headers(self.identity)


def impersonation_headers(identity: Identity) -> dict[str, list[str]]:
    """The headers that make the apiserver act as `identity` (kubectl sends them from `as:`)."""
    headers = {"Impersonate-User": [identity.username]}
    if identity.groups:
        headers["Impersonate-Group"] = list(identity.groups)
    return headers
