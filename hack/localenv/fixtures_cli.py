"""Fakes and fixtures for testing the `pinniped` CLI.

Unit tests run the CLI in-process against `FakeIdP` and `FakeConcierge`,
reached through httpx's MockTransport: the IdP signs real JWTs with its own
key (so the CLI's verification is exercised for real) and both count what
they served, so tests can say "one login, zero refreshes". `FakeClock` drives
expiry without sleeping, and `FakeKeyring` caps entry sizes like a real
keyring backend.

Integration tests use `pinniped_command()` (the installed console script, or
`python -m pinniped_cli`) and `cli_home`, an isolated HOME with the keyring turned off
(`keyring.backends.fail.Keyring`), so sessions land in the 0600 fallback file
and nothing touches the developer's real keyring, caches or cache key. The
cache files are sealed (`pinniped_cli.sealing`), except a credential cache in a
private XDG_RUNTIME_DIR, which a world has when a test gives it one
(`pinniped_cli.runtime_cache`); `CLIWorld` opens them with the world's own
key, through the CLI's own cache classes, for tests to inspect.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from pinniped_apis import wire
from pinniped_apis.constants import (
    ELEVATION_GROUP,
    ELEVATION_ID_PREFIX,
    ELEVATION_REQUESTS_PATH,
    ELEVATION_STATE_PATH,
)
from pinniped_apis.elevation import (
    ActiveElevation,
    ElevationCreate,
    ElevationDecision,
    ElevationList,
    ElevationState,
    ElevationView,
)
from pinniped_apis.rfc3339 import format_time
from pinniped_cli.cluster_credential import cache_at, credential_key
from pinniped_cli.credential_cache import Credential, CredentialCache
from pinniped_cli.execcredential import V1, read_exec_info
from pinniped_cli.login_options import default_credential_cache, parse_login_args
from pinniped_cli.redact import fingerprint
from pinniped_cli.runtime import Runtime
from pinniped_cli.sealing import CacheKey
from pinniped_cli.session_cache import FileSessionStore, KeyringSessionStore, Session, SessionStore

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TEST_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
TEST_CA_DATA = base64.b64encode(TEST_CA_PEM.encode()).decode()
#: The password flow's variables for the fake IdP's alice.
PASSWORD_ENV = {"PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": "alice-pw"}
#: The same CI job with its password gone: whatever still works comes from the caches
#: (the username is part of the cache keys, the password is not).
NO_PASSWORD_ENV = {"PINNIPED_USERNAME": "alice"}
#: `login oidc` flags for the fakes' hosts, as the hot-path tests and the benchmark use them.
HOT_PATH_LOGIN_ARGS = ["--issuer", "https://idp.test", "--client-id", "pinniped-cli",
                       "--concierge-endpoint", "https://concierge.test",
                       "--concierge-authenticator", "corp"]
TEST_SERVER = "https://k8s.test:6443"
#: Every path of the elevation API starts with this.
ELEVATION_PREFIX = f"/apis/{ELEVATION_GROUP}/"


def pinniped_command() -> list[str]:
    """How to run the real CLI: the venv's console script when installed, else `-m pinniped_cli`."""
    script = Path(sys.executable).with_name("pinniped")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pinniped_cli"]


def exec_info(api_version: str = V1, interactive: bool = False, server: str = TEST_SERVER,
              ca_data: str = TEST_CA_DATA) -> str:
    """KUBERNETES_EXEC_INFO as kubectl sets it for a provideClusterInfo exec stanza."""
    return json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "spec": {
        "interactive": interactive,
        "cluster": {"server": server, "certificate-authority-data": ca_data}}})


def seed_credential(env: Mapping[str, str], token: str, login_args: list[str] | None = None,
                    info: str | None = None, ttl: dt.timedelta = dt.timedelta(minutes=10)
                    ) -> dt.datetime:
    """Cache a credential where `pinniped login oidc LOGIN_ARGS` run with `env` and `info`
    (KUBERNETES_EXEC_INFO) looks first; returns its expiry."""
    options = parse_login_args(login_args or HOT_PATH_LOGIN_ARGS, env)
    cluster = read_exec_info(info or exec_info(), stdin_is_tty=False).cluster
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert options.credential_cache is not None
    credential_cache_at(options.credential_cache, env, print).put(
        credential_key(options, cluster),
        Credential(token, now + ttl, "corp:alice@example.com", ("corp:devs",)), now)
    return now + ttl


def credential_cache_at(path: Path, env: Mapping[str, str], warn: Callable[[str], None]
                        ) -> CredentialCache:
    """The credential cache the CLI keeps in `path` with `env` (sealed, or the runtime
    directory's), as the CLI opens it."""
    return cache_at(path, env, lambda: CacheKey.for_env(env), warn)


#: A user id that is not the one running the tests.
OTHER_UID = 54321


