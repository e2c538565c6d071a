"""JWTAuthenticator objects with a fake Kubernetes: what is used, what is refused, and the status.

The fake apiserver (`FakeKube`) keeps the objects and feeds the controller's
mirror as the real watch would; the verifiers are fakes whose key check
succeeds or fails at a chosen stage, so each condition can be produced.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import threading
from pathlib import Path
from typing import Any

import pytest

from localenv import pki
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_apis.authentication import ClaimMappings, JWTAuthenticatorFields
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet
from pinniped_concierge.cluster_authenticators import (
    Built,
    ClusterAuthenticators,
    ObjectSettings,
)
from pinniped_concierge.config import JWTAuthenticatorConfig
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.jwt_authenticator import (
    DiscoveryError,
    FetchError,
    JWKSFetchError,
    JWKSURLError,
)
from pinniped_concierge.kubeapi import JWT_AUTHENTICATORS
from pinniped_concierge.login import LoginService
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

ISSUER = "https://idp.example.com"
CONDITIONS = ("AuthenticatorValid", "IssuerURLValid", "DiscoveryURLValid", "JWKSURLValid",
              "JWKSFetchValid", "Ready")
STATUS_WRITE = "update JWTAuthenticator status"


def spec(**fields: Any) -> dict[str, Any]:
    return {"issuer": ISSUER, "audience": "pinniped-cli",
            "claims": {"username": "email", "groups": "groups"},
            "usernamePrefix": "obj:", "groupsPrefix": "obj:"} | fields


class FakeKeys:
    """A verifier whose key check fails with `failure` (None: succeeds)."""

    def __init__(self, name: str, settings: ObjectSettings | None = None) -> None:
        self._name = name
        self.settings = settings
        self.failure: Exception | None = None
        self.checks = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    async def verify(self, token: str) -> dict[str, object]:
        return {"email": token}

    async def ready(self) -> bool:
        return True

    async def refresh_keys(self) -> None:
        self.checks += 1
        if self.failure is not None:
            raise self.failure


class World:
    def __init__(self, file: tuple[JWTAuthenticatorConfig, ...] = (), max_objects: int = 64,
                 refresh_interval: float = 300.0) -> None:
        self.clock = ManualClock()
        self.kube = FakeKube(self.clock)
        self.built: dict[str, list[FakeKeys]] = {}
        self.failures: dict[str, Exception] = {}
        self.set = AuthenticatorSet({
            a.name: Authenticator(FakeKeys(a.name), IdentityMapper.from_config(a), a.issuer,
                                  a.audience)
            for a in file})
        self.controller = ClusterAuthenticators(
            self.kube, self.set, {a.name: a for a in file}, self.build,
            max_objects=max_objects, refresh_interval_seconds=refresh_interval,
            retry_delays_seconds=(0.01,), clock=self.clock)

    def build(self, settings: ObjectSettings) -> Built:
        verifier = FakeKeys(settings.name, settings)
        verifier.failure = self.failures.get(settings.name)
        self.built.setdefault(settings.name, []).append(verifier)

        async def close() -> None:
            verifier.closed = True

        return Built(verifier, close)

    def apply(self, name: str, labels: dict[str, str] | None = None, **fields: Any) -> None:
        self.clock.now += 1  # a later creationTimestamp for each new object
        self.kube.apply_custom(JWT_AUTHENTICATORS, name, spec(**fields), labels)

    async def settle(self) -> None:
        """Reconcile, let the key checks run, reconcile what they found."""
        for _ in range(3):
            await self.controller.reconcile()
            for _ in range(5):
                await asyncio.sleep(0)
        await self.controller.reconcile()

    async def applied_and_checking(self, name: str) -> Any:
        """Apply `name`, settle, and return its entry, whose key check task must be alive."""
        self.apply(name)
        await self.settle()
        entry = self.controller._entries[name]
        assert entry.task is not None
        assert not entry.task.done()
        return entry

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.kube.custom[("jwtauthenticators", name)].get("status") or {}
        return status

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        (found,) = [c for c in self.status(name)["conditions"] if c["type"] == type_]
        return dict(found)

    def assert_kept_out(self, used: str, refused: str) -> None:
        """`refused` overlaps `used`, which logins go on using."""
        assert used in self.set.usable
        assert refused not in self.set.usable
        valid = self.condition(refused, "AuthenticatorValid")
        assert valid["reason"] == "PrefixOverlap"
        assert f"{used!r} is a JWTAuthenticator in use" in valid["message"]

    def writes(self) -> int:
        return self.kube.calls.count(STATUS_WRITE)


def file_authenticator(name: str = "corp", **fields: Any) -> JWTAuthenticatorConfig:
    values: dict[str, Any] = {"name": name, "issuer": "https://corp.example",
                              "audience": "pinniped-cli", "username_prefix": "corp:",
                              "groups_prefix": "corp:",
                              "claims": ClaimMappings(username="email", groups="groups")} | fields
    return JWTAuthenticatorConfig(**values)


@pytest.fixture
def world() -> World:
    w = World()
    w.kube.watch_custom(JWT_AUTHENTICATORS, w.controller.mirror)
    return w


def run(world: World, *steps: Any) -> None:
    """Run test steps (plain calls or coroutine functions) in one event loop, as the server
    would, then stop the controller's key checks."""
    async def go() -> None:
        for step in steps:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        await world.controller.close()
    asyncio.run(go())


