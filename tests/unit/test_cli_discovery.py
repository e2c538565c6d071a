"""`get kubeconfig` discovering what no flag gives, with kubectl replaced by a fake.

The fake answers the two reads discovery makes (`kubectl config view` and
`kubectl get credentialissuers`) the way kubectl 1.32 does against a real
apiserver, failures included (the stderr texts are kubectl's own). The rest
of the login runs against the harness's fake IdP and concierge, so a value
taken from the wrong place shows as a failed login, not only as a wrong
line in the kubeconfig. The real kubectl is tested in
tests/integration/test_cli_discovery_cluster.py; the bounded runner is tested here
with small scripts standing in for kubectl.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv import pki
from localenv.fixtures_cli import (
    NO_PASSWORD_ENV,
    PASSWORD_ENV,
    TEST_CA_DATA,
    TEST_SERVER,
    CLIHarness,
    credential_issuer,
)
from pinniped_cli import kubectl as kubectl_module
from pinniped_cli.discovery import CREDENTIAL_ISSUERS
from pinniped_cli.kubectl import KubectlResult, KubectlUnavailable, kubectl_message, run_bounded

IDP = "https://idp.test"
CONCIERGE = "https://concierge.test"
CLIENT_ID = "pinniped-cli"
CORP = ("corp", IDP, CLIENT_ID)
#: What kubectl 1.32 prints when the cluster cannot be reached (klog lines, then a summary).
UNREACHABLE = "\n".join(
    ['E1201 09:57:16.278033   21826 memcache.go:265] "Unhandled Error" err="couldn\'t get '
     'current server API group list: Get \\"https://127.0.0.1:1/api?timeout=32s\\": dial tcp '
     '127.0.0.1:1: connect: connection refused"'] * 5
    + ["The connection to the server 127.0.0.1:1 was refused - did you specify the right host "
       "or port?"])
FORBIDDEN = ('Error from server (Forbidden): credentialissuers.config.concierge.pinniped.dev is '
             'forbidden: User "bob" cannot list resource "credentialissuers" in API group '
             '"config.concierge.pinniped.dev" at the cluster scope')


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two real CA certificates (base64 PEM): discovery checks that TLS can load them."""
    directory = tmp_path_factory.mktemp("cas")
    return tuple(  # type: ignore[return-value]
        base64.b64encode(pki.CA.create(directory, name).cert_path.read_bytes()).decode()
        for name in ("one", "two"))