def owned_by_another_user(monkeypatch: pytest.MonkeyPatch, *paths: Path,
                          uid: int = OTHER_UID) -> None:
    """Make `paths` belong to `uid` for every stat this process makes, without root.

    The CLI refuses files and directories of other users (a cache, key or lock
    someone else planted), and finds out with os.stat, os.lstat or os.fstat
    (Path.stat is os.stat). A real chown to another user needs root, so the
    tests that give a file away would run only as root; this fakes the owner
    those calls report for exactly these files (found by device and inode, so
    a descriptor of them is covered too, and a file that replaces one is not).
    Everything else sees the truth, so the CLI's own other files stay its own.
    """
    targets = {(info.st_dev, info.st_ino) for info in map(os.lstat, paths)}

    def disguised(info: os.stat_result) -> os.stat_result:
        if (info.st_dev, info.st_ino) not in targets:
            return info
        fields = list(info)
        fields[4] = uid  # st_uid
        extra = {name: getattr(info, name) for name in (
            "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
            "st_blksize", "st_blocks", "st_rdev")}
        return os.stat_result(fields, extra)

    def wrapped(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def call(*args: Any, **kwargs: Any) -> os.stat_result:
            return disguised(real(*args, **kwargs))

        return call

    for name in ("stat", "lstat", "fstat"):
        monkeypatch.setattr(os, name, wrapped(getattr(os, name)))


class FakeClock:
    """Wall clock and monotonic clock in one, advanced by `sleep` instead of waiting."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.current = start or dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self.current

    def timestamp(self) -> int:
        return int(self.now().timestamp())

    def monotonic(self) -> float:
        return self.now().timestamp()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.current += dt.timedelta(seconds=seconds)


@dataclass
class FakeUser:
    password: str
    email: str
    groups: list[str]


class FakeIdP:
    """An OIDC provider behind MockTransport: discovery, JWKS, the four grants, revocation."""

    issuer = "https://idp.test"
    client_id = "pinniped-cli"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                       auto_kid=True)
        self.users = {"alice": FakeUser("alice-pw", "alice@example.com", ["devs"]),
                      "bob": FakeUser("bob-pw", "bob@example.com", ["ops"]),
                      "carol": FakeUser("carol-pw", "carol@example.com", ["leads"])}
        self.id_token_ttl = 300
        self.grants: list[str] = []
        self.issued_id_tokens: list[str] = []
        self.revoked: list[str] = []
        #: Claims to override in the next ID tokens (e.g. {"aud": "other"}).
        self.claim_overrides: dict[str, Any] = {}
        #: Sign ID tokens with this key instead of the published one.
        self.signing_key: RSAKey | None = None
        self.rotate_refresh_tokens = True
        #: Hand out refresh tokens at all (some IdPs give public clients none).
        self.issue_refresh_tokens = True
        self.refresh_token_bytes = 32
        self.device_answers: list[str] = []  # OAuth errors to answer polls with, in order
        #: Who approves device logins once `device_answers` run out (None: nobody, ever).
        self.device_approver: str | None = None
        self.device_interval: int | None = 2
        #: The OAuth error to answer refresh grants with (None: refresh normally).
        self.refresh_error: str | None = None
        #: Answer refresh grants without an ID token (OIDC Core 12.2 allows it).
        self.refresh_without_id_token = False
        #: Every refresh and access token handed out, rotated-away ones too.
        self.issued_refresh_tokens: list[str] = []
        self.issued_access_tokens: list[str] = []
        #: Called with the grant type before each token request is handled (outside the lock).
        self.before_token: Callable[[str], None] | None = None
        self._codes: dict[str, dict[str, Any]] = {}
        self._refresh: dict[str, str] = {}
        self._devices: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- what the tests inspect -------------------------------------------------------

    def count(self, grant: str) -> int:
        return self.grants.count(grant)

    def id_token(self, username: str, nonce: str | None = None) -> str:
        user = self.users[username]
        now = self.clock.timestamp()
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.client_id, "sub": username, "email": user.email,
            "email_verified": True, "groups": list(user.groups), "iat": now,
            "exp": now + self.id_token_ttl}
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(self.claim_overrides)
        key = self.signing_key or self.key
        token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        self.issued_id_tokens.append(token)
        return token

    def authorize(self, url: str, username: str = "alice") -> str:
        """What a browser session at the IdP ends with: the redirect to the loopback callback."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["response_type"] == "code"
        assert query["client_id"] == self.client_id
        assert query["code_challenge_method"] == "S256"
        assert urlsplit(query["redirect_uri"]).hostname == "127.0.0.1"
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"user": username, "nonce": query.get("nonce"),
                             "challenge": query["code_challenge"],
                             "redirect_uri": query["redirect_uri"],
                             "scope": query["scope"]}
        return f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"

    def approve_device(self, user_code: str, username: str = "alice") -> None:
        for device_code, code in list(self._devices.items()):
            if code == user_code:
                self._devices[device_code] = f"approved:{username}"
                return
        raise KeyError(user_code)

    # --- HTTP ---------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "device_authorization_endpoint": f"{self.issuer}/device/auth",
                "revocation_endpoint": f"{self.issuer}/token/revocation",
            })
        if request.method == "GET" and path == "/jwks":
            return httpx.Response(200, json=KeySet([self.key]).as_dict(private=False))
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if path == "/device/auth":
            return self._device_authorization(form)
        if path == "/token":
            if self.before_token is not None:
                self.before_token(form.get("grant_type", ""))
            with self._lock:
                return self._token(form)
        if path == "/token/revocation":
            self.revoked.append(form.get("token", ""))
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": "not_found"})

    def _device_authorization(self, form: dict[str, str]) -> httpx.Response:
        device_code, user_code = secrets.token_urlsafe(16), f"{secrets.randbelow(10**8):08d}"
        self._devices[device_code] = user_code
        body: dict[str, Any] = {
            "device_code": device_code, "user_code": user_code,
            "verification_uri": f"{self.issuer}/device",
            "verification_uri_complete": f"{self.issuer}/device?user_code={user_code}",
            "expires_in": 600}
        if self.device_interval is not None:
            body["interval"] = self.device_interval
        return httpx.Response(200, json=body)

    def _token(self, form: dict[str, str]) -> httpx.Response:
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client")
        username: str | None = None
        nonce = None
        if grant == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or user.password != form.get("password"):
                return _oauth_error("invalid_grant", "invalid username or password")
            username = form["username"]
        elif grant == "refresh_token":
            token = form.get("refresh_token", "")
            username = self._refresh.get(token)
            if username is None:
                return _oauth_error("invalid_grant", "grant request is invalid")
            if self.refresh_error is not None:
                if self.refresh_error == "invalid_grant":
                    del self._refresh[token]  # the grant is gone
                return _oauth_error(self.refresh_error, "refresh refused")
            if self.rotate_refresh_tokens:
                del self._refresh[token]
        elif grant == "authorization_code":
            issued = self._codes.pop(form.get("code", ""), None)
            if issued is None or issued["redirect_uri"] != form.get("redirect_uri"):
                return _oauth_error("invalid_grant")
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != issued["challenge"]:
                return _oauth_error("invalid_grant", "PKCE verification failed")
            username, nonce = issued["user"], issued["nonce"]
        elif grant == DEVICE_GRANT:
            state = self._devices.get(form.get("device_code", ""))
            if state is None:
                return _oauth_error("invalid_grant")
            if self.device_answers:
                return _oauth_error(self.device_answers.pop(0))
            if self.device_approver is not None:
                state = f"approved:{self.device_approver}"
            if not state.startswith("approved:"):
                return _oauth_error("authorization_pending")
            username = state.split(":", 1)[1]
        else:
            return _oauth_error("unsupported_grant_type")
        refresh = "rt-" + secrets.token_urlsafe(self.refresh_token_bytes)
        access = "at-" + secrets.token_urlsafe(8)
        self.issued_access_tokens.append(access)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": 300}
        if grant != "refresh_token" or not self.refresh_without_id_token:
            body["id_token"] = self.id_token(username, nonce)
        if self.issue_refresh_tokens and (grant != "refresh_token" or self.rotate_refresh_tokens):
            self._refresh[refresh] = username
            self.issued_refresh_tokens.append(refresh)
            body["refresh_token"] = refresh
        return httpx.Response(200, json=body)


