"""Sustained concurrent logins against a real concierge, from several client processes.

Why processes: one Python process driving 200 TLS connections spends its one
core on the client (TLS, HTTP parsing, JSON), and a slow client caps the
load while looking like a slow server. So the tasks are spread over worker
processes (`spawn`: a fresh interpreter, nothing forked from pytest's
threads), each an asyncio loop of httpx clients, and every worker reports the
CPU time it used: a worker that used well under one core for the run was
waiting on the server, not the other way round (`LoadResult.client_busiest`).

The other side of that check is `cpu_seconds`, the server process's own CPU
time: a concierge near one core (its event loop and the GIL) is what limits
the rate.

`spread` plans the usual load (each task repeating one user's login); a plan
may also walk a task through many users, so that new users keep arriving
during the run. Every request is recorded (start, end, status, Retry-After,
outcome, and why it failed), so a fault test can tell what clients saw
before, during and after an outage. A 200 counts as a success only if it
carries a credential for the user the token was minted for.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from localenv.concierge import MINTED_PREFIX, MintingIssuer
from pinniped_apis import wire

#: Outcomes of one request besides an HTTP status.
OK = "ok"  # 200 with a credential for the expected user
REJECTED = "rejected"  # 200 without a credential ("authentication failed")
WRONG_USER = "wrong_user"  # 200 with a credential for someone else
#: No HTTP answer at all: "transport_error:<httpx exception>" (ConnectError, ReadTimeout, ...).
TRANSPORT_ERROR = "transport_error"


@dataclass(frozen=True)
class Login:
    """One request body to send, and whose credential it must return."""

    body: bytes
    username: str


@dataclass(frozen=True)
class Sample:
    """One request as a client saw it (times from `time.time()`, so comparable across
    processes and with the test's own clock)."""

    started: float
    ended: float
    status: int  # 0 when there was no HTTP answer
    outcome: str  # OK, REJECTED, WRONG_USER, "transport_error:<exception>" or "http_<status>"
    retry_after: str | None
    #: Why it failed, in short: the Status message of an error answer, or the exception's.
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class LoadResult:
    samples: list[Sample]
    seconds: float
    #: CPU seconds each worker process used during the run (user + system).
    client_cpu_seconds: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.samples)

    def outcomes(self) -> Counter[str]:
        return Counter(s.outcome for s in self.samples)

    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.samples)

    def percentile(self, p: float, outcome: str | None = OK) -> float:
        """Latency (seconds) at percentile `p` (0-100) of the requests with `outcome`
        (None: all of them); nearest rank."""
        latencies = sorted(s.latency for s in self.samples
                           if outcome is None or s.outcome == outcome)
        if not latencies:
            return math.nan
        rank = max(1, math.ceil(p / 100 * len(latencies)))
        return latencies[rank - 1]

    @property
    def throughput(self) -> float:
        """Successful logins per second over the run."""
        return self.outcomes()[OK] / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_busiest(self) -> float:
        """The busiest worker's CPU use as a share of one core over the run (1.0: saturated)."""
        if not self.client_cpu_seconds or self.seconds <= 0:
            return 0.0
        return max(self.client_cpu_seconds) / self.seconds

    def between(self, start: float, end: float) -> list[Sample]:
        """Requests that started within [start, end)."""
        return [s for s in self.samples if start <= s.started < end]

    def failures(self, limit: int = 5) -> str:
        """The first few requests that did not succeed: when (seconds into the run), how long
        they took and what they got; for failure messages."""
        start = min((s.started for s in self.samples), default=0.0)
        bad = [s for s in self.samples if s.outcome != OK]
        shown = [f"at {s.started - start:.1f} s after {s.latency:.2f} s: {s.outcome} "
                 f"({s.detail})" for s in sorted(bad, key=lambda s: s.started)[:limit]]
        return "; ".join(shown) + (f"; and {len(bad) - limit} more" if len(bad) > limit else "")

    def details(self) -> Counter[str]:
        """How often each failure detail came (a 503's message names the API call that
        failed)."""
        return Counter(f"{s.outcome}: {s.detail}" for s in self.samples if s.outcome != OK)

    def summary(self) -> str:
        return (f"{self.requests} requests in {self.seconds:.1f} s "
                f"({self.throughput:.1f} logins/s); outcomes {dict(self.outcomes())}; "
                f"statuses {dict(self.statuses())}; p50 {self.percentile(50) * 1000:.0f} ms, "
                f"p99 {self.percentile(99) * 1000:.0f} ms (successes); client CPU "
                f"{self.client_busiest:.0%} of a core in the busiest of "
                f"{len(self.client_cpu_seconds)} workers")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a running process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minted_logins(issuer: MintingIssuer, users: int, *, first: int = 0,
                  lifetime: int = 600) -> list[Login]:
    """One ID token for each of `users` users (`load0000@example.com`, ...; every other one
    ES256), valid for `lifetime` seconds, as login request bodies for the `minted`
    authenticator (which prefixes names with `minted:`)."""
    logins = []
    for i in range(first, first + users):
        email = f"load{i:04d}@example.com"
        claims = issuer.claims(email, groups=["devs", f"team-{i % 5}"])
        claims["exp"] = claims["iat"] + lifetime
        token = issuer.mint(claims, alg="ES256" if i % 2 else "RS256")
        request = wire.TokenCredentialRequest.create(token=token, authenticator_name="minted")
        logins.append(Login(json.dumps(request.to_wire()).encode(), MINTED_PREFIX + email))
    return logins