@dataclass
class FakeKubectl:
    """kubectl for one kubeconfig: a context, its cluster, and the cluster's CredentialIssuers."""

    cluster_ca: str
    context: str = "work"
    cluster: dict[str, Any] = field(default_factory=dict)
    issuers: list[dict[str, Any]] = field(default_factory=list)
    #: Answers that replace the normal ones, by the first two words after kubectl
    #: ("config get-contexts") or the first ("config", "get").
    answers: dict[str, KubectlResult] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    #: (kubeconfig, context) each time pinniped set up kubectl.
    opened: list[tuple[str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cluster = self.cluster or {"server": TEST_SERVER,
                                        "certificate-authority-data": self.cluster_ca}

    def new(self, env: object, kubeconfig: str | None, context: str | None) -> FakeKubectl:
        self.opened.append((kubeconfig, context))
        return self

    def __call__(self, args: Sequence[str]) -> KubectlResult:
        args = list(args)
        self.calls.append(args)
        for key in (" ".join(args[:2]), args[0]):  # "config get-contexts", then "config"
            if key in self.answers:
                return self.answers[key]
        if args[:2] == ["config", "view"]:
            assert "--minify" in args
            assert "--raw" in args  # without it kubectl prints DATA+OMITTED for the CA
            contexts = [{"name": self.context, "context": {"cluster": "c", "user": "u"}}]
            return KubectlResult(0, json.dumps(contexts) + "\n"
                                 + json.dumps([{"name": "c", "cluster": self.cluster}]), "")
        assert args == ["get", CREDENTIAL_ISSUERS, "-o", "json"]
        return KubectlResult(0, json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": self.issuers}), "")


@pytest.fixture
def kube(h: CLIHarness, cas: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> FakeKubectl:
    """The fake kubectl, with one CredentialIssuer for the harness's concierge and IdP."""
    h.env.update(NO_PASSWORD_ENV)
    fake = FakeKubectl(cluster_ca=cas[0],
                       issuers=[credential_issuer("corp-concierge", CONCIERGE, cas[1], CORP)])
    monkeypatch.setattr(kubectl_module, "new_kubectl", fake.new)
    return fake


@pytest.fixture
def kubeconfig_in(tmp_path: Path) -> Path:
    """The kubeconfig discovery reads (the fake kubectl never opens it; pinniped checks it)."""
    path = tmp_path / "admin.kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def _get(h: CLIHarness, *args: str, out: Path | None = None) -> int:
    argv = ["get", "kubeconfig", *args]
    if out is not None:
        argv += ["-o", str(out)]
    return h.run(argv, PASSWORD_ENV)


def _written(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The generated kubeconfig's cluster entry and its exec args."""
    doc = yaml.safe_load(path.read_text())
    return doc["clusters"][0]["cluster"], doc["users"][0]["user"]["exec"]["args"]


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_one_flag_discovers_everything_and_logs_in(h: CLIHarness, kube: FakeKubectl,
                                                   kubeconfig_in: Path, tmp_path: Path,
                                                   cas: tuple[str, str]) -> None:
    out = tmp_path / "out.kubeconfig"
    assert _get(h, "--kubeconfig", str(kubeconfig_in), out=out) == 0, h.last_stderr
    assert kube.opened == [(str(kubeconfig_in), None)]
    assert [c[:2] for c in kube.calls] == [["config", "view"], ["get", CREDENTIAL_ISSUERS]]
    cluster, args = _written(out)
    assert cluster == {"server": TEST_SERVER, "certificate-authority-data": cas[0]}
    assert (_arg(args, "--issuer"), _arg(args, "--client-id")) == (IDP, CLIENT_ID)
    assert _arg(args, "--concierge-endpoint") == CONCIERGE
    assert _arg(args, "--concierge-authenticator") == "corp"
    assert _arg(args, "--concierge-ca-bundle-data") == cas[1]
    assert "--kubeconfig" not in args  # the input kubeconfig is not part of the login
    # The concierge was trusted with the discovered CA, and it minted alice's credential.
    assert base64.b64decode(cas[1]).decode() in h.router.clients
    assert h.concierge.logins == ["corp:alice@example.com"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "discovered from kubeconfig context 'work': server" in h.last_stderr
    assert "from CredentialIssuer 'corp-concierge': concierge https://concierge.test" \
        in h.last_stderr


def test_without_kubeconfig_flag_kubectl_picks_its_default(h: CLIHarness,
                                                           kube: FakeKubectl) -> None:
    assert _get(h, "--kubeconfig-context", "work") == 0, h.last_stderr
    assert kube.opened == [(None, "work")]  # kubectl then reads $KUBECONFIG or ~/.kube/config
    assert yaml.safe_load(h.last_stdout)["clusters"][0]["cluster"]["server"] == TEST_SERVER


def test_every_value_given_runs_no_kubectl(h: CLIHarness, kube: FakeKubectl) -> None:
    argv = [*h.login_args()[2:], "--server", TEST_SERVER, "--cluster-ca-bundle-data",
            TEST_CA_DATA]
    assert _get(h, *argv) == 0, h.last_stderr
    assert kube.opened == []
    assert "discovered" not in h.last_stderr


def test_a_missing_input_kubeconfig_is_a_usage_error(h: CLIHarness, kube: FakeKubectl,
                                                     tmp_path: Path) -> None:
    assert _get(h, "--kubeconfig", str(tmp_path / "nope")) == 2
    assert "--kubeconfig" in h.last_stderr
    assert kube.calls == []


# --- flags win ------------------------------------------------------------------------------

#: Discovered values that would break the login; each test passes the flag that repairs one.
WRONG = ("wrong", "https://wrong-idp.test", "wrong-client")


@pytest.mark.parametrize(("flags", "check"), [
    (["--issuer", IDP], lambda args: _arg(args, "--issuer") == IDP),
    (["--oidc-issuer", IDP], lambda args: _arg(args, "--issuer") == IDP),
    (["--client-id", CLIENT_ID], lambda args: _arg(args, "--client-id") == CLIENT_ID),
    (["--concierge-authenticator", "corp"],
     lambda args: _arg(args, "--concierge-authenticator") == "corp"),
    (["--concierge-authenticator-name", "corp"],
     lambda args: _arg(args, "--concierge-authenticator") == "corp"),
])
def test_a_login_flag_wins_over_the_authenticator(h: CLIHarness, kube: FakeKubectl,
                                                  cas: tuple[str, str], flags: list[str],
                                                  check: Any) -> None:
    """Only one value of the published authenticator is wrong, and the flag gives it."""
    name, issuer, audience = CORP
    broken = {"--issuer": (name, WRONG[1], audience), "--oidc-issuer": (name, WRONG[1], audience),
              "--client-id": (name, issuer, WRONG[2])}.get(flags[0], CORP)
    if flags[0].startswith("--concierge-authenticator"):
        # The flag names one of two: without it the choice would be ambiguous.
        kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], WRONG, CORP)]
    else:
        kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], broken)]
    assert _get(h, *flags) == 0, h.last_stderr
    assert check(yaml.safe_load(h.last_stdout)["users"][0]["user"]["exec"]["args"])
    assert h.concierge.logins == ["corp:alice@example.com"]


