"""What `get kubeconfig` learns from the cluster: its address, and how to reach its concierge.

Two reads through the real kubectl, with the kubeconfig's own credentials:
- `kubectl config view --minify`: the server and CA of the chosen context
  (nothing of its user is printed, so no credential passes through here);
- `kubectl get credentialissuers`: the concierge's published endpoint, CA and
  usable authenticators (`pinniped_apis.credential_issuer`).
Everything read is outside input and is validated with the API models. When
the choice is ambiguous or something is missing, the error lists the choices
and the flag that settles it, since the person can always pass the value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pinniped_cli.errors import EXIT_USAGE, CLIError
from pinniped_cli.kubectl import Kubectl, KubectlResult
from pinniped_cli.redact import printable

if TYPE_CHECKING:
    from pydantic import ValidationError

    from pinniped_apis.credential_issuer import (
        CredentialIssuerStatus,
        PublishedAuthenticator,
        TokenCredentialRequestInfo,
    )

CREDENTIAL_ISSUERS = "credentialissuers.config.concierge.pinniped.dev"
#: Compact JSON of the context and its cluster, one per line (JSON never holds a raw newline).
_CONTEXT_JSONPATH = 'jsonpath={.contexts}{"\\n"}{.clusters}'
#: Ways of reaching a cluster that the generated kubeconfig does not copy (yet).
UNSUPPORTED_CLUSTER_FIELDS = frozenset(("proxy-url", "tls-server-name"))
#: How many choices an error lists before it says "and N more".
MAX_LISTED = 20


class DiscoveryError(CLIError):
    """Discovery could not read a value; the message says which flags would do without it."""


class ChoiceNeeded(DiscoveryError):
    """The cluster offers several choices, or not the one asked for: a flag must decide."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ClusterAccess:
    """The chosen kubeconfig context's cluster."""

    context: str
    server: str
    #: Base64 PEM, or None when the context names no CA (kubectl then trusts the system CAs).
    ca_data: str | None
    insecure: bool

    @property
    def printable_server(self) -> str:
        return printable(self.server, 200)

    def https_server(self) -> str:
        if not self.server.startswith("https://"):
            raise ChoiceNeeded(f"context {self.context!r} reaches its cluster at "
                               f"{self.printable_server!r}, not https://, and kubectl "
                               "runs exec plugins only for https servers. Pass --server URL.")
        return self.server

    def certificate_authority(self) -> str:
        """The cluster's CA, which the generated kubeconfig must carry (it trusts nothing else)."""
        self.refuse_insecure("Pass the API server's CA with --cluster-ca-bundle FILE.")
        if self.ca_data is None:
            raise ChoiceNeeded(f"context {self.context!r} names no certificate-authority for its "
                               "cluster. Pass the API server's CA with --cluster-ca-bundle FILE.")
        return self.ca_data

    def refuse_insecure(self, or_pass: str) -> None:
        """Nothing read through a context that skips TLS verification is to be trusted."""
        if self.insecure:
            raise ChoiceNeeded(f"context {self.context!r} skips TLS verification "
                               "(insecure-skip-tls-verify), so what pinniped would read through "
                               "it could come from anyone. Give its cluster a "
                               f"certificate-authority. {or_pass}")


@dataclass(frozen=True)
class PublishedConcierge:
    """One CredentialIssuer: what its concierge says about itself."""

    name: str
    status: CredentialIssuerStatus

    def frontend(self, or_pass: str) -> TokenCredentialRequestInfo:
        """The endpoint and CA of the first strategy that works, or why none does."""
        for strategy in self.status.strategies:
            if strategy.status == "Success" and strategy.frontend is not None:
                return strategy.frontend.token_credential_request_info
        if not self.status.strategies:
            raise DiscoveryError(
                f"CredentialIssuer {self.name!r} has no strategies yet: its concierge has not "
                f"written its status (is it running?). {or_pass}")
        problems = "; ".join(
            f"{s.type} {s.status} ({printable(s.reason, 60)}): "
            f"{printable(s.message or 'no frontend', 300)}" for s in self.status.strategies)
        raise DiscoveryError(f"CredentialIssuer {self.name!r} offers no usable way to reach its "
                             f"concierge: {problems}. {or_pass}")

    def authenticator(self, name: str | None, or_pass: str,
                      issuer: str | None = None) -> PublishedAuthenticator:
        """The one named `name`, or the only one there is (for `issuer`, when it is given)."""
        found = self.status.authenticators
        matching = tuple(a for a in found if a.issuer == issuer)
        if name is None and matching:  # --issuer given: its own authenticator(s) first
            found = matching
        listed = _listing([f"{a.name} (issuer {printable(a.issuer)}, client id "
                           f"{printable(a.audience)})" for a in found])
        if name is not None:
            for authenticator in found:
                if authenticator.name == name:
                    return authenticator
            choices = f"it lists: {listed}" if found else "it lists none"
            raise ChoiceNeeded(
                f"CredentialIssuer {self.name!r} lists no authenticator {name!r} that logins "
                f"can use ({choices}). Pass one of those names with --concierge-authenticator, "
                "or ask the cluster admin why yours is not ready "
                "(`kubectl get jwtauthenticators`).")
        if len(found) == 1:
            return found[0]
        if not found:
            raise DiscoveryError(
                f"CredentialIssuer {self.name!r} lists no authenticator that logins can use: "
                "ask the cluster admin to apply a JWTAuthenticator (`kubectl get "
                f"jwtauthenticators` shows why one is not ready). {or_pass}")
        raise ChoiceNeeded(
            f"CredentialIssuer {self.name!r} lists {len(found)} authenticators: {listed}. "
            "Choose one with --concierge-authenticator NAME.")


