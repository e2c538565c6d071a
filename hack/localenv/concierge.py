"""Run the real concierge on loopback, with the least privilege deploy/ gives it.

`LocalConcierge.start` applies deploy/rbac.yaml to the cluster (renamed into a
fresh namespace, so several concierges can share one cluster), mints a token
for the concierge's ServiceAccount, and runs the installed
`pinniped-concierge` console script with a kubeconfig holding only that
token. So every integration test also proves the deploy RBAC is enough.

`MintingIssuer` is a tiny https OIDC issuer (discovery + JWKS) whose private
keys the tests hold: the real IdP only signs well-formed tokens, and the
concierge's rejections (wrong iss, expired, future nbf, bad claim types, ...)
need tokens it will not mint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from localenv import leak_sentinel, pki
from localenv.cluster import LocalCluster, write_kubeconfig
from localenv.idp import LocalIdP
from localenv.procs import ManagedProcess, free_port, wait_for
from pinniped_apis import constants

REPO_ROOT = Path(__file__).resolve().parents[2]
CONCIERGE_BIN = REPO_ROOT / ".venv" / "bin" / "pinniped-concierge"
DEPLOY_RBAC = REPO_ROOT / "deploy" / "rbac.yaml"
CONCIERGE_SA = "pinniped-concierge"
DEFAULT_PREFIX = "corp:"
#: Each local concierge watches only the JWTAuthenticators labelled with its namespace here,
#: so that the many concierges of a test run never use each other's objects.
INSTANCE_LABEL = "concierge.pinniped.dev/instance"
#: The `minted` authenticator's prefix: the concierge refuses authenticators on
#: different issuers whose prefixes overlap, so it cannot share `corp:`.
MINTED_PREFIX = "minted:"

# --- an issuer whose keys the tests hold ------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class MintingIssuer:
    """https://127.0.0.1:PORT serving discovery and a JWKS; `mint` signs whatever a test wants.

    For fault tests it can fail on purpose: `fail_with(500)` answers every request
    with that status (an IdP that is up but broken), `stop_serving()` closes its port
    (connections refused) until `resume_serving()` opens it again on the same port,
    and `rotate()` publishes a new signing key with a new `kid`.
    """

    issuer: str
    ca_file: Path
    audience: str
    rsa_key: RSAKey
    ec_key: ECKey
    #: JWKS documents served (successful fetches), and requests answered with `fail_with`.
    jwks_fetches: int = 0
    failed_requests: int = 0
    #: `time.monotonic()` of the last JWKS served (None before the first).
    last_jwks_fetch: float | None = None
    #: Keys replaced by `rotate(keep_old=True)`: still published, no longer used by `mint`.
    retired_keys: list[RSAKey] = field(default_factory=list, repr=False)
    _failure_status: int | None = field(default=None, repr=False)
    _server: _IssuerServer | None = field(default=None, repr=False)
    _context: ssl.SSLContext | None = field(default=None, repr=False)
    _port: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, workdir: Path, ca: pki.CA, audience: str = "minted-audience") -> MintingIssuer:
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = ca.issue(workdir, "minting-issuer")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.cert_path, tls.key_path)
        server = _serve(context, 0)
        port = int(server.server_address[1])
        issuer = cls(
            issuer=f"https://127.0.0.1:{port}", ca_file=ca.cert_path, audience=audience,
            rsa_key=RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                        auto_kid=True),
            ec_key=ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"},
                                      auto_kid=True),
            _server=server, _context=context, _port=port)
        issuer._run(server)
        return issuer

    def _run(self, server: _IssuerServer) -> None:
        server.issuer = self
        threading.Thread(target=server.serve_forever, name="minting-issuer", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MintingIssuer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop_serving(self) -> None:
        """Close the port: every fetch is refused (an IdP that is down) until `resume_serving`."""
        if self._server is None:
            raise RuntimeError("the minting issuer is not serving")
        self.stop()

    def resume_serving(self) -> None:
        """Serve again, on the same port (so at the same issuer URL)."""
        if self._server is not None or self._context is None:
            raise RuntimeError("the minting issuer is already serving (or was never started)")
        self._server = _serve(self._context, self._port)
        self._run(self._server)

    def fail_with(self, status: int | None) -> None:
        """Answer every request (discovery and JWKS) with `status`; None: serve normally."""
        self._failure_status = status

    def rotate(self, *, keep_old: bool = True) -> str:
        """A new RSA signing key with a new `kid`, used by `mint` from now on; returns the kid.

        `keep_old` keeps the old RSA keys published (as an IdP does while its
        old tokens are still valid); False publishes only the new one (and the
        EC key), as after a key compromise.
        """
        new_key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                      auto_kid=True)
        with self._lock:
            self.retired_keys = [*self.retired_keys, self.rsa_key] if keep_old else []
            self.rsa_key = new_key
        return str(new_key.kid)

    def documents(self, path: str) -> dict[str, Any] | None:
        if path == "/.well-known/openid-configuration":
            return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
        if path == "/jwks":
            with self._lock:
                self.jwks_fetches += 1
                self.last_jwks_fetch = time.monotonic()
                published: list[RSAKey | ECKey] = [*self.retired_keys, self.rsa_key,
                                                   self.ec_key]
            return {"keys": [dict(key.as_dict(private=False)) for key in published]}
        return None

    def failure(self) -> int | None:
        """The status to answer with instead of serving (counted), or None."""
        status = self._failure_status
        if status is not None:
            with self._lock:
                self.failed_requests += 1
        return status

    def claims(self, email: str = "alice@example.com",
               groups: Sequence[str] = ("devs",)) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": self.audience, "sub": email.partition("@")[0],
                "email": email, "email_verified": True, "groups": list(groups),
                "iat": now, "nbf": now, "exp": now + 300}

    def mint(self, claims: Mapping[str, Any] | None = None, *, omit: Iterable[str] = (),
             alg: str = "RS256", header: Mapping[str, Any] | None = None,
             key: RSAKey | ECKey | None = None, email: str = "alice@example.com") -> str:
        """A token signed by our published key (or `key`), with `claims` over the defaults."""
        body = self.claims(email) | dict(claims or {})
        for name in omit:
            body.pop(name, None)
        signer = key or (self.ec_key if alg.startswith("ES") else self.rsa_key)
        head = {"alg": alg, "kid": signer.kid, "typ": "JWT"} | dict(header or {})
        token = jwt.encode(head, body, signer, algorithms=[alg])
        leak_sentinel.register(leak_sentinel.ID_TOKEN, token)
        return token

    def mint_unsigned(self, claims: Mapping[str, Any] | None = None) -> str:
        """`alg: none`: no signature at all."""
        head = {"alg": "none", "kid": self.rsa_key.kid, "typ": "JWT"}
        body = self.claims() | dict(claims or {})
        token = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(body).encode())}."
        leak_sentinel.register(leak_sentinel.ID_TOKEN, token)
        return token

    def mint_hs256_with_public_key(self) -> str:
        """The classic confusion attack: HMAC keyed with the issuer's *public* key."""
        head = {"alg": "HS256", "kid": self.rsa_key.kid, "typ": "JWT"}
        signing_input = ".".join(_b64(json.dumps(part).encode()) for part in (head, self.claims()))
        public_pem = self.rsa_key.as_pem(private=False)
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64(mac)}"
        leak_sentinel.register(leak_sentinel.ID_TOKEN, token)
        return token

    def impostor_key(self) -> RSAKey:
        """A key nobody published, carrying our published RSA key's kid."""
        return RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig",
                                                     "kid": str(self.rsa_key.kid)})


