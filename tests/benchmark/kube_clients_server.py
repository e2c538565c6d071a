"""The far side of `kube_clients`: run as a script in the clients venv, never imported there.

    python -I kube_clients_server.py --port P --cert C --key K --kubeconfig KC --accounts FILE

One HTTPS server behind the concierge's own front door (`http_server.bounded_config`:
the same uvicorn settings, connection limits and in-flight limit), with
these routes:

- `POST /empty`: answers `{}` and does nothing else: the HTTP layer alone.
- `POST /pair/VARIANT`: a returning login's two Kubernetes API calls (a session
  Secret, then a TokenRequest bound to it) for one account, with one API
  client: the HTTP layer plus that client, which is the least a concierge
  built on that client can cost.
- `POST /measure`: the same pairs timed in this process with no HTTP layer in
  front: `concurrency` tasks on the event loop sharing one client, as the
  concierge's requests share its client. Answers the latencies and this
  process's CPU seconds (all threads) across them.

VARIANT is one of `CLIENTS`: the official client through the concierge's
own `KubernetesClientAPI` (a 32-thread pool, models converted both ways),
`kubernetes_asyncio` (aiohttp), `lightkube` (async, httpx-style), plain
`httpx.AsyncClient`, or `http.client` in a thread pool (a thin client of our
own would look like this). Every client reads the concierge's kubeconfig (its
ServiceAccount token, so RBAC does the same work) and keeps its connections.
Responses carry no token.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations
# (`Request`), which are imported inside `build_app`, so they must be evaluated there.
import argparse
import asyncio
import base64
import contextlib
import importlib
import json
import resource
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Pair = Callable[[str, str, str], Awaitable[None]]
#: Client libraries on PyPI, and all the variants (those and a thin client of our own shape).
LIBRARIES = ("official", "kubernetes_asyncio", "lightkube", "httpx")
THIN = "http.client-threads"
CLIENTS = (*LIBRARIES, THIN)
CONNECTIONS = 32  # as the concierge's pool (kubeapi.API_THREADS)


def secret_body(namespace: str, user: str, service_account: str, uid: str) -> Obj:
    """A session Secret as the benchmark's direct calls make it (no concierge labels)."""
    from pinniped_concierge import naming

    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": naming.session_secret_name(secrets.token_hex(8)),
                         "namespace": namespace,
                         "annotations": {naming.USERNAME_ANNOTATION: user},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount",
                                              "name": service_account, "uid": uid}]}}


def token_body(secret: Obj) -> Obj:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                                        "name": secret["metadata"]["name"],
                                        "uid": secret["metadata"]["uid"]}}}


def _issued(token_request: Obj) -> None:
    if not (token_request.get("status") or {}).get("token"):
        raise RuntimeError("the TokenRequest came back without a token")


async def official(kubeconfig: Path, namespace: str) -> Pair:
    from pinniped_concierge.kubeapi import Kind, KubernetesClientAPI

    api = KubernetesClientAPI.from_kubeconfig(kubeconfig, timeout_seconds=30)

    async def pair(user: str, service_account: str, uid: str) -> None:
        secret = await api.create(Kind.SECRET, secret_body(namespace, user, service_account,
                                                           uid), namespace)
        _issued(await api.create_token(namespace, service_account, token_body(secret)))

    return pair


async def kubernetes_asyncio(kubeconfig: Path, namespace: str) -> Pair:
    # Imported by name: the developer .venv (where mypy runs) has neither async client.
    client: Any = importlib.import_module("kubernetes_asyncio.client")
    config: Any = importlib.import_module("kubernetes_asyncio.config")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig),
                                  client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS
    api_client = client.ApiClient(configuration)
    core = client.CoreV1Api(api_client)

    async def pair(user: str, service_account: str, uid: str) -> None:
        created = await core.create_namespaced_secret(
            namespace, secret_body(namespace, user, service_account, uid))
        secret = api_client.sanitize_for_serialization(created)
        issued = await core.create_namespaced_service_account_token(
            service_account, namespace, token_body(secret))
        _issued(api_client.sanitize_for_serialization(issued))

    return pair


async def lightkube(kubeconfig: Path, namespace: str) -> Pair:
    light: Any = importlib.import_module("lightkube")
    resources: Any = importlib.import_module("lightkube.resources.core_v1")
    Secret, ServiceAccountToken = resources.Secret, resources.ServiceAccountToken
    http = light.AsyncClient(light.KubeConfig.from_file(kubeconfig), namespace=namespace,
                             trust_env=False)

    async def pair(user: str, service_account: str, uid: str) -> None:
        created = await http.create(Secret.from_dict(
            secret_body(namespace, user, service_account, uid)))
        secret = created.to_dict()
        # lightkube reads the namespace of a subresource's body from its metadata.
        request = token_body(secret) | {"metadata": {"namespace": namespace}}
        issued = await http.create(ServiceAccountToken.from_dict(request), service_account,
                                   namespace=namespace)
        _issued(issued.to_dict())

    return pair


