"""One check that no secret ever reaches a log or a terminal, over the whole pytest session.

Each test already asserts that its own secrets stay out of its own output, but a
leak can sit where no single test looks: a debug line during an outage, an error
message on a path only the fuzzer reaches. So this sentinel, loaded as a pytest
plugin, gathers two things for the whole run and `test_no_secret_leaked` (moved
to the end of the run) scans one against the other:

- **secrets**: every ID, refresh, access and cluster token and every password the
  harness sees, registered where it appears (`register`). They stay in memory only.
- **streams**: every concierge log and audit log (`watch_file`), and what every
  `pinniped`, `pinniped-concierge` and `kubectl` subprocess wrote. For those, the
  plugin wraps `subprocess.Popen` once for the session, so no fixture has to
  remember to report its output. kubectl's stdout is left out (it is what the
  person asked kubectl to print; the plugin kubectl runs writes to kubectl, not
  there), and so is exactly the ExecCredential that `pinniped login oidc` is
  meant to print on stdout (its token is registered instead).

The scan looks for every registered secret in every form `fixtures_cli.secret_forms`
gives (plain, JSON-escaped, base64 at all alignments), and for anything shaped like
a JWT (`eyJ...` header and payload), plain or inside base64, registered or not:
the CLI gets tokens from the IdP and the concierge that the harness never sees.
Registered JWTs are found by that shape search (one regex pass, then a lookup),
so the per-secret search runs only for the opaque secrets, and the thousands of
tokens a load test mints cost no more than one pass over the bytes.

Findings name the stream and the kind of secret with a short hash, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import hashlib
import json
import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker

if TYPE_CHECKING:  # the harness modules that register secrets must not pull pytest in
    import pytest

#: pytest's own marker (what `pytest.hookimpl` is), without importing pytest.
hookimpl = HookimplMarker("pytest")

#: Kinds of secret, as findings name them.
ID_TOKEN = "ID token"
REFRESH_TOKEN = "refresh token"
ACCESS_TOKEN = "access token"
CLUSTER_TOKEN = "cluster token"
PASSWORD = "password"
HOSTILE_TOKEN = "hostile token"
UNREGISTERED_JWT = "unregistered JWT-shaped string"

#: Bounds on what the sentinel keeps (it must not be the thing that exhausts memory).
MAX_SECRETS = 200_000
MAX_SECRET_BYTES = 256 * 1024 * 1024
MAX_RECORDED_BYTES = 256 * 1024 * 1024
#: Shorter secrets are not looked for (`secret_forms` drops forms under 8 bytes too).
MIN_SECRET_LENGTH = 8

#: What a JWT is, for deciding which registered secrets the shape search covers: a
#: header and a payload (both base64url JSON objects, so both start `eyJ`), and its
#: signature if there is one.
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*)?")
#: What the shape search looks for: a whole payload segment after a header's tail. So it
#: still finds a JWT whose first bytes were lost to a base64 alignment or a cut log line,
#: and names it by its payload (the part that is one token's own).
JWT_PAYLOAD = re.compile(rb"[A-Za-z0-9_-]{2}\.(eyJ[A-Za-z0-9_-]{5,})")
#: Runs that may be base64 (either alphabet) long enough to hold an encoded JWT.
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")

#: Programs whose output is watched, by the basename of argv[0] (or `-m pinniped_cli`, or
#: what a `python -c CODE` wrapper runs: its output is the program's).
CLI = "pinniped"
CONCIERGE = "pinniped-concierge"
KUBECTL = "kubectl"
WATCHED_PROGRAMS = (CLI, CONCIERGE, KUBECTL)


def fingerprint(data: str | bytes) -> str:
    """A short, stable stand-in for a secret in a failure message: enough to correlate."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class Stream:
    """Bytes some program wrote, and a label saying whose (never argv: it may hold a token)."""

    label: str
    data: bytes


@dataclass(frozen=True)
class Finding:
    stream: str
    kind: str
    secret: str  # a fingerprint, never the secret
    form: str

    def __str__(self) -> str:
        return f"{self.kind} {self.secret} ({self.form}) in {self.stream}"


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    streams: int
    bytes_scanned: int
    secrets: Counter[str]
    dropped: int

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind}s" for kind, n in sorted(self.secrets.items()))
        return (f"scanned {self.streams} streams ({self.bytes_scanned} bytes) for "
                f"{sum(self.secrets.values())} secrets ({kinds or 'none'}); "
                f"{self.dropped} not kept (over the bounds)")


def is_jwt_shaped(secret: str) -> bool:
    """Whether the shape search finds `secret` in each of its `secret_forms`."""
    return JWT.fullmatch(secret.encode("utf-8", "surrogatepass")) is not None


def _payload(jwt: str) -> bytes:
    return jwt.encode().split(b".")[1]


