"""Generated kubeconfigs: rendering them, writing them, and keeping their `as-groups` current.

Stock kubectl cannot take impersonation headers from an exec plugin, so the
user entry carries `as:` and `as-groups:` next to the exec stanza. Groups
change at the IdP; when a login shows new groups, the plugin rewrites that
user entry (it knows the file and entry from its own args), or, when it
cannot, tells the person the exact command that regenerates the file.

A kubeconfig is the person's file, often holding other clusters, so it is
changed the way kubectl changes it: under client-go's `<file>.lock` (created
exclusively, removed after), keeping its mode, touching only our named
entries, and never taking over a file that belongs to someone else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import stat
import string
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinniped_apis.identity import Identity
from pinniped_cli.errors import CLIError
from pinniped_cli.execcredential import ClusterInfo, ca_fingerprint
from pinniped_cli.login_options import LoginOptions, parse_login_args
from pinniped_cli.securefile import PRIVATE_FILE, ensure_private_dir, replace_file

#: The templates in the source tree: a checkout, or an editable install of one.
REPO_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "kubeconfig-templates"
#: Where a wheel puts them, under sys.prefix (`data-files` in pyproject.toml).
INSTALLED_TEMPLATE_DIR = Path("share", "pinniped", "kubeconfig-templates")
TEMPLATE_NAME = "kubeconfig.yaml"
INSTALL_HINT = (
    "The pinniped CLI logs you in to this cluster and is not installed (or not on the path "
    "this kubeconfig names). Install it with `pip install pinniped-py`, then run "
    "`pinniped get kubeconfig` again, or ask your cluster administrator.")
#: The kubeconfig sections whose entries are ours when named like our --name.
SECTIONS = ("clusters", "contexts", "users")
#: How long to wait for kubectl's lock on a kubeconfig before giving up on changing it.
LOCK_WAIT_SECONDS = 2.0
#: What YAML cannot hold as is in a quoted scalar: characters outside its printable set,
#: and the line breaks it would fold (NEL, LS, PS). They are written as JSON \u escapes,
#: which YAML reads too.
#: Strings that may be written unquoted: they start like a word or a path and hold nothing
#: YAML gives a meaning to (numbers, `~`, `<<`, `=` and the like all get quotes)...
_PLAIN_STRING = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@+-]*")
#: ...unless YAML 1.1 reads them as a boolean or null.
_YAML11_WORDS = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null"))
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


@dataclass(frozen=True)
class PluginCommand:
    """How kubectl should start pinniped: the executable, leading args and environment."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def running_plugin_command(argv0: str | None = None) -> PluginCommand:
    """The command that started this process, made absolute so kubectl finds it from anywhere.

    Under `python -m pinniped_cli` there is no script to name, so the kubeconfig
    runs the same interpreter with `-m pinniped_cli` and, on PYTHONPATH, the
    directories holding this package and the API types it imports (two folders
    in a source tree, one site-packages when installed).
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if argv0 in ("-m", "-c") or Path(argv0).name == "__main__.py":
        import pinniped_apis

        roots = dict.fromkeys(str(Path(package).resolve().parent.parent)
                              for package in (__file__, pinniped_apis.__file__))
        return PluginCommand(sys.executable, ("-m", "pinniped_cli"),
                             (("PYTHONPATH", os.pathsep.join(roots)),))
    if os.sep not in argv0:
        found = shutil.which(argv0)
        if found:
            return PluginCommand(os.path.abspath(found))
    return PluginCommand(os.path.abspath(argv0))


@dataclass(frozen=True)
class KubeconfigSpec:
    name: str
    server: str
    ca_data: str
    plugin: PluginCommand
    login_args: tuple[str, ...]
    identity: Identity


def find_template_dir(repo_dir: Path = REPO_TEMPLATE_DIR, prefix: str | None = None,
                      recorded: Callable[[], Path | None] | None = None) -> Path:
    """The source tree's templates if there are any, else the installed ones.

    The source tree comes first so that a template edited in a checkout is the
    one used. An install has the copy pip wrote under its scheme's data
    directory; the distribution's own file list says where that is (for
    `--user`, `--prefix` or /usr/local installs it is not under `sys.prefix`),
    and `sys.prefix/share/pinniped/kubeconfig-templates` is the last resort.
    """
    installed = Path(sys.prefix if prefix is None else prefix) / INSTALLED_TEMPLATE_DIR
    found_in_record = (recorded or recorded_template_dir)()
    candidates = [repo_dir, *([found_in_record] if found_in_record else []), installed]
    for candidate in candidates:
        if (candidate / TEMPLATE_NAME).is_file():
            return candidate
    raise CLIError(f"cannot find the kubeconfig template {TEMPLATE_NAME} in "
                   f"{' or '.join(map(str, candidates))}; reinstall pinniped "
                   "(pip install --force-reinstall pinniped-py).")


def recorded_template_dir(distribution: str = "pinniped-py") -> Path | None:
    """Where the installed distribution's file list (RECORD) says the template is, if any."""
    from importlib import metadata

    try:
        files = metadata.distribution(distribution).files or ()
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == TEMPLATE_NAME and INSTALLED_TEMPLATE_DIR.name in file.parts:
            return Path(str(file.locate())).resolve().parent
    return None