def test_concierge_flags_win_over_the_frontend(h: CLIHarness, kube: FakeKubectl,
                                               cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", "https://wrong-concierge.test", cas[0], CORP)]
    assert _get(h, "--concierge-endpoint", CONCIERGE, "--concierge-ca-bundle-data", cas[1]) == 0
    args = yaml.safe_load(h.last_stdout)["users"][0]["user"]["exec"]["args"]
    assert _arg(args, "--concierge-endpoint") == CONCIERGE
    assert _arg(args, "--concierge-ca-bundle-data") == cas[1]
    assert base64.b64decode(cas[0]).decode() not in h.router.clients
    assert h.concierge.logins == ["corp:alice@example.com"]


def test_the_endpoint_flag_alone_keeps_the_published_ca(h: CLIHarness, kube: FakeKubectl,
                                                        cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", "https://wrong-concierge.test", cas[1], CORP)]
    assert _get(h, "--concierge-endpoint", CONCIERGE) == 0, h.last_stderr
    args = yaml.safe_load(h.last_stdout)["users"][0]["user"]["exec"]["args"]
    assert _arg(args, "--concierge-ca-bundle-data") == cas[1]


def test_cluster_flags_win_over_the_context(h: CLIHarness, kube: FakeKubectl,
                                            cas: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _get(h, "--server", "https://other.test:6443", "--cluster-ca-bundle-data", cas[1],
                out=out) == 0, h.last_stderr
    assert _written(out)[0] == {"server": "https://other.test:6443",
                                "certificate-authority-data": cas[1]}
    assert "kubeconfig context" not in h.last_stderr  # nothing was taken from it


def test_the_server_flag_alone_keeps_the_contexts_ca(h: CLIHarness, kube: FakeKubectl,
                                                     cas: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _get(h, "--server", "https://other.test:6443", out=out) == 0, h.last_stderr
    assert _written(out)[0] == {"server": "https://other.test:6443",
                                "certificate-authority-data": cas[0]}


def test_login_values_given_need_no_authenticator_lookup(h: CLIHarness, kube: FakeKubectl,
                                                         cas: tuple[str, str]) -> None:
    """Issuer, client id and name all given: the published authenticators are not consulted,
    so a name the CredentialIssuer does not list is no error."""
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1])]
    assert _get(h, "--issuer", IDP, "--client-id", CLIENT_ID,
                "--concierge-authenticator", "corp") == 0, h.last_stderr
    assert "nothing" not in h.last_stderr


# --- ambiguous or missing -------------------------------------------------------------------


def test_several_credential_issuers_are_listed(h: CLIHarness, kube: FakeKubectl,
                                               cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("alpha", "https://alpha.test", cas[1], CORP),
                    credential_issuer("beta", CONCIERGE, cas[1], CORP)]
    assert _get(h) == 2
    assert "the cluster has 2 CredentialIssuers: alpha (https://alpha.test), beta " \
           "(https://concierge.test)" in h.last_stderr
    assert "--credential-issuer NAME" in h.last_stderr
    assert _get(h, "--credential-issuer", "beta") == 0, h.last_stderr
    args = yaml.safe_load(h.last_stdout)["users"][0]["user"]["exec"]["args"]
    assert _arg(args, "--concierge-endpoint") == CONCIERGE


def test_a_long_list_of_credential_issuers_is_cut(h: CLIHarness, kube: FakeKubectl,
                                                  cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer(f"c{i:02}", CONCIERGE, cas[1], CORP) for i in range(25)]
    assert _get(h) == 2
    assert "c19 (" in h.last_stderr
    assert "c20 (" not in h.last_stderr
    assert "and 5 more" in h.last_stderr


def test_a_named_credential_issuer_that_is_not_there(h: CLIHarness, kube: FakeKubectl) -> None:
    assert _get(h, "--credential-issuer", "nope") == 2
    assert "no CredentialIssuer 'nope' (it has: corp-concierge (https://concierge.test))" \
        in h.last_stderr
    assert "--credential-issuer" in h.last_stderr


def test_no_credential_issuer_at_all(h: CLIHarness, kube: FakeKubectl) -> None:
    kube.issuers = []
    assert _get(h) == 1
    assert "the cluster has no CredentialIssuer" in h.last_stderr
    assert "Is the concierge installed and running" in h.last_stderr
    # The server and its CA were discovered; only the concierge's values are still needed.
    assert ("Or pass --concierge-endpoint, --concierge-ca-bundle, --issuer, --client-id and "
            "--concierge-authenticator." in h.last_stderr)


def test_the_hint_lists_only_the_flags_still_missing(h: CLIHarness, kube: FakeKubectl,
                                                     cas: tuple[str, str]) -> None:
    kube.issuers = []
    assert _get(h, "--server", TEST_SERVER, "--cluster-ca-bundle-data", cas[0],
                "--issuer", IDP) == 1
    assert ("Or pass --concierge-endpoint, --concierge-ca-bundle, --client-id and "
            "--concierge-authenticator." in h.last_stderr)


def test_several_authenticators_are_listed_with_their_issuers(h: CLIHarness, kube: FakeKubectl,
                                                              cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], CORP,
                                      ("corp-es256", IDP, "es256-client"))]
    assert _get(h) == 2
    assert ("lists 2 authenticators: corp (issuer https://idp.test, client id pinniped-cli), "
            "corp-es256 (issuer https://idp.test, client id es256-client)") in h.last_stderr
    assert "--concierge-authenticator NAME" in h.last_stderr