def spread(logins: Sequence[Login], concurrency: int) -> list[list[Login]]:
    """`concurrency` tasks, task `i` sending `logins[i % len(logins)]` again and again (so 200
    tasks over 50 users' logins keep 4 logins of each user in flight)."""
    return [[logins[i % len(logins)]] for i in range(concurrency)]


def run_logins(url: str, ca_file: Path, tasks: Sequence[Sequence[Login]], *, seconds: float,
               processes: int = 4, request_timeout: float = 30.0) -> LoadResult:
    """Run one client task per entry of `tasks` for `seconds`, spread over `processes` workers.

    Each task sends its logins in turn, one at a time, over and over, until
    the time is up (`spread` makes the usual plan). Returns once every
    worker has finished its last request.
    """
    processes = max(1, min(processes, len(tasks)))
    path = url.rstrip("/") + wire.TOKEN_CREDENTIAL_REQUEST_PATH
    plans = [[(login.body, login.username) for login in task] for task in tasks]
    # Workers start together at `start_at`, after every interpreter is up and imported.
    start_at = time.time() + 3.0
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(_worker, path, str(ca_file), plans[w::processes], start_at=start_at,
                            seconds=seconds, request_timeout=request_timeout)
                for w in range(processes)]
        results = [job.result(timeout=seconds + request_timeout + 60) for job in jobs]
    samples = [s for worker_samples, _ in results for s in worker_samples]
    ended = max((s.ended for s in samples), default=start_at)
    return LoadResult(samples=samples, seconds=max(ended, start_at + seconds) - start_at,
                      client_cpu_seconds=[cpu for _, cpu in results])


def login_once_each(url: str, ca_file: Path, logins: Sequence[Login], *,
                    concurrency: int = 20, request_timeout: float = 30.0) -> list[Sample]:
    """Send each login once, `concurrency` at a time, from this process (for "does every
    user still get in" checks after a fault, not for load)."""
    import httpx

    path = url.rstrip("/") + wire.TOKEN_CREDENTIAL_REQUEST_PATH

    async def main() -> list[Sample]:
        gate = asyncio.Semaphore(concurrency)
        context = ssl.create_default_context(cafile=str(ca_file))
        async with httpx.AsyncClient(verify=context, timeout=request_timeout) as http:
            async def one(login: Login) -> list[Sample]:
                async with gate:
                    return await _task(http, path, [(login.body, login.username)],
                                       deadline=time.time(), turns=1)
            per_login = await asyncio.gather(*(one(login) for login in logins))
        return [s for samples in per_login for s in samples]

    return asyncio.run(main())


