"""A closed-loop load generator: C clients, each on its own keep-alive connection, each
sending its next request as soon as the last one is answered.

Clients are threads with `http.client` (cheap per request, see `timed_http`);
each one first sends one untimed request, so handshakes are not timed, and
all start together. The harness's own CPU time is reported next to the
figures, so a reader can tell whether the client could have been the limit.
"""

from __future__ import annotations

import resource
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.benchmark.timed_http import KeepAlive
from tests.benchmark.user_objects import Caller

Job = Callable[[KeepAlive], None]


@dataclass
class Outcome:
    latencies: list[float]
    wall_seconds: float
    client_cpu_seconds: float
    #: How much `meter` (say, a server's CPU seconds) moved while the timed jobs ran.
    metered: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall_seconds


def closed_loop(server: str, context: ssl.SSLContext, jobs: Sequence[Job],
                warmups: Sequence[Job], *, caller: Caller | None = None,
                meter: Callable[[], float] | None = None) -> Outcome:
    """Run `jobs` with len(`warmups`) clients; client i first runs warmups[i], untimed.

    `meter` is read when the timed part starts and when the last client is done.
    """
    concurrency = len(warmups)
    lock = threading.Lock()
    pending = iter(jobs)
    latencies: list[float] = []
    errors: list[BaseException] = []
    finished: list[float] = []
    marks: dict[str, float] = {}

    def start() -> None:
        """Run once, when every client has warmed up and before any is let go."""
        marks["meter"] = meter() if meter is not None else 0.0
        marks["cpu"] = _cpu()
        marks["time"] = time.perf_counter()

    ready = threading.Barrier(concurrency + 1, action=start)

    def client(warmup: Job) -> None:
        connection = KeepAlive(server, context, caller)
        try:
            warmup(connection)
        except BaseException as exc:
            errors.append(exc)
        try:
            ready.wait(timeout=120)
            while not errors:
                with lock:
                    job = next(pending, None)
                if job is None:
                    break
                started = time.perf_counter()
                job(connection)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
        except BaseException as exc:
            errors.append(exc)
        finally:
            with lock:
                finished.append(time.perf_counter())
            connection.close()

    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a thread with an answer waiting gets the GIL promptly
    threads = [threading.Thread(target=client, args=(warmup,), name=f"client-{n}", daemon=True)
               for n, warmup in enumerate(warmups)]
    try:
        for thread in threads:
            thread.start()
        ready.wait(timeout=120)
        for thread in threads:
            thread.join()
        metered = (meter() - marks["meter"]) if meter is not None else 0.0
    except BaseException as exc:  # Ctrl-C: the clients stop after the request in hand
        errors.append(exc)
        raise
    finally:
        sys.setswitchinterval(previous_interval)
    if errors:
        raise errors[0]
    return Outcome(latencies, max(finished) - marks["time"], _cpu() - marks["cpu"], metered)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
