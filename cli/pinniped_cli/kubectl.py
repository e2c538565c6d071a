"""Run the real `kubectl`, bounded, for `get kubeconfig`'s discovery.

pinniped is a kubectl plugin, so kubectl is there, and it speaks every way a
kubeconfig can authenticate (exec plugins, client certificates, tokens, auth
providers). Going through it means pinniped never reimplements any of them.
What kubectl prints is outside input: each call has a timeout and a cap on
what is read, and its stderr is shown only cut short, made printable and with
anything that looks like a credential taken out.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pinniped_cli.errors import CLIError
from pinniped_cli.redact import printable

#: Per call. Reading a kubeconfig or listing CredentialIssuers takes well under a second;
#: this leaves room for a slow apiserver or an exec plugin that refreshes a credential.
TIMEOUT_SECONDS = 60.0
#: A list of CredentialIssuers is a few KiB per concierge; far more is not ours to parse.
MAX_STDOUT_BYTES = 4 * 1024 * 1024
#: kubectl's stderr beyond this is read and dropped (only its last lines are shown anyway).
MAX_STDERR_BYTES = 64 * 1024
#: How much of kubectl's stderr a message quotes.
MESSAGE_CHARS = 400

#: klog's line header (`E1201 09:57:16.278033   21826 memcache.go:265] ...`): noise
#: that kubectl repeats before its one-line summary.
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")
_BEARER = re.compile(r"(?i)\b(bearer)\s+\S+")
_KEY_VALUE = re.compile(r"(?i)\b(token|password|secret|key)(\"?\s*[:=]\s*\"?)[^\s\",]+")
#: JWTs (a base64url JSON header starts with `eyJ`), and long opaque tokens (a bearer
#: token is 32+ characters of base64url).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+=]{32,}(?:\.[A-Za-z0-9_\-+=]*)*")


@dataclass(frozen=True)
class KubectlResult:
    returncode: int
    stdout: str
    stderr: str

    def message(self) -> str:
        return kubectl_message(self.stderr)


#: Runs `kubectl [--kubeconfig F] [--context C] ARGS`; given ARGS only (tests pass a fake).
Kubectl = Callable[[Sequence[str]], KubectlResult]


class KubectlUnavailable(CLIError):
    """kubectl could not be run, or ran too long or printed too much."""


def kubectl_message(stderr: str) -> str:
    """kubectl's stderr as one short, printable line with nothing secret-looking in it.

    kubectl ends with a one-line summary after any number of klog lines, so
    the summary (the last plain lines) is what is kept.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not _KLOG.match(line)] or lines
    text = " ".join(plain[-3:]) or "no message"
    text = _BEARER.sub(r"\1 [redacted]", text)
    text = _KEY_VALUE.sub(r"\1\2[redacted]", text)
    text = _OPAQUE.sub("[redacted]", _JWT.sub("[redacted]", text))
    return printable(text, MESSAGE_CHARS)


def new_kubectl(env: Mapping[str, str], kubeconfig: str | None, context: str | None,
                timeout: float = TIMEOUT_SECONDS, max_stdout: int = MAX_STDOUT_BYTES) -> Kubectl:
    """The real kubectl, found on env's PATH, for `kubeconfig` (else kubectl's own default)."""
    prefix = []
    if kubeconfig:
        prefix += ["--kubeconfig", kubeconfig]
    if context:
        prefix += ["--context", context]

    def run(args: Sequence[str]) -> KubectlResult:
        binary = shutil.which("kubectl", path=env.get("PATH", os.defpath))
        if binary is None:
            raise KubectlUnavailable(
                "kubectl is not on PATH, and pinniped reads the cluster through it; install "
                "kubectl, or pass every value with flags (--server, --cluster-ca-bundle, "
                "--concierge-endpoint, --concierge-ca-bundle, --issuer, --client-id, "
                "--concierge-authenticator).")
        return run_bounded([binary, *prefix, *args], _without_secrets(env), timeout,
                           max_stdout)

    return run


#: What kubectl (and any exec plugin its kubeconfig names) never needs to see.
SECRET_VARS = ("PINNIPED_PASSWORD",)


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_VARS}


def run_bounded(argv: Sequence[str], env: Mapping[str, str], timeout: float,
                max_stdout: int, max_stderr: int = MAX_STDERR_BYTES) -> KubectlResult:
    """Run `argv` with no stdin, reading at most `max_stdout` bytes, for at most `timeout` s.

    No stdin means kubectl (and any exec plugin it runs) knows nobody can
    answer a prompt, so it fails with a message instead of waiting. The child
    gets a session of its own so that, on timeout, the exec plugins it started
    end with it.
    """
    what = f"`kubectl {' '.join(argv[1:])}`"
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env), start_new_session=True)
    except OSError as exc:
        raise KubectlUnavailable(f"cannot run {argv[0]}: {exc.strerror or exc}. Check that "
                                 "kubectl is installed and executable.") from exc
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None  # both are pipes: asked for above
        assert proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, out)
            selector.register(proc.stderr, selectors.EVENT_READ, err)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KubectlUnavailable(f"{what} did not finish within {timeout:g} s; "
                                             "check that the cluster is reachable.")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.data is out:
                        if len(out) + len(chunk) > max_stdout:
                            raise KubectlUnavailable(
                                f"{what} printed more than {max_stdout // 1024} KiB; that is "
                                "not what pinniped asked for. Pass the values with flags.")
                        out += chunk
                    elif len(err) < max_stderr:
                        err += chunk[:max_stderr - len(err)]
        returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise KubectlUnavailable(f"{what} did not exit within {timeout:g} s.") from exc
    finally:
        _end(proc)
    stderr = err.decode(errors="replace")
    try:
        stdout = out.decode()
    except UnicodeDecodeError as exc:
        raise KubectlUnavailable(f"{what} printed something that is not UTF-8 text.") from exc
    return KubectlResult(returncode, stdout, stderr)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the child's session (kubectl and its exec plugins) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
