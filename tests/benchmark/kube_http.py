"""Straight HTTP to the kube-apiserver: bounded, concurrent creation, and the calls the
concierge makes, without the concierge.

The benchmark creates tens of thousands of objects, which `kubectl` (a process
per call) or the official client (blocking, a thread per call) would make the
slowest part of the run; plain JSON over a few keep-alive connections is what
the apiserver sees from any client anyway.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

Obj = dict[str, Any]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
#: Answers worth another try: the apiserver is busy (429) or briefly unavailable.
_RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
_ATTEMPTS = 6


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@asynccontextmanager
async def client(server: str, ca_file: Path, token: str,
                 connections: int = 1) -> AsyncIterator[httpx.AsyncClient]:
    """An async client with its own keep-alive connections to `server`, as `token`."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=server, verify=tls_context(ca_file), limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                 trust_env=False) as http:
        yield http


async def create(http: httpx.AsyncClient, path: str, body: Obj,
                 exist_ok: bool = False) -> Obj:
    """POST `body` to `path`; 409 is fine when `exist_ok`. Busy answers are retried a few times."""
    for attempt in range(_ATTEMPTS):
        response = await http.post(path, json=body)
        if response.status_code == 409 and exist_ok:
            return {}
        if response.status_code not in _RETRY_STATUSES or attempt == _ATTEMPTS - 1:
            break
        await asyncio.sleep(0.2 * 2 ** attempt)
    if response.status_code >= 300:
        raise RuntimeError(f"POST {path}: HTTP {response.status_code}: "
                           f"{response.text[:300]}")  # bodies of errors name no token
    result: Obj = response.json()
    return result


def bulk_create(server: str, ca_file: Path, token: str, items: Iterable[tuple[str, Obj]],
                concurrency: int) -> int:
    """POST every (path, body) of `items`, at most `concurrency` at a time, pulling lazily
    (60,000 objects are never 60,000 requests queued at once); existing ones are fine.

    Threads with one `http.client` keep-alive connection each: the client then
    costs a fraction of what an async client library does per request, which
    matters when it shares two cores with the apiserver and etcd.
    Returns how many were POSTed.
    """
    iterator = iter(items)
    lock = threading.Lock()
    context = tls_context(ca_file)
    parts = urlsplit(server)
    counts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                 context=context, timeout=60)
        done = 0
        try:
            while not errors:
                with lock:  # one shared iterator: each item is taken once
                    item = next(iterator, None)
                if item is None:
                    break
                _post_sync(connection, token, *item)
                done += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()
            counts.append(done)

    threads = [threading.Thread(target=worker, name=f"create-{n}", daemon=True)
               for n in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as exc:  # Ctrl-C: the workers stop after the item in hand
        errors.append(exc)
        raise
    if errors:
        raise errors[0]
    return sum(counts)


def _post_sync(connection: http.client.HTTPSConnection, token: str, path: str,
               body: Obj) -> None:
    payload = json.dumps(body).encode()
    for attempt in range(_ATTEMPTS):
        connection.request("POST", path, body=payload, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        if response.status < 300 or response.status == 409:
            return
        if response.status not in _RETRY_STATUSES or attempt == _ATTEMPTS - 1:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {answer[:300]!r}")
        time.sleep(0.2 * 2 ** attempt)


def secret_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets"


def token_path(namespace: str, service_account: str) -> str:
    return f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"


def bound_token_request(secret_name: str, secret_uid: str, seconds: int = 600) -> Obj:
    """A TokenRequest bound to a Secret, as the concierge sends one for each session."""
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                                        "name": secret_name, "uid": secret_uid}}}
