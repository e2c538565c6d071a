"""Read a cluster credential we issued back into a user and a session (whoami, logout).

The apiserver is the only judge of the token: a TokenReview must say it is
authenticated, and only then are its claims read (without re-verifying the
signature; the apiserver just did). The token must belong to one of our
per-user ServiceAccounts in our namespace; its `kubernetes.io.secret` claim
names the session Secret it is bound to, which is what logout deletes.

`authenticate` stops there: one TokenReview, and the ServiceAccount's name,
which is `naming.user_object_name` of the user (a hash of their name). That is
enough for the plugin's elevation state check, which runs on every kubectl
call of a user with an elevation open and finds the user's requests by that
name (`ElevationService.state`). `review` also reads the ServiceAccount and
the ClusterRole (two more calls), for the username and the groups whoami
reports and the elevation API's decisions use.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.kubeapi import KubeAPI, NotFound
from pinniped_concierge.userobjects import UserObjects


@dataclass(frozen=True)
class ReviewedAccount:
    """A token the apiserver authenticated as one of our per-user ServiceAccounts; nothing
    about the user has been read yet."""

    service_account: str
    expiration: dt.datetime | None
    session_secret: str | None
    session_secret_uid: str | None

    @property
    def session_id(self) -> str | None:
        return naming.session_id_of(self.session_secret) if self.session_secret else None


@dataclass(frozen=True)
class ReviewedCredential(ReviewedAccount):
    """The account, and the user it stands for as the cluster has them now."""

    identity: wire.Identity


class CredentialReviewer:
    def __init__(self, kube: KubeAPI, namespace: str, user_objects: UserObjects) -> None:
        self._kube = kube
        self._namespace = namespace
        self._user_objects = user_objects

    async def review(self, token: str) -> ReviewedCredential:
        """`authenticate`, then who the ServiceAccount stands for (its ClusterRole's groups)."""
        account = await self.authenticate(token)
        try:
            identity = await self._user_objects.describe(account.service_account)
        except NotFound:
            raise Rejected(Reason.FOREIGN_CREDENTIAL, "ServiceAccount is not ours") from None
        return ReviewedCredential(
            service_account=account.service_account, expiration=account.expiration,
            session_secret=account.session_secret,
            session_secret_uid=account.session_secret_uid, identity=identity)

    async def authenticate(self, token: str) -> ReviewedAccount:
        """One TokenReview: the token is valid and names a ServiceAccount of ours by name."""
        if len(token) > wire.MAX_TOKEN_BYTES:
            raise Rejected(Reason.TOKEN_TOO_LARGE, "credential too large")
        status = await self._kube.review_token(token)
        if status.get("authenticated") is not True:
            raise Rejected(Reason.INVALID_CREDENTIAL, "TokenReview did not authenticate it")
        user = status.get("user")
        username = user.get("username") if isinstance(user, Mapping) else None
        prefix = f"system:serviceaccount:{self._namespace}:{naming.USER_OBJECT_PREFIX}"
        if not isinstance(username, str) or not username.startswith(prefix):
            raise Rejected(Reason.FOREIGN_CREDENTIAL, "not one of our per-user ServiceAccounts")
        service_account = username.rsplit(":", 1)[1]
        claims = _unverified_claims(token)
        k8s = claims.get("kubernetes.io")
        secret = k8s.get("secret") if isinstance(k8s, Mapping) else None
        secret_name = secret.get("name") if isinstance(secret, Mapping) else None
        secret_uid = secret.get("uid") if isinstance(secret, Mapping) else None
        exp = claims.get("exp")
        expiration = (dt.datetime.fromtimestamp(exp, dt.UTC)
                      if isinstance(exp, int) and not isinstance(exp, bool) else None)
        return ReviewedAccount(
            service_account=service_account, expiration=expiration,
            session_secret=secret_name if isinstance(secret_name, str) else None,
            session_secret_uid=secret_uid if isinstance(secret_uid, str) else None,
        )


def _unverified_claims(token: str) -> Mapping[str, object]:
    """Claims of a JWT the apiserver has just accepted; {} if it is not a JWT at all."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
