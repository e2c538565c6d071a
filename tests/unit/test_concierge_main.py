"""Start-up: a broken config stops the concierge with a message naming the key."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pinniped_concierge.audit import AuditEvent, AuditLog, token_digest
from pinniped_concierge.main import main

CORP = """\
  - {name: corp, issuer: "https://idp", audience: a, usernamePrefix: "c:", groupsPrefix: "c:"}
"""


def _config_with_tls_files(tmp_path: Path, authenticators: str) -> Path:
    """A config whose TLS files exist but hold no certificate: start-up must stop on them."""
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("not a certificate")
    path = tmp_path / "concierge.yaml"
    path.write_text("tls: {certFile: c.pem, keyFile: k.pem}\nnamespace: pinniped\n"
                    "authenticators:\n" + authenticators)
    return path


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "concierge.yaml"
    path.write_text("namespace: pinniped\ncredentialTTLSeconds: 60\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tls: is required" in err or "credentialTTLSeconds" in err


def test_unusable_tls_files_are_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_tls_files(tmp_path, CORP)
    assert main(["--config", str(path)]) == 2
    assert "tls: cannot load" in capsys.readouterr().err


def test_python_dash_m_concierge_is_the_same_program() -> None:
    result = subprocess.run([sys.executable, "-m", "pinniped_concierge", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "--config" in result.stdout


def test_the_audit_file_is_private_and_has_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog.open(path)
    log.record(AuditEvent(request="login", client="127.0.0.1:1", token_hash=token_digest("t")))
    log.record(AuditEvent(request="logout", client="127.0.0.1:2"))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert '"tokenHash":"sha256:' in lines[0]
    assert token_digest("t") != token_digest("u")
    assert len(token_digest("t")) == len("sha256:") + 12


def test_overlapping_prefixes_stop_the_start_naming_both_authenticators(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_tls_files(tmp_path, CORP + """\
  - {name: partner, issuer: "https://partner", audience: a, usernamePrefix: "c:p-",
     groupsPrefix: "p:"}
""")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "authenticators[1].usernamePrefix:" in err
    assert "'partner'" in err
    assert "'corp'" in err
