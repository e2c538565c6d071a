"""`pinniped login oidc` in-process, against a fake IdP and concierge that count every call."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from localenv.fixtures_cli import (
    NO_PASSWORD_ENV,
    PASSWORD_ENV,
    CLIHarness,
    assert_not_stored,
    exec_info,
)
from pinniped_cli.errors import HumanStepRequired, UsageError
from pinniped_cli.execcredential import V1, V1BETA1
from pinniped_cli.login_options import LoginOptions, parse_login_args
from pinniped_cli.oidc import browser_flow
from pinniped_cli.oidc.login import LoginContext, choose_flow


def _login(h: CLIHarness, *extra: str, env: dict[str, str] | None = None,
           exec_info: str | None = None) -> int:
    environment = {"KUBERNETES_EXEC_INFO": exec_info if exec_info is not None else h.exec_info()}
    environment.update(env or {})
    return h.run(h.login_args(*extra), environment)


def _with_a_person(h: CLIHarness, *extra: str) -> int:
    """`_login` as kubectl runs it from a terminal (a person could finish a browser login)."""
    return _login(h, *extra, exec_info=h.exec_info(interactive=True))


def _credential(h: CLIHarness) -> dict[str, object]:
    body = json.loads(h.last_stdout)
    assert body["kind"] == "ExecCredential"
    status = body["status"]
    assert isinstance(status, dict)
    return status


def _assert_no_secrets(h: CLIHarness) -> None:
    for secret in h.secrets_seen():
        assert secret not in h.last_stderr


def _expire_credential(h: CLIHarness) -> None:
    h.clock.advance(601)


def _logged_in_then_expired(h: CLIHarness) -> None:
    """A password login, then time passes: its cluster credential (and, at the fake IdP's
    default TTL, its ID token) expired, so the next call needs the session."""
    assert _login(h, env=PASSWORD_ENV) == 0
    _expire_credential(h)


# --- the cached path and the first login -------------------------------------------------


def test_password_login_prints_only_the_exec_credential(h: CLIHarness) -> None:
    assert _login(h, env=PASSWORD_ENV) == 0
    status = _credential(h)
    assert status["token"] in h.concierge.sessions
    assert h.concierge.logins == ["corp:alice@example.com"]
    assert h.idp.count("password") == 1
    _assert_no_secrets(h)


def test_second_call_is_served_from_the_cache_without_network(h: CLIHarness) -> None:
    _login(h, env=PASSWORD_ENV)
    first = _credential(h)
    requests = len(h.router.requests)
    h.clock.advance(300)
    assert _login(h, env=NO_PASSWORD_ENV) == 0  # no password any more: a login would fail
    assert _credential(h) == first
    assert len(h.router.requests) == requests
    assert h.last_stderr == ""


def test_cache_is_per_cluster(h: CLIHarness) -> None:
    _login(h, env=PASSWORD_ENV)
    _login(h, env=PASSWORD_ENV, exec_info=h.exec_info(server="https://other:6443"))
    assert len(h.concierge.logins) == 2
    # ...but the ID token is reused for the second cluster: one IdP login.
    assert h.idp.count("password") == 1


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_speaks_the_requested_version(h: CLIHarness, version: str) -> None:
    assert _login(h, env=PASSWORD_ENV, exec_info=h.exec_info(api_version=version)) == 0
    body = json.loads(h.last_stdout)
    assert body["apiVersion"] == version
    expiry = dt.datetime.fromisoformat(body["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert expiry == h.clock.now() + dt.timedelta(seconds=h.concierge.ttl)


def test_run_by_hand_at_a_terminal_does_not_print_the_token(h: CLIHarness) -> None:
    h.stdout_is_tty = True
    assert _login(h, env=PASSWORD_ENV, exec_info="") == 0
    assert h.last_stdout == ""
    assert "logged in as corp:alice@example.com" in h.last_stderr
    _assert_no_secrets(h)


# --- sessions: reuse, refresh, and when a new login is needed ---------------------------------


def test_a_new_credential_refreshes_even_while_the_cached_id_token_is_valid(
        h: CLIHarness) -> None:
    """The cached ID token's groups may be stale: each new credential gets a fresh one."""
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    cached = h.idp.issued_id_tokens[-1]
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert len(h.concierge.logins) == 2
    assert h.idp.grants == ["password", "refresh_token"]
    assert h.idp.issued_id_tokens[-1] != cached
    assert h.last_stderr == ""


def test_a_group_change_at_the_idp_reaches_the_next_credential(h: CLIHarness) -> None:
    h.idp.id_token_ttl = 3600  # the ID token from the login is still valid at the next one
    _logged_in_then_expired(h)
    h.idp.users["alice"].groups = ["ops"]
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    token = str(_credential(h)["token"])
    assert h.concierge.sessions[token].identity.groups == ("corp:ops",)
    # ...and a removal too, with no new login in between.
    h.idp.users["alice"].groups = []
    _expire_credential(h)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.concierge.sessions[str(_credential(h)["token"])].identity.groups == ()
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]


