"""The completion scripts in the real bash, zsh and fish: they load cleanly and complete.

Each script is printed by the real console script (`pinniped completion SHELL`)
and loaded the way its usage text says. A shell that is not installed fails
the test, naming the Debian package to install, because a skipped shell would
be an untested one (hack/bootstrap.sh installs them).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from localenv.fixtures_cli import pinniped_command
from pinniped_cli.completion.fish import quote as fish_quote

pytestmark = pytest.mark.integration

#: What each shell must offer after the words typed so far (the last one is being completed).
EXPECTED = [
    (["pinniped", "l"], {"login", "logout"}),
    (["pinniped", ""], {"login", "get", "whoami", "logout", "elevate", "version",
                        "completion"}),
    (["pinniped", "elevate", ""], {"request", "list", "approve", "deny", "revoke"}),
    (["pinniped", "elevate", "list", "-o", ""], {"text", "json"}),
    (["pinniped", "login", ""], {"oidc"}),
    (["pinniped", "get", "k"], {"kubeconfig"}),
    (["pinniped", "login", "oidc", "--fl"], {"--flow"}),
    (["pinniped", "login", "oidc", "--issuer", "https://x", "--flow", ""],
     {"browser", "device", "password"}),
    (["pinniped", "get", "kubeconfig", "--skip-browser", "--fl"], {"--flow"}),
    (["pinniped", "whoami", "-o", ""], {"text", "json"}),
    (["pinniped", "completion", ""], {"bash", "zsh", "fish"}),
]


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed, so its completion script cannot be tested: "
                    f"install it with `apt-get install -y {name}` (hack/bootstrap.sh does).")
    return path


def _script(tmp_path: Path, shell: str) -> Path:
    result = subprocess.run([*pinniped_command(), "completion", shell], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    path = tmp_path / f"pinniped.{shell}"
    path.write_text(result.stdout)
    return path


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env=env, cwd=tmp_path)


def _offered(stdout: str) -> list[set[str]]:
    """One set of offered words per `---`-separated block."""
    return [{line.split("\t")[0] for line in block.splitlines() if line}
            for block in stdout.split("---\n")[:-1]]


def test_bash_loads_and_completes(tmp_path: Path) -> None:
    bash = _shell("bash")
    script = _script(tmp_path, "bash")
    calls = "".join(
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
        "COMPREPLY=(); _pinniped; printf '%s\\n' \"${COMPREPLY[@]}\"; echo ---\n"
        for words, _ in EXPECTED)
    (tmp_path / "kube.conf").write_text("")
    result = _run([bash, "--norc", "--noprofile", "-c",
                   f"source <(cat {script}) || exit 1\ncomplete -p pinniped\n{calls}"
                   "COMP_WORDS=(pinniped whoami --kubeconfig kube.c); COMP_CWORD=3; "
                   "_pinniped; printf '%s\\n' \"${COMPREPLY[@]}\"; echo ---\n"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    first, rest = result.stdout.split("\n", 1)
    assert first == "complete -F _pinniped pinniped"
    offered = _offered(rest)
    assert offered[:-1] == [expected for _, expected in EXPECTED]
    assert offered[-1] == {"kube.conf"}  # --kubeconfig takes a file


def test_fish_loads_and_completes(tmp_path: Path) -> None:
    fish = _shell("fish")
    script = _script(tmp_path, "fish")
    calls = "".join(f"complete -C {fish_quote(' '.join(words))}; echo ---\n"
                    for words, _ in EXPECTED)
    result = _run([fish, "--no-config", "-c",
                   f"cat {script} | source; or exit 1\n{calls}"
                   "complete -C 'pinniped login oidc --flow=d'; echo ---\n"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    offered = _offered(result.stdout)
    assert offered[:-1] == [expected for _, expected in EXPECTED]
    assert offered[-1] == {"--flow=device"}


def test_zsh_loads_both_ways_and_registers(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    script = _script(tmp_path, "zsh")
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_pinniped").write_text(script.read_text())
    checks = 'print -r -- "$_comps[pinniped]"; whence -w _pinniped'
    sourced = _run([zsh, "-f", "-c", "autoload -U compinit && compinit -u -D || exit 1\n"
                    f"source <(cat {script}) || exit 1\n{checks}"], tmp_path)
    assert sourced.returncode == 0, sourced.stderr
    assert sourced.stderr == ""
    assert sourced.stdout == "_pinniped\n_pinniped: function\n"
    # Saved on $fpath, compinit finds it by its #compdef line and autoloads it.
    on_fpath = _run([zsh, "-f", "-c", f"fpath=({functions} $fpath)\n"
                     f"autoload -U compinit && compinit -u -D || exit 1\n{checks}"], tmp_path)
    assert on_fpath.returncode == 0, on_fpath.stderr
    assert on_fpath.stdout == "_pinniped\n_pinniped: function\n"


@pytest.mark.parametrize(("typed", "completed"), [
    ("pinniped logi", "pinniped login "),
    ("pinniped login oidc --fl", "pinniped login oidc --flow "),
    ("pinniped login oidc --flow dev", "pinniped login oidc --flow device "),
    ("pinniped completion fi", "pinniped completion fish "),
    ("pinniped whoami -o j", "pinniped whoami -o json "),
])
def test_zsh_completes_at_a_real_prompt(tmp_path: Path, typed: str, completed: str) -> None:
    """An interactive zsh on a pseudo-terminal (zsh/zpty): TAB runs the real completion
    system, then a key bound to a widget writes the edited line to a file."""
    zsh = _shell("zsh")
    script = _script(tmp_path, "zsh")
    line = tmp_path / "line"
    driver = tmp_path / "drive.zsh"
    driver.write_text(rf"""
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source {script}
dump() {{ print -r -- "[$BUFFER]" > {line} }}; zle -N dump; bindkey "^X^D" dump; print READY'
zpty -r z out '*READY*'
zpty -n -w z {shlex.quote(typed)}$'\t\C-x\C-d'
for i in {{1..200}}; do [[ -s {line} ]] && break; sleep 0.1; done
zpty -d z
""")
    result = _run([zsh, "-f", str(driver)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert line.read_text() == f"[{completed}]\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_descriptions_cannot_run_commands(tmp_path: Path, shell: str) -> None:
    """Help text is quoted in every script: loading one never runs what a description says."""
    import argparse

    from pinniped_cli.completion import script

    binary = _shell(shell)
    marker = tmp_path / "ran"  # the shells run in tmp_path
    nasty = "it's $(touch ran) `touch ran` \\ \"quoted\""
    parser = argparse.ArgumentParser(prog="pinniped")
    parser.add_subparsers().add_parser("frob", help=nasty).add_argument("--x", help=nasty)
    path = tmp_path / f"nasty.{shell}"
    path.write_text(script(shell, parser))
    load = {"bash": [binary, "--norc", "--noprofile", "-c", f"source {path}"],
            "zsh": [binary, "-f", "-c", f"autoload -U compinit; compinit -u -D; source {path}"],
            "fish": [binary, "--no-config", "-c",
                     f"source {path}; complete -C 'pinniped '; complete -C 'pinniped frob --'"]}
    result = _run(load[shell], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if shell == "fish":
        assert f"frob\t{nasty}" in result.stdout  # shown exactly as written
    assert not marker.exists()
