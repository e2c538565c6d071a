"""The few Kubernetes API operations the concierge needs, behind one small interface.

Objects go in and out as plain Kubernetes JSON dicts, so the per-user logic can
be tested against an in-memory fake with the same shapes, and the real
implementation stays a thin adapter over the official `kubernetes` client.

The calls every login makes (create the session Secret, the TokenRequest), the
TokenReview, and the read and replace of a user's ClusterRole (when their
groups change) go over `kube_http` instead: plain JSON over one keep-alive
connection per worker thread, with the same server, TLS and credentials. The
official client's model conversion and urllib3 cost about 1 ms of CPU per
login more, a third of the budget (docs/performance.md). A kubeconfig
`kube_http` cannot honour exactly (a proxy, say) keeps the official client for
those calls too. Everything else (watches, lists, deletes, leases, custom
objects, ServiceAccounts and ClusterRoleBindings) uses the official client.

Both are blocking; every call runs in a worker thread of our own pool
(`API_THREADS`, matched by the connection pools), so a slow apiserver never
stalls the event loop and other logins keep being served. asyncio's default
pool would give us min(32, cores + 4) threads, 6 on a 2-core node, and the
logins would queue for them rather than for the apiserver.

Errors are translated at this boundary: `NotFound` and `Conflict` are ordinary
outcomes the callers handle; an unreachable or overloaded apiserver becomes
`errors.Unavailable` (HTTP 503); anything else (e.g. our RBAC is missing a
verb) becomes `errors.ServerError`, with the apiserver's message but never a
request body, because some of our bodies carry tokens. A 403 for a call that
has succeeded before is `Unavailable` instead: a restarting apiserver answers
before its RBAC caches are loaded and denies everything for a moment, and a
client should retry that rather than be told to call an administrator.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import http.client
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from pinniped_apis import constants
from pinniped_concierge import kube_http
from pinniped_concierge.errors import Reason, ServerError, Unavailable

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Kind(StrEnum):
    SERVICE_ACCOUNT = "ServiceAccount"
    SECRET = "Secret"
    CLUSTER_ROLE = "ClusterRole"
    CLUSTER_ROLE_BINDING = "ClusterRoleBinding"


@dataclass(frozen=True)
class ClusterResource:
    """A custom resource, as the CustomObjects API addresses it (cluster-scoped or namespaced:
    the methods called say which)."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


JWT_AUTHENTICATORS = ClusterResource(constants.AUTHENTICATOR_GROUP, constants.VERSION,
                                     constants.JWT_AUTHENTICATOR_PLURAL,
                                     constants.JWT_AUTHENTICATOR_KIND)
CREDENTIAL_ISSUERS = ClusterResource(constants.CONFIG_GROUP, constants.VERSION,
                                     constants.CREDENTIAL_ISSUER_PLURAL,
                                     constants.CREDENTIAL_ISSUER_KIND)
ELEVATION_POLICIES = ClusterResource(constants.ELEVATION_GROUP, constants.VERSION,
                                     constants.ELEVATION_POLICY_PLURAL,
                                     constants.ELEVATION_POLICY_KIND)
#: Namespaced: they live in the concierge's namespace.
ELEVATION_REQUESTS = ClusterResource(constants.ELEVATION_GROUP, constants.VERSION,
                                     constants.ELEVATION_REQUEST_PLURAL,
                                     constants.ELEVATION_REQUEST_KIND)


class NotFound(Exception):
    pass


class Conflict(Exception):
    """Already exists, or a precondition (uid, resourceVersion) did not hold."""


