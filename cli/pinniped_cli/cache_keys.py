"""Which login a cached credential or session belongs to: the keys of both caches.

A key is the SHA-256 of a canonical JSON of the login options that decide
whose credential it is (and, for a credential, the cluster). The cached path
computes it on every kubectl call, so SHA-256 comes from the interpreter's
built-in implementation when it has one: `hashlib` loads OpenSSL's libcrypto,
which costs about 3 ms and 3.5 MB of every call. The digest is the same.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Protocol

    from pinniped_cli.execcredential import ClusterInfo

    class _Digest(Protocol):
        def hexdigest(self) -> str: ...


def _sha256_constructor() -> Callable[[bytes], _Digest]:
    """CPython's own SHA-256 (`_sha2` from 3.12, `_sha256` before), else hashlib's."""
    import sys  # loaded by every Python start anyway

    for name in ("_sha2", "_sha256") if sys.version_info >= (3, 12) else ("_sha256",):
        try:
            module = __import__(name)
        except ImportError:
            continue
        constructor: Callable[[bytes], _Digest] = module.sha256
        return constructor
    from hashlib import sha256

    return sha256


_SHA256 = _sha256_constructor()


def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data` in hex, without loading OpenSSL."""
    return _SHA256(data).hexdigest()


def cache_key(fields: Mapping[str, object]) -> str:
    """A stable digest of what identifies a credential (login options plus cluster)."""
    return sha256_hex(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())


def identity_fields(*, issuer: str, client_id: str, scopes: tuple[str, ...],
                    concierge_endpoint: str, authenticator: str,
                    password_user: str | None) -> dict[str, object]:
    """What decides whose credential this is: the key of both caches, nothing else."""
    fields: dict[str, object] = {
        "issuer": issuer,
        "clientID": client_id,
        "scopes": sorted(scopes),
        "conciergeEndpoint": concierge_endpoint,
        "authenticator": authenticator,
    }
    if password_user is not None:
        fields["passwordUser"] = password_user
    return fields


def credential_key(identity: Mapping[str, object], cluster: ClusterInfo | None) -> str:
    """The credential cache's key: the login's identity fields and the cluster it is for."""
    fields = dict(identity)
    fields["cluster"] = None if cluster is None else {"server": cluster.server,
                                                      "caSHA256": cluster.ca_sha256}
    return cache_key(fields)
