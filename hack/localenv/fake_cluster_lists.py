"""`FakeKube` that also lists cluster-scoped kinds, as `cluster_lists.ClusterLister` does.

The idle-user clean-up lists our ClusterRoles and ClusterRoleBindings; the
fake keeps cluster-scoped objects under namespace None, and its namespaced
list already matches on that, with the same label selectors, paging and
call recording ("list ClusterRole").
"""

from __future__ import annotations

from typing import cast

from localenv.fixtures_concierge import FakeKube
from pinniped_concierge.kubeapi import Kind, Obj


class ListingFakeKube(FakeKube):
    async def list_cluster(self, kind: Kind, label_selector: str, limit: int,
                           continue_token: str | None = None
                           ) -> tuple[list[Obj], str | None]:
        if kind not in (Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
            raise ValueError(f"{kind} is not cluster-scoped")
        return await self.list(kind, cast(str, None), label_selector, limit, continue_token)
