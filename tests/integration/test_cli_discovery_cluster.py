"""`pinniped get kubeconfig --kubeconfig FILE`: discovery through the real kubectl and apiserver.

The CredentialIssuers here are created by the tests (CRD from deploy/, the
object, then its status through the status subresource), with the real
endpoint and CA of the shared test concierge and the real IdP's issuer and
client ids. Several concierges may share the cluster, each publishing its
own CredentialIssuer, so no test assumes its objects are the only ones: each
names its own with --credential-issuer (the ambiguity without it is tested
too), uses unique names and deletes what it made.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import REPO_ROOT, CLIWorld, credential_issuer, new_world, team_namespace
from localenv.idp import LocalIdP
from pinniped_cli.discovery import CREDENTIAL_ISSUERS

pytestmark = pytest.mark.integration

Publish = Callable[..., str]


@pytest.fixture(scope="module")
def issuer_api(cluster: LocalCluster) -> None:
    """The CredentialIssuer CRD from deploy/, applied idempotently (other tests may share it)."""
    cluster.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "crds.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"customresourcedefinition/{CREDENTIAL_ISSUERS}")


@pytest.fixture
def publish(cluster: LocalCluster, issuer_api: None, concierge: LocalConcierge
            ) -> Iterator[Publish]:
    """Create a CredentialIssuer for the test concierge; returns its (unique) name.

    Names start with `0`, which sorts before any concierge's own, so an error
    that lists only the first few CredentialIssuers still lists these.
    """
    made: list[str] = []
    ca_data = base64.b64encode(concierge.ca_file.read_bytes()).decode()

    def create(*authenticators: tuple[str, str, str], **fields: Any) -> str:
        name = f"0-cli-discovery-{secrets.token_hex(4)}"
        obj = credential_issuer(name, concierge.url, ca_data, *authenticators, **fields)
        status = obj.pop("status")
        cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
        made.append(name)
        cluster.kubectl("patch", CREDENTIAL_ISSUERS, name, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": status}))
        return name

    try:
        yield create
    finally:
        for name in made:
            cluster.kubectl("delete", CREDENTIAL_ISSUERS, name, "--ignore-not-found")


@pytest.fixture
def world(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
          concierge: LocalConcierge) -> CLIWorld:
    return new_world(tmp_path, cluster, idp, concierge)


def _corp(idp: LocalIdP, concierge: LocalConcierge) -> tuple[str, str, str]:
    return (concierge.authenticator_name, idp.issuer, idp.client_id)


def _trusting_the_idp(world: CLIWorld, idp: LocalIdP) -> dict[str, str]:
    """alice's password, on a machine whose system CAs include the IdP's (as for a public IdP).

    The CredentialIssuer publishes no CA for the issuer, so without this (or
    --ca-bundle) the login could not verify the IdP.
    """
    return {**world.password_env("alice"), "SSL_CERT_FILE": str(idp.ca_file)}


def _get_kubeconfig(world: CLIWorld, *args: str, env: dict[str, str] | None = None
                    ) -> Any:
    """`get kubeconfig ARGS -o world.kubeconfig` in alice's CI job."""
    world.as_ci_job("alice")
    return world.pinniped("get", "kubeconfig", *args, "-o", str(world.kubeconfig), env=env)


def test_one_command_gives_a_kubeconfig_kubectl_uses_as_the_user(
        world: CLIWorld, cluster: LocalCluster, idp: LocalIdP, concierge: LocalConcierge,
        publish: Publish) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    name = publish(_corp(idp, concierge))
    result = _get_kubeconfig(world, "--kubeconfig", str(cluster.admin_kubeconfig),
                             "--credential-issuer", name, env=_trusting_the_idp(world, idp))
    assert result.returncode == 0, result.stderr
    assert f"from CredentialIssuer {name!r}: concierge {concierge.url}" in result.stderr
    doc = yaml.safe_load(world.kubeconfig.read_text())
    assert doc["clusters"][0]["cluster"] == {
        "server": cluster.server,
        "certificate-authority-data": base64.b64encode(cluster.ca_file.read_bytes()).decode()}
    args = world.kubeconfig_user()["exec"]["args"]
    assert args[args.index("--concierge-endpoint") + 1] == concierge.url
    assert args[args.index("--issuer") + 1] == idp.issuer
    assert args[args.index("--client-id") + 1] == idp.client_id
    assert world.kubeconfig_user()["as"] == "corp:alice@example.com"

    # Stock kubectl, with no password around, acts as alice from the generated kubeconfig.
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                        "jsonpath={.data.who}")
    assert (got.returncode, got.stdout) == (0, "world"), got.stderr
    refused = world.kubectl("get", "configmaps", "-n", "kube-system")
    assert 'User "corp:alice@example.com" cannot list resource "configmaps"' in refused.stderr
    assert cluster.admin_token not in result.stderr + got.stderr + refused.stderr


def test_two_credential_issuers_need_the_flag(world: CLIWorld, cluster: LocalCluster,
                                              idp: LocalIdP, concierge: LocalConcierge,
                                              publish: Publish) -> None:
    first, second = publish(_corp(idp, concierge)), publish(_corp(idp, concierge))
    result = _get_kubeconfig(world, "--kubeconfig", str(cluster.admin_kubeconfig),
                             env=_trusting_the_idp(world, idp))
    assert result.returncode == 2
    assert f"{first} ({concierge.url})" in result.stderr
    assert f"{second} ({concierge.url})" in result.stderr
    assert "Choose one with --credential-issuer NAME." in result.stderr
    assert not world.kubeconfig.exists()


