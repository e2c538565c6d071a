"""`pinniped logout`: revoke the concierge session and forget the local one.

The concierge deletes what the credential is bound to, so the token stops
working once the apiserver's authentication cache (~10 s) forgets it. Locally
the cached credential and the OIDC session go, and the refresh token is
revoked at the IdP when it supports that, so the next kubectl call needs a
real login.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt

from pinniped_cli.errors import CLIError, ConciergeError
from pinniped_cli.kubeconfig import add_kubeconfig_flags
from pinniped_cli.runtime import Runtime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pinniped_cli.credential_cache import Credential
    from pinniped_cli.login_options import LoginOptions


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_flags(parser)


def run(args: argparse.Namespace, rt: Runtime) -> int:
    from pinniped_cli import lock
    from pinniped_cli.cluster_credential import (
        LOCK_GRACE_SECONDS,
        credential_cache,
        credential_key,
        lock_path,
        oidc_session,
        sealed_default_cache,
        session_locked,
    )
    from pinniped_cli.kubeconfig import resolve_login

    target = resolve_login(args.kubeconfig, args.kubeconfig_context, rt.env)
    options = target.options
    key = credential_key(options, target.cluster)
    caches = [c for c in (credential_cache(options, rt), sealed_default_cache(options, rt))
              if c is not None]
    failure: CLIError | None = None
    with lock.held(lock_path(options), timeout=LOCK_GRACE_SECONDS,
                   on_wait=lambda: rt.say("waiting for a pinniped login to finish...")):
        found = (cache.get(key, rt.now(), min_remaining=dt.timedelta(0)) for cache in caches)
        credentials = {c.token: c for c in found if c is not None}
        if not credentials:
            rt.say("no unexpired cluster credential is cached for this kubeconfig; nothing to "
                   "revoke at the concierge.")
        for credential in credentials.values():
            failure = _revoke(credential, options, rt) or failure
        for cache in caches:
            cache.remove({key})
        with session_locked(options, rt, LOCK_GRACE_SECONDS), contextlib.ExitStack() as stack:
            revoked = oidc_session(options, False, rt, stack).forget()
        if revoked is False:
            rt.say("could not revoke the refresh token at the identity provider; it was "
                   "deleted locally and expires on its own.")
    rt.say("cleared the local credential cache and login session; the next kubectl command "
           "will ask you to log in.")
    if failure is not None:
        raise ConciergeError(f"the local caches are cleared, but revoking the session at the "
                             f"concierge failed: {failure}")
    return 0


def _revoke(credential: Credential, options: LoginOptions, rt: Runtime) -> CLIError | None:
    """End `credential`'s session at the concierge; the failure, if it did not."""
    from pinniped_cli.concierge_client import ConciergeClient
    from pinniped_cli.redact import fingerprint

    try:
        with rt.new_http(options.concierge_ca_bundle.pem("--concierge-ca-bundle")) as http:
            ended = ConciergeClient(http, options.concierge_endpoint,
                                    options.concierge_authenticator).logout(credential.token)
    except ConciergeError as exc:
        return exc
    if ended:
        rt.say(f"revoked the cluster credential {fingerprint(credential.token)} "
               f"for {credential.username}; it stops working within about 10 s.")
    else:
        rt.say(f"the cluster credential {fingerprint(credential.token)} was already revoked.")
    return None
