"""A minute of 200 concurrent logins from 50 users against the real concierge and apiserver.

What must hold under load: every login gets its credential (no 5xx, and no
409 from a race between logins of one user ever reaches a client), and the
cluster is left exactly right: one ServiceAccount, ClusterRole and
ClusterRoleBinding per user, and at most `maxSessionsPerUser` live session
Secrets each. The figures (requests, outcomes, p50/p99, throughput, the
client's own CPU share) are printed, for the closing note.

The tokens come from a `MintingIssuer` (one per user, RS256 and ES256 mixed,
reused by every login of that user the way the CLI reuses its cached ID
token). The client runs in 4 processes (`localenv.load`), and the test
fails if any of them used most of a core: the server, not the client, must
be what limits the rate (the concierge's own CPU share is printed beside).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.load import OK, audit_figures, cpu_seconds, minted_logins, run_logins, spread
from localenv.user_census import Census, remove_user_objects

pytestmark = [pytest.mark.integration, pytest.mark.load]

USERS = 50
CONCURRENCY = 200
SECONDS = 60
MAX_SESSIONS_PER_USER = 50
#: The client must not be the bottleneck: no worker process may use more of a core than this.
CLIENT_CPU_CEILING = 0.8


def test_200_concurrent_logins_from_50_users_for_a_minute(
        tmp_path: Path, local_ca: pki.CA, idp: LocalIdP, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    with MintingIssuer.start(tmp_path / "issuer", local_ca) as issuer:
        logins = minted_logins(issuer, USERS)
        # Room for the 200 client connections plus probes; the local rate limit is generous.
        concierge = concierge_factory(idp, extra_issuers=[issuer], maxConcurrentRequests=400,
                                      maxSessionsPerUser=MAX_SESSIONS_PER_USER)
        assert concierge.pid is not None
        try:
            cpu_before = cpu_seconds(concierge.pid)
            result = run_logins(concierge.url, concierge.ca_file, spread(logins, CONCURRENCY),
                                seconds=SECONDS)
            server_cpu = (cpu_seconds(concierge.pid) - cpu_before) / result.seconds
            census = Census.take(cluster, concierge.namespace)
            audit = concierge.audit_lines()
        finally:
            concierge.stop()
            remove_user_objects(cluster, concierge.namespace)
    print(f"\nload: {result.summary()}; the concierge used {server_cpu:.0%} of a core\n"
          f"load: {census.session_count()} live sessions after, "
          f"at most {census.max_sessions()} for one user; {audit_figures(audit)}\n"
          f"load: failures by detail {result.details().most_common(8)}")

    statuses = result.statuses()
    assert result.requests > CONCURRENCY * 5, result.summary()  # it really was sustained
    assert not [s for s in statuses if s >= 500], result.failures()
    assert 409 not in statuses, result.failures()
    assert result.outcomes() == {OK: result.requests}, result.failures()
    # Every request reached the API and was audited as the success the client saw.
    assert Counter(line["outcome"] for line in audit) == {"success": result.requests}
    assert census.problems([login.username for login in logins], MAX_SESSIONS_PER_USER) == []
    assert result.client_busiest < CLIENT_CPU_CEILING, result.summary()
