"""KUBERNETES_EXEC_INFO in, ExecCredential out: the protocol kubectl speaks with the plugin."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from pinniped_apis import rfc3339, wire
from pinniped_cli import execcredential
from pinniped_cli.errors import UsageError

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _info(version: str, **spec: object) -> str:
    return json.dumps({"apiVersion": version, "kind": "ExecCredential", "spec": spec})


@pytest.mark.parametrize("version", [execcredential.V1, execcredential.V1BETA1])
def test_answers_in_the_version_kubectl_asked_for(version: str) -> None:
    info = execcredential.read_exec_info(_info(version, interactive=False), stdin_is_tty=True)
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)
    out = execcredential.render(info, "the-token", rfc3339.format_time(expires))
    body = json.loads(out)
    assert out.endswith("\n")
    assert out.count("\n") == 1
    assert body["apiVersion"] == version
    assert body["kind"] == "ExecCredential"
    assert body["status"] == {"token": "the-token", "expirationTimestamp": "2030-01-02T03:04:05Z"}


def test_reads_interactive_and_cluster() -> None:
    ca = base64.b64encode(CA_PEM).decode()
    info = execcredential.read_exec_info(_info(execcredential.V1, interactive=True, cluster={
        "server": "https://k8s:6443", "certificate-authority-data": ca}), stdin_is_tty=False)
    assert info.interactive is True
    assert info.from_kubectl is True
    assert info.cluster is not None
    assert info.cluster.server == "https://k8s:6443"
    assert info.cluster.ca_data == ca
    # The same CA named the way `get kubeconfig` names it gives the same cluster identity.
    assert info.cluster == execcredential.ClusterInfo(
        "https://k8s:6443", execcredential.ca_fingerprint(ca))


def test_interactive_defaults_to_false_when_kubectl_omits_it() -> None:
    info = execcredential.read_exec_info(_info(execcredential.V1BETA1), stdin_is_tty=True)
    assert info.interactive is False
    assert info.cluster is None


@pytest.mark.parametrize("tty", [True, False])
def test_without_exec_info_a_terminal_means_interactive(tty: bool) -> None:
    info = execcredential.read_exec_info(None, stdin_is_tty=tty)
    assert (info.interactive, info.from_kubectl, info.api_version) == (
        tty, False, execcredential.V1)


@pytest.mark.parametrize(("raw", "needle"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (_info("client.authentication.k8s.io/v1alpha1"), "apiVersion: client.authentication.k8s.io/v1"),
])
def test_bad_exec_info_says_what_to_do(raw: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        execcredential.read_exec_info(raw, stdin_is_tty=False)


def test_cluster_with_different_ca_is_a_different_cluster() -> None:
    a = execcredential.ca_fingerprint(base64.b64encode(b"one").decode())
    b = execcredential.ca_fingerprint(base64.b64encode(b"two").decode())
    assert a != b
    assert execcredential.ca_fingerprint("") == ""


@pytest.mark.parametrize(("when", "text"), [
    (dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC), "2024-02-29T23:59:59Z"),
    (dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
     "2024-06-01T19:00:00Z"),
])
def test_timestamps_are_utc_whole_seconds_and_read_back(when: dt.datetime, text: str) -> None:
    assert rfc3339.format_time(when) == text
    assert rfc3339.parse_time(text) == when.replace(microsecond=0)
    assert rfc3339.parse_time("2024-06-01T12:00:00-07:00") == dt.datetime(
        2024, 6, 1, 19, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("bad", [None, 5, "yesterday", "2024-01-01T00:00:00"])
def test_timestamps_without_a_zone_or_not_rfc3339_are_refused(bad: object) -> None:
    assert rfc3339.parse_time(bad) is None
    with pytest.raises(wire.WireError, match="time zone") as caught:
        wire.parse_time(bad, "status.expirationTimestamp")
    assert caught.value.field == "status.expirationTimestamp"