def _oauth_error(error: str, description: str = "") -> httpx.Response:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return httpx.Response(400, json=body)


@dataclass
class FakePolicy:
    """An ElevationPolicy as the fake concierge reads one: subjects are usernames or groups."""

    group: str
    requesters: tuple[str, ...]
    approvers: tuple[str, ...]
    approvals_required: int = 1
    max_duration_seconds: int = 3600


@dataclass
class FakeElevation:
    """One ElevationRequest in the fake concierge."""

    id: str
    group: str
    requester: str
    reason: str
    duration_seconds: int
    created_at: dt.datetime
    phase: str = "Pending"
    approvals: list[tuple[str, dt.datetime]] = field(default_factory=list)
    expires_at: dt.datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None

    def active(self, now: dt.datetime) -> bool:
        return self.phase == "Approved" and self.expires_at is not None and self.expires_at > now

    def open(self, now: dt.datetime) -> bool:
        return self.phase == "Pending" or self.active(now)


class FakeConcierge:
    """TokenCredentialRequest, whoami, logout and the elevation API, verifying ID tokens
    against the FakeIdP.

    Elevation follows the concierge's rules (docs in `pinniped_apis.elevation`) closely
    enough for the CLI: governed groups are withheld from logins and granted while an
    approved request lasts (the credential then ends no later than the elevation, and
    carries the hint); a revocation ends the sessions minted during the elevation.
    """

    url = "https://concierge.test"
    authenticator = "corp"

    def __init__(self, idp: FakeIdP, clock: FakeClock) -> None:
        self.idp = idp
        self.clock = clock
        self.ttl = 600
        self.logins: list[str] = []  # usernames, one per accepted TokenCredentialRequest
        self.rejected = 0
        self.logouts: list[str] = []
        self.reject_all = False
        self.unavailable = False
        self.sessions: dict[str, wire.ClusterCredential] = {}
        #: Every cluster token handed out, revoked ones too.
        self.issued: list[str] = []
        #: Elevation: policies by group, requests by id, and the state checks served.
        self.policies: dict[str, FakePolicy] = {}
        self.elevations: dict[str, FakeElevation] = {}
        self.state_checks = 0
        #: Answer every elevation call with this (status, body) instead, when set.
        self.elevation_answer: tuple[int, dict[str, Any]] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unavailable:
            return httpx.Response(503, headers={"Retry-After": "7"}, json=wire.status_error(
                503, "ServiceUnavailable", "the Kubernetes API is unreachable"))
        body = json.loads(request.content or b"{}")
        path = request.url.path
        if path == wire.TOKEN_CREDENTIAL_REQUEST_PATH:
            return self._login(wire.TokenCredentialRequest.from_wire(body))
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        credential = self.sessions.get(bearer)
        if credential is None or credential.expiration <= self.clock.now():
            return httpx.Response(401, json=wire.status_error(
                401, "Unauthorized", wire.AUTHENTICATION_FAILED))
        if path == wire.WHOAMI_REQUEST_PATH:
            return httpx.Response(200, json=wire.whoami_response(credential.identity,
                                                                 credential.expiration))
        if path == wire.LOGOUT_REQUEST_PATH:
            del self.sessions[bearer]
            self.logouts.append(credential.identity.username)
            return httpx.Response(200, json=wire.logout_response(True))
        if path.startswith(ELEVATION_PREFIX):
            if self.elevation_answer is not None:
                return httpx.Response(self.elevation_answer[0], json=self.elevation_answer[1])
            status, answer = self._elevation(request.method, path, body, credential.identity)
            return httpx.Response(status, json=answer)
        return httpx.Response(404, json=wire.status_error(404, "NotFound", "not found"))

    # --- elevation --------------------------------------------------------------------

    def request_elevation(self, username: str, group: str, reason: str = "on call",
                          duration_seconds: int | None = None) -> FakeElevation:
        """A Pending request of `username`, made without the CLI."""
        policy = self.policies[group]
        elevation = FakeElevation(
            id=ELEVATION_ID_PREFIX + secrets.token_hex(8), group=group, requester=username,
            reason=reason, duration_seconds=duration_seconds or policy.max_duration_seconds,
            created_at=self.clock.now())
        self.elevations[elevation.id] = elevation
        return elevation

    def approve(self, request_id: str, approver: str) -> None:
        """`approver` approves, without the CLI."""
        elevation = self.elevations[request_id]
        elevation.approvals.append((approver, self.clock.now()))
        if len(elevation.approvals) >= self.policies[elevation.group].approvals_required:
            elevation.phase = "Approved"
            elevation.expires_at = self.clock.now() + dt.timedelta(
                seconds=elevation.duration_seconds)

    def end(self, request_id: str, phase: str, by: str | None = None,
            reason: str | None = None) -> None:
        """End a request (Denied, Revoked, Expired), and the sessions minted during it."""
        elevation = self.elevations[request_id]
        elevation.phase, elevation.ended_by, elevation.end_reason = phase, by, reason
        for token, credential in list(self.sessions.items()):
            if credential.identity.username == elevation.requester \
                    and elevation.group in credential.elevated_groups:
                del self.sessions[token]

    def _governed(self) -> set[str]:
        return set(self.policies)

    def _elevate(self, identity: wire.Identity) -> tuple[wire.Identity, tuple[str, ...],
                                                         bool, dt.datetime | None]:
        """The identity a login gets: governed groups only through active elevations."""
        now = self.clock.now()
        mine = [e for e in self.elevations.values() if e.requester == identity.username]
        active = [e for e in mine if e.active(now) and e.group in self._governed()]
        elevated = tuple(sorted({e.group for e in active}))
        groups = tuple(sorted({g for g in identity.groups if g not in self._governed()}
                              | set(elevated)))
        ends = [e.expires_at for e in active if e.expires_at is not None]
        return (wire.Identity(username=identity.username, groups=groups), elevated,
                any(e.open(now) for e in mine), min(ends) if ends else None)

    def _elevation(self, method: str, path: str, body: dict[str, Any],
                   caller: wire.Identity) -> tuple[int, dict[str, Any]]:
        now = self.clock.now()
        if method == "GET" and path == ELEVATION_STATE_PATH:
            self.state_checks += 1
            mine = [e for e in self.elevations.values() if e.requester == caller.username]
            return 200, ElevationState(
                pending=[e.id for e in mine if e.phase == "Pending"],
                active=[ActiveElevation(id=e.id, group=e.group, expiresAt=e.expires_at)
                        for e in mine if e.active(now) and e.expires_at is not None]).to_wire()
        if path == ELEVATION_REQUESTS_PATH and method == "GET":
            visible = [e for e in self.elevations.values() if self._visible(e, caller)]
            visible.sort(key=lambda e: e.created_at, reverse=True)
            return 200, ElevationList(items=[self._view(e, caller) for e in visible]).to_wire()
        if path == ELEVATION_REQUESTS_PATH and method == "POST":
            return self._create(ElevationCreate.from_wire(body), caller)
        request_id, _, action = path.removeprefix(ELEVATION_REQUESTS_PATH + "/").partition("/")
        elevation = self.elevations.get(request_id)
        if elevation is None or not self._visible(elevation, caller) or method != "POST":
            return _refusal(404, "ElevationNotFound", f"no elevation request {request_id}")
        reason = ElevationDecision.from_wire(body).reason if body else None
        policy = self.policies[elevation.group]
        if action == "revoke":
            if not elevation.open(now):
                return _refusal(409, "ElevationEnded", f"{request_id} is {elevation.phase}")
            self.end(request_id, "Revoked", caller.username, reason)
        elif action in ("approve", "deny"):
            if caller.username == elevation.requester:
                return _refusal(403, "SelfApproval", "you cannot approve your own request; "
                                "ask one of the approvers")
            if not _includes(policy.approvers, caller):
                return _refusal(403, "NotAnApprover", f"you are not an approver of "
                                f"{elevation.group}")
            if any(user == caller.username for user, _ in elevation.approvals):
                return _refusal(409, "AlreadyApproved", "you already approved it")
            if elevation.phase != "Pending":
                return _refusal(409, "ElevationEnded", f"{request_id} is {elevation.phase}")
            if action == "approve":
                self.approve(request_id, caller.username)
            else:
                self.end(request_id, "Denied", caller.username, reason)
        else:
            return _refusal(404, "NotFound", "not found")
        return 200, self._view(elevation, caller).to_wire()

    def _create(self, body: ElevationCreate, caller: wire.Identity
                ) -> tuple[int, dict[str, Any]]:
        policy = self.policies.get(body.group)
        if policy is None:
            return _refusal(400, "NoElevationPolicy", f"no ElevationPolicy governs group "
                            f"{body.group}; ask your cluster administrator")
        if not _includes(policy.requesters, caller):
            return _refusal(403, "NotARequester", f"you may not ask for {body.group}")
        duration = body.duration_seconds or policy.max_duration_seconds
        if duration > policy.max_duration_seconds:
            return _refusal(400, "DurationTooLong", f"{body.group} may be held for at most "
                            f"{policy.max_duration_seconds} s")
        now = self.clock.now()
        for other in self.elevations.values():
            if other.requester == caller.username and other.group == body.group \
                    and other.open(now):
                return _refusal(409, "ElevationAlreadyOpen", f"you already have {other.id} "
                                f"open for {body.group}")
        elevation = self.request_elevation(caller.username, body.group, body.reason, duration)
        return 200, self._view(elevation, caller).to_wire()

    def _visible(self, elevation: FakeElevation, caller: wire.Identity) -> bool:
        policy = self.policies.get(elevation.group)
        return elevation.requester == caller.username or (
            policy is not None and _includes(policy.approvers, caller))

    def _view(self, elevation: FakeElevation, caller: wire.Identity) -> ElevationView:
        policy = self.policies[elevation.group]
        now = self.clock.now()
        return ElevationView.model_validate({
            "id": elevation.id, "group": elevation.group, "requester": elevation.requester,
            "reason": elevation.reason, "phase": elevation.phase,
            "durationSeconds": elevation.duration_seconds, "createdAt": elevation.created_at,
            "approvals": [{"user": u, "at": at} for u, at in elevation.approvals],
            "approvalsRequired": policy.approvals_required, "expiresAt": elevation.expires_at,
            "endedBy": elevation.ended_by, "endReason": elevation.end_reason,
            "mayApprove": elevation.phase == "Pending" and caller.username
            != elevation.requester and _includes(policy.approvers, caller),
            "mayRevoke": elevation.open(now)})

    def _login(self, request: wire.TokenCredentialRequest) -> httpx.Response:
        try:
            token = jwt.decode(request.token, self.idp.key, algorithms=["RS256"])
            jwt.JWTClaimsRegistry(now=self.clock.timestamp(),
                                  iss={"essential": True, "value": self.idp.issuer},
                                  aud={"essential": True, "value": self.idp.client_id},
                                  exp={"essential": True}).validate(token.claims)
            ok = not self.reject_all and request.authenticator_name == self.authenticator
        except Exception:
            ok = False
        if not ok:
            self.rejected += 1
            return httpx.Response(200, json=wire.failure_response(request,
                                                                  wire.AUTHENTICATION_FAILED))
        identity, elevated, check, ends = self._elevate(wire.Identity(
            username=f"corp:{token.claims['email']}",
            groups=tuple(f"corp:{g}" for g in token.claims["groups"])))
        expiration = self.clock.now() + dt.timedelta(seconds=self.ttl)
        credential = wire.ClusterCredential(
            token="cluster-" + secrets.token_urlsafe(24),
            expiration=min(expiration, ends) if ends is not None else expiration,
            identity=identity, elevated_groups=elevated, check_elevation=check)
        self.sessions[credential.token] = credential
        self.issued.append(credential.token)
        self.logins.append(identity.username)
        return httpx.Response(200, json=wire.credential_response(request, credential))


