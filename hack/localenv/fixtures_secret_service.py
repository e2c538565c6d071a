"""pytest fixture for the real OS keyring: a private Secret Service per test.

Each test gets its own bus and gnome-keyring (so one that locks or stops the
keyring cannot disturb the next); starting both takes well under a second.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from localenv.secret_service import SecretService


@pytest.fixture
def secret_service(tmp_path: Path) -> Iterator[SecretService]:
    service = SecretService.start(tmp_path / "secret-service", password=secrets.token_urlsafe(16))
    try:
        yield service
    finally:
        service.stop()
