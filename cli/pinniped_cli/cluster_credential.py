"""From login options to a cluster credential: cache, else one locked login, then cache.

A kubectl call whose credential is cached in the runtime directory is
answered by `pinniped_cli.cached_path` before this is imported; this is the
path of every other call. The IdP, the concierge, httpx, joserfc and keyring
are imported below the cache check, when a login is really needed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pinniped_cli import cache_keys, runtime_cache
from pinniped_cli.credential_cache import Credential, CredentialCache, cache_key
from pinniped_cli.credential_entry import FILE_NAME
from pinniped_cli.errors import CLIError
from pinniped_cli.securefile import config_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from pinniped_apis.wire import ClusterCredential
    from pinniped_cli.concierge_client import ConciergeClient
    from pinniped_cli.execcredential import ClusterInfo
    from pinniped_cli.login_options import LoginOptions
    from pinniped_cli.oidc.login import OIDCSession
    from pinniped_cli.runtime import Runtime
    from pinniped_cli.sealing import CacheKey

#: Extra time a waiting process allows beyond the login timeout of the one holding the lock.
LOCK_GRACE_SECONDS = 60.0


def credential_key(options: LoginOptions, cluster: ClusterInfo | None) -> str:
    return cache_keys.credential_key(options.identity_fields(), cluster)


def session_key(options: LoginOptions) -> str:
    """Sessions are per issuer, client and scopes (and password user): one IdP login serves
    every concierge."""
    fields = options.identity_fields()
    return cache_key({k: fields[k] for k in ("issuer", "clientID", "scopes", "passwordUser")
                      if k in fields})


def credential_cache(options: LoginOptions, rt: Runtime) -> CredentialCache | None:
    """The cache these options name (None: --credential-cache "", no cache)."""
    if options.credential_cache is None:
        return None
    return cache_at(options.credential_cache, rt.env, rt.cache_key, rt.say_once)


def cache_at(path: Path, env: Mapping[str, str], cache_key: Callable[[], CacheKey],
             warn: Callable[[str], None]) -> CredentialCache:
    """The credential cache in `path`: unsealed where it is the private runtime directory's
    (`runtime_cache.cache_path`), else sealed with `cache_key()`."""
    if str(path) == runtime_cache.cache_path(env):
        return CredentialCache.in_runtime_dir(path, warn)
    return CredentialCache(path, cache_key(), warn, tighten_dir=path.parent == config_dir(env))


def sealed_default_cache(options: LoginOptions, rt: Runtime) -> CredentialCache | None:
    """The sealed file in ~/.config when the runtime directory's cache replaced it.

    Older versions kept every credential there; processes without the runtime
    directory (cron jobs, `su`) still do. Only read by logout, so that it revokes
    and forgets what is there too; logins never read it (a clean miss).
    """
    if options.credential_cache is None or "credential-cache" in options.explicit_paths:
        return None
    sealed = config_dir(rt.env) / FILE_NAME
    if sealed == options.credential_cache or not sealed.exists():
        return None
    return cache_at(sealed, rt.env, rt.cache_key, rt.say_once)


def lock_path(options: LoginOptions) -> Path:
    anchor = options.credential_cache or options.session_cache
    return anchor.with_name(anchor.name + ".lock")


@contextlib.contextmanager
def credential_locked(options: LoginOptions, rt: Runtime) -> Iterator[None]:
    """Hold the credential cache's lock for as long as a login may take."""
    from pinniped_cli import lock

    with lock.held(lock_path(options), timeout=options.login_timeout + LOCK_GRACE_SECONDS,
                   on_wait=lambda: rt.say("waiting for another pinniped login to finish...")):
        yield


@contextlib.contextmanager
def session_locked(options: LoginOptions, rt: Runtime, timeout: float) -> Iterator[None]:
    """Hold the lock of this login's OIDC session, in pinniped's own directory.

    The session (and its refresh token) is shared by every credential cache,
    so the credential cache's lock is not enough: two logins with different
    --credential-cache would refresh one rotating refresh token at once, and
    the IdP revokes the grant when the spent one comes back. Taken after the
    credential cache's lock, always, so the two never deadlock.
    """
    from pinniped_cli import lock

    path = config_dir(rt.env) / f"session-{session_key(options)[:32]}.lock"
    with lock.held(path, timeout=timeout,
                   on_wait=lambda: rt.say("waiting for another pinniped login to finish...")):
        yield


