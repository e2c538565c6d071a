"""Per-user objects as the concierge makes them, and the two kinds of user the scale figure
times: a plain user reading through a RoleBinding, and a logged-in user acting through
impersonation.

Shapes come from the concierge's own code (`naming`, `impersonation_rules`),
so a change to what the concierge creates changes what is measured. Objects
are labelled as a concierge in another namespace would label them, so that
no running concierge adopts, watches or cleans them up.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import httpx

from pinniped_apis.identity import Identity, impersonation_headers
from pinniped_concierge import naming
from pinniped_concierge.userobjects import impersonation_rules
from tests.benchmark import kube_http
from tests.benchmark.kube_http import RBAC, Obj

#: The concierge namespace the scale users' objects say they belong to.
SCALE_NAMESPACE = "bench-users"
#: Where the plain user reads, and the logged-in user's group may read.
APP_NAMESPACE = "bench-app"
READER_GROUP = "corp:bench-readers"
GROUPS_PER_USER = 3


def identity(index: int) -> Identity:
    """User `index`, with three groups as the issue's table has them (one shared, two own)."""
    return Identity(f"corp:user-{index}@example.com",
                    (READER_GROUP, f"corp:team-{index % 100}", f"corp:user-{index}-group"))


def objects(user: Identity, namespace: str = SCALE_NAMESPACE) -> list[tuple[str, Obj]]:
    """(path, body) of the user's ServiceAccount, ClusterRole and ClusterRoleBinding."""
    name = naming.user_object_name(user.username, namespace)
    meta = {"name": name, "labels": naming.user_labels(user.username, namespace),
            "annotations": {naming.USERNAME_ANNOTATION: user.username}}
    rbac = "rbac.authorization.k8s.io"
    return [
        (f"/api/v1/namespaces/{namespace}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
          "automountServiceAccountToken": False}),
        (f"{RBAC}/clusterroles",
         {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": meta,
          "rules": impersonation_rules(user)}),
        (f"{RBAC}/clusterrolebindings",
         {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": meta,
          "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name},
          "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
    ]


async def create_user(http: httpx.AsyncClient, user: Identity) -> None:
    for path, body in objects(user):
        await kube_http.create(http, path, body, exist_ok=True)


@dataclass(frozen=True)
class Caller:
    """Who sends a timed request: a bearer token and the impersonation headers to send."""

    token: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = ()


async def setup_app_namespace(http: httpx.AsyncClient) -> Caller:
    """bench-app: a ConfigMap `hello`, read by ServiceAccount `reader` and by READER_GROUP
    through one Role and RoleBinding; returns the plain reader."""
    await kube_http.create(http, "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}},
        exist_ok=True)
    await kube_http.create(http, "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SCALE_NAMESPACE}},
        exist_ok=True)
    base = f"/api/v1/namespaces/{APP_NAMESPACE}"
    await kube_http.create(http, f"{base}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello"},
        "data": {"who": "world"}}, exist_ok=True)
    await kube_http.create(http, f"{base}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        exist_ok=True)
    rbac = f"{RBAC}/namespaces/{APP_NAMESPACE}"
    await kube_http.create(http, f"{rbac}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
        exist_ok=True)
    await kube_http.create(http, f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "configmap-readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": APP_NAMESPACE},
                     {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                      "name": READER_GROUP}]}, exist_ok=True)
    issued = await kube_http.create(http, kube_http.token_path(APP_NAMESPACE, "reader"), {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}})
    return Caller(str(issued["status"]["token"]))


async def log_in(http: httpx.AsyncClient, index: int,
                 namespace: str = SCALE_NAMESPACE) -> Caller:
    """What a login leaves a user with, made the concierge's way: the user's objects, a
    session Secret, a token bound to it, and the user's impersonation headers."""
    user = identity(index)
    await create_user(http, user)
    name = naming.user_object_name(user.username, namespace)
    secret = await kube_http.create(http, kube_http.secret_path(namespace), {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": naming.session_secret_name(secrets.token_hex(8))}})
    issued = await kube_http.create(http, kube_http.token_path(namespace, name),
                                    kube_http.bound_token_request(
                                        secret["metadata"]["name"], secret["metadata"]["uid"]))
    headers = tuple((header, value) for header, values in impersonation_headers(user).items()
                    for value in values)
    return Caller(str(issued["status"]["token"]), headers)
