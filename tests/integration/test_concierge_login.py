"""Log in through the real concierge, then act with kubectl on the real apiserver.

The concierge runs as its own process with deploy/'s RBAC (not as admin), the
ID tokens come from the real IdP, and kubectl sends the returned token with
--as/--as-group exactly as the generated kubeconfig's `as:`/`as-groups:` will.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from concierge import naming, wire
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, TcpProxy
from localenv.idp import LocalIdP

pytestmark = pytest.mark.integration

UNAUTHORIZED = "Unauthorized"


def tls(concierge: LocalConcierge) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(concierge.ca_file))


def post(concierge: LocalConcierge, path: str, body: dict[str, Any],
         bearer: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with httpx.Client(verify=tls(concierge), timeout=30) as http:
        return http.post(concierge.url + path, json=body, headers=headers)


def login(concierge: LocalConcierge, id_token: str,
          authenticator: str | None = None) -> wire.ClusterCredential:
    request = wire.TokenCredentialRequest(
        token=id_token, authenticator_name=authenticator or concierge.authenticator_name)
    response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
    assert response.status_code == 200, response.text
    return wire.parse_credential_response(response.json())


def token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


class Kubectl:
    """kubectl with no credentials of its own: only what the concierge returned."""

    def __init__(self, cluster: LocalCluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = tmp_path / "bare.kubeconfig"
        ca = base64.b64encode(cluster.ca_file.read_bytes()).decode()
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                                   "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))

    def run(self, credential: wire.ClusterCredential | str, *args: str,
            user: str | None = None, groups: tuple[str, ...] | None = None) -> tuple[int, str]:
        """kubectl as the credential's identity (or the `user`/`groups` given)."""
        token = credential if isinstance(credential, str) else credential.token
        identity = None if isinstance(credential, str) else credential.identity
        argv = ["--token", token]
        as_user = user if user is not None else (identity.username if identity else None)
        if as_user:
            argv += ["--as", as_user]
        for group in groups if groups is not None else (identity.groups if identity else ()):
            argv += ["--as-group", group]
        result = self.cluster.kubectl(*argv, *args, kubeconfig=self.kubeconfig, check=False)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture
def kubectl(cluster: LocalCluster, tmp_path: Path) -> Kubectl:
    return Kubectl(cluster, tmp_path)


