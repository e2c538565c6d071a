"""At most `maxUsers` users' objects exist: a new user beyond that waits, returning ones don't."""

from __future__ import annotations

import asyncio

import pytest

from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import UserObjects

NS = "pinniped-concierge"


def user(n: int) -> wire.Identity:
    return wire.Identity(f"corp:user{n}@example.com", ("corp:devs",))


def bindings(kube: FakeKube) -> int:
    return sum(1 for (kind, _ns, _name) in kube.objects if kind == Kind.CLUSTER_ROLE_BINDING)


def test_a_new_user_beyond_max_users_gets_503_and_no_object(fake_kube: FakeKube) -> None:
    versions = fake_kube.watch(ObjectVersions(), NS)
    objects = UserObjects(fake_kube, NS, 0, versions, max_users=3)
    for n in range(3):
        asyncio.run(objects.ensure(user(n)))
    with pytest.raises(Unavailable) as refused:
        asyncio.run(objects.ensure(user(3)))
    assert refused.value.reason == Reason.USER_LIMIT_REACHED
    assert refused.value.http_status == 503
    assert refused.value.retry_after_seconds >= 1
    assert bindings(fake_kube) == 3
    # Someone who has their objects keeps logging in, groups changes included.
    asyncio.run(objects.ensure(wire.Identity(user(1).username, ("corp:ops",))))
    assert bindings(fake_kube) == 3


def test_without_a_mirror_there_is_no_count_and_no_refusal(fake_kube: FakeKube) -> None:
    objects = UserObjects(fake_kube, NS, 0, None, max_users=1)
    for n in range(3):
        asyncio.run(objects.ensure(user(n)))
    assert bindings(fake_kube) == 3
