"""`pinniped-concierge --config FILE`: read the config, assemble the services, serve HTTPS.

Everything that can be checked before listening is checked here (the server's
dependencies, config keys, certificate files, kubeconfig), so a broken
deployment fails at start with one line naming what to fix rather than at the
first login. The server's libraries are imported only after the arguments are
parsed, so `--help`, `--version` and `--config-reference` work in an install
without the `[concierge]` extra.

`pinniped-concierge revoke-user --config FILE USERNAME` is the administrator's
command to end one person's access (`revoke_user`); it needs only the
Kubernetes client of the extra.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import ssl
import sys
from pathlib import Path

from pinniped_apis.version import version
from pinniped_concierge import config as config_module
from pinniped_concierge.config import Config, ConfigError

#: What `pip install 'pinniped-py[concierge]'` adds (pyproject.toml's `concierge` extra).
SERVER_DEPENDENCIES = ("fastapi", "uvicorn", "kubernetes", "prometheus_client")
INSTALL_HINT = "pip install 'pinniped-py[concierge]'"
REFERENCE_DOC = "deploy/concierge-config.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinniped-concierge",
        description="Trade OIDC ID tokens for short-lived, impersonation-only cluster "
                    "credentials.",
        epilog="The config file's keys: `pinniped-concierge --config-reference` prints them "
               f"(the same text as {REFERENCE_DOC} in the source repository).")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    parser.add_argument("--config-reference", action="store_true",
                        help="print the reference of the config file's keys (Markdown) and exit")
    parser.add_argument("--version", action="version",
                        version=f"pinniped-concierge {version()}")
    commands = parser.add_subparsers(dest="command", metavar="[COMMAND]",
                                     title="commands (without one: serve)")
    revoke = commands.add_parser(
        "revoke-user", help="end all of one user's sessions and delete their objects",
        description="End all of USERNAME's sessions (their credentials stop working within "
                    "about 10 s), delete their ServiceAccount, ClusterRole and "
                    "ClusterRoleBinding, and refuse ID tokens authenticated before now for "
                    "revocationRetentionSeconds, so that neither a replayed nor a refreshed "
                    "token brings them back; only a new sign-in at the IdP does. Safe to repeat.",
        epilog="It acts with the config's Kubernetes credentials (the concierge's own): run it "
               "in the concierge's pod, e.g. `kubectl -n pinniped-concierge exec "
               "deploy/pinniped-concierge -- pinniped-concierge revoke-user --config "
               "/etc/pinniped/config/config.yaml corp:alice@example.com`.")
    revoke.add_argument("--config", type=Path, metavar="FILE", required=True,
                        help="the concierge's YAML config file")
    revoke.add_argument("username", metavar="USERNAME",
                        help="the name as the audit log and whoami show it, usernamePrefix "
                             "included (e.g. corp:alice@example.com)")
    return parser


def _missing_server_dependency() -> str | None:
    """Why the server's libraries cannot be imported, or None when they all can."""
    for name in SERVER_DEPENDENCIES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return str(exc)
    return None


def _check_tls(config: Config) -> None:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            config.tls.cert_file, config.tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("tls", f"cannot load certFile/keyFile as a TLS key pair: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.config_reference:
        from pinniped_concierge.config_reference import render

        sys.stdout.write(render())
        return 0
    if args.config is None:
        parser.error("--config FILE is required (`--config-reference` lists its keys)")
    if args.command == "revoke-user":
        return _revoke_user(args.config, args.username)

    missing = _missing_server_dependency()
    if missing is not None:
        print(f"pinniped-concierge: the server's dependencies are not installed ({missing}); "
              f"install them with: {INSTALL_HINT}", file=sys.stderr)
        return 1
    from pinniped_concierge import http_server, server

    try:
        config = config_module.load(args.config)
        _check_tls(config)
    except ConfigError as exc:
        print(f"pinniped-concierge: {args.config}: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per key fetch is noise
    try:
        services = server.build_services(config)
    except Exception as exc:  # e.g. unreadable kubeconfig, not running in a pod
        where = "kubernetes.kubeconfig" if config.kubernetes.kubeconfig else "in-cluster config"
        print(f"pinniped-concierge: cannot set up the Kubernetes client ({where}): "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    http_server.serve(config, services)
    return 0


def _revoke_user(config_path: Path, username: str) -> int:
    try:
        importlib.import_module("kubernetes")
    except ImportError as exc:
        print(f"pinniped-concierge: revoke-user needs the Kubernetes client ({exc}); install "
              f"it with: {INSTALL_HINT}", file=sys.stderr)
        return 1
    from pinniped_concierge import revoke_user

    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        print(f"pinniped-concierge: {config_path}: {exc}", file=sys.stderr)
        return 2
    return revoke_user.run(config, username, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