def get_credential(options: LoginOptions, cluster: ClusterInfo | None, interactive: bool,
                   rt: Runtime) -> Credential:
    """The cached credential, or a new one from one login held under the lock.

    A cached credential with the elevation hint is handed out only after the
    concierge's state says so (`pinniped_cli.elevation_check`): a change or a
    401 logs in again (the OIDC session's tokens are enough: no browser), and
    nothing left open stops the checking.
    """
    key = credential_key(options, cluster)
    cache = credential_cache(options, rt)
    stale: Credential | None = None  # still valid, but its elevated groups are not current
    checked: set[str] = set()  # tokens the concierge's state says not to hand out again
    if cache is not None and (hit := cache.get(key, rt.now())) is not None:
        if not hit.check_elevation:
            return hit
        from pinniped_cli import elevation_check as check

        outcome = elevation_outcome(options, hit, rt)
        if outcome == check.DONE:
            return mark_checking(options, cluster, rt, False, hit.token) or hit
        if outcome in (check.SAME, check.UNREACHABLE):
            return hit
        checked.add(hit.token)
        if outcome == check.CHANGED:
            stale = hit
            rt.say("your elevated access changed (an elevation was approved or ended): "
                   "logging in again to pick that up")
    with credential_locked(options, rt):
        # Whoever held the lock may just have logged in for us.
        if cache is not None and (hit := cache.get(key, rt.now())) is not None and (
                not hit.check_elevation or hit.token not in checked):
            return hit
        try:
            with session_locked(options, rt, options.login_timeout + LOCK_GRACE_SECONDS), \
                    rt.stdout_to_stderr():
                credential = _login(options, interactive, rt)
        except CLIError as exc:
            if stale is None:
                raise
            rt.say(f"could not log in again ({exc}); using the cached credential until then")
            return stale
        if cache is not None:
            cache.put(key, credential, rt.now())
        keep_kubeconfig_current(options, cluster, credential, rt)
        return credential


def elevation_outcome(options: LoginOptions, credential: Credential, rt: Runtime) -> str:
    """What the concierge's elevation state means for `credential` (`elevation_check`)."""
    from pinniped_cli.elevation_check import UNREACHABLE
    from pinniped_cli.elevation_client import ElevationClient
    from pinniped_cli.errors import UsageError

    try:
        ca_pem = options.concierge_ca_bundle.pem("--concierge-ca-bundle")
    except UsageError:
        return UNREACHABLE  # a login would say what is wrong with the flag
    with rt.new_http(ca_pem) as http:
        return ElevationClient(http, options.concierge_endpoint).check(
            credential.token, credential.elevated_groups)


def mark_checking(options: LoginOptions, cluster: ClusterInfo | None, rt: Runtime,
                  check: bool, token: str | None = None) -> Credential | None:
    """Turn the elevation check of the cached credential (if `token` is given: only if it is
    that one) on or off; the credential as now cached (None when none is)."""
    cache = credential_cache(options, rt)
    if cache is None:
        return None
    key = credential_key(options, cluster)
    with credential_locked(options, rt):
        hit = cache.get(key, rt.now())
        if hit is None or hit.check_elevation == check or token not in (None, hit.token):
            return hit
        marked = hit.checking(check)
        cache.put(key, marked, rt.now())
        return marked


def _login(options: LoginOptions, interactive: bool, rt: Runtime) -> Credential:
    from pinniped_cli.concierge_client import ConciergeClient

    with contextlib.ExitStack() as stack:
        session = oidc_session(options, interactive, rt, stack)
        c_http = stack.enter_context(
            rt.new_http(options.concierge_ca_bundle.pem("--concierge-ca-bundle")))
        concierge = ConciergeClient(c_http, options.concierge_endpoint,
                                    options.concierge_authenticator)
        return Credential.from_wire(_exchange(session, concierge, options, rt))