def render(spec: KubeconfigSpec, template_dir: Path | None = None) -> str:
    """Fill the template; values go in as JSON, so YAML reads them back verbatim."""
    template_dir = find_template_dir() if template_dir is None else template_dir
    path = template_dir / TEMPLATE_NAME
    try:
        template = string.Template(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"cannot read the kubeconfig template {path} ({exc.strerror}); "
                       "reinstall pinniped.") from exc
    values = {
        "name": spec.name,
        "server": spec.server,
        "ca_data": spec.ca_data,
        "username": spec.identity.username,
        "groups": list(spec.identity.groups),
        "command": spec.plugin.command,
        "args": [*spec.plugin.args, *spec.login_args],
        "env": [{"name": k, "value": v} for k, v in spec.plugin.env],
        "install_hint": INSTALL_HINT,
    }
    text = template.substitute({k: yaml_scalar(v) for k, v in values.items()})
    _check_rendered(text, spec, template_dir)
    return text


def yaml_scalar(value: object) -> str:
    """`value` as JSON that YAML (and so kubectl) reads back verbatim.

    Not ensure_ascii: that writes a character beyond the BMP (an emoji in a
    group name) as a surrogate-pair escape, which YAML rejects. So characters
    are written as themselves, and only those YAML cannot hold are escaped.
    """
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _check_rendered(text: str, spec: KubeconfigSpec, template_dir: Path) -> None:
    """Parse what we rendered: a template edit that breaks YAML must fail here, not in kubectl."""
    import yaml

    doc = yaml.safe_load(text)
    user = _find_user(doc, spec.name) if isinstance(doc, dict) else None
    if user is None or user.get("as") != spec.identity.username \
            or user.get("as-groups") != list(spec.identity.groups):
        raise CLIError(f"the kubeconfig template in {template_dir} does not render a user "
                       f"entry {spec.name!r} with as/as-groups; reinstall pinniped.")


def _find_user(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in doc.get("users") or []:
        if isinstance(entry, dict) and entry.get("name") == name \
                and isinstance(entry.get("user"), dict):
            user: dict[str, Any] = entry["user"]
            return user
    return None


class KubeconfigUpdateFailed(Exception):
    """The kubeconfig could not be changed; the message says why, for people."""


def update_identity(path: Path, user_name: str, identity: Identity) -> bool:
    """Set `as`/`as-groups` of `user_name` in `path`; True if it changed anything.

    Raises KubeconfigUpdateFailed (with a reason for people) when the file
    cannot be read, parsed, locked or written, has no such user entry, or is
    not ours.
    """
    groups = list(identity.groups)

    def edit(doc: object) -> str | None:
        user = _find_user(doc, user_name) if isinstance(doc, dict) else None
        if user is None:
            raise KubeconfigUpdateFailed(f"it has no user entry named {user_name!r}")
        if user.get("as") == identity.username and user.get("as-groups") == groups:
            return None
        user["as"] = identity.username
        user["as-groups"] = groups
        return dump(doc)

    return _edit(path, edit, create=False)


def write_kubeconfig(path: Path, text: str, name: str) -> bool:
    """Put the rendered kubeconfig `text` in `path`; True if other entries were kept.

    A missing or empty file, or one holding only entries named `name`, is
    replaced by `text` as it is. Otherwise our cluster, context and user
    entries (those named `name`) are replaced or added, current-context is
    set to `name`, and everything else in the file stays.
    Raises KubeconfigUpdateFailed.
    """
    merged = False

    def edit(doc: object) -> str:
        nonlocal merged
        if doc is None or _only_ours(doc, name):
            return text
        if not isinstance(doc, dict) or any(not isinstance(doc.get(s) or [], list)
                                            for s in SECTIONS):
            raise KubeconfigUpdateFailed("it is not a kubeconfig")
        import yaml

        ours = yaml.safe_load(text)
        for section in SECTIONS:
            kept = [e for e in doc.get(section) or []
                    if not (isinstance(e, dict) and e.get("name") == name)]
            doc[section] = kept + ours[section]
        doc.setdefault("apiVersion", "v1")
        doc.setdefault("kind", "Config")
        doc["current-context"] = name
        merged = True
        return dump(doc)

    _edit(path, edit, create=True)
    return merged


def dump(doc: object) -> str:
    """`doc` as YAML that kubectl reads back verbatim.

    kubectl reads YAML 1.1, where `y`, `n` or `0o17` are not strings; PyYAML
    does not quote those, so every string that is not plainly a word or a URL
    is written double-quoted. And not allow_unicode: PyYAML then writes some
    characters (NEL, LS, PS) as they are, which YAML folds as line breaks;
    escaped, they and every other non-ASCII character come back as they were.
    """
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        plain = _PLAIN_STRING.fullmatch(value) and value.lower() not in _YAML11_WORDS
        return dumper.represent_scalar("tag:yaml.org,2002:str", value,
                                       style=None if plain else '"')

    Dumper.add_representer(str, represent_str)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False)