def test_two_authenticators_need_the_flag_and_the_flag_picks_one(
        world: CLIWorld, cluster: LocalCluster, idp: LocalIdP, concierge: LocalConcierge,
        publish: Publish) -> None:
    """The test concierge has `corp` and `corp-es256` on the same IdP, with two client ids."""
    name = publish(_corp(idp, concierge), ("corp-es256", idp.issuer, idp.es256_client_id))
    argv = ["--kubeconfig", str(cluster.admin_kubeconfig), "--credential-issuer", name]
    refused = _get_kubeconfig(world, *argv, env=_trusting_the_idp(world, idp))
    assert refused.returncode == 2
    assert (f"lists 2 authenticators: corp (issuer {idp.issuer}, client id {idp.client_id}), "
            f"corp-es256 (issuer {idp.issuer}, client id {idp.es256_client_id})"
            in refused.stderr)
    assert "--concierge-authenticator NAME" in refused.stderr

    chosen = _get_kubeconfig(world, *argv, "--concierge-authenticator", "corp-es256",
                             env=_trusting_the_idp(world, idp))
    assert chosen.returncode == 0, chosen.stderr
    args = world.kubeconfig_user()["exec"]["args"]
    assert args[args.index("--client-id") + 1] == idp.es256_client_id
    assert args[args.index("--concierge-authenticator") + 1] == "corp-es256"
    assert world.kubectl("auth", "can-i", "--list").returncode == 0  # the credential works


def test_a_named_context_with_a_ca_file(world: CLIWorld, cluster: LocalCluster,
                                        publish: Publish, tmp_path: Path) -> None:
    """A CA given as a file relative to the kubeconfig, in a context that is not the current
    one: kubectl resolves both, and pinniped embeds the CA in what it writes."""
    name = publish(_corp(world.idp, world.concierge))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ca.pem").write_bytes(cluster.ca_file.read_bytes())
    kubeconfig = _kubeconfig(tmp_path / "cfg" / "config", cluster, current="broken", clusters={
        "broken": {"server": "https://127.0.0.1:1", "certificate-authority": "ca.pem"},
        "local": {"server": cluster.server, "certificate-authority": "ca.pem"}})
    result = _get_kubeconfig(world, "--kubeconfig", str(kubeconfig), "--kubeconfig-context",
                             "local", "--credential-issuer", name,
                             env=_trusting_the_idp(world, world.idp))
    assert result.returncode == 0, result.stderr
    assert "discovered from kubeconfig context 'local'" in result.stderr
    cluster_entry = yaml.safe_load(world.kubeconfig.read_text())["clusters"][0]["cluster"]
    assert base64.b64decode(cluster_entry["certificate-authority-data"]) == \
        cluster.ca_file.read_bytes()

    # The current context points nowhere: kubectl's own words, then the flag to pass.
    unreachable = _get_kubeconfig(world, "--kubeconfig", str(kubeconfig),
                                  "--credential-issuer", name)
    assert unreachable.returncode == 1
    assert "cannot list CredentialIssuers at https://127.0.0.1:1 with context 'broken'" \
        in unreachable.stderr
    assert "The connection to the server 127.0.0.1:1 was refused" in unreachable.stderr
    assert "memcache.go" not in unreachable.stderr
    assert "Or pass --concierge-endpoint" in unreachable.stderr


def test_a_context_that_skips_tls_verification_is_refused(
        world: CLIWorld, cluster: LocalCluster, tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "insecure", cluster, current="local", clusters={
        "local": {"server": cluster.server, "insecure-skip-tls-verify": True}})
    result = _get_kubeconfig(world, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 2
    assert "context 'local' skips TLS verification (insecure-skip-tls-verify)" in result.stderr


def test_a_caller_the_cluster_refuses_is_told_who_must_grant_what(
        world: CLIWorld, cluster: LocalCluster, publish: Publish, tmp_path: Path) -> None:
    """deploy/ lets every authenticated user read CredentialIssuers, so the refused caller
    here is one the admin impersonates as system:anonymous."""
    publish(_corp(world.idp, world.concierge))
    kubeconfig = _kubeconfig(tmp_path / "anonymous", cluster, current="local",
                             clusters={"local": {"server": cluster.server,
                                                 "certificate-authority": str(cluster.ca_file)}},
                             user={"token": cluster.admin_token, "as": "system:anonymous"})
    result = _get_kubeconfig(world, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 1
    assert "the credentials of context 'local' may not list CredentialIssuers" in result.stderr
    assert "(Forbidden)" in result.stderr
    assert "system:authenticated" in result.stderr
    assert cluster.admin_token not in result.stderr


def _kubeconfig(path: Path, cluster: LocalCluster, *, current: str,
                clusters: dict[str, dict[str, Any]],
                user: dict[str, Any] | None = None) -> Path:
    """A kubeconfig with one context per cluster, all as `user` (default: the admin)."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in clusters],
        "users": [{"name": "u", "user": user or {"token": cluster.admin_token}}],
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path