def test_published_text_is_made_printable(h: CLIHarness, kube: FakeKubectl,
                                          cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], CORP,
                                      ("odd", IDP, "client\x1b]0;owned\x07"))]
    assert _get(h) == 2
    assert "odd (issuer https://idp.test, client id client?]0;owned?)" in h.last_stderr
    assert "\x1b" not in h.last_stderr


def test_a_named_authenticator_that_is_not_listed(h: CLIHarness, kube: FakeKubectl) -> None:
    assert _get(h, "--concierge-authenticator", "okta") == 2
    assert "lists no authenticator 'okta'" in h.last_stderr
    assert "it lists: corp (issuer https://idp.test" in h.last_stderr
    assert "--concierge-authenticator" in h.last_stderr


def test_no_usable_authenticator(h: CLIHarness, kube: FakeKubectl, cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1])]
    assert _get(h) == 1
    assert "lists no authenticator that logins can use" in h.last_stderr
    assert "Or pass --issuer, --client-id and --concierge-authenticator." in h.last_stderr


def test_a_failing_strategy_is_quoted(h: CLIHarness, kube: FakeKubectl,
                                      cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], CORP, status="Error",
                                      message="cannot reach the Kubernetes API\x1b[31m")]
    assert _get(h) == 1
    assert "CredentialIssuer 'c' offers no usable way to reach its concierge: " \
           "ImpersonationToken Error (Broken): cannot reach the Kubernetes API?[31m" \
        in h.last_stderr
    assert "\x1b" not in h.last_stderr
    assert "--concierge-endpoint" in h.last_stderr