def read_cluster(kubectl: Kubectl, or_pass: str) -> ClusterAccess:
    """The server and CA of the kubeconfig's current (or `--kubeconfig-context`) context."""
    result = kubectl(["config", "view", "--minify", "--flatten", "--raw", "-o",
                      _CONTEXT_JSONPATH])
    if result.returncode != 0:
        names = kubectl(["config", "get-contexts", "-o", "name"])
        listed = _listing([printable(n, 253) for n in names.stdout.split()]) \
            if names.returncode == 0 and names.stdout.strip() else ""
        if listed:  # e.g. no current-context: the person has to choose
            raise ChoiceNeeded(f"cannot read the kubeconfig's context (kubectl: "
                               f"{result.message()}); its contexts are {listed}. Choose one "
                               "with --kubeconfig-context NAME.")
        raise DiscoveryError(f"cannot read the kubeconfig's context (kubectl: "
                             f"{result.message()}). Pass --kubeconfig FILE and "
                             f"--kubeconfig-context NAME for one that exists. {or_pass}")
    first, _, second = result.stdout.strip().partition("\n")
    try:
        contexts, clusters = json.loads(first), json.loads(second)
        context = contexts[0]["name"]
        cluster = clusters[0]["cluster"]
        server = cluster["server"]
        ca_data = cluster.get("certificate-authority-data")
        insecure = cluster.get("insecure-skip-tls-verify", False)
        unsupported = sorted(set(cluster) & UNSUPPORTED_CLUSTER_FIELDS)
        if not (isinstance(context, str) and isinstance(server, str)
                and isinstance(ca_data, str | None) and isinstance(insecure, bool)):
            raise TypeError("unexpected types")
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise DiscoveryError(f"kubectl printed a kubeconfig context pinniped cannot read "
                             f"({type(exc).__name__}). {or_pass}") from exc
    context = printable(context, 253)
    if unsupported:  # a kubeconfig without them would not reach the cluster
        raise DiscoveryError(f"context {context!r} reaches its cluster with "
                             f"{', '.join(unsupported)}, which the kubeconfig pinniped writes "
                             "cannot carry yet; pass --server and --cluster-ca-bundle for a "
                             "direct address, or add those fields to the written kubeconfig "
                             "by hand.")
    if ca_data is not None:
        ca_data = _ca_data(ca_data, f"context {context!r}'s certificate-authority", or_pass)
    return ClusterAccess(context=context, server=server, ca_data=ca_data, insecure=insecure)


def read_concierge(kubectl: Kubectl, name: str | None, cluster: ClusterAccess,
                   or_pass: str) -> PublishedConcierge:
    """The CredentialIssuer named `name`, or the only one in the cluster."""
    result = kubectl(["get", CREDENTIAL_ISSUERS, "-o", "json"])
    if result.returncode != 0:
        raise DiscoveryError(_list_failure(result, cluster, or_pass))
    items = _items(result.stdout, or_pass)
    by_name = {_name(item, or_pass): item for item in items}
    described = _listing([f"{n} ({_endpoint_hint(item)})" for n, item in by_name.items()])
    if name is not None:
        if name not in by_name:
            choices = f"it has: {described}" if by_name else "it has none"
            raise ChoiceNeeded(
                f"the cluster has no CredentialIssuer {name!r} ({choices}). Pass one of those "
                "names with --credential-issuer.")
        chosen = name
    elif len(by_name) == 1:
        chosen = next(iter(by_name))
    elif not by_name:
        raise DiscoveryError(
            "the cluster has no CredentialIssuer: no concierge has published one there. Is "
            f"the concierge installed and running (deploy/)? {or_pass}")
    else:
        raise ChoiceNeeded(
            f"the cluster has {len(by_name)} CredentialIssuers: {described}. Choose one with "
            "--credential-issuer NAME.")
    return PublishedConcierge(chosen, _status(chosen, by_name[chosen], or_pass))