def _idp_down(h: CLIHarness, how: str) -> None:
    """Make every request to the fake IdP fail the way `how` says."""

    def handle(request: httpx.Request) -> httpx.Response:
        if how == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if how == "503":
            return httpx.Response(503, text="upstream unavailable")
        if how == "not json":
            return httpx.Response(200, text="<html>captive portal</html>")
        raise AssertionError(how)

    if how in ("temporarily_unavailable", "server_error"):
        h.idp.refresh_error = how
    else:
        h.router.hosts["idp.test"] = handle


IDP_OUTAGES = ["connect", "503", "not json", "temporarily_unavailable", "server_error"]


@pytest.mark.parametrize("how", IDP_OUTAGES)
def test_an_idp_outage_falls_back_to_the_valid_cached_id_token(h: CLIHarness,
                                                               how: str) -> None:
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    cached = h.idp.issued_id_tokens[-1]
    _idp_down(h, how)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert len(h.concierge.logins) == 2  # kubectl keeps working through the outage
    assert "could not refresh your session at the identity provider" in h.last_stderr
    assert "using the ID token of your last login, valid until" in h.last_stderr
    assert h.idp.issued_id_tokens[-1] == cached  # nothing new was issued
    _assert_no_secrets(h)


@pytest.mark.parametrize("how", IDP_OUTAGES)
def test_an_idp_outage_with_an_expired_id_token_keeps_the_session(h: CLIHarness,
                                                                   how: str) -> None:
    _logged_in_then_expired(h)  # the ID token (300 s) is gone too
    _idp_down(h, how)
    assert _login(h, env=PASSWORD_ENV) == 1
    assert "Your login session was kept" in h.last_stderr
    assert "internal error" not in h.last_stderr
    assert len(h.concierge.logins) == 1
    assert "password" not in h.idp.grants[1:]  # no new login over a kept session
    _assert_no_secrets(h)


def test_a_session_the_idp_ended_never_falls_back_to_the_cached_id_token(
        h: CLIHarness) -> None:
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    h.idp.refresh_error = "invalid_grant"  # e.g. the person was disabled at the IdP
    assert _login(h, env=NO_PASSWORD_ENV) == 1
    assert "session at the identity provider has ended (invalid_grant" in h.last_stderr
    assert "Log in from a terminal first" in h.last_stderr
    assert h.concierge.logins == ["corp:alice@example.com"]  # the valid cached token went nowhere
    assert _login(h, env=NO_PASSWORD_ENV) == 1  # and it is gone, not kept for later
    assert h.idp.grants == ["password", "refresh_token"]


def test_a_refresh_without_an_id_token_keeps_the_valid_cached_one(h: CLIHarness) -> None:
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    h.idp.refresh_without_id_token = True
    cached = h.idp.issued_id_tokens[-1]
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.idp.issued_id_tokens[-1] == cached
    assert len(h.concierge.logins) == 2
    # The rotated refresh token was kept with it: the next refresh is not a replay.
    _expire_credential(h)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]


def test_without_a_refresh_token_the_valid_cached_id_token_is_used(h: CLIHarness) -> None:
    h.idp.issue_refresh_tokens = False
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert len(h.concierge.logins) == 2
    assert h.idp.grants == ["password"]  # nothing fresher could be had without a person


def test_expired_id_token_is_refreshed_without_a_new_login(h: CLIHarness) -> None:
    _logged_in_then_expired(h)  # the ID token (300 s) is gone too
    assert _login(h, env=NO_PASSWORD_ENV) == 0  # no terminal, no password: only a refresh works
    assert h.idp.grants == ["password", "refresh_token"]
    assert h.opened == []
    _credential(h)
    # The rotated refresh token was stored: the next refresh works too.
    _expire_credential(h)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]
    _assert_no_secrets(h)


def test_refused_refresh_falls_back_to_a_new_login(h: CLIHarness) -> None:
    _logged_in_then_expired(h)
    h.idp.refresh_error = "invalid_grant"
    assert _login(h, env=PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token", "password"]
    assert "session at the identity provider has ended (invalid_grant" in h.last_stderr
    _assert_no_secrets(h)


@pytest.mark.parametrize("error", ["temporarily_unavailable", "server_error", "invalid_client"])
def test_other_refresh_errors_keep_the_session(h: CLIHarness, error: str) -> None:
    _logged_in_then_expired(h)
    h.idp.refresh_error = error
    assert _login(h, env=PASSWORD_ENV) == 1
    assert f"refused the session refresh ({error}" in h.last_stderr
    assert "Your login session was kept" in h.last_stderr
    assert "internal error" not in h.last_stderr
    assert h.idp.grants == ["password", "refresh_token"]  # no new login over a kept session
    h.idp.refresh_error = None
    assert _login(h, env=NO_PASSWORD_ENV) == 0  # the kept session refreshes once the IdP is back
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]
    _assert_no_secrets(h)