def _only_ours(doc: object, name: str) -> bool:
    """Whether `doc` is a kubeconfig holding nothing but entries named `name`."""
    if not isinstance(doc, dict):
        return False
    if set(doc) - {"apiVersion", "kind", "current-context", "preferences", *SECTIONS}:
        return False
    if doc.get("preferences") not in (None, {}) \
            or doc.get("current-context") not in (None, "", name):
        return False
    for section in SECTIONS:
        entries = doc.get(section) or []
        if not isinstance(entries, list) \
                or not all(isinstance(e, dict) and e.get("name") == name for e in entries):
            return False
    return True


def _edit(path: Path, edit: Callable[[object], str | None], *, create: bool) -> bool:
    """Rewrite `path` with `edit(parsed document)` under kubectl's lock; False if unchanged.

    `edit` gets None for a missing (only with `create`) or empty file, and
    returns the new text or None for no change. It runs once without the lock,
    so that a file needing no change is never locked, then again under it.
    The file keeps its mode and group (new files are 0600); files of other
    users are refused, as our rewrite would make them ours.
    """
    real = Path(os.path.realpath(path))
    if edit(_read(real, create)[0]) is None:
        return False
    try:
        ensure_private_dir(real.parent)
    except OSError as exc:
        raise KubeconfigUpdateFailed(f"cannot create its directory: {exc.strerror}") from exc
    with _kubectl_lock(path):
        doc, info = _read(real, create)
        text = edit(doc)
        if text is None:
            return False
        if info is not None and info.st_uid != os.getuid():
            raise KubeconfigUpdateFailed("it belongs to another user, and rewriting it would "
                                         "make it yours")
        mode = PRIVATE_FILE if info is None else stat.S_IMODE(info.st_mode)
        try:
            replace_file(real, text.encode(), mode, -1 if info is None else info.st_gid)
        except OSError as exc:
            raise KubeconfigUpdateFailed(f"cannot write it: {exc.strerror}") from exc
    return True


def _read(real: Path, missing_ok: bool) -> tuple[object, os.stat_result | None]:
    """The parsed file and its stat; (None, None) when it is missing and that is fine."""
    import yaml

    try:
        with real.open("rb") as handle:
            info = os.fstat(handle.fileno())
            raw = handle.read()
    except FileNotFoundError:
        if missing_ok:
            return None, None
        raise KubeconfigUpdateFailed("cannot read it: it does not exist") from None
    except OSError as exc:
        raise KubeconfigUpdateFailed(f"cannot read it: {exc.strerror}") from exc
    try:
        return yaml.safe_load(raw.decode("utf-8")), info
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise KubeconfigUpdateFailed("it is not valid YAML") from exc


@contextlib.contextmanager
def _kubectl_lock(path: Path) -> Iterator[None]:
    """client-go's lock on a kubeconfig: `<file>.lock`, created exclusively, removed after.

    kubectl (`kubectl config ...`) fails when that file exists, and so do we,
    after a short wait: the other writer's change must not be lost.
    """
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, PRIVATE_FILE)
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                raise KubeconfigUpdateFailed(
                    f"it is locked: {lock} exists, so kubectl may be changing it (if no kubectl "
                    "is running, delete that file)") from None
            time.sleep(0.05)
        except OSError as exc:
            raise KubeconfigUpdateFailed(f"cannot create its lock {lock}: {exc.strerror}"
                                         ) from exc
    os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


