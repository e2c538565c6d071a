"""The leak sentinel's scanner finds a planted secret in every form, and nothing in clean logs.

These prove that `test_no_secret_leaked` can fail: each plants a token or password
where the concierge or the CLI would have written it, and checks the finding names
the stream and the kind, but never holds the secret itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from localenv import leak_sentinel
from localenv.fixtures_cli import secret_forms
from localenv.hostile_tokens import offline_issuer
from localenv.leak_sentinel import (
    CLUSTER_TOKEN,
    ID_TOKEN,
    PASSWORD,
    REFRESH_TOKEN,
    UNREGISTERED_JWT,
    PopenWatch,
    Sentinel,
    watched_program,
)

CLEAN_LOG = (b'{"level": "info", "msg": "login", "user": "corp:alice@example.com", '
             b'"token": "sha256:0123456789ab", "groups": ["corp:devs"]}\n'
             b'{"level": "warning", "msg": "refused", "reason": "expired"}\n') * 50


@pytest.fixture(scope="module")
def id_token() -> str:
    return offline_issuer("https://issuer.test", "aud").mint()


def _sentinel_with_log(tmp_path: Path, text: bytes) -> Sentinel:
    sentinel = Sentinel()
    log = tmp_path / "concierge.log"
    log.write_bytes(CLEAN_LOG + text + CLEAN_LOG)
    sentinel.watch_file("concierge log", log)
    return sentinel


def _assert_found(sentinel: Sentinel, secret: str, kind: str) -> None:
    report = sentinel.scan()
    assert report.findings, f"missed a planted {kind}"
    assert {f.kind for f in report.findings} == {kind}
    assert {f.stream.split()[0] for f in report.findings} == {"concierge"}
    shown = "\n".join(str(f) for f in report.findings) + report.summary()
    for form in leak_sentinel.forms_of(secret):
        assert form.decode() not in shown  # the finding never repeats the secret


def test_a_clean_log_has_no_finding(tmp_path: Path, id_token: str) -> None:
    sentinel = _sentinel_with_log(tmp_path, b"")
    sentinel.register(ID_TOKEN, id_token)
    sentinel.register(PASSWORD, "alice-" + secrets.token_urlsafe(12))
    report = sentinel.scan()
    assert report.findings == []
    assert report.streams == 1
    assert report.bytes_scanned == 2 * len(CLEAN_LOG)
    assert report.secrets == {ID_TOKEN: 1, PASSWORD: 1}


@pytest.mark.parametrize("index", range(7))
def test_a_registered_id_token_is_found_in_each_of_its_forms(tmp_path: Path, id_token: str,
                                                             index: int) -> None:
    forms = secret_forms(id_token)  # 4 to 7: the two base64 alphabets may agree
    sentinel = _sentinel_with_log(tmp_path, b'{"msg": "oops", "detail": "x'
                                  + forms[index % len(forms)] + b'y"}\n')
    sentinel.register(ID_TOKEN, id_token)
    _assert_found(sentinel, id_token, ID_TOKEN)


def test_a_jwt_nobody_registered_is_found_by_its_shape(tmp_path: Path, id_token: str) -> None:
    payload = json.dumps({"token": id_token}).encode()
    import base64

    sentinel = _sentinel_with_log(tmp_path, b"debug: " + base64.b64encode(payload) + b"\n")
    _assert_found(sentinel, id_token, UNREGISTERED_JWT)


def test_a_jwt_with_its_signature_cut_off_is_still_named(tmp_path: Path, id_token: str) -> None:
    header_and_payload = id_token.rpartition(".")[0]
    sentinel = _sentinel_with_log(tmp_path, f"token {header_and_payload}.\n".encode())
    sentinel.register(CLUSTER_TOKEN, id_token)
    _assert_found(sentinel, id_token, CLUSTER_TOKEN)


@pytest.mark.parametrize("index", range(14))
def test_an_opaque_refresh_token_is_found_in_each_of_its_forms(tmp_path: Path,
                                                               index: int) -> None:
    refresh = secrets.token_urlsafe(32)
    forms = secret_forms(refresh)
    sentinel = _sentinel_with_log(tmp_path, b"refresh failed: " + forms[index % len(forms)])
    sentinel.register(REFRESH_TOKEN, refresh)
    _assert_found(sentinel, refresh, REFRESH_TOKEN)


def test_a_password_is_found_json_escaped(tmp_path: Path) -> None:
    password = 'p"ss\\w\u00f6rd-' + secrets.token_hex(4)
    line = json.dumps({"msg": "login failed", "form": {"password": password}}).encode()
    assert password.encode() not in line  # only its escaped form is there
    sentinel = _sentinel_with_log(tmp_path, line + b"\n")
    sentinel.register(PASSWORD, password)
    _assert_found(sentinel, password, PASSWORD)


def test_a_lone_surrogate_token_is_looked_for_as_written(tmp_path: Path) -> None:
    odd = "not-a-jwt-\udc80-" + secrets.token_hex(4)
    sentinel = _sentinel_with_log(tmp_path, json.dumps({"token": odd}).encode())
    sentinel.register(leak_sentinel.HOSTILE_TOKEN, odd)
    _assert_found(sentinel, odd, leak_sentinel.HOSTILE_TOKEN)


def test_the_execcredential_on_stdout_is_excluded_and_its_token_registered(
        tmp_path: Path, id_token: str) -> None:
    sentinel = Sentinel()
    credential = json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                             "kind": "ExecCredential", "status": {"token": id_token}})
    sentinel.record_output("pinniped", credential + "\n", "")
    assert sentinel.scan().findings == []
    assert sentinel.secrets() == {id_token: CLUSTER_TOKEN}
    # Anything more than exactly that document is scanned, and the token shows.
    sentinel.record_output("pinniped", "debug: " + credential, "")
    findings = sentinel.scan().findings
    assert [f.kind for f in findings] == [CLUSTER_TOKEN]
    assert findings[0].stream.startswith("stdout of pinniped")


def test_kubectl_stderr_is_scanned_and_its_stdout_is_not(id_token: str) -> None:
    sentinel = Sentinel()
    sentinel.register(ID_TOKEN, id_token)
    sentinel.record_output("kubectl", f"token: {id_token}\n", "")  # what the person asked for
    assert sentinel.scan().findings == []
    sentinel.record_output("kubectl", "", f"plugin said {id_token}\n")
    assert [f.stream.split(" (")[0] for f in sentinel.scan().findings] == ["stderr of kubectl"]


def test_the_popen_watch_records_watched_programs_only(tmp_path: Path, id_token: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The session's own watch sees these runs too: its end-of-run scan must not find this
    # test's planted token.
    monkeypatch.setattr(leak_sentinel.SENTINEL, "record_output", lambda *_args: None)
    monkeypatch.setattr(leak_sentinel.SENTINEL, "watch_file", lambda *_args: None)
    program = tmp_path / "pinniped"
    program.write_text(f"#!/bin/sh\necho \"leaked $1\" >&2\necho {id_token}\n")
    program.chmod(0o700)
    other = tmp_path / "other-tool"
    other.write_text(program.read_text())
    other.chmod(0o700)
    sentinel = Sentinel()
    watch = PopenWatch(sentinel)
    watch.install()
    try:
        subprocess.run([str(other), "x"], capture_output=True, check=True)
        assert sentinel.streams() == []
        subprocess.run([str(program), "x"], capture_output=True, text=True, check=True)
        with (tmp_path / "stderr").open("w") as err:
            subprocess.Popen([str(program), "y"], stdout=subprocess.DEVNULL, stderr=err).wait()
    finally:
        watch.uninstall()
    subprocess.run([str(program), "z"], capture_output=True, check=True)  # no longer watched
    streams = sentinel.streams()
    assert [s.data for s in streams] == [b"leaked x\n", f"{id_token}\n".encode(), b"leaked y\n"]
    assert [s.label.split(" (")[0].split(" /")[0] for s in streams] == [
        "stderr of pinniped", "stdout of pinniped", "stderr of pinniped"]
    assert [f.kind for f in sentinel.scan().findings] == [UNREGISTERED_JWT]


@pytest.mark.parametrize(("argv", "expected"), [
    (["/venv/bin/pinniped", "login"], "pinniped"),
    (["kubectl", "get", "pods"], "kubectl"),
    (["/x/pinniped-concierge", "--config", "c.yaml"], "pinniped-concierge"),
    ([sys.executable, "-m", "pinniped_cli", "whoami"], "pinniped"),
    ([sys.executable, "-c", "import os", "/venv/bin/pinniped", "login"], "pinniped"),
    ([sys.executable, "-c", "import os"], None),
    (["bash", "-c", "pinniped"], None),
    ("pinniped login", None),
])
def test_watched_programs(argv: Any, expected: str | None) -> None:
    assert watched_program(argv) == expected


def test_what_is_over_the_bounds_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leak_sentinel, "MAX_SECRETS", 2)
    sentinel = Sentinel()
    for n in range(3):
        sentinel.register(PASSWORD, f"password-{n}")
    sentinel.register(PASSWORD, "short")  # too short to look for: not counted
    assert sentinel.scan().dropped == 1
    assert len(sentinel.secrets()) == 2


def test_the_scan_is_moved_to_the_end() -> None:
    items: list[Any] = [SimpleNamespace(nodeid=n) for n in (
        "tests/integration/test_a.py::test_one", leak_sentinel.FINAL_TEST,
        "tests/unit/test_b.py::test_two")]
    items[1].nodeid = "tests/integration/" + leak_sentinel.FINAL_TEST
    leak_sentinel.pytest_collection_modifyitems(None, None, items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [
        "tests/integration/test_a.py::test_one", "tests/unit/test_b.py::test_two",
        "tests/integration/" + leak_sentinel.FINAL_TEST]


def test_an_execcredential_written_to_a_file_is_excluded_too(tmp_path: Path,
                                                             id_token: str) -> None:
    credential = json.dumps({"kind": "ExecCredential", "status": {"token": id_token}})
    (tmp_path / "out").write_text(credential)
    (tmp_path / "noisy").write_text(credential + "\nand then some")
    sentinel = Sentinel()
    sentinel.watch_file("stdout of pinniped", tmp_path / "out")
    assert sentinel.scan().findings == []
    sentinel.watch_file("stdout of pinniped", tmp_path / "noisy")
    assert [f.kind for f in sentinel.scan().findings] == [CLUSTER_TOKEN]
