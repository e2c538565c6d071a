"""Log in through the real concierge, then act with kubectl on the real apiserver.

The concierge runs as its own process with deploy/'s RBAC (not as admin), the
ID tokens come from the real IdP, and kubectl sends the returned token with
--as/--as-group exactly as the generated kubeconfig's `as:`/`as-groups:` will.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer, TcpProxy
from localenv.idp import LocalIdP
from localenv.logins import Kubectl, login, post, tls
from pinniped_apis import wire
from pinniped_concierge import naming

pytestmark = pytest.mark.integration

UNAUTHORIZED = "Unauthorized"


def token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


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
    # The background watch (its own user agent) is not part of any login.
    ours = [e for e in events if e.get("user", {}).get("username") == sa_user
            and e.get("stage") == "ResponseComplete"
            and not e.get("userAgent", "").startswith("pinniped-concierge-watch")]
    calls = sorted(" ".join([e["verb"], "/".join(filter(None, [
        e["objectRef"]["resource"], e["objectRef"].get("subresource")]))]) for e in ours)
    assert calls == ["create secrets", "create serviceaccounts/token"]


def test_kubernetes_unreachable_is_503_with_retry_after(
        idp: LocalIdP, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    proxy = TcpProxy(cluster.server)
    concierge = concierge_factory(idp, kube_server=proxy.url, userCacheTTLSeconds=0)
    proxy.close()
    request = wire.TokenCredentialRequest.create(token=idp.password_grant("carol")["id_token"],
                                          authenticator_name="corp")
    response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "Kubernetes API" in response.json()["message"]
    assert concierge.audit_lines()[-1]["reason"] == "kubernetes_unavailable"
    with httpx.Client(verify=tls(concierge)) as http:
        deadline = time.monotonic() + 10  # /readyz re-checks at most every 5 s
        while (ready := http.get(f"{concierge.url}/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "still ready with the apiserver unreachable"
            time.sleep(0.5)
        assert ready.status_code == 503
        assert ready.text == "not ready\n"  # what is missing goes to the log, not the client
        assert http.get(f"{concierge.url}/healthz").status_code == 200
    assert "not ready: kubernetes:" in concierge.all_logs()


def test_key_rotation_at_the_idp_is_picked_up_on_the_unknown_kid(
        idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    private_idp = idp_factory()
    concierge = concierge_factory(private_idp)
    before = login(concierge, private_idp.password_grant("bob")["id_token"])
    assert before.identity.username == "corp:bob@example.com"
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
    assert can("delete", "serviceaccounts", "-n", concierge.namespace)  # idle users, revoke-user
    assert not can("delete", "serviceaccounts", "-n", "kube-system")
    assert not can("create", "serviceaccounts/token", "-n", "kube-system")
    assert not can("delete", "namespaces")
    # it may impersonate users and groups (to grant exactly that), nothing more
    assert can("impersonate", "users")
    assert can("impersonate", "groups")
    assert not can("impersonate", "serviceaccounts")
    assert not can("impersonate", "serviceaccounts", "-n", concierge.namespace)
    assert not can("impersonate", "uids.authentication.k8s.io")
    assert not can("impersonate", "userextras.authentication.k8s.io")
    assert not can("impersonate", "userextras.authentication.k8s.io", "--subresource=scopes")
    # and it cannot grant more than it holds
    assert not can("escalate", "clusterroles")
    assert not can("bind", "clusterroles")
    assert not can("escalate", "roles", "-n", concierge.namespace)
    assert not can("bind", "roles", "-n", concierge.namespace)
    assert can("delete", "clusterroles")  # idle users, revoke-user: only roles fully ours
    assert can("watch", "clusterroles")  # the cache's watch
    # JWTAuthenticators: watched, and only their status written
    authenticators = "jwtauthenticators.authentication.concierge.pinniped.dev"
    assert can("watch", authenticators)
    assert can("update", authenticators, "--subresource=status")
    assert not can("update", authenticators)
    assert not can("create", authenticators)
    assert not can("delete", authenticators)
    # CredentialIssuers: its own one only (create cannot be narrowed by name)
    issuers = "credentialissuers.config.concierge.pinniped.dev"
    assert can("get", f"{issuers}/{concierge.credential_issuer}")
    assert can("update", f"{issuers}/{concierge.credential_issuer}", "--subresource=status")
    # (get on any of them it has anyway, as every authenticated user: rbac.yaml's discovery role)
    assert not can("update", f"{issuers}/another-concierges", "--subresource=status")
    assert not can("delete", f"{issuers}/{concierge.credential_issuer}")


def assert_no_token_in_logs(concierge: LocalConcierge, id_token: str) -> None:
    credential = login(concierge, id_token)
    post(concierge, wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), credential.token)
    post(concierge, wire.LOGOUT_REQUEST_PATH, wire.logout_request(), credential.token)
    logs = concierge.all_logs()
    for secret in (id_token, credential.token):
        for part in secret.split("."):
            assert part not in logs
    assert concierge.audit_lines()[-1]["request"] == "logout"


def test_no_log_line_contains_a_token(concierge: LocalConcierge,
                                      id_token_for: Callable[..., str]) -> None:
    assert_no_token_in_logs(concierge, id_token_for("alice"))


def test_no_log_line_contains_a_token_even_at_debug(
        idp: LocalIdP, concierge_factory: Callable[..., LocalConcierge],
        id_token_for: Callable[..., str]) -> None:
    concierge = concierge_factory(idp, logLevel="debug")
    assert_no_token_in_logs(concierge, id_token_for("alice"))
    assert " DEBUG " in concierge.all_logs()  # debug logging really was on


def test_the_deploy_manifests_are_accepted_by_the_apiserver(cluster: LocalCluster) -> None:
    root = Path(__file__).resolve().parents[2] / "deploy"
    cluster.kubectl("apply", "-f", str(root / "crds.yaml"))
    cluster.kubectl("apply", "-f", str(root / "rbac.yaml"))
    result = cluster.kubectl("apply", "--dry-run=server", "-f", str(root / "concierge.yaml"))
    assert "deployment.apps/pinniped-concierge created (server dry run)" in result.stdout
    assert "resourcequota/pinniped-concierge created (server dry run)" in result.stdout


# --- several concierges on one cluster -------------------------------------------------


def can_impersonate_group(kubectl: Kubectl, credential: wire.ClusterCredential,
                          group: str) -> bool:
    code, output = kubectl.run(credential, "auth", "can-i", "--list", groups=(group,))
    assert code == 0 or 'cannot impersonate resource "groups"' in output, output
    return code == 0


def test_replicas_sharing_a_namespace_never_keep_a_removed_group(
        idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge], kubectl: Kubectl) -> None:
    """Groups widen at one replica and shrink at the other: the cache must notice."""
    private_idp = idp_factory()
    namespace = f"pinniped-concierge-{secrets.token_hex(3)}"
    replicas = [concierge_factory(private_idp, namespace=namespace) for _ in range(2)]

    def login_at(concierge: LocalConcierge, groups: list[str]) -> wire.ClusterCredential:
        private_idp.set_groups("alice", groups)
        return login(concierge, private_idp.password_grant("alice")["id_token"])

    for first, second in (replicas, replicas[::-1]):
        login_at(first, ["devs"])
        login_at(first, ["devs"])
        assert first.audit_lines()[-1]["kubeApiCalls"] <= 2  # `first` trusts its cache now
        widened = login_at(second, ["devs", "readers"])
        assert can_impersonate_group(kubectl, widened, "corp:readers")

        shrunk = login_at(first, ["devs"])  # the very groups `first` has cached
        assert shrunk.identity.groups == ("corp:devs",)
        for credential in (shrunk, widened):
            assert not can_impersonate_group(kubectl, credential, "corp:readers")
            assert can_impersonate_group(kubectl, credential, "corp:devs")
        assert first.audit_lines()[-1]["kubeApiCalls"] > 2  # it reconciled


def test_concierges_in_different_namespaces_keep_separate_objects(
        idp: LocalIdP, cluster: LocalCluster, id_token_for: Callable[..., str],
        concierge_factory: Callable[..., LocalConcierge], kubectl: Kubectl) -> None:
    staging, production = concierge_factory(idp), concierge_factory(idp)
    at_staging = login(staging, id_token_for("alice"))
    at_production = login(production, id_token_for("alice"))
    at_staging_again = login(staging, id_token_for("alice"))
    for credential in (at_staging, at_production, at_staging_again):
        assert kubectl.run(credential, "auth", "can-i", "--list")[0] == 0

    names = {}
    for concierge in (staging, production):
        sa = token_claims(login(concierge, id_token_for("alice")).token)["kubernetes.io"][
            "serviceaccount"]["name"]
        role = json.loads(cluster.kubectl("get", "clusterrole", sa, "-o", "json").stdout)
        assert role["metadata"]["labels"]["concierge.pinniped.dev/namespace"] == \
            concierge.namespace
        binding = json.loads(cluster.kubectl("get", "clusterrolebinding", sa, "-o",
                                             "json").stdout)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa,
                                        "namespace": concierge.namespace}]
        names[concierge.namespace] = sa
    assert len(set(names.values())) == 2


def test_sessions_beyond_the_per_user_limit_end_the_oldest(
        idp: LocalIdP, cluster: LocalCluster, concierge_factory: Callable[..., LocalConcierge],
        kubectl: Kubectl) -> None:
    concierge = concierge_factory(idp, maxSessionsPerUser=2)
    credentials = []
    for _ in range(3):
        credentials.append(login(concierge, idp.password_grant("carol")["id_token"]))
        time.sleep(1.1)  # creationTimestamp has whole seconds: keep "oldest" unambiguous
    calls = [line["kubeApiCalls"] for line in concierge.audit_lines()[-2:]]
    assert calls == [2, 3]  # under the limit: nothing extra; over it: one delete

    def secret_of(credential: wire.ClusterCredential) -> str:
        return str(token_claims(credential.token)["kubernetes.io"]["secret"]["name"])

    gone = cluster.kubectl("-n", concierge.namespace, "get", "secret",
                           secret_of(credentials[0]), check=False)
    assert "NotFound" in gone.stderr
    for credential in credentials[1:]:
        cluster.kubectl("-n", concierge.namespace, "get", "secret", secret_of(credential))
    poll_until_unauthorized(kubectl, credentials[0])
    assert kubectl.run(credentials[2], "auth", "can-i", "--list")[0] == 0


# --- slow and too many clients -------------------------------------------------------------


def open_slow_request(concierge: LocalConcierge) -> ssl.SSLSocket:
    """A login whose body never finishes arriving."""
    host, _, port = concierge.url.removeprefix("https://").rpartition(":")
    sock = tls(concierge).wrap_socket(socket.create_connection((host, int(port)), timeout=30),
                                      server_hostname=host)
    sock.sendall(f"POST {wire.TOKEN_CREDENTIAL_REQUEST_PATH} HTTP/1.1\r\nHost: {host}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
    return sock


def test_slow_senders_time_out_and_concurrency_is_limited(
        idp: LocalIdP, concierge_factory: Callable[..., LocalConcierge]) -> None:
    concierge = concierge_factory(idp, requestBodyTimeoutSeconds=2, maxConcurrentRequests=1)
    started = time.monotonic()
    with open_slow_request(concierge) as slow:
        with httpx.Client(verify=tls(concierge), timeout=30) as http:  # the one slot is taken
            assert http.get(f"{concierge.url}/healthz").status_code == 503
        answer = b""
        while chunk := slow.recv(4096):  # the server closes the connection after the 408
            answer += chunk
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 408 Request Timeout"
    assert 1.5 < time.monotonic() - started < 10
    assert concierge.audit_lines()[-1]["reason"] == "request_timeout"
    deadline = time.monotonic() + 5  # the slot is free again once the server saw the close
    with httpx.Client(verify=tls(concierge), timeout=30) as http:
        while (response := http.get(f"{concierge.url}/healthz")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert response.text == "ok"


# --- an IdP gone for longer than maxKeyAgeSeconds ----------------------------------------------


def test_keys_not_refreshed_for_max_key_age_are_not_used(
        idp: LocalIdP, local_ca: pki.CA, tmp_path: Path,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    issuer = MintingIssuer.start(tmp_path / "short-lived-issuer", local_ca)
    try:
        concierge = concierge_factory(idp, extra_issuers=[issuer],
                                      keyRefreshIntervalSeconds=10, maxKeyAgeSeconds=60)
        request = wire.TokenCredentialRequest.create(token=issuer.mint(),
                                                     authenticator_name="minted")
        assert post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH,
                    request.to_wire()).status_code == 200
    finally:
        issuer.stop()
    went_down = time.monotonic()
    while True:
        request = wire.TokenCredentialRequest.create(token=issuer.mint(),
                                                     authenticator_name="minted")
        response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
        if response.status_code != 200:
            break
        assert time.monotonic() - went_down < 90, "cached keys still used after 90 s"
        time.sleep(3)
    elapsed = time.monotonic() - went_down
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert concierge.audit_lines()[-1]["reason"] == "issuer_keys_expired"
    assert elapsed >= 60 - 10 - 2  # the last refresh was at most one interval before it went
    with httpx.Client(verify=tls(concierge)) as http:
        deadline = time.monotonic() + 10
        while http.get(f"{concierge.url}/readyz").status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
