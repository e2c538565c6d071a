"""`pinniped-concierge revoke-user --config FILE USERNAME`: end one person's access now.

In this order, so that nothing a login does meanwhile outlives it:
1. record the revocation (`revocations`): from the moment the concierges'
   watches see it (milliseconds), every login of USERNAME with an ID token
   authenticated before it is refused, replays and refreshes included;
2. delete the user's ServiceAccount, which ends every token minted for it at
   once, then the ClusterRoleBinding and ClusterRole: only ours (every mark
   in `user_ownership` agrees), with uid preconditions;
3. delete the user's session Secrets (no garbage collector may be running to
   do it) and the user's older revocation markers.
Tokens already handed out stop working within the apiserver's token
authentication cache (about 10 s).

USERNAME is the mapped name, as the audit log and whoami show it (with the
authenticator's usernamePrefix, e.g. `corp:alice@example.com`). A name with
nothing in the cluster is revoked all the same, and the command succeeds:
the person may still hold ID and refresh tokens (their objects may have been
removed as idle, or they never logged in through this concierge yet), and
the concierge cannot tell a typo from such a user. It says so, so that a
mistyped name is noticed. Running it again is safe, and is how to finish a
run that failed half way.

It uses the config file's `kubernetes` settings, i.e. the concierge's own
credentials: run it where the concierge runs (`kubectl exec` into its pod).
"""

from __future__ import annotations

import datetime as dt
import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from pinniped_apis import rfc3339, wire
from pinniped_concierge import naming
from pinniped_concierge.config import Config
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.identity import RESERVED_PREFIX
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj, pages
from pinniped_concierge.revocations import PAGE_SIZE, new_marker, read_marker, user_marker_selector
from pinniped_concierge.user_ownership import delete_user_objects, session_owner

#: What the apiserver's token authentication cache adds before a deleted token is refused.
TOKEN_CACHE_SECONDS = 10

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass
class Revocation:
    username: str
    marker: str = ""
    revoked_at: dt.datetime | None = None
    #: "ServiceAccount pinniped-user-…" for each object deleted.
    deleted: list[str] = field(default_factory=list)
    #: Objects with the user's name that are not ours in every respect: left alone.
    not_ours: list[str] = field(default_factory=list)
    sessions_ended: int = 0
    older_markers_removed: int = 0


def problem_with(username: str) -> str | None:
    """Why no login can have this name (the identity mapper's rules), or None."""
    if not username:
        return "is empty"
    if len(username) > wire.MAX_NAME_LENGTH:
        return f"is longer than {wire.MAX_NAME_LENGTH} characters"
    if not username.isprintable() or username != username.strip():
        return "has control characters or surrounding white space"
    if username.lower().startswith(RESERVED_PREFIX):
        return f"starts with {RESERVED_PREFIX!r}, which no login is ever mapped to"
    return None


async def revoke(kube: KubeAPI, namespace: str, username: str, *,
                 clock: Callable[[], float] = time.time, revoked_by: str = "",
                 done: Revocation | None = None) -> Revocation:
    """Revoke `username` (see the module's docstring); `done` is filled in as it goes, so
    a caller still knows what happened when an API call fails half way."""
    result = done or Revocation(username)
    marker = await kube.create(Kind.SECRET, new_marker(username, namespace, clock(), revoked_by),
                               namespace)
    result.marker = naming.metadata_field(marker, "name") or ""
    result.revoked_at = rfc3339.parse_time(naming.metadata_field(marker, "creationTimestamp"))

    try:
        await delete_user_objects(kube, namespace, username, result.deleted, result.not_ours)
    except Conflict:  # made again since the read: a login that the marker now refuses
        raise ServerError(Reason.KUBERNETES_ERROR, f"an object of {username!r} was made again "
                          "while it was being deleted (a login under way)") from None

    for secret in await _all(kube, namespace,
                             naming.user_session_selector(username, namespace)):
        if session_owner(secret, namespace) == username:
            result.sessions_ended += await _delete_secret(kube, secret, namespace)
    for old in await _all(kube, namespace, user_marker_selector(username, namespace)):
        found = read_marker(old, namespace)
        if found is not None and found[1] != result.marker:
            result.older_markers_removed += await _delete_secret(kube, old, namespace)
    return result