def test_a_credential_issuer_without_status_yet(h: CLIHarness, kube: FakeKubectl) -> None:
    kube.issuers = [{"metadata": {"name": "fresh"}, "spec": {}}]
    assert _get(h) == 1
    assert "CredentialIssuer 'fresh' has no strategies yet" in h.last_stderr


def test_an_unusable_strategy_does_not_matter_when_flags_give_the_concierge(
        h: CLIHarness, kube: FakeKubectl, cas: tuple[str, str]) -> None:
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], CORP, status="Error")]
    assert _get(h, "--concierge-endpoint", CONCIERGE, "--concierge-ca-bundle-data",
                cas[1]) == 0, h.last_stderr


# --- what kubectl says ----------------------------------------------------------------------


@pytest.mark.parametrize(("stderr", "needles"), [
    (FORBIDDEN, ["the credentials of context 'work' may not list CredentialIssuers",
                 'User "bob" cannot list resource "credentialissuers"',
                 "must grant get and list", "system:authenticated"]),
    ('error: the server doesn\'t have a resource type "credentialissuers"',
     ["has no CredentialIssuer API", "the concierge is not installed there"]),
    (UNREACHABLE, ["cannot list CredentialIssuers at https://k8s.test:6443",
                   "The connection to the server 127.0.0.1:1 was refused",
                   "Check that the cluster is reachable"]),
    ("error: You must be logged in to the server (Unauthorized)",
     ["refused the credentials of context 'work'", "(Unauthorized)"]),
])
def test_what_kubectl_says_is_explained(h: CLIHarness, kube: FakeKubectl, stderr: str,
                                        needles: list[str]) -> None:
    kube.answers["get"] = KubectlResult(1, "", stderr + "\n")
    assert _get(h) == 1
    for needle in needles:
        assert needle in h.last_stderr
    assert "memcache.go" not in h.last_stderr  # klog's repeated lines are left out
    assert "Or pass --concierge-endpoint" in h.last_stderr


def test_no_secret_from_kubectl_reaches_the_message(h: CLIHarness, kube: FakeKubectl) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"
    opaque = "Zx9-" * 11
    kube.answers["get"] = KubectlResult(
        1, "", f"error: Get https://k8s.test: Authorization: Bearer {opaque} rejected; "
               f"token={jwt[:20]} password: hunter2hunter2 id {jwt}\n")
    assert _get(h) == 1
    for secret in (opaque, jwt, jwt[:20], "hunter2hunter2"):
        assert secret not in h.last_stderr
    assert "Bearer [redacted]" in h.last_stderr


def test_a_context_kubectl_cannot_read(h: CLIHarness, kube: FakeKubectl) -> None:
    kube.answers["config"] = KubectlResult(1, "", "error: cannot locate context nope\n")
    assert _get(h, "--kubeconfig-context", "nope") == 1
    assert "cannot read the kubeconfig's context (kubectl: error: cannot locate context nope)" \
        in h.last_stderr
    assert "--kubeconfig-context NAME" in h.last_stderr
    assert [c for c in kube.calls if c[0] == "get"] == []  # the CredentialIssuer was not read


def test_no_current_context_lists_the_contexts(h: CLIHarness, kube: FakeKubectl) -> None:
    kube.answers["config"] = KubectlResult(
        1, "", "error: current-context must exist in order to minify\n")
    kube.answers["config get-contexts"] = KubectlResult(0, "ctx-a\nctx-b\n", "")
    assert _get(h) == 2
    assert "its contexts are ctx-a, ctx-b" in h.last_stderr
    assert "--kubeconfig-context NAME" in h.last_stderr


