"""The `login oidc` flags as data, and the checks both ways of reading them share.

kubectl runs `pinniped login oidc FLAGS` before every command. argparse (with
the parser our two dozen flags build) costs some 5 ms of a call whose whole
budget is about 10, so the cached path (`pinniped_cli.cached_path`) reads the
flags with `read_args` below instead, and `pinniped_cli.login_options` gives
argparse the same names from `FLAGS`. `read_args` takes only the plain form
our kubeconfigs are written in (`--name value`, `--name=value`, exact names)
and answers None for anything else (an abbreviation, `--help`, a value that
starts with `-`, an unknown flag): the full argparse command then handles it,
errors and all. So the fast reading can be slow for an odd command line, but
it never accepts one argparse would refuse, nor reads one differently.

Stdlib only, and nothing but `pinniped_cli.errors` and `cache_keys` from us.
"""

from __future__ import annotations

from pinniped_cli.cache_keys import identity_fields, sha256_hex
from pinniped_cli.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SCOPES = ("openid", "offline_access", "groups", "email")
FLOWS = ("browser", "device", "password")
DEFAULT_LOGIN_TIMEOUT = 300.0
#: The password flow's credentials (for CI): from the environment, never from flags.
USERNAME_VAR = "PINNIPED_USERNAME"
PASSWORD_VAR = "PINNIPED_PASSWORD"

#: How a flag is given: with one value (the last one counts), with a value each time it
#: is repeated (all count), or alone (a switch).
VALUE, REPEATED, SWITCH = "value", "repeated", "switch"

#: Every `login oidc` flag by destination: its names (canonical first) and how it is given.
FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "issuer": (("--issuer", "--oidc-issuer"), VALUE),
    "client_id": (("--client-id", "--oidc-client-id"), VALUE),
    "scopes": (("--scopes", "--oidc-scopes"), VALUE),
    "ca_bundle": (("--ca-bundle", "--oidc-ca-bundle"), REPEATED),
    "ca_bundle_data": (("--ca-bundle-data", "--oidc-ca-bundle-data"), REPEATED),
    "flow": (("--flow", "--oidc-flow"), VALUE),
    "listen_port": (("--listen-port", "--oidc-listen-port"), VALUE),
    "skip_browser": (("--skip-browser", "--oidc-skip-browser"), SWITCH),
    "login_timeout": (("--login-timeout",), VALUE),
    "concierge_endpoint": (("--concierge-endpoint",), VALUE),
    "concierge_ca_bundle": (("--concierge-ca-bundle",), REPEATED),
    "concierge_ca_bundle_data": (("--concierge-ca-bundle-data",), REPEATED),
    "concierge_authenticator": (("--concierge-authenticator",
                                 "--concierge-authenticator-name"), VALUE),
    "session_cache": (("--session-cache", "--oidc-session-cache"), VALUE),
    "credential_cache": (("--credential-cache",), VALUE),
    # `login oidc` only (`get kubeconfig` writes them into the exec stanza):
    "update_kubeconfig": (("--update-kubeconfig",), VALUE),
    "kubeconfig_user": (("--kubeconfig-user",), VALUE),
}
#: What `login oidc` cannot do without.
REQUIRED = ("issuer", "client_id", "concierge_endpoint", "concierge_authenticator")
#: Flags of `login oidc` that `get kubeconfig` does not take.
LOGIN_ONLY = ("update_kubeconfig", "kubeconfig_user")

_BY_NAME = {name: (dest, kind) for dest, (names, kind) in FLAGS.items() for name in names}


def names(dest: str) -> tuple[str, ...]:
    """The option strings of `dest`, for argparse."""
    return FLAGS[dest][0]


