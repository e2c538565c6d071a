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
    Conflict,
    Kind,
    KubernetesClientAPI,
    NotFound,
    _translate,
    counting_calls,
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