def test_a_context_through_a_proxy_is_refused_not_dropped(h: CLIHarness, kube: FakeKubectl,
                                                          cas: tuple[str, str]) -> None:
    kube.cluster = {"server": TEST_SERVER, "certificate-authority-data": cas[0],
                    "proxy-url": "http://proxy.corp:3128"}
    assert _get(h) == 1
    assert "proxy-url" in h.last_stderr
    assert "--server" in h.last_stderr


def test_an_issuer_flag_picks_its_own_authenticator_and_ca(h: CLIHarness, kube: FakeKubectl,
                                                           cas: tuple[str, str],
                                                           tmp_path: Path) -> None:
    """--issuer chooses among published authenticators, and another issuer's CA is not used."""
    kube.issuers = [credential_issuer("c", CONCIERGE, cas[1], WRONG, CORP)]
    kube.issuers[0]["status"]["authenticators"][0]["tls"] = {"certificateAuthorityData": cas[0]}
    out = tmp_path / "picked.kubeconfig"
    assert _get(h, "--issuer", IDP, out=out) == 0, h.last_stderr
    _, args = _written(out)
    assert _arg(args, "--concierge-authenticator") == "corp"
    assert "--ca-bundle-data" not in args  # WRONG's CA is not corp's


# --- the context's cluster ------------------------------------------------------------------


def test_a_context_that_skips_tls_verification_is_not_trusted(h: CLIHarness,
                                                              kube: FakeKubectl,
                                                              cas: tuple[str, str]) -> None:
    kube.cluster = {"server": TEST_SERVER, "insecure-skip-tls-verify": True}
    assert _get(h) == 2
    assert "skips TLS verification (insecure-skip-tls-verify)" in h.last_stderr
    assert "--cluster-ca-bundle" in h.last_stderr
    # Even with the cluster CA given, nothing is read through that context.
    assert _get(h, "--cluster-ca-bundle-data", cas[0]) == 2
    assert "skips TLS verification" in h.last_stderr
    assert ["get", CREDENTIAL_ISSUERS, "-o", "json"] not in kube.calls


def test_a_context_without_a_ca_needs_the_flag(h: CLIHarness, kube: FakeKubectl,
                                               cas: tuple[str, str]) -> None:
    kube.cluster = {"server": TEST_SERVER}
    assert _get(h) == 2
    assert "names no certificate-authority" in h.last_stderr
    assert "--cluster-ca-bundle FILE" in h.last_stderr
    assert _get(h, "--cluster-ca-bundle-data", cas[0]) == 0, h.last_stderr


def test_a_plain_http_server_needs_the_flag(h: CLIHarness, kube: FakeKubectl,
                                            cas: tuple[str, str]) -> None:
    kube.cluster = {"server": "http://k8s.test:8080", "certificate-authority-data": cas[0]}
    assert _get(h) == 2
    assert "'http://k8s.test:8080', not https://" in h.last_stderr
    assert "--server URL" in h.last_stderr


def test_the_cluster_ca_is_needed_when_it_cannot_be_discovered(h: CLIHarness,
                                                              kube: FakeKubectl) -> None:
    """The all-flags form without --cluster-ca-bundle: the CA comes from the context, which
    has none here, so the error names the flag."""
    kube.cluster = {"server": TEST_SERVER}
    args = ["get", "kubeconfig", *h.login_args()[2:], "--server", TEST_SERVER]
    assert h.run(args, PASSWORD_ENV) == 2
    assert "--cluster-ca-bundle" in h.last_stderr
    assert [c[:2] for c in kube.calls] == [["config", "view"]]


# --- malformed answers ----------------------------------------------------------------------