def read_args(args: list[str]) -> dict[str, object] | None:
    """The flags after `login oidc` by destination, or None unless argparse would take them too.

    Only what is given appears (no defaults); values are checked as argparse's
    `type=` and `choices=` check them, and the required ones must be there.
    """
    values: dict[str, object] = {}
    position = 0
    while position < len(args):
        name, equals, value = args[position].partition("=")
        position += 1
        found = _BY_NAME.get(name)
        if found is None:
            return None
        dest, kind = found
        if kind == SWITCH:
            if equals:
                return None
            values[dest] = True
            continue
        if not equals:
            if position == len(args) or args[position].startswith("-"):
                return None  # argparse may read a leading "-" as an option (or refuse it)
            value = args[position]
            position += 1
        if kind == REPEATED:
            repeated = values.setdefault(dest, [])
            assert isinstance(repeated, list)
            repeated.append(value)
        else:
            values[dest] = value
    if any(dest not in values for dest in REQUIRED):
        return None
    try:
        if "listen_port" in values:
            values["listen_port"] = port(str(values["listen_port"]))
        if "login_timeout" in values:
            values["login_timeout"] = positive_seconds(str(values["login_timeout"]))
    except ValueError:
        return None
    if values.get("flow", FLOWS[0]) not in FLOWS:
        return None
    return values


class Checked:
    """What `checked` found: the normalised values, and the identity fields they make."""

    __slots__ = ("concierge_endpoint", "identity", "password_user", "scopes")

    def __init__(self, scopes: tuple[str, ...], concierge_endpoint: str,
                 password_user: str | None, identity: dict[str, object]) -> None:
        self.scopes = scopes
        self.concierge_endpoint = concierge_endpoint
        self.password_user = password_user
        #: What decides whose credential this is (`cache_keys.identity_fields`).
        self.identity = identity


def checked(values: Mapping[str, object], env: Mapping[str, str]) -> Checked:
    """Check the values both readings of the flags check alike; raises UsageError.

    From argparse's Namespace (as a dict) or from `read_args`; a flag left out
    (or None) is at its default.
    """
    given = values.get("scopes")
    scopes = parse_scopes(",".join(DEFAULT_SCOPES) if given is None else str(given))
    issuer, concierge = str(values["issuer"]), str(values["concierge_endpoint"])
    require_https(issuer, "--issuer")
    require_https(concierge, "--concierge-endpoint")
    if bool(values.get("update_kubeconfig")) != bool(values.get("kubeconfig_user")):
        raise UsageError("--update-kubeconfig and --kubeconfig-user go together; "
                         "regenerate the kubeconfig with `pinniped get kubeconfig -o FILE`.")
    flow = values.get("flow")
    user = password_user(flow if isinstance(flow, str) else None, env)
    endpoint = concierge.rstrip("/")
    return Checked(scopes, endpoint, user, identity_fields(
        issuer=issuer, client_id=str(values["client_id"]), scopes=scopes,
        concierge_endpoint=endpoint, authenticator=str(values["concierge_authenticator"]),
        password_user=user))


def password_user(flow: str | None, env: Mapping[str, str]) -> str | None:
    """SHA-256 of PINNIPED_USERNAME when the password flow may log in, else None.

    It is part of both cache keys, so CI jobs that share a HOME but log in as
    different users never get each other's credential or session. Hashed so
    that no cache key carries a name, and never the password: a new password
    for the same user keeps the cache.
    """
    username = env.get(USERNAME_VAR)
    if not username or flow not in (None, "password"):
        return None
    return sha256_hex(username.encode())


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(s for s in (part.strip() for part in text.split(",")) if s)
    if "openid" not in scopes:
        raise UsageError("--scopes must include openid: pinniped logs in with an ID token.")
    return scopes


def require_https(url: str, flag: str) -> None:
    """https with a host; a string test, since urllib.parse costs milliseconds per kubectl call."""
    if not url.startswith("https://") or url[len("https://"):].startswith(("/", "?", "#")) \
            or len(url) == len("https://"):
        raise UsageError(f"{flag} must be an https:// URL, got {url!r}.")


def port(value: str) -> int:
    """A --listen-port value; ValueError (saying why) unless it is a number from 0 to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise ValueError("must be a port number between 0 and 65535")
    return number


def positive_seconds(value: str) -> float:
    """A --login-timeout value; ValueError (saying why) unless it is a positive number."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not number > 0:  # also refuses NaN
        raise ValueError("must be a positive number of seconds")
    return number