def _includes(subjects: tuple[str, ...], caller: wire.Identity) -> bool:
    return caller.username in subjects or any(g in subjects for g in caller.groups)


def _refusal(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, wire.status_error(code, reason, message)


class Router:
    """MockTransport dispatch by host, counting requests so tests can assert "no network"."""

    def __init__(self, **hosts: Callable[[httpx.Request], httpx.Response]) -> None:
        self.hosts = hosts
        self.requests: list[str] = []
        self.clients: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.host}{request.url.path}")
        handler = self.hosts.get(request.url.host)
        if handler is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return handler(request)

    def new_http(self, ca_pem: str | None) -> httpx.Client:
        self.clients.append(ca_pem)
        return httpx.Client(transport=httpx.MockTransport(self))


class FakeKeyring:
    """A keyring backend that, like real ones, refuses entries over `max_length` characters."""

    def __init__(self, max_length: int = 1000) -> None:
        self.max_length = max_length
        self.entries: dict[tuple[str, str], str] = {}
        #: Fail every read and write (deletes still work, as when a keyring locks up).
        self.fail = False
        #: Fail writes only.
        self.fail_writes = False

    def get_password(self, service: str, username: str) -> str | None:
        if self.fail:
            raise RuntimeError("keyring is locked")
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.fail or self.fail_writes:
            raise RuntimeError("keyring is locked")
        if len(password) > self.max_length:
            raise ValueError(f"entry too large ({len(password)} > {self.max_length})")
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.entries:
            from keyring.errors import PasswordDeleteError

            raise PasswordDeleteError(username)
        del self.entries[(service, username)]


