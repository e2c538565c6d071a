"""Getting a verified ID token: the cached one, else a refresh, else a new login.

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

from cli.errors import HumanStepRequired, LoginError
from cli.login_options import LoginOptions
from cli.oidc import browser_flow, device_flow, idtoken, password_flow
from cli.oidc.provider import OAuthError, Provider, TokenResponse
from cli.redact import fingerprint
from cli.session_cache import Session, SessionStore

#: Use a cached ID token only if it stays valid this long (the concierge checks exp too).
ID_TOKEN_MIN_REMAINING = dt.timedelta(seconds=60)


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


def has_display(env: Mapping[str, str], platform: str) -> bool:
    """Whether a browser can plausibly open here."""
    if env.get("BROWSER") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True
    return platform in ("darwin", "win32")


def choose_flow(options: LoginOptions, ctx: LoginContext, platform: str) -> str:
    """--flow if given; else password when the variables are set; else browser or device.

    A non-interactive run (kubectl without a terminal) fails fast here instead
    of waiting minutes for a person who is not there. An explicit --flow is
    honoured even then: whoever wrote it into the kubeconfig asked for it.
    """
    if options.flow:
        return options.flow
    if password_flow.credentials_from(ctx.env):
        return "password"
    if not ctx.interactive:
        raise HumanStepRequired(
            "a new login is needed (no cached session could be used or refreshed), but kubectl "
            "is running pinniped without a terminal, so nobody could complete it. Log in from "
            "a terminal first by running:\n\n"
            f"    {ctx.command_hint}\n\n"
            "then retry. (For CI, set PINNIPED_USERNAME and PINNIPED_PASSWORD.)")
    return "browser" if has_display(ctx.env, platform) else "device"


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
        """A verified, unexpired ID token, logging in only when nothing else works."""
        session = self._store.load(self._key)
        now = self._ctx.now()
        self.last_was_fresh = False
        if (reuse_cached and session is not None
                and session.id_token_expiry - now > ID_TOKEN_MIN_REMAINING):
            return session
        self.last_was_fresh = True
        if session is not None and session.refresh_token:
            refreshed = self._refresh(session.refresh_token)
            if refreshed is not None:
                return refreshed
        return self._login()

    def forget(self) -> Session | None:
        """Drop the local session; returns it so the caller can revoke it."""
        session = self._store.load(self._key)
        self._store.delete(self._key)
        return session

    def _refresh(self, refresh_token: str) -> Session | None:
        try:
            tokens = self.provider.token_request(
                {"grant_type": "refresh_token", "refresh_token": refresh_token},
                "session refresh")
        except OAuthError as exc:
            self._ctx.say(f"your session at the identity provider has ended ({exc.error}, "
                          f"refresh token {fingerprint(refresh_token)}); logging in again.")
            self._store.delete(self._key)
            return None
        # RFC 6749 6: the IdP may keep the old refresh token; then we keep it too.
        return self._accept(tokens, nonce=None, previous_refresh=refresh_token)

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
        return self._accept(tokens, nonce=nonce, previous_refresh=None)

    def _accept(self, tokens: TokenResponse, nonce: str | None,
                previous_refresh: str | None) -> Session:
        verified = idtoken.verify(tokens.id_token, self.provider.jwks(),
                                  issuer=self._options.issuer,
                                  client_id=self._options.client_id,
                                  now=self._ctx.now(), nonce=nonce)
        session = Session(id_token=verified.raw, id_token_expiry=verified.expiry,
                          refresh_token=tokens.refresh_token or previous_refresh)
        self._store.save(self._key, session)
        return session
