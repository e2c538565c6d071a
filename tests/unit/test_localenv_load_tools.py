"""The load and census tooling itself: a census that missed a duplicate, or a load client that
counted a refusal as a success, would make the load and fault tests pass on nothing."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from localenv.load import (
    OK,
    REJECTED,
    WRONG_USER,
    LoadResult,
    Login,
    Sample,
    cpu_seconds,
    outcome_of,
    spread,
)
from localenv.user_census import Census
from pinniped_concierge import naming

NS = "pinniped-concierge-test"
ALICE = "minted:alice@example.com"


def user_objects(username: str, *, sessions: int = 1, sa_uid: str = "sa-uid") -> Census:
    """A census of exactly one user's objects, as the concierge makes them."""
    key = naming.user_key(username, NS)
    name = naming.user_object_name(username, NS)
    meta = {"name": name, "labels": naming.user_labels(username, NS)}
    census = Census(NS)
    census.service_accounts[key].append({"metadata": {**meta, "uid": sa_uid}})
    census.cluster_roles[key].append({"metadata": meta, "rules": [
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
         "resourceNames": [username]}]})
    census.bindings[key].append({"metadata": meta, "roleRef": {"name": name}, "subjects": [
        {"kind": "ServiceAccount", "name": name, "namespace": NS}]})
    for i in range(sessions):
        census.sessions[key].append({"metadata": {
            "name": f"pinniped-session-{i}", "ownerReferences": [{"uid": sa_uid}]}})
    return census


def test_a_census_of_exactly_right_objects_finds_nothing() -> None:
    assert user_objects(ALICE, sessions=3).problems([ALICE], max_sessions_per_user=3) == []


def test_a_census_names_every_kind_of_wrong() -> None:
    key = naming.user_key(ALICE, NS)
    census = user_objects(ALICE, sessions=4)
    assert census.problems([ALICE], 3) == [f"{ALICE}: 4 live sessions, over the cap of 3"]

    census = user_objects(ALICE)
    census.service_accounts[key].append(census.service_accounts[key][0])
    assert census.problems([ALICE], 3) == [f"{ALICE}: 2 ServiceAccounts, not 1"]

    census = user_objects(ALICE)
    del census.bindings[key][0]
    assert census.problems([ALICE], 3) == [f"{ALICE}: 0 ClusterRoleBindings, not 1"]

    census = user_objects(ALICE)
    census.sessions[key][0]["metadata"]["ownerReferences"] = [{"uid": "an-old-account"}]
    assert census.problems([ALICE], 3) == [
        f"{ALICE}: 1 sessions not owned by the live ServiceAccount"]

    census = user_objects(ALICE)
    census.bindings[key][0]["subjects"][0]["namespace"] = "elsewhere"
    assert census.problems([ALICE], 3) == [
        f"{ALICE}: ClusterRoleBinding does not bind its own role and account"]

    census = user_objects(ALICE)
    census.cluster_roles[key][0]["rules"][0]["resourceNames"] = ["minted:bob@example.com"]
    assert census.problems([ALICE], 3) == [
        f"{ALICE}: ClusterRole impersonates users ['minted:bob@example.com']"]

    stranger = user_objects("minted:mallory@example.com")
    assert stranger.problems([ALICE], 3)[0].startswith("ServiceAccounts for users nobody")


def answer(username: str | None, token: str | None = "t") -> bytes:
    status: dict[str, Any] = {"message": "authentication failed"}
    if token is not None and username is not None:
        status = {"credential": {"token": token}, "identity": {"username": username}}
    return json.dumps({"status": status}).encode()


@pytest.mark.parametrize(("status", "content", "outcome"), [
    (200, answer(ALICE), OK),
    (200, answer("minted:bob@example.com"), WRONG_USER),
    (200, answer(ALICE, token=None), REJECTED),
    (200, answer(ALICE, token=""), REJECTED),
    (200, b"not json", REJECTED),
    (503, b'{"kind": "Status"}', "http_503"),
])
def test_only_a_credential_for_the_right_user_counts_as_a_success(
        status: int, content: bytes, outcome: str) -> None:
    assert outcome_of(status, content, ALICE) == outcome


def test_load_figures_are_computed_from_the_samples() -> None:
    samples = [Sample(100.0 + i, 100.0 + i + latency, 200, OK, None)
               for i, latency in enumerate([0.1, 0.2, 0.3, 0.4, 1.0])]
    samples.append(Sample(103.5, 104.0, 503, "http_503", "5", "the Kubernetes API is down"))
    result = LoadResult(samples, seconds=10.0, client_cpu_seconds=[1.0, 2.5])
    assert result.percentile(50) == pytest.approx(0.3)
    assert result.percentile(99) == pytest.approx(1.0)
    assert result.percentile(50, "http_503") == pytest.approx(0.5)
    assert result.throughput == pytest.approx(0.5)
    assert result.client_busiest == pytest.approx(0.25)
    assert [s.started for s in result.between(102.0, 104.0)] == [102.0, 103.0, 103.5]
    assert result.details() == {"http_503: the Kubernetes API is down": 1}
    assert result.failures() == "at 3.5 s after 0.50 s: http_503 (the Kubernetes API is down)"


def test_spread_puts_the_tasks_round_robin_on_the_users() -> None:
    logins = [Login(b"{}", f"user{i}") for i in range(3)]
    assert [task[0].username for task in spread(logins, 7)] == [
        "user0", "user1", "user2", "user0", "user1", "user2", "user0"]


def test_cpu_seconds_counts_what_a_process_used() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before
