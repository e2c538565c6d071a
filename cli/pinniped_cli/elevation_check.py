"""The plugin's elevation check: is the cached credential still the right one to hand out?

While the user has an elevation pending or active, the concierge marks the
credential (`"elevation": {"groups": [...]}` in its cache entry,
`pinniped_cli.credential_entry`), and each kubectl call asks the concierge
for the user's state (GET `STATE_PATH`, the cached credential as the bearer)
before handing the credential out again. The answer decides (`outcome`):

- `SAME`: the active groups are the credential's elevated groups, and something
  is still pending or active: hand out the cached credential;
- `CHANGED`: an elevation was approved, ended or revoked (the groups differ):
  log in again (no browser: the OIDC session's tokens are enough), which updates
  the kubeconfig's as-groups;
- `UNAUTHORIZED` (401): the credential no longer works (the concierge ended its
  session when the elevation ended): log in again;
- `DONE`: nothing pending or active, and no difference: stop checking;
- `UNREACHABLE`: no usable answer within `DEADLINE_SECONDS` (network, TLS, a
  malformed or oversized answer): hand out the cached credential; the
  apiserver and the concierge enforce what it may do, so this is only late.

This runs on the cached path (`pinniped_cli.cached_path`), so it is the
standard library only, and only `socket` and `ssl` of it: `http.client` would
add some 9 ms of imports (`email` parsing) to every kubectl call, and cannot
bound a whole exchange in time (its timeouts are per read, so a server
dripping one byte a second holds it). The request is HTTP/1.0 with
`Connection: close`, so the answer is never chunked and ends where the
connection does; connecting (`connect`), the TLS handshake and every read
wait at most until the one deadline, and reading stops past
`MAX_RESPONSE_BYTES`. The one step the deadline cannot cut short is looking up
the concierge's name: see `connect`. The JSON is read by hand (`parse_state`)
exactly as `pinniped_apis.elevation.ElevationState` reads it: pydantic costs
more than the whole cached path. Nothing here prints, logs or raises, and the
token goes nowhere but the Authorization header.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    #: One answer of `socket.getaddrinfo`: family, type, protocol, canonical name, address.
    _AddrInfo = tuple[int, int, int, str, tuple[object, ...]]

#: `pinniped_apis.constants.ELEVATION_STATE_PATH`, written out: that package is not stdlib-only
#: (a unit test holds the two equal).
STATE_PATH = "/apis/elevation.concierge.pinniped.dev/v1alpha1/elevationstate"
#: For the whole check, from connecting to the last byte.
DEADLINE_SECONDS = 3.0
#: Addresses of the concierge's name that are tried, at most (`connect`).
MAX_ADDRESSES = 2
#: The state of one user's requests is a few hundred bytes; reading stops past this.
MAX_RESPONSE_BYTES = 64 * 1024
#: Bounds of `ElevationState` (`pinniped_apis.constants.MAX_NAME_LENGTH`, list max_length).
MAX_NAME_LENGTH = 253
MAX_ITEMS = 10_000

SAME, CHANGED, DONE, UNAUTHORIZED, UNREACHABLE = (
    "same", "changed", "done", "unauthorized", "unreachable")


def check(endpoint: str, ca_pem: str | None, token: str, elevated: Iterable[str],
          deadline: float = DEADLINE_SECONDS) -> str:
    """The outcome (one of the five above) of asking `endpoint` about the bearer `token`."""
    try:
        status, body = fetch(endpoint, ca_pem, token, deadline)
    except (OSError, ValueError, UnicodeError):  # ssl.SSLError and timeouts are OSErrors
        return UNREACHABLE
    try:
        document = json.loads(body) if status == 200 else None
    except (ValueError, RecursionError):
        document = None
    return outcome(status, document, elevated)


def outcome(status: int, document: object, elevated: Iterable[str]) -> str:
    """What an answer (`status`, its JSON `document`) means for a credential elevated to
    `elevated`."""
    if status == 401:
        return UNAUTHORIZED
    state = parse_state(document) if status == 200 else None
    if state is None:
        return UNREACHABLE
    pending, active = state
    if set(active) != set(elevated):
        return CHANGED
    return SAME if pending or active else DONE


def parse_state(document: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The pending ids and the active groups of an ElevationState document, or None where
    `ElevationState.from_wire` would refuse it (extra fields are ignored, as there)."""
    if not isinstance(document, dict):
        return None
    pending, active = document.get("pending", []), document.get("active", [])
    if not isinstance(pending, list) or not isinstance(active, list) \
            or len(pending) > MAX_ITEMS or len(active) > MAX_ITEMS:
        return None
    if not all(_name(p) for p in pending):
        return None
    groups = []
    for item in active:
        if not isinstance(item, dict) or not _name(item.get("id")) \
                or not _name(item.get("group")) or not _timestamp(item.get("expiresAt")):
            return None
        groups.append(item["group"])
    return tuple(pending), tuple(groups)