class LeaseAPI(Protocol):
    """`coordination.k8s.io/v1` Leases in one namespace: what leader election needs."""

    async def read_lease(self, namespace: str, name: str) -> Obj: ...

    async def create_lease(self, namespace: str, body: Obj) -> Obj:
        """Create; `Conflict` when another replica created it first."""
        ...

    async def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT; `body`'s resourceVersion makes a write over someone else's a `Conflict`."""
        ...


class KubeAPI(LeaseAPI, Protocol):
    async def create(self, kind: Kind, body: Obj, namespace: str | None = None) -> Obj: ...

    async def read(self, kind: Kind, name: str, namespace: str | None = None) -> Obj: ...

    async def replace(self, kind: Kind, name: str, body: Obj,
                      namespace: str | None = None) -> Obj: ...

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     uid: str | None = None) -> None: ...

    async def list(self, kind: Kind, namespace: str, label_selector: str, limit: int,
                   continue_token: str | None = None) -> tuple[list[Obj], str | None]: ...

    async def create_token(self, namespace: str, service_account: str, body: Obj) -> Obj:
        """TokenRequest (serviceaccounts/token); returns the TokenRequest with its status."""
        ...

    async def review_token(self, token: str) -> Obj:
        """TokenReview; returns the review's status."""
        ...

    async def ping(self, namespace: str) -> None:
        """Raise unless the API is reachable and answers with our own credentials."""
        ...

    # Cluster-scoped custom objects (JWTAuthenticators, the CredentialIssuer), as plain dicts.

    async def read_custom(self, resource: ClusterResource, name: str) -> Obj: ...

    async def create_custom(self, resource: ClusterResource, body: Obj) -> Obj: ...

    async def replace_custom_status(self, resource: ClusterResource, name: str,
                                    body: Obj) -> Obj:
        """PUT the status subresource; `body`'s resourceVersion makes a stale write a
        `Conflict` rather than a lost update."""
        ...

    async def list_custom(self, resource: ClusterResource, namespace: str | None, limit: int,
                          continue_token: str | None = None, label_selector: str = ""
                          ) -> tuple[builtins.list[Obj], str | None]:
        """One page of custom objects (`namespace` None: cluster-scoped ones), and the token
        for the next page (or None)."""
        ...

    # Namespaced custom objects (ElevationRequests), whole objects (no status subresource).

    async def create_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       body: Obj) -> Obj:
        """Create; `Conflict` when the name is taken."""
        ...

    async def read_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                     name: str) -> Obj: ...

    async def replace_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                        name: str, body: Obj) -> Obj:
        """PUT the whole object; `body`'s resourceVersion makes a stale write a `Conflict`."""
        ...

    async def delete_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       name: str, uid: str | None = None) -> None:
        """Delete; with `uid`, a `Conflict` if the name now holds another object."""
        ...


Page = tuple[builtins.list[Obj], str | None]


async def pages(fetch: Callable[[str | None], Awaitable[Page]],
                max_pages: int | None = None) -> AsyncIterator[builtins.list[Obj]]:
    """Each page of a paged list, in order: `fetch` is given the previous page's continue
    token (None for the first). Stops after `max_pages` where the caller must bound the
    calls it makes; a caller that has seen enough simply stops iterating."""
    continue_token: str | None = None
    fetched = 0
    while max_pages is None or fetched < max_pages:
        items, continue_token = await fetch(continue_token)
        fetched += 1
        yield items
        if not continue_token:
            return


# --- counting calls per request ----------------------------------------------


@dataclass
class CallCount:
    value: int = 0


_current_count: ContextVar[CallCount | None] = ContextVar("kube_api_calls", default=None)


def count_call() -> None:
    """Note one Kubernetes API call against the request being served (if any)."""
    current = _current_count.get()
    if current is not None:
        current.value += 1


@contextlib.contextmanager
def counting_calls() -> Iterator[CallCount]:
    """Count the Kubernetes API calls made while serving one request (for the audit log)."""
    count = CallCount()
    token = _current_count.set(count)
    try:
        yield count
    finally:
        _current_count.reset(token)


# --- the real thing -------------------------------------------------------------

USER_AGENT = "pinniped-concierge"
#: Kubernetes API calls in flight at once; a login makes two or three, one after another.
API_THREADS = 32

_MODELS = {
    Kind.SERVICE_ACCOUNT: ("V1ServiceAccount", "core", "namespaced_service_account"),
    Kind.SECRET: ("V1Secret", "core", "namespaced_secret"),
    Kind.CLUSTER_ROLE: ("V1ClusterRole", "rbac", "cluster_role"),
    Kind.CLUSTER_ROLE_BINDING: ("V1ClusterRoleBinding", "rbac", "cluster_role_binding"),
}
#: Where the objects `kube_http` handles live (a namespaced kind's has "{namespace}").
_COLLECTIONS = {
    Kind.SERVICE_ACCOUNT: "/api/v1/namespaces/{namespace}/serviceaccounts",
    Kind.SECRET: "/api/v1/namespaces/{namespace}/secrets",
    Kind.CLUSTER_ROLE: "/apis/rbac.authorization.k8s.io/v1/clusterroles",
}
#: The (verb, kind) calls `kube_http` makes; the official client makes the others.
_THIN_CALLS = {("create", Kind.SECRET), ("read", Kind.CLUSTER_ROLE),
               ("replace", Kind.CLUSTER_ROLE)}


