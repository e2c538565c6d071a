"""A real OpenID Connect provider on loopback, and drivers that log in to it without a human.

The server is npm `oidc-provider` wrapped by hack/idp/server.mjs; this module
writes its config (TLS from our throwaway CA, signing keys, clients, users,
lifetimes), runs it under procs.ManagedProcess and walks its login pages with
httpx, so tests exercise every grant the CLI uses against the real thing.

Secrets stay out of logs and messages: tokens and passwords appear only as a
short sha256 prefix (`fingerprint`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from localenv import leak_sentinel, pki, procs

log = logging.getLogger(__name__)

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
OIDC_PROVIDER_VERSION = "9.13.3"
DEFAULT_CLIENT_ID = "pinniped-cli"
ES256_CLIENT_ID = "pinniped-cli-es256"
# A native client's loopback redirect URI matches any port (RFC 8252 7.3).
LOOPBACK_REDIRECT_URI = "http://127.0.0.1/callback"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPES: tuple[str, ...] = ("openid", "offline_access", "email", "groups", "profile")
SIGNING_ALGS = ("RS256", "ES256")
_MAX_PAGES = 20
_HTTP_TIMEOUT = 15.0
_AUTO_SUBMIT = "document.forms[0].submit()"


def fingerprint(secret: str) -> str:
    """A short, stable stand-in for a secret in logs: enough to correlate, useless to replay."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


class IdPError(RuntimeError):
    """The IdP refused or could not finish something; the message says what and where."""


class LoginRejected(IdPError):
    """The login form came back with an error: wrong username or password."""


class TokenError(IdPError):
    """The token or device endpoint answered with an OAuth error (e.g. invalid_grant)."""

    def __init__(self, what: str, status: int, error: str, description: str) -> None:
        super().__init__(f"{what}: HTTP {status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a pytest test class, despite the name

    username: str
    password: str
    email: str
    groups: list[str]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_users() -> list[TestUser]:
    """alice (devs, readers), bob (ops) and carol (no groups), with fresh passwords each time."""

    def password(name: str) -> str:
        return f"{name}-{secrets.token_urlsafe(12)}"

    users = [
        TestUser("alice", password("alice"), "alice@example.com", ["devs", "readers"]),
        TestUser("bob", password("bob"), "bob@example.com", ["ops"]),
        TestUser("carol", password("carol"), "carol@example.com", []),
    ]
    for user in users:
        leak_sentinel.register(leak_sentinel.PASSWORD, user.password)
    return users


def default_clients() -> list[dict[str, Any]]:
    """Public native clients like the pinniped CLI: one signing ID tokens with RS256, one ES256."""
    base = {
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "redirect_uris": [LOOPBACK_REDIRECT_URI],
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT, "password"],
    }
    return [
        {**base, "client_id": DEFAULT_CLIENT_ID, "id_token_signed_response_alg": "RS256"},
        {**base, "client_id": ES256_CLIENT_ID, "id_token_signed_response_alg": "ES256"},
    ]


def new_signing_key(alg: str) -> dict[str, Any]:
    """A private JWK for `alg` with kid = its RFC 7638 thumbprint."""
    params: KeyParameters = {"alg": alg, "use": "sig"}
    key: RSAKey | ECKey
    if alg == "RS256":
        key = RSAKey.generate_key(2048, parameters=params, auto_kid=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=params, auto_kid=True)
    else:
        raise ValueError(f"unsupported signing alg {alg!r}; use one of {', '.join(SIGNING_ALGS)}")
    return dict(key.as_dict(private=True))


