"""Revocation markers: counted only when whole, swept page by page, deleted only if ours."""

from __future__ import annotations

import asyncio

import pytest

from localenv.app_env import NS
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_concierge import naming, revocations
from pinniped_concierge.kubeapi import Kind, Obj
from pinniped_concierge.revocations import (
    RevocationCheck,
    RevocationMirror,
    new_marker,
    read_marker,
    sweep_expired,
)

ALICE = "corp:alice@example.com"
RETENTION = 4000


def test_a_marker_without_its_username_annotation_counts_for_nobody() -> None:
    """Every mark must agree, the username too: labels and name alone are easy to copy
    (here they would make it the marker of a user named "None")."""
    marker = new_marker("None", NS, 1_000_000.0, "admin")
    marker["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    assert read_marker(marker, NS) is not None
    del marker["metadata"]["annotations"][naming.USERNAME_ANNOTATION]
    assert read_marker(marker, NS) is None


def test_the_mirror_counts_its_markers_while_the_watch_is_up() -> None:
    mirror = RevocationMirror(NS)
    assert mirror.count() is None
    markers = [new_marker(user, NS, 1_000_000.0, "admin")
               for user in (ALICE, ALICE, "corp:bob@example.com")]
    for marker in markers:
        marker["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    mirror.reset(markers)
    assert mirror.count() == 3
    mirror.lost()
    assert mirror.count() is None


def test_a_login_is_taken_for_revoked_meanwhile_only_when_a_marker_says_so() -> None:
    """Asked again late in a login, without a mirror (one list): no marker, no refusal."""
    clock = ManualClock(10_000.0)
    kube = FakeKube(clock)
    check = RevocationCheck(kube, NS, None, 30)
    claims = {"iat": clock() - 100, "auth_time": clock() - 100}
    assert asyncio.run(check.revoked_meanwhile(ALICE, claims)) is False
    asyncio.run(kube.create(Kind.SECRET, new_marker(ALICE, NS, clock(), "admin"), NS))
    assert asyncio.run(check.revoked_meanwhile(ALICE, claims)) is True


def expired_markers(kube: FakeKube, clock: ManualClock, count: int) -> list[str]:
    names = [asyncio.run(kube.create(Kind.SECRET, new_marker(ALICE, NS, clock(), "admin"), NS))[
        "metadata"]["name"] for _ in range(count)]
    clock.now += RETENTION + 1
    return sorted(names)


def test_old_markers_are_swept_page_by_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "PAGE_SIZE", 2)
    clock = ManualClock(10_000.0)
    kube = FakeKube(clock)
    expired_markers(kube, clock, 3)
    kube.interleave = True  # every call yields, so a listing that never ends times out

    async def bounded() -> int:
        async with asyncio.timeout(5):
            return await sweep_expired(kube, NS, RETENTION, clock)

    assert asyncio.run(bounded()) == 3
    assert kube.calls.count("list Secret") == 2
    assert kube.names(Kind.SECRET) == []


def test_a_marker_gone_or_replaced_meanwhile_does_not_stop_the_sweep() -> None:
    """One was deleted by someone else since the list, one name now holds someone else's
    Secret (spared: the delete carries the listed uid); the other two are deleted."""
    clock = ManualClock(10_000.0)
    kube = FakeKube(clock)
    replaced, vanished, *rest = expired_markers(kube, clock, 4)
    foreign: Obj = {"metadata": {"name": replaced, "uid": "someone-elses"}, "type": "Opaque"}
    delete = kube.delete

    async def meanwhile(kind: Kind, name: str, namespace: str | None = None,
                        uid: str | None = None) -> None:
        if name == replaced:
            kube.objects[(kind, namespace, name)] = foreign
        if name == vanished:
            kube.objects.pop((kind, namespace, name), None)
        await delete(kind, name, namespace, uid)

    kube.delete = meanwhile  # type: ignore[method-assign]
    assert asyncio.run(sweep_expired(kube, NS, RETENTION, clock)) == 2
    assert kube.get(Kind.SECRET, replaced, NS) is foreign
    assert all(kube.get(Kind.SECRET, name, NS) is None for name in [vanished, *rest])
