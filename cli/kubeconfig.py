"""Generated kubeconfigs: rendering them, and keeping their `as-groups` current.

Stock kubectl cannot take impersonation headers from an exec plugin, so the
user entry carries `as:` and `as-groups:` next to the exec stanza. Groups
change at the IdP; when a login shows new groups, the plugin rewrites that
user entry (it knows the file and entry from its own args), or, when it
cannot, tells the person the exact command that regenerates the file.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.errors import CLIError
from cli.execcredential import ClusterInfo, ca_fingerprint
from cli.login_options import LoginOptions, parse_login_args
from cli.securefile import write_private
from concierge.wire import Identity

#: The templates in the source tree: a checkout, or an editable install of one.
REPO_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "kubeconfig-templates"
#: Where a wheel puts them, under sys.prefix (`data-files` in pyproject.toml).
INSTALLED_TEMPLATE_DIR = Path("share", "pinniped", "kubeconfig-templates")
TEMPLATE_NAME = "kubeconfig.yaml"
INSTALL_HINT = (
    "The pinniped CLI logs you in to this cluster and is not installed (or not on the path "
    "this kubeconfig names). Install it with `pip install pinniped-py`, then run "
    "`pinniped get kubeconfig` again, or ask your cluster administrator.")


@dataclass(frozen=True)
class PluginCommand:
    """How kubectl should start pinniped: the executable, leading args and environment."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def running_plugin_command(argv0: str | None = None) -> PluginCommand:
    """The command that started this process, made absolute so kubectl finds it from anywhere.

    Under `python -m cli` there is no script to name, so the kubeconfig runs
    the same interpreter with `-m cli` and the package's directory on PYTHONPATH.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if argv0 in ("-m", "-c") or Path(argv0).name == "__main__.py":
        root = str(Path(__file__).resolve().parent.parent)
        return PluginCommand(sys.executable, ("-m", "cli"), (("PYTHONPATH", root),))
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


def find_template_dir(repo_dir: Path = REPO_TEMPLATE_DIR, prefix: str | None = None) -> Path:
    """The source tree's templates if there are any, else the installed ones.

    The source tree comes first so that a template edited in a checkout is the
    one used; a regular (non-editable) install has only the copy in
    `sys.prefix/share/pinniped/kubeconfig-templates`.
    """
    installed = Path(sys.prefix if prefix is None else prefix) / INSTALLED_TEMPLATE_DIR
    for candidate in (repo_dir, installed):
        if (candidate / TEMPLATE_NAME).is_file():
            return candidate
    raise CLIError(f"cannot find the kubeconfig template {TEMPLATE_NAME} in {repo_dir} or "
                   f"{installed}; reinstall pinniped.")


def render(spec: KubeconfigSpec, template_dir: Path | None = None) -> str:
    """Fill the template; values go in as JSON, so YAML reads them back verbatim."""
    template_dir = find_template_dir() if template_dir is None else template_dir
    path = template_dir / TEMPLATE_NAME
    try:
        template = string.Template(path.read_text())
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
    text = template.substitute({k: json.dumps(v) for k, v in values.items()})
    _check_rendered(text, spec, template_dir)
    return text


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
    pass


def update_identity(path: Path, user_name: str, identity: Identity) -> bool:
    """Set `as`/`as-groups` of `user_name` in `path`; True if it changed anything.

    Raises KubeconfigUpdateFailed (with a reason for people) when the file
    cannot be read, parsed or written, or has no such user entry.
    """
    import yaml

    real = Path(os.path.realpath(path))
    try:
        doc = yaml.safe_load(real.read_text())
    except OSError as exc:
        raise KubeconfigUpdateFailed(f"cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KubeconfigUpdateFailed("it is not valid YAML") from exc
    user = _find_user(doc, user_name) if isinstance(doc, dict) else None
    if user is None:
        raise KubeconfigUpdateFailed(f"it has no user entry named {user_name!r}")
    groups = list(identity.groups)
    if user.get("as") == identity.username and user.get("as-groups") == groups:
        return False
    user["as"] = identity.username
    user["as-groups"] = groups
    try:
        write_private(real, yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
                      .encode())
    except OSError as exc:
        raise KubeconfigUpdateFailed(f"cannot write it: {exc.strerror}") from exc
    return True


# --- reading the kubeconfig `whoami` and `logout` act on ----------------------------------------


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
            doc = yaml.safe_load(path.read_text())
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
