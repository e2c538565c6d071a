"""/metrics of the real concierge process, after real logins with the real IdP's ID tokens."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localenv.concierge import LocalConcierge
from localenv.idp import LocalIdP
from localenv.logins import login, tls
from localenv.procs import free_port

pytestmark = pytest.mark.integration

LOGINS_OK = ("pinniped_concierge_logins_total", (("outcome", "success"), ("reason", "ok")))
LEASE = ("pinniped_concierge_lease_held", ())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_tls(concierge: LocalConcierge) -> str:
    response = httpx.get(concierge.url + "/metrics", verify=tls(concierge), timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def wait_for_lease(scrape: Callable[[], str]) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]:
    """The replica takes the Lease at its first look, within a renew period of starting."""
    deadline = time.monotonic() + 20
    while True:
        got = samples(scrape())
        if got.get(LEASE) == 1 or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_metrics_on_the_serving_port_count_a_real_login(concierge: LocalConcierge,
                                                          idp: LocalIdP) -> None:
    before = samples(scrape_tls(concierge)).get(LOGINS_OK, 0)
    id_token = idp.password_grant("alice")["id_token"]
    login(concierge, id_token)
    text = scrape_tls(concierge)
    got = wait_for_lease(lambda: scrape_tls(concierge))
    assert got[LOGINS_OK] == before + 1
    assert got[LEASE] == 1  # the only concierge in its namespace
    assert got[("pinniped_concierge_login_kube_api_calls_count", ())] >= 1
    assert got[("pinniped_concierge_jwks_refreshes_total", (("authenticator", "corp"),))] >= 1
    assert got[("pinniped_concierge_sessions", ())] >= 1
    assert got[("pinniped_concierge_managed_users", ())] >= 1
    for secret in (id_token, "alice", "example.com"):
        assert secret not in text
    assert "/metrics" not in httpx.get(concierge.url + "/openapi.json", verify=tls(concierge),
                                       timeout=10).json()["paths"]


def test_metrics_on_their_own_port_are_plain_http(
        concierge_factory: Callable[..., LocalConcierge], idp: LocalIdP) -> None:
    port = free_port()
    concierge = concierge_factory(idp, metrics={"port": port})

    def scrape_http() -> str:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        return response.text

    login(concierge, idp.password_grant("bob")["id_token"])
    got = wait_for_lease(scrape_http)
    assert got[LOGINS_OK] == 1
    assert got[LEASE] == 1
    served = httpx.get(concierge.url + "/metrics", verify=tls(concierge), timeout=10)
    assert served.status_code == 404  # not on the serving port as well