def _path(kind: Kind, namespace: str | None, name: str | None = None) -> str:
    collection = _COLLECTIONS[kind]
    if "{namespace}" in collection:
        if namespace is None:
            raise ValueError(f"{kind} is namespaced")
        collection = collection.format(namespace=quote(namespace, safe=""))
    return collection if name is None else f"{collection}/{quote(name, safe='')}"


class KubernetesClientAPI:
    """`KubeAPI` over the official client; each call is one HTTP request in a worker thread."""

    def __init__(self, api_client: Any, timeout_seconds: float) -> None:
        from kubernetes import client

        self._threads = ThreadPoolExecutor(API_THREADS, thread_name_prefix="kube-api")
        #: The calls (`what`) the apiserver has allowed us since start (see `_translate`).
        self._allowed: set[str] = set()

        self._client: Any = client  # models are used as plain dict converters
        self._api_client = api_client
        api_client.user_agent = USER_AGENT
        self._core = client.CoreV1Api(api_client)
        self._rbac = client.RbacAuthorizationV1Api(api_client)
        self._authn = client.AuthenticationV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        # Any: Leases are passed as plain dicts, which the client serializes as they are.
        self._coordination: Any = client.CoordinationV1Api(api_client)
        self._timeout = (min(3.0, timeout_seconds), timeout_seconds)
        #: The login's calls go here (None: the kubeconfig needs the official client for all).
        self._http = self._thin_transport(api_client.configuration, timeout_seconds)

    @staticmethod
    def _thin_transport(configuration: Any, timeout_seconds: float) -> kube_http.KubeHTTP | None:
        reason = kube_http.unsupported(configuration)
        if reason is not None:
            log.info("the official Kubernetes client makes every API call, logins' too: "
                     "the connection to the apiserver %s", reason)
            return None
        return kube_http.KubeHTTP(configuration, timeout_seconds, user_agent=USER_AGENT)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None,
                        timeout_seconds: float) -> KubernetesClientAPI:
        """From a kubeconfig file, or from the pod's service account when `kubeconfig` is None."""
        from kubernetes import client
        from kubernetes import config as kube_config

        loader: Any = kube_config  # its loaders are untyped
        configuration = client.Configuration()
        if kubeconfig is None:
            loader.load_incluster_config(client_configuration=configuration)
        else:
            loader.load_kube_config(config_file=str(kubeconfig),
                                    client_configuration=configuration)
        # One quick retry on a dropped connection; beyond that the caller gets a
        # 503 and retries itself, which is better than hanging a login.
        configuration.retries = 1
        configuration.connection_pool_maxsize = API_THREADS  # a connection per thread
        return cls(client.ApiClient(configuration), timeout_seconds)

    def new_api_client(self) -> Any:
        """Another client with the same server and credentials but its own connection pool."""
        from kubernetes import client

        return client.ApiClient(self._api_client.configuration)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api_client.close()
        if self._http is not None:
            self._http.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        count_call()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._threads, fn)
        except Exception as exc:
            raise _translate(exc, what, allowed_before=what in self._allowed) from None
        self._allowed.add(what)
        return result

    def _api(self, kind: Kind) -> tuple[Any, str, Any]:
        model_name, group, suffix = _MODELS[kind]
        api = self._core if group == "core" else self._rbac
        return api, suffix, getattr(self._client, model_name)

    def _plain(self, model: Any) -> Obj:
        result = self._api_client.sanitize_for_serialization(model)
        return result if isinstance(result, dict) else {}

    @staticmethod
    def _where(namespace: str | None) -> dict[str, str]:
        return {"namespace": namespace} if namespace is not None else {}

    async def _thin(self, thin: kube_http.KubeHTTP, what: str, method: str, path: str,
                    body: Obj | None = None) -> Obj:
        """One call over `kube_http`, counted and translated like the official client's."""
        result: Obj = await self._call(what, lambda: thin.request(method, path, body))
        return result

    def _thin_for(self, verb: str, kind: Kind) -> kube_http.KubeHTTP | None:
        return self._http if (verb, kind) in _THIN_CALLS else None

    async def create(self, kind: Kind, body: Obj, namespace: str | None = None) -> Obj:
        if thin := self._thin_for("create", kind):
            return await self._thin(thin, f"create {kind}", "POST", _path(kind, namespace), body)
        api, suffix, model = self._api(kind)
        fn = getattr(api, f"create_{suffix}")
        result = await self._call(f"create {kind}", lambda: fn(
            body=model.from_dict(body), _request_timeout=self._timeout, **self._where(namespace)))
        return self._plain(result)

    async def read(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        if thin := self._thin_for("read", kind):
            return await self._thin(thin, f"read {kind}", "GET", _path(kind, namespace, name))
        api, suffix, _ = self._api(kind)
        fn = getattr(api, f"read_{suffix}")
        result = await self._call(f"read {kind}", lambda: fn(
            name=name, _request_timeout=self._timeout, **self._where(namespace)))
        return self._plain(result)

    async def replace(self, kind: Kind, name: str, body: Obj,
                      namespace: str | None = None) -> Obj:
        if thin := self._thin_for("replace", kind):
            return await self._thin(thin, f"replace {kind}", "PUT",
                                    _path(kind, namespace, name), body)
        api, suffix, model = self._api(kind)
        fn = getattr(api, f"replace_{suffix}")
        result = await self._call(f"replace {kind}", lambda: fn(
            name=name, body=model.from_dict(body), _request_timeout=self._timeout,
            **self._where(namespace)))
        return self._plain(result)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     uid: str | None = None) -> None:
        api, suffix, _ = self._api(kind)
        fn = getattr(api, f"delete_{suffix}")
        options = self._client.V1DeleteOptions(
            preconditions=self._client.V1Preconditions(uid=uid) if uid else None)
        await self._call(f"delete {kind}", lambda: fn(
            name=name, body=options, _request_timeout=self._timeout, **self._where(namespace)))

    async def list(self, kind: Kind, namespace: str, label_selector: str, limit: int,
                   continue_token: str | None = None) -> tuple[list[Obj], str | None]:
        api, suffix, _ = self._api(kind)
        fn = getattr(api, f"list_{suffix}")
        extra = {"_continue": continue_token} if continue_token else {}
        result = self._plain(await self._call(f"list {kind}", lambda: fn(
            namespace=namespace, label_selector=label_selector, limit=limit,
            _request_timeout=self._timeout, **extra)))
        items = result.get("items") or []
        return list(items), (result.get("metadata") or {}).get("continue") or None

    async def create_token(self, namespace: str, service_account: str, body: Obj) -> Obj:
        if self._http is not None:
            return await self._thin(self._http, "create TokenRequest", "POST", (
                f"{_path(Kind.SERVICE_ACCOUNT, namespace, service_account)}/token"), body)
        request = self._client.AuthenticationV1TokenRequest.from_dict(body)
        result = await self._call("create TokenRequest", lambda: (
            self._core.create_namespaced_service_account_token(
                name=service_account, namespace=namespace, body=request,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def review_token(self, token: str) -> Obj:
        if self._http is not None:
            result = await self._thin(self._http, "create TokenReview", "POST",
                                      "/apis/authentication.k8s.io/v1/tokenreviews",
                                      {"apiVersion": "authentication.k8s.io/v1",
                                       "kind": "TokenReview", "spec": {"token": token}})
        else:
            review = self._client.V1TokenReview(
                spec=self._client.V1TokenReviewSpec(token=token))
            result = self._plain(await self._call(
                "create TokenReview", lambda: self._authn.create_token_review(
                    body=review, _request_timeout=self._timeout)))
        status = result.get("status")
        return status if isinstance(status, dict) else {}

    async def ping(self, namespace: str) -> None:
        await self.list(Kind.SECRET, namespace, "app.kubernetes.io/managed-by=pinniped-concierge",
                        limit=1)

    async def read_custom(self, resource: ClusterResource, name: str) -> Obj:
        result = await self._call(f"read {resource.kind}", lambda: (
            self._custom.get_cluster_custom_object(
                resource.group, resource.version, resource.plural, name,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def create_custom(self, resource: ClusterResource, body: Obj) -> Obj:
        result = await self._call(f"create {resource.kind}", lambda: (
            self._custom.create_cluster_custom_object(
                resource.group, resource.version, resource.plural, body,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def replace_custom_status(self, resource: ClusterResource, name: str,
                                    body: Obj) -> Obj:
        result = await self._call(f"update {resource.kind} status", lambda: (
            self._custom.replace_cluster_custom_object_status(
                resource.group, resource.version, resource.plural, name, body,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def list_custom(self, resource: ClusterResource, namespace: str | None, limit: int,
                          continue_token: str | None = None, label_selector: str = ""
                          ) -> tuple[builtins.list[Obj], str | None]:
        extra: dict[str, Any] = {"_continue": continue_token} if continue_token else {}
        if label_selector:
            extra["label_selector"] = label_selector

        def page() -> Any:
            if namespace is None:
                return self._custom.list_cluster_custom_object(
                    resource.group, resource.version, resource.plural, limit=limit,
                    _request_timeout=self._timeout, **extra)
            return self._custom.list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, limit=limit,
                _request_timeout=self._timeout, **extra)

        result = self._plain(await self._call(f"list {resource.kind}", page))
        items = [item for item in result.get("items") or [] if isinstance(item, dict)]
        return items, (result.get("metadata") or {}).get("continue") or None

    async def create_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       body: Obj) -> Obj:
        result = await self._call(f"create {resource.kind}", lambda: (
            self._custom.create_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, body,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def read_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                     name: str) -> Obj:
        result = await self._call(f"read {resource.kind}", lambda: (
            self._custom.get_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def replace_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                        name: str, body: Obj) -> Obj:
        result = await self._call(f"replace {resource.kind}", lambda: (
            self._custom.replace_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name, body,
                _request_timeout=self._timeout)))
        return self._plain(result)

    async def delete_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       name: str, uid: str | None = None) -> None:
        options = self._client.V1DeleteOptions(
            preconditions=self._client.V1Preconditions(uid=uid) if uid else None)
        await self._call(f"delete {resource.kind}", lambda: (
            self._custom.delete_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name,
                body=options, _request_timeout=self._timeout)))

    # Leases go as plain dicts (the client serializes a dict as it is): renewTime and
    # acquireTime are MicroTime strings we format ourselves, microseconds included.

    async def read_lease(self, namespace: str, name: str) -> Obj:
        result = await self._call("read Lease", lambda: (
            self._coordination.read_namespaced_lease(name, namespace,
                                                     _request_timeout=self._timeout)))
        return self._plain(result)

    async def create_lease(self, namespace: str, body: Obj) -> Obj:
        result = await self._call("create Lease", lambda: (
            self._coordination.create_namespaced_lease(namespace, body,
                                                       _request_timeout=self._timeout)))
        return self._plain(result)

    async def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        result = await self._call("update Lease", lambda: (
            self._coordination.replace_namespaced_lease(name, namespace, body,
                                                        _request_timeout=self._timeout)))
        return self._plain(result)


def _translate(exc: Exception, what: str, *, allowed_before: bool = False) -> Exception:
    """Map a client exception (the official client's or `kube_http`'s) to ours, keeping only
    what is safe to log."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return _translate_status(int(exc.status or 0), kube_http.status_message(exc.body),
                                 what, allowed_before)
    if isinstance(exc, kube_http.HTTPStatusError):
        return _translate_status(exc.status, exc.message, what, allowed_before)
    if isinstance(exc, HTTPError | OSError | TimeoutError | http.client.HTTPException):
        return Unavailable(Reason.KUBERNETES_UNAVAILABLE,
                           f"the Kubernetes API is unreachable ({what}: {type(exc).__name__}); "
                           "try again shortly")
    return ServerError(Reason.KUBERNETES_ERROR, f"{what}: {type(exc).__name__}")


def _translate_status(status: int, message: str, what: str, allowed_before: bool) -> Exception:
    if status == 404:
        return NotFound(what)
    if status == 409:
        return Conflict(what)
    if status in {0, 429} or status >= 500 or (status == 403 and allowed_before):
        return Unavailable(Reason.KUBERNETES_UNAVAILABLE,
                           f"the Kubernetes API is unavailable ({what}: HTTP {status}); "
                           "try again shortly")
    return ServerError(Reason.KUBERNETES_ERROR, f"{what}: HTTP {status}: {message}")
