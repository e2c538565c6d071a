"""The CredentialIssuer: how clients reach this concierge, published by the concierge.

`pinniped get kubeconfig --kubeconfig FILE` reads the cluster-scoped
CredentialIssuer named by `credentialIssuerName` (default: the concierge's
namespace) to learn the endpoint (`externalEndpoint`), the CA bundle that
verifies it (`tls.caFile`, else `tls.certFile`) and the usable
authenticators (the file's and the Ready JWTAuthenticators, with issuer,
audience and the CA bundle of the issuer's https, so a user of an IdP with a
private CA needs no flag for it either). The concierge creates the object if
it is missing and rewrites its status whenever the usable set changes, and
only then, on the replica holding the Lease (`lease`; `run` starts afresh at
each election won, so a new leader publishes at once): the content is
compared without `lastUpdateTime`, so replicas with the same view agree and
do not take turns rewriting it. It is read again every `RESYNC_SECONDS`,
which also repairs an object someone deleted or edited.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from pinniped_apis import rfc3339
from pinniped_apis.authentication import TLSSpec
from pinniped_apis.credential_issuer import (
    CredentialIssuerFrontend,
    CredentialIssuerStatus,
    CredentialIssuerStrategy,
    PublishedAuthenticator,
    TokenCredentialRequestInfo,
)
from pinniped_concierge import backoff, naming
from pinniped_concierge.authenticator_set import AuthenticatorSet
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import CREDENTIAL_ISSUERS, Conflict, KubeAPI, NotFound, Obj
from pinniped_concierge.object_status import read_status

log = logging.getLogger("concierge.credentialissuer")

RESYNC_SECONDS = 60.0


class CredentialIssuerPublisher:
    """Keeps the cluster's CredentialIssuer saying how to reach this concierge.

    Clients (`pinniped get kubeconfig`) discover the endpoint, its CA and the usable
    authenticators there instead of taking eight flags; so it is rewritten whenever
    the usable set changes (`AuthenticatorSet.on_change`), and only when what it says
    differs, so replicas and restarts do not churn it.
    """

    def __init__(self, kube: KubeAPI, authenticators: AuthenticatorSet, *, name: str,
                 endpoint: str, ca_bundle: bytes, namespace: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self.name = name
        self._endpoint = endpoint
        self._ca_data = base64.b64encode(ca_bundle).decode("ascii")
        self._set = authenticators
        self._namespace = namespace
        self._clock = clock
        self._current: Obj | None = None  # the object as last read or written
        self._wake = asyncio.Event()
        authenticators.on_change(self._wake.set)

    def desired(self) -> CredentialIssuerStatus:
        usable = self._set.usable
        order = sorted(usable, key=lambda n: (usable[n].source != "config",
                                              0 if usable[n].source == "config" else n))
        published = []
        for name in order:
            authenticator = usable[name]
            try:
                ca_data = authenticator.issuer_ca_data
                published.append(PublishedAuthenticator(
                    name=name, issuer=authenticator.issuer, audience=authenticator.audience,
                    source=authenticator.source,
                    tls=TLSSpec(certificate_authority_data=ca_data) if ca_data else None))
            except ValidationError:
                log.warning("authenticator %s cannot be published in the CredentialIssuer "
                            "(its name, issuer or audience is not publishable)", name)
        status: Literal["Success", "Error"]
        if published:
            status, reason = "Success", "Ready"
            message = (f"{len(published)} authenticator(s) usable; clients send "
                       f"TokenCredentialRequests to {self._endpoint}")
        else:
            status, reason = "Error", "NoUsableAuthenticators"
            message = ("no authenticator is usable: apply a JWTAuthenticator, or see why the "
                       "existing ones are not used with `kubectl get jwtauthenticators -o yaml`")
        strategy = CredentialIssuerStrategy(
            status=status, reason=reason, message=message,
            last_update_time=rfc3339.format_time(dt.datetime.fromtimestamp(self._clock(),
                                                                          dt.UTC)),
            frontend=CredentialIssuerFrontend(token_credential_request_info=(
                TokenCredentialRequestInfo(server=self._endpoint,
                                           certificate_authority_data=self._ca_data))))
        return CredentialIssuerStatus(strategies=(strategy,), authenticators=tuple(published))

    async def publish(self) -> bool:
        """Create or update the object if its status is not the desired one; True if written."""
        if self._current is None:
            self._current = await self._read_or_create()
        desired = self.desired()
        if _same(read_status(self._current, CredentialIssuerStatus), desired):
            return False
        body = copy.deepcopy(self._current)
        body["status"] = desired.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            self._current = await self._kube.replace_custom_status(CREDENTIAL_ISSUERS,
                                                                   self.name, body)
        except (Conflict, NotFound):
            self.resync()  # changed or deleted meanwhile: read it again next time
            raise
        log.info("CredentialIssuer %s: published %s with authenticators %s", self.name,
                 self._endpoint, ", ".join(a.name for a in desired.authenticators) or "(none)")
        return True

    def resync(self) -> None:
        """Forget the object as last seen: the next `publish` reads it again, so an object
        someone else edited or deleted is put right."""
        self._current = None

    async def _read_or_create(self) -> Obj:
        try:
            return await self._kube.read_custom(CREDENTIAL_ISSUERS, self.name)
        except NotFound:
            pass
        body = {"apiVersion": CREDENTIAL_ISSUERS.api_version, "kind": CREDENTIAL_ISSUERS.kind,
                "metadata": {"name": self.name, "labels": {
                    naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
                    naming.NAMESPACE_LABEL: self._namespace}},
                "spec": {}}
        try:
            return await self._kube.create_custom(CREDENTIAL_ISSUERS, body)
        except NotFound:
            raise ServerError(Reason.KUBERNETES_ERROR, "the cluster does not know the "
                              "CredentialIssuer kind; apply deploy/crds.yaml") from None

    async def run(self) -> None:
        """Publish now, then on every change and every RESYNC_SECONDS, until cancelled."""
        self.resync()  # another replica may have written it since we last looked
        failures, problem = 0, None
        while True:
            self._wake.clear()
            try:
                await self.publish()
                delay, failures = RESYNC_SECONDS, 0
                if problem is not None:
                    log.info("CredentialIssuer %s: published again", self.name)
                problem = None
            except (Unavailable, ServerError, Conflict, NotFound) as exc:
                self.resync()
                delay = backoff.delay(failures)
                failures += 1
                if str(exc) != problem:
                    log.warning("CredentialIssuer %s: cannot publish (retrying): %s",
                                self.name, _describe(exc))
                problem = str(exc)
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                self.resync()


def _same(current: CredentialIssuerStatus | None, desired: CredentialIssuerStatus) -> bool:
    """Equal but for when each strategy was written."""
    if current is None:
        return False

    def untimed(status: CredentialIssuerStatus) -> Any:
        return status.model_copy(update={"strategies": tuple(
            s.model_copy(update={"last_update_time": ""}) for s in status.strategies)})

    return bool(untimed(current) == untimed(desired))


def _describe(exc: Exception) -> str:
    if isinstance(exc, Conflict | NotFound):
        return f"{type(exc).__name__} (it changed meanwhile)"
    return str(exc)