def forms_of(secret: str) -> list[bytes]:
    """`fixtures_cli.secret_forms`, also for the odd hostile token that is not valid
    UTF-8 (a lone surrogate): such a string can only ever be written JSON-escaped."""
    from localenv.fixtures_cli import secret_forms

    try:
        return secret_forms(secret)
    except UnicodeEncodeError:
        return [json.dumps(secret)[1:-1].encode()]


def base64_views(data: bytes) -> Iterator[bytes]:
    """Every run of base64 characters in `data`, decoded at each of the four alignments.

    Whatever the grouping of the text around an encoded secret, one of the four
    lines up with it, and both alphabets decode the same once translated.
    """
    for run in BASE64_RUN.finditer(data):
        text = run.group().translate(_URLSAFE_TO_STANDARD)
        for offset in range(4):
            chunk = text[offset:]
            chunk = chunk[:len(chunk) // 4 * 4]
            with contextlib.suppress(binascii.Error, ValueError):
                yield base64.b64decode(chunk)


class Sentinel:
    """Secrets and streams for one session; `scan` sets them against each other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._secret_bytes = 0
        self._recorded: list[Stream] = []
        self._recorded_bytes = 0
        self._files: dict[Path, str] = {}
        self.dropped = 0

    # -- collecting ---------------------------------------------------------------------------

    def register(self, kind: str, secret: object) -> None:
        """Remember `secret` (a str; anything else is ignored) as one of `kind`."""
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret in self._secrets:
                return
            if (len(self._secrets) >= MAX_SECRETS
                    or self._secret_bytes + len(secret) > MAX_SECRET_BYTES):
                self.dropped += 1
                return
            self._secrets[secret] = kind
            self._secret_bytes += len(secret)

    def register_token_response(self, body: Mapping[str, Any]) -> None:
        """The tokens of an OAuth token endpoint's answer."""
        self.register(ID_TOKEN, body.get("id_token"))
        self.register(REFRESH_TOKEN, body.get("refresh_token"))
        self.register(ACCESS_TOKEN, body.get("access_token"))

    def watch_file(self, label: str, path: Path) -> None:
        """Read `path` at scan time (a log a process keeps writing to)."""
        with self._lock:
            self._files.setdefault(Path(path).resolve(), label)

    def record(self, label: str, data: str | bytes | None) -> None:
        """Output already captured (a subprocess's stderr, say)."""
        if not data:
            return
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        with self._lock:
            if self._recorded_bytes + len(raw) > MAX_RECORDED_BYTES:
                self.dropped += 1
                return
            self._recorded.append(Stream(label, raw))
            self._recorded_bytes += len(raw)

    def record_output(self, program: str, stdout: str | bytes | None,
                      stderr: str | bytes | None) -> None:
        """What a watched program wrote, minus what it is meant to write on stdout."""
        where = os.environ.get("PYTEST_CURRENT_TEST", "outside a test").removesuffix(" (call)")
        self.record(f"stderr of {program} ({where})", stderr)
        if program != KUBECTL:
            self.record(f"stdout of {program} ({where})", self.without_exec_credential(stdout))

    def without_exec_credential(self, stdout: str | bytes | None) -> str | bytes | None:
        """`stdout`, or nothing if it is exactly one ExecCredential (whose token is then
        registered): the plugin must print the cluster token there, and only there."""
        if not stdout:
            return stdout
        try:
            document = json.loads(stdout)
        except ValueError:
            return stdout
        if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
            return stdout
        status = document.get("status")
        self.register(CLUSTER_TOKEN, status.get("token") if isinstance(status, dict) else None)
        return None

    # -- scanning -----------------------------------------------------------------------------

    def secrets(self) -> dict[str, str]:
        with self._lock:
            return dict(self._secrets)

    def streams(self) -> list[Stream]:
        with self._lock:
            recorded = list(self._recorded)
            files = dict(self._files)
        for path, label in sorted(files.items()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if label == f"stdout of {CLI}":  # a file the CLI's stdout went to
                kept = self.without_exec_credential(data)
                data = kept if isinstance(kept, bytes) else b""
            recorded.append(Stream(f"{label} {path}", data))
        return recorded

    def scan(self) -> Report:
        streams = self.streams()  # first: reading them may register an ExecCredential's token
        secrets = self.secrets()
        findings = _shape_findings(streams, secrets) + _exact_findings(streams, secrets)
        return Report(findings=sorted(set(findings), key=str), streams=len(streams),
                      bytes_scanned=sum(len(s.data) for s in streams),
                      secrets=Counter(secrets.values()), dropped=self.dropped)


def _shape_findings(streams: Iterable[Stream], secrets: Mapping[str, str]) -> list[Finding]:
    """Every JWT-shaped string, plain or base64-encoded, named by its kind if registered."""
    by_payload = {_payload(s): kind for s, kind in secrets.items() if is_jwt_shaped(s)}
    found = []
    for stream in streams:
        views = [("plain", stream.data)] + [("base64", v) for v in base64_views(stream.data)]
        for form, view in views:
            for match in JWT_PAYLOAD.finditer(view):
                payload = match.group(1)
                found.append(Finding(stream.label, by_payload.get(payload, UNREGISTERED_JWT),
                                     fingerprint(payload), f"JWT-shaped, {form}"))
    return found


def _exact_findings(streams: list[Stream], secrets: Mapping[str, str]) -> list[Finding]:
    """Each secret the shape search cannot see, in each of its forms, in every stream."""
    separator = b"\n\0\n"
    starts, offset = [], 0
    for stream in streams:
        starts.append(offset)
        offset += len(stream.data) + len(separator)
    haystack = separator.join(s.data for s in streams)
    found = []
    for secret, kind in secrets.items():
        if is_jwt_shaped(secret):
            continue
        for form in forms_of(secret):
            at = haystack.find(form)
            while at >= 0:  # once per stream is enough
                index = bisect.bisect_right(starts, at) - 1
                found.append(Finding(streams[index].label, kind, fingerprint(secret),
                                     "one of its forms"))
                at = haystack.find(form, starts[index] + len(streams[index].data))
    return found


# --- the session-wide instance, and the pytest plugin ------------------------------------------

SENTINEL = Sentinel()


def register(kind: str, secret: object) -> None:
    SENTINEL.register(kind, secret)


def register_token_response(body: Mapping[str, Any]) -> None:
    SENTINEL.register_token_response(body)


def watch_file(label: str, path: Path) -> None:
    SENTINEL.watch_file(label, path)


def watched_program(args: object) -> str | None:
    """Which watched program a Popen `args` runs, if any."""
    argv = [os.fspath(a) for a in args] if isinstance(args, (list, tuple)) else []
    if not argv or not all(isinstance(a, str) for a in argv):
        return None
    name = os.path.basename(str(argv[0]))
    if name in WATCHED_PROGRAMS:
        return name
    if name.startswith("python") and argv[1:3] == ["-m", "pinniped_cli"]:
        return CLI
    if name.startswith("python") and argv[1:2] == ["-c"]:  # a wrapper (one that measures, say)
        return watched_program(argv[3:])
    return None


@dataclass
class PopenWatch:
    """Wraps `subprocess.Popen` so that watched programs' output reaches `sentinel`.

    `communicate` (which `subprocess.run` uses) hands over what was captured; a
    stdout or stderr sent to a named file (a concierge's log, a test's stderr
    file) is read at scan time instead.
    """

    sentinel: Sentinel
    _saved: dict[str, Any] = field(default_factory=dict)

    def install(self) -> None:
        if self._saved:
            return
        original_init, original_communicate = subprocess.Popen.__init__, \
            subprocess.Popen.communicate
        self._saved = {"__init__": original_init, "communicate": original_communicate}
        sentinel = self.sentinel

        def __init__(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
            original_init(popen, args, *rest, **kw)
            program = watched_program(args)
            popen._leak_sentinel_program = program  # type: ignore[attr-defined]
            for name in ("stdout", "stderr") if program else ():
                target = kw.get(name)
                path = getattr(target, "name", None)
                if isinstance(path, str) and os.path.isabs(path) and (
                        name == "stderr" or program != KUBECTL):
                    label = f"{program} log" if program == CONCIERGE else f"{name} of {program}"
                    sentinel.watch_file(label, Path(path))

        def communicate(popen: subprocess.Popen[Any], *a: Any, **kw: Any) -> tuple[Any, Any]:
            stdout, stderr = original_communicate(popen, *a, **kw)
            program = getattr(popen, "_leak_sentinel_program", None)
            if program:
                sentinel.record_output(program, stdout, stderr)
            return stdout, stderr

        setattr(subprocess.Popen, "__init__", __init__)  # noqa: B010 (mypy refuses the plain =)
        setattr(subprocess.Popen, "communicate", communicate)  # noqa: B010

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            setattr(subprocess.Popen, name, original)
        self._saved = {}


_WATCH = PopenWatch(SENTINEL)
#: The one test that scans, run after every other test of the session.
FINAL_TEST = "test_no_secret_leaked.py::test_no_secret_in_any_log_or_stderr"


def pytest_configure(config: pytest.Config) -> None:
    _WATCH.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _WATCH.uninstall()


@hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Move the scan to the very end, so it sees the output of everything before it."""
    last = [item for item in items if item.nodeid.endswith(FINAL_TEST)]
    items[:] = [item for item in items if item not in last] + last

