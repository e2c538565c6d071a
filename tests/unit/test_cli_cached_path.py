"""The cached path answers exactly as the full command would, or leaves the call to it.

`cached_path.serve` reads the flags without argparse, and the cache without
pathlib, hashlib or datetime. These tests hold it to the full command: the
same flags table as argparse, the same cache key for everything it accepts
(and it accepts nothing argparse refuses), the same ExecCredential, and a
False (nothing printed) wherever the full command would do more than print.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localenv.fixtures_cli import PASSWORD_ENV, TEST_CA_DATA, CLIHarness
from pinniped_cli import cache_keys, cached_path, credential_entry, login_flags
from pinniped_cli.cluster_credential import credential_key
from pinniped_cli.command_line import parse_args
from pinniped_cli.errors import UsageError
from pinniped_cli.execcredential import ca_fingerprint, read_exec_info
from pinniped_cli.login_options import add_login_flags, default_credential_cache, parse_login_args

BASE = ["--issuer", "https://idp.test", "--client-id", "pinniped-cli",
        "--concierge-endpoint", "https://concierge.test", "--concierge-authenticator", "corp"]
ENV = {"HOME": "/nonexistent", "PINNIPED_USERNAME": "ci-bot"}
INFO = read_exec_info(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "spec": {"interactive": False, "cluster": {"server": "https://k8s.test:6443",
                                               "certificate-authority-data": TEST_CA_DATA}}}),
    stdin_is_tty=False)


# --- the flags ----------------------------------------------------------------------------------


def _login_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_login_flags(parser)
    return parser


def test_the_flags_table_is_argparses() -> None:
    kinds = {argparse._StoreAction: login_flags.VALUE, argparse._AppendAction: login_flags.REPEATED,
             argparse._StoreTrueAction: login_flags.SWITCH}
    from_argparse = {action.dest: (tuple(action.option_strings), kinds[type(action)])
                     for action in _login_parser()._actions}
    assert from_argparse == login_flags.FLAGS
    required = {action.dest for action in _login_parser()._actions if action.required}
    assert required == set(login_flags.REQUIRED)


def _fast_key(args: list[str], env: dict[str, str]) -> str | None:
    values = login_flags.read_args(args)
    if values is None:
        return None
    try:
        identity = login_flags.checked(values, env).identity
    except UsageError:
        return None
    return cache_keys.credential_key(identity, INFO.cluster)


def _full_key(args: list[str], env: dict[str, str]) -> str:
    return credential_key(parse_login_args(args, env), INFO.cluster)


ACCEPTED = [
    BASE,
    [*BASE, "--scopes", "openid, groups,,email", "--flow", "password"],
    ["--oidc-issuer=https://idp.test", "--oidc-client-id=pinniped-cli",
     "--concierge-endpoint=https://concierge.test///", "--concierge-authenticator-name=corp"],
    [*BASE, "--ca-bundle-data", TEST_CA_DATA, "--ca-bundle", "/a.pem", "--oidc-ca-bundle", "/b",
     "--concierge-ca-bundle-data", TEST_CA_DATA, "--concierge-ca-bundle", "/c.pem"],
    [*BASE, "--listen-port", "8080", "--skip-browser", "--login-timeout", "30",
     "--session-cache", "/tmp/s.json"],
    [*BASE, "--update-kubeconfig", "/home/u/.kube/config", "--kubeconfig-user", "pinniped"],
    [*BASE, "--issuer", "https://other.test", "--flow", "browser"],  # the last one counts
    [*BASE, "--scopes=-openid,openid"],  # after "=", a leading dash is a value
]
#: argparse refuses these or reads them differently: the cached path must not take them.
REFUSED = [
    BASE[:-2],  # no --concierge-authenticator
    [*BASE, "--iss", "https://idp.test"],  # an abbreviation argparse would expand
    [*BASE, "--scopes", "-openid"],  # a leading dash, read as a flag
    [*BASE, "--scopes", "groups"],  # no openid
    [*BASE, "--scopes="],
    [*BASE, "--flow", "magic"],
    [*BASE, "--listen-port", "99999"],
    [*BASE, "--listen-port", "http"],
    [*BASE, "--login-timeout", "0"],
    [*BASE, "--login-timeout", "nan"],
    [*BASE, "--skip-browser=yes"],
    [*BASE, "--update-kubeconfig", "/k"],  # without --kubeconfig-user
    [*BASE, "--issuer", "http://idp.test"],
    [*BASE, "--concierge-endpoint", "https://"],
    [*BASE, "--help"],
    [*BASE, "--"],
    [*BASE, "extra"],
    [*BASE, "--issuer"],  # no value
]


@pytest.mark.parametrize("args", ACCEPTED)
def test_what_it_reads_it_reads_as_argparse_does(args: list[str]) -> None:
    assert _fast_key(args, ENV) == _full_key(args, ENV)
    for flow_env in ({}, {"PINNIPED_USERNAME": "someone-else"}):
        assert _fast_key(args, flow_env) == _full_key(args, flow_env)


@pytest.mark.parametrize("args", REFUSED)
def test_what_argparse_would_not_read_so_it_leaves_alone(args: list[str]) -> None:
    assert _fast_key(args, ENV) is None


#: Tokens to build command lines from: flags, aliases, `=` forms, and awkward values.
TOKENS = [*login_flags._BY_NAME, "--iss", "--oidc", "--", "-", "-x", "", "extra", "https://idp.test",
          "https://concierge.test/", "http://x", "openid", "groups,openid", "0", "65536", "7",
          "password", "browser", "device", "=", "--issuer=https://a.test", "--scopes=openid",
          "--flow=device", "--listen-port=1", "--skip-browser=1", "/p", "~/p", "corp"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=12))
def test_any_command_line_it_accepts_argparse_accepts_with_the_same_key(
        extra: list[str]) -> None:
    args = [*BASE, *extra]
    fast = _fast_key(args, ENV)
    if fast is not None:
        assert fast == _full_key(args, ENV)


# --- the key's pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"abc", os.urandom(1000)])
def test_the_builtin_sha256_is_sha256(data: bytes) -> None:
    assert cache_keys.sha256_hex(data) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("ca", [TEST_CA_DATA, TEST_CA_DATA + "\n", "not base64!", "é", "QQ",
                                "QQ==", "QQ==QQ==", ""])
def test_the_ca_fingerprint_is_what_base64_and_hashlib_made(ca: str) -> None:
    try:
        raw = base64.b64decode(ca, validate=True)
    except (binascii.Error, ValueError):
        raw = ca.encode()
    assert ca_fingerprint(ca) == (hashlib.sha256(raw).hexdigest() if ca else "")


@pytest.mark.parametrize(("text", "canonical"), [
    ("2030-01-02T03:04:05Z", True), ("2030-01-02T03:04:05+00:00", False),
    ("2030-01-02T03:04:05.5Z", False), ("2030-01-02 03:04:05Z", False),
    ("\uff12030-01-02T03:04:05Z", False), ("203a-01-02T03:04:05Z", False), ("", False)])
def test_only_the_form_pinniped_writes_is_compared_as_text(text: str, canonical: bool) -> None:
    assert credential_entry.is_canonical(text) is canonical


def test_lasts_until_is_exact_to_the_second() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert credential_entry.lasts_until("2030-01-02T03:04:05Z", when)
    assert not credential_entry.lasts_until("2030-01-02T03:04:05Z", when + 0.001)
    assert credential_entry.lasts_until("2030-01-02T03:04:06Z", when + 0.001)
    assert not credential_entry.lasts_until("2029-12-31T23:59:59Z", when)


# --- serving ------------------------------------------------------------------------------------


@pytest.fixture
def run(runtime_dir: Path) -> Path:
    return runtime_dir


def _logged_in(h: CLIHarness, run: Path | None) -> dict[str, str]:
    """One real login (the full command, fakes behind it); the environment kubectl would set."""
    if run is not None:
        h.env["XDG_RUNTIME_DIR"] = str(run)
    h.env.update(PASSWORD_ENV)
    assert h.run(h.login_args(), {"KUBERNETES_EXEC_INFO": h.exec_info()}) == 0, h.last_stderr
    return {"HOME": str(h.tmp_path), "XDG_CONFIG_HOME": str(h.tmp_path / "config"), **h.env,
            "KUBERNETES_EXEC_INFO": h.exec_info()}


def _serve(h: CLIHarness, env: dict[str, str], *extra: str,
           after: dt.timedelta = dt.timedelta(0)) -> tuple[bool, str]:
    out = io.StringIO()
    served = cached_path.serve([*h.login_args(*extra)[2:]], env, out,
                               clock=(h.clock.now() + after).timestamp)
    return served, out.getvalue()


@pytest.mark.parametrize("in_runtime_dir", [True, False], ids=["runtime-dir", "sealed"])
def test_a_hit_prints_what_the_full_command_prints(h: CLIHarness, run: Path,
                                                   in_runtime_dir: bool) -> None:
    env = _logged_in(h, run if in_runtime_dir else None)
    assert default_credential_cache(env).is_relative_to(run) is in_runtime_dir
    served, printed = _serve(h, env)
    assert served
    assert h.run(h.login_args(), {"KUBERNETES_EXEC_INFO": h.exec_info()}) == 0
    assert printed == h.last_stdout  # the full command's hit, byte for byte
    assert len(h.concierge.logins) == 1  # neither asked the concierge again


def test_a_credential_about_to_expire_is_left_to_the_full_command(h: CLIHarness,
                                                                  run: Path) -> None:
    env = _logged_in(h, run)
    lifetime = json.loads(h.last_stdout)["status"]["expirationTimestamp"]
    expires = dt.datetime.fromisoformat(lifetime.replace("Z", "+00:00"))
    margin = expires - h.clock.now() - dt.timedelta(seconds=60)
    assert _serve(h, env, after=margin)[0]
    assert _serve(h, env, after=margin + dt.timedelta(seconds=1)) == (False, "")


def test_what_it_is_not_sure_of_it_leaves_to_the_full_command(h: CLIHarness,
                                                              run: Path) -> None:
    env = _logged_in(h, run)
    assert _serve(h, env)[0]
    assert _serve(h, env, "--credential-cache", str(run / "pinniped" / "credentials.json")) == (
        False, "")
    assert _serve(h, env, "--scopes", "openid") == (False, "")  # another key: a miss
    assert _serve(h, env, "--iss", "https://idp.test") == (False, "")
    assert _serve(h, {k: v for k, v in env.items() if k != "KUBERNETES_EXEC_INFO"}) == (
        False, "")  # a person ran it by hand
    assert _serve(h, {**env, "KUBERNETES_EXEC_INFO": "{not json"}) == (False, "")


def test_an_entry_in_another_timestamp_form_is_left_to_the_full_command(
        h: CLIHarness, run: Path) -> None:
    env = _logged_in(h, run)
    cache = run / "pinniped" / "credentials.json"
    doc = json.loads(cache.read_text())
    for entry in doc["credentials"].values():
        entry["expirationTimestamp"] = entry["expirationTimestamp"].replace("Z", "+00:00")
    cache.write_text(json.dumps(doc))
    assert _serve(h, env) == (False, "")
    assert h.run(h.login_args(), {"KUBERNETES_EXEC_INFO": h.exec_info()}) == 0  # a hit there
    assert len(h.concierge.logins) == 1


def test_main_answers_from_the_cache_without_building_a_parser(
        h: CLIHarness, run: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pinniped_cli import command_line, main

    env = _logged_in(h, run)
    expected = _serve(h, env)[1]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(command_line, "parse_args", _no_parser)
    assert main.main(h.login_args()) == 0
    assert capsys.readouterr().out == expected


def _no_parser(_: list[str]) -> argparse.Namespace:
    raise AssertionError("the full command ran")


def test_the_full_command_still_parses_what_the_cached_path_does_not(h: CLIHarness) -> None:
    assert parse_args(h.login_args()).handler == "login_oidc"
