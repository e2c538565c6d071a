"""The real pieces the benchmark measures against, started from hack/localenv and stopped after.

One `Stack` is etcd + kube-apiserver, the npm oidc-provider IdP, a
`MintingIssuer` (whose keys the benchmark holds, so it can mint ID tokens for
thousands of distinct users without a login each) and the concierge, run as
the benchmark venv's installed `pinniped-concierge`. The scale measurement
starts a cluster of its own (`Stack.cluster_only`), so the users it adds do
not slow the concierge figures, and the concierge's own do not count in N.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.install import InstalledVenv
from tests.benchmark.progress import log


@dataclass
class Stack:
    workdir: Path
    ca: pki.CA
    cluster: LocalCluster
    idp: LocalIdP
    minting: MintingIssuer
    concierge: LocalConcierge
    #: The installed venv everything measured runs from.
    venv: InstalledVenv

    @property
    def minted_authenticator(self) -> str:
        """The concierge's authenticator for `minting`'s tokens (prefix minted:)."""
        return "minted"

    def concierge_token(self) -> str:
        """The concierge's own ServiceAccount token (for the same calls, made directly).

        Read from the kubeconfig LocalConcierge wrote for it; held in memory only.
        """
        config = json.loads((self.workdir / "concierge" / "concierge.kubeconfig").read_text())
        return str(config["users"][0]["user"]["token"])


@contextlib.contextmanager
def running_stack(venv: InstalledVenv, keep: bool = False) -> Iterator[Stack]:
    """Everything started, in a private 0700 work dir; all stopped (by PID) on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix="pinniped-bench-"))
    started: list[LocalCluster | LocalIdP | MintingIssuer | LocalConcierge] = []
    try:
        ca = pki.CA.create(workdir / "pki", "bench")
        log("starting etcd and kube-apiserver")
        cluster = LocalCluster.start(workdir / "cluster", ca)
        started.append(cluster)
        cluster.install_crds()
        log("starting the IdP and a minting issuer")
        idp = LocalIdP.start(workdir / "idp", ca)
        started.append(idp)
        minting = MintingIssuer.start(workdir / "minting", ca)
        started.append(minting)
        log(f"starting the concierge ({venv.script('pinniped-concierge')})")
        concierge = LocalConcierge.start(
            workdir / "concierge", ca, cluster, idp, extra_issuers=[minting],
            command=[str(venv.script("pinniped-concierge"))])
        started.append(concierge)
        yield Stack(workdir=workdir, ca=ca, cluster=cluster, idp=idp, minting=minting,
                    concierge=concierge, venv=venv)
    finally:
        for part in reversed(started):
            with contextlib.suppress(Exception):
                part.stop()
        if keep:
            log(f"kept the work dir {workdir} (logs, audit logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def cluster_only(keep: bool = False) -> Iterator[tuple[pki.CA, LocalCluster]]:
    """A fresh etcd + kube-apiserver and nothing else, stopped on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix="pinniped-bench-scale-"))
    cluster: LocalCluster | None = None
    try:
        ca = pki.CA.create(workdir / "pki", "bench-scale")
        log("starting a fresh etcd and kube-apiserver for the scale figures")
        cluster = LocalCluster.start(workdir / "cluster", ca)
        yield ca, cluster
    finally:
        if cluster is not None:
            cluster.stop()
        if keep:
            log(f"kept the work dir {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
