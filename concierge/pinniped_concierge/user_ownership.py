"""Whose per-user object is this? The one test the deleting code paths share.

`revoke-user` and the idle-user clean-up delete ServiceAccounts,
ClusterRoles, ClusterRoleBindings and session Secrets. A label selector
finds candidates, but labels are easy to copy, so nothing is deleted unless
every mark agrees: managed by a concierge, for this namespace, a username
annotation, the user label is that username's key, and the name is the one
`naming` derives from it. An object with our prefix and labels that fails
any of these is someone else's, and stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinniped_concierge import naming
from pinniped_concierge.kubeapi import Kind, KubeAPI, NotFound

#: In this order: the ServiceAccount first, since that ends every token of it at once.
USER_OBJECT_KINDS = (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE_BINDING, Kind.CLUSTER_ROLE)


def user_object_owner(obj: Mapping[str, Any], namespace: str) -> str | None:
    """The username a ServiceAccount, ClusterRole or ClusterRoleBinding of ours is for."""
    username = _username(obj, namespace)
    if username is None or naming.metadata_field(obj, "name") != naming.user_object_name(
            username, namespace):
        return None
    return username


def session_owner(secret: Mapping[str, Any], namespace: str) -> str | None:
    """The username a session Secret of ours belongs to."""
    username = _username(secret, namespace)
    name = naming.metadata_field(secret, "name") or ""
    if (username is None or naming.label(secret, naming.SESSION_LABEL) != "true"
            or not name.startswith(naming.SESSION_PREFIX)):
        return None
    return username


def _username(obj: Mapping[str, Any], namespace: str) -> str | None:
    username = naming.annotation(obj, naming.USERNAME_ANNOTATION)
    if username is None or not naming.is_owned(obj, namespace):
        return None
    if naming.label(obj, naming.USER_LABEL) != naming.user_key(username, namespace):
        return None
    return username


async def delete_user_objects(kube: KubeAPI, namespace: str, username: str,
                              deleted: list[str], not_ours: list[str]) -> None:
    """Delete `username`'s ServiceAccount, ClusterRoleBinding and ClusterRole where they are
    ours, appending to `deleted` and `not_ours` as it goes (so a caller knows how far it got
    when a call fails). Each delete is conditional on the uid just read: `Conflict` means
    the object was made again meanwhile, by a login under way."""
    name = naming.user_object_name(username, namespace)
    for kind in USER_OBJECT_KINDS:
        where = namespace if kind == Kind.SERVICE_ACCOUNT else None
        try:
            obj = await kube.read(kind, name, where)
        except NotFound:
            continue
        if user_object_owner(obj, namespace) != username:
            not_ours.append(f"{kind} {name}")
            continue
        try:
            await kube.delete(kind, name, where, uid=naming.metadata_field(obj, "uid"))
        except NotFound:
            continue
        deleted.append(f"{kind} {name}")
