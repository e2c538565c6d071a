"""The Kubernetes adapter: calls off the event loop, errors translated, calls counted."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import (
    API_THREADS,
    Conflict,
    Kind,
    KubernetesClientAPI,
    NotFound,
    Obj,
    Page,
    _translate,
    counting_calls,
    pages,
)


def api_for(host: str) -> KubernetesClientAPI:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = 0
    return KubernetesClientAPI(client.ApiClient(configuration), timeout_seconds=2)


def test_calls_run_in_a_worker_thread_so_the_loop_keeps_serving(monkeypatch: Any) -> None:
    api = api_for("https://127.0.0.1:1")
    threads: list[str] = []

    def slow_read(**_kwargs: Any) -> client.V1ServiceAccount:
        threads.append(threading.current_thread().name)
        time.sleep(0.3)
        return client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="x", uid="u"))

    monkeypatch.setattr(api._core, "read_namespaced_service_account", slow_read)

    async def go() -> tuple[dict[str, Any], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        with counting_calls() as count:
            result = await api.read(Kind.SERVICE_ACCOUNT, "x", "ns")
        task.cancel()
        assert count.value == 1
        return result, ticks

    result, ticks = asyncio.run(go())
    assert result["metadata"] == {"name": "x", "uid": "u"}
    assert ticks >= 10  # the loop ran while the call blocked
    assert threads
    assert threads[0] != threading.main_thread().name


def test_as_many_calls_run_at_once_as_there_are_threads(monkeypatch: Any) -> None:
    """Not asyncio's default pool (6 threads on 2 cores), which logins would queue for."""
    api = api_for("https://127.0.0.1:1")
    running, most = 0, 0
    lock = threading.Lock()

    def slow_read(**_kwargs: Any) -> client.V1ServiceAccount:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="x", uid="u"))

    monkeypatch.setattr(api._core, "read_namespaced_service_account", slow_read)

    async def go() -> None:
        await asyncio.gather(*(api.read(Kind.SERVICE_ACCOUNT, "x", "ns")
                               for _ in range(API_THREADS + 8)))

    asyncio.run(go())
    api.close()
    assert most == API_THREADS


def test_a_403_for_a_call_allowed_before_is_a_moment_of_unavailability(monkeypatch: Any) -> None:
    """A restarting apiserver denies everything until its RBAC caches are loaded."""
    api = api_for("https://127.0.0.1:1")
    answers: list[object] = [client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="x")),
                             ApiException(status=403, reason="Forbidden")]

    def read(**_kwargs: Any) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def denied(**_kwargs: Any) -> object:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(api._core, "read_namespaced_service_account", read)
    monkeypatch.setattr(api._core, "create_namespaced_service_account", denied)
    asyncio.run(api.read(Kind.SERVICE_ACCOUNT, "x", "ns"))
    with pytest.raises(Unavailable) as info:
        asyncio.run(api.read(Kind.SERVICE_ACCOUNT, "x", "ns"))
    assert info.value.reason == Reason.KUBERNETES_UNAVAILABLE
    # Never allowed: our RBAC lacks the verb, which only an administrator can fix.
    with pytest.raises(ServerError):
        asyncio.run(api.create(Kind.SERVICE_ACCOUNT, {"metadata": {"name": "x"}}, "ns"))
    api.close()


def test_an_unreachable_apiserver_is_unavailable() -> None:
    api = api_for("https://127.0.0.1:1")
    with pytest.raises(Unavailable) as info:
        asyncio.run(api.ping("ns"))
    assert info.value.reason == Reason.KUBERNETES_UNAVAILABLE


@pytest.mark.parametrize(("status", "expected"), [
    (404, NotFound), (409, Conflict), (500, Unavailable), (503, Unavailable),
    (429, Unavailable), (0, Unavailable), (403, ServerError), (422, ServerError),
])
def test_http_errors_are_translated(status: int, expected: type[Exception]) -> None:
    error = ApiException(status=status, reason="x",
                         body='{"kind":"Status","message":"nope from apiserver"}')
    translated = _translate(error, "create Secret")
    assert isinstance(translated, expected)
    if isinstance(translated, ServerError):
        assert "nope from apiserver" in translated.detail
        assert translated.reason == Reason.KUBERNETES_ERROR


def test_only_the_status_message_is_kept_from_an_error_body() -> None:
    body = '{"kind":"Status","message":"denied","details":{"token":"s3cr3t"}}'
    translated = _translate(ApiException(status=403, body=body), "create TokenReview")
    assert "s3cr3t" not in str(translated)


def test_kubeconfig_loading(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("""
apiVersion: v1
kind: Config
current-context: c
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
""")
    api = KubernetesClientAPI.from_kubeconfig(kubeconfig, 5)
    assert api._api_client.configuration.host == "https://127.0.0.1:6443"
    api.close()


class PagedList:
    """A list served in pages of one item, with the continue tokens it was given."""

    def __init__(self, count: int) -> None:
        self.items: list[Obj] = [{"metadata": {"name": f"o{i}"}} for i in range(count)]
        self.tokens: list[str | None] = []

    async def fetch(self, token: str | None) -> Page:
        self.tokens.append(token)
        index = int(token) if token else 0
        more = str(index + 1) if index + 1 < len(self.items) else None
        return self.items[index:index + 1], more


def collect(source: PagedList, max_pages: int | None = None) -> list[Obj]:
    async def go() -> list[Obj]:
        return [item async for page in pages(source.fetch, max_pages) for item in page]
    return asyncio.run(go())


def test_pages_follow_the_continue_token_to_the_end() -> None:
    source = PagedList(3)
    assert collect(source) == source.items
    assert source.tokens == [None, "1", "2"]


def test_pages_stop_at_max_pages() -> None:
    source = PagedList(5)
    assert collect(source, max_pages=2) == source.items[:2]
    assert source.tokens == [None, "1"]


def test_an_empty_list_is_one_call() -> None:
    source = PagedList(0)
    assert collect(source) == []
    assert source.tokens == [None]
