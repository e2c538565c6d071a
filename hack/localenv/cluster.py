"""A real Kubernetes control plane on loopback: etcd plus kube-apiserver.

No controller-manager or scheduler runs: the login path only needs the API
(ServiceAccounts, RBAC, TokenRequest, TokenReview), and leaving them out keeps
start-up to a few seconds. Tests therefore create their own Roles.

The apiserver writes an audit log so tests and the demo can show that every
action names the real person, not the ServiceAccount that carried it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localenv import pki
from localenv.procs import ManagedProcess, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kube-apiserver.sh"
DEPLOY_CRDS = REPO_ROOT / "deploy" / "crds.yaml"
KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.20.2")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"

#: Metadata for everything (who did what to which object), except the writes of
#: ElevationRequests, logged with their bodies: so the log shows who asked (spec.requester)
#: and who approved (status.approvals) as the concierge wrote them. Reads stay at Metadata:
#: a list or watch body would repeat every request at each sync.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: RequestResponse
    verbs: [create, update, patch, delete]
    resources:
      - group: elevation.concierge.pinniped.dev
        resources: [elevationrequests]
  - level: Metadata
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pinniped-py"


def find_kube_apiserver(build: bool = True) -> Path:
    """$KUBE_APISERVER, then PATH, then the per-version cache, then a fresh build."""
    explicit = os.environ.get("KUBE_APISERVER")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"KUBE_APISERVER={explicit} is not an executable file")
        return path
    on_path = shutil.which("kube-apiserver")
    if on_path:
        return Path(on_path)
    cached = cache_dir() / "kube-apiserver" / KUBE_VERSION / "kube-apiserver"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    if not build:
        raise FileNotFoundError(
            f"no kube-apiserver found; run {BUILD_SCRIPT} (it caches one at {cached})")
    print(f"kube-apiserver {KUBE_VERSION} is not built yet on this machine; building it "
          "once (about 8 minutes), progress follows", file=sys.stderr, flush=True)
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True,
                            check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def find_etcd() -> Path:
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if not found:
        raise FileNotFoundError("etcd not found: install Debian's etcd-server "
                                "(hack/bootstrap.sh does this)")
    return Path(found)


def _https_ok(url: str, ca_file: Path, token: str | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, context=context, timeout=2) as response:
        return bool(response.status == 200 and response.read().strip() == b"ok")


@dataclass
class LocalCluster:
    """A running etcd + kube-apiserver; `stop()` ends both by PID."""

    workdir: Path
    server: str
    ca_file: Path
    admin_token: str = field(repr=False)
    admin_kubeconfig: Path
    audit_log: Path
    service_account_issuer: str
    _processes: list[ManagedProcess] = field(default_factory=list, repr=False)
    _crds_installed: bool = field(default=False, repr=False)
    #: How the apiserver was started, so a fault test can start it again the same way.
    _apiserver_argv: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def start(cls, workdir: Path, ca: pki.CA) -> LocalCluster:
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        apiserver_bin, etcd_bin = find_kube_apiserver(), find_etcd()
        processes: list[ManagedProcess] = []
        try:
            etcd_url = _start_etcd(etcd_bin, workdir, processes)
            return cls._start_apiserver(apiserver_bin, workdir, ca, etcd_url, processes)
        except BaseException:
            for proc in reversed(processes):
                proc.stop()
            raise

    @classmethod
    def _start_apiserver(cls, binary: Path, workdir: Path, ca: pki.CA, etcd_url: str,
                         processes: list[ManagedProcess]) -> LocalCluster:
        port = free_port()
        serving = ca.issue(workdir, "kube-apiserver",
                           hosts=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes.default.svc"))
        sa_key = workdir / "service-account.key"
        pki.write_private(sa_key, pki.pem_private_key(pki.new_rsa_key()))
        admin_token = secrets.token_urlsafe(32)
        token_file = workdir / "tokens.csv"
        pki.write_private(token_file, f'{admin_token},admin,admin-uid,"system:masters"\n'.encode())
        policy = workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        audit_log = workdir / "audit.log"
        argv = [
            str(binary),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={serving.cert_path}",
            f"--tls-private-key-file={serving.key_path}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
        ]
        if KUBE_VERSION.startswith(("1.20.", "1.21.", "1.22.", "1.23.")):
            argv.append("--insecure-port=0")
        server = f"https://127.0.0.1:{port}"
        processes.append(_spawn_apiserver(argv, workdir, server, ca.cert_path, admin_token))
        kubeconfig = workdir / "admin.kubeconfig"
        write_kubeconfig(kubeconfig, server=server, ca_file=ca.cert_path, user="admin",
                         token=admin_token)
        return cls(workdir=workdir, server=server, ca_file=ca.cert_path, admin_token=admin_token,
                   admin_kubeconfig=kubeconfig, audit_log=audit_log,
                   service_account_issuer=SERVICE_ACCOUNT_ISSUER, _processes=processes,
                   _apiserver_argv=tuple(argv))

    def kubectl(self, *args: str, kubeconfig: Path | None = None, check: bool = True,
                input: str | None = None, env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; admin unless another kubeconfig is given."""
        argv = ["kubectl", f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, input=input,
                                env=env, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stderr.strip()}")
        return result

    def install_crds(self) -> None:
        """Apply deploy/crds.yaml (JWTAuthenticator, CredentialIssuer) and wait until the
        apiserver serves them; once per cluster, and harmless again (kubectl apply)."""
        if self._crds_installed:
            return
        self.kubectl("apply", "-f", str(DEPLOY_CRDS))
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                     "-f", str(DEPLOY_CRDS))
        self._crds_installed = True

    def stop_apiserver(self) -> None:
        """Kill the kube-apiserver (SIGKILL: a crash, not a graceful drain); etcd stays up.

        For outage tests: clients then see connections refused on `server`'s port until
        `start_apiserver` brings it back.
        """
        proc = self._apiserver()
        if proc is None:
            raise RuntimeError("the kube-apiserver is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stop()  # reaps it
        self._processes.remove(proc)

    def start_apiserver(self, timeout: float = 60) -> float:
        """Start the kube-apiserver again on the same etcd, port, certificates, service
        account key and tokens (so every token minted before still works); returns how
        many seconds it took to be ready."""
        if self._apiserver() is not None:
            raise RuntimeError("the kube-apiserver is already running")
        started = time.monotonic()
        self._processes.append(_spawn_apiserver(self._apiserver_argv, self.workdir, self.server,
                                                self.ca_file, self.admin_token,
                                                timeout=timeout))
        return time.monotonic() - started

    def _apiserver(self) -> ManagedProcess | None:
        return next((p for p in self._processes if p.name == "kube-apiserver"), None)

    def stop(self) -> None:
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()


def _spawn_apiserver(argv: Sequence[str], workdir: Path, server: str, ca_file: Path,
                     admin_token: str, *, timeout: float = 60) -> ManagedProcess:
    """Run the kube-apiserver and wait until it is ready (the log file is appended to)."""
    proc = ManagedProcess("kube-apiserver", argv, workdir / "kube-apiserver.log")
    try:
        wait_for(lambda: _https_ok(f"{server}/readyz", ca_file, admin_token), timeout,
                 "kube-apiserver /readyz", proc)
    except BaseException:
        proc.stop()
        raise
    return proc


def _start_etcd(binary: Path, workdir: Path, processes: list[ManagedProcess]) -> str:
    client, peer = free_port(), free_port()
    data = workdir / "etcd-data"
    data.mkdir(mode=0o700, exist_ok=True)
    argv = [
        str(binary), "--name=local", f"--data-dir={data}",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=local=http://127.0.0.1:{peer}",
        "--log-level=warn",
    ]
    proc = ManagedProcess("etcd", argv, workdir / "etcd.log",
                          env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""})
    processes.append(proc)
    url = f"http://127.0.0.1:{client}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return b'"health":"true"' in response.read()

    wait_for(healthy, 30, "etcd /health", proc)
    return url


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, user: str, token: str) -> None:
    """A minimal token kubeconfig, 0600 because it holds a bearer token."""
    import base64
    import json

    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server,
                                                   "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
    }
    # JSON is valid YAML, and keeps this module free of a YAML dependency.
    pki.write_private(path, json.dumps(config, indent=2).encode())
