"""How the concierge names and marks the cluster objects it manages.

Usernames from an IdP can hold any character, while Kubernetes object names
must be DNS-1123 subdomains, so objects are named from a hash of the username.
The readable username is kept in an annotation (for people and for whoami),
and a `managed-by` label marks everything we may touch: the concierge refuses
to adopt, change or delete an object that does not carry it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pinniped-concierge"
USER_LABEL = "concierge.pinniped.dev/user"
SESSION_LABEL = "concierge.pinniped.dev/session"
USERNAME_ANNOTATION = "concierge.pinniped.dev/username"
EXPIRES_ANNOTATION = "concierge.pinniped.dev/expires-at"

USER_OBJECT_PREFIX = "pinniped-user-"
SESSION_PREFIX = "pinniped-session-"


def user_key(username: str) -> str:
    """128 bits of SHA-256 in hex: DNS-safe, fits a label value, collisions infeasible."""
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def user_object_name(username: str) -> str:
    """Name of the user's ServiceAccount, ClusterRole and ClusterRoleBinding (all the same)."""
    return USER_OBJECT_PREFIX + user_key(username)


def session_secret_name(session_id: str) -> str:
    return SESSION_PREFIX + session_id


def session_id_of(secret_name: str) -> str:
    return secret_name.removeprefix(SESSION_PREFIX)


def user_labels(username: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, USER_LABEL: user_key(username)}


def session_selector() -> str:
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{SESSION_LABEL}=true"


def is_managed(obj: Mapping[str, object]) -> bool:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def annotation(obj: Mapping[str, object], key: str) -> str | None:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    value = annotations.get(key) if isinstance(annotations, Mapping) else None
    return value if isinstance(value, str) else None


def metadata_field(obj: Mapping[str, object], key: str) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else None
