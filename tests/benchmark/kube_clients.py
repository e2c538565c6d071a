"""Figure 3c (opt-in, `--only clients`): the floor of the concierge's returning-login ratio,
and whether another Kubernetes API client would lower it.

A returning login is an HTTPS request in, and two Kubernetes API calls out (a
session Secret, then a TokenRequest bound to it). So the least a concierge
can cost is its HTTP layer plus its API client making those two calls. This
measures each part, all taking turns in one run, at 1, 8 and 32 concurrent
clients, against the same direct baseline as figure 3:

- **concierge**: real returning logins (figure 3's A);
- **direct**: the two calls straight to the apiserver (figure 3's B, threads
  with `http.client`: the cheapest client there is);
- **HTTP layer alone**: an empty FastAPI endpoint under uvicorn over TLS,
  behind the concierge's own front door (`kube_clients_server`);
- **HTTP layer + client X**: the same server making the two calls with X;
- **client X alone**: the two calls timed inside that server's process,
  with no HTTP request in front.

X is the official client through the concierge's own `KubernetesClientAPI`
(its 32-thread pool and model conversions), `kubernetes_asyncio`, `lightkube`
(async), plain `httpx.AsyncClient`, and `http.client` in a thread pool with a
keep-alive connection per thread (the shape of a thin client of our own: the
official client's hand-off without urllib3 and the models). The clients need
packages the product
does not ship, so they run in a venv of their own (`bench_venv`'s machinery,
with `CLIENT_REQUIREMENTS`): a regular install of the checkout plus those.

CPU per operation: for the concierge and the server, its process's CPU time
(all threads, from /proc) across a batch over the requests in it; for
"client X alone", the server process's own CPU time across the timed pairs.
The floor of the ratio is min over X of p50(HTTP layer + X) / p50(direct).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localenv.procs import ManagedProcess, free_port, wait_for
from tests.benchmark import (
    concierge_client,
    concierge_returning,
    kube_http,
    procstat,
    stats,
)
from tests.benchmark.kube_clients_server import CLIENTS, LIBRARIES, THIN
from tests.benchmark.load import Job, closed_loop
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack
from tests.benchmark.timed_http import KeepAlive
from tests.benchmark.user_objects import Caller

KIND = "floor"
#: What the clients venv has on top of `pinniped-py[concierge]`.
CLIENT_REQUIREMENTS = ("kubernetes_asyncio>=31", "lightkube>=0.15")
SERVER_SCRIPT = Path(__file__).with_name("kube_clients_server.py")


@dataclass
class Sample:
    """One batch of one row: its latencies, the CPU seconds it cost, its rate."""

    latencies: list[float]
    cpu_seconds: float
    per_second: float


#: Runs one batch of a row: (the users to time, one user per client to warm up with).
Batch = Callable[[list[int], list[int]], Sample]


@dataclass
class Series:
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    rates: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.latencies += sample.latencies
        self.cpu_seconds += sample.cpu_seconds
        self.rates.append(sample.per_second)


def run(stack: Stack, clients_python: Path, *, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    accounts = concierge_returning.returning_pool(stack, KIND)
    workdir = stack.workdir / "clients"
    workdir.mkdir(mode=0o700, exist_ok=True)
    spec = workdir / "accounts.json"
    spec.write_text(json.dumps({"namespace": stack.concierge.namespace,
                                "accounts": [list(a) for a in accounts]}))
    server, port = _start_server(stack, clients_python, workdir, spec)
    try:
        levels = []
        for concurrency in concierge_returning.CONCURRENCY:
            rows = _rows(stack, accounts, server.pid, f"https://127.0.0.1:{port}", concurrency)
            size = concierge_returning.batch_size(concurrency, quick)
            series = {name: Series() for name in rows}
            cursor = 0
            for turn in range(rounds):
                users = [(cursor + n) % len(accounts) for n in range(size)]
                warm = [(cursor + size + n) % len(accounts) for n in range(concurrency)]
                cursor += size + concurrency
                names = list(rows)
                # Each round starts one row later, so no row always follows the same one.
                for name in names[turn % len(names):] + names[:turn % len(names)]:
                    series[name].add(rows[name](users, warm))
            levels.append(_level(concurrency, rounds, size, series))
    except BaseException:
        log(f"the clients server's log ends:\n{server.log_tail()}")
        raise
    finally:
        server.stop()
    return {"pool_users": len(accounts), "clients": list(CLIENTS), "levels": levels,
            "floor": _floor(levels)}


def _rows(stack: Stack, accounts: list[tuple[str, str, str]], server_pid: int, url: str,
          concurrency: int) -> dict[str, Batch]:
    """How to run one batch of each row, at `concurrency` clients."""
    context = kube_http.tls_context(stack.ca.cert_path)
    namespace = stack.concierge.namespace
    concierge_pid = stack.concierge.pid
    assert concierge_pid is not None
    pad = {"pad": "x" * len(json.dumps(concierge_client.login_body(stack, KIND, 0)))}
    direct_caller = Caller(stack.concierge_token())

    def server_cpu() -> float:
        return procstat.cpu_seconds(server_pid)

    def concierge(users: list[int], warm: list[int]) -> Sample:
        out = closed_loop(stack.concierge.url, context,
                          concierge_client.login_jobs(stack, KIND, users),
                          warmups=concierge_client.login_jobs(stack, KIND, warm),
                          meter=lambda: procstat.cpu_seconds(concierge_pid))
        return Sample(out.latencies, out.metered, out.per_second)

    def direct(users: list[int], warm: list[int]) -> Sample:
        out = closed_loop(stack.cluster.server, context,
                          [concierge_returning.direct_job(namespace, *accounts[u]) for u in users],
                          warmups=[concierge_returning.direct_job(namespace, *accounts[u])
                                   for u in warm], caller=direct_caller)
        return Sample(out.latencies, out.client_cpu_seconds, out.per_second)

    def empty(users: list[int], warm: list[int]) -> Sample:
        out = closed_loop(url, context, [_post("/empty", pad)] * len(users),
                          warmups=[_post("/empty", pad)] * len(warm), meter=server_cpu)
        return Sample(out.latencies, out.metered, out.per_second)

    def through_http(client: str) -> Batch:
        def batch(users: list[int], warm: list[int]) -> Sample:
            out = closed_loop(url, context,
                              [_post(f"/pair/{client}", {"account": u}) for u in users],
                              warmups=[_post(f"/pair/{client}", {"account": u}) for u in warm],
                              meter=server_cpu)
            return Sample(out.latencies, out.metered, out.per_second)

        return batch

    def alone(client: str) -> Batch:
        def batch(users: list[int], warm: list[int]) -> Sample:
            timed = _measure_in_server(url, context, client, users, len(warm))
            return Sample(timed["latencies"], timed["cpu_seconds"],
                          len(timed["latencies"]) / timed["wall_seconds"])

        return batch

    rows: dict[str, Batch] = {"concierge": concierge, "direct": direct,
                              "HTTP layer alone": empty}
    rows |= {f"HTTP layer + {client}": through_http(client) for client in CLIENTS}
    rows |= {f"{client} alone": alone(client) for client in CLIENTS}
    return rows


def _post(path: str, body: dict[str, Any]) -> Job:
    def job(connection: KeepAlive) -> None:
        connection.expect("POST", path, body, statuses=(200,))

    return job


def _measure_in_server(url: str, context: Any, client: str, users: list[int],
                       concurrency: int) -> dict[str, Any]:
    connection = KeepAlive(url, context)
    try:
        answer: dict[str, Any] = json.loads(connection.expect("POST", "/measure", {
            "variant": client, "accounts": users, "concurrency": concurrency},
            statuses=(200,)))
    finally:
        connection.close()
    return answer


def _start_server(stack: Stack, python: Path, workdir: Path,
                  spec: Path) -> tuple[ManagedProcess, int]:
    cert = stack.ca.issue(workdir, "clients-server")
    port = free_port()
    log(f"starting the HTTP-layer and API-client server on port {port} ({python})")
    process = ManagedProcess("clients-server", [
        str(python), "-I", str(SERVER_SCRIPT), "--port", str(port),
        "--cert", str(cert.cert_path), "--key", str(cert.key_path),
        "--kubeconfig", str(stack.workdir / "concierge" / "concierge.kubeconfig"),
        "--accounts", str(spec)], workdir / "server.log", cwd=Path("/"))
    context = kube_http.tls_context(stack.ca.cert_path)

    def answering() -> bool:
        try:
            connection = KeepAlive(f"https://127.0.0.1:{port}", context)
            try:
                return connection.request("POST", "/empty", {})[0] == 200
            finally:
                connection.close()
        except OSError:
            return False

    try:
        wait_for(answering, 60, "the clients server", process)
    except BaseException:
        process.stop()
        raise
    return process, port


def _level(concurrency: int, rounds: int, size: int,
           series: dict[str, Series]) -> dict[str, Any]:
    direct = statistics.median(series["direct"].latencies)
    rows: dict[str, dict[str, Any]] = {}
    for name, entry in series.items():
        rows[name] = {"ms": stats.summary(entry.latencies, 1000),
                      "per_second": round(statistics.median(entry.rates), 1),
                      "cpu_ms_per_op": round(entry.cpu_seconds / len(entry.latencies) * 1000, 2),
                      "p50_ratio_to_direct": stats.ratio(
                          statistics.median(entry.latencies), direct)}
    for name, row in rows.items():
        log(f"clients, {concurrency:>2} clients, {name:32s} p50 {row['ms']['median']:7.2f} ms "
            f"p99 {row['ms']['p99']:7.2f} ms {row['per_second']:7.1f}/s, CPU "
            f"{row['cpu_ms_per_op']:5.2f} ms/op, x{row['p50_ratio_to_direct']:.2f} direct")
    return {"concurrency": concurrency, "rounds": rounds, "batch": size, "rows": rows}


def _floor(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Per concurrency: the best client library, and the ratio and CPU a concierge built on
    it and on this HTTP layer could not go below; the same for the thin client."""
    floor: dict[str, Any] = {}
    for level in levels:
        rows: dict[str, dict[str, Any]] = level["rows"]
        with_http = {client: rows[f"HTTP layer + {client}"] for client in CLIENTS}
        best = min(LIBRARIES, key=lambda client: with_http[client]["ms"]["median"])
        floor[str(level["concurrency"])] = {
            "best_library": best,
            "p50_ratio_floor": with_http[best]["p50_ratio_to_direct"],
            "cpu_ms_floor": with_http[best]["cpu_ms_per_op"],
            "official_p50_ratio_floor": with_http["official"]["p50_ratio_to_direct"],
            "official_cpu_ms_floor": with_http["official"]["cpu_ms_per_op"],
            "thin_client_p50_ratio_floor": with_http[THIN]["p50_ratio_to_direct"],
            "thin_client_cpu_ms_floor": with_http[THIN]["cpu_ms_per_op"],
            "http_layer_cpu_ms": rows["HTTP layer alone"]["cpu_ms_per_op"],
            "concierge_p50_ratio": rows["concierge"]["p50_ratio_to_direct"],
            "concierge_cpu_ms": rows["concierge"]["cpu_ms_per_op"]}
    return floor