def ensure_node_modules(idp_dir: Path = IDP_DIR) -> None:
    """Install the pinned oidc-provider with `npm ci` once; later runs find it in place."""
    marker = idp_dir / "node_modules" / "oidc-provider" / "package.json"

    def installed() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return bool(json.loads(marker.read_text())["version"] == OIDC_PROVIDER_VERSION)
        return False

    if installed():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise IdPError("node and npm are needed for the test IdP: install Node.js 20 or later "
                       "(e.g. `apt-get install nodejs npm`)")
    lock_path = Path(tempfile.gettempdir()) / (
        "pinniped-idp-npm-" + hashlib.sha256(str(idp_dir).encode()).hexdigest()[:12] + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not run `npm ci` in one dir at once
        if installed():
            return
        log.info("installing oidc-provider %s with npm ci in %s", OIDC_PROVIDER_VERSION, idp_dir)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=idp_dir, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0 or not installed():
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise IdPError(f"`npm ci` in {idp_dir} failed (exit {result.returncode}); "
                           f"check network access to the npm registry.\n{tail}")


# --- walking the IdP's pages ---------------------------------------------------------------------


@dataclass
class Form:
    id: str
    action: str
    method: str
    fields: dict[str, str]


class _PageParser(HTMLParser):
    """Just enough HTML for our own pages: the body's data-page, the forms and their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.page = ""
        self.forms: list[Form] = []
        self.texts: list[str] = []
        self.error = ""
        self._form: Form | None = None
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.page = attr.get("data-page", "")
        elif tag == "form":
            self._form = Form(attr.get("id", ""), attr.get("action", ""),
                              attr.get("method", "get").upper(), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and attr.get("name"):
            self._form.fields[attr["name"]] = attr.get("value", "")
        elif attr.get("id") == "error":
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "p":
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(data.strip())
            if self._in_error:
                self.error += data.strip()


@dataclass
class Page:
    name: str
    forms: list[Form]
    error: str
    text: str

    @classmethod
    def parse(cls, html: str) -> Page:
        parser = _PageParser()
        parser.feed(html)
        return cls(parser.page, parser.forms, parser.error, " ".join(parser.texts))

    def form(self, form_id: str) -> Form:
        for form in self.forms:
            if form.id == form_id:
                return form
        raise IdPError(f"the IdP's {self.name or 'unknown'} page has no form {form_id!r}")


def walk_login(http: httpx.Client, start_url: str, *, issuer: str, username: str, password: str,
               user_code: str | None = None) -> str | None:
    """Act as the person at the browser, starting from `start_url` on the IdP.

    Follows redirects and fills the login, device-code and confirmation forms.
    Returns the first URL outside the IdP (the client's loopback callback)
    without fetching it, or None when the device flow's success page shows.
    """
    origin = _origin(issuer)
    url, method, data = start_url, "GET", None
    posted: set[str] = set()
    for _ in range(_MAX_PAGES):
        if _origin(url) != origin:
            return url
        response = http.request(method, url, data=data)
        where = urlsplit(str(response.url)).path
        if response.is_redirect:
            url = urljoin(str(response.url), response.headers["location"])
            method, data = "GET", None
            continue
        page = Page.parse(response.text)
        if page.name == "login":
            if "login" in posted:
                raise LoginRejected(f"the IdP rejected the login for {username!r}: "
                                    f"{page.error or 'no reason shown'}")
            form = page.form("login")
            fields = {**form.fields, "username": username, "password": password}
        elif page.name == "device-input":
            if "device-input" in posted:
                raise IdPError("the IdP did not accept the device user code: "
                               f"{page.error or page.text}")
            form = page.form("op.deviceInputForm")
            fields = dict(form.fields)
            if user_code is not None:
                fields["user_code"] = user_code
            if not fields.get("user_code"):
                raise IdPError("the IdP asks for a device user code but none was given")
        elif page.name == "device-confirm":
            form = page.form("op.deviceConfirmForm")
            fields = dict(form.fields)
        elif page.name == "device-success":
            return None
        elif not page.name and len(page.forms) == 1 and _AUTO_SUBMIT in response.text:
            # oidc-provider's self-submitting form (e.g. a prefilled user code):
            # do what the page's script would do in a browser.
            form = page.forms[0]
            fields = dict(form.fields)
            if _origin(urljoin(str(response.url), form.action)) != origin:
                raise IdPError("the IdP answered with response_mode=form_post; use query")
        elif page.name == "error":
            raise IdPError(f"the IdP showed an error at {where} "
                           f"(HTTP {response.status_code}): {page.text}")
        else:
            raise IdPError(f"unexpected answer from the IdP at {where}: "
                           f"HTTP {response.status_code} {response.headers.get('content-type')}")
        posted.add(page.name)
        url, method, data = urljoin(str(response.url), form.action), form.method, fields
    raise IdPError(f"the login did not finish within {_MAX_PAGES} pages")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


# --- the server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lifetimes:
    id_token: int
    access_token: int
    refresh_token: int
    device_code: int


class LocalIdP:
    """One running oidc-provider on https://127.0.0.1:PORT, with its users and keys."""

    def __init__(self, *, workdir: Path, ca: pki.CA, tls: pki.CertPair,
                 users: Sequence[TestUser], port: int, lifetimes: Lifetimes,
                 device_poll_interval: int, clients: Sequence[Mapping[str, Any]]) -> None:
        self.workdir = workdir
        self.ca_file = ca.cert_path
        self.port = port
        self.issuer = f"https://127.0.0.1:{port}"
        self.client_id = DEFAULT_CLIENT_ID
        self.es256_client_id = ES256_CLIENT_ID
        self.lifetimes = lifetimes
        self.device_poll_interval = device_poll_interval
        self.clients = [dict(c) for c in clients]
        self.users = {u.username: u for u in users}
        self._tls_pair = tls
        self._keys = [new_signing_key(alg) for alg in SIGNING_ALGS]
        self._cookie_keys = [secrets.token_urlsafe(32)]
        self._proc: procs.ManagedProcess | None = None
        self._discovery: dict[str, Any] | None = None
        self._tls = tls_context(self.ca_file)

    @classmethod
    def start(cls, workdir: Path, ca: pki.CA, *, users: Sequence[TestUser] | None = None,
              id_token_ttl: int = 300, access_token_ttl: int = 300,
              refresh_token_ttl: int = 3600, device_code_ttl: int = 300,
              device_poll_interval: int = 1, port: int | None = None,
              clients: Sequence[Mapping[str, Any]] | None = None) -> LocalIdP:
        ensure_node_modules()
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.chmod(0o700)
        idp = cls(
            workdir=workdir, ca=ca, tls=ca.issue(workdir, "idp"),
            users=default_users() if users is None else users, port=port or procs.free_port(),
            lifetimes=Lifetimes(id_token_ttl, access_token_ttl, refresh_token_ttl,
                                device_code_ttl),
            device_poll_interval=device_poll_interval,
            clients=default_clients() if clients is None else clients)
        for user in idp.users.values():
            leak_sentinel.register(leak_sentinel.PASSWORD, user.password)
        idp._write_users()
        idp._launch()
        return idp

    # -- process ----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.json"

    @property
    def users_path(self) -> Path:
        return self.workdir / "users.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "idp.log"

    def _write_config(self) -> None:
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "tls": {"cert": str(self._tls_pair.cert_path), "key": str(self._tls_pair.key_path)},
            "usersFile": str(self.users_path),
            "clients": self.clients,
            "jwks": {"keys": self._keys},
            "cookieKeys": self._cookie_keys,
            "ttl": {
                "idToken": self.lifetimes.id_token,
                "accessToken": self.lifetimes.access_token,
                "refreshToken": self.lifetimes.refresh_token,
                "deviceCode": self.lifetimes.device_code,
            },
            "deviceFlowInterval": self.device_poll_interval,
        }
        pki.write_private(self.config_path, json.dumps(config, indent=2).encode())

    def _write_users(self) -> None:
        """Replace the users file in one rename, so the server never reads half of it."""
        data = json.dumps({"users": [u.as_json() for u in self.users.values()]}, indent=2)
        tmp = self.users_path.with_name(f".users.{secrets.token_hex(4)}.json")
        pki.write_private(tmp, data.encode())
        tmp.replace(self.users_path)

    def _launch(self) -> None:
        self._write_config()
        self._discovery = None
        self._proc = procs.ManagedProcess(
            "idp", ["node", "server.mjs", str(self.config_path)], self.log_path, cwd=IDP_DIR)
        expected = {k["kid"] for k in self._keys}

        def ready() -> bool:
            with self._http() as http:
                meta = http.get(f"{self.issuer}/.well-known/openid-configuration").json()
                published = {k["kid"] for k in http.get(meta["jwks_uri"]).json()["keys"]}
            return bool(meta["issuer"] == self.issuer and published == expected)

        try:
            procs.wait_for(ready, timeout=30, what=f"IdP at {self.issuer}", proc=self._proc)
        except BaseException:
            self.stop()
            raise
        log.info("IdP ready at %s (pid %d, signing kids %s)", self.issuer, self._proc.pid,
                 ", ".join(self.signing_kids.values()))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> LocalIdP:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def rotate_keys(self, alg: str = "RS256") -> str:
        """Restart with a new `alg` key first (it signs from now on), the old ones still published.

        The server keeps sessions and refresh tokens in memory, so they do not
        survive the restart; ID tokens signed before it still verify.
        Returns the new key's kid.
        """
        key = new_signing_key(alg)
        self._keys.insert(0, key)
        self.stop()
        self._launch()
        return str(key["kid"])

    @property
    def signing_kids(self) -> dict[str, str]:
        """alg -> kid of the key that signs new tokens (the first of each alg)."""
        kids: dict[str, str] = {}
        for key in self._keys:
            kids.setdefault(str(key["alg"]), str(key["kid"]))
        return kids

    # -- users ------------------------------------------------------------------------------------

    def user(self, username: str) -> TestUser:
        try:
            return self.users[username]
        except KeyError:
            raise KeyError(f"no test user {username!r}; known: {', '.join(self.users)}") from None

    def set_groups(self, username: str, groups: Sequence[str]) -> None:
        """Takes effect at the user's next login or refresh: the server re-reads its file."""
        self.users[username] = dataclasses.replace(self.user(username), groups=list(groups))
        self._write_users()

    def add_user(self, user: TestUser) -> None:
        leak_sentinel.register(leak_sentinel.PASSWORD, user.password)
        self.users[user.username] = user
        self._write_users()

    # -- HTTP -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _http(self) -> Iterator[httpx.Client]:
        with httpx.Client(verify=self._tls, timeout=_HTTP_TIMEOUT, trust_env=False) as http:
            yield http

    @property
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            with self._http() as http:
                response = http.get(f"{self.issuer}/.well-known/openid-configuration")
                response.raise_for_status()
                self._discovery = dict(response.json())
        return self._discovery

    def jwks(self) -> dict[str, Any]:
        with self._http() as http:
            response = http.get(self.discovery["jwks_uri"])
            response.raise_for_status()
            return dict(response.json())

    def _post(self, endpoint: str, what: str, data: Mapping[str, str]) -> dict[str, Any]:
        with self._http() as http:
            response = http.post(self.discovery[endpoint], data=dict(data))
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            raise TokenError(what, response.status_code, str(body.get("error", "unknown_error")),
                             str(body.get("error_description", response.text[:200])))
        leak_sentinel.register_token_response(body)
        return body

    # -- grants -----------------------------------------------------------------------------------

    def password_grant(self, username: str, password: str | None = None, *,
                       client_id: str | None = None,
                       scopes: Sequence[str] = DEFAULT_SCOPES) -> dict[str, Any]:
        """The CI login: the token response for `username` (password defaults to the user's own)."""
        secret = self.user(username).password if password is None else password
        leak_sentinel.register(leak_sentinel.PASSWORD, secret)
        return self._post("token_endpoint", f"password grant for {username!r}", {
            "grant_type": "password", "client_id": client_id or self.client_id,
            "username": username, "password": secret, "scope": " ".join(scopes)})

    def refresh(self, refresh_token: str, client_id: str | None = None) -> dict[str, Any]:
        return self._post("token_endpoint", f"refresh with {fingerprint(refresh_token)}", {
            "grant_type": "refresh_token", "client_id": client_id or self.client_id,
            "refresh_token": refresh_token})

    def browser_login(self, authorize_url: str, username: str, password: str | None = None) -> str:
        """Log in through the IdP's pages from a full authorize URL, as a browser would.

        Returns the URL the IdP finally redirects to (the client's loopback
        callback with code and state, or with an error) without fetching it.
        """
        secret = self.user(username).password if password is None else password
        with self._http() as http:
            final = walk_login(http, authorize_url, issuer=self.issuer, username=username,
                               password=secret)
        if final is None:
            raise IdPError("the browser login ended on the device success page, not a redirect")
        return final

    def authorize_url(self, *, redirect_uri: str, code_challenge: str, state: str,
                      nonce: str | None = None, client_id: str | None = None,
                      scopes: Sequence[str] = DEFAULT_SCOPES) -> str:
        params = {
            "response_type": "code", "client_id": client_id or self.client_id,
            "redirect_uri": redirect_uri, "scope": " ".join(scopes), "state": state,
            "code_challenge": code_challenge, "code_challenge_method": "S256",
        }
        if nonce is not None:
            params["nonce"] = nonce
        return f"{self.discovery['authorization_endpoint']}?{urlencode(params)}"

    def exchange_code(self, code: str, *, redirect_uri: str, code_verifier: str,
                      client_id: str | None = None) -> dict[str, Any]:
        return self._post("token_endpoint", "authorization code exchange", {
            "grant_type": "authorization_code", "client_id": client_id or self.client_id,
            "code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier})

    def authorization_code_login(self, username: str, password: str | None = None, *,
                                 client_id: str | None = None,
                                 scopes: Sequence[str] = DEFAULT_SCOPES,
                                 redirect_port: int | None = None) -> dict[str, Any]:
        """The whole browser flow with PKCE S256 and a loopback redirect; returns the tokens."""
        redirect_uri = f"http://127.0.0.1:{redirect_port or procs.free_port()}/callback"
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        url = self.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge, state=state,
                                 nonce=secrets.token_urlsafe(16), client_id=client_id,
                                 scopes=scopes)
        callback = parse_callback(self.browser_login(url, username, password), state)
        return self.exchange_code(callback, redirect_uri=redirect_uri, code_verifier=verifier,
                                  client_id=client_id)

    def device_authorization(self, *, client_id: str | None = None,
                             scopes: Sequence[str] = DEFAULT_SCOPES) -> dict[str, Any]:
        """Start the device flow: device_code, user_code, verification URIs, interval."""
        return self._post("device_authorization_endpoint", "device authorization", {
            "client_id": client_id or self.client_id, "scope": " ".join(scopes)})

    def poll_device_token(self, device_code: str, client_id: str | None = None) -> dict[str, Any]:
        """One poll; raises TokenError (error 'authorization_pending' until approved)."""
        return self._post("token_endpoint", "device code poll", {
            "grant_type": DEVICE_CODE_GRANT, "client_id": client_id or self.client_id,
            "device_code": device_code})

    def approve_device(self, user_code_or_complete_uri: str, username: str,
                       password: str | None = None) -> None:
        """Enter the user code (or open verification_uri_complete), log in and confirm."""
        secret = self.user(username).password if password is None else password
        if user_code_or_complete_uri.startswith("https://"):
            start, user_code = user_code_or_complete_uri, None
        else:
            start, user_code = f"{self.issuer}/device", user_code_or_complete_uri
        with self._http() as http:
            final = walk_login(http, start, issuer=self.issuer, username=username, password=secret,
                               user_code=user_code)
        if final is not None:
            raise IdPError("the device approval left the IdP instead of showing its success page")

    def device_login(self, username: str, password: str | None = None, *,
                     client_id: str | None = None,
                     scopes: Sequence[str] = DEFAULT_SCOPES) -> dict[str, Any]:
        """The whole device flow: start, approve as `username`, poll until tokens arrive."""
        started = self.device_authorization(client_id=client_id, scopes=scopes)
        self.approve_device(str(started["verification_uri_complete"]), username, password)
        deadline = time.monotonic() + float(started["expires_in"])
        interval = float(started.get("interval", 5))
        while True:
            try:
                return self.poll_device_token(str(started["device_code"]), client_id)
            except TokenError as err:
                if err.error not in ("authorization_pending", "slow_down") \
                        or time.monotonic() > deadline:
                    raise
            time.sleep(interval)

    # -- the BROWSER stand-in ---------------------------------------------------------------------

    def browser_env(self, username: str, password: str | None = None) -> dict[str, str]:
        """Environment that makes Python's webbrowser log in as `username` with fake_browser.py."""
        script = Path(__file__).with_name("fake_browser.py")
        return {
            "BROWSER": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} %s",
            "FAKE_BROWSER_USERNAME": username,
            "FAKE_BROWSER_PASSWORD": self.user(username).password if password is None else password,
            "FAKE_BROWSER_CA": str(self.ca_file),
        }


def parse_callback(callback_url: str, expected_state: str) -> str:
    """The code from a loopback callback URL, after checking state; IdP errors become IdPError."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
    if "error" in query:
        raise IdPError(f"the IdP redirected with {query['error']}: "
                       f"{query.get('error_description', '')}")
    if not secrets.compare_digest(query.get("state", ""), expected_state):
        raise IdPError("the callback's state does not match the request's")
    if "code" not in query:
        raise IdPError("the callback carries no authorization code")
    return query["code"]


__all__ = [
    "DEFAULT_CLIENT_ID", "DEFAULT_SCOPES", "ES256_CLIENT_ID", "IdPError", "LocalIdP",
    "LoginRejected", "TestUser", "TokenError", "default_users", "fingerprint", "walk_login",
]
