"""`object_watch.Mirror`, under the elevation store and the revocation check: a mirror that
kept an object it should have dropped would grant a group or hide a revocation."""

from __future__ import annotations

from typing import Any

from pinniped_concierge.object_watch import Mirror


def obj(name: str, owner: str | None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "owner": owner}


def owner_of(o: dict[str, Any]) -> tuple[str, str] | None:
    """(owner, name); an object without an owner is one the mirror must not hold."""
    owner = o.get("owner")
    return None if owner is None else (owner, o["metadata"]["name"])


def mirror(max_objects: int | None = None) -> Mirror[tuple[str, str]]:
    return Mirror(owner_of, group_by=lambda parsed: parsed[0], max_objects=max_objects)


def test_it_knows_nothing_until_listed_and_after_the_watch_is_lost() -> None:
    m = mirror()
    m.apply("ADDED", obj("a", "alice"))  # before the list: the list will have it
    assert (m.snapshot(), m.group("alice"), m.count(), m.synced()) == (None, None, None, False)
    m.reset([obj("a", "alice")])
    assert (m.snapshot(), m.group("alice"), m.group("bob"), m.count()) == (
        [("alice", "a")], [("alice", "a")], [], 1)
    m.lost()
    assert (m.snapshot(), m.group("alice"), m.count()) == (None, None, None)
    m.reset([])
    assert m.group("alice") == []


def test_a_changed_object_moves_between_groups_and_a_refused_one_is_dropped() -> None:
    m = mirror()
    m.reset([obj("a", "alice"), obj("b", "alice")])
    m.apply("MODIFIED", obj("a", "bob"))
    assert (m.group("alice"), m.group("bob")) == ([("alice", "b")], [("bob", "a")])
    m.apply("MODIFIED", obj("b", None))  # no longer parses: gone, not kept as it was
    assert (m.group("alice"), m.count()) == ([], 1)
    m.apply("DELETED", obj("a", "bob"))
    assert (m.snapshot(), m.group("bob")) == ([], [])


def test_the_cap_keeps_changes_to_held_objects_but_no_new_ones() -> None:
    m = mirror(max_objects=2)
    m.reset([obj("a", "alice"), obj("b", "bob"), obj("c", "carol")])
    assert (m.count(), m.group("carol")) == (2, [])
    m.apply("MODIFIED", obj("b", "dave"))
    assert m.group("dave") == [("dave", "b")]
    m.apply("ADDED", obj("d", "erin"))
    assert (m.group("erin"), m.count()) == ([], 2)
    m.apply("DELETED", obj("a", "alice"))
    m.apply("ADDED", obj("d", "erin"))
    assert m.group("erin") == [("erin", "d")]


def test_an_object_without_a_name_is_ignored() -> None:
    m = mirror()
    m.reset([{"metadata": {}, "owner": "alice"}])
    m.apply("ADDED", {"owner": "alice"})
    assert m.snapshot() == []
