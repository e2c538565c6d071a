"""`pinniped-concierge revoke-user`: what it deletes, what it leaves, what it says."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import yaml

from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_concierge import config, naming
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.main import main
from pinniped_concierge.revocations import read_marker
from pinniped_concierge.revoke_user import EXIT_FAILED, EXIT_OK, EXIT_USAGE, revoke, run
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

NS = "pinniped-concierge"
ALICE = wire.Identity("corp:alice@example.com", ("corp:devs",))
BOB = wire.Identity("corp:bob@example.com", ("corp:ops",))


def logged_in(kube: FakeKube, *identities: wire.Identity, sessions: int = 2) -> list[str]:
    """Log each identity in `sessions` times; returns the tokens."""
    objects = UserObjects(kube, NS, 0)
    store = Sessions(kube, NS, 600, 30)
    tokens = []

    async def go() -> None:
        for identity in identities:
            user = await objects.ensure(identity)
            for _ in range(sessions):
                tokens.append((await store.start(user)).token)

    asyncio.run(go())
    return tokens


def markers(kube: FakeKube) -> list[str]:
    return [name for (kind, _, name), obj in kube.objects.items()
            if kind == Kind.SECRET and read_marker(obj, NS)]


def sessions_of(kube: FakeKube, identity: wire.Identity) -> list[str]:
    key = naming.user_key(identity.username, NS)
    return [name for (kind, _, name), obj in kube.objects.items() if kind == Kind.SECRET
            and naming.label(obj, naming.USER_LABEL) == key
            and name.startswith(naming.SESSION_PREFIX)]


def reviewed(kube: FakeKube, token: str) -> bool:
    return bool(asyncio.run(kube.review_token(token)).get("authenticated"))


def test_revoking_deletes_the_users_objects_and_sessions_and_records_it() -> None:
    kube = FakeKube()
    alice_tokens = logged_in(kube, ALICE)
    bob_tokens = logged_in(kube, BOB)
    name = naming.user_object_name(ALICE.username, NS)
    kube.calls.clear()

    done = asyncio.run(revoke(kube, NS, ALICE.username, revoked_by="admin"))
    # the marker first (a login racing the deletions is refused by then), then the
    # ServiceAccount (every token of it ends at once)
    assert kube.calls == [
        "create Secret", "read ServiceAccount", "delete ServiceAccount",
        "read ClusterRoleBinding", "delete ClusterRoleBinding", "read ClusterRole",
        "delete ClusterRole", "list Secret", "delete Secret", "delete Secret", "list Secret"]


    assert done.deleted == [f"ServiceAccount {name}", f"ClusterRoleBinding {name}",
                            f"ClusterRole {name}"]
    assert done.sessions_ended == 2
    assert done.not_ours == []
    for kind in (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
        assert name not in kube.names(kind)
    assert sessions_of(kube, ALICE) == []
    assert not any(reviewed(kube, token) for token in alice_tokens)
    assert all(reviewed(kube, token) for token in bob_tokens)  # bob keeps everything
    assert len(sessions_of(kube, BOB)) == 2
    assert markers(kube) == [done.marker]
    marker = kube.get(Kind.SECRET, done.marker, NS)
    assert marker is not None
    assert naming.annotation(marker, naming.USERNAME_ANNOTATION) == ALICE.username
    assert done.revoked_at is not None


def test_revoking_again_replaces_the_marker_and_is_harmless() -> None:
    kube = FakeKube()
    logged_in(kube, ALICE)
    first = asyncio.run(revoke(kube, NS, ALICE.username))
    again = asyncio.run(revoke(kube, NS, ALICE.username))
    assert (again.deleted, again.sessions_ended, again.older_markers_removed) == ([], 0, 1)
    assert markers(kube) == [again.marker]
    assert again.marker != first.marker


def test_objects_with_the_users_name_that_are_not_ours_are_left_alone() -> None:
    kube = FakeKube()
    logged_in(kube, ALICE)
    name = naming.user_object_name(ALICE.username, NS)
    role = kube.get(Kind.CLUSTER_ROLE, name)
    binding = kube.get(Kind.CLUSTER_ROLE_BINDING, name)
    assert role is not None
    assert binding is not None
    role["metadata"]["labels"][naming.NAMESPACE_LABEL] = "another-concierge"
    binding["metadata"]["annotations"][naming.USERNAME_ANNOTATION] = BOB.username

    done = asyncio.run(revoke(kube, NS, ALICE.username))
    assert done.deleted == [f"ServiceAccount {name}"]
    assert done.not_ours == [f"ClusterRoleBinding {name}", f"ClusterRole {name}"]
    assert kube.get(Kind.CLUSTER_ROLE, name) is not None
    assert kube.get(Kind.CLUSTER_ROLE_BINDING, name) is not None


def _config(tmp_path: Path, kubeconfig: str | None = None) -> Path:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    document: dict[str, object] = {
        "tls": {"certFile": "c.pem", "keyFile": "k.pem"}, "namespace": NS,
        "authenticators": [{"name": "corp", "issuer": "https://idp", "audience": "a",
                            "usernamePrefix": "corp:", "groupsPrefix": "corp:"}]}
    if kubeconfig is not None:
        (tmp_path / "kubeconfig").write_text(kubeconfig)
        document["kubernetes"] = {"kubeconfig": "kubeconfig"}
    path = tmp_path / "concierge.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _run(tmp_path: Path, kube: FakeKube, username: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(config.load(_config(tmp_path)), username, out, err, kube=kube)
    return code, out.getvalue(), err.getvalue()


def test_the_command_says_what_it_did(tmp_path: Path) -> None:
    kube = FakeKube()
    logged_in(kube, ALICE)
    code, out, err = _run(tmp_path, kube, ALICE.username)
    assert (code, err) == (EXIT_OK, "")
    assert f"revoked '{ALICE.username}' at " in out
    assert "ended 2 session(s); deleted 3 object(s): ServiceAccount pinniped-user-" in out
    assert "stop working within about 10 s" in out
    assert "refused for 30 days, 0:00:00 (revocationRetentionSeconds)" in out
    assert "disable the person there" in out


def test_an_unknown_user_is_revoked_all_the_same_with_a_warning(tmp_path: Path) -> None:
    kube = FakeKube()
    code, out, err = _run(tmp_path, kube, "alice@example.com")
    assert code == EXIT_OK
    assert "ended 0 session(s); deleted 0 object(s)\n" in out
    assert len(markers(kube)) == 1  # they may still hold ID tokens: recorded anyway
    assert "no objects or sessions found for 'alice@example.com'" in err
    assert "prefix them with 'corp:'" in err  # the likely mistake: no usernamePrefix
    code, _, err = _run(tmp_path, kube, "corp:nobody@example.com")
    assert code == EXIT_OK
    assert "no objects or sessions found" in err
    assert "prefix them with" not in err


@pytest.mark.parametrize(("username", "why"), [
    ("", "is empty"),
    (" corp:alice@example.com", "surrounding white space"),
    ("corp:alice\n", "control characters"),
    ("system:admin", "starts with 'system:'"),
    ("x" * 254, "longer than 253"),
])
def test_a_name_no_login_can_have_is_refused_before_anything_changes(
        tmp_path: Path, username: str, why: str) -> None:
    kube = FakeKube()
    code, out, err = _run(tmp_path, kube, username)
    assert (code, out) == (EXIT_USAGE, "")
    assert why in err
    assert kube.calls == []


def test_an_unreachable_apiserver_fails_saying_what_happened_and_what_next(
        tmp_path: Path) -> None:
    kube = FakeKube()
    kube.unavailable = True
    code, out, err = _run(tmp_path, kube, ALICE.username)
    assert (code, out) == (EXIT_FAILED, "")
    assert "nothing was changed" in err
    assert "run the same command again (it is safe to repeat)" in err

    kube = FakeKube()
    logged_in(kube, ALICE)
    real_delete = kube.delete

    async def forbidden(kind: Kind, name: str, namespace: str | None = None,
                        uid: str | None = None) -> None:
        if kind == Kind.CLUSTER_ROLE:
            raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "the apiserver went away")
        await real_delete(kind, name, namespace, uid)

    kube.delete = forbidden  # type: ignore[method-assign]
    code, _, err = _run(tmp_path, kube, ALICE.username)
    assert code == EXIT_FAILED
    assert "the revocation is recorded (marker pinniped-revoked-" in err
    assert "not every object or session is deleted yet" in err


def test_the_subcommand_needs_a_config_and_reports_an_unusable_kubeconfig(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["revoke-user", ALICE.username])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err
    path = _config(tmp_path, kubeconfig="not: [a kubeconfig")
    assert main(["revoke-user", "--config", str(path), ALICE.username]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot set up the Kubernetes client (kubernetes.kubeconfig)" in err


def test_serving_is_still_the_default_without_a_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path)  # its TLS files hold no certificate: serving stops on them
    assert main(["--config", str(path)]) == 2
    assert "tls: cannot load" in capsys.readouterr().err