def poll_until_unauthorized(kubectl: Kubectl, credential: wire.ClusterCredential,
                            timeout: float = 25) -> float:
    """The apiserver caches authentications ~10 s; returns how long revocation took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        code, output = kubectl.run(credential, "auth", "can-i", "--list")
        if code != 0 and UNAUTHORIZED in output:
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"token still accepted after {timeout} s: {output}")


def test_login_then_kubectl_acts_as_the_user_with_exactly_the_roles_of_their_groups(
        concierge: LocalConcierge, cluster: LocalCluster, id_token_for: Callable[..., str],
        kubectl: Kubectl) -> None:
    credential = login(concierge, id_token_for("alice"))
    assert credential.identity == wire.Identity("corp:alice@example.com",
                                                ("corp:devs", "corp:readers"))
    assert credential.expiration.timestamp() == pytest.approx(time.time() + 600, abs=30)
    assert credential.impersonation_headers == {
        "Impersonate-User": ["corp:alice@example.com"],
        "Impersonate-Group": ["corp:devs", "corp:readers"]}

    cluster.kubectl("create", "namespace", "team-devs", check=False)
    cluster.kubectl("create", "namespace", "team-other", check=False)
    cluster.kubectl("-n", "team-devs", "create", "role", "pod-reader", "--verb=get,list",
                    "--resource=pods", check=False)
    cluster.kubectl("-n", "team-devs", "create", "rolebinding", "devs-read-pods",
                    "--role=pod-reader", "--group=corp:devs", check=False)

    code, in_team = kubectl.run(credential, "auth", "can-i", "--list", "-n", "team-devs")
    assert code == 0, in_team
    code, elsewhere = kubectl.run(credential, "auth", "can-i", "--list", "-n", "team-other")
    assert code == 0, elsewhere
    added = set(in_team.splitlines()) - set(elsewhere.splitlines())
    assert [line.split() for line in added] == [["pods", "[]", "[]", "[get", "list]"]]
    assert set(elsewhere.splitlines()) <= set(in_team.splitlines())

    assert kubectl.run(credential, "-n", "team-devs", "get", "pods")[0] == 0
    code, output = kubectl.run(credential, "-n", "team-devs", "auth", "can-i", "delete", "pods")
    assert (code, output.strip()) == (1, "no")
    code, output = kubectl.run(credential, "-n", "team-devs", "create", "configmap", "x")
    assert code != 0
    assert "forbidden" in output
    code, output = kubectl.run(credential, "-n", "team-other", "get", "pods")
    assert code != 0
    assert "forbidden" in output
    assert 'User "corp:alice@example.com"' in output  # the apiserver sees alice, not the SA


def test_impersonating_anyone_or_any_group_not_proven_is_forbidden(
        concierge: LocalConcierge, id_token_for: Callable[..., str], kubectl: Kubectl) -> None:
    credential = login(concierge, id_token_for("alice"))
    me = credential.identity.username
    for user, groups in [
        ("corp:bob@example.com", ()),
        ("system:admin", ()),
        ("system:serviceaccount:kube-system:default", ()),
        (me, ("corp:ops",)),
        (me, ("corp:devs", "corp:ops")),
        (me, ("system:masters",)),
        (me, ("corp:devs", "system:masters")),
    ]:
        code, output = kubectl.run(credential, "auth", "can-i", "--list",
                                   user=user, groups=groups)
        assert code != 0, (user, groups, output)
        assert "cannot impersonate" in output, (user, groups, output)
    # without impersonation the ServiceAccount itself may do nothing useful
    code, output = kubectl.run(credential.token, "get", "pods", "-n", "default")
    assert code != 0
    assert "forbidden" in output


def test_es256_tokens_from_the_real_idp_work(concierge: LocalConcierge, idp: LocalIdP,
                                             id_token_for: Callable[..., str],
                                             kubectl: Kubectl) -> None:
    id_token = id_token_for("bob", client_id=idp.es256_client_id)
    header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    credential = login(concierge, id_token, "corp-es256")
    assert credential.identity == wire.Identity("corp:bob@example.com", ("corp:ops",))
    assert kubectl.run(credential, "auth", "can-i", "--list")[0] == 0


def test_a_user_whose_groups_shrink_loses_the_group_at_next_login(
        idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge], kubectl: Kubectl) -> None:
    private_idp = idp_factory()
    concierge = concierge_factory(private_idp)
    before = login(concierge, private_idp.password_grant("alice")["id_token"])
    assert before.identity.groups == ("corp:devs", "corp:readers")
    assert kubectl.run(before, "auth", "can-i", "--list")[0] == 0

    private_idp.set_groups("alice", ["devs"])
    after = login(concierge, private_idp.password_grant("alice")["id_token"])
    assert after.identity.groups == ("corp:devs",)
    assert kubectl.run(after, "auth", "can-i", "--list")[0] == 0
    for credential in (after, before):  # the older session loses it too
        code, output = kubectl.run(credential, "auth", "can-i", "--list",
                                   groups=("corp:devs", "corp:readers"))
        assert code != 0
        assert 'cannot impersonate resource "groups"' in output
    assert kubectl.run(before, "auth", "can-i", "--list", groups=("corp:devs",))[0] == 0


def test_deleting_the_bound_secret_revokes_the_token(
        concierge: LocalConcierge, cluster: LocalCluster, id_token_for: Callable[..., str],
        kubectl: Kubectl) -> None:
    credential = login(concierge, id_token_for("carol"))
    assert credential.identity == wire.Identity("corp:carol@example.com", ())
    assert kubectl.run(credential, "auth", "can-i", "--list")[0] == 0
    bound = token_claims(credential.token)["kubernetes.io"]
    assert bound["namespace"] == concierge.namespace
    secret = bound["secret"]["name"]
    assert secret.startswith(naming.SESSION_PREFIX)
    cluster.kubectl("-n", concierge.namespace, "delete", "secret", secret)
    assert poll_until_unauthorized(kubectl, credential) <= 25


def test_logout_revokes_exactly_that_session(
        concierge: LocalConcierge, cluster: LocalCluster, id_token_for: Callable[..., str],
        kubectl: Kubectl) -> None:
    laptop = login(concierge, id_token_for("bob"))
    ci = login(concierge, id_token_for("bob"))
    response = post(concierge, wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), laptop.token)
    assert response.status_code == 200, response.text
    identity, expiration = wire.parse_whoami_response(response.json())
    assert identity == laptop.identity
    assert expiration is not None
    assert abs((expiration - laptop.expiration).total_seconds()) <= 1

    response = post(concierge, wire.LOGOUT_REQUEST_PATH, wire.logout_request(), laptop.token)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == {"sessionEnded": True}
    secret = token_claims(laptop.token)["kubernetes.io"]["secret"]["name"]
    result = cluster.kubectl("-n", concierge.namespace, "get", "secret", secret, check=False)
    assert "NotFound" in result.stderr

    poll_until_unauthorized(kubectl, laptop)
    assert kubectl.run(ci, "auth", "can-i", "--list")[0] == 0
    response = post(concierge, wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), laptop.token)
    assert response.status_code == 401
    lines = [line for line in concierge.audit_lines() if line["request"] == "logout"]
    assert lines[-1]["outcome"] == "success"
    assert lines[-1]["username"] == "corp:bob@example.com"


def test_a_returning_user_costs_at_most_two_kubernetes_api_calls(
        idp: LocalIdP, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    """Counted twice: by the concierge's audit line and by the apiserver's own audit log."""
    concierge = concierge_factory(idp, sessionSweepIntervalSeconds=86400)
    login(concierge, idp.password_grant("alice")["id_token"])
    first = concierge.audit_lines()[-1]
    assert first["kubeApiCalls"] >= 3  # a new user: ServiceAccount, ClusterRole, binding, ...

    sa_user = f"system:serviceaccount:{concierge.namespace}:pinniped-concierge"
    offset = cluster.audit_log.stat().st_size
    login(concierge, idp.password_grant("alice")["id_token"])
    second = concierge.audit_lines()[-1]
    assert second["outcome"] == "success"
    assert second["kubeApiCalls"] <= 2

    time.sleep(1)
    with cluster.audit_log.open() as log:
        log.seek(offset)
        events = [json.loads(line) for line in log if line.strip()]
    ours = [e for e in events if e.get("user", {}).get("username") == sa_user
            and e.get("stage") == "ResponseComplete"]
    calls = sorted(" ".join([e["verb"], "/".join(filter(None, [
        e["objectRef"]["resource"], e["objectRef"].get("subresource")]))]) for e in ours)
    assert calls == ["create secrets", "create serviceaccounts/token"]


def test_kubernetes_unreachable_is_503_with_retry_after(
        idp: LocalIdP, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    proxy = TcpProxy(cluster.server)
    concierge = concierge_factory(idp, kube_server=proxy.url, userCacheTTLSeconds=0)
    proxy.close()
    request = wire.TokenCredentialRequest(token=idp.password_grant("carol")["id_token"],
                                          authenticator_name="corp")
    response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "Kubernetes API" in response.json()["message"]
    assert concierge.audit_lines()[-1]["reason"] == "kubernetes_unavailable"
    with httpx.Client(verify=tls(concierge)) as http:
        assert http.get(f"{concierge.url}/readyz").status_code == 503
        assert http.get(f"{concierge.url}/healthz").status_code == 200


def test_key_rotation_at_the_idp_is_picked_up_on_the_unknown_kid(
        idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    private_idp = idp_factory()
    concierge = concierge_factory(private_idp)
    assert login(concierge, private_idp.password_grant("bob")["id_token"])
    new_kid = private_idp.rotate_keys()
    time.sleep(1.2)  # the harness rate-limits unknown-kid refreshes to one per second
    id_token = private_idp.password_grant("bob")["id_token"]
    assert json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))["kid"] == new_kid
    assert login(concierge, id_token).identity.username == "corp:bob@example.com"


def test_the_concierge_runs_with_least_privilege(concierge: LocalConcierge,
                                                 cluster: LocalCluster) -> None:
    sa = f"system:serviceaccount:{concierge.namespace}:pinniped-concierge"

    def can(*args: str) -> bool:
        result = cluster.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
        return result.stdout.strip() == "yes"

    assert can("create", "secrets", "-n", concierge.namespace)
    assert can("create", "serviceaccounts/token", "-n", concierge.namespace)
    assert can("create", "tokenreviews")
    assert not can("get", "secrets", "-n", "kube-system")
    assert not can("list", "secrets", "--all-namespaces")
    assert not can("create", "pods", "-n", concierge.namespace)
    assert not can("delete", "serviceaccounts", "-n", concierge.namespace)
    assert not can("create", "serviceaccounts/token", "-n", "kube-system")
    assert not can("delete", "namespaces")


def test_no_log_line_contains_a_token(concierge: LocalConcierge,
                                      id_token_for: Callable[..., str]) -> None:
    id_token = id_token_for("alice")
    credential = login(concierge, id_token)
    post(concierge, wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), credential.token)
    logs = concierge.all_logs()
    for secret in (id_token, credential.token):
        for part in secret.split("."):
            assert part not in logs
    assert concierge.audit_lines()[-1]["request"] == "whoami"


def test_the_deploy_manifests_are_accepted_by_the_apiserver(cluster: LocalCluster) -> None:
    root = Path(__file__).resolve().parents[2] / "deploy"
    cluster.kubectl("apply", "-f", str(root / "rbac.yaml"))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", str(root / "concierge.yaml"))
    assert "deployment.apps/pinniped-concierge created (server dry run)" in result.stdout
