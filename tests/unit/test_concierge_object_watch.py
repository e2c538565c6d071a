"""The watch mirror: what the per-user cache may trust, and when it may trust nothing."""

from __future__ import annotations

from typing import Any

import pytest

from pinniped_concierge import naming, object_watch
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.object_watch import (
    ObjectVersions,
    ObjectWatcher,
    WatchBroken,
    handle_event,
)

NS = "pinniped-concierge"


def obj(name: str, version: str, user: str | None = None, created: str = "") -> dict[str, Any]:
    labels = {naming.USER_LABEL: user} if user else {}
    return {"metadata": {"name": name, "resourceVersion": version, "uid": f"uid-{name}",
                         "labels": labels, "creationTimestamp": created}}


def test_nothing_matches_before_the_first_list() -> None:
    versions = ObjectVersions()
    assert not versions.synced(Kind.CLUSTER_ROLE)
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])
    assert versions.of_user(Kind.SECRET, "u") is None
    versions.apply(Kind.CLUSTER_ROLE, "ADDED", obj("a", "1"))  # ignored until listed
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])


def test_matches_only_the_exact_current_versions() -> None:
    versions = ObjectVersions()
    versions.reset(Kind.CLUSTER_ROLE, [obj("a", "1")])
    versions.reset(Kind.SERVICE_ACCOUNT, [obj("a", "7")])
    assert versions.matches([(Kind.CLUSTER_ROLE, "a", "1"), (Kind.SERVICE_ACCOUNT, "a", "7")])
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "2")])
    assert not versions.matches([(Kind.CLUSTER_ROLE, "b", "1")])
    # a kind that is not watched makes the whole answer "unknown"
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1"),
                                 (Kind.CLUSTER_ROLE_BINDING, "a", "3")])
    versions.apply(Kind.CLUSTER_ROLE, "MODIFIED", obj("a", "5"))
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])
    assert versions.matches([(Kind.CLUSTER_ROLE, "a", "5")])
    versions.apply(Kind.CLUSTER_ROLE, "DELETED", obj("a", "6"))
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "5")])


def test_a_lost_watch_forgets_everything_of_that_kind() -> None:
    versions = ObjectVersions()
    versions.reset(Kind.CLUSTER_ROLE, [obj("a", "1")])
    versions.lost(Kind.CLUSTER_ROLE)
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])
    versions.apply(Kind.CLUSTER_ROLE, "MODIFIED", obj("a", "1"))  # a late event: ignored
    assert not versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])
    versions.reset(Kind.CLUSTER_ROLE, [obj("a", "1")])
    assert versions.matches([(Kind.CLUSTER_ROLE, "a", "1")])


def test_objects_are_indexed_by_user() -> None:
    versions = ObjectVersions()
    versions.reset(Kind.SECRET, [obj("s1", "1", "alice", "2024-01-01T00:00:01Z"),
                                 obj("s2", "2", "bob")])
    versions.apply(Kind.SECRET, "ADDED", obj("s3", "3", "alice", "2024-01-01T00:00:03Z"))
    alice = versions.of_user(Kind.SECRET, "alice")
    assert alice is not None
    assert sorted(alice) == ["s1", "s3"]
    assert alice["s3"].created == "2024-01-01T00:00:03.000000Z"
    assert alice["s3"].uid == "uid-s3"
    versions.apply(Kind.SECRET, "DELETED", obj("s1", "4", "alice"))
    versions.apply(Kind.SECRET, "MODIFIED", obj("s3", "5", "carol"))  # relabelled
    assert versions.of_user(Kind.SECRET, "alice") == {}
    assert sorted(versions.of_user(Kind.SECRET, "carol") or {}) == ["s3"]


class _Client:
    user_agent = ""


def test_watch_events_update_the_mirror_and_odd_ones_break_the_watch() -> None:
    versions = ObjectVersions()
    watcher = ObjectWatcher(_Client(), NS, versions)
    versions.reset(Kind.CLUSTER_ROLE, [])
    roles = watcher.kinds[Kind.CLUSTER_ROLE].target
    added = {"type": "ADDED", "raw_object": obj("a", "9")}
    assert handle_event(roles, added) == "9"
    assert versions.matches([(Kind.CLUSTER_ROLE, "a", "9")])
    bookmark = {"type": "BOOKMARK", "raw_object": {"metadata": {"resourceVersion": "12"}}}
    assert handle_event(roles, bookmark) == "12"
    assert versions.matches([(Kind.CLUSTER_ROLE, "a", "9")])
    for event in ({"type": "ERROR", "raw_object": {"code": 410}}, {"type": "ADDED"}, "junk"):
        with pytest.raises(WatchBroken):
            handle_event(roles, event)