def _name(value: object) -> bool:
    """`pinniped_apis.models.Name`: a string of 1 to 253 characters that is valid Unicode."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate, which JSON can escape
        return False
    return True


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _timestamp(value: object) -> bool:
    """`pinniped_apis.models.Timestamp`: RFC 3339 with a time zone (`rfc3339.parse_time`).

    The form the concierge writes (2030-01-02T03:04:05Z) is checked by hand; any
    other form is left to `datetime`, imported only then.
    """
    if not isinstance(value, str):
        return False
    if len(value) == 20 and value.isascii() and value[4] + value[7] + value[10] + value[13] \
            + value[16] + value[19] == "--T::Z" and (
            digits := value[:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16]
            + value[17:19]).isdigit():
        year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:8])
        hour, minute, second = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
        leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return (year >= 1 and 1 <= month <= 12 and 1 <= day <= _DAYS[month - 1] + leap
                and hour < 24 and minute < 60 and second < 60)
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.tzinfo is not None and parsed.astimezone(dt.UTC) is not None
    except (ValueError, OverflowError):
        return False


def fetch(endpoint: str, ca_pem: str | None, token: str,
          deadline: float = DEADLINE_SECONDS) -> tuple[int, bytes]:
    """GET STATE_PATH at `endpoint` (https://host[:port][/prefix]) with `token` as the bearer;
    the status and body. Raises OSError or ValueError for anything but an answer."""
    host, port, prefix = split_endpoint(endpoint)
    end = time.monotonic() + deadline
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else \
        ssl.create_default_context()
    request = (f"GET {prefix}{STATE_PATH} HTTP/1.0\r\nHost: {_host_header(host, port)}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"
               "Accept-Encoding: identity\r\nUser-Agent: pinniped-py-cli\r\n"
               "Connection: close\r\n\r\n").encode()
    with connect(host, port, end) as raw:
        raw.settimeout(_left(end))  # the handshake, as a whole (ssl counts it to one deadline)
        with context.wrap_socket(raw, server_hostname=host) as conn:
            conn.settimeout(_left(end))
            conn.sendall(request)
            return _split_answer(_read_all(conn, end))


def _read_all(conn: ssl.SSLSocket, end: float) -> bytes:
    """Everything `conn` sends until it closes, by the deadline `end`, and not much more
    than `MAX_RESPONSE_BYTES`."""
    received = bytearray()
    while True:
        conn.settimeout(_left(end))
        chunk = conn.recv(16384)
        if not chunk:
            return bytes(received)
        received += chunk
        if len(received) > MAX_RESPONSE_BYTES + 16384:  # the body, and room for headers
            raise ValueError("answer too large")


def connect(host: str, port: int, end: float) -> socket.socket:
    """A TCP connection to `host` (a name or an IP literal) made by the deadline `end`.

    `socket.create_connection` gives each address it tries the whole timeout,
    and tries them all: a name with three addresses that drop SYNs held a 3 s
    check for 9 s. So this tries at most `MAX_ADDRESSES` (`candidates`), and
    each attempt but the last gets its share of the time left, the last all of
    it: a dead first address (say an IPv6 route that drops everything) leaves
    the second half the deadline rather than nothing. When none answers in
    time the check is UNREACHABLE, which hands out the cached credential: the
    same as before the check existed, never worse.

    Looking the name up is not bounded: `getaddrinfo` has no timeout, and the
    standard library's only way around that (a thread left to finish it) would
    cost every kubectl call that imports. An IP literal is parsed, not looked
    up; a name takes what the system resolver allows (resolv.conf's `timeout`
    and `attempts`: 5 s twice by default, and a cached answer when the resolver
    caches), and that time counts against the deadline, so nothing else is
    tried after a slow lookup. The full command looks up the same name anyway.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    tried = candidates(infos)
    error: OSError = OSError(f"no address for {host}")
    for attempt, (family, kind, proto, _, address) in enumerate(tried):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(end) / (len(tried) - attempt))
            sock.connect(address)
            return sock
        except OSError as exc:  # refused, unreachable, or this attempt's share ran out
            sock.close()
            error = exc
    raise error


def candidates(infos: Sequence[_AddrInfo]) -> list[_AddrInfo]:
    """The addresses `connect` tries, of those `getaddrinfo` gave in its order of
    preference: the first, then the first of another family (IPv4 after IPv6, or the other
    way round) if there is one, else the next one."""
    if not infos:
        return []
    first, rest = infos[0], [i for i in infos[1:] if i[4] != infos[0][4]]
    other = [i for i in rest if i[0] != first[0]] or rest
    return [first, *other[:MAX_ADDRESSES - 1]]


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline")
    return left


def split_endpoint(endpoint: str) -> tuple[str, int, str]:
    """Host, port and path prefix of an https:// URL (without `urllib`, which costs ms)."""
    if not endpoint.startswith("https://"):
        raise ValueError("not https")
    rest = endpoint[len("https://"):]
    authority, slash, path = rest.partition("/")
    prefix = ("/" + path).rstrip("/") if slash else ""
    if "@" in authority or "?" in authority or "#" in authority or "?" in path or "#" in path:
        raise ValueError("unexpected URL form")
    if authority.startswith("["):
        host, _, port_text = authority[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text else 443
    if not host or not 0 < port < 65536:
        raise ValueError("no host")
    return host, port, prefix


def _host_header(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == 443 else f"{name}:{port}"


def _split_answer(received: bytes) -> tuple[int, bytes]:
    """Status and body of an HTTP/1.x answer read to its end (the server closed)."""
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        raise ValueError("no end of headers")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not HTTP/1.x")
    status = int(rest[:3])
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
            if length > len(body):
                raise ValueError("answer cut short")
            body = body[:length]
        elif (name == "transfer-encoding" and value != "identity") or (
                name == "content-encoding" and value not in ("", "identity")):
            raise ValueError("encoded answer")
    if len(body) > MAX_RESPONSE_BYTES:
        raise ValueError("answer too large")
    return status, body


def ca_pem(files: list[str], data: list[str]) -> str | None:
    """The PEM of --concierge-ca-bundle files and --concierge-ca-bundle-data values (as
    `login_options.CABundle.pem` reads them), or None for the system trust store. Raises
    OSError or ValueError when one does not read."""
    if not files and not data:
        return None
    import binascii

    parts = []
    for name in files:
        with open(name, encoding="utf-8") as handle:
            parts.append(handle.read())
    for blob in data:
        parts.append(binascii.a2b_base64(blob.encode("ascii"), strict_mode=True).decode())
    return "\n".join(parts)