def oidc_session(options: LoginOptions, interactive: bool, rt: Runtime,
                 stack: contextlib.ExitStack) -> OIDCSession:
    """The OIDC session of these options; its IdP client is opened (on `stack`) when first used."""
    from pinniped_cli.oidc.login import LoginContext, OIDCSession
    from pinniped_cli.oidc.provider import Provider

    def provider() -> Provider:
        http = stack.enter_context(rt.new_http(options.ca_bundle.pem("--ca-bundle")))
        return Provider(http, options.issuer, options.client_id)

    store = rt.open_session_store(options.session_cache, rt.cache_key(), rt.say_once)
    ctx = LoginContext(env=rt.env, interactive=interactive, say=rt.say, now=rt.now,
                       open_browser=rt.open_browser, sleep=rt.sleep, clock=rt.clock,
                       command_hint=_command_hint(rt))
    return OIDCSession(options, store, session_key(options), provider=provider, ctx=ctx,
                       platform=rt.platform)


def _exchange(session: OIDCSession, concierge: ConciergeClient, options: LoginOptions,
              rt: Runtime) -> ClusterCredential:
    from pinniped_apis.wire import LoginRejected
    from pinniped_cli.errors import ConciergeError
    from pinniped_cli.redact import fingerprint

    tokens = session.id_token()
    try:
        return concierge.exchange(tokens.id_token)
    except LoginRejected:
        if session.last_was_fresh:
            rejected = tokens.id_token
        else:
            # A cached ID token the concierge no longer takes (keys rotated, clock
            # skew): one fresh token, then give up.
            rt.say("the concierge did not accept the cached ID token; getting a fresh one")
            tokens = session.id_token(reuse_cached=False)
            try:
                return concierge.exchange(tokens.id_token)
            except LoginRejected:
                rejected = tokens.id_token
    raise ConciergeError(
        f"the concierge refused your ID token ({fingerprint(rejected)}): authentication "
        f"failed. Check that its authenticator {options.concierge_authenticator!r} trusts "
        f"issuer {options.issuer} with audience {options.client_id!r}; the concierge's audit "
        "log says why. Ask your cluster administrator if this persists.")


def keep_kubeconfig_current(options: LoginOptions, cluster: ClusterInfo | None,
                            credential: Credential, rt: Runtime) -> None:
    """Bring the generated kubeconfig's as/as-groups in line with this login's identity."""
    if options.update_kubeconfig is None or options.kubeconfig_user is None:
        return
    from pinniped_cli.kubeconfig import KubeconfigUpdateFailed, update_identity

    identity = credential.identity()
    path, user = options.update_kubeconfig, options.kubeconfig_user
    try:
        changed = update_identity(path, user, identity)
    except KubeconfigUpdateFailed as exc:
        rt.say(f"you are now {identity.username} in groups {list(identity.groups)}, but "
               f"{path} could not be updated to match ({exc}). To update it, run (as someone "
               f"who can write it):\n\n    {regenerate_command(options, cluster, rt)}\n")
        return
    if changed:
        rt.say(f"your identity changed: updated {path} (user {user!r}) to act as "
               f"{identity.username} in groups {list(identity.groups)}. If this command was "
               "refused, run it again.")


def regenerate_command(options: LoginOptions, cluster: ClusterInfo | None, rt: Runtime) -> str:
    """The `pinniped get kubeconfig` command that rewrites the kubeconfig of these options."""
    args = options.exec_args()[2:]  # drop "login oidc"
    if cluster is not None and cluster.ca_data:
        cluster_args = ["--server", cluster.server, "--cluster-ca-bundle-data", cluster.ca_data]
    else:
        cluster_args = ["--server", "SERVER_URL", "--cluster-ca-bundle", "CLUSTER_CA_FILE"]
    tail = ["--name", options.kubeconfig_user or "pinniped",
            "-o", str(options.update_kubeconfig)]
    return _shell_command(rt, ["get", "kubeconfig", *args, *cluster_args, *tail])


def _shell_command(rt: Runtime, args: list[str]) -> str:
    """`args` run by this same pinniped, as one shell line (env assignments first)."""
    import shlex

    from pinniped_cli.kubeconfig import running_plugin_command

    plugin = running_plugin_command(rt.argv[0] if rt.argv else None)
    env = [f"{name}={shlex.quote(value)}" for name, value in plugin.env]
    return " ".join([*env, shlex.join([plugin.command, *plugin.args, *args])])


def _command_hint(rt: Runtime) -> str:
    """This very command, runnable by hand: what to type when a login needs a person."""
    return _shell_command(rt, rt.argv[1:])
