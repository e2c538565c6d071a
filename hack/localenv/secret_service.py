"""A real Secret Service for tests: a private D-Bus session bus and an unlocked gnome-keyring.

The CLI keeps login sessions in the OS keyring; on Linux desktops that is the
Secret Service (gnome-keyring, KWallet), reached by `keyring` over the D-Bus
session bus. Tests need the real daemon, not a fake, yet must never touch the
developer's own keyring, so everything here is private to one test:

* `dbus-daemon` runs with a config of our own that listens on a socket in a
  fresh 0700 runtime directory and has no service directories. The stock
  session config would let the bus start (activate) a new gnome-keyring behind
  our back on the first request after we stopped ours, so "the keyring is gone"
  could not be tested, and that process would not be ours to stop.
* `gnome-keyring-daemon --foreground --unlock --components=secrets` runs with
  its own HOME and XDG directories and reads the test password on stdin, so it
  creates and unlocks a fresh `login` collection there.

Both run under `procs.ManagedProcess` (own session, die with their parent,
stopped by PID), and every wait is bounded. The test process talks to the
daemon through `secretstorage` on its own connection, to lock the collection
or read back what the CLI stored, without changing its own environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localenv.procs import ManagedProcess, wait_for

START_TIMEOUT = 20.0
#: sun_path is 108 bytes with its terminating NUL; gnome-keyring's socket is the longest.
_MAX_SOCKET_PATH = 100
#: D-Bus socket authentication: fail fast rather than hang on a bus that stopped answering.
_AUTH_TIMEOUT = 2.0

_BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def find_daemons() -> tuple[str, str]:
    """The paths of dbus-daemon and gnome-keyring-daemon, or an error saying what to install."""
    bus, keyring = shutil.which("dbus-daemon"), shutil.which("gnome-keyring-daemon")
    if bus is None or keyring is None:
        raise FileNotFoundError("dbus-daemon or gnome-keyring-daemon not found: install Debian's "
                                "dbus-daemon and gnome-keyring (hack/bootstrap.sh does this)")
    return bus, keyring


@dataclass
class SecretService:
    """One running private bus and keyring daemon; `env` is what a client process needs."""

    workdir: Path
    runtime_dir: Path
    password: str
    bus: ManagedProcess
    keyring: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"unix:path={self.runtime_dir / 'bus'}"

    @property
    def env(self) -> dict[str, str]:
        """The variables a client needs: the bus, and the runtime dir it lives in (as on a
        desktop, where the CLI's cache key goes too)."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address,
                "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    @property
    def keyring_files(self) -> list[Path]:
        """gnome-keyring's own storage (the collection, encrypted with the password)."""
        return sorted((self.workdir / "home" / ".local" / "share" / "keyrings").glob("*"))

    @classmethod
    def start(cls, workdir: Path, password: str) -> SecretService:
        bus_bin, keyring_bin = find_daemons()
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        runtime_dir = _runtime_dir(workdir)
        config = workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=runtime_dir / "bus"))
        bus = ManagedProcess("dbus-daemon",
                             [bus_bin, f"--config-file={config}", "--nofork", "--nopidfile"],
                             workdir / "dbus-daemon.log", env=_daemon_env(workdir, runtime_dir))
        service = cls(workdir=workdir, runtime_dir=runtime_dir, password=password, bus=bus)
        try:
            wait_for(service._bus_answers, START_TIMEOUT, "dbus-daemon", bus)
            service._start_keyring(keyring_bin)
        except BaseException:
            service.stop()
            raise
        return service

    def _start_keyring(self, keyring_bin: str) -> None:
        secret = self.workdir / "keyring-password"
        secret.touch(mode=0o600)
        secret.write_text(self.password)
        # gnome-keyring reads the password to unlock with on stdin, which ManagedProcess
        # closes: a shell hands it the file instead, then becomes the daemon (exec).
        argv = ["sh", "-c", 'exec "$0" --foreground --unlock --components=secrets < "$1"',
                keyring_bin, str(secret)]
        self.keyring = ManagedProcess(
            "gnome-keyring-daemon", argv, self.workdir / "gnome-keyring.log",
            env={**_daemon_env(self.workdir, self.runtime_dir),
                 "DBUS_SESSION_BUS_ADDRESS": self.address})
        try:
            wait_for(lambda: self.is_locked() is False, START_TIMEOUT,
                     "gnome-keyring's login collection, unlocked", self.keyring)
        finally:
            secret.unlink()  # read by now (or never to be): no password left beside the keyring

    # --- what tests do to it ------------------------------------------------------------------

    def lock(self) -> None:
        """Lock every collection, as a screen lock or `seahorse` would."""
        import secretstorage

        with self._connection() as conn:
            for collection in secretstorage.get_all_collections(conn):
                collection.lock()
        if self.is_locked() is not True:
            raise RuntimeError("gnome-keyring did not lock its login collection")

    def is_locked(self) -> bool | None:
        """Whether the default collection is locked; None while the service is not there."""
        import secretstorage

        try:
            with self._connection() as conn:
                if not secretstorage.check_service_availability(conn):
                    return None
                # Collection() only looks the alias up; get_default_collection would
                # create one, which needs a prompt.
                return secretstorage.Collection(conn).is_locked()
        except (OSError, secretstorage.exceptions.SecretStorageException):
            return None

    def entries(self, service: str) -> dict[str, str]:
        """Every secret stored for `service`, by username (`keyring`'s attributes)."""
        import secretstorage

        with self._connection() as conn:
            found: dict[str, str] = {}
            for item in secretstorage.search_items(conn, {"service": service}):
                found[item.get_attributes()["username"]] = item.get_secret().decode()
            return found

    def stop_keyring(self) -> None:
        """Stop the keyring daemon only: the bus stays, the Secret Service is gone."""
        if self.keyring is not None:
            self.keyring.stop()

    def restart_keyring(self) -> None:
        """A new keyring daemon on the same storage, unlocked again: the person logged back in.

        (Unlocking a locked collection in place needs a prompt, which nobody answers here.)
        """
        self.stop_keyring()
        self._start_keyring(find_daemons()[1])

    def stop_bus(self) -> None:
        """Stop both daemons (by PID), as when the session ends (the bus removes its socket)."""
        for proc in (self.keyring, self.bus):
            if proc is not None:
                proc.stop()

    def stop(self) -> None:
        """Stop both daemons and remove the runtime directory; safe to call twice."""
        self.stop_bus()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # --- plumbing -----------------------------------------------------------------------------

    def _bus_answers(self) -> bool:
        with self._connection():
            return True

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A connection of our own to the private bus (never the caller's session bus)."""
        # jeepney (secretstorage's D-Bus library) ships no type information.
        from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]

        conn = open_dbus_connection(bus=self.address, auth_timeout=_AUTH_TIMEOUT)
        try:
            yield conn
        finally:
            conn.close()


def _runtime_dir(workdir: Path) -> Path:
    """A 0700 directory for the sockets (and the CLI's cache key): in `workdir`, so that it
    goes with the test's other files, unless the socket paths would not fit in the 108
    bytes a unix socket path may have; then a short one of its own in the temp dir."""
    inside = workdir / "run"
    if len(os.fsencode(inside / "keyring" / "control")) < _MAX_SOCKET_PATH:
        inside.mkdir(mode=0o700, exist_ok=True)
        return inside
    return Path(tempfile.mkdtemp(prefix="pinniped-ss-"))


def _daemon_env(workdir: Path, runtime_dir: Path) -> dict[str, str]:
    """An environment with nothing of the developer's: own HOME and XDG dirs, no display."""
    home = workdir / "home"
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share", "XDG_CACHE_HOME": home / ".cache"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {**{name: str(path) for name, path in dirs.items()},
            "XDG_RUNTIME_DIR": str(runtime_dir), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
