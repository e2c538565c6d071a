"""Leader election over a Lease, against the in-memory Kubernetes (`FakeKube`)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_concierge import config
from pinniped_concierge.authenticator_set import AuthenticatorSet
from pinniped_concierge.cluster_authenticators import Built, ClusterAuthenticators, ObjectSettings
from pinniped_concierge.kubeapi import JWT_AUTHENTICATORS
from pinniped_concierge.lease import LeaseElector

NS = "pinniped-concierge"
NAME = "pinniped-concierge"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def elector(kube: FakeKube, clock: ManualClock, identity: str) -> LeaseElector:
    return LeaseElector(kube, NS, NAME, identity=identity, duration_seconds=15,
                        renew_seconds=5, clock=clock, wall_clock=clock)


def spec(kube: FakeKube) -> dict[str, Any]:
    return dict(kube.leases[(NS, NAME)]["spec"])


def test_an_absent_lease_is_created_and_held(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")
    assert asyncio.run(a.step()) == 5
    assert a.leading
    held = spec(kube)
    assert held["holderIdentity"] == "a"
    assert held["leaseDurationSeconds"] == 15
    assert MICRO_TIME.match(held["renewTime"])
    assert held["acquireTime"] == held["renewTime"]
    assert kube.calls == ["read Lease", "create Lease"]


def test_the_holder_renews_with_one_call_per_period(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")

    async def go() -> None:
        await a.step()
        first = spec(kube)
        kube.calls.clear()
        clock.now += 5
        await a.step()
        clock.now += 5
        await a.step()
        assert kube.calls == ["update Lease", "update Lease"]
        renewed = spec(kube)
        assert renewed["renewTime"] > first["renewTime"]
        assert renewed["acquireTime"] == first["acquireTime"]

    asyncio.run(go())
    assert a.leading


def test_a_live_lease_is_left_alone_and_an_expired_one_taken_over(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")

    async def go() -> None:
        await a.step()
        for _ in range(4):  # a renews; b, looking every period, never takes it
            clock.now += 5
            await a.step()
            assert await b.step() <= 5
            assert a.leading
            assert not b.leading
        # a dies: its record stops changing; b, which saw the last renewal just now,
        # takes over once that record is a duration old
        clock.now += 10
        wait = await b.step()
        assert not b.leading
        assert wait == pytest.approx(5)
        clock.now += wait
        await b.step()

    asyncio.run(go())
    assert b.leading
    assert spec(kube)["holderIdentity"] == "b"
    assert spec(kube)["leaseTransitions"] == 1


def test_a_conflict_means_someone_else_won(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")

    async def go() -> None:
        await a.step()
        lease = kube.leases[(NS, NAME)]
        lease["spec"]["holderIdentity"] = "intruder"
        lease["metadata"]["resourceVersion"] = "999"  # what another replica's write does
        clock.now += 5
        await a.step()
        assert not a.leading
        clock.now += 5
        await a.step()  # reads it now, and the intruder's lease is live

    asyncio.run(go())
    assert not a.leading
    assert spec(kube)["holderIdentity"] == "intruder"


def test_a_holder_whose_renewals_fail_steps_down_before_the_lease_expires(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")
    start = clock.now

    async def go() -> float:
        await a.step()
        kube.unavailable = True
        while True:
            clock.now += 5
            stepped_at = clock.now
            await a.step()
            if not a.leading:
                return stepped_at - start
            assert clock.now - start < 20

    stepped_down_after = asyncio.run(go())
    assert stepped_down_after < 15  # nobody else may take over before 15 s


def test_a_stopped_holder_releases_so_the_next_one_takes_over_at_once(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a, b = elector(kube, clock, "a"), elector(kube, clock, "b")

    async def go() -> None:
        task = asyncio.create_task(a.run())
        while not a.leading:
            await asyncio.sleep(0)
        await b.step()
        assert not b.leading
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "holderIdentity" not in spec(kube)
        await b.step()  # no clock movement: released means free now

    asyncio.run(go())
    assert b.leading
    assert not a.leading


def test_leader_work_runs_only_while_leading(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")
    events: list[str] = []
    changes: list[bool] = []
    a.on_change(changes.append)

    async def work() -> None:
        events.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("stopped")

    a.while_leading(work)

    async def go() -> None:
        await a.step()
        await asyncio.sleep(0)
        assert events == ["started"]
        kube.leases[(NS, NAME)]["metadata"]["resourceVersion"] = "999"
        await a.step()  # 409: lost

    asyncio.run(go())
    assert events == ["started", "stopped"]
    assert changes == [True, False]


def _refusing(settings: ObjectSettings) -> Built:
    raise AssertionError("no object is admitted here")


def test_only_the_leader_writes_jwtauthenticator_status(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")
    controller = ClusterAuthenticators(kube, AuthenticatorSet({}), {}, _refusing,
                                       max_objects=1, refresh_interval_seconds=300,
                                       may_write_status=lambda: a.leading)
    kube.watch_custom(JWT_AUTHENTICATORS, controller.mirror)
    kube.apply_custom(JWT_AUTHENTICATORS, "refused", {"issuer": "http://x"})

    async def go() -> None:
        await controller.reconcile()
        assert "status" not in kube.custom[(JWT_AUTHENTICATORS.plural, "refused")]
        await a.step()
        await controller.reconcile()

    asyncio.run(go())
    status = kube.custom[(JWT_AUTHENTICATORS.plural, "refused")]["status"]
    assert status["phase"] == "Error"


def test_the_lease_config_defaults_and_limits(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    base = {"tls": {"certFile": str(tmp_path / "c.pem"), "keyFile": str(tmp_path / "c.pem")},
            "namespace": NS}
    cfg = config.parse(yaml.safe_dump(base), tmp_path)
    assert (cfg.lease.name, cfg.lease.duration_seconds, cfg.lease.renew_interval_seconds) == (
        NAME, 15, 5)
    with pytest.raises(config.ConfigError, match="renewIntervalSeconds"):
        config.parse(yaml.safe_dump(base | {"lease": {"durationSeconds": 9,
                                                      "renewIntervalSeconds": 4}}), tmp_path)


def test_the_rbac_names_the_default_lease() -> None:
    rbac = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
    rules = [rule for doc in yaml.safe_load_all(rbac.read_text()) if doc
             for rule in doc.get("rules", []) if rule["resources"] == ["leases"]]
    named = [rule for rule in rules if rule["verbs"] != ["create"]]
    assert named
    assert all(rule["resourceNames"] == [NAME] for rule in named)
    assert sorted(v for rule in rules for v in rule["verbs"]) == ["create", "get", "update"]


def test_a_holder_whose_renewals_hang_steps_down_before_the_lease_expires() -> None:
    """A partition makes calls hang, not fail: the step-down point must hold regardless."""
    clock = time.monotonic
    kube = FakeKube(clock)
    a = LeaseElector(kube, NS, NAME, identity="a", duration_seconds=0.6, renew_seconds=0.2,
                     clock=clock, wall_clock=time.time)

    async def hang(*_: object) -> None:
        await asyncio.sleep(60)

    async def go() -> float:
        await a.step()
        assert a.leading
        renewed = clock()
        kube.replace_lease = hang  # type: ignore[assignment]
        while clock() - renewed < 2:
            wait = await a.step()
            if not a.leading:
                return clock() - renewed
            await asyncio.sleep(wait)
        raise AssertionError("still leading 2 s after the last renewal")

    stepped_down_after = asyncio.run(go())
    assert not a.leading
    assert stepped_down_after < 0.6  # before anyone else may take over


def test_a_renewal_sends_acquire_time_as_a_micro_time(clock: ManualClock) -> None:
    """As read back, acquireTime may lack the six-digit fraction the apiserver requires."""
    kube = FakeKube(clock)
    a = elector(kube, clock, "a")

    async def go() -> None:
        await a.step()
        kube.leases[(NS, NAME)]["spec"]["acquireTime"] = "2026-12-01T10:00:00+00:00"
        a._lease = kube.leases[(NS, NAME)]  # what the client returned
        clock.now += 5
        await a.step()

    asyncio.run(go())
    assert spec(kube)["acquireTime"] == "2026-12-01T10:00:00.000000Z"
