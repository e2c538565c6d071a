"""The plugin's stdlib elevation check, against a real loopback TLS server.

`elevation_check` reads the state by hand (pydantic would cost the cached path
more than all of it), so these tests hold its reading to the model's on a set
of documents, and its HTTP to a real TLS server: the request it sends, the
bounds in size and time, and what each answer makes the cached path do.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localenv import SOURCE_PATH
from localenv.fixtures_cli import (
    Blackhole,
    StateServer,
    closed_port,
    credential_cache_at,
    exec_info,
    state_answer,
)
from pinniped_apis import wire
from pinniped_apis.constants import ELEVATION_STATE_PATH
from pinniped_apis.elevation import ElevationState
from pinniped_cli import cached_path, elevation_check
from pinniped_cli.cluster_credential import credential_key
from pinniped_cli.credential_cache import Credential
from pinniped_cli.execcredential import read_exec_info
from pinniped_cli.login_options import parse_login_args

GROUP = "corp:prod-admins"
EXPIRES = "2030-01-02T03:04:05Z"
ACTIVE = {"id": "elev-0123456789abcdef", "group": GROUP, "expiresAt": EXPIRES}


def test_the_path_is_the_apis() -> None:
    assert elevation_check.STATE_PATH == ELEVATION_STATE_PATH


DOCUMENTS: list[object] = [
    {}, {"pending": [], "active": []}, {"pending": ["elev-1"]}, {"active": [ACTIVE]},
    {"pending": ["a", "b"], "active": [ACTIVE, {**ACTIVE, "group": "corp:other"}]},
    {"active": [ACTIVE], "newerField": {"x": 1}}, {"active": [{**ACTIVE, "extra": True}]},
    [], "state", None, 7, {"pending": None}, {"active": None}, {"pending": "elev-1"},
    {"pending": [""]}, {"pending": ["x" * 253]}, {"pending": ["x" * 254]}, {"pending": [7]},
    {"pending": ["\ud800"]}, {"pending": ["é" * 253]}, {"active": ["elev-1"]},
    {"active": [{"id": "elev-1", "group": GROUP}]}, {"active": [{**ACTIVE, "group": ""}]},
    {"active": [{**ACTIVE, "id": None}]}, {"active": [{**ACTIVE, "group": ["g"]}]},
    {"active": [{**ACTIVE, "expiresAt": "tomorrow"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-02-30T00:00:00Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2028-02-29T00:00:00Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2100-02-29T00:00:00Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-01-02T24:00:00Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-01-02T03:04:60Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-01-02T03:04:05+02:00"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-01-02T03:04:05.123Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "2030-01-02T03:04:05"}]},
    {"active": [{**ACTIVE, "expiresAt": "0000-01-02T03:04:05Z"}]},
    {"active": [{**ACTIVE, "expiresAt": "\uff12\uff10\uff13\uff10-01-02T03:04:05Z"}]},
    {"active": [{**ACTIVE, "expiresAt": 1893553445}]},
    {"pending": ["p"] * 10_000}, {"pending": ["p"] * 10_001},
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_hand_parser_reads_as_the_model_does(document: object) -> None:
    try:
        state = ElevationState.from_wire(document)
        expected: object = (tuple(state.pending), tuple(a.group for a in state.active))
    except wire.WireError:
        expected = None
    assert elevation_check.parse_state(document) == expected


@pytest.mark.parametrize(("status", "document", "elevated", "expected"), [
    (200, {"pending": ["elev-1"]}, (), elevation_check.SAME),
    (200, {"active": [ACTIVE]}, (GROUP,), elevation_check.SAME),
    (200, {"active": [ACTIVE]}, (), elevation_check.CHANGED),  # approved
    (200, {"pending": ["elev-1"]}, (GROUP,), elevation_check.CHANGED),  # revoked, one pending
    (200, {}, (GROUP,), elevation_check.CHANGED),  # ended
    (200, {}, (), elevation_check.DONE),
    (401, {"kind": "Status"}, (GROUP,), elevation_check.UNAUTHORIZED),
    (503, {}, (), elevation_check.UNREACHABLE),
    (404, {}, (), elevation_check.UNREACHABLE),
    (200, {"pending": None}, (), elevation_check.UNREACHABLE),
])
def test_outcomes(status: int, document: object, elevated: tuple[str, ...],
                  expected: str) -> None:
    assert elevation_check.outcome(status, document, elevated) == expected


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StateServer]:
    with StateServer(tmp_path / "pki") as running:
        yield running


def test_the_request_carries_the_bearer_to_the_state_path(server: StateServer) -> None:
    server.answer = state_answer(200, {"active": [ACTIVE]})
    assert elevation_check.check(server.url + "/prefix/", server.ca_pem, "tok-123",
                                 (GROUP,)) == elevation_check.SAME
    (head,) = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == f"GET /prefix{ELEVATION_STATE_PATH} HTTP/1.0"
    assert "Authorization: Bearer tok-123" in lines
    assert f"Host: 127.0.0.1:{server.port}" in lines


@pytest.mark.parametrize(("answer", "expected"), [
    (state_answer(401, wire.status_error(401, "Unauthorized", "no")),
     elevation_check.UNAUTHORIZED),
    (state_answer(200, {}), elevation_check.DONE),
    (state_answer(200, {"pending": ["x" * 200] * 400}), elevation_check.UNREACHABLE),  # >64 KiB
    (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{}", elevation_check.UNREACHABLE),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     elevation_check.UNREACHABLE),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n{}", elevation_check.UNREACHABLE),
    (b"SSH-2.0-OpenSSH\r\n\r\n", elevation_check.UNREACHABLE),
    (b"HTTP/1.1 200 OK\r\n\r\n{\"pending\": [\"elev-1\"]}", elevation_check.SAME),  # to close
])
def test_answers(server: StateServer, answer: bytes, expected: str) -> None:
    server.answer = answer
    assert elevation_check.check(server.url, server.ca_pem, "t", ()) == expected


def test_a_dripping_server_is_left_at_the_deadline(server: StateServer) -> None:
    server.answer = state_answer(200, {"pending": ["elev-1"]})
    server.drip = 0.05  # each byte in time for a per-read timeout, never for the whole
    started = time.monotonic()
    assert elevation_check.check(server.url, server.ca_pem, "t", (), deadline=0.5) \
        == elevation_check.UNREACHABLE
    assert time.monotonic() - started < 1.5


def test_an_untrusted_certificate_or_no_server_is_unreachable(server: StateServer,
                                                              tmp_path: Path) -> None:
    from localenv.pki import CA

    other = CA.create(tmp_path / "other", "other").cert_path.read_text()
    assert elevation_check.check(server.url, other, "t", ()) == elevation_check.UNREACHABLE
    assert elevation_check.check(server.url, None, "t", ()) == elevation_check.UNREACHABLE
    assert server.requests == []  # the token never left before the TLS check
    with StateServer(tmp_path / "gone") as gone:
        url = gone.url
    assert elevation_check.check(url, server.ca_pem, "t", ()) == elevation_check.UNREACHABLE


def _resolves_to(monkeypatch: pytest.MonkeyPatch, *ports: int) -> None:
    """Make every name resolve to these loopback ports, in this order (a name with several
    addresses, as DNS may give)."""
    def getaddrinfo(host: str, port: object, *_: object, **__: object) -> list[object]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)) for p in ports]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_addresses_that_drop_connections_cost_one_deadline_in_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Blackhole() as one, Blackhole() as two, Blackhole() as three:
        _resolves_to(monkeypatch, one.port, two.port, three.port)
        started = time.monotonic()
        assert elevation_check.check("https://localhost", None, "t", (), deadline=0.6) \
            == elevation_check.UNREACHABLE
        assert time.monotonic() - started < 0.9  # not 0.6 s for each address


def test_a_dead_first_address_leaves_the_next_one_time_to_answer(
        server: StateServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.answer = state_answer(200, {"pending": ["elev-1"]})
    with Blackhole() as dead:
        _resolves_to(monkeypatch, dead.port, server.port)
        started = time.monotonic()
        assert elevation_check.check(f"https://localhost:{server.port}", server.ca_pem, "t",
                                     (), deadline=2.0) == elevation_check.SAME
        assert time.monotonic() - started < 2.0
    assert len(server.requests) == 1


def test_no_more_than_two_addresses_are_tried(server: StateServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _resolves_to(monkeypatch, closed_port(), closed_port(), server.port)
    assert elevation_check.check(f"https://localhost:{server.port}", server.ca_pem, "t", ()) \
        == elevation_check.UNREACHABLE
    assert server.requests == []


V4, V6 = socket.AF_INET, socket.AF_INET6


@pytest.mark.parametrize(("families", "expected"), [
    ([], []), ([(V4, 1)], [0]), ([(V4, 1), (V4, 1)], [0]), ([(V4, 1), (V4, 2), (V4, 3)], [0, 1]),
    ([(V6, 1), (V6, 2), (V4, 3), (V4, 4)], [0, 2]), ([(V4, 1), (V6, 2)], [0, 1]),
])
def test_the_addresses_tried_are_the_first_and_one_of_the_other_family(
        families: list[tuple[int, int]], expected: list[int]) -> None:
    infos = [(family, socket.SOCK_STREAM, 6, "", ("addr", port)) for family, port in families]
    assert elevation_check.candidates(infos) == [infos[i] for i in expected]


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("https://c.test", ("c.test", 443, "")), ("https://c.test:8443/", ("c.test", 8443, "")),
    ("https://[::1]:9/x/y/", ("::1", 9, "/x/y")), ("https://c.test/p", ("c.test", 443, "/p")),
])
def test_endpoints(endpoint: str, expected: tuple[str, int, str]) -> None:
    assert elevation_check.split_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["http://c.test", "https://", "https://u@c.test",
                                      "https://c.test:0", "https://c.test:x", "https://c?q"])
def test_odd_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"https|host|URL|invalid literal"):
        elevation_check.split_endpoint(endpoint)


# --- the cached path ---------------------------------------------------------------------------


def _login_args(server: StateServer) -> list[str]:
    return ["--issuer", "https://idp.test", "--client-id", "pinniped-cli",
            "--concierge-endpoint", server.url, "--concierge-authenticator", "corp",
            "--concierge-ca-bundle-data", base64.b64encode(server.ca_pem.encode()).decode()]


def _env(tmp_path: Path) -> dict[str, str]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_RUNTIME_DIR": str(run), "KUBERNETES_EXEC_INFO": exec_info()}


def seed(env: dict[str, str], args: list[str], elevated: tuple[str, ...] | None,
         lasts: dt.timedelta = dt.timedelta(minutes=10)) -> str:
    """Cache a credential for `login oidc ARGS` lasting `lasts` from now, with the hint
    unless `elevated` is None."""
    options = parse_login_args(args, env)
    cluster = read_exec_info(exec_info(), stdin_is_tty=False).cluster
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert options.credential_cache is not None
    credential_cache_at(options.credential_cache, env, print).put(
        credential_key(options, cluster),
        Credential("cached-token", now + lasts, "corp:alice@example.com",
                   ("corp:devs", *(elevated or ())), elevated_groups=elevated or (),
                   check_elevation=elevated is not None), now)
    return "cached-token"


@pytest.mark.parametrize(("answer", "served"), [
    (state_answer(200, {"pending": ["elev-1"]}), True),
    (state_answer(200, {"active": [ACTIVE]}), False),  # approved: the full command logs in
    (state_answer(200, {}), False),  # nothing open: the full command stops the checks
    (state_answer(401, {}), False),
    (state_answer(500, {}), True),  # no usable answer: the server enforces, serve
])
def test_the_cached_path_serves_only_an_unchanged_state(
        server: StateServer, tmp_path: Path, answer: bytes, served: bool) -> None:
    env, args = _env(tmp_path), _login_args(server)
    token = seed(env, args, elevated=())
    server.answer = answer
    out = io.StringIO()
    assert cached_path.serve(args, env, out) is served
    assert len(server.requests) == 1
    assert (json.loads(out.getvalue())["status"]["token"] == token) if served \
        else out.getvalue() == ""


@pytest.mark.parametrize(("elevated", "seconds_left", "served"), [
    ((GROUP,), 30, True),  # the elevation ends it: served to its last seconds
    ((GROUP,), 3, False),
    ((), 30, False),  # only pending: the TTL ends it, the usual minute's margin
    (None, 30, False),
])
def test_an_elevated_credential_is_served_until_seconds_before_it_ends(
        server: StateServer, tmp_path: Path, elevated: tuple[str, ...] | None,
        seconds_left: int, served: bool) -> None:
    env, args = _env(tmp_path), _login_args(server)
    seed(env, args, elevated, lasts=dt.timedelta(seconds=seconds_left))
    server.answer = state_answer(200, {"active": [ACTIVE] if elevated else [],
                                       "pending": [] if elevated else ["elev-1"]})
    assert cached_path.serve(args, env, io.StringIO()) is served
    assert len(server.requests) == served  # a miss asks nobody: the full command does


def test_the_cached_path_without_the_hint_asks_nobody(server: StateServer,
                                                      tmp_path: Path) -> None:
    env, args = _env(tmp_path), _login_args(server)
    seed(env, args, elevated=None)
    assert cached_path.serve(args, env, io.StringIO())
    assert server.requests == []


def test_an_unreadable_ca_file_leaves_it_to_the_full_command(server: StateServer,
                                                             tmp_path: Path) -> None:
    env = _env(tmp_path)
    args = [*_login_args(server)[:-2], "--concierge-ca-bundle", str(tmp_path / "missing.pem")]
    seed(env, args, elevated=())
    assert not cached_path.serve(args, env, io.StringIO())
    assert server.requests == []


def test_the_check_imports_only_socket_and_ssl_beyond_the_cached_path(
        server: StateServer, tmp_path: Path) -> None:
    """A kubectl call with the hint: the hot path's modules, elevation_check, and the
    standard library's ssl and socket (no http.client, email, datetime or pydantic)."""
    env, args = _env(tmp_path), _login_args(server)
    seed(env, args, elevated=())
    server.answer = state_answer(200, {"pending": ["elev-1"]})
    packages = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env |= {"PATH": os.environ.get("PATH", "/usr/bin"),
            "PYTHONPATH": os.pathsep.join([SOURCE_PATH, *packages])}
    result = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "pinniped_cli",
                             "login", "oidc", *args], env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["status"]["token"] == "cached-token"
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "pinniped_cli.elevation_check" in modules
    assert "ssl" in modules
    heavy = ("httpx", "pydantic", "http.client", "email", "datetime", "pinniped_apis",
             "pinniped_cli.credential_cache", "pinniped_cli.runtime", "argparse", "urllib")
    assert sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)) \
        == []
    assert len(server.requests) == 1
