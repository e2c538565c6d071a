"""Where the concierge's time goes on the returning-user path: a py-spy profile.

py-spy (from PyPI, installed in the benchmark venv) samples the running
concierge process from outside, without changing its code, while 8 clients
log returning users in. With `--gil` it records only the thread holding the
GIL at each sample, so the samples are where Python-level CPU went (a
thread waiting on a socket, a lock or the apiserver holds no GIL; neither
does OpenSSL while it encrypts, which the process's CPU time still counts).
Samples kept per sample taken is how busy the GIL was. The summary lists the
functions with the most samples of their own ("self"), and the share of
samples spent inside each library ("inclusive": a sample counts for every
library on its stack).
"""

from __future__ import annotations

import collections
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.benchmark import concierge_client, concierge_returning, kube_http
from tests.benchmark.load import closed_loop
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack

CLIENTS = 8
RATE = 250
#: Libraries to attribute samples to, by a piece of the file's path.
LIBRARIES = ("pinniped_concierge", "pinniped_apis", "kubernetes", "urllib3", "ssl.py",
             "json", "uvicorn", "h11", "httptools", "starlette", "fastapi", "pydantic",
             "joserfc", "cryptography", "asyncio", "concurrent/futures", "threading.py",
             "logging", "prometheus_client", "yaml", "dateutil", "copy.py")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def run(stack: Stack, scratch: Path, *, seconds: int) -> dict[str, Any]:
    pid = stack.concierge.pid
    if pid is None:
        raise RuntimeError("the concierge is not running")
    output = scratch / "concierge-profile.txt"
    argv = [str(stack.venv.script("py-spy")), "record", "--pid", str(pid),
            "--duration", str(seconds), "--rate", str(RATE), "--format", "raw", "--gil",
            "--nonblocking", "--output", str(output)]
    log(f"profiling the concierge with py-spy for {seconds} s under {CLIENTS} clients")
    stop = threading.Event()
    context = kube_http.tls_context(stack.ca.cert_path)
    logins = 0

    def load() -> None:
        nonlocal logins
        cursor = 0
        while not stop.is_set():
            users = [(cursor + n) % concierge_returning.POOL for n in range(CLIENTS * 4)]
            cursor += len(users)
            jobs = concierge_client.login_jobs(stack, concierge_returning.KIND, users)
            closed_loop(stack.concierge.url, context, jobs,
                        warmups=[concierge_returning.noop] * CLIENTS)
            logins += len(jobs)

    loader = threading.Thread(target=load, name="profile-load")
    loader.start()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                                check=False)
    finally:
        stop.set()
        loader.join(timeout=120)
    if result.returncode != 0 or not output.exists():
        return {"tool": "py-spy", "error": (result.stderr or result.stdout)[-800:]}
    summary = summarise(output.read_text())
    return summary | {"tool": "py-spy record --gil --nonblocking", "rate_hz": RATE,
                      "seconds": seconds, "logins_during_profile": logins,
                      "gil_busy": round(summary["samples"] / (RATE * seconds), 2)}


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Self and per-library shares from py-spy's raw (collapsed stacks) output.

    `libraries_self` gives each sample to one library, the innermost one on its
    stack that is in LIBRARIES (so the shares add up to 1); `threads` splits
    the samples between the worker threads that run the blocking Kubernetes
    client (`asyncio.to_thread`) and everything else (the event loop: HTTP,
    the app, token verification).
    """
    own: collections.Counter[str] = collections.Counter()
    inside: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    workers = 0
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(part) for part in stack.split(";") if part]
        if frames:
            own[frames[-1][0]] += count
        libraries = {library for _, file in frames for library in LIBRARIES if library in file}
        for library in libraries:
            inside[library] += count
        innermost[next((library for _, file in reversed(frames) for library in LIBRARIES
                        if library in file), "other")] += count
        if any("concurrent/futures/thread.py" in file for _, file in frames):
            workers += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "top_self": [{"function": name, "share": round(n / total, 3)}
                     for name, n in own.most_common(top)],
        "libraries_inclusive": {name: round(n / total, 3) for name, n in inside.most_common()},
        "libraries_self": {name: round(n / total, 3) for name, n in innermost.most_common()},
        "threads": {"kubernetes client worker threads": round(workers / total, 3),
                    "event loop and the rest": round((total - workers) / total, 3)},
    }


def _frame(text: str) -> tuple[str, str]:
    """("function (short file)", file) of one collapsed frame."""
    match = _FRAME.match(text.strip())
    if match is None:
        return text, ""
    file = match.group("file")
    short = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", file)
    return f"{match.group('function')} ({short})", file
