"""Build the concierge's image from deploy/Containerfile with podman, as a user builds it.

No container registry is reachable from the machines the tests run on, so `FROM`
cannot pull. The base is made from Debian's archive instead: mmdebstrap's minbase
with the path excludes of Debian's `-slim` images, which is the package set of
`debian:SUITE-slim`, imported under the exact name the Containerfile's `FROM`
uses. It carries its recipe's hash as a label and is made again only when the
recipe changes, so a second run takes seconds. The Containerfile itself is
built unchanged, so what the tests run is what `docker build` gives a user.

Podman runs with a containers.conf and an image store of our own
(`CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF`), never the user's: runc (crun
refuses this kind of machine's hybrid cgroups), ulimits the sandbox can grant,
and images kept under the cache directory, so that our stand-in for
`debian:bookworm-slim` never shadows a user's real one.

`PYTHONPATH=hack python -m localenv.image` builds the image and prints its size
and the build times.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from localenv import REPO_ROOT
from localenv.cluster import cache_dir

CONTAINERFILE = REPO_ROOT / "deploy" / "Containerfile"
#: The tag the tests build and run.
IMAGE = "localhost/pinniped-py/concierge:test"
#: The Containerfile's build stage, tagged so that pruning keeps it as the next build's cache.
BUILD_STAGE = "build"
#: The label that holds the hash of the recipe a base image was made from.
RECIPE_LABEL = "dev.pinniped-py.base-recipe"
#: Every container the tests start carries this label, so leftovers can be found.
TEST_LABEL = "dev.pinniped-py.test=1"
#: What hack/bootstrap.sh installs: podman builds and runs, mmdebstrap makes the base,
#: runc runs the containers and catatonit is podman's `--init`.
REQUIRED_TOOLS = ("podman", "mmdebstrap", "runc", "catatonit")
#: The UID/GID the Containerfile's USER names.
IMAGE_USER = "65532:65532"
#: How the tests run the image: as the Deployment in deploy/concierge.yaml does (read-only
#: root, non-root, no capabilities, no privilege escalation), on the host's loopback.
HARDENED_RUN_FLAGS = ("--network=host", "--read-only", f"--user={IMAGE_USER}",
                      "--cap-drop=ALL", "--security-opt=no-new-privileges", "--init",
                      "--pull=never")

#: Slim images drop documentation, manual pages and translations (keeping the copyright
#: files); the excludes stay in the image, so packages installed later lose them too.
_SLIM_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*",
                  "/usr/share/locale/*", "/usr/share/lintian/*")
#: Bump when the recipe changes in a way its arguments do not show.
_RECIPE_VERSION = 1

MMDEBSTRAP_TIMEOUT_SECONDS = 600
#: A cold build downloads Debian's package lists, python3 and every Python dependency.
BUILD_TIMEOUT_SECONDS = 1200
PODMAN_TIMEOUT_SECONDS = 120
#: How long to wait for another test run that is building the image right now.
LOCK_TIMEOUT_SECONDS = 1800


class ImageError(RuntimeError):
    """A tool is missing, or a step of making or running the image failed."""


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    if missing := missing_tools():
        raise ImageError(f"{', '.join(missing)} not found: run `bash hack/bootstrap.sh`, "
                         "which installs podman, buildah, mmdebstrap, runc and catatonit")


@dataclass(frozen=True)
class Podman:
    """podman with our own configuration and image store in `home`."""

    home: Path

    @classmethod
    def private(cls, home: Path | None = None) -> Podman:
        """Write the configuration (idempotent) and return a podman that uses it."""
        home = home or cache_dir() / "podman"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Run-time state (locks, container state) belongs on a file system that a reboot
        # clears, apart from the images, which are the cache.
        run_root = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / \
            f"pinniped-py-podman-{os.getuid()}"
        _write_if_changed(home / "containers.conf", "\n".join([
            "[containers]",
            'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
            "[engine]",
            'runtime = "runc"',
            f"tmp_dir = {json.dumps(str(run_root / 'libpod'))}",
            'events_logger = "file"', ""]))
        _write_if_changed(home / "storage.conf", "\n".join([
            "[storage]",
            'driver = "overlay"',
            f"graphroot = {json.dumps(str(home / 'storage'))}",
            f"runroot = {json.dumps(str(run_root / 'storage'))}", ""]))
        return cls(home)

    def command(self, *args: str) -> list[str]:
        """argv running `podman ARGS` with our configuration, for any process runner."""
        return ["env", f"CONTAINERS_CONF={self.home / 'containers.conf'}",
                f"CONTAINERS_STORAGE_CONF={self.home / 'storage.conf'}", "podman", *args]

    def run(self, *args: str, timeout: float = PODMAN_TIMEOUT_SECONDS,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(self.command(*args), capture_output=True, text=True,
                                    timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ImageError(f"podman {args[0]} did not finish within {timeout:.0f}s") from None
        if check and result.returncode != 0:
            raise ImageError(f"podman {' '.join(args[:2])} failed ({result.returncode}):\n"
                             f"{_tail(result.stdout + result.stderr)}")
        return result

    def label(self, image: str, name: str) -> str | None:
        """The image's label `name`; None when there is no such image or label."""
        result = self.run("image", "inspect", "--format", "{{json .Labels}}", image,
                          check=False)
        if result.returncode != 0:
            return None
        labels = json.loads(result.stdout or "null") or {}
        value = labels.get(name)
        return str(value) if value is not None else None

    def size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout)

    def containers_of_tests(self) -> list[str]:
        """Names of every container (running or not) that a test started."""
        result = self.run("ps", "--all", "--filter", f"label={TEST_LABEL}",
                          "--format", "{{.Names}}")
        return result.stdout.split()

    def remove_container(self, name: str) -> None:
        """Stop (at once) and remove `name`; nothing to do when it is already gone."""
        self.run("rm", "--force", "--time=0", "--ignore", name)


