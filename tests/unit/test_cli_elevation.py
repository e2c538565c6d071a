"""`pinniped elevate` and the plugin's elevation check, in-process against the fakes.

alice (corp:devs) may ask for corp:prod-admins, carol (corp:leads) may approve
it, bob (corp:ops) may do neither. Each has a kubeconfig of their own, made
with the password flow; later commands run without the password, so every
login after the first must come from the OIDC session (no browser, no person).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from localenv.fixtures_cli import TEST_CA_DATA, CLIHarness, FakePolicy, credential_cache_at
from pinniped_apis import wire
from pinniped_apis.elevation import ElevationList, ElevationView
from pinniped_cli.cmd_elevate import _show_list, parse_duration
from pinniped_cli.credential_cache import Credential

GROUP = "corp:prod-admins"
ALICE, BOB, CAROL = "corp:alice@example.com", "corp:bob@example.com", "corp:carol@example.com"


@pytest.fixture(autouse=True)
def _policy(h: CLIHarness) -> None:
    h.concierge.policies[GROUP] = FakePolicy(GROUP, requesters=("corp:devs",),
                                             approvers=("corp:leads",))


def _env(h: CLIHarness, user: str, password: bool = False) -> dict[str, str]:
    env = {"PINNIPED_USERNAME": user}
    if password:
        env["PINNIPED_PASSWORD"] = h.idp.users[user].password
    return env


def _kubeconfig(h: CLIHarness, user: str) -> Path:
    out = h.tmp_path / f"kubeconfig-{user}"
    args = ["get", "kubeconfig", *h.login_args()[2:], "--server", "https://k8s.test:6443",
            "--cluster-ca-bundle-data", TEST_CA_DATA, "-o", str(out)]
    assert h.run(args, _env(h, user, password=True)) == 0, h.last_stderr
    return out


def _elevate(h: CLIHarness, user: str, kubeconfig: Path, *args: str) -> int:
    return h.run(["elevate", *args, "--kubeconfig", str(kubeconfig)], _env(h, user))


def _plugin(h: CLIHarness, user: str, kubeconfig: Path) -> int:
    """The plugin as kubectl runs it from this kubeconfig (no password: caches only)."""
    return h.run_kubeconfig_plugin(kubeconfig, _env(h, user))


def _cached(h: CLIHarness, user: str) -> Credential:
    env = {"HOME": str(h.tmp_path), "XDG_CONFIG_HOME": str(h.tmp_path / "config"),
           **_env(h, user)}
    credentials = credential_cache_at(h.credential_cache, env, print).entries().values()
    (found,) = [c for c in credentials if c.username == f"corp:{user}@example.com"]
    return found


def _as_groups(kubeconfig: Path) -> list[str]:
    groups = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["as-groups"]
    assert isinstance(groups, list)
    return groups


def _no_secrets(h: CLIHarness, plugin: bool = False) -> None:
    """No token in the output (the plugin's stdout is the ExecCredential: its token only)."""
    shown = h.last_stderr if plugin else h.last_stdout + h.last_stderr
    for secret in h.secrets_seen():
        assert secret not in shown


def _requested(h: CLIHarness, alice: Path) -> str:
    assert _elevate(h, "alice", alice, "request", GROUP, "--reason", "incident 42",
                    "--duration", "30m") == 0, h.last_stderr
    request_id = h.last_stdout.strip()
    assert request_id in h.concierge.elevations
    return request_id


# --- the commands ---------------------------------------------------------------------------


def test_request_prints_only_the_id_and_marks_the_cached_credential(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    assert not _cached(h, "alice").check_elevation
    request_id = _requested(h, alice)
    assert h.last_stdout == f"{request_id}\n"
    elevation = h.concierge.elevations[request_id]
    assert (elevation.requester, elevation.group, elevation.reason,
            elevation.duration_seconds) == (ALICE, GROUP, "incident 42", 1800)
    assert f"pinniped elevate approve {request_id}" in h.last_stderr
    cached = _cached(h, "alice")
    assert cached.check_elevation
    assert cached.elevated_groups == ()
    assert h.concierge.logins == [ALICE]  # marked without logging in again
    _no_secrets(h)


def test_request_as_json_is_the_view(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    assert _elevate(h, "alice", alice, "request", GROUP, "--reason", "why", "-o", "json") == 0
    view = ElevationView.from_wire(json.loads(h.last_stdout))
    assert (view.group, view.requester, view.phase, view.duration_seconds) == (
        GROUP, ALICE, "Pending", 3600)  # no --duration: the policy's longest


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("600", 600), ("1h0m5s", 3605)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5x", "1.5h", "-30", "30m1h", "5s", "25h", "1 h"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|from 10 s"):
        parse_duration(text)


@pytest.mark.parametrize(("args", "needle"), [
    (["request", GROUP, "--reason", "a\nb"], "--reason must be plain text"),
    (["request", GROUP, "--reason", " "], "--reason must say why"),
    (["approve", "elev-nothex"], "is not an elevation request id"),
])
def test_usage_errors_cost_no_network(h: CLIHarness, args: list[str], needle: str) -> None:
    alice = _kubeconfig(h, "alice")
    before = len(h.router.requests)
    assert _elevate(h, "alice", alice, *args) == 2
    assert needle in h.last_stderr
    assert len(h.router.requests) == before


def test_a_bad_duration_is_a_usage_error(h: CLIHarness,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    alice = _kubeconfig(h, "alice")
    with pytest.raises(SystemExit) as exited:
        _elevate(h, "alice", alice, "request", GROUP, "--reason", "x", "--duration", "2d")
    assert exited.value.code == 2
    assert "'2d' is not a duration; write it like 90s, 30m" in capsys.readouterr().err


def _refused(h: CLIHarness, user: str, kubeconfig: Path, *args: str) -> str:
    assert _elevate(h, user, kubeconfig, *args) == 1
    assert h.last_stdout == ""
    _no_secrets(h)
    return h.last_stderr


def test_request_refusals_show_the_message_and_what_to_do(h: CLIHarness) -> None:
    alice, bob = _kubeconfig(h, "alice"), _kubeconfig(h, "bob")
    stderr = _refused(h, "alice", alice, "request", "corp:nobody", "--reason", "x")
    assert "no ElevationPolicy governs group corp:nobody; ask your cluster administrator" \
        in stderr
    assert "Check the group, --duration and --reason" in stderr
    stderr = _refused(h, "bob", bob, "request", GROUP, "--reason", "x")
    assert "you may not ask for corp:prod-admins" in stderr
    assert "ElevationPolicy lets you" in stderr
    stderr = _refused(h, "alice", alice, "request", GROUP, "--reason", "x", "--duration", "2h")
    assert "at most 3600 s" in stderr
    request_id = _requested(h, alice)
    stderr = _refused(h, "alice", alice, "request", GROUP, "--reason", "again")
    assert f"you already have {request_id} open" in stderr
    assert "`pinniped elevate list`" in stderr
    assert not _cached(h, "bob").check_elevation  # a refused request marks nothing


def test_too_many_requests_says_when_to_retry(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    h.concierge.elevation_answer = (429, wire.status_error(429, "ElevationLimitReached",
                                                            "you have 5 open requests"))
    stderr = _refused(h, "alice", alice, "request", GROUP, "--reason", "x")
    assert "you have 5 open requests. Retry in a few seconds, or revoke one" in stderr


def test_a_concierge_without_the_api_says_so(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    h.concierge.elevation_answer = (404, {"detail": "Not Found"})
    assert "may not offer temporary elevated access" in _refused(h, "alice", alice, "list")


def test_a_malformed_answer_is_refused(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    h.concierge.elevation_answer = (200, {"items": [{"id": "elev-1"}]})
    assert "answer to the list of elevation requests is malformed" in _refused(
        h, "alice", alice, "list")


def test_a_dead_credential_says_to_log_in_again(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    h.concierge.sessions.clear()  # revoked elsewhere
    assert "Run `pinniped logout`" in _refused(h, "alice", alice, "list")


def test_list_shows_a_table_and_json(h: CLIHarness) -> None:
    alice, carol = _kubeconfig(h, "alice"), _kubeconfig(h, "carol")
    request_id = _requested(h, alice)
    assert _elevate(h, "carol", carol, "list") == 0
    header, row = h.last_stdout.splitlines()
    assert header.split() == ["ID", "GROUP", "REQUESTER", "PHASE", "APPROVALS", "EXPIRES",
                              "REASON"]
    assert row.split() == [request_id, GROUP, ALICE, "Pending", "0/1", "-", "incident", "42"]
    assert _elevate(h, "carol", carol, "list", "-o", "json") == 0
    listing = ElevationList.from_wire(json.loads(h.last_stdout))
    assert [(v.id, v.may_approve) for v in listing.items] == [(request_id, True)]
    bob = _kubeconfig(h, "bob")
    assert _elevate(h, "bob", bob, "list") == 0  # neither his nor his to decide
    assert h.last_stdout == ""
    assert "no elevation requests" in h.last_stderr


def test_approve_refusals_then_an_approval(h: CLIHarness) -> None:
    alice, bob, carol = (_kubeconfig(h, u) for u in ("alice", "bob", "carol"))
    request_id = _requested(h, alice)
    stderr = _refused(h, "alice", alice, "approve", request_id)
    assert "you cannot approve your own request; ask one of the approvers" in stderr
    stderr = _refused(h, "bob", bob, "approve", request_id)
    assert "no elevation request" in stderr  # not visible to bob: not revealed
    assert "Run `pinniped elevate list`" in stderr
    assert _elevate(h, "carol", carol, "approve", request_id) == 0, h.last_stderr
    assert h.last_stdout.startswith(f"approved {request_id}: {GROUP} for {ALICE} is now "
                                    "Approved until ")
    assert len(h.last_stdout.splitlines()) == 1
    stderr = _refused(h, "carol", carol, "approve", request_id)
    assert "you already approved it" in stderr
    assert h.concierge.elevations[request_id].phase == "Approved"


@pytest.mark.parametrize(("code", "reason", "next_step"), [
    (403, "NotAnApprover", "ElevationPolicy lets you"),
    (409, "ElevationEnded", "to see where it stands"),
    (400, "DurationTooLong", "Check the group"),
])
def test_every_refusal_is_its_message_and_a_next_step(h: CLIHarness, code: int, reason: str,
                                                      next_step: str) -> None:
    carol = _kubeconfig(h, "carol")
    h.concierge.elevation_answer = (code, wire.status_error(code, reason, "said \x1b[31mred"))
    stderr = _refused(h, "carol", carol, "approve", "elev-0123456789abcdef")
    assert "said ?[31mred." in stderr  # the concierge's words, control characters cut
    assert next_step in stderr


def test_deny_and_revoke_confirm_in_one_line(h: CLIHarness) -> None:
    alice, carol = _kubeconfig(h, "alice"), _kubeconfig(h, "carol")
    request_id = _requested(h, alice)
    assert _elevate(h, "carol", carol, "deny", request_id, "--reason", "not now") == 0
    assert h.last_stdout == f"denied {request_id}: {GROUP} for {ALICE} is now Denied\n"
    assert h.concierge.elevations[request_id].end_reason == "not now"
    stderr = _refused(h, "alice", alice, "revoke", request_id)
    assert f"{request_id} is Denied" in stderr
    second = _requested(h, alice)
    assert _elevate(h, "alice", alice, "revoke", second, "-o", "json") == 0
    view = ElevationView.from_wire(json.loads(h.last_stdout))
    assert (view.id, view.phase, view.ended_by) == (second, "Revoked", ALICE)


# --- the plugin's check ------------------------------------------------------------------------


def test_approval_is_picked_up_without_a_browser_and_then_served_from_the_cache(
        h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    request_id = _requested(h, alice)
    h.browser_user = None
    # Pending: the state is checked, nothing changed, the cached credential is handed out.
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    first = json.loads(h.last_stdout)["status"]["token"]
    assert (h.concierge.state_checks, h.concierge.logins) == (1, [ALICE])
    h.concierge.approve(request_id, CAROL)
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    token = json.loads(h.last_stdout)["status"]["token"]
    assert token != first
    assert h.concierge.logins == [ALICE, ALICE]
    assert h.concierge.sessions[token].identity.groups == ("corp:devs", GROUP)
    assert _as_groups(alice) == ["corp:devs", GROUP]
    assert "If this command was refused, run it again." in h.last_stderr
    assert h.opened == []
    cached = _cached(h, "alice")
    assert (cached.token, cached.elevated_groups, cached.check_elevation) == (
        token, (GROUP,), True)
    # The same state again: served from the cache, after one more check.
    assert _plugin(h, "alice", alice) == 0
    assert json.loads(h.last_stdout)["status"]["token"] == token
    assert (h.concierge.state_checks, len(h.concierge.logins)) == (3, 2)
    assert h.last_stderr == ""
    _no_secrets(h, plugin=True)


def _elevated(h: CLIHarness) -> tuple[Path, str, str]:
    """alice with an approved elevation picked up: her kubeconfig, the request, the token."""
    alice = _kubeconfig(h, "alice")
    request_id = _requested(h, alice)
    h.concierge.approve(request_id, CAROL)
    assert _plugin(h, "alice", alice) == 0
    assert _as_groups(alice) == ["corp:devs", GROUP]
    return alice, request_id, json.loads(h.last_stdout)["status"]["token"]


def test_the_last_minute_of_an_elevation_is_served_from_the_cache(h: CLIHarness) -> None:
    """The credential ends with the elevation; a login in its last minute would get one
    ending at the same moment, so it is handed out (checked) until seconds before."""
    alice = _kubeconfig(h, "alice")
    assert _elevate(h, "alice", alice, "request", GROUP, "--reason", "quick fix",
                    "--duration", "90s") == 0, h.last_stderr
    h.concierge.approve(h.last_stdout.strip(), CAROL)
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    token = json.loads(h.last_stdout)["status"]["token"]
    assert _cached(h, "alice").expiration == h.clock.now() + dt.timedelta(seconds=90)
    logins, checks = len(h.concierge.logins), h.concierge.state_checks
    h.clock.advance(60)  # 30 s left
    for _ in range(3):
        assert _plugin(h, "alice", alice) == 0, h.last_stderr
        assert json.loads(h.last_stdout)["status"]["token"] == token
        h.clock.advance(5)
    assert len(h.concierge.logins) == logins
    assert h.concierge.state_checks == checks + 3  # each use still checked
    h.clock.advance(12)  # 3 s left: a login (still elevated, to the same end)
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    assert len(h.concierge.logins) == logins + 1


def test_a_credential_only_pending_keeps_the_minute_margin(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    _requested(h, alice)
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    logins = len(h.concierge.logins)
    h.clock.advance(h.concierge.ttl - 30)  # the TTL, not an elevation, ends it
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    assert len(h.concierge.logins) == logins + 1


def test_revocation_that_ended_the_session_logs_in_again_as_the_ordinary_self(
        h: CLIHarness) -> None:
    alice, request_id, token = _elevated(h)
    h.concierge.end(request_id, "Revoked", CAROL)  # the session minted with the group ends
    assert token not in h.concierge.sessions
    assert _plugin(h, "alice", alice) == 0, h.last_stderr  # 401 from the state: a new login
    new = json.loads(h.last_stdout)["status"]["token"]
    assert h.concierge.sessions[new].identity.groups == ("corp:devs",)
    assert _as_groups(alice) == ["corp:devs"]
    assert "run it again" in h.last_stderr
    assert not _cached(h, "alice").check_elevation  # nothing open: no more checks
    checks = h.concierge.state_checks
    assert _plugin(h, "alice", alice) == 0
    assert json.loads(h.last_stdout)["status"]["token"] == new
    assert h.concierge.state_checks == checks
    _no_secrets(h, plugin=True)


def test_a_revocation_seen_before_the_session_ends_logs_in_again_too(h: CLIHarness) -> None:
    alice, request_id, token = _elevated(h)
    h.concierge.elevations[request_id].phase = "Revoked"  # the session still works
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    new = json.loads(h.last_stdout)["status"]["token"]
    assert new != token
    assert "your elevated access changed" in h.last_stderr
    assert _as_groups(alice) == ["corp:devs"]
    assert not _cached(h, "alice").check_elevation


def test_nothing_open_stops_the_checks_without_a_login(h: CLIHarness) -> None:
    alice, carol = _kubeconfig(h, "alice"), _kubeconfig(h, "carol")
    request_id = _requested(h, alice)
    assert _elevate(h, "carol", carol, "deny", request_id) == 0
    logins = len(h.concierge.logins)
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    assert h.concierge.state_checks == 1
    assert json.loads(h.last_stdout)["status"]["token"] == _cached(h, "alice").token
    assert not _cached(h, "alice").check_elevation
    assert len(h.concierge.logins) == logins
    assert _plugin(h, "alice", alice) == 0
    assert h.concierge.state_checks == 1  # no longer asked


@pytest.mark.parametrize("outage", ["503", "no-route"])
def test_an_unreachable_concierge_hands_out_the_cached_credential(
        h: CLIHarness, outage: str) -> None:
    alice = _kubeconfig(h, "alice")
    request_id = _requested(h, alice)
    h.concierge.approve(request_id, CAROL)  # a change it cannot learn of yet
    cached = _cached(h, "alice").token
    if outage == "503":
        h.concierge.unavailable = True
    else:
        del h.router.hosts["concierge.test"]
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    assert json.loads(h.last_stdout)["status"]["token"] == cached
    assert _cached(h, "alice").check_elevation  # still checking
    assert h.last_stderr == ""


def test_a_change_that_cannot_log_in_again_keeps_the_cached_credential(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    request_id = _requested(h, alice)
    h.concierge.approve(request_id, CAROL)
    h.idp.refresh_error = "invalid_grant"  # the session is gone at the IdP
    h.clock.advance(301)  # and so is the cached ID token
    cached = _cached(h, "alice").token
    assert _plugin(h, "alice", alice) == 0, h.last_stderr
    assert json.loads(h.last_stdout)["status"]["token"] == cached
    assert "could not log in again" in h.last_stderr
    assert "using the cached credential" in h.last_stderr
    _no_secrets(h, plugin=True)


def test_a_401_that_cannot_log_in_again_fails_saying_what_to_run(h: CLIHarness) -> None:
    alice, request_id, _ = _elevated(h)
    h.concierge.end(request_id, "Revoked", CAROL)
    h.idp.refresh_error = "invalid_grant"
    h.clock.advance(301)
    assert _plugin(h, "alice", alice) == 1
    assert "Log in from a terminal first by running:" in h.last_stderr
    assert h.last_stdout == ""


def test_an_entry_from_before_has_no_hint_and_is_never_checked(h: CLIHarness) -> None:
    alice = _kubeconfig(h, "alice")
    h.concierge.request_elevation(ALICE, GROUP)  # made elsewhere: this laptop was not told
    assert _plugin(h, "alice", alice) == 0
    assert h.concierge.state_checks == 0


def test_a_list_that_leaves_requests_out_says_so(h: CLIHarness) -> None:
    view = ElevationView.from_wire({
        "id": "elev-0123456789abcdef", "group": GROUP, "requester": ALICE, "reason": "r",
        "phase": "Pending", "durationSeconds": 60, "approvalsRequired": 1})
    rt, stdout, stderr = h.runtime()
    _show_list(ElevationList(items=[view], omitted=7), "text", rt)
    assert len(stdout.getvalue().splitlines()) == 2
    assert "7 older request(s) not shown" in stderr.getvalue()
    rt, _, stderr = h.runtime()
    _show_list(ElevationList(items=[view]), "text", rt)
    assert "not shown" not in stderr.getvalue()