def _cluster(kubeconfig: Path) -> tuple[str, str, ssl.SSLContext]:
    """The server, bearer token and a TLS context from the concierge's kubeconfig (JSON)."""
    config = json.loads(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context()
    context.load_verify_locations(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return str(cluster["server"]), str(user["token"]), context


async def plain_httpx(kubeconfig: Path, namespace: str) -> Pair:
    import httpx

    server, token, context = _cluster(kubeconfig)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    http = httpx.AsyncClient(base_url=server, verify=context, limits=limits,
                             headers={"Authorization": f"Bearer {token}"},
                             timeout=30, trust_env=False)
    base = f"/api/v1/namespaces/{namespace}"

    async def pair(user: str, service_account: str, uid: str) -> None:
        answer = await http.post(f"{base}/secrets",
                                 json=secret_body(namespace, user, service_account, uid))
        answer.raise_for_status()
        issued = await http.post(f"{base}/serviceaccounts/{service_account}/token",
                                 json=token_body(answer.json()))
        issued.raise_for_status()
        _issued(issued.json())

    return pair


async def http_client_threads(kubeconfig: Path, namespace: str) -> Pair:
    """`http.client` in a thread pool, one keep-alive connection per thread: the official
    client's hand-off without its urllib3 and models (what the direct baseline uses)."""
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    server, token, context = _cluster(kubeconfig)
    parts = urlsplit(server)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json"}
    local = threading.local()
    threads = ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="http-client")
    base = f"/api/v1/namespaces/{namespace}"

    def post(path: str, body: Obj) -> Obj:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, context=context, timeout=30)
        connection.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: HTTP {response.status}")
        result: Obj = json.loads(answer)
        return result

    async def pair(user: str, service_account: str, uid: str) -> None:
        loop = asyncio.get_running_loop()
        secret = await loop.run_in_executor(
            threads, post, f"{base}/secrets",
            secret_body(namespace, user, service_account, uid))
        _issued(await loop.run_in_executor(
            threads, post, f"{base}/serviceaccounts/{service_account}/token",
            token_body(secret)))

    return pair


MAKERS: dict[str, Callable[[Path, str], Awaitable[Pair]]] = {
    "official": official, "kubernetes_asyncio": kubernetes_asyncio, "lightkube": lightkube,
    "httpx": plain_httpx, "http.client-threads": http_client_threads}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(pair: Pair, accounts: list[list[str]], indexes: list[int],
                  concurrency: int) -> Obj:
    """`indexes`' pairs by `concurrency` tasks (each first runs one untimed pair)."""
    await asyncio.gather(*(pair(*accounts[indexes[n % len(indexes)]])
                           for n in range(concurrency)))
    pending = iter(indexes)
    latencies: list[float] = []

    async def worker() -> None:
        for index in pending:
            started = time.perf_counter()
            await pair(*accounts[index])
            latencies.append(time.perf_counter() - started)

    cpu, started = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "wall_seconds": time.perf_counter() - started,
            "cpu_seconds": _cpu() - cpu}


def build_app(kubeconfig: Path, namespace: str, accounts: list[list[str]]) -> Any:
    from fastapi import FastAPI, Request, Response

    pairs: dict[str, Pair] = {}
    empty = b"{}"

    @contextlib.asynccontextmanager
    async def connect(_app: FastAPI) -> AsyncIterator[None]:
        for name, make in MAKERS.items():
            pairs[name] = await make(kubeconfig, namespace)
        yield

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=connect)

    @app.post("/empty")
    async def nothing() -> Response:
        return Response(empty, media_type="application/json")

    @app.post("/pair/{variant}")
    async def one_pair(variant: str, request: Request) -> Response:
        body = json.loads(await request.body())
        try:
            await pairs[variant](*accounts[int(body["account"])])
        except Exception as exc:  # the benchmark shows it; the apiserver's messages hold no token
            return Response(f"{type(exc).__name__}: {str(exc)[:300]}".encode(), status_code=500)
        return Response(empty, media_type="application/json")

    @app.post("/measure")
    async def timed(request: Request) -> Response:
        body = json.loads(await request.body())
        result = await measure(pairs[body["variant"]], accounts, list(body["accounts"]),
                               int(body["concurrency"]))
        return Response(json.dumps(result).encode(), media_type="application/json")

    return app


def main() -> None:
    import uvicorn

    from pinniped_concierge.http_server import bounded_config
    from pinniped_concierge.metrics import ConciergeMetrics

    parser = argparse.ArgumentParser()
    for flag in ("--cert", "--key", "--kubeconfig", "--accounts"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-in-flight", type=int, default=200)  # the concierge's default
    args = parser.parse_args()
    spec = json.loads(args.accounts.read_text())
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    app = build_app(args.kubeconfig, spec["namespace"], spec["accounts"])
    uvicorn.Server(bounded_config(
        app, host="127.0.0.1", port=args.port, log_level="warning",
        header_timeout_seconds=10, max_in_flight=args.max_in_flight, tls=tls,
        metrics=ConciergeMetrics(), lifespan="on")).run()


if __name__ == "__main__":
    main()