def test_a_valid_object_is_used_and_reported_ready(world: World, tmp_path: Path) -> None:
    ca = pki.CA.create(tmp_path, "idp-ca")
    ca_data = base64.b64encode(ca.cert_path.read_bytes()).decode()

    async def go() -> None:
        world.apply("obj", tls={"certificateAuthorityData": ca_data})
        await world.settle()
        authenticator = world.set.usable["obj"]
        assert (authenticator.source, authenticator.issuer) == ("cluster", ISSUER)
        assert authenticator.mapper == IdentityMapper("email", "groups", "obj:", "obj:")
        (verifier,) = world.built["obj"]
        assert verifier.settings is not None
        assert verifier.settings.audience == "pinniped-cli"
        assert verifier.settings.ca_pem() == ca.cert_path.read_text()
        assert authenticator.issuer_ca_data == ca_data  # published for clients
        assert verifier.checks == 1
        await world.controller.close()

    asyncio.run(go())
    status = world.status("obj")
    assert status["phase"] == "Ready"
    assert [c["type"] for c in status["conditions"]] == list(CONDITIONS)
    for item in status["conditions"]:
        assert (item["status"], item["reason"], item["observedGeneration"]) == (
            "True", "Success", 1), item
    assert world.writes() == 2  # Pending, then Ready


def test_status_is_written_only_when_it_changes(world: World) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.settle()
        assert world.writes() == 2  # Pending, then Ready
        for _ in range(3):  # our own write came back through the watch: nothing to do
            await world.settle()
        assert world.writes() == 2
        world.apply("obj", labels={"team": "a"})  # no new generation, same status
        await world.settle()
        assert world.writes() == 2
        assert len(world.built["obj"]) == 1  # nor a new verifier
        world.apply("obj", audience="another")  # a new generation: a new verifier and status
        await world.settle()
        assert world.writes() == 4  # Pending again (a new spec), then Ready
        assert world.condition("obj", "Ready")["observedGeneration"] == 2
        first, second = world.built["obj"]
        assert first.closed
        assert not second.closed
        await world.controller.close()
        assert second.closed

    asyncio.run(go())


def test_transition_times_stay_until_a_condition_changes(world: World) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.settle()
        since = world.condition("obj", "IssuerURLValid")["lastTransitionTime"]
        ready_since = world.condition("obj", "Ready")["lastTransitionTime"]
        world.clock.now += 3600
        world.apply("obj", audience="another")
        world.failures["obj"] = DiscoveryError("https://idp.example.com/...: HTTP 500")
        await world.settle()
        assert world.condition("obj", "IssuerURLValid")["lastTransitionTime"] == since
        assert world.condition("obj", "Ready")["lastTransitionTime"] != ready_since
        await world.controller.close()

    asyncio.run(go())