class _IssuerServer(ThreadingHTTPServer):
    issuer: MintingIssuer
    daemon_threads = True


def _serve(context: ssl.SSLContext, port: int) -> _IssuerServer:
    """A TLS server on 127.0.0.1:`port` (0: any); SO_REUSEADDR, so a port just closed can
    be bound again."""
    server = _IssuerServer(("127.0.0.1", port), _IssuerHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


class _IssuerHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _IssuerServer)
        failure = self.server.issuer.failure()
        if failure is not None:
            self._send(failure, {"error": "failing on purpose"})
            return
        document = self.server.issuer.documents(self.path)
        self._send(200 if document is not None else 404, document or {"error": "not found"})

    def _send(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- the concierge ----------------------------------------------------------------


def authenticator_config(name: str, issuer: str, audience: str, ca_file: Path,
                         **fields: Any) -> dict[str, Any]:
    """One `authenticators` entry, with the local defaults (email + groups, prefix corp:)."""
    return {"name": name, "type": "jwt", "issuer": issuer, "audience": audience,
            "caFile": str(ca_file), "claims": {"username": "email", "groups": "groups"},
            "usernamePrefix": DEFAULT_PREFIX, "groupsPrefix": DEFAULT_PREFIX} | fields


@dataclass
class LocalConcierge:
    url: str
    ca_file: Path
    authenticator_name: str
    config_path: Path
    audit_log_path: Path
    log_path: Path
    namespace: str
    cluster_role: str
    #: The cluster-scoped CredentialIssuer it publishes (`credentialIssuerName`).
    credential_issuer: str = ""
    _process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def instance_labels(self) -> dict[str, str]:
        """The labels a JWTAuthenticator needs for this concierge to use it."""
        return {INSTANCE_LABEL: self.namespace}

    @classmethod
    def start(cls, workdir: Path, ca: pki.CA, cluster: LocalCluster, idp: LocalIdP, *,
              extra_issuers: Sequence[MintingIssuer] = (), namespace: str | None = None,
              kube_server: str | None = None, raw_issuer: MintingIssuer | None = None,
              command: Sequence[str] | None = None, **overrides: Any) -> LocalConcierge:
        """Start one concierge; `overrides` replace top-level config keys (camelCase).

        The authenticators are `corp` and `corp-es256` (the real IdP, prefix
        corp:); `extra_issuers` add `minted` (prefix minted:). `raw_issuer`
        instead makes a concierge whose only authenticator is `minted-raw`
        (empty prefixes, which overlap every other prefix, so it must be
        alone). `namespace` lets several concierges share one (as replicas
        do); `kube_server` points the concierge at another address for the
        apiserver (a `TcpProxy` that a test can cut). `authenticators=[]`
        makes one that uses JWTAuthenticator objects alone.

        It uses only the JWTAuthenticators labelled `instance_labels`
        (`jwtAuthenticators.labelSelector`; `jwt_authenticator` makes such
        manifests), publishes the CredentialIssuer `credential_issuer` (its
        namespace) with `externalEndpoint` its URL and `tls.caFile` the local
        CA, and its RBAC is deploy/'s, renamed for its namespace.
        """
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        namespace = namespace or f"pinniped-concierge-{secrets.token_hex(3)}"
        cluster.install_crds()
        kubeconfig = workdir / "concierge.kubeconfig"
        write_kubeconfig(kubeconfig, server=kube_server or cluster.server, ca_file=cluster.ca_file,
                         user=CONCIERGE_SA, token=install_rbac(cluster, namespace))
        tls = ca.issue(workdir, "concierge")
        port = free_port()
        audit_log = workdir / "audit.log"
        authenticators = [authenticator_config("corp", idp.issuer, idp.client_id, idp.ca_file),
                          authenticator_config("corp-es256", idp.issuer, idp.es256_client_id,
                                               idp.ca_file)]
        authenticators += [
            authenticator_config("minted", minting.issuer, minting.audience, minting.ca_file,
                                 usernamePrefix=MINTED_PREFIX, groupsPrefix=MINTED_PREFIX)
            for minting in extra_issuers]
        authenticator_name = "corp"
        if raw_issuer is not None:
            authenticator_name = "minted-raw"
            authenticators = [authenticator_config(
                authenticator_name, raw_issuer.issuer, raw_issuer.audience, raw_issuer.ca_file,
                usernamePrefix="", groupsPrefix="", allowEmptyPrefixes=True)]
        url = f"https://127.0.0.1:{port}"
        config: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": port},
            "tls": {"certFile": str(tls.cert_path), "keyFile": str(tls.key_path),
                    "caFile": str(ca.cert_path)},
            "externalEndpoint": url,
            "jwtAuthenticators": {"labelSelector": f"{INSTANCE_LABEL}={namespace}"},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "namespace": namespace,
            "credentialTTLSeconds": 600,
            "clockSkewSeconds": 10,
            "auditLog": str(audit_log),
            "keyRefreshMinIntervalSeconds": 1,
            # Every test client shares 127.0.0.1: a per-address limit sized for people
            # would throttle the suite. Tests of the limit itself pass their own.
            "rateLimit": {"requestsPerSecond": 5000, "burst": 20000},
            "authenticators": authenticators,
        } | overrides
        config_path = workdir / "concierge.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = workdir / "concierge.log"
        leak_sentinel.watch_file("concierge log", log_path)
        leak_sentinel.watch_file("concierge audit log", Path(config.get("auditLog") or audit_log))
        process = ManagedProcess("pinniped-concierge",
                                 [*(command or [str(CONCIERGE_BIN)]), "--config",
                                  str(config_path)], log_path)
        running = cls(url=url, ca_file=ca.cert_path,
                      authenticator_name=authenticator_name, config_path=config_path,
                      audit_log_path=audit_log, log_path=log_path, namespace=namespace,
                      cluster_role=namespace,
                      credential_issuer=config.get("credentialIssuerName") or namespace,
                      _process=process)
        try:
            wait_for(running.is_ready, 30, "concierge /readyz", process)
        except BaseException:
            running.stop()
            raise
        return running

    @property
    def pid(self) -> int | None:
        """The running process's id (a test can tell a restart by it)."""
        return self._process.pid if self._process is not None else None

    def is_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"{self.url}/readyz", context=context,
                                    timeout=5) as response:
            return bool(response.status == 200)

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_log_path.exists():
            return []
        return [json.loads(line) for line in self.audit_log_path.read_text().splitlines()
                if line.strip()]

    def all_logs(self) -> str:
        """Everything the concierge wrote: audit log and its stdout/stderr."""
        parts = []
        for path in (self.audit_log_path, self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None


class TcpProxy:
    """A loopback TCP forwarder (TLS passes through untouched) that a test can cut."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("https://").rpartition(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:  # accepted just before close(): it must not outlive it
                    client.close()
                    upstream.close()
                    return
                self._connections += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Cut the open connections (as a network blip would); new ones are still accepted."""
        with self._lock:
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._connections.clear()

    def close(self) -> None:
        """Refuse new connections and cut the open ones, including one being accepted."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):  # wakes the blocked accept(); close alone would not
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()


def install_rbac(cluster: LocalCluster, namespace: str) -> str:
    """Apply deploy/rbac.yaml into `namespace`; return a token for the concierge's account.

    Every name that would clash between concierges sharing the cluster is made
    the namespace's own: the namespace, the cluster-wide roles and bindings
    (`pinniped-concierge` -> NAMESPACE, `pinniped-concierge-discovery` ->
    NAMESPACE-discovery) and the CredentialIssuer the role may write (its
    default name is the namespace).
    """
    def renamed(name: str) -> str:
        return namespace + name.removeprefix(CONCIERGE_SA)

    documents = [d for d in yaml.safe_load_all(DEPLOY_RBAC.read_text()) if d]
    for doc in documents:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            meta["name"] = namespace
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = renamed(meta["name"])
        else:
            meta["namespace"] = namespace
        if "roleRef" in doc and doc["roleRef"]["kind"] == "ClusterRole":
            doc["roleRef"]["name"] = renamed(doc["roleRef"]["name"])
        for subject in doc.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                subject["namespace"] = namespace
        for rule in doc.get("rules", []):
            if "resourceNames" in rule and rule["resources"][0].startswith("credentialissuers"):
                rule["resourceNames"] = [namespace]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    token = cluster.kubectl("create", "token", CONCIERGE_SA, "-n", namespace,
                            "--duration=24h").stdout.strip()
    if not token:
        raise RuntimeError(f"kubectl create token {CONCIERGE_SA} returned nothing")
    leak_sentinel.register(leak_sentinel.CLUSTER_TOKEN, token)
    return token


def jwt_authenticator(name: str, issuer: str, audience: str, ca_file: Path | None,
                      labels: Mapping[str, str], **spec: Any) -> dict[str, Any]:
    """A JWTAuthenticator manifest with the local defaults (email + groups, prefix corp:);
    `spec` keys (camelCase) replace or add to the spec."""
    body: dict[str, Any] = {
        "issuer": issuer, "audience": audience,
        "claims": {"username": "email", "groups": "groups"},
        "usernamePrefix": DEFAULT_PREFIX, "groupsPrefix": DEFAULT_PREFIX}
    if ca_file is not None:
        body["tls"] = {"certificateAuthorityData": base64.b64encode(ca_file.read_bytes()).decode()}
    return {"apiVersion": f"{constants.AUTHENTICATOR_GROUP}/{constants.VERSION}",
            "kind": constants.JWT_AUTHENTICATOR_KIND,
            "metadata": {"name": name, "labels": dict(labels)}, "spec": body | spec}
