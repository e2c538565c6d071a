"""The ExecCredential protocol between kubectl and its credential plugins.

kubectl tells the plugin what it wants in KUBERNETES_EXEC_INFO (the API
version, whether a person is at the terminal, and with provideClusterInfo the
cluster it is talking to) and reads one ExecCredential of the same version on
stdout. Plain classes rather than dataclasses, `binascii` rather than
`base64` and `cache_keys.sha256_hex` rather than `hashlib`: this runs on every
kubectl call.
"""

from __future__ import annotations

import binascii
import json

from pinniped_cli.cache_keys import sha256_hex
from pinniped_cli.errors import UsageError

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
SUPPORTED_VERSIONS = (V1, V1BETA1)
KIND = "ExecCredential"
ENV_VAR = "KUBERNETES_EXEC_INFO"


class ClusterInfo:
    """The cluster kubectl is calling, reduced to what identifies it."""

    __slots__ = ("ca_data", "ca_sha256", "server")

    def __init__(self, server: str, ca_sha256: str, ca_data: str = "") -> None:
        self.server = server
        self.ca_sha256 = ca_sha256
        #: The base64 CA exactly as kubectl sent it (to tell people what to regenerate with).
        self.ca_data = ca_data

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ClusterInfo) and self.server == other.server
                and self.ca_sha256 == other.ca_sha256)

    def __hash__(self) -> int:
        return hash((self.server, self.ca_sha256))

    def __repr__(self) -> str:
        return f"ClusterInfo(server={self.server!r}, ca_sha256={self.ca_sha256[:12]!r})"


class ExecInfo:
    __slots__ = ("api_version", "cluster", "from_kubectl", "interactive")

    def __init__(self, api_version: str, interactive: bool, cluster: ClusterInfo | None,
                 from_kubectl: bool) -> None:
        self.api_version = api_version
        self.interactive = interactive
        self.cluster = cluster
        #: False when a person ran the command by hand (no KUBERNETES_EXEC_INFO).
        self.from_kubectl = from_kubectl


def read_exec_info(raw: str | None, stdin_is_tty: bool) -> ExecInfo:
    """Parse KUBERNETES_EXEC_INFO; without it, a person ran us and a terminal means interactive."""
    if raw is None or not raw.strip():
        return ExecInfo(api_version=V1, interactive=stdin_is_tty, cluster=None,
                        from_kubectl=False)
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{ENV_VAR} is not valid JSON. It is set by kubectl for exec plugins; "
                         f"unset it to run pinniped by hand.") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{ENV_VAR} must be a JSON object (an ExecCredential).")
    version = obj.get("apiVersion")
    if version not in SUPPORTED_VERSIONS:
        raise UsageError(
            f"kubectl asked for ExecCredential apiVersion {version!r}, which pinniped does not "
            f"speak. Set `apiVersion: {V1}` in the exec section of your kubeconfig "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)}).")
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    interactive = spec.get("interactive") is True
    return ExecInfo(api_version=version, interactive=interactive,
                    cluster=_cluster_info(spec.get("cluster")), from_kubectl=True)


def _cluster_info(value: object) -> ClusterInfo | None:
    if not isinstance(value, dict):
        return None
    server = value.get("server")
    if not isinstance(server, str) or not server:
        return None
    ca = value.get("certificate-authority-data")
    ca = ca if isinstance(ca, str) else ""
    return ClusterInfo(server=server, ca_sha256=ca_fingerprint(ca), ca_data=ca)


def ca_fingerprint(ca_data_b64: str) -> str:
    """SHA-256 of the CA bytes, so `get kubeconfig` and kubectl name the same cluster alike."""
    if not ca_data_b64:
        return ""
    try:  # what base64.b64decode(validate=True) does
        raw = binascii.a2b_base64(ca_data_b64.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raw = ca_data_b64.encode()
    return sha256_hex(raw)


def render(info: ExecInfo, token: str, expiration_timestamp: str) -> str:
    """The ExecCredential kubectl expects, in the version it asked for.

    `expiration_timestamp` is RFC 3339, as `pinniped_apis.rfc3339.format_time` writes it.
    """
    body = {
        "kind": KIND,
        "apiVersion": info.api_version,
        "spec": {"interactive": info.interactive},
        "status": {"token": token, "expirationTimestamp": expiration_timestamp},
    }
    return json.dumps(body, separators=(",", ":")) + "\n"