def test_a_rotated_refresh_token_is_kept_even_when_its_id_token_is_refused(
        h: CLIHarness) -> None:
    _logged_in_then_expired(h)
    h.idp.claim_overrides = {"aud": "someone-else"}  # the refresh rotates, its ID token is bad
    assert _login(h, env=NO_PASSWORD_ENV) == 1
    assert "answer to the session refresh was refused" in h.last_stderr
    assert "Log in from a terminal first" in h.last_stderr  # it fell back to a new login
    assert h.concierge.logins == ["corp:alice@example.com"]  # the bad token went nowhere
    h.idp.claim_overrides = {}
    # The new refresh token was saved, so this is a refresh, not a replay of the spent one
    # (which the IdP would answer with invalid_grant).
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]
    _assert_no_secrets(h)


def test_a_refresh_without_an_id_token_falls_back_to_a_new_login(h: CLIHarness) -> None:
    _logged_in_then_expired(h)
    h.idp.refresh_without_id_token = True
    assert _login(h, env=PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token", "password"]
    assert "has no ID token" in h.last_stderr
    _credential(h)


def test_logins_with_different_credential_caches_refresh_the_session_in_turn(
        h: CLIHarness, tmp_path: Path) -> None:
    """Two credential caches, one session: its rotating refresh token is never spent twice.

    The second waits for the first's refresh and refreshes with the token that one got; had
    it replayed the spent one, the IdP would end the session and (no password) it would fail.
    """
    from pinniped_cli.main import main

    _logged_in_then_expired(h)
    first_refresh, release = threading.Event(), threading.Event()

    def hold_the_first_refresh(grant: str) -> None:
        if grant == "refresh_token" and not first_refresh.is_set():
            first_refresh.set()
            release.wait(10)

    h.idp.before_token = hold_the_first_refresh
    results: dict[str, tuple[int, str]] = {}

    def kubectl(name: str) -> None:
        runtime, _, stderr = h.runtime({**NO_PASSWORD_ENV, "KUBERNETES_EXEC_INFO": h.exec_info()})
        code = main(h.login_args("--credential-cache", str(tmp_path / f"{name}.json")), runtime)
        results[name] = (code, stderr.getvalue())

    first = threading.Thread(target=kubectl, args=("first",))
    first.start()
    assert first_refresh.wait(10)
    second = threading.Thread(target=kubectl, args=("second",))
    second.start()
    deadline = time.monotonic() + 2  # time enough for the second to reach the IdP, unless held
    while time.monotonic() < deadline and h.idp.count("refresh_token") < 2:
        time.sleep(0.05)
    release.set()
    first.join(10)
    second.join(10)
    assert results["first"][0] == 0, results["first"][1]
    assert results["second"][0] == 0, results["second"][1]
    assert h.idp.grants == ["password", "refresh_token", "refresh_token"]
    assert "waiting for another pinniped login" in results["second"][1]
    assert "has ended" not in results["second"][1]


def test_ci_jobs_sharing_a_home_do_not_share_credentials(h: CLIHarness) -> None:
    assert _login(h, env=PASSWORD_ENV) == 0
    alice = _credential(h)["token"]
    bob_env = {"PINNIPED_USERNAME": "bob", "PINNIPED_PASSWORD": "bob-pw"}
    assert _login(h, env=bob_env) == 0
    bob = _credential(h)["token"]
    assert bob != alice
    assert h.concierge.sessions[str(bob)].identity.username == "corp:bob@example.com"
    assert h.idp.grants == ["password", "password"]  # not alice's session either
    # Each job keeps being served its own, from the cache.
    requests = len(h.router.requests)
    assert _login(h, env={"PINNIPED_USERNAME": "bob"}) == 0
    assert _credential(h)["token"] == bob
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert _credential(h)["token"] == alice
    assert len(h.router.requests) == requests
    _assert_no_secrets(h)


def test_the_password_user_is_hashed_into_the_cache_keys() -> None:
    options = _options(env={"PINNIPED_USERNAME": "bob"})
    assert "bob" not in json.dumps(options.identity_fields())
    assert options.identity_fields() != _options().identity_fields()
    assert _options("browser", env={"PINNIPED_USERNAME": "bob"}).identity_fields() \
        == _options("browser").identity_fields()  # a browser login is not bob's


def test_a_session_file_that_cannot_be_written_is_explained(h: CLIHarness,
                                                            tmp_path: Path) -> None:
    h.use_keyring = False
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert _login(h, "--session-cache", str(blocker / "sessions.json"), env=PASSWORD_ENV) == 0
    assert f"could not write the session cache {blocker / 'sessions.json'}" in h.last_stderr
    assert "internal error" not in h.last_stderr
    _credential(h)  # the login itself worked


def test_cache_files_hold_only_ciphertext_through_login_and_refresh(h: CLIHarness) -> None:
    h.use_keyring = False  # a headless server: the session goes to the file
    assert _login(h, env=PASSWORD_ENV) == 0
    _expire_credential(h)
    assert _login(h, env=NO_PASSWORD_ENV) == 0
    assert h.idp.grants == ["password", "refresh_token"]  # the sealed session was usable
    assert h.key_file.parent != h.config_dir
    stored = [h.credential_cache, h.session_file]
    assert all(path.exists() for path in stored)
    assert_not_stored(stored, h.secrets_seen())  # ID, refresh and cluster tokens


def test_a_lost_key_means_logging_in_again_never_a_crash(h: CLIHarness) -> None:
    h.use_keyring = False
    assert _login(h, env=PASSWORD_ENV) == 0
    h.key_file.unlink()  # the runtime directory was emptied (logout, reboot)
    assert _login(h, env=NO_PASSWORD_ENV) == 1  # no terminal, and the sealed session won't open
    assert "cannot be opened with the cache key" in h.last_stderr
    assert "Log in from a terminal first" in h.last_stderr
    assert "Traceback" not in h.last_stderr
    assert _login(h, env=PASSWORD_ENV) == 0
    requests = len(h.router.requests)
    assert _login(h, env=NO_PASSWORD_ENV) == 0  # fresh entries, under the new key, serve it
    assert len(h.router.requests) == requests
    _assert_no_secrets(h)


def test_non_interactive_without_a_session_fails_fast(h: CLIHarness) -> None:
    h.browser_user = None
    assert _login(h) == 1
    assert h.last_stdout == ""
    assert "without a terminal" in h.last_stderr
    command = h.last_stderr.split("running:\n\n", 1)[1].split("\n", 1)[0].strip()
    assert command.startswith("/usr/local/bin/pinniped login oidc --issuer https://idp.test")
    assert h.opened == []
    assert not any(g in h.idp.grants for g in ("password", "authorization_code"))
    assert h.clock.sleeps == []


def test_concierge_refusing_a_cached_id_token_gets_one_fresh_token(
        h: CLIHarness) -> None:
    h.idp.issue_refresh_tokens = False  # so the cached ID token is what is sent first
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    # Keys rotated: the concierge no longer accepts the cached ID token.
    h.idp.key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
    assert _login(h, env=PASSWORD_ENV) == 0
    assert h.concierge.rejected == 1
    assert h.idp.grants == ["password", "password"]
    assert "did not accept the cached ID token" in h.last_stderr


def test_concierge_refusing_the_fallback_id_token_during_an_idp_outage_is_explained(
        h: CLIHarness) -> None:
    h.idp.id_token_ttl = 3600
    _logged_in_then_expired(h)
    h.idp.key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
    _idp_down(h, "connect")
    assert _login(h, env=PASSWORD_ENV) == 1
    assert h.concierge.rejected == 1  # one try with the cached token, none without the IdP
    assert "did not accept the cached ID token" in h.last_stderr
    assert "Your login session was kept" in h.last_stderr
    _assert_no_secrets(h)


def test_concierge_refusal_is_explained_without_the_token(h: CLIHarness) -> None:
    h.concierge.reject_all = True
    assert _login(h, env=PASSWORD_ENV) == 1
    assert h.last_stdout == ""
    assert "concierge refused your ID token (sha256:" in h.last_stderr
    assert "authenticator 'corp'" in h.last_stderr
    _assert_no_secrets(h)


def test_concierge_unavailable_says_when_to_retry(h: CLIHarness) -> None:
    h.concierge.unavailable = True
    assert _login(h, env=PASSWORD_ENV) == 1
    assert "temporarily unavailable" in h.last_stderr
    assert "retry in 7 seconds" in h.last_stderr


def test_wrong_password_says_which_variables_to_check(h: CLIHarness) -> None:
    assert _login(h, env={"PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": "nope"}) == 1
    assert "PINNIPED_USERNAME and PINNIPED_PASSWORD" in h.last_stderr
    assert "nope" not in h.last_stderr


def test_password_flow_without_variables_is_a_usage_error(h: CLIHarness) -> None:
    assert _login(h, "--flow", "password") == 2
    assert "needs PINNIPED_USERNAME and PINNIPED_PASSWORD" in h.last_stderr


# --- ID token verification happens before anything is sent ------------------------------------


@pytest.mark.parametrize(("override", "needle"), [
    ({"aud": "someone-else"}, "audience"),
    ({"iss": "https://evil.test"}, "issuer"),
    ({"exp": 1}, "expired"),
    ({"iat": 4_000_000_000}, "issue time"),
    ({"nbf": 4_000_000_000}, "not valid yet"),
    ({"aud": ["pinniped-cli", "other"]}, "azp"),
    ({"sub": ""}, "subject"),
])
def test_bad_id_tokens_never_reach_the_concierge(h: CLIHarness,
                                                 override: dict[str, object],
                                                 needle: str) -> None:
    h.idp.claim_overrides = override
    assert _login(h, env=PASSWORD_ENV) == 1
    assert needle in h.last_stderr
    assert h.concierge.logins == []
    assert h.concierge.rejected == 0
    assert not h.session_file.exists()
    assert h.keyring.entries == {}


def test_id_token_signed_by_an_unknown_key_is_refused(h: CLIHarness) -> None:
    # Same kid as the published key, different key: only the signature check can catch it.
    h.idp.signing_key = RSAKey.generate_key(2048, parameters={"alg": "RS256",
                                                              "kid": str(h.idp.key.kid)})
    assert _login(h, env=PASSWORD_ENV) == 1
    assert "signature does not verify" in h.last_stderr
    assert h.concierge.logins == []


# --- the browser flow ------------------------------------------------------------------------


def test_browser_login_with_pkce_state_and_nonce(h: CLIHarness) -> None:
    h.env["BROWSER"] = "fake"
    assert _login(h, exec_info=h.exec_info(interactive=True)) == 0
    assert h.idp.grants == ["authorization_code"]
    assert len(h.opened) == 1
    url = h.opened[0]
    assert "code_challenge_method=S256" in url
    assert "nonce=" in url
    assert "state=" in url
    assert url in h.last_stderr  # printed too, for when no browser opens
    assert re.search(r"redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A\d+%2Fcallback", url)
    _credential(h)
    _assert_no_secrets(h)


def test_browser_listen_port_is_honoured(h: CLIHarness) -> None:
    from localenv.procs import free_port

    port = free_port()
    assert _with_a_person(h, "--flow", "browser", "--listen-port", str(port)) == 0
    assert f"127.0.0.1%3A{port}%2Fcallback" in h.opened[0]


def _forged(url: str) -> str:
    return re.sub(r"state=[^&]+", "state=forged", url)


def test_browser_state_mismatch_is_refused_and_the_login_waits_on(h: CLIHarness) -> None:
    answers: list[int] = []

    def forged_first(url: str) -> str:
        with httpx.Client(timeout=5) as client:
            answers.append(client.get(_forged(url)).status_code)  # a stale tab, or an attacker
            no_state = url.split("?", 1)[0] + "?code=stolen&error=access_denied"
            answers.append(client.get(no_state).status_code)
        return url  # then the real redirect

    h.tamper_callback = forged_first
    assert _with_a_person(h, "--flow", "browser") == 0
    assert answers == [403, 403]
    assert h.idp.grants == ["authorization_code"]
    _credential(h)


def test_only_forged_callbacks_time_out_unexchanged(h: CLIHarness) -> None:
    h.tamper_callback = _forged
    assert _with_a_person(h, "--flow", "browser", "--login-timeout", "1") == 1
    assert "no browser login finished within 1s" in h.last_stderr
    assert "state that does not match" in h.last_stderr
    assert "authorization_code" not in h.idp.grants  # the code was never exchanged


def test_an_idle_connection_does_not_block_the_callback(h: CLIHarness) -> None:
    """Anything may connect to the loopback port; an idle connection must not stall the login."""
    idle: list[socket.socket] = []

    def connect_idly_first(url: str) -> str:
        port = urlsplit(url).port
        assert port is not None
        idle.append(socket.create_connection(("127.0.0.1", port)))  # and send nothing
        return url

    h.tamper_callback = connect_idly_first
    started = time.monotonic()
    try:
        assert _with_a_person(h, "--flow", "browser", "--login-timeout", "20") == 0
    finally:
        for sock in idle:
            sock.close()
    assert len(idle) == 1
    assert time.monotonic() - started < browser_flow.CONNECTION_TIMEOUT
    _credential(h)


def test_closing_the_listener_is_bounded() -> None:
    listener = browser_flow.CallbackListener(0, "state")  # never started: nothing will stop it
    started = time.monotonic()
    listener.close()
    assert time.monotonic() - started < 1


def test_browser_nonce_mismatch_is_refused(h: CLIHarness) -> None:
    h.idp.claim_overrides = {"nonce": "replayed"}
    assert _with_a_person(h, "--flow", "browser") == 1
    assert "nonce does not match" in h.last_stderr
    assert h.concierge.logins == []


def test_browser_missing_nonce_is_refused(h: CLIHarness) -> None:
    h.idp.claim_overrides = {"nonce": None}
    assert _with_a_person(h, "--flow", "browser") == 1
    assert "nonce does not match" in h.last_stderr


def test_idp_error_with_a_forged_state_does_not_end_the_login(h: CLIHarness) -> None:
    h.tamper_callback = lambda url: _forged(url).split("?")[0] + "?state=forged&error=x"
    assert _with_a_person(h, "--flow", "browser", "--login-timeout", "1") == 1
    assert "ended the login" not in h.last_stderr
    assert "no browser login finished" in h.last_stderr


def test_idp_error_in_the_callback_is_reported(h: CLIHarness) -> None:
    h.tamper_callback = lambda url: url.split("?")[0] + "?" + re.search(
        r"state=[^&]+", url).group(0) + "&error=access_denied&error_description=nope"  # type: ignore[union-attr]
    assert _with_a_person(h, "--flow", "browser") == 1
    assert "ended the login with access_denied: nope" in h.last_stderr


def test_browser_timeout_says_what_to_do(h: CLIHarness) -> None:
    h.browser_user = None  # the browser opens, nobody logs in
    assert _with_a_person(h, "--flow", "browser", "--login-timeout", "0.5") == 1
    assert "no browser login finished within 0.5s" in h.last_stderr
    assert "--flow device" in h.last_stderr


def test_skip_browser_only_prints_the_link(h: CLIHarness) -> None:
    assert _with_a_person(h, "--flow", "browser", "--skip-browser", "--login-timeout", "0.3") == 1
    assert h.opened == []
    assert "Log in by visiting this link" in h.last_stderr


# --- the device flow -------------------------------------------------------------------------


def test_device_login_polls_and_honours_slow_down(h: CLIHarness) -> None:
    h.idp.device_answers = ["authorization_pending", "slow_down", "authorization_pending"]
    h.idp.device_approver = "bob"
    assert _with_a_person(h, "--flow", "device") == 0
    assert h.concierge.logins == ["corp:bob@example.com"]
    assert h.clock.sleeps == [2, 2, 7, 7]  # interval 2, then +5 after slow_down
    assert "https://idp.test/device" in h.last_stderr
    assert re.search(r"enter the code: \d{8}", h.last_stderr)


def test_device_interval_defaults_to_five_seconds(h: CLIHarness) -> None:
    h.idp.device_interval = None
    h.idp.device_approver = "bob"
    assert _with_a_person(h, "--flow", "device") == 0
    assert h.clock.sleeps == [5]


@pytest.mark.parametrize(("answer", "needle"), [
    ("access_denied", "denied"), ("expired_token", "expired")])
def test_device_login_ends_clearly(h: CLIHarness, answer: str, needle: str) -> None:
    h.idp.device_answers = [answer]
    assert _with_a_person(h, "--flow", "device") == 1
    assert needle in h.last_stderr
    assert "Run the command again" in h.last_stderr


def test_device_login_never_sleeps_past_the_timeout(h: CLIHarness) -> None:
    h.idp.device_interval = 4
    assert _with_a_person(h, "--flow", "device", "--login-timeout", "10") == 1
    assert h.clock.sleeps == [4, 4, 2]  # the last wait is cut short, and polled at the end
    assert h.idp.count("urn:ietf:params:oauth:grant-type:device_code") == 3
    assert "did not finish within 10s" in h.last_stderr


def test_device_login_times_out(h: CLIHarness) -> None:
    assert _with_a_person(h, "--flow", "device", "--login-timeout", "10") == 1
    assert "did not finish within 10s" in h.last_stderr


def test_interactive_without_a_display_uses_the_device_flow(h: CLIHarness) -> None:
    h.idp.device_approver = "alice"
    assert _login(h, exec_info=h.exec_info(interactive=True)) == 0
    assert h.idp.grants[-1].endswith("device_code")
    assert h.opened == []


# --- flow selection ----------------------------------------------------------------------


def _options(flow: str | None = None, env: dict[str, str] | None = None) -> LoginOptions:
    args = ["--issuer", "https://i.test", "--client-id", "c", "--concierge-endpoint",
            "https://c.test", "--concierge-authenticator", "a"]
    if flow:
        args += ["--flow", flow]
    return parse_login_args(args, {"HOME": "/nonexistent", **(env or {})})


#: Who runs the login: kubectl (saying whether a person is at its terminal), or a person
#: by hand (with or without a terminal on stdin).
KUBECTL_TTY, KUBECTL_NO_TTY = "kubectl, interactive", "kubectl, not interactive"
HAND_TTY, HAND_NO_TTY = "by hand at a terminal", "by hand without a terminal"
#: What choose_flow refuses with, by the case it is in.
KUBECTL_REFUSES, HAND_REFUSES = "refused (kubectl)", "refused (by hand)"


def _ctx(env: dict[str, str], who: str) -> LoginContext:
    """A LoginContext as `who` runs pinniped: kubectl always sets KUBERNETES_EXEC_INFO."""
    if who in (KUBECTL_TTY, KUBECTL_NO_TTY):
        env = {**env, "KUBERNETES_EXEC_INFO": exec_info(interactive=who == KUBECTL_TTY)}
    return LoginContext(env=env, interactive=who in (KUBECTL_TTY, HAND_TTY), say=print,
                        now=lambda: dt.datetime.now(dt.UTC), open_browser=lambda u: True,
                        sleep=lambda s: None, clock=lambda: 0.0, command_hint="pinniped login")


def _assert_kubectl_refusal(message: str) -> None:
    """kubectl's case: it names kubectl and spec.interactive, and the command to run by hand."""
    assert "kubectl ran pinniped without a terminal" in message
    assert "spec.interactive: false" in message
    assert "Log in from a terminal first by running:\n\n    pinniped login\n\nthen retry" \
        in message


def _assert_by_hand_refusal(message: str) -> None:
    """A person ran it: kubectl is not involved, so the message never mentions it."""
    assert "kubectl" not in message.lower()
    assert "no browser can open here" in message
    assert "stdin is not a terminal" in message
    assert "--flow device" in message


@pytest.mark.parametrize(("flow", "env", "who", "platform", "expected"), [
    (None, PASSWORD_ENV, KUBECTL_NO_TTY, "linux", "password"),
    (None, PASSWORD_ENV, KUBECTL_TTY, "linux", "password"),
    (None, {"BROWSER": "x"}, KUBECTL_TTY, "linux", "browser"),
    (None, {"DISPLAY": ":0"}, KUBECTL_TTY, "linux", "browser"),
    (None, {"WAYLAND_DISPLAY": "w"}, KUBECTL_TTY, "linux", "browser"),
    (None, {}, KUBECTL_TTY, "darwin", "browser"),
    (None, {}, KUBECTL_TTY, "linux", "device"),
    (None, {"DISPLAY": ":0"}, KUBECTL_NO_TTY, "linux", KUBECTL_REFUSES),
    (None, {}, KUBECTL_NO_TTY, "linux", KUBECTL_REFUSES),
    ("device", {"DISPLAY": ":0"}, KUBECTL_TTY, "linux", "device"),
    ("device", PASSWORD_ENV, KUBECTL_TTY, "linux", "device"),
    ("browser", {}, KUBECTL_TTY, "linux", "browser"),
    # kubectl without a terminal: an explicit --flow works only if nobody is needed.
    ("password", {}, KUBECTL_NO_TTY, "linux", "password"),
    ("browser", {"BROWSER": "x"}, KUBECTL_NO_TTY, "linux", "browser"),
    ("browser", {}, KUBECTL_NO_TTY, "darwin", "browser"),
    ("browser", {}, KUBECTL_NO_TTY, "linux", KUBECTL_REFUSES),
    ("device", {"DISPLAY": ":0"}, KUBECTL_NO_TTY, "linux", KUBECTL_REFUSES),
    ("device", {}, KUBECTL_NO_TTY, "linux", KUBECTL_REFUSES),
    # By hand, the device flow needs no terminal: someone reads its link and code on stderr.
    ("device", {}, HAND_NO_TTY, "linux", "device"),
    ("device", {}, HAND_TTY, "linux", "device"),
    ("device", {"DISPLAY": ":0"}, HAND_NO_TTY, "linux", "device"),
    (None, {}, HAND_NO_TTY, "linux", "device"),
    (None, {}, HAND_TTY, "linux", "device"),
    (None, {"DISPLAY": ":0"}, HAND_NO_TTY, "linux", "browser"),
    (None, {"DISPLAY": ":0"}, HAND_TTY, "linux", "browser"),
    (None, PASSWORD_ENV, HAND_NO_TTY, "linux", "password"),
    ("password", {}, HAND_NO_TTY, "linux", "password"),
    # ...and the browser flow needs a terminal or a browser that opens here.
    ("browser", {}, HAND_TTY, "linux", "browser"),
    ("browser", {"BROWSER": "x"}, HAND_NO_TTY, "linux", "browser"),
    ("browser", {}, HAND_NO_TTY, "darwin", "browser"),
    ("browser", {}, HAND_NO_TTY, "linux", HAND_REFUSES),
])
def test_flow_selection(flow: str | None, env: dict[str, str], who: str,
                        platform: str, expected: str) -> None:
    ctx = _ctx(env, who)
    if expected in (KUBECTL_REFUSES, HAND_REFUSES):
        with pytest.raises(HumanStepRequired) as refused:
            choose_flow(_options(flow), ctx, platform)
        check = _assert_kubectl_refusal if expected == KUBECTL_REFUSES else _assert_by_hand_refusal
        check(str(refused.value))
    else:
        assert choose_flow(_options(flow), ctx, platform) == expected


def test_an_empty_exec_info_means_by_hand() -> None:
    """read_exec_info takes an empty KUBERNETES_EXEC_INFO for a run by hand; so does the login."""
    ctx = _ctx({"KUBERNETES_EXEC_INFO": " "}, HAND_NO_TTY)
    assert not ctx.from_kubectl
    assert choose_flow(_options("device"), ctx, "linux") == "device"


@pytest.mark.parametrize("flow", ["device", "browser"])
def test_a_flow_written_into_the_kubeconfig_still_fails_fast_without_a_person(
        h: CLIHarness, flow: str) -> None:
    h.browser_user = None
    assert _login(h, "--flow", flow) == 1
    assert "kubectl ran pinniped without a terminal" in h.last_stderr
    command = h.last_stderr.split("running:\n\n", 1)[1].split("\n", 1)[0]
    assert command.strip().endswith(f"--flow {flow}")
    assert h.opened == []
    assert not any("/device/auth" in r for r in h.router.requests)
    assert h.clock.sleeps == []


# --- run by hand, without a terminal (a CI log, `ssh host cmd`, an editor's task runner) ------


def _by_hand(h: CLIHarness, *extra: str, env: dict[str, str] | None = None) -> int:
    """`pinniped login oidc` typed by a person: no KUBERNETES_EXEC_INFO, stdin no terminal."""
    assert not h.stdin_is_tty
    return _login(h, *extra, env=env, exec_info="")


@pytest.mark.parametrize("extra", [("--flow", "device"), ()])
def test_by_hand_a_device_login_needs_no_terminal(h: CLIHarness, extra: tuple[str, ...]) -> None:
    h.idp.device_answers = ["authorization_pending"]
    h.idp.device_approver = "bob"
    assert _by_hand(h, *extra) == 0
    assert h.concierge.logins == ["corp:bob@example.com"]
    assert re.search(r"open https://idp\.test/device on any device and enter the code: \d{8}",
                     h.last_stderr)
    assert "kubectl" not in h.last_stderr.lower()
    assert _credential(h)["token"] in h.concierge.sessions  # stdout is no terminal: printed
    _assert_no_secrets(h)


def test_by_hand_a_browser_login_without_terminal_or_browser_fails_fast(h: CLIHarness) -> None:
    assert _by_hand(h, "--flow", "browser") == 1
    assert h.last_stdout == ""
    message = h.last_stderr.removeprefix("pinniped: error: ")
    _assert_by_hand_refusal(message)
    assert h.opened == []
    assert h.router.requests == []  # not even the IdP's discovery: it failed before starting
    assert h.clock.sleeps == []


def test_by_hand_a_browser_login_without_terminal_goes_ahead_where_a_browser_opens(
        h: CLIHarness) -> None:
    assert _by_hand(h, "--flow", "browser", env={"BROWSER": "firefox"}) == 0
    assert len(h.opened) == 1
    assert h.idp.grants == ["authorization_code"]
    assert "kubectl" not in h.last_stderr.lower()


@pytest.mark.parametrize(("args", "needle"), [
    (["--scopes", "email,groups"], "must include openid"),
    (["--issuer", "http://insecure.test"], "https://"),
])
def test_bad_options_are_usage_errors(h: CLIHarness, args: list[str],
                                      needle: str) -> None:
    assert h.run([*h.login_args(), *args]) == 2
    assert needle in h.last_stderr


def test_unreadable_ca_bundle_is_named(h: CLIHarness, tmp_path: Path) -> None:
    assert _login(h, "--ca-bundle", str(tmp_path / "missing.pem"), env=PASSWORD_ENV) == 2
    assert "cannot read --ca-bundle" in h.last_stderr


def test_missing_required_flag_exits_with_usage() -> None:
    from pinniped_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["login", "oidc", "--issuer", "https://x"])
    assert exc.value.code == 2


def test_usage_error_type() -> None:
    assert UsageError("x").exit_code == 2


def test_text_from_outside_cannot_drive_the_terminal(h: CLIHarness) -> None:
    h.tamper_callback = lambda url: url.split("?")[0] + "?" + re.search(  # type: ignore[union-attr]
        r"state=[^&]+", url).group(0) + "&error=x%1B%5D0%3Bpwned%07&error_description=%1B%5B2J"
    assert _with_a_person(h, "--flow", "browser") == 1
    assert "ended the login with x?]0;pwned?" in h.last_stderr
    assert "\x1b" not in h.last_stderr
    assert "\x07" not in h.last_stderr
