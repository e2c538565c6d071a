"""pytest fixtures for the local IdP: one shared server per session, plus private ones on demand.

The shared `idp` must look the same to every test, so tests that change it
(groups, keys, lifetimes) start their own with `idp_factory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv import pki
from localenv.idp import LocalIdP


@pytest.fixture(scope="session")
def idp(local_ca: pki.CA, local_workdir: Path) -> Iterator[LocalIdP]:
    server = LocalIdP.start(local_workdir / "idp", local_ca)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def id_token_for(idp: LocalIdP) -> Callable[..., str]:
    """`id_token_for("alice")`: a fresh ID token from the shared IdP, by the password grant."""

    def get(username: str, *, client_id: str | None = None) -> str:
        return str(idp.password_grant(username, client_id=client_id)["id_token"])

    return get


@pytest.fixture
def idp_factory(local_ca: pki.CA, tmp_path: Path) -> Iterator[Callable[..., LocalIdP]]:
    """Start private IdPs (same CA, own keys and users) that this test may change freely."""
    started: list[LocalIdP] = []

    def start(**options: Any) -> LocalIdP:
        server = LocalIdP.start(tmp_path / f"idp-{len(started)}", local_ca, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