def _corrupt(item: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    node: Any = item
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return item


@pytest.mark.parametrize(("path", "value", "needle"), [
    ("status.strategies", "not-a-list", "strategies"),
    ("status.strategies.0.status", "Maybe", "strategies.0.status"),
    ("status.authenticators.0.issuer", "http://idp.test", "authenticators.0.issuer"),
    ("status.authenticators.0.name", "Not_A_Label", "authenticators.0.name"),
    ("status.authenticators.0.audience", 42, "authenticators.0.audience"),
    ("status.strategies.0.frontend.tokenCredentialRequestInfo.server", "x" * 5000,
     "tokenCredentialRequestInfo.server"),
])
def test_a_malformed_status_is_refused(h: CLIHarness, kube: FakeKubectl, path: str,
                                       value: object, needle: str) -> None:
    _corrupt(kube.issuers[0], path, value)
    assert _get(h) == 1
    assert "CredentialIssuer 'corp-concierge' has a status pinniped cannot use" in h.last_stderr
    assert needle in h.last_stderr
    assert "x" * 300 not in h.last_stderr  # the offending value is not echoed


def test_a_ca_that_is_no_certificate_is_refused(h: CLIHarness, kube: FakeKubectl) -> None:
    _corrupt(kube.issuers[0],
             "status.strategies.0.frontend.tokenCredentialRequestInfo.certificateAuthorityData",
             TEST_CA_DATA)  # base64 of PEM armour around no certificate
    assert _get(h) == 1
    assert "CredentialIssuer 'corp-concierge''s certificateAuthorityData is unusable" \
        in h.last_stderr
    assert "--concierge-ca-bundle" in h.last_stderr


def test_a_context_ca_that_is_no_certificate_is_refused(h: CLIHarness,
                                                        kube: FakeKubectl) -> None:
    kube.cluster["certificate-authority-data"] = "not base64!"
    assert _get(h) == 1
    assert "context 'work''s certificate-authority is unusable" in h.last_stderr


@pytest.mark.parametrize("stdout", [
    "not json", "[]", '{"items": "x"}', '{"items": [1]}', '{"items": [{"metadata": {}}]}',
    '{"items": [{"metadata": {"name": "\\u001b[2J"}}]}',
])
def test_a_malformed_list_is_refused(h: CLIHarness, kube: FakeKubectl, stdout: str) -> None:
    kube.answers["get"] = KubectlResult(0, stdout, "")
    assert _get(h) == 1
    assert "CredentialIssuer" in h.last_stderr
    assert "internal error" not in h.last_stderr


@pytest.mark.parametrize("stdout", [
    "", "[]\n[]", '[{"name": 1}]\n[{"cluster": {"server": "https://x"}}]',
    '[{"name": "a"}]\n[{"cluster": {"server": "https://x", "insecure-skip-tls-verify": "yes"}}]',
])
def test_a_malformed_context_is_refused(h: CLIHarness, kube: FakeKubectl, stdout: str) -> None:
    kube.answers["config"] = KubectlResult(0, stdout, "")
    assert _get(h) == 1
    assert "kubectl printed a kubeconfig context pinniped cannot read" in h.last_stderr


# --- help -----------------------------------------------------------------------------------


def test_help_says_which_kubeconfig_is_read_and_which_written(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pinniped_cli.main import main

    with pytest.raises(SystemExit):
        main(["get", "kubeconfig", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--kubeconfig FILE a kubeconfig that can already read the cluster, to discover " \
           "from; only read, never written (-o names the output)" in text
    assert "For `whoami` and `logout`, --kubeconfig is the one this command wrote" in text
    assert "--credential-issuer NAME" in text
    assert "--concierge-authenticator NAME, --concierge-authenticator-name NAME" in text
    assert "(default: the only one the CredentialIssuer lists)" in text


# --- the bounded kubectl runner, with scripts standing in for kubectl -----------------------


def _script(directory: Path, body: str) -> dict[str, str]:
    """A `kubectl` on PATH that runs `body` (sh); returns the environment that finds it."""
    directory.mkdir(exist_ok=True)
    path = directory / "kubectl"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return {"PATH": f"{directory}:/usr/bin:/bin"}


def test_the_runner_passes_kubeconfig_and_context_and_no_stdin(tmp_path: Path) -> None:
    env = _script(tmp_path / "bin", 'echo "$@"; if read line; then echo stdin; fi; '
                                    'echo warning >&2; exit 3')
    result = kubectl_module.new_kubectl(env, "/k/config", "ctx")(["get", "x"])
    assert result == KubectlResult(3, "--kubeconfig /k/config --context ctx get x\n",
                                   "warning\n")


def test_kubectl_and_its_plugins_never_see_the_password(tmp_path: Path) -> None:
    env = _script(tmp_path / "bin", 'echo "user=${PINNIPED_USERNAME-} pw=${PINNIPED_PASSWORD-}"')
    env |= {"PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": "hunter2-secret"}
    result = kubectl_module.new_kubectl(env, None, None)(["get", "x"])
    assert result.stdout == "user=alice pw=\n"


def test_the_runner_caps_what_it_reads(tmp_path: Path) -> None:
    env = _script(tmp_path / "bin", "head -c 3000000 /dev/zero | tr '\\0' a")
    with pytest.raises(KubectlUnavailable, match="printed more than 1024 KiB"):
        kubectl_module.new_kubectl(env, None, None, max_stdout=1024 * 1024)(["get"])
    big_err = _script(tmp_path / "bin2", "head -c 1000000 /dev/zero | tr '\\0' e >&2; echo ok")
    result = run_bounded(["kubectl"], {**os.environ, **big_err}, 10, 1024, max_stderr=100)
    assert (result.stdout, len(result.stderr)) == ("ok\n", 100)


def test_the_runner_gives_up_after_its_timeout_and_ends_the_plugins(tmp_path: Path) -> None:
    pid_file = tmp_path / "plugin.pid"
    env = _script(tmp_path / "bin", f"sleep 30 & echo $! > {pid_file}; wait")
    started = time.monotonic()
    with pytest.raises(KubectlUnavailable, match=r"did not finish within 0\.5 s"):
        kubectl_module.new_kubectl(env, None, None, timeout=0.5)(["get"])
    assert time.monotonic() - started < 5
    plugin = int(pid_file.read_text())
    for _ in range(50):  # the killed child is reaped by init shortly after
        try:
            os.kill(plugin, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the process kubectl started outlived the timeout")


def test_no_kubectl_on_path(tmp_path: Path) -> None:
    with pytest.raises(KubectlUnavailable, match="kubectl is not on PATH") as raised:
        kubectl_module.new_kubectl({"PATH": str(tmp_path)}, None, None)(["get"])
    assert "--concierge-endpoint" in str(raised.value)


def test_output_that_is_not_text_is_refused(tmp_path: Path) -> None:
    env = _script(tmp_path / "bin", "printf '\\377\\376'")
    with pytest.raises(KubectlUnavailable, match="not UTF-8"):
        kubectl_module.new_kubectl(env, None, None)(["get"])


def test_kubectl_message_keeps_the_summary_short_and_printable() -> None:
    text = kubectl_message("E1201 09:57:16.278033   21826 memcache.go:265] noise\n"
                           "error: \x1b[2Jbad " + "word " * 200)
    assert text.startswith("error: ?[2Jbad word")
    assert len(text) <= kubectl_module.MESSAGE_CHARS + 3
    assert kubectl_message("") == "no message"


def test_the_issuers_published_ca_is_used_unless_a_flag_gives_one(
        h: CLIHarness, kube: FakeKubectl, kubeconfig_in: Path, tmp_path: Path,
        cas: tuple[str, str]) -> None:
    """An IdP with a private CA needs no --ca-bundle: the concierge publishes the CA too."""
    kube.issuers[0]["status"]["authenticators"][0]["tls"] = {"certificateAuthorityData": cas[0]}
    out = tmp_path / "discovered.kubeconfig"
    assert _get(h, "--kubeconfig", str(kubeconfig_in), out=out) == 0, h.last_stderr
    _, args = _written(out)
    assert _arg(args, "--ca-bundle-data") == cas[0]
    assert base64.b64decode(cas[0]).decode() in h.router.clients
    assert "the issuer's CA" in h.last_stderr

    own_ca = tmp_path / "own-ca.pem"
    own_ca.write_bytes(base64.b64decode(cas[1]))
    out = tmp_path / "flagged.kubeconfig"
    assert _get(h, "--kubeconfig", str(kubeconfig_in), "--ca-bundle", str(own_ca),
                out=out) == 0, h.last_stderr
    _, args = _written(out)
    assert _arg(args, "--ca-bundle-data") == cas[1]
