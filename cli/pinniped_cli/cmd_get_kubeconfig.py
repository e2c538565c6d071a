"""`pinniped get kubeconfig`: log in once, then write a kubeconfig that runs `pinniped login oidc`.

The login here uses the same caches and the same cache key as kubectl's later
plugin calls (login options plus the cluster's server and CA), so the first
kubectl command after this one is served from the cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pinniped_cli.cluster_credential import get_credential
from pinniped_cli.errors import CLIError, UsageError
from pinniped_cli.execcredential import ClusterInfo, ca_fingerprint
from pinniped_cli.login_options import (
    add_ca_bundle_flags,
    add_login_flags,
    ca_bundle_from_args,
    options_from_args,
    require_https,
)
from pinniped_cli.runtime import Runtime


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_login_flags(parser, for_kubeconfig=True)
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--server", required=True, metavar="URL",
                         help="the Kubernetes API server URL (https)")
    add_ca_bundle_flags(cluster, "--cluster-ca-bundle", "the API server")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write the kubeconfig here instead of stdout; lets the plugin "
                             "keep its as-groups current. A new FILE is 0600. An existing one "
                             "keeps its mode and its other entries: the cluster, context and "
                             "user named --name are replaced (or added) and become the current "
                             "context, as kubectl would do it (under its FILE.lock)")
    output.add_argument("--name", default="pinniped",
                        help="name of the cluster, context and user entries (default: "
                             "%(default)s)")


def run(args: argparse.Namespace, rt: Runtime) -> int:
    from pinniped_cli.kubeconfig import (
        KubeconfigSpec,
        KubeconfigUpdateFailed,
        render,
        running_plugin_command,
        write_kubeconfig,
    )

    require_https(args.server, "--server")  # kubectl runs exec plugins only for https servers
    if not args.name.strip():
        raise UsageError("--name must not be empty.")
    cluster_ca = ca_bundle_from_args(args, "--cluster-ca-bundle")
    if not cluster_ca:
        raise UsageError("pass the API server's CA with --cluster-ca-bundle FILE (or "
                         "--cluster-ca-bundle-data BASE64).")
    ca_data = cluster_ca.as_data("--cluster-ca-bundle") or ""
    output = Path(args.output).expanduser().absolute() if args.output else None
    options = options_from_args(args, rt.env)
    if output is not None:
        options = options.replace(update_kubeconfig=output, kubeconfig_user=args.name)
    cluster = ClusterInfo(server=args.server, ca_sha256=ca_fingerprint(ca_data), ca_data=ca_data)
    # Not through keep_kubeconfig_current: the file is about to be written anyway.
    login_options = options.replace(update_kubeconfig=None, kubeconfig_user=None)
    credential = get_credential(login_options, cluster, rt.stdin_is_tty, rt)
    login_args = options.exec_args()
    if output is not None:
        login_args += ["--update-kubeconfig", str(output), "--kubeconfig-user", args.name]
    text = render(KubeconfigSpec(
        name=args.name, server=args.server, ca_data=ca_data,
        plugin=running_plugin_command(rt.argv[0] if rt.argv else None),
        login_args=tuple(login_args), identity=credential.identity()))
    identity = f"{credential.username} in groups {list(credential.groups)}"
    if output is None:
        rt.stdout.write(text)
        rt.stdout.flush()
        rt.say(f"kubeconfig for {identity} written to stdout. Save it with -o FILE instead so "
               "pinniped can keep its groups current.")
        return 0
    try:
        merged = write_kubeconfig(output, text, args.name)
    except KubeconfigUpdateFailed as exc:
        raise CLIError(f"cannot write {output} ({exc}); choose another -o FILE.") from exc
    kept = f" (its other entries are kept; current context: {args.name})" if merged else ""
    rt.say(f"wrote {output} for {identity}{kept}. Try: kubectl --kubeconfig {output} auth "
           "can-i --list")
    return 0
