"""`pinniped get kubeconfig`: log in once, then write a kubeconfig that runs `pinniped login oidc`.

What no flag gives is discovered, as Pinniped does: the server and cluster CA
from a kubeconfig that can already reach the cluster, the concierge and the
authenticator (its issuer, and its audience as the client id) from the
concierge's CredentialIssuer (`pinniped_cli.discovery`). Every flag wins over
what was discovered, and with every value given no kubectl runs at all.

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

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pinniped_cli.discovery import PublishedConcierge


#: The flags discovery can stand in for, in the order errors list them.
CLUSTER_FLAGS = ("--server", "--cluster-ca-bundle")
FRONTEND_FLAGS = ("--concierge-endpoint", "--concierge-ca-bundle")
AUTHENTICATOR_FLAGS = ("--issuer", "--client-id", "--concierge-authenticator")
CONCIERGE_FLAGS = (*FRONTEND_FLAGS, *AUTHENTICATOR_FLAGS)


def add_flags(parser: argparse.ArgumentParser) -> None:
    discovery = parser.add_argument_group(
        "discovery", "Values no flag gives are read from the cluster through kubectl, with the "
        "kubeconfig's own credentials: the server and CA of its context, and the concierge "
        "and authenticator its CredentialIssuer publishes. Flags win over what is discovered.")
    discovery.add_argument("--kubeconfig", default=None, metavar="FILE",
                           help="a kubeconfig that can already read the cluster, to discover "
                                "from; only read, never written (-o names the output). Default: "
                                "kubectl's ($KUBECONFIG or ~/.kube/config). For `whoami` and "
                                "`logout`, --kubeconfig is the one this command wrote")
    discovery.add_argument("--kubeconfig-context", default=None, metavar="NAME",
                           help="context of that kubeconfig (default: its current context)")
    discovery.add_argument("--credential-issuer", default=None, metavar="NAME",
                           help="the CredentialIssuer to read (default: the only one there is)")
    add_login_flags(parser, for_kubeconfig=True)
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--server", default=None, metavar="URL",
                         help="the Kubernetes API server URL (https) (default: the kubeconfig "
                              "context's)")
    add_ca_bundle_flags(cluster, "--cluster-ca-bundle", "the API server",
                        default=" (default: the kubeconfig context's)")
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

    if not args.name.strip():
        raise UsageError("--name must not be empty.")
    discover(args, rt)
    require_https(args.server, "--server")  # kubectl runs exec plugins only for https servers
    ca_data = ca_bundle_from_args(args, "--cluster-ca-bundle").as_data("--cluster-ca-bundle") or ""
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


def discover(args: argparse.Namespace, rt: Runtime) -> None:
    """Fill in, from the cluster, each discoverable value that no flag gave.

    The CredentialIssuer is read when a concierge value is missing, or when a
    discovery flag asks for it (then its CA is used unless one is given).
    With every value given and no discovery flag, nothing is read, so the
    all-flags form needs neither kubectl nor a kubeconfig.
    """
    from pinniped_cli import discovery
    from pinniped_cli.kubectl import new_kubectl

    missing = _missing(args)
    concierge_ca_given = bool(ca_bundle_from_args(args, "--concierge-ca-bundle"))
    asked = bool(args.kubeconfig or args.kubeconfig_context or args.credential_issuer)
    read_issuer = bool(set(missing) & set(CONCIERGE_FLAGS)) or (asked and not concierge_ca_given)
    if not missing and not read_issuer:
        return
    if read_issuer and not concierge_ca_given:
        missing.append("--concierge-ca-bundle")

    def hint(*groups: tuple[str, ...]) -> str:
        """"Or pass ..." with the flags of `groups` that were not given."""
        return discovery.or_pass([f for group in groups for f in group if f in missing])

    kubeconfig = None
    if args.kubeconfig:
        kubeconfig = Path(args.kubeconfig).expanduser()
        if not kubeconfig.is_file():
            raise UsageError(f"--kubeconfig {kubeconfig} is not a file; pass the kubeconfig "
                             "you use to reach the cluster.")
    kubectl = new_kubectl(rt.env, str(kubeconfig) if kubeconfig else None,
                          args.kubeconfig_context)
    cluster = discovery.read_cluster(kubectl, hint(CLUSTER_FLAGS, CONCIERGE_FLAGS))
    found = []
    if args.server is None:
        args.server = cluster.https_server()
        found.append(f"server {cluster.printable_server}")
    if "--cluster-ca-bundle" in missing:
        args.cluster_ca_bundle_data = [cluster.certificate_authority()]
        found.append("its CA")
    said = [f"from kubeconfig context {cluster.context!r}: {', '.join(found)}"] if found else []
    if read_issuer:
        cluster.refuse_insecure(hint(CONCIERGE_FLAGS))
        published = discovery.read_concierge(kubectl, args.credential_issuer, cluster,
                                             hint(CONCIERGE_FLAGS))
        said.append(_from_credential_issuer(args, published, concierge_ca_given,
                                            hint(FRONTEND_FLAGS), hint(AUTHENTICATOR_FLAGS)))
    rt.say(f"discovered {'; '.join(said)}.")


def _from_credential_issuer(args: argparse.Namespace, published: PublishedConcierge,
                            concierge_ca_given: bool, frontend_hint: str,
                            authenticator_hint: str) -> str:
    """Fill in the concierge and authenticator values from `published`; say which."""
    from pinniped_cli.discovery import concierge_ca_data
    from pinniped_cli.redact import printable

    found = []
    if args.concierge_endpoint is None or not concierge_ca_given:
        frontend = published.frontend(frontend_hint)
        if args.concierge_endpoint is None:
            args.concierge_endpoint = frontend.server
            found.append(f"concierge {printable(frontend.server)}")
        if not concierge_ca_given:
            args.concierge_ca_bundle_data = [concierge_ca_data(frontend, published.name,
                                                               frontend_hint)]
            found.append("its CA")
    if None in (args.issuer, args.client_id, args.concierge_authenticator):
        authenticator = published.authenticator(args.concierge_authenticator,
                                                authenticator_hint, issuer=args.issuer)
        args.concierge_authenticator = authenticator.name
        detail = []
        if args.issuer is None:
            args.issuer = authenticator.issuer
            detail.append(f"issuer {printable(authenticator.issuer)}")
        if args.client_id is None:
            args.client_id = authenticator.audience
            detail.append(f"client id {printable(authenticator.audience)}")
        if (authenticator.tls is not None and authenticator.issuer == args.issuer
                and not ca_bundle_from_args(args, "--ca-bundle")):  # its CA, for its issuer only
            args.ca_bundle_data = [authenticator.tls.certificate_authority_data]
            detail.append("the issuer's CA")
        found.append(f"authenticator {authenticator.name}"
                     + (f" ({', '.join(detail)})" if detail else ""))
    return f"from CredentialIssuer {published.name!r}: {', '.join(found) or 'nothing new'}"


def _missing(args: argparse.Namespace) -> list[str]:
    """The discoverable flags (CA bundles aside from the cluster's) that were not given."""
    missing = [flag for flag, value in (
        ("--server", args.server), ("--concierge-endpoint", args.concierge_endpoint),
        ("--issuer", args.issuer), ("--client-id", args.client_id),
        ("--concierge-authenticator", args.concierge_authenticator)) if value is None]
    if not ca_bundle_from_args(args, "--cluster-ca-bundle"):
        missing.append("--cluster-ca-bundle")
    return missing
