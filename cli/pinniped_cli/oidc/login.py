"""Getting a verified ID token for a new cluster credential: a refresh, else a new login.

When is a cached ID token still good enough? Its groups are what the IdP
said when it was issued, and the concierge turns them into the cluster
identity at every login. Reused while it is valid, it would carry groups the
IdP has since removed (or miss ones it added) into each credential until it
expires, and on another laptop keep doing so after this one has learnt
better. So, whenever a cluster credential is needed (once per credential
lifetime, which is short, so one IdP round trip each time):

- with a refresh token, refresh, and use the ID token the IdP returns now;
- the cached ID token is used only when there is no refresh token (nothing
  fresher can be had without a person), when the IdP's refresh answer has
  no ID token (OIDC Core 12.2 allows it: the IdP has nothing newer to say),
  or when the IdP cannot be reached or cannot answer (`IdPUnavailable`), so
  kubectl keeps working through an IdP outage while the cached token lasts;
- never when the IdP answered that the grant is invalid: the session is
  over there (a person was disabled, a password changed), so it is over
  here too, and only a new login can go on.

Refresh comes before any new login so that a person sees a browser only when
the IdP session is really gone. Every token that comes back from the IdP is
verified before it is stored or used, and a rotated refresh token is stored
at once: this IdP (like many) revokes the whole grant when an old refresh
token is replayed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pinniped_cli.errors import CLIError, HumanStepRequired, LoginError
from pinniped_cli.execcredential import ENV_VAR as EXEC_INFO_VAR
from pinniped_cli.login_options import PASSWORD_VAR, USERNAME_VAR, LoginOptions
from pinniped_cli.oidc import browser_flow, device_flow, idtoken, password_flow
from pinniped_cli.oidc.idtoken import IDTokenInvalid
from pinniped_cli.oidc.provider import (
    TRANSIENT_OAUTH_ERRORS,
    IdPUnavailable,
    OAuthError,
    Provider,
    TokenResponse,
)
from pinniped_cli.redact import fingerprint
from pinniped_cli.session_cache import Session, SessionStore

#: Fall back to a cached ID token only if it stays valid this long (the concierge checks exp).
ID_TOKEN_MIN_REMAINING = dt.timedelta(seconds=60)
NEW_LOGIN_NEEDED = "a new login is needed (no cached session could be used or refreshed)"
SESSION_KEPT = ("Your login session was kept: try again in a moment, and if this persists ask "
                "the identity provider's administrator.")


@dataclass(frozen=True)
class LoginContext:
    """What the login needs from the outside world; tests pass fakes."""

    env: Mapping[str, str]
    interactive: bool
    say: Callable[[str], None]
    now: Callable[[], dt.datetime]
    open_browser: Callable[[str], bool]
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    #: The exact command a person should run when a login needs them but nobody is there.
    command_hint: str

    @property
    def from_kubectl(self) -> bool:
        """Whether kubectl runs us as its exec plugin (it always sets KUBERNETES_EXEC_INFO).

        Then `interactive` is kubectl's spec.interactive; run by hand, it says
        whether stdin is a terminal. An empty variable counts as unset, as in
        `execcredential.read_exec_info`.
        """
        return bool(self.env.get(EXEC_INFO_VAR, "").strip())


def has_display(env: Mapping[str, str], platform: str) -> bool:
    """Whether a browser can plausibly open here."""
    if env.get("BROWSER") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True
    return platform in ("darwin", "win32")


def choose_flow(options: LoginOptions, ctx: LoginContext, platform: str) -> str:
    """--flow if given; else password when the variables are set; else browser or device.

    Who could finish the login decides whether it starts, so that nobody waits
    minutes for a person who is not there:

    * kubectl says nobody is at the terminal (`spec.interactive: false`): only
      what needs nobody, the password flow or a browser that opens here by
      itself (BROWSER, a display), even when --flow was written into the
      kubeconfig. Anything else fails at once, naming the command to run by hand.
    * kubectl with a terminal, or a person who ran pinniped by hand: the device
      flow needs no terminal, only someone who reads its link and code on
      stderr (a CI log, `ssh host cmd`, an editor's task runner). The browser
      flow by hand without a terminal needs a browser that opens here: its
      redirect goes to this machine's loopback, so a link printed into a log
      or a remote session could not be finished where it is read. It fails
      at once, pointing at the device flow. (At a terminal it goes ahead as
      always: the person who typed the command sees the link, can open it
      here or through a forwarded --listen-port, and can press Ctrl-C.)
    """
    flow = options.flow
    if flow is None and password_flow.credentials_from(ctx.env):
        flow = "password"
    if flow == "password":
        return flow
    display = has_display(ctx.env, platform)
    if ctx.from_kubectl and not ctx.interactive:
        if flow == "browser" and display:
            return flow
        no_browser = ", and no browser can open here" if flow == "browser" else ""
        raise HumanStepRequired(
            f"{NEW_LOGIN_NEEDED}, but kubectl ran pinniped without a terminal (its "
            f"{EXEC_INFO_VAR} says spec.interactive: false){no_browser}, so nobody could "
            "complete it. Log in from a terminal first by running:\n\n"
            f"    {ctx.command_hint}\n\n"
            f"then retry. (For CI, set {USERNAME_VAR} and {PASSWORD_VAR}.)")
    flow = flow or ("browser" if display else "device")
    if flow == "browser" and not display and not ctx.interactive:
        raise HumanStepRequired(
            f"{NEW_LOGIN_NEEDED}, and this login uses the browser flow, but no browser can "
            "open here (no BROWSER, DISPLAY or WAYLAND_DISPLAY) and stdin is not a terminal, "
            "so its link would wait unanswered. Log in with --flow device instead (it needs "
            "only someone who reads these messages), set BROWSER to a command that opens "
            f"URLs, or run pinniped from a terminal. (For CI, set {USERNAME_VAR} and "
            f"{PASSWORD_VAR}.)")
    return flow


class OIDCSession:
    def __init__(self, options: LoginOptions, store: SessionStore, key: str, *,
                 provider: Callable[[], Provider], ctx: LoginContext, platform: str) -> None:
        self._options = options
        self._store = store
        self._key = key
        self._provider_factory = provider
        self._provider: Provider | None = None
        self._ctx = ctx
        self._platform = platform
        #: Whether the last id_token() came from the IdP just now (not from the cache).
        self.last_was_fresh = False

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = self._provider_factory()
        return self._provider

    def id_token(self, reuse_cached: bool = True) -> Session:
        """A verified, unexpired ID token: refreshed when possible (see the module docstring).

        With `reuse_cached` False (the concierge refused the cached one), the
        cached ID token is never the answer.
        """
        session = self._store.load(self._key)
        self.last_was_fresh = False
        cached = session if (reuse_cached and session is not None
                             and session.id_token_expiry - self._ctx.now()
                             > ID_TOKEN_MIN_REMAINING) else None
        if session is not None and session.refresh_token:
            try:
                refreshed = self._refresh(session, session.refresh_token, cached)
            except IdPUnavailable as exc:
                if cached is None:
                    raise IdPUnavailable(f"{str(exc).rstrip('.')}. {SESSION_KEPT}") from exc
                until = f"{cached.id_token_expiry:%Y-%m-%dT%H:%M:%SZ}"
                self._ctx.say(
                    f"could not refresh your session at the identity provider "
                    f"({str(exc).rstrip('.')}); using the ID token of your last login, valid "
                    f"until {until}, so changes to your groups made there since then reach the "
                    "cluster once it answers again.")
                return cached
            if refreshed is not None:
                return refreshed
        elif cached is not None:
            return cached
        self.last_was_fresh = True
        return self._login()

    def forget(self) -> bool | None:
        """Drop the local session and revoke its refresh token at the IdP (best effort).

        None when there was no refresh token; else whether the IdP revoked it.
        """
        session = self._store.load(self._key)
        self._store.delete(self._key)
        if session is None or not session.refresh_token:
            return None
        try:
            return self.provider.revoke(session.refresh_token, "refresh_token")
        except CLIError:  # an unreachable IdP, an unreadable --ca-bundle: it expires anyway
            return False

    def _refresh(self, session: Session, refresh_token: str,
                 cached: Session | None) -> Session | None:
        """The refreshed session, or None when only a new login can help.

        Only invalid_grant means the session is over; the IdP saying it cannot
        answer now raises IdPUnavailable, and other refusals (a misconfigured
        client) keep the session for the next try. A rotated refresh token is
        saved the moment it arrives: the old one is spent, and replaying it
        would make this IdP revoke the whole grant. An answer without an ID
        token keeps `cached` (when there is one) with the new refresh token.
        """
        try:
            tokens = self.provider.token_request(
                {"grant_type": "refresh_token", "refresh_token": refresh_token},
                "session refresh")
        except OAuthError as exc:
            if exc.error in TRANSIENT_OAUTH_ERRORS:
                raise IdPUnavailable(str(exc)) from exc
            if exc.error != "invalid_grant":
                raise LoginError(f"{exc}. {SESSION_KEPT}") from exc
            self._ctx.say(f"your session at the identity provider has ended ({exc.error}, "
                          f"refresh token {fingerprint(refresh_token)}); logging in again.")
            self._store.delete(self._key)
            return None
        # RFC 6749 6: the IdP may keep the old refresh token; then we keep it too.
        refresh = tokens.refresh_token or refresh_token
        if tokens.id_token is None and cached is not None:
            kept = Session(id_token=cached.id_token, id_token_expiry=cached.id_token_expiry,
                           refresh_token=refresh)
            self._store.save(self._key, kept)
            return kept
        if refresh != refresh_token:
            # With its ID token marked spent: whatever fails below, the next run refreshes
            # with the new token, and never falls back to an ID token this refresh replaced.
            self._store.save(self._key, Session(
                id_token=session.id_token,
                id_token_expiry=min(session.id_token_expiry, self._ctx.now()),
                refresh_token=refresh))
        try:
            accepted = self._accept(tokens, nonce=None, refresh_token=refresh)
        except IDTokenInvalid as exc:
            self._ctx.say(f"the identity provider's answer to the session refresh was refused "
                          f"({exc}); logging in again.")
            return None
        self.last_was_fresh = True
        return accepted

    def _login(self) -> Session:
        flow = choose_flow(self._options, self._ctx, self._platform)
        opts, ctx = self._options, self._ctx
        nonce: str | None = None
        if flow == "password":
            tokens = password_flow.login(self.provider, scopes=opts.scopes, env=ctx.env)
        elif flow == "device":
            tokens = device_flow.login(self.provider, scopes=opts.scopes,
                                       timeout=opts.login_timeout, say=ctx.say,
                                       sleep=ctx.sleep, clock=ctx.clock)
        elif flow == "browser":
            result = browser_flow.login(self.provider, scopes=opts.scopes,
                                        listen_port=opts.listen_port,
                                        skip_browser=opts.skip_browser,
                                        timeout=opts.login_timeout, say=ctx.say,
                                        open_browser=ctx.open_browser)
            tokens, nonce = result.tokens, result.nonce
        else:  # argparse restricts the choices; this guards programming errors
            raise LoginError(f"unknown login flow {flow!r}")
        return self._accept(tokens, nonce=nonce, refresh_token=tokens.refresh_token)

    def _accept(self, tokens: TokenResponse, nonce: str | None,
                refresh_token: str | None) -> Session:
        """Verify the answer's ID token, then store and return the session (IDTokenInvalid)."""
        if tokens.id_token is None:
            raise IDTokenInvalid("the identity provider's answer has no ID token; make sure "
                                 "--scopes includes openid.")
        verified = idtoken.verify(tokens.id_token, self.provider.jwks(),
                                  issuer=self._options.issuer,
                                  client_id=self._options.client_id,
                                  now=self._ctx.now(), nonce=nonce)
        session = Session(id_token=verified.raw, id_token_expiry=verified.expiry,
                          refresh_token=refresh_token)
        self._store.save(self._key, session)
        return session