@pytest.mark.parametrize(("failure", "failed", "reason", "unknown"), [
    (DiscoveryError("https://idp.example.com/.well-known/openid-configuration: ConnectError"),
     "DiscoveryURLValid", "DiscoveryFailed", ("JWKSURLValid", "JWKSFetchValid")),
    (JWKSURLError("https://idp.example.com: discovery document has no https jwks_uri"),
     "JWKSURLValid", "InvalidJWKSURL", ("JWKSFetchValid",)),
    (JWKSFetchError("https://idp.example.com/keys: no usable signature keys"),
     "JWKSFetchValid", "JWKSFetchFailed", ()),
])
def test_each_failed_check_is_its_condition_and_the_object_is_not_used(
        world: World, failure: FetchError, failed: str, reason: str,
        unknown: tuple[str, ...]) -> None:
    world.failures["obj"] = failure

    async def go() -> None:
        world.apply("obj")
        await world.settle()
        assert "obj" not in world.set.usable
        await world.controller.close()

    asyncio.run(go())
    assert world.status("obj")["phase"] == "Error"
    bad = world.condition("obj", failed)
    assert (bad["status"], bad["reason"]) == ("False", reason)
    assert str(failure) in bad["message"]
    for type_ in unknown:
        assert world.condition("obj", type_)["status"] == "Unknown"
    before = CONDITIONS[:CONDITIONS.index(failed)]
    assert all(world.condition("obj", t)["status"] == "True" for t in before)
    ready = world.condition("obj", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotReady")
    assert failed in ready["message"]
    _, why = world.set.lookup("obj")
    assert why == f"Error: {failed} is False ({reason})"


def test_an_unexpected_error_in_a_check_is_a_failed_check_not_a_dead_task(
        world: World) -> None:
    world.failures["obj"] = RuntimeError("surprise")

    async def go() -> None:
        await world.applied_and_checking("obj")
        await world.controller.close()

    asyncio.run(go())
    assert "RuntimeError: surprise" in world.condition("obj", "DiscoveryURLValid")["message"]


def test_an_object_whose_idp_comes_up_turns_ready_and_one_that_breaks_turns_error() -> None:
    w = World(refresh_interval=0.02)
    w.kube.watch_custom(JWT_AUTHENTICATORS, w.controller.mirror)
    w.failures["obj"] = DiscoveryError("https://idp.example.com/...: ConnectError")

    async def until(condition: Any) -> None:
        async with asyncio.timeout(5):
            while not condition():
                await w.controller.reconcile()
                await asyncio.sleep(0.005)

    async def go() -> None:
        w.apply("obj")
        await w.settle()
        assert w.status("obj")["phase"] == "Error"
        (verifier,) = w.built["obj"]
        verifier.failure = None  # the IdP is up
        await until(lambda: w.status("obj")["phase"] == "Ready")
        assert "obj" in w.set.usable
        verifier.failure = JWKSFetchError("https://idp.example.com/keys: HTTP 503")
        await until(lambda: w.status("obj")["phase"] == "Error")
        assert "obj" not in w.set.usable
        assert w.condition("obj", "JWKSFetchValid")["reason"] == "JWKSFetchFailed"
        assert len(w.built["obj"]) == 1  # checked again, not rebuilt
        await w.controller.close()

    asyncio.run(go())


@pytest.mark.parametrize(("name", "fields", "where", "issuer_valid"), [
    ("obj", {"issuer": "http://idp.example.com"}, "spec.issuer", False),
    ("obj", {"issuer": "https://idp.example.com?x=1"}, "spec.issuer", False),
    ("obj", {"usernamePrefix": ""}, "spec.usernamePrefix: must not be empty", True),
    ("obj", {"groupsPrefix": "system:masters"}, "spec.groupsPrefix: must not start with", True),
    ("obj", {"algorithms": ["HS256"]}, "spec.algorithms", True),
    ("obj", {"tls": {"certificateAuthorityData": "bm90IGEgY2VydA=="}},
     "spec.tls.certificateAuthorityData: must be base64 of PEM", True),
    ("obj", {"audiences": ["x"]}, "spec.audiences: ", True),
    ("corp.example", {}, "metadata.name must be a DNS label", True),
])
def test_an_invalid_object_is_refused_in_its_status_and_never_built(
        world: World, name: str, fields: dict[str, Any], where: str,
        issuer_valid: bool) -> None:
    run(world, lambda: world.apply(name, **fields), world.settle)
    assert name not in world.built
    assert world.status(name)["phase"] == "Error"
    valid = world.condition(name, "AuthenticatorValid")
    assert valid["status"] == "False"
    assert valid["reason"] in ("InvalidSpec", "InvalidName")
    assert where in valid["message"]
    issuer = world.condition(name, "IssuerURLValid")
    assert issuer["status"] == ("True" if issuer_valid else "False")
    for type_ in ("DiscoveryURLValid", "JWKSURLValid", "JWKSFetchValid"):
        assert world.condition(name, type_)["status"] == "Unknown"
    _, why = world.set.lookup(name)
    assert why is not None


def test_an_object_not_even_a_mapping_is_refused_not_fatal(world: World) -> None:
    world.kube.apply_custom(JWT_AUTHENTICATORS, "odd", "a string")
    world.apply("obj")
    run(world, world.settle)
    assert "spec: must be an object" in world.condition("odd", "AuthenticatorValid")["message"]
    assert "obj" in world.set.usable


def file_world(*file: JWTAuthenticatorConfig, **options: Any) -> World:
    w = World(file=file, **options)
    w.kube.watch_custom(JWT_AUTHENTICATORS, w.controller.mirror)
    return w


def test_a_name_from_the_config_file_belongs_to_the_file() -> None:
    w = file_world(file_authenticator("corp"))
    run(w, lambda: w.apply("corp", usernamePrefix="x:", groupsPrefix="x:"), w.settle)
    valid = w.condition("corp", "AuthenticatorValid")
    assert (valid["status"], valid["reason"]) == ("False", "NameClash")
    assert "config file" in valid["message"]
    assert w.set.usable["corp"].source == "config"
    assert "corp" not in w.built


@pytest.mark.parametrize(("fields", "key"), [
    ({"usernamePrefix": "corp:"}, "usernamePrefix"),
    ({"usernamePrefix": "corp:x:"}, "usernamePrefix"),
    ({"usernamePrefix": "co"}, "usernamePrefix"),
    ({"groupsPrefix": "corp:admins-"}, "groupsPrefix"),
])
def test_prefixes_overlapping_a_file_authenticators_are_refused(fields: dict[str, Any],
                                                                  key: str) -> None:
    w = file_world(file_authenticator("corp"))
    run(w, lambda: w.apply("partner", **fields), w.settle)
    valid = w.condition("partner", "AuthenticatorValid")
    assert (valid["status"], valid["reason"]) == ("False", "PrefixOverlap")
    assert valid["message"].startswith(f"spec.{key}: ")
    assert "'corp' is in the concierge's config file" in valid["message"]
    assert "partner" not in w.set.usable


def test_an_empty_file_prefix_leaves_no_room_for_any_object() -> None:
    raw = file_authenticator("raw", username_prefix="", groups_prefix="",
                             allow_empty_prefixes=True)
    w = file_world(raw)
    run(w, lambda: w.apply("obj"), w.settle)
    assert w.condition("obj", "AuthenticatorValid")["reason"] == "PrefixOverlap"


def test_an_object_never_shares_a_prefix_with_the_file_even_with_its_issuer() -> None:
    """Whoever may create objects must not get the file's names: with the file's issuer
    and prefix but another audience (or CA), an object could accept tokens the file's
    authenticator would refuse, and mint the file's names from them."""
    w = file_world(file_authenticator("corp", issuer=ISSUER))
    run(w, lambda: w.apply("corp-other-client", usernamePrefix="corp:", groupsPrefix="corp:",
                           audience="another-client"), w.settle)
    valid = w.condition("corp-other-client", "AuthenticatorValid")
    assert valid["reason"] == "PrefixOverlap"
    assert "never shares a prefix with the config file's" in valid["message"]
    assert "corp-other-client" not in w.set.usable


def test_objects_share_a_prefix_only_with_the_same_issuer_claims_and_ca(
        world: World, tmp_path: Path) -> None:
    ca_data = base64.b64encode(pki.CA.create(tmp_path, "other-ca").cert_path.read_bytes()
                               ).decode()
    run(world, lambda: world.apply("one"), world.settle,
        lambda: world.apply("other-client", audience="another-client"),
        lambda: world.apply("by-sub", claims={"username": "sub", "groups": "groups"}),
        lambda: world.apply("other-ca", audience="third", tls={"certificateAuthorityData":
                                                               ca_data}),
        world.settle)
    assert world.status("other-client")["phase"] == "Ready"  # same IdP, another OAuth client
    # the same issuer, but sub "bob" could meet email "bob": not the same mapping
    assert world.condition("by-sub", "AuthenticatorValid")["reason"] == "PrefixOverlap"
    # another CA could mean another server's keys for the same issuer URL
    other_ca = world.condition("other-ca", "AuthenticatorValid")
    assert other_ca["reason"] == "PrefixOverlap"
    assert "spec.tls" in other_ca["message"]


def test_of_two_overlapping_objects_the_older_is_used_until_it_goes(world: World) -> None:
    async def go() -> None:
        world.apply("older")
        world.apply("newer", usernamePrefix="obj:x", groupsPrefix="x:",
                    issuer="https://other.example")
        await world.settle()
        world.assert_kept_out("older", "newer")
        world.kube.delete_custom(JWT_AUTHENTICATORS, "older")
        await world.settle()
        assert "newer" in world.set.usable
        assert world.status("newer")["phase"] == "Ready"
        assert world.built["older"][0].closed
        await world.controller.close()

    asyncio.run(go())


def test_objects_beyond_the_bound_are_refused_and_admitted_when_room_is_made() -> None:
    w = file_world(max_objects=2)

    async def go() -> None:
        for i in range(3):
            w.apply(f"obj{i}", usernamePrefix=f"o{i}:", groupsPrefix=f"o{i}:")
        await w.settle()
        assert sorted(n for n in w.set.usable) == ["obj0", "obj1"]
        valid = w.condition("obj2", "AuthenticatorValid")
        assert valid["reason"] == "TooManyAuthenticators"
        assert "at most 2" in valid["message"]
        assert "obj2" not in w.built
        w.kube.delete_custom(JWT_AUTHENTICATORS, "obj0")
        await w.settle()
        assert sorted(w.set.usable) == ["obj1", "obj2"]
        await w.controller.close()

    asyncio.run(go())


def test_deleted_objects_stop_their_checks_and_close_their_clients(world: World) -> None:
    async def go() -> None:
        entry = await world.applied_and_checking("obj")
        assert entry.task is not None
        world.kube.delete_custom(JWT_AUTHENTICATORS, "obj")
        await world.settle()
        assert entry.task.cancelled()
        assert world.built["obj"][0].closed
        assert "obj" not in world.set.usable
        assert world.set.lookup("obj") == (None, None)  # unknown again, not "not ready"
        assert world.kube.calls.count(STATUS_WRITE) == 2  # nothing written about a deleted one

    asyncio.run(go())


def test_an_object_being_deleted_is_no_longer_used(world: World) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.settle()
        obj = world.kube.custom[("jwtauthenticators", "obj")]
        obj["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        world.controller.mirror.apply("MODIFIED", obj)
        await world.settle()
        assert "obj" not in world.set.usable
        await world.controller.close()

    asyncio.run(go())


def test_a_status_write_that_loses_a_race_is_dropped_and_retried_later(world: World) -> None:
    original = world.kube.replace_custom_status
    losses = [True]

    async def racing(resource: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if losses:
            losses.pop()
            world.kube.calls.append(STATUS_WRITE)
            from pinniped_concierge.kubeapi import Conflict
            raise Conflict("someone else wrote first")
        return await original(resource, name, body)

    world.kube.replace_custom_status = racing  # type: ignore[method-assign]
    run(world, lambda: world.apply("obj"), world.settle)
    assert world.status("obj")["phase"] == "Ready"
    assert world.writes() == 2


def test_not_ready_until_the_objects_were_listed_once() -> None:
    w = World()

    async def go() -> None:
        assert await w.controller.readiness_problem() is not None
        await w.controller.reconcile()  # nothing listed: nothing decided, nothing written
        assert w.kube.calls == []
        w.kube.watch_custom(JWT_AUTHENTICATORS, w.controller.mirror)
        assert await w.controller.readiness_problem() is None
        w.controller.mirror.lost()  # a broken watch keeps the last known objects
        assert await w.controller.readiness_problem() is None

    asyncio.run(go())


def test_the_running_controller_follows_changes_made_from_the_watch_thread() -> None:
    w = World()
    w.kube.watch_custom(JWT_AUTHENTICATORS, w.controller.mirror)

    async def go() -> None:
        task = asyncio.create_task(w.controller.run())
        await asyncio.sleep(0.05)
        thread = threading.Thread(target=w.apply, args=("obj",))
        thread.start()  # the watch calls the mirror from its own thread
        thread.join()
        async with asyncio.timeout(5):
            while "obj" not in w.set.usable:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert w.built["obj"][0].closed  # cancelling the task stops everything

    asyncio.run(go())


def _login_service(authenticators: AuthenticatorSet) -> LoginService:
    kube = FakeKube()
    return LoginService(authenticators, UserObjects(kube, "ns", 300),
                        Sessions(kube, "ns", 600, 30))


def test_a_login_naming_an_unusable_object_fails_with_its_own_reason(world: World) -> None:
    world.failures["broken"] = DiscoveryError("https://idp.example.com/...: ConnectError")
    run(world, lambda: world.apply("broken"), world.settle)
    service = _login_service(world.set)

    def reason(name: str) -> tuple[Reason, str]:
        request = wire.TokenCredentialRequest.create(token="alice@example.com",
                                                     authenticator_name=name)
        with pytest.raises(Rejected) as info:
            asyncio.run(service.login(request, AuditEvent("login", "test")))
        return info.value.reason, info.value.detail

    assert reason("broken") == (Reason.AUTHENTICATOR_NOT_READY, "JWTAuthenticator is not "
                                "used: Error: DiscoveryURLValid is False (DiscoveryFailed)")
    assert reason("nobody")[0] == Reason.UNKNOWN_AUTHENTICATOR


def test_logins_read_a_new_set_without_waiting_for_anyone() -> None:
    """The hot path reads one attribute; a publish swaps it whole."""
    fields = JWTAuthenticatorFields(issuer=ISSUER, audience="a", username_prefix="o:",
                                    groups_prefix="o:")
    one = Authenticator(FakeKeys("one"), IdentityMapper.from_config(fields), source="cluster")
    authenticators = AuthenticatorSet({})
    before = authenticators.usable
    heard: list[int] = []
    authenticators.on_change(lambda: heard.append(1))
    authenticators.publish({"one": one}, {})
    assert dict(before) == {}  # a reader holding the old view is unaffected
    assert authenticators.usable["one"] is one
    authenticators.publish({"one": one}, {"two": "Pending"})  # same usable set: no news
    assert heard == [1]
    with pytest.raises(TypeError):
        authenticators.usable["two"] = one  # type: ignore[index]



def test_pending_is_written_before_the_first_check_completes(world: World) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.controller.reconcile()  # admitted; its key check has not run yet
        status = world.status("obj")
        assert status["phase"] == "Pending"
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "AuthenticatorValid": "True", "IssuerURLValid": "True", "DiscoveryURLValid":
            "Unknown", "JWKSURLValid": "Unknown", "JWKSFetchValid": "Unknown",
            "Ready": "Unknown"}
        assert world.writes() == 1
        await world.controller.reconcile()  # still checking: Pending is not written again
        assert world.writes() == 1
        await world.settle()
        assert world.status("obj")["phase"] == "Ready"
        assert world.writes() == 2
        await world.controller.close()

    asyncio.run(go())


def test_only_the_current_generation_of_an_object_is_kept_parsed(world: World) -> None:
    async def go() -> None:
        for i in range(20):
            world.kube.apply_custom(JWT_AUTHENTICATORS, "obj", spec(audience=f"a{i % 2}"))
            await world.controller.reconcile()
        assert len(world.controller._parsed) == 1
        await world.controller.close()

    asyncio.run(go())


def _write_foreign_status(world: World, name: str, phase: str) -> None:
    """Another writer (a concierge with another config, another tool) sets the status."""
    obj = world.kube.custom[("jwtauthenticators", name)]
    new = copy.deepcopy(obj)
    new["status"] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "False", "reason": "Theirs", "message": "theirs",
         "lastTransitionTime": "2030-01-01T00:00:00Z"},
        {"type": "example.com/Scanned", "status": "True", "reason": "Scanned",
         "message": "by another tool", "lastTransitionTime": "2030-01-01T00:00:00Z"}]}
    world.kube._store(JWT_AUTHENTICATORS, new, obj)  # a new resourceVersion, a watch event


