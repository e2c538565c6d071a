"""Logging in at a real concierge and acting with what it returns, for integration tests.

`login` sends a TokenCredentialRequest as the CLI would; `Kubectl` runs kubectl
with nothing but the returned credential (and its impersonation identity), so
a test sees exactly what the cluster grants that credential.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx

from localenv import leak_sentinel
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from pinniped_apis import wire


def tls(concierge: LocalConcierge) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(concierge.ca_file))


def post(concierge: LocalConcierge, path: str, body: dict[str, Any],
         bearer: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with httpx.Client(verify=tls(concierge), timeout=30) as http:
        return http.post(concierge.url + path, json=body, headers=headers)


def login(concierge: LocalConcierge, id_token: str,
          authenticator: str | None = None) -> wire.ClusterCredential:
    request = wire.TokenCredentialRequest.create(
        token=id_token, authenticator_name=authenticator or concierge.authenticator_name)
    response = post(concierge, wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
    assert response.status_code == 200, response.text
    credential = wire.parse_credential_response(response.json())
    leak_sentinel.register(leak_sentinel.CLUSTER_TOKEN, credential.token)
    return credential


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
