"""Paged lists of cluster-scoped kinds (ClusterRoles, ClusterRoleBindings) by label.

`KubeAPI.list` lists one namespace; the idle-user clean-up also needs our
ClusterRoles (their last-login annotation) and ClusterRoleBindings (to find
ones left without a ServiceAccount). This adds exactly that to the real
client, with the same call counting and error translation, and no more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from pinniped_concierge.kubeapi import Kind, KubernetesClientAPI, Obj


@runtime_checkable
class ClusterLister(Protocol):
    async def list_cluster(self, kind: Kind, label_selector: str, limit: int,
                           continue_token: str | None = None
                           ) -> tuple[list[Obj], str | None]:
        """One page of cluster-scoped `kind` objects, and the token for the next (or None)."""
        ...


class ConciergeKubeAPI(KubernetesClientAPI):
    """`KubernetesClientAPI` that can also list cluster-scoped kinds (`ClusterLister`)."""

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None,
                        timeout_seconds: float) -> ConciergeKubeAPI:
        made = super().from_kubeconfig(kubeconfig, timeout_seconds)
        if not isinstance(made, ConciergeKubeAPI):  # the base builds `cls`
            raise TypeError(type(made).__name__)
        return made

    async def list_cluster(self, kind: Kind, label_selector: str, limit: int,
                           continue_token: str | None = None
                           ) -> tuple[list[Obj], str | None]:
        if kind not in (Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
            raise ValueError(f"{kind} is not cluster-scoped")
        api, suffix, _ = self._api(kind)
        fn = getattr(api, f"list_{suffix}")
        extra = {"_continue": continue_token} if continue_token else {}
        result = self._plain(await self._call(f"list {kind}", lambda: fn(
            label_selector=label_selector, limit=limit, _request_timeout=self._timeout,
            **extra)))
        items = result.get("items") or []
        return list(items), (result.get("metadata") or {}).get("continue") or None