@dataclass
class CLIHarness:
    """Everything an in-process CLI test needs, wired together."""

    tmp_path: Path
    clock: FakeClock
    idp: FakeIdP
    concierge: FakeConcierge
    router: Router
    keyring: FakeKeyring
    env: dict[str, str] = field(default_factory=dict)
    #: Username the fake browser logs in as; None means the browser does nothing.
    browser_user: str | None = "alice"
    #: Rewrites the callback URL before the browser "visits" it (to forge state, etc.).
    tamper_callback: Callable[[str], str] | None = None
    opened: list[str] = field(default_factory=list)
    stdin_is_tty: bool = False
    stdout_is_tty: bool = False
    use_keyring: bool = True
    warnings: list[str] = field(default_factory=list)
    last_stdout: str = ""
    last_stderr: str = ""

    @property
    def config_dir(self) -> Path:
        return self.tmp_path / "config" / "pinniped"

    @property
    def credential_cache(self) -> Path:
        return self.config_dir / "credentials.json"

    @property
    def session_file(self) -> Path:
        return self.config_dir / "sessions.json"

    @property
    def key_file(self) -> Path:
        """Where the CLI keeps the key sealing the two files above, in this harness's env."""
        return self.runtime()[0].cache_key().path

    def login_args(self, *extra: str) -> list[str]:
        return ["login", "oidc", "--issuer", self.idp.issuer, "--client-id", self.idp.client_id,
                "--ca-bundle-data", TEST_CA_DATA, "--concierge-endpoint", self.concierge.url,
                "--concierge-ca-bundle-data", TEST_CA_DATA,
                "--concierge-authenticator", self.concierge.authenticator, *extra]

    exec_info = staticmethod(exec_info)

    def open_browser(self, url: str) -> bool:
        self.opened.append(url)
        if self.browser_user is None:
            return True
        callback = self.idp.authorize(url, self.browser_user)
        if self.tamper_callback is not None:
            callback = self.tamper_callback(callback)
        with httpx.Client(timeout=5) as client:  # a real request to the real loopback listener
            client.get(callback)
        return True

    def open_session_store(self, path: Path, key: CacheKey, warn: Callable[[str], None]
                           ) -> SessionStore:
        if self.use_keyring:
            return KeyringSessionStore(self.keyring)
        return FileSessionStore(path, key, warn, reason="test: keyring disabled")

    def runtime(self, env: Mapping[str, str] | None = None) -> tuple[Runtime, io.StringIO,
                                                                   io.StringIO]:
        stdout, stderr = io.StringIO(), io.StringIO()
        full_env = {"HOME": str(self.tmp_path), "XDG_CONFIG_HOME": str(self.tmp_path / "config"),
                    **self.env, **(env or {})}
        runtime = Runtime(env=full_env, stdout=stdout, stderr=stderr,
                          stdin_is_tty=self.stdin_is_tty, stdout_is_tty=self.stdout_is_tty,
                          argv=["/usr/local/bin/pinniped"], platform="linux",
                          now=self.clock.now, sleep=self.clock.sleep,
                          clock=self.clock.monotonic, open_browser=self.open_browser,
                          new_http=self.router.new_http,
                          open_session_store=self.open_session_store)
        return runtime, stdout, stderr

    def run(self, args: list[str], env: Mapping[str, str] | None = None) -> int:
        """Run `pinniped ARGS` in-process; stdout/stderr land in last_stdout/last_stderr."""
        from pinniped_cli.main import main

        runtime, stdout, stderr = self.runtime(env)
        runtime.argv = ["/usr/local/bin/pinniped", *args]
        code = main(args, runtime)
        self.last_stdout, self.last_stderr = stdout.getvalue(), stderr.getvalue()
        return code

    def run_kubeconfig_plugin(self, kubeconfig: Path, env: Mapping[str, str] | None = None
                              ) -> int:
        """Run the plugin exactly as kubectl runs it from `kubeconfig`'s first user."""
        import yaml

        doc = yaml.safe_load(kubeconfig.read_text())
        stanza = doc["users"][0]["user"]["exec"]
        cluster = doc["clusters"][0]["cluster"]
        info = exec_info(api_version=stanza["apiVersion"], server=cluster["server"],
                         ca_data=cluster["certificate-authority-data"])
        return self.run(stanza["args"], {"KUBERNETES_EXEC_INFO": info, **(env or {})})

    def secrets_seen(self) -> list[str]:
        """Every token and password handed out so far (none may ever show in output)."""
        found = [u.password for u in self.idp.users.values()] + self.idp.issued_id_tokens
        found += self.idp.issued_refresh_tokens + self.idp.issued_access_tokens
        found += self.concierge.issued
        assert len(found) > len(self.idp.users), "no token was handed out: nothing to look for"
        return found


