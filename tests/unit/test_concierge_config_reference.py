"""The config reference is generated from the models, and the committed copy is never stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pinniped_concierge import config
from pinniped_concierge.config_reference import REGENERATE, render
from pinniped_concierge.main import main

COMMITTED = Path(__file__).resolve().parents[2] / "deploy" / "concierge-config.md"


def test_the_committed_reference_is_what_the_models_generate() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        f"{COMMITTED.name} is out of date with concierge/pinniped_concierge/config.py; "
        f"regenerate it with: {REGENERATE}")


def test_every_key_has_a_section_with_a_description() -> None:
    text = render()
    for path, schema in config.key_schemas().items():
        assert f"\n### `{path}`\n" in text
        assert schema.get("description"), f"{path} has no description"


def test_a_section_states_type_presence_default_and_range() -> None:
    sections = dict(re.findall(r"### `([^`]+)`\n\n([^\n]+)", render()))
    assert sections["credentialTTLSeconds"] == "integer · default `600` · 600 to 86400"
    assert sections["tls.certFile"] == "file path · **required**"
    assert sections["logLevel"].endswith("one of `debug`, `info`, `warning`, `error`")
    assert "DNS-1123" in sections["authenticators[].name"]
    assert sections["authenticators[].claims.groups"].startswith("string · optional")


def test_the_minimal_example_in_the_reference_is_a_valid_config(tmp_path: Path) -> None:
    (example,) = re.findall(r"```yaml\n(.*?)```", render(), re.DOTALL)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    cfg = config.parse(example, tmp_path)
    assert cfg.tls.cert_file == tmp_path / "tls.crt"
    assert cfg.authenticators[0].username_prefix == "corp:"


def test_the_command_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config-reference"]) == 0
    assert capsys.readouterr().out == render()
