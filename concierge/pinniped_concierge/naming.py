"""How the concierge names and marks the cluster objects it manages.

Usernames from an IdP can hold any character, while Kubernetes object names
must be DNS-1123 subdomains, so objects are named from a hash of the username.
The hash also covers the concierge's namespace: ClusterRoles and
ClusterRoleBindings are cluster-wide, and two concierges in different
namespaces (say, a staging and a production one on the same cluster) must not
fight over one user's objects. The readable username is kept in an annotation
(for people and for whoami), the namespace in a label (so a concierge can
watch just its own objects), and a `managed-by` label marks everything we may
touch: the concierge refuses to adopt, change or delete an object that does
not carry it, or that records another namespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pinniped_apis import rfc3339

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pinniped-concierge"
USER_LABEL = "concierge.pinniped.dev/user"
NAMESPACE_LABEL = "concierge.pinniped.dev/namespace"
SESSION_LABEL = "concierge.pinniped.dev/session"
USERNAME_ANNOTATION = "concierge.pinniped.dev/username"
EXPIRES_ANNOTATION = "concierge.pinniped.dev/expires-at"
#: On a session Secret: when its login started it, to the microsecond (RFC 3339). The
#: creationTimestamp has whole seconds, and the session cap must end the oldest of the many
#: sessions a storm of logins starts within one second, never the one a login just made.
STARTED_ANNOTATION = "concierge.pinniped.dev/started-at"
#: `session_started`'s form: fixed width, so that it sorts in time order as text.
STARTED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: On a user's ClusterRole: when the ID token that last set its groups was issued (RFC 3339).
GROUPS_ISSUED_AT_ANNOTATION = "concierge.pinniped.dev/groups-issued-at"
#: On a user's ClusterRole: the user's last login, written at most once an hour (RFC 3339).
LAST_LOGIN_ANNOTATION = "concierge.pinniped.dev/last-login-at"

#: On a session Secret minted while the user had approved elevations: "true" (select them).
ELEVATED_LABEL = "concierge.pinniped.dev/elevated"
#: On such a session Secret: the ids of those ElevationRequests, comma-separated; when one
#: ends, the sessions naming it are ended.
ELEVATIONS_ANNOTATION = "concierge.pinniped.dev/elevations"
USER_OBJECT_PREFIX = "pinniped-user-"
SESSION_PREFIX = "pinniped-session-"


def user_key(username: str, namespace: str) -> str:
    """128 bits of SHA-256 in hex: DNS-safe, fits a label value, collisions infeasible.

    A namespace is a DNS label and cannot hold '/', so "namespace/username"
    is unambiguous.
    """
    material = f"{namespace}/{username}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(material).hexdigest()[:32]


def user_object_name(username: str, namespace: str) -> str:
    """Name of the user's ServiceAccount, ClusterRole and ClusterRoleBinding (all the same)."""
    return USER_OBJECT_PREFIX + user_key(username, namespace)


def session_secret_name(session_id: str) -> str:
    return SESSION_PREFIX + session_id


def session_id_of(secret_name: str) -> str:
    return secret_name.removeprefix(SESSION_PREFIX)


def user_labels(username: str, namespace: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, NAMESPACE_LABEL: namespace,
            USER_LABEL: user_key(username, namespace)}


def owned_selector(namespace: str) -> str:
    """Everything a concierge in `namespace` manages (and nothing another concierge does)."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{NAMESPACE_LABEL}={namespace}"


def session_selector() -> str:
    """Session Secrets; they live in the concierge's own namespace, so no namespace label."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{SESSION_LABEL}=true"


def user_session_selector(username: str, namespace: str) -> str:
    return user_key_session_selector(user_key(username, namespace))


def user_key_session_selector(key: str) -> str:
    """The session Secrets of the user whose `user_key` is `key`."""
    return f"{session_selector()},{USER_LABEL}={key}"


def is_managed(obj: Mapping[str, object]) -> bool:
    return label(obj, MANAGED_BY_LABEL) == MANAGED_BY


def is_owned(obj: Mapping[str, object], namespace: str) -> bool:
    """Managed by a concierge, and by the one in `namespace`."""
    return is_managed(obj) and label(obj, NAMESPACE_LABEL) == namespace


def label(obj: Mapping[str, object], key: str) -> str | None:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    value = labels.get(key) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else None


def annotation(obj: Mapping[str, object], key: str) -> str | None:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    value = annotations.get(key) if isinstance(annotations, Mapping) else None
    return value if isinstance(value, str) else None


def session_started(obj: Mapping[str, object]) -> str:
    """When a session started, as text that sorts in time order (UTC, microseconds):
    `STARTED_ANNOTATION`, else the creationTimestamp; "" when neither is a time."""
    parsed = (rfc3339.parse_time(annotation(obj, STARTED_ANNOTATION))
              or rfc3339.parse_time(metadata_field(obj, "creationTimestamp")))
    return parsed.strftime(STARTED_FORMAT) if parsed is not None else ""


def metadata_field(obj: Mapping[str, object], key: str) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else None


def groups_from_rules(rules: object) -> tuple[str, ...]:
    """The groups a ClusterRole of ours allows impersonating (the whoami view)."""
    if not isinstance(rules, list):
        return ()
    groups: list[str] = []
    for rule in rules:
        if isinstance(rule, dict) and rule.get("resources") == ["groups"]:
            groups.extend(n for n in rule.get("resourceNames") or [] if isinstance(n, str))
    return tuple(groups)