# --- reading the kubeconfig `whoami` and `logout` act on ----------------------------------------


def add_kubeconfig_flags(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig and --kubeconfig-context, chosen as kubectl chooses (see kubeconfig_paths)."""
    parser.add_argument("--kubeconfig", default=None, metavar="FILE",
                        help="kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--kubeconfig-context", default=None, metavar="NAME",
                        help="context to use (default: the current context)")


@dataclass(frozen=True)
class PinnipedContext:
    """A kubeconfig context whose user runs `pinniped login oidc`."""

    context: str
    server: str
    ca_data: str
    user_name: str
    login_args: tuple[str, ...]


def kubeconfig_paths(flag: str | None, env: Mapping[str, str]) -> list[Path]:
    """--kubeconfig, else $KUBECONFIG (a path list, like kubectl), else ~/.kube/config."""
    if flag:
        return [Path(flag).expanduser()]
    listed = [Path(p).expanduser() for p in str(env.get("KUBECONFIG") or "").split(os.pathsep)
              if p]
    if listed:
        return listed
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


def load_pinniped_context(paths: list[Path], context: str | None) -> PinnipedContext:
    """Find the context (given or current) and its pinniped exec user across `paths`.

    Like kubectl, the first file that defines a name wins.
    """
    import base64

    import yaml

    merged: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    current: str | None = None
    readable = []
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError:
            continue
        except yaml.YAMLError as exc:
            raise CLIError(f"{path} is not valid YAML ({exc}); fix or regenerate it.") from exc
        if not isinstance(doc, dict):
            continue
        readable.append(path)
        current = current or doc.get("current-context") or None
        for section, inner in (("contexts", "context"), ("clusters", "cluster"),
                               ("users", "user")):
            for entry in doc.get(section) or []:
                if isinstance(entry, dict) and isinstance(entry.get(inner), dict):
                    merged[section].setdefault(str(entry.get("name")), entry[inner])
    where = ", ".join(str(p) for p in paths)
    if not readable:
        raise CLIError(f"no kubeconfig found at {where}; pass --kubeconfig FILE (one written by "
                       "`pinniped get kubeconfig`).")
    name = context or current
    if not name or name not in merged["contexts"]:
        raise CLIError(f"kubeconfig context {name!r} not found in {where}; pass "
                       "--kubeconfig-context NAME.")
    ctx = merged["contexts"][name]
    cluster = merged["clusters"].get(str(ctx.get("cluster")))
    user_name = str(ctx.get("user"))
    user = merged["users"].get(user_name)
    if cluster is None or user is None:
        raise CLIError(f"context {name!r} names a cluster or user missing from {where}.")
    exec_cfg = user.get("exec") if isinstance(user.get("exec"), dict) else {}
    args = [str(a) for a in (exec_cfg or {}).get("args") or []]
    for index in range(len(args) - 1):
        if args[index:index + 2] == ["login", "oidc"]:
            login_args = tuple(args[index + 2:])
            break
    else:
        raise CLIError(f"user {user_name!r} of context {name!r} does not log in with "
                       "`pinniped login oidc`; use a kubeconfig from `pinniped get kubeconfig`.")
    ca_data = cluster.get("certificate-authority-data")
    if not isinstance(ca_data, str) and isinstance(cluster.get("certificate-authority"), str):
        try:
            ca_data = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
        except OSError as exc:
            raise CLIError(f"cannot read the cluster CA {cluster['certificate-authority']} "
                           f"({exc.strerror}).") from exc
    return PinnipedContext(context=name, server=str(cluster.get("server") or ""),
                           ca_data=ca_data if isinstance(ca_data, str) else "",
                           user_name=user_name, login_args=login_args)


@dataclass(frozen=True)
class LoginTarget:
    """What `whoami` and `logout` act on: the login options and cluster of one context."""

    context: str
    options: LoginOptions
    cluster: ClusterInfo


def resolve_login(kubeconfig: str | None, context: str | None,
                  env: Mapping[str, str]) -> LoginTarget:
    found = load_pinniped_context(kubeconfig_paths(kubeconfig, env), context)
    options = parse_login_args(found.login_args, env)
    cluster = ClusterInfo(server=found.server, ca_sha256=ca_fingerprint(found.ca_data),
                          ca_data=found.ca_data)
    return LoginTarget(context=found.context, options=options, cluster=cluster)
