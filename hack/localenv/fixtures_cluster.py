"""pytest fixtures for the local control plane: one CA, one work dir and one cluster per session
(with the concierge's CRDs from deploy/crds.yaml installed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localenv import pki
from localenv.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("localenv")
    path.chmod(0o700)
    return path


@pytest.fixture(scope="session")
def local_ca(local_workdir: Path) -> pki.CA:
    return pki.CA.create(local_workdir / "pki", "local")


@pytest.fixture(scope="session")
def cluster(local_workdir: Path, local_ca: pki.CA) -> Iterator[LocalCluster]:
    running = LocalCluster.start(local_workdir / "cluster", local_ca)
    try:
        running.install_crds()  # the concierges watch JWTAuthenticators and publish here
        yield running
    finally:
        running.stop()