def audit_figures(audit: Sequence[Mapping[str, Any]]) -> str:
    """What the concierge's audit lines say about a run: reasons, and the Kubernetes API
    calls of each login (p50, p99, max)."""
    calls = sorted(int(line.get("kubeApiCalls") or 0) for line in audit
                   if line.get("request") == "login")
    reasons = Counter(str(line.get("reason")) for line in audit)
    if not calls:
        return f"no logins audited; reasons {dict(reasons)}"
    p99 = calls[max(0, math.ceil(0.99 * len(calls)) - 1)]
    return (f"{len(audit)} audit lines, reasons {dict(reasons)}; kubeApiCalls per login p50 "
            f"{calls[len(calls) // 2]}, p99 {p99}, max {calls[-1]}")


def _worker(path: str, ca_file: str, plans: list[list[tuple[bytes, str]]], *, start_at: float,
            seconds: float, request_timeout: float) -> tuple[list[Sample], float]:
    """One process's share of the tasks; returns its samples and the CPU time it used."""
    import httpx  # imported here: the parent (pytest) need not pay for it twice

    async def main() -> list[Sample]:
        context = ssl.create_default_context(cafile=ca_file)
        # httpx's default keep-alive expiry (5 s), as the CLI has.
        limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
        async with httpx.AsyncClient(verify=context, limits=limits,
                                     timeout=request_timeout) as http:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            deadline = start_at + seconds
            per_task = await asyncio.gather(*(_task(http, path, plan, deadline)
                                              for plan in plans))
        return [s for samples in per_task for s in samples]

    cpu_before = time.process_time()
    samples = asyncio.run(main())
    return samples, time.process_time() - cpu_before


async def _task(http: object, path: str, plan: list[tuple[bytes, str]],
                deadline: float, turns: int | None = None) -> list[Sample]:
    """Send the plan's logins in turn until `deadline`, or exactly `turns` of them."""
    import httpx

    assert isinstance(http, httpx.AsyncClient)
    headers = {"Content-Type": "application/json"}
    samples: list[Sample] = []
    turn = 0
    while True:
        started = time.time()
        if (started >= deadline) if turns is None else (turn >= turns):
            return samples
        body, username = plan[turn % len(plan)]
        turn += 1
        try:
            response = await http.post(path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            samples.append(Sample(started, time.time(), 0,
                                  f"{TRANSPORT_ERROR}:{type(exc).__name__}", None,
                                  str(exc)[:200]))
            await asyncio.sleep(0.05)  # a refused connection returns at once: do not spin
            continue
        outcome = outcome_of(response.status_code, response.content, username)
        samples.append(Sample(started, time.time(), response.status_code, outcome,
                              response.headers.get("retry-after"),
                              "" if outcome == OK else _message(response.content)))


def _message(content: bytes) -> str:
    """The `message` of a Status (or of a login's failure), cut short."""
    try:
        answer = json.loads(content)
        message = answer.get("message") or (answer.get("status") or {}).get("message")
    except (ValueError, AttributeError):
        return content[:200].decode(errors="replace")
    return str(message)[:200]


def outcome_of(status: int, content: bytes, username: str) -> str:
    if status != 200:
        return f"http_{status}"
    try:
        answer = json.loads(content)["status"]
    except (ValueError, KeyError, TypeError):
        return REJECTED
    credential = answer.get("credential") if isinstance(answer, dict) else None
    if not isinstance(credential, dict) or not credential.get("token"):
        return REJECTED
    identity = answer.get("identity") or {}
    return OK if identity.get("username") == username else WRONG_USER