def test_fighting_another_status_writer_is_bounded_and_warned_once(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.settle()
        assert world.writes() == 2
        start = world.clock.now
        for _ in range(200):  # the other writer answers every write of ours at once
            _write_foreign_status(world, "obj", "Error")
            await world.controller.reconcile()
            world.clock.now += 0.1
        # 20 s: after 1, 2, 5 and 10 s, not 200 writes
        assert world.writes() - 2 == 4, world.clock.now - start
        world.clock.now += 30  # the longest step passed: ours is written again
        await world.controller.reconcile()
        assert world.writes() - 2 == 5
        await world.controller.close()

    with caplog.at_level("WARNING", logger="concierge.authenticators"):
        asyncio.run(go())
    assert sum("someone else keeps writing" in r.getMessage() for r in caplog.records) == 1
    # what we write keeps the other tool's condition and replaces only ours
    types = [c["type"] for c in world.status("obj")["conditions"]]
    assert sorted(types) == sorted((*CONDITIONS, "example.com/Scanned"))


def test_conditions_of_other_types_are_kept_when_we_write(world: World) -> None:
    async def go() -> None:
        world.apply("obj")
        await world.settle()
        _write_foreign_status(world, "obj", "Ready")  # their Ready and their own type
        await world.settle()
        assert world.condition("obj", "Ready")["reason"] == "Theirs"  # not at once: 1 s on
        world.clock.now += 1
        await world.settle()
        await world.controller.close()

    asyncio.run(go())
    status = world.status("obj")
    assert status["phase"] == "Ready"
    assert world.condition("obj", "Ready")["reason"] == "Success"  # ours again
    assert world.condition("obj", "example.com/Scanned")["message"] == "by another tool"


def test_an_object_in_use_keeps_its_place_against_a_newer_one_of_the_same_second(
        world: World) -> None:
    async def go() -> None:
        world.kube.apply_custom(JWT_AUTHENTICATORS, "zeta", spec(issuer="https://zeta.example"))
        await world.settle()
        assert "zeta" in world.set.usable
        # another admin applies another IdP with the same prefixes within the same second
        world.kube.apply_custom(JWT_AUTHENTICATORS, "alpha",
                                spec(issuer="https://alpha.example"))
        await world.settle()
        world.assert_kept_out("zeta", "alpha")
        assert world.status("zeta")["phase"] == "Ready"
        await world.controller.close()

    asyncio.run(go())


def test_fixing_an_older_invalid_object_does_not_displace_a_younger_one_in_use(
        world: World) -> None:
    async def go() -> None:
        world.apply("old", issuer="http://old.example")  # invalid: http
        world.apply("new", issuer="https://new.example")
        await world.settle()
        assert sorted(world.set.usable) == ["new"]
        world.kube.apply_custom(JWT_AUTHENTICATORS, "old", spec(issuer="https://old.example"))
        await world.settle()
        assert sorted(world.set.usable) == ["new"]
        assert world.condition("old", "AuthenticatorValid")["reason"] == "PrefixOverlap"
        await world.controller.close()

    asyncio.run(go())


def test_two_new_overlapping_objects_of_the_same_second_are_both_refused(
        world: World) -> None:
    async def go() -> None:
        world.kube.apply_custom(JWT_AUTHENTICATORS, "zeta", spec(issuer="https://zeta.example"))
        world.kube.apply_custom(JWT_AUTHENTICATORS, "alpha",
                                spec(issuer="https://alpha.example"))
        world.apply("apart", usernamePrefix="apart:", groupsPrefix="apart:")
        await world.settle()
        assert sorted(world.set.usable) == ["apart"]
        for name, other in (("zeta", "alpha"), ("alpha", "zeta")):
            valid = world.condition(name, "AuthenticatorValid")
            assert valid["reason"] == "PrefixOverlap"
            assert f"{other!r} was created in the same second" in valid["message"]
            assert "delete one of them" in valid["message"]
        world.kube.delete_custom(JWT_AUTHENTICATORS, "alpha")
        await world.settle()
        assert sorted(world.set.usable) == ["apart", "zeta"]
        await world.controller.close()

    asyncio.run(go())