def or_pass(flags: Sequence[str]) -> str:
    """The sentence every discovery error ends with: the flags that would do without it."""
    return f"Or pass {_joined(flags)}." if flags else ""


def _list_failure(result: KubectlResult, cluster: ClusterAccess, or_pass: str) -> str:
    said = result.message()
    if "doesn't have a resource type" in result.stderr:
        return (f"the cluster at {cluster.printable_server} has no CredentialIssuer API "
                f"({said}): the concierge is not installed there (deploy/ installs it). "
                f"{or_pass}")
    if "(Forbidden)" in result.stderr:
        return (f"the credentials of context {cluster.context!r} may not list "
                f"CredentialIssuers ({said}). The cluster admin must grant get and list on "
                f"{CREDENTIAL_ISSUERS} (deploy/ grants both to system:authenticated). "
                f"{or_pass}")
    if "(Unauthorized)" in result.stderr or "provide credentials" in result.stderr:
        return (f"the cluster at {cluster.printable_server} refused the credentials of context "
                f"{cluster.context!r} ({said}). Renew them (try `kubectl get "
                f"{CREDENTIAL_ISSUERS}` with the same kubeconfig). {or_pass}")
    return (f"cannot list CredentialIssuers at {cluster.printable_server} with context "
            f"{cluster.context!r} ({said}). Check that the cluster is reachable. {or_pass}")


def _items(stdout: str, or_pass: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(stdout)["items"]
    except (ValueError, LookupError, TypeError) as exc:
        raise DiscoveryError(f"kubectl printed a CredentialIssuer list pinniped cannot read "
                             f"({type(exc).__name__}). {or_pass}") from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DiscoveryError(f"kubectl printed a CredentialIssuer list whose items are not "
                             f"objects. {or_pass}")
    return items


def _name(item: dict[str, Any], or_pass: str) -> str:
    metadata = item.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name or len(name) > 253 or not name.isprintable():
        raise DiscoveryError(f"the cluster returned a CredentialIssuer without a valid name. "
                             f"{or_pass}")
    return name


def _endpoint_hint(item: dict[str, Any]) -> str:
    """Where a listed CredentialIssuer says its concierge is, for telling them apart."""
    try:
        server = item["status"]["strategies"][0]["frontend"]["tokenCredentialRequestInfo"][
            "server"]
    except (LookupError, TypeError):
        return "no endpoint published"
    return printable(server, 120) if isinstance(server, str) else "no endpoint published"


def _status(name: str, item: dict[str, Any], or_pass: str) -> CredentialIssuerStatus:
    from pydantic import ValidationError

    from pinniped_apis.credential_issuer import CredentialIssuerStatus

    try:
        return CredentialIssuerStatus.model_validate(item.get("status") or {}, by_alias=True,
                                                     by_name=False)
    except ValidationError as exc:
        raise DiscoveryError(f"CredentialIssuer {name!r} has a status pinniped cannot use: "
                             f"{_problems(exc)}. Ask the cluster admin to check its concierge. "
                             f"{or_pass}") from exc


def _ca_data(value: str, what: str, or_pass: str) -> str:
    """`value` if it is base64 of PEM certificates that TLS can load, else an error."""
    from pydantic import ValidationError

    from pinniped_apis.authentication import TLSSpec

    try:
        TLSSpec.model_validate({"certificateAuthorityData": value}, by_alias=True,
                               by_name=False)
    except ValidationError as exc:
        raise DiscoveryError(f"{what} is unusable: {_problems(exc)}. {or_pass}") from exc
    return value


def concierge_ca_data(endpoint: TokenCredentialRequestInfo, credential_issuer: str,
                      or_pass: str) -> str:
    """The published concierge CA, checked as strictly as a CA given by flag."""
    return _ca_data(endpoint.certificate_authority_data,
                    f"CredentialIssuer {credential_issuer!r}'s certificateAuthorityData", or_pass)


def _problems(exc: ValidationError) -> str:
    """Where and what, never the offending value (it could be anything, and long)."""
    parts = [f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
             for error in exc.errors()[:3]]
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return printable("; ".join(parts), 400) + more


def _listing(entries: Sequence[str]) -> str:
    shown = ", ".join(entries[:MAX_LISTED])
    return shown + (f", and {len(entries) - MAX_LISTED} more" if len(entries) > MAX_LISTED
                    else "")


def _joined(flags: Sequence[str]) -> str:
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