@dataclass(frozen=True)
class BaseRecipe:
    """How to make the image that the Containerfile's FROM names: `debian:SUITE-slim`."""

    image: str
    suite: str

    @classmethod
    def from_containerfile(cls, path: Path = CONTAINERFILE) -> BaseRecipe:
        stages: set[str] = set()
        bases: set[str] = set()
        for match in re.finditer(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", path.read_text(),
                                 re.MULTILINE | re.IGNORECASE):
            if match[1] not in stages:
                bases.add(match[1])
            if match[2]:
                stages.add(match[2])
        found = [m for base in bases
                 if (m := re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:(\w+)-slim", base))]
        if len(bases) != 1 or not found:
            raise ImageError(f"{path}: the build makes only a `debian:SUITE-slim` base, "
                             f"but FROM names {sorted(bases)}")
        suite = found[0][1]
        return cls(image=f"docker.io/library/debian:{suite}-slim", suite=suite)

    def mmdebstrap_argv(self, rootfs: Path) -> list[str]:
        excludes = [f"--dpkgopt=path-exclude={pattern}" for pattern in _SLIM_EXCLUDES]
        return ["mmdebstrap", "--quiet", "--variant=minbase",
                # /usr merged by the hook, as Debian's images are, instead of by the
                # usrmerge package, which would pull in all of perl.
                "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                '--aptopt=Acquire::Languages "none"', *excludes,
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                self.suite, str(rootfs)]

    @property
    def key(self) -> str:
        recipe = [_RECIPE_VERSION, self.image, *self.mmdebstrap_argv(Path("rootfs.tar"))]
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def ensure_base(podman: Podman, recipe: BaseRecipe) -> bool:
    """Make and import the base unless one with this recipe exists; True when it was made."""
    if podman.label(recipe.image, RECIPE_LABEL) == recipe.key:
        return False
    with tempfile.TemporaryDirectory(prefix="pinniped-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        try:
            made = subprocess.run(recipe.mmdebstrap_argv(rootfs), capture_output=True,
                                  text=True, timeout=MMDEBSTRAP_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise ImageError(f"mmdebstrap {recipe.suite} did not finish within "
                             f"{MMDEBSTRAP_TIMEOUT_SECONDS}s") from None
        if made.returncode != 0:
            raise ImageError(f"mmdebstrap {recipe.suite} failed ({made.returncode}):\n"
                             f"{_tail(made.stdout + made.stderr)}")
        podman.run("import", "--change", f"LABEL {RECIPE_LABEL}={recipe.key}",
                   "--change", 'CMD ["bash"]', str(rootfs), recipe.image)
    return True


@dataclass(frozen=True)
class BuiltImage:
    podman: Podman
    name: str
    size_bytes: int
    #: Seconds spent on the base image (checking its label only, when it was cached).
    base_seconds: float
    base_made: bool
    build_seconds: float


def build_image(podman: Podman | None = None, tag: str = IMAGE) -> BuiltImage:
    """The base (made once) and the image from deploy/Containerfile, tagged `tag`.

    The build stage is tagged too (`NAME-build:TAG`), so that pruning what no
    tag holds (earlier builds, a replaced base) keeps every layer the next build
    can reuse, and the image store stays the size of one build.
    """
    require_tools()
    podman = podman or Podman.private()
    recipe = BaseRecipe.from_containerfile()
    name, _, label = tag.rpartition(":")
    with _exclusive(podman.home / "build.lock"):
        start = time.monotonic()
        base_made = ensure_base(podman, recipe)
        base_seconds = time.monotonic() - start
        start = time.monotonic()
        version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
        secret = [f"--secret=id=build-ca,src={bundle}"] if (bundle := _host_ca_bundle()) else []
        build = ["build", "--pull=never", "--network=host", "--layers",
                 f"--build-arg=VERSION={version}", *secret, f"--file={CONTAINERFILE}"]
        podman.run(*build, f"--target={BUILD_STAGE}", f"--tag={name}-{BUILD_STAGE}:{label}",
                   str(REPO_ROOT), timeout=BUILD_TIMEOUT_SECONDS)
        podman.run(*build, f"--tag={tag}", str(REPO_ROOT), timeout=BUILD_TIMEOUT_SECONDS)
        build_seconds = time.monotonic() - start
        podman.run("image", "prune", "--force")
    return BuiltImage(podman=podman, name=tag, size_bytes=podman.size(tag),
                      base_seconds=base_seconds, base_made=base_made,
                      build_seconds=build_seconds)


def bind(path: Path, *, chown: bool = False) -> str:
    """`--volume` mounting `path` read-only at the same path inside the container.

    `chown` hands the files to the container's user (podman's `U` option): the
    concierge's private key and kubeconfig are 0600, so that only their owner
    reads them.
    """
    return f"--volume={path}:{path}:ro{',U' if chown else ''}"


def run_command(image: BuiltImage, name: str, volumes: Sequence[str]) -> list[str]:
    """argv running `image` in the foreground, hardened, as container `name`; the image's
    arguments (its CMD) follow."""
    return image.podman.command("run", "--rm", f"--name={name}", f"--label={TEST_LABEL}",
                                *HARDENED_RUN_FLAGS, *volumes, image.name)


def _host_ca_bundle() -> Path | None:
    """The CA bundle pip trusts on this machine, which a re-signing proxy needs.

    Passed to the build as a secret, so it is mounted for the pip steps only and
    no layer keeps it; a user's own build needs none of this.
    """
    candidates = [os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                  ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One build at a time per image store (several test runs may share the machine)."""
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageError(f"{lock_path} still locked after "
                                     f"{LOCK_TIMEOUT_SECONDS}s: another build hangs") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main() -> None:
    start = time.monotonic()
    built = build_image()
    print(f"{built.name}: {built.size_bytes / 1e6:.1f} MB; base "
          f"{'made' if built.base_made else 'cached'} in {built.base_seconds:.1f}s, "
          f"image built in {built.build_seconds:.1f}s, {time.monotonic() - start:.1f}s in all")


if __name__ == "__main__":
    main()