def test_the_watch_has_its_own_user_agent_and_selectors() -> None:
    client = _Client()
    watcher = ObjectWatcher(client, NS, ObjectVersions())
    assert client.user_agent == "pinniped-concierge-watch"
    selectors = {kind: source.label_selector for kind, source in watcher.kinds.items()}
    assert selectors[Kind.CLUSTER_ROLE] == (
        f"app.kubernetes.io/managed-by=pinniped-concierge,concierge.pinniped.dev/namespace={NS}")
    assert selectors[Kind.SECRET] == naming.session_selector()


class _Response:
    data = b'{"metadata": {"resourceVersion": "1"}, "items": []}'


class _Target:
    def reset(self, objects: list[Any]) -> None: ...
    def apply(self, event_type: str, obj: Any) -> None: ...
    def lost(self) -> None: ...


def test_a_successful_list_resets_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """After apiserver restarts that each break the watch, the retry waits the shortest
    delay again once a list succeeded: the longest one would break the 10 s promise."""
    from pinniped_concierge import object_watch

    waits: list[float] = []
    lists: list[int] = []

    def list_fn(**arguments: Any) -> _Response:
        if arguments.get("watch"):
            raise ConnectionResetError("apiserver restarted")
        lists.append(1)
        return _Response()

    watch = object_watch.ListWatch([object_watch.WatchSource(
        "things", list_fn, {}, "", _Target(), meanwhile="the last known things stay")])

    def wait(delay: float | None = None) -> bool:
        waits.append(delay or 0.0)
        if len(waits) >= 6:
            watch._stopping.set()
        return watch._stopping.is_set()

    monkeypatch.setattr(watch._stopping, "wait", wait)
    watch._run(watch.sources[0])
    assert len(lists) == 6  # every retry listed successfully
    assert waits == [object_watch.RETRY_DELAYS_SECONDS[0]] * 6


def test_a_sessions_start_to_the_microsecond_orders_it() -> None:
    """creationTimestamp has whole seconds; many sessions of one user start within one."""
    versions = ObjectVersions()
    early, late = (obj(name, "1", "alice", "2024-01-01T00:00:01Z") for name in ("zz", "aa"))
    early["metadata"]["annotations"] = {naming.STARTED_ANNOTATION: "2024-01-01T00:00:01.1Z"}
    late["metadata"]["annotations"] = {naming.STARTED_ANNOTATION: "2024-01-01T00:00:01.25Z"}
    odd = obj("odd", "1", "alice", "not a time")
    versions.reset(Kind.SECRET, [late, early, odd])
    alice = versions.of_user(Kind.SECRET, "alice") or {}
    assert sorted(alice, key=lambda name: alice[name].created) == ["odd", "zz", "aa"]
    assert alice["zz"].created == "2024-01-01T00:00:01.100000Z"


def test_secret_deletions_are_remembered_by_uid_boundedly_until_the_watch_is_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_watch, "MAX_REMEMBERED_DELETIONS", 2)
    versions = ObjectVersions()
    versions.apply(Kind.SECRET, "DELETED", obj("early", "1"))  # before the list: not known
    assert not versions.secret_deleted("early", "uid-early")
    versions.reset(Kind.SECRET, [obj(name, "1") for name in ("a", "b", "c")])
    versions.reset(Kind.CLUSTER_ROLE, [obj("r", "1")])
    for name in ("a", "b", "c"):
        versions.apply(Kind.SECRET, "DELETED", obj(name, "2"))
    versions.apply(Kind.CLUSTER_ROLE, "DELETED", obj("r", "2"))  # not a Secret: not kept
    assert [versions.secret_deleted(n, f"uid-{n}") for n in ("a", "b", "c", "r")] == [
        False, True, True, False]  # the oldest forgotten
    assert not versions.secret_deleted("c", "uid-of-another-c")  # the name taken again
    assert not versions.secret_deleted("c", None)
    versions.lost(Kind.SECRET)
    assert not versions.secret_deleted("b", "uid-b")
