"""The `login oidc` flags: parsed once, shared by `get kubeconfig`, and turned back into args.

`get kubeconfig` accepts the same flags and writes them into the kubeconfig's
exec stanza, so both commands register them here and a flag added once works
everywhere. Flag names follow Pinniped's (`--issuer`, `--concierge-endpoint`,
...), with the `--oidc-*` spellings of `pinniped get kubeconfig` as aliases;
they are listed in `pinniped_cli.login_flags`, which the cached path reads
them with (argparse costs it too much), and so are the checks both share.
Stdlib only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pinniped_cli import runtime_cache
from pinniped_cli.cache_keys import identity_fields
from pinniped_cli.credential_entry import FILE_NAME
from pinniped_cli.errors import UsageError
from pinniped_cli.login_flags import (
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_SCOPES,
    FLOWS,
    LOGIN_ONLY,
    PASSWORD_VAR,
    USERNAME_VAR,
    checked,
    names,
    password_user,
    port,
    positive_seconds,
    require_https,
)
from pinniped_cli.securefile import config_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["DEFAULT_LOGIN_TIMEOUT", "DEFAULT_SCOPES", "FLOWS", "PASSWORD_VAR", "USERNAME_VAR",
           "CABundle", "LoginOptions", "add_ca_bundle_flags", "add_login_flags",
           "ca_bundle_from_args", "options_from_args", "parse_login_args", "password_user",
           "require_https"]


class CABundle:
    """CA certificates given as files and/or base64 PEM; neither means the system CAs."""

    __slots__ = ("data", "files")

    def __init__(self, files: tuple[str, ...] = (), data: tuple[str, ...] = ()) -> None:
        self.files = files
        self.data = data

    def __bool__(self) -> bool:
        return bool(self.files or self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CABundle) and (self.files, self.data) == (other.files, other.data)

    def __hash__(self) -> int:
        return hash((self.files, self.data))

    def pem(self, flag: str) -> str | None:
        """The concatenated PEM text, or None for the system trust store."""
        if not self:
            return None
        import base64
        import binascii

        parts = []
        for name in self.files:
            try:
                parts.append(Path(name).read_text())
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {flag} {name}: {exc}. "
                                 f"Pass a readable PEM file.") from exc
        for blob in self.data:
            try:
                parts.append(base64.b64decode(blob, validate=True).decode())
            except (binascii.Error, ValueError) as exc:
                raise UsageError(f"{flag}-data is not base64-encoded PEM; "
                                 f"encode the file with `base64 -w0 FILE`.") from exc
        text = "\n".join(parts)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise UsageError(f"{flag} holds no PEM certificate (-----BEGIN CERTIFICATE-----).")
        return text

    def as_data(self, flag: str) -> str | None:
        """The whole bundle as one base64 blob, so a kubeconfig works on another machine."""
        import base64

        pem = self.pem(flag)
        return None if pem is None else base64.b64encode(pem.encode()).decode()


class LoginOptions:
    """The validated `login oidc` flags (a plain class: see `pinniped_apis.rfc3339` for why)."""

    __slots__ = ("ca_bundle", "client_id", "concierge_authenticator", "concierge_ca_bundle",
                 "concierge_endpoint", "credential_cache", "explicit_paths", "flow", "issuer",
                 "kubeconfig_user", "listen_port", "login_timeout", "password_user", "scopes",
                 "session_cache", "skip_browser", "update_kubeconfig")

    def __init__(self, *, issuer: str, client_id: str, scopes: tuple[str, ...],
                 ca_bundle: CABundle, concierge_endpoint: str, concierge_ca_bundle: CABundle,
                 concierge_authenticator: str, session_cache: Path,
                 credential_cache: Path | None, flow: str | None = None,
                 listen_port: int | None = None, skip_browser: bool = False,
                 login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
                 update_kubeconfig: Path | None = None, kubeconfig_user: str | None = None,
                 explicit_paths: tuple[str, ...] = (), password_user: str | None = None) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.scopes = scopes
        self.ca_bundle = ca_bundle
        self.concierge_endpoint = concierge_endpoint
        self.concierge_ca_bundle = concierge_ca_bundle
        self.concierge_authenticator = concierge_authenticator
        self.session_cache = session_cache
        self.credential_cache = credential_cache
        self.flow = flow
        self.listen_port = listen_port
        self.skip_browser = skip_browser
        self.login_timeout = login_timeout
        #: The kubeconfig (and user entry in it) whose as-groups this plugin keeps current.
        self.update_kubeconfig = update_kubeconfig
        self.kubeconfig_user = kubeconfig_user
        #: Cache paths named explicitly on the command line (kept in generated kubeconfigs).
        self.explicit_paths = explicit_paths
        #: SHA-256 of PINNIPED_USERNAME when the password flow may log in (see password_user).
        self.password_user = password_user

    def replace(self, **changes: object) -> LoginOptions:
        """A copy with `changes` applied (like dataclasses.replace)."""
        values: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown LoginOptions fields: {sorted(unknown)}")
        values.update(changes)
        return LoginOptions(**values)  # type: ignore[arg-type]

    def identity_fields(self) -> dict[str, object]:
        """What decides whose credential this is: the key of both caches, nothing else."""
        return identity_fields(issuer=self.issuer, client_id=self.client_id, scopes=self.scopes,
                               concierge_endpoint=self.concierge_endpoint,
                               authenticator=self.concierge_authenticator,
                               password_user=self.password_user)

    def exec_args(self) -> list[str]:
        """`login oidc` args that reproduce these options, CA bundles inlined as data."""
        args = ["login", "oidc", "--issuer", self.issuer, "--client-id", self.client_id,
                "--scopes", ",".join(self.scopes)]
        oidc_ca = self.ca_bundle.as_data("--ca-bundle")
        if oidc_ca:
            args += ["--ca-bundle-data", oidc_ca]
        args += ["--concierge-endpoint", self.concierge_endpoint,
                 "--concierge-authenticator", self.concierge_authenticator]
        concierge_ca = self.concierge_ca_bundle.as_data("--concierge-ca-bundle")
        if concierge_ca:
            args += ["--concierge-ca-bundle-data", concierge_ca]
        if self.flow:
            args += ["--flow", self.flow]
        if self.listen_port is not None:
            args += ["--listen-port", str(self.listen_port)]
        if self.skip_browser:
            args.append("--skip-browser")
        if self.login_timeout != DEFAULT_LOGIN_TIMEOUT:
            args += ["--login-timeout", f"{self.login_timeout:g}"]
        if "session-cache" in self.explicit_paths:
            args += ["--session-cache", str(self.session_cache)]
        if "credential-cache" in self.explicit_paths:
            args += ["--credential-cache", str(self.credential_cache or "")]
        return args


def add_ca_bundle_flags(group: argparse._ArgumentGroup, flag: str, what: str,
                        alias: str | None = None, default: str = "") -> None:
    """`FLAG FILE` and `FLAG-data BASE64`, both repeatable: how every CA is given to us.

    `default` says where the CA comes from when neither is given (e.g. " (default: ...)").
    """
    names, data_names = [flag], [f"{flag}-data"]
    if alias:
        names.append(alias)
        data_names.append(f"{alias}-data")
    group.add_argument(*names, action="append", default=[], metavar="FILE",
                       help=f"PEM CA bundle to trust for {what} (repeatable){default}")
    group.add_argument(*data_names, action="append", default=[], metavar="BASE64",
                       help=f"base64 PEM CA bundle for {what} (repeatable)")


def ca_bundle_from_args(args: argparse.Namespace, flag: str) -> CABundle:
    """The CABundle that `add_ca_bundle_flags(..., flag, ...)` collected."""
    dest = flag.lstrip("-").replace("-", "_")
    return CABundle(tuple(getattr(args, dest)), tuple(getattr(args, f"{dest}_data")))


def add_login_flags(parser: argparse.ArgumentParser, for_kubeconfig: bool = False) -> None:
    """Register the login flags on `parser` (`login oidc` and `get kubeconfig` share them)."""
    # `get kubeconfig` can discover these from the cluster (see pinniped_cli.discovery).
    found = " (default: from the cluster's CredentialIssuer)" if for_kubeconfig else ""
    oidc = parser.add_argument_group("identity provider (OIDC)")
    oidc.add_argument(*names("issuer"), required=not for_kubeconfig, metavar="URL",
                      help=f"OpenID Connect issuer URL (https){found}")
    oidc.add_argument(*names("client_id"), required=not for_kubeconfig,
                      metavar="ID", help="OAuth client ID registered at the issuer"
                                         + (" (default: the authenticator's audience)"
                                            if for_kubeconfig else ""))
    oidc.add_argument(*names("scopes"), default=",".join(DEFAULT_SCOPES),
                      metavar="LIST", help="comma-separated scopes (default: %(default)s)")
    add_ca_bundle_flags(oidc, "--ca-bundle", "the issuer", alias="--oidc-ca-bundle")
    oidc.add_argument(*names("flow"), choices=FLOWS, default=None,
                      help=f"login flow; default: password when {USERNAME_VAR} and "
                           f"{PASSWORD_VAR} are set, else browser when one can open here "
                           "(BROWSER, a display), else device. When kubectl runs pinniped "
                           "without a terminal, only password (and --flow browser, where one "
                           "can open) can log in. Run by hand, device needs no terminal, only "
                           "someone who reads its link and code on stderr; browser needs a "
                           "terminal or a browser that opens here")
    oidc.add_argument(*names("listen_port"), type=_argparse_type(port), default=None,
                      metavar="N", help="loopback port for the browser callback (default: random)")
    oidc.add_argument(*names("skip_browser"), action="store_true",
                      help="print the login URL instead of opening a browser")
    oidc.add_argument(*names("login_timeout"), type=_argparse_type(positive_seconds),
                      default=DEFAULT_LOGIN_TIMEOUT,
                      metavar="SECONDS",
                      help="give up on a browser or device login after this long "
                           "(default: %(default)g)")
    concierge = parser.add_argument_group("concierge")
    concierge.add_argument(*names("concierge_endpoint"), required=not for_kubeconfig, metavar="URL",
                           help=f"concierge base URL (https){found}")
    add_ca_bundle_flags(concierge, "--concierge-ca-bundle", "the concierge",
                        default=" (default: the CredentialIssuer's when one is read, else the "
                                "system CAs)" if for_kubeconfig else "")
    concierge.add_argument(*names("concierge_authenticator"),
                           required=not for_kubeconfig, metavar="NAME",
                           help="name of the concierge's JWT authenticator"
                                + (" (default: the only one the CredentialIssuer lists)"
                                   if for_kubeconfig else ""))
    caches = parser.add_argument_group("caches")
    caches.add_argument(*names("session_cache"), default=None, metavar="PATH",
                        help="file for the OIDC session when no OS keyring works "
                             "(default: ~/.config/pinniped/sessions.json)")
    caches.add_argument(*names("credential_cache"), default=None, metavar="PATH",
                        help="cluster credential cache; empty to disable "
                             "(default: $XDG_RUNTIME_DIR/pinniped/credentials.json when that "
                             "directory is yours alone, else ~/.config/pinniped/credentials.json, "
                             "sealed)")
    if not for_kubeconfig:  # login_flags.LOGIN_ONLY
        kube = parser.add_argument_group("kubeconfig upkeep (written by `get kubeconfig`)")
        kube.add_argument(*names("update_kubeconfig"), default=None, metavar="PATH",
                          help="kubeconfig whose as-groups to keep in line with your groups")
        kube.add_argument(*names("kubeconfig_user"), default=None, metavar="NAME",
                          help="user entry in --update-kubeconfig to keep up to date")


def options_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> LoginOptions:
    """Validate the parsed flags into LoginOptions; no file is read here.

    The checks are `login_flags.checked`, which the cached path makes too.
    """
    values = vars(args)
    valid = checked(values, env)
    explicit = []
    base = config_dir(env)
    if args.session_cache is not None:
        explicit.append("session-cache")
    session_cache = _abs(args.session_cache) if args.session_cache else base / "sessions.json"
    credential_cache: Path | None = default_credential_cache(env)
    if args.credential_cache is not None:
        explicit.append("credential-cache")
        credential_cache = _abs(args.credential_cache) if args.credential_cache else None
    update, user = (values.get(dest) for dest in LOGIN_ONLY)
    return LoginOptions(
        issuer=args.issuer,  # compared exactly with the ID token's iss, so never normalised
        client_id=args.client_id,
        scopes=valid.scopes,
        ca_bundle=ca_bundle_from_args(args, "--ca-bundle"),
        concierge_endpoint=valid.concierge_endpoint,
        concierge_ca_bundle=ca_bundle_from_args(args, "--concierge-ca-bundle"),
        concierge_authenticator=args.concierge_authenticator,
        session_cache=session_cache,
        credential_cache=credential_cache,
        flow=args.flow,
        listen_port=args.listen_port,
        skip_browser=args.skip_browser,
        login_timeout=args.login_timeout,
        update_kubeconfig=_abs(str(update)) if update else None,
        kubeconfig_user=str(user) if user else None,
        explicit_paths=tuple(explicit),
        password_user=valid.password_user,
    )


def default_credential_cache(env: Mapping[str, str]) -> Path:
    """The runtime directory's cache when there is a private one, else the sealed file."""
    in_runtime_dir = runtime_cache.cache_path(env)
    return Path(in_runtime_dir) if in_runtime_dir else config_dir(env) / FILE_NAME


class _RaisingParser(argparse.ArgumentParser):
    """A parser for args read from a file: errors become UsageError, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"the kubeconfig's `login oidc` args are not usable ({message}); "
                         "regenerate it with `pinniped get kubeconfig`.")


def parse_login_args(args: Sequence[str], env: Mapping[str, str]) -> LoginOptions:
    """LoginOptions from the args after `login oidc` in a kubeconfig's exec stanza."""
    parser = _RaisingParser(prog="pinniped login oidc", add_help=False)
    add_login_flags(parser)
    return options_from_args(parser.parse_args(list(args)), env)


def _abs(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _argparse_type(convert: Callable[[str], object]) -> Callable[[str], object]:
    """`convert` (a login_flags check) as argparse's `type=`: its ValueError says why."""
    def checked_value(value: str) -> object:
        try:
            return convert(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    checked_value.__name__ = convert.__name__
    return checked_value
