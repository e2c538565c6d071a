"""`pinniped-concierge revoke-user`, end to end: the real CLI, kubectl, IdP and apiserver.

The user logs in with the CLI and uses kubectl; an administrator runs
`revoke-user` with the concierge's own config (and so its least-privilege
credentials); within the apiserver's ~10 s authentication cache kubectl is
Unauthorized; the ID token on the laptop, replayed, and the refresh token,
refreshed, are both refused (`user_revoked` in the audit log); only a new
sign-in at the IdP lets the person back in.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import CONCIERGE_BIN, LocalConcierge, MintingIssuer
from localenv.fixtures_cli import new_world, team_namespace
from localenv.idp import LocalIdP, TestUser
from localenv.logins import Kubectl, post
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.revocations import REVOKED_LABEL

pytestmark = pytest.mark.integration

#: The apiserver's token authentication cache (~10 s), plus margin for a loaded machine.
REVOCATION_BOUND_SECONDS = 25


def revoke_user(concierge: LocalConcierge, username: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONCIERGE_BIN), "revoke-user", "--config",
                           str(concierge.config_path), username],
                          capture_output=True, text=True, timeout=60, check=False)


def try_login(concierge: LocalConcierge, id_token: str,
              authenticator: str | None = None) -> tuple[bool, str]:
    """(credential issued?, the audit reason of this login)."""
    request = wire.TokenCredentialRequest.create(
        token=id_token, authenticator_name=authenticator or concierge.authenticator_name)
    response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
    assert response.status_code == 200, response.text
    issued = bool(response.json()["status"].get("credential"))
    if not issued:
        assert response.json()["status"] == {"message": wire.AUTHENTICATION_FAILED}
    return issued, str(concierge.audit_lines()[-1]["reason"])


def test_revoke_user_ends_kubectl_and_no_replay_or_refresh_undoes_it(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    name = f"erin-{secrets.token_hex(3)}"
    idp = idp_factory(users=[TestUser(name, secrets.token_urlsafe(12), f"{name}@example.com",
                                      ["devs"])])
    concierge = concierge_factory(idp)
    world = new_world(tmp_path, cluster, idp, concierge)
    world.as_ci_job(name)
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env(name))
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                        "jsonpath={.data.who}")
    assert (got.returncode, got.stdout) == (0, "world"), got.stderr
    (session,) = world.stored_sessions().values()
    cached = next(iter(world.cached_credentials().values()))
    username = cached["identity"]["username"]
    assert username == f"corp:{name}@example.com"

    started = time.monotonic()
    result = revoke_user(concierge, username)
    assert result.returncode == 0, result.stderr
    found = re.search(rf"^revoked '{re.escape(username)}' at (\S+) ", result.stdout)
    assert found, result.stdout
    revoked_at = wire.parse_time(found[1], "revoked at").timestamp()  # the apiserver's clock
    assert "ended 1 session(s); deleted 3 object(s)" in result.stdout
    assert result.stderr == ""
    for secret in (session.id_token, session.refresh_token or "", cached["token"]):
        assert secret not in result.stdout + result.stderr

    # kubectl, with the credential the plugin cached, is Unauthorized within the bound
    bare = Kubectl(cluster, tmp_path)
    while True:
        code, output = bare.run(cached["token"], "get", "configmaps", "-n", namespace,
                                user=username, groups=("corp:devs",))
        if code != 0 and "Unauthorized" in output:
            break
        assert time.monotonic() - started < REVOCATION_BOUND_SECONDS, output
        time.sleep(0.5)
    took = time.monotonic() - started
    print(f"revoke-user to kubectl Unauthorized: {took:.1f} s")
    # ... and the plugin cannot get her in again by itself
    assert world.kubectl("get", "configmaps", "-n", namespace).returncode != 0

    # the ID token cached on the laptop, replayed: refused, touching nothing
    assert try_login(concierge, session.id_token) == (False, "user_revoked")
    assert concierge.audit_lines()[-1]["kubeApiCalls"] == 0
    assert concierge.audit_lines()[-1]["username"] == username
    # the refresh token, refreshed: a new ID token, but the same auth_time
    assert session.refresh_token is not None
    refreshed = idp.refresh(session.refresh_token)["id_token"]
    assert try_login(concierge, refreshed) == (False, "user_revoked")
    gone = cluster.kubectl("get", "serviceaccount", "-n", concierge.namespace,
                           naming.user_object_name(username, concierge.namespace), check=False)
    assert "NotFound" in gone.stderr

    # a new sign-in at the IdP, after the revocation (and the concierge's clock skew, 10 s)
    time.sleep(max(0.0, revoked_at + 11 - time.time()))
    fresh = try_login(concierge, idp.password_grant(name)["id_token"])
    assert fresh == (True, "ok"), concierge.audit_lines()[-1].get("detail")
    # The plugin keeps handing kubectl its cached (now dead) credential until it expires;
    # `pinniped logout` clears it (its revocation at the concierge is moot by now).
    out = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert "cleared the local credential cache" in out.stderr
    again = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                          "jsonpath={.data.who}", env=world.password_env(name))
    assert (again.returncode, again.stdout) == (0, "world"), again.stderr


def test_without_auth_time_the_token_is_judged_by_iat(
        idp: LocalIdP, minting_issuer: MintingIssuer, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, extra_issuers=[minting_issuer], clockSkewSeconds=1)
    email = f"mia-{secrets.token_hex(3)}@example.com"
    username = f"minted:{email}"

    def attempt(claims: dict[str, object] | None = None, omit: tuple[str, ...] = ()
                ) -> tuple[bool, str]:
        return try_login(concierge, minting_issuer.mint(claims, omit=omit, email=email),
                         "minted")

    before = minting_issuer.mint(email=email)  # iat now, no auth_time
    assert try_login(concierge, before, "minted") == (True, "ok")
    result = revoke_user(concierge, username)
    assert result.returncode == 0, result.stderr
    markers = json.loads(cluster.kubectl("get", "secrets", "-n", concierge.namespace, "-l",
                                         f"{REVOKED_LABEL}=true", "-o", "json").stdout)
    (marker,) = markers["items"]
    assert marker["type"] == "Opaque"
    assert "data" not in marker
    assert marker["metadata"]["annotations"][naming.USERNAME_ANNOTATION] == username
    assert try_login(concierge, before, "minted") == (False, "user_revoked")
    assert attempt(omit=("iat",)) == (False, "user_revoked")  # neither auth_time nor iat

    # The marker's time is its creationTimestamp (whole seconds); `now - 1` below must be past
    # it by more than the 1 s clock skew. A fixed sleep fell short when the calls above were
    # quick and the marker was made early in its second.
    revoked_at = wire.parse_time(marker["metadata"]["creationTimestamp"], "marker").timestamp()
    time.sleep(max(0.0, revoked_at + 3.2 - time.time()))
    now = int(time.time())
    assert attempt({"auth_time": now - 3600, "iat": now}) == (False, "user_revoked")
    assert attempt({"iat": now}) == (True, "ok")  # no auth_time: iat is after it
    assert attempt({"auth_time": now - 1, "iat": now}) == (True, "ok")
    # other users of the same issuer were never affected, and cost no extra call
    assert try_login(concierge, minting_issuer.mint(email=f"x-{email}"), "minted") == (
        True, "ok")
