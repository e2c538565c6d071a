"""Run one command and report its wall time and its own peak RSS, from a small process.

    python -I -S spawn_child.py STDOUT_FILE -- COMMAND [ARGS...]

Why a separate launcher: Linux counts the memory of the process that forked
a child, as it was before the child's exec, in that child's ru_maxrss. Timed
from the benchmark harness (some 60 MB resident), every child would report at
least 60 MB. This launcher is stdlib only and started with -I -S, so its own
few MB are the floor (`tests.benchmark.child_process` reports the floor too).
Prints one JSON line: {"seconds": ..., "maxrss_kb": ..., "exit": ...}.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    stdout_path, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: spawn_child.py STDOUT_FILE -- COMMAND [ARGS...]")
    fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    started = time.perf_counter()
    pid = os.posix_spawn(command[0], command, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)])
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    os.close(fd)
    print(json.dumps({"seconds": elapsed, "maxrss_kb": usage.ru_maxrss,
                      "exit": os.waitstatus_to_exitcode(status)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
