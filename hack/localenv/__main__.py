"""`python -m localenv demo|up`: the whole login story on loopback.

`demo` brings up etcd + kube-apiserver, the test IdP and a concierge with no
authenticator of its own; as the admin it adds the IdP with `kubectl apply`
of a JWTAuthenticator; as a test user it gets a kubeconfig with one
`pinniped get kubeconfig --kubeconfig FILE` (everything else is discovered)
and has stock kubectl log in through the plugin; then it shows what the
cluster saw and stops everything. `up` does the same set-up and keeps it running for manual
use until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localenv import pki
from localenv.cluster import LocalCluster, write_kubeconfig
from localenv.concierge import LocalConcierge, jwt_authenticator
from localenv.idp import LocalIdP

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNIPED = REPO_ROOT / ".venv" / "bin" / "pinniped"
DEMO_NAMESPACE = "demo"


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


@dataclass
class Environment:
    workdir: Path
    cluster: LocalCluster
    idp: LocalIdP
    concierge: LocalConcierge

    def user_env(self, username: str) -> dict[str, str]:
        """A private HOME for the person at the keyboard, so the demo never touches yours."""
        home = self.workdir / "home" / username
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
            check: bool = True, show: bool = True) -> subprocess.CompletedProcess[str]:
        if show:
            print(f"$ {' '.join(shlex.quote(a) for a in argv)}", flush=True)
        result = subprocess.run(list(argv), capture_output=True, text=True, env=env,
                                timeout=180, check=False)
        if show:
            for text in (result.stdout, result.stderr):
                if text.strip():
                    print("  " + text.strip().replace("\n", "\n  "), flush=True)
        if check and result.returncode != 0:
            raise SystemExit(f"demo failed: {argv[0]} exited {result.returncode}")
        return result


@contextmanager
def environment(workdir: Path) -> Iterator[Environment]:
    ca = pki.CA.create(workdir / "pki", "local")
    step("Starting etcd and kube-apiserver on 127.0.0.1")
    cluster = LocalCluster.start(workdir / "cluster", ca)
    try:
        print(f"  apiserver {cluster.server} (audit log {cluster.audit_log})")
        step("Starting the OIDC provider (oidc-provider, HTTPS)")
        idp = LocalIdP.start(workdir / "idp", ca)
        try:
            print(f"  issuer {idp.issuer}, client {idp.client_id}, users "
                  + ", ".join(f"{u.username} {u.groups}" for u in idp.users.values()))
            step("Starting the concierge (uvicorn over TLS, least-privilege RBAC from deploy/, "
                 "no authenticator in its config file)")
            concierge = LocalConcierge.start(workdir / "concierge", ca, cluster, idp,
                                             authenticators=[])
            try:
                print(f"  concierge {concierge.url}, CredentialIssuer "
                      f"{concierge.credential_issuer}")
                yield Environment(workdir, cluster, idp, concierge)
            finally:
                concierge.stop()
        finally:
            idp.stop()
    finally:
        cluster.stop()


def grant_demo_access(env: Environment) -> None:
    """What a cluster admin would do once: let the IdP group corp:devs read config maps."""
    step("As the cluster admin: let group corp:devs read config maps in namespace demo")
    kubectl = ["kubectl", f"--kubeconfig={env.cluster.admin_kubeconfig}"]
    env.run([*kubectl, "create", "namespace", DEMO_NAMESPACE])
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "create", "configmap", "greeting",
             "--from-literal=message=hello from the cluster"])
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "create", "role", "configmap-reader",
             "--verb=get,list", "--resource=configmaps"])
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "create", "rolebinding", "devs-read-configmaps",
             "--role=configmap-reader", "--group=corp:devs"])


#: How long the demo waits for a JWTAuthenticator to turn Ready (it takes well under 1 s).
READY_TIMEOUT_SECONDS = 30.0


def add_identity_provider(env: Environment) -> None:
    """What a cluster admin does once per IdP: apply a JWTAuthenticator, and watch it turn Ready."""
    step("As the cluster admin: add the identity provider with `kubectl apply` "
         "(a JWTAuthenticator; no concierge restart)")
    manifest = env.workdir / "corp-authenticator.json"
    manifest.write_text(json.dumps(jwt_authenticator(
        "corp", env.idp.issuer, env.idp.client_id, env.idp.ca_file,
        env.concierge.instance_labels), indent=2))
    kubectl = ["kubectl", f"--kubeconfig={env.cluster.admin_kubeconfig}"]
    started = time.monotonic()
    env.run([*kubectl, "apply", "-f", str(manifest)])
    phase = ""
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        phase = env.run([*kubectl, "get", "jwtauthenticator", "corp",
                         "-o", "jsonpath={.status.phase}"], show=False).stdout
        if phase == "Ready":
            break
        time.sleep(0.1)
    if phase != "Ready":
        raise SystemExit(f"demo failed: the JWTAuthenticator is {phase or 'not checked'} after "
                         f"{READY_TIMEOUT_SECONDS:g} s")
    print(f"  Ready {time.monotonic() - started:.2f} s after kubectl apply started")
    env.run([*kubectl, "get", "jwtauthenticators"])


def discovery_kubeconfig(env: Environment) -> Path:
    """A kubeconfig that can read the cluster but do nothing else, as an admin hands out.

    Any credential works (deploy/ lets system:authenticated read CredentialIssuers);
    here it is a token of a ServiceAccount that has no rights of its own.
    """
    step("As the cluster admin: hand users a kubeconfig that can only read the cluster's "
         "CredentialIssuer (a ServiceAccount with no rights of its own)")
    kubectl = ["kubectl", f"--kubeconfig={env.cluster.admin_kubeconfig}"]
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "create", "serviceaccount", "pinniped-discovery"])
    token = env.run([*kubectl, "-n", DEMO_NAMESPACE, "create", "token", "pinniped-discovery",
                     "--duration=1h"], show=False).stdout.strip()
    path = env.workdir / "discovery.kubeconfig"
    write_kubeconfig(path, server=env.cluster.server, ca_file=env.cluster.ca_file,
                     user="pinniped-discovery", token=token)
    print(f"  {path}: server {env.cluster.server}, its CA, and that token")
    return path


def generate_kubeconfig(env: Environment, username: str, discovery: Path) -> Path:
    step(f"As {username}: one command discovers the concierge and the IdP, logs in once and "
         "writes a kubeconfig")
    out = env.workdir / f"{username}.kubeconfig"
    user_env = env.user_env(username)
    # CI-style login (password grant): the demo has no human to type into a browser.
    user_env["PINNIPED_USERNAME"] = username
    user_env["PINNIPED_PASSWORD"] = env.idp.user(username).password
    env.run([str(PINNIPED), "get", "kubeconfig", "--kubeconfig", str(discovery),
             "--flow", "password", "-o", str(out)], env=user_env)
    print("  the user entry kubectl will use:")
    for line in out.read_text().splitlines():
        if line.strip().startswith(("as:", "as-groups:", "- corp:", "command:", "- login")):
            print(f"    {line.strip()}")
    return out


def act_as_user(env: Environment, username: str, kubeconfig: Path) -> None:
    user_env = env.user_env(username)
    user_env["PINNIPED_USERNAME"] = username
    user_env["PINNIPED_PASSWORD"] = env.idp.user(username).password
    kubectl = ["kubectl", f"--kubeconfig={kubeconfig}"]
    step(f"As {username}: stock kubectl logs in through the plugin and reads a config map")
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "get", "configmap", "greeting",
             "-o", "jsonpath={.data.message}"], env=user_env)
    step(f"As {username}: what may I do in namespace demo? (cached credential, no new login)")
    env.run([*kubectl, "-n", DEMO_NAMESPACE, "auth", "can-i", "--list"], env=user_env)
    step(f"As {username}: secrets are not mine to read")
    denied = env.run([*kubectl, "-n", DEMO_NAMESPACE, "get", "secrets"], env=user_env,
                     check=False)
    if "Forbidden" not in denied.stderr:
        raise SystemExit("demo failed: reading secrets was not Forbidden")
    step(f"As {username}: trying to become someone else is refused by the apiserver")
    other = env.run([*kubectl, "-n", DEMO_NAMESPACE, "get", "configmaps", "--as=corp:admin"],
                    env=user_env, check=False)
    if "Forbidden" not in other.stderr:
        raise SystemExit("demo failed: impersonating another user was not Forbidden")
    step(f"As {username}: who does the cluster think I am?")
    env.run([str(PINNIPED), "whoami", "--kubeconfig", str(kubeconfig)], env=user_env)


def show_audit(env: Environment) -> None:
    step("The apiserver's audit log names the real person for every request")
    time.sleep(1)  # the audit backend writes asynchronously
    seen = set()
    for line in env.cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        person = event.get("impersonatedUser", {}).get("username")
        ref = event.get("objectRef", {})
        if person and ref.get("namespace") == DEMO_NAMESPACE:
            key = (event["verb"], ref.get("resource"), event["responseStatus"]["code"])
            if key not in seen:
                seen.add(key)
                print(f"  {event['verb']:>5} {ref.get('resource', ''):<11} "
                      f"{event['responseStatus']['code']}  person={person}  "
                      f"via={event['user']['username']}")
    if not seen:
        raise SystemExit("demo failed: no impersonated requests in the audit log")


def show_logins(env: Environment) -> None:
    """Prove the cache claim: kubectl ran the plugin several times, the concierge saw one login."""
    step("The concierge's audit log: one login served every kubectl call above")
    logins = [line for line in env.concierge.audit_lines() if line.get("request") == "login"]
    for line in logins:
        print(f"  {line['time']} {line['outcome']:<7} {line['username']} {line['groups']} "
              f"session={line['session']} token={line['tokenHash']}")
    if len(logins) != 1:
        raise SystemExit(f"demo failed: expected one concierge login, saw {len(logins)}")


def demo(workdir: Path, username: str) -> None:
    with environment(workdir) as env:
        grant_demo_access(env)
        add_identity_provider(env)
        kubeconfig = generate_kubeconfig(env, username, discovery_kubeconfig(env))
        act_as_user(env, username, kubeconfig)
        show_audit(env)
        show_logins(env)
        step("Done: everything started here is being stopped")


def up(workdir: Path) -> None:
    with environment(workdir) as env:
        grant_demo_access(env)
        add_identity_provider(env)
        print(f"\nadmin kubeconfig: {env.cluster.admin_kubeconfig}")
        print("test users: " + ", ".join(
            f"{u.username} (password in {env.idp.users_path})" for u in env.idp.users.values()))
        print("Ctrl-C stops everything.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localenv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["demo", "up"])
    parser.add_argument("--user", default="alice", help="test user for the demo")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pinniped-demo-"))
    try:
        if args.command == "demo":
            demo(workdir, args.user)
        else:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            up(workdir)
    finally:
        if args.keep or args.command == "up":
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