async def _all(kube: KubeAPI, namespace: str, selector: str) -> list[Obj]:
    """Every Secret matching `selector`, listed in full before anything is deleted."""
    return [item async for page in pages(lambda token: kube.list(
        Kind.SECRET, namespace, selector, PAGE_SIZE, token)) for item in page]


async def _delete_secret(kube: KubeAPI, secret: Obj, namespace: str) -> int:
    try:
        await kube.delete(Kind.SECRET, naming.metadata_field(secret, "name") or "", namespace,
                          uid=naming.metadata_field(secret, "uid"))
    except (NotFound, Conflict):
        return 0
    return 1


def report(result: Revocation, config: Config) -> str:
    """What was done, for the administrator (standard output)."""
    when = wire.format_time(result.revoked_at) if result.revoked_at else "now"
    retention = dt.timedelta(seconds=config.revocation_retention_seconds)
    lines = [f"revoked {result.username!r} at {when} (marker Secret {config.namespace}/"
             f"{result.marker})",
             f"  ended {result.sessions_ended} session(s); deleted "
             f"{len(result.deleted)} object(s){': ' if result.deleted else ''}"
             f"{', '.join(result.deleted)}"]
    if result.older_markers_removed:
        lines.append(f"  replaced {result.older_markers_removed} earlier revocation marker(s)")
    lines += [
        f"  credentials already issued stop working within about {TOKEN_CACHE_SECONDS} s",
        f"  ID tokens authenticated before then (and within clockSkewSeconds, "
        f"{config.clock_skew_seconds} s, after) are refused for {retention} "
        "(revocationRetentionSeconds); a new sign-in at the IdP works again, so disable "
        "the person there to keep them out"]
    return "\n".join(lines) + "\n"


def warnings(result: Revocation, config: Config) -> list[str]:
    """What the administrator should check (standard error)."""
    found: list[str] = [f"{what} is not this concierge's object for {result.username!r}; left "
                        "it alone" for what in result.not_ours]
    if not result.deleted and not result.sessions_ended:
        prefixes = sorted({a.username_prefix for a in config.authenticators})
        hint = (f" (this config's authenticators prefix them with {', '.join(map(repr, prefixes))})"
                if prefixes and not result.username.startswith(tuple(prefixes)) else "")
        found.append(f"no objects or sessions found for {result.username!r}; the revocation is "
                     "recorded for exactly this name. Check it is the name the audit log or "
                     f"whoami shows, usernamePrefix included{hint}")
    return found


def run(config: Config, username: str, stdout: TextIO, stderr: TextIO,
        kube: KubeAPI | None = None) -> int:
    """The command: an exit code, what was done on `stdout`, problems on `stderr`."""
    import asyncio

    why = problem_with(username)
    if why is not None:
        print(f"pinniped-concierge revoke-user: USERNAME {why}; give the name as the audit log "
              "or whoami shows it", file=stderr)
        return EXIT_USAGE
    real = None
    if kube is None:
        from pinniped_concierge.kubeapi import KubernetesClientAPI

        where = "kubernetes.kubeconfig" if config.kubernetes.kubeconfig else "in-cluster config"
        try:
            kube = real = KubernetesClientAPI.from_kubeconfig(
                config.kubernetes.kubeconfig, float(config.kubernetes.request_timeout_seconds))
        except Exception as exc:  # unreadable kubeconfig, not in a pod
            print(f"pinniped-concierge revoke-user: cannot set up the Kubernetes client "
                  f"({where}): {type(exc).__name__}: {exc}", file=stderr)
            return EXIT_USAGE
    result = Revocation(username)
    try:
        asyncio.run(revoke(kube, config.namespace, username, revoked_by=_who(), done=result))
    except (Unavailable, ServerError) as exc:
        done = (f"the revocation is recorded (marker {result.marker}), but not every object "
                "or session is deleted yet" if result.marker else "nothing was changed")
        rbac = (" (its credentials need the verbs of deploy/rbac.yaml: this is the "
                "concierge's own ServiceAccount's job)" if "HTTP 403" in str(exc) else "")
        print(f"pinniped-concierge revoke-user: {exc}{rbac}; {done}. Fix that and run the "
              "same command again (it is safe to repeat)", file=stderr)
        return EXIT_FAILED
    finally:
        if real is not None:
            real.close()
    stdout.write(report(result, config))
    for warning in warnings(result, config):
        print(f"pinniped-concierge revoke-user: warning: {warning}", file=stderr)
    return EXIT_OK


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid (e.g. a container's arbitrary uid)
        return ""