def make_harness(tmp_path: Path) -> CLIHarness:
    clock = FakeClock()
    idp = FakeIdP(clock)
    concierge = FakeConcierge(idp, clock)
    router = Router(**{"idp.test": idp.handle, "concierge.test": concierge.handle})
    return CLIHarness(tmp_path=tmp_path, clock=clock, idp=idp, concierge=concierge,
                      router=router, keyring=FakeKeyring())


@pytest.fixture
def h(tmp_path: Path) -> CLIHarness:
    """The in-process CLI harness; a short name, as the tests use it on nearly every line."""
    return make_harness(tmp_path)


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the real CLI (or kubectl) with caches isolated in tmp_path."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "LANG": "C.UTF-8",
    }
    return env


@pytest.fixture
def cli_home(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A private XDG_RUNTIME_DIR (0700, ours), as systemd makes /run/user/UID."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    return directory


#: Credential cache entries pinniped never writes: each must be a miss, in either file.
MALFORMED_ENTRIES: list[object] = [
    "a string",
    {"token": "", "expirationTimestamp": "2030-01-01T13:00:00Z",
     "identity": {"username": "u", "groups": []}},
    {"token": "t", "expirationTimestamp": "tomorrow", "identity": {"username": "u"}},
    {"token": "t", "expirationTimestamp": "2030-01-01T13:00:00Z", "identity": {"groups": []}},
    {"token": "t", "expirationTimestamp": "2030-01-01T13:00:00Z",
     "identity": {"username": "u", "groups": [1, 2]}},
]


# --- end to end: the real CLI, kubectl, apiserver, IdP and concierge ----------------------------


@dataclass
class CLIWorld:
    """One user's machine: an isolated HOME, a kubeconfig path, and the servers it talks to."""

    tmp_path: Path
    env: dict[str, str]
    cluster: Any  # localenv.cluster.LocalCluster
    idp: Any  # localenv.idp.LocalIdP
    concierge: Any  # localenv.concierge.LocalConcierge
    kubeconfig: Path

    @property
    def pinniped_dir(self) -> Path:
        return Path(self.env["XDG_CONFIG_HOME"]) / "pinniped"

    @property
    def credential_cache(self) -> Path:
        """Where the CLI keeps this world's credentials: in its private XDG_RUNTIME_DIR, when
        it has one, else (sealed) in the config directory."""
        return default_credential_cache(self.env)

    @property
    def session_file(self) -> Path:
        return self.pinniped_dir / "sessions.json"

    def password_env(self, username: str) -> dict[str, str]:
        return {"PINNIPED_USERNAME": username,
                "PINNIPED_PASSWORD": self.idp.user(username).password}

    def as_ci_job(self, username: str) -> None:
        """Every command from now on runs as in a CI job logging in as `username`.

        PINNIPED_USERNAME stays set (it is part of the cache keys); the password is
        passed (`password_env`) only where a login is wanted, so that everything
        else must come from the caches.
        """
        self.env["PINNIPED_USERNAME"] = username

    def secrets_in_use(self) -> list[str]:
        """The cached cluster tokens and the session's ID and refresh tokens, opened."""
        found = [str(entry["token"]) for entry in self.cached_credentials().values()]
        for session in self.stored_sessions().values():
            found += [session.id_token, session.refresh_token or ""]
        found = [secret for secret in found if secret]
        assert found, "nothing cached: nothing to look for"
        return found

    def idp_log_count(self, needle: str) -> int:
        """How many lines of the IdP's log hold `needle` (it logs every refused token request)."""
        return sum(needle in line for line in idp_log_lines(self.idp))

    def login_flags(self) -> list[str]:
        return ["--issuer", self.idp.issuer, "--client-id", self.idp.client_id,
                "--ca-bundle", str(self.idp.ca_file),
                "--concierge-endpoint", self.concierge.url,
                "--concierge-ca-bundle", str(self.concierge.ca_file),
                "--concierge-authenticator", self.concierge.authenticator_name]

    def get_kubeconfig_argv(self, *extra: str) -> list[str]:
        return [*pinniped_command(), "get", "kubeconfig", *self.login_flags(),
                "--server", self.cluster.server, "--cluster-ca-bundle", str(self.cluster.ca_file),
                "-o", str(self.kubeconfig), *extra]

    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            timeout: float = 120, stdin: Any = subprocess.DEVNULL
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env={**self.env, **(env or {})}, stdin=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def pinniped(self, *args: str, env: Mapping[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        return self.run([*pinniped_command(), *args], env)

    def get_kubeconfig(self, *extra: str, env: Mapping[str, str] | None = None
                       ) -> subprocess.CompletedProcess[str]:
        result = self.run(self.get_kubeconfig_argv(*extra), env)
        assert result.returncode == 0, result.stderr
        return result

    def kubectl(self, *args: str, env: Mapping[str, str] | None = None,
                stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
        """The real kubectl with the generated kubeconfig; the plugin inherits `env`."""
        return self.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], env,
                        stdin=stdin)

    def kubectl_fails_fast(self, *args: str) -> str:
        """kubectl (no terminal) where only a person could log in: it must fail within
        seconds, saying what to run. Returns its stderr."""
        started = time.monotonic()
        refused = self.kubectl(*args)
        assert refused.returncode != 0
        assert time.monotonic() - started < 20
        assert "Log in from a terminal first by running:" in refused.stderr
        return refused.stderr

    def kubeconfig_user(self) -> dict[str, Any]:
        import yaml

        user = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]
        assert isinstance(user, dict)
        return user

    def cache_key(self) -> CacheKey:
        """The key the CLI seals this world's caches with (it follows the same env)."""
        return CacheKey.for_env(self.env)

    def _credential_cache(self) -> CredentialCache:
        def fail(message: str) -> None:
            raise AssertionError(message)

        return credential_cache_at(self.credential_cache, self.env, fail)

    def cached_credentials(self) -> dict[str, Any]:
        """The credential cache's entries, opened, in their JSON form (token, expiry, identity)."""
        return {key: {"token": c.token, "expirationTimestamp": format_time(c.expiration),
                      "identity": {"username": c.username, "groups": list(c.groups)}}
                for key, c in self._credential_cache().entries().items()}

    def stored_sessions(self) -> dict[str, Session]:
        """The sessions in the fallback file, opened (those that do not open are left out)."""
        store = FileSessionStore(self.session_file, self.cache_key(), lambda _: None)
        keys = json.loads(self.session_file.read_text())["sessions"]
        return {key: session for key in keys if (session := store.load(key)) is not None}

    def expire_cached_credentials(self) -> None:
        """Make every cached credential look expired (the token itself stays valid)."""
        cache = self._credential_cache()
        for key, c in cache.entries().items():
            # `put` prunes what expired before its `now`: pretend it is earlier still.
            cache.put(key, Credential(c.token, EXPIRED, c.username, c.groups),
                      EXPIRED - dt.timedelta(days=1))

    def expire_cached_id_tokens(self) -> None:
        """Make the session's ID token look expired, so only a refresh can get a new one."""
        store = FileSessionStore(self.session_file, self.cache_key(), lambda _: None)
        for key, session in self.stored_sessions().items():
            store.save(key, Session(id_token=session.id_token, id_token_expiry=EXPIRED,
                                    refresh_token=session.refresh_token))


#: A time long past, for making cache entries look expired.
EXPIRED = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def secret_forms(secret: str) -> list[bytes]:
    """`secret` as a file might hold it without really protecting it.

    Plain UTF-8 and JSON-escaped, and each of those in standard or URL-safe
    base64 at all three byte alignments (only the characters that depend on the
    secret alone, so base64 of any JSON around it is caught as well).
    """
    plain = {secret.encode(), json.dumps(secret)[1:-1].encode(),
             json.dumps(secret, ensure_ascii=False)[1:-1].encode()}
    forms = set(plain)
    for raw in plain:
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            for shift in range(3):
                encoded = encode(b"\0" * shift + raw)
                forms.add(encoded[-(-shift * 4 // 3):(shift + len(raw)) * 4 // 3])
    return sorted(f for f in forms if len(f) >= 8)


def assert_not_stored(paths: list[Path], secrets: list[str]) -> None:
    """No file in `paths` holds any of `secrets` in any of its `secret_forms`."""
    assert secrets, "nothing to look for"
    for path in paths:
        data = path.read_bytes()
        for secret in secrets:
            found = [form for form in secret_forms(secret) if form in data]
            assert not found, f"{path} holds secret {fingerprint(secret)} readably"  # not itself


def concierge_logins(concierge: Any) -> int:
    """Successful TokenCredentialRequests in the concierge's audit log."""
    return sum(1 for line in concierge.audit_lines()
               if line.get("request") == "login" and line.get("outcome") == "success")


def idp_log_lines(idp: Any) -> list[str]:
    path = idp.log_path
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def idp_password_grants(idp: Any, username: str) -> int:
    return sum(1 for line in idp_log_lines(idp)
               if "password grant:" in line and f"user={username} " in line)


def grant_group_read(cluster: Any, namespace: str, *groups: str) -> None:
    """A namespace where `groups` may read ConfigMaps, holding one ConfigMap `hello`."""
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("-n", namespace, "create", "configmap", "hello", "--from-literal=who=world")
    cluster.kubectl("-n", namespace, "create", "role", "configmap-reader", "--verb=get,list",
                    "--resource=configmaps")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "configmap-readers",
                    "--role=configmap-reader", *(f"--group={g}" for g in groups))


def new_world(tmp_path: Path, cluster: Any, idp: Any, concierge: Any) -> CLIWorld:
    return CLIWorld(tmp_path=tmp_path, env=isolated_env(tmp_path), cluster=cluster, idp=idp,
                    concierge=concierge, kubeconfig=tmp_path / "kubeconfig")


def team_namespace(cluster: Any, *groups: str) -> str:
    namespace = f"cli-{secrets.token_hex(4)}"
    grant_group_read(cluster, namespace, *groups)
    return namespace


# --- CredentialIssuers, as a concierge publishes them (for `get kubeconfig` discovery) ----------


def credential_issuer(name: str, server: str, ca_data: str,
                      *authenticators: tuple[str, str, str],
                      status: Literal["Success", "Error"] = "Success",
                      message: str = "") -> dict[str, Any]:
    """A CredentialIssuer object; `authenticators` are (name, issuer, audience) triples.

    Built with the API models, so its shape is the one the CLI validates. Defaults are
    left out, as kube-apiserver 1.20 reads an empty string as null and refuses it.
    """
    from pinniped_apis.credential_issuer import (
        CredentialIssuerFrontend,
        CredentialIssuerStatus,
        CredentialIssuerStrategy,
        PublishedAuthenticator,
        TokenCredentialRequestInfo,
    )

    frontend = CredentialIssuerFrontend(token_credential_request_info=TokenCredentialRequestInfo(
        server=server, certificate_authority_data=ca_data)) if status == "Success" else None
    published = CredentialIssuerStatus(
        strategies=(CredentialIssuerStrategy(
            status=status, reason="Listening" if status == "Success" else "Broken",
            message=message, last_update_time=format_time(dt.datetime.now(dt.UTC)),
            frontend=frontend),),
        authenticators=tuple(PublishedAuthenticator(name=n, issuer=i, audience=a, source="config")
                             for n, i, a in authenticators))
    return {"apiVersion": "config.concierge.pinniped.dev/v1alpha1", "kind": "CredentialIssuer",
            "metadata": {"name": name}, "spec": {},
            "status": published.model_dump(mode="json", by_alias=True, exclude_none=True,
                                           exclude_defaults=True)}


# --- a real TLS server answering the elevation state (the cached path's check) -------------------


class StateServer:
    """A loopback HTTPS server answering every request with `answer` (raw bytes), for the
    plugin's stdlib elevation check (`pinniped_cli.elevation_check`).

    `answer` is the whole HTTP response; `drip` sends it one byte per `drip` seconds.
    `requests` keeps each request's head, so tests can see the path and headers sent.
    Use it as a context manager: the serving thread stops and its socket closes on exit.
    """

    def __init__(self, directory: Path) -> None:
        import socket
        import ssl

        from localenv.pki import CA

        ca = CA.create(directory, "state")
        pair = ca.issue(directory, "state-server")
        self.ca_pem = ca.cert_path.read_text()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(pair.cert_path, pair.key_path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.answer = state_answer(200, {"pending": [], "active": []})
        self.drip: float | None = None
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StateServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        import ssl

        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with self._context.wrap_socket(raw, server_side=True) as conn:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    self.requests.append(head)
                    if self.drip is None:
                        conn.sendall(self.answer)
                    else:
                        for byte in self.answer:
                            if self._stop.wait(self.drip):
                                break
                            conn.sendall(bytes([byte]))
            except (OSError, ssl.SSLError):
                raw.close()


def state_answer(status: int, body: object, *, extra_headers: str = "") -> bytes:
    """An HTTP/1.1 response with a JSON body, as the concierge would send it."""
    data = json.dumps(body).encode()
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra_headers}\r\n").encode() + data


class Blackhole:
    """A loopback port whose connections hang: its listener's accept queue is full, so
    Linux drops further SYNs (as a firewall that drops rather than refuses does), and a
    connect waits for its timeout. Use it as a context manager; `port` is the port."""

    def __init__(self) -> None:
        import socket

        self._listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self._fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            time.sleep(0.05)  # let the fillers' handshakes land in the queue
            assert probe.connect_ex(("127.0.0.1", self.port)) != 0, \
                "the full accept queue did not drop the probe's SYN"
        finally:
            probe.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *_: object) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on (a connect is refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
