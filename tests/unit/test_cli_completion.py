"""`pinniped completion`: the command tree read from the real parser, and the scripts' text.

The scripts are run in the real bash, zsh and fish by
tests/integration/test_cli_completion_shells.py; these tests check what is
generated, and that a parser change reaches every script by itself.
"""

from __future__ import annotations

import argparse

import pytest

from localenv.fixtures_cli import CLIHarness
from pinniped_cli import cmd_completion
from pinniped_cli.command_line import build_parser
from pinniped_cli.completion import SHELLS, bash, fish, script, sh, zsh
from pinniped_cli.completion.tree import Command, command_tree
from pinniped_cli.login_options import FLOWS


def _commands(root: Command) -> dict[str, Command]:
    return {command.name: command for command in root.walk()}


def _flag(command: Command, name: str) -> tuple[str, ...]:
    """The flag's names, with what its value completes to (files, choices, or none)."""
    found = [f for f in command.flags if name in f.names]
    assert len(found) == 1, f"{command.name} has no flag {name}"
    flag = found[0]
    kind = "files" if flag.files else "value" if flag.takes_value else "switch"
    return (kind, *flag.choices)


def test_the_tree_has_every_command_at_every_level() -> None:
    commands = _commands(command_tree(build_parser()))
    assert set(commands) == {
        "pinniped", "pinniped login", "pinniped login oidc", "pinniped get",
        "pinniped get kubeconfig", "pinniped whoami", "pinniped logout", "pinniped elevate",
        "pinniped elevate request", "pinniped elevate list", "pinniped elevate approve",
        "pinniped elevate deny", "pinniped elevate revoke", "pinniped version",
        "pinniped completion"}
    assert commands["pinniped"].help == ""
    assert commands["pinniped whoami"].help == "show who the cluster thinks you are"


def test_the_tree_knows_what_each_flag_takes() -> None:
    commands = _commands(command_tree(build_parser()))
    oidc, kubeconfig = commands["pinniped login oidc"], commands["pinniped get kubeconfig"]
    for command in (oidc, kubeconfig):
        assert _flag(command, "--flow") == ("value", *FLOWS)
        assert _flag(command, "--oidc-flow") == ("value", *FLOWS)  # the alias, with it
        assert _flag(command, "--ca-bundle") == ("files",)
        assert _flag(command, "--issuer") == ("value",)
        assert _flag(command, "--skip-browser") == ("switch",)
    assert _flag(kubeconfig, "-o") == ("files",)
    assert _flag(commands["pinniped whoami"], "-o") == ("value", "text", "json")
    assert _flag(commands["pinniped logout"], "--kubeconfig") == ("files",)
    for action in ("request", "list", "approve", "deny", "revoke"):
        elevate = commands[f"pinniped elevate {action}"]
        assert _flag(elevate, "--kubeconfig") == ("files",)
        assert _flag(elevate, "-o") == ("value", "text", "json")
    assert _flag(commands["pinniped elevate request"], "--reason") == ("value",)
    assert _flag(commands["pinniped elevate request"], "--duration") == ("value",)
    assert _flag(commands["pinniped"], "--version") == ("switch",)
    assert commands["pinniped completion"].positionals == (cmd_completion.SHELLS,)
    assert tuple(SHELLS) == cmd_completion.SHELLS


def test_help_is_one_clause_with_argparse_placeholders_filled() -> None:
    commands = _commands(command_tree(build_parser()))
    flags = {n: f.help for f in commands["pinniped login oidc"].flags for n in f.names}
    assert flags["--flow"] == "login flow"  # the long help, cut at its first clause
    assert flags["--scopes"] == "comma-separated scopes"  # "(default: %(default)s)" dropped
    assert all("%(" not in text and len(text) <= 70 for text in flags.values())


def _toy_parser(help_text: str = "frobnicate things") -> argparse.ArgumentParser:
    """A parser with a command nobody wrote a completion for."""
    parser = argparse.ArgumentParser(prog="pinniped")
    commands = parser.add_subparsers(dest="command")
    frob = commands.add_parser("frobnicate", help=help_text)
    frob.add_argument("--color", choices=("red", "blue"), help=help_text)
    frob.add_argument("--secret-knob", help=argparse.SUPPRESS)
    deep = frob.add_subparsers(dest="deep").add_parser("deeper", help="one level down")
    deep.add_argument("--into", metavar="FILE")
    deep.add_argument("target", choices=("north", "south"))
    return parser


def test_a_new_command_reaches_every_script_without_touching_the_generators() -> None:
    parser = _toy_parser()
    texts = {shell: script(shell, parser) for shell in SHELLS}
    assert "'pinniped frobnicate') _pinniped_words='deeper' ;;" in texts["bash"]
    assert "'pinniped frobnicate --color') _pinniped_words='red blue' ;;" in texts["bash"]
    assert "'pinniped frobnicate deeper --into') _pinniped_words='@files' ;;" in texts["bash"]
    assert "'pinniped frobnicate deeper 0') _pinniped_words='north south' ;;" in texts["bash"]
    assert "'pinniped') _pinniped_words=('frobnicate:frobnicate things') ;;" in texts["zsh"]
    assert "'pinniped frobnicate --color') _pinniped_words=('red' 'blue') ;;" in texts["zsh"]
    assert ("complete -c pinniped -n '__pinniped_at \\'pinniped frobnicate\\'' -l color -x "
            "-a 'red blue' -d 'frobnicate things'") in texts["fish"]
    assert ("complete -c pinniped -n '__pinniped_at \\'pinniped frobnicate deeper\\' 0' "
            "-a 'north south'") in texts["fish"]
    assert "-l into -r -F" in texts["fish"]
    for text in texts.values():
        assert "secret-knob" not in text  # help=SUPPRESS stays hidden


def test_descriptions_are_quoted_for_each_shell() -> None:
    nasty = "it's $(touch x) `y` \\ \"z\""
    parser = _toy_parser(nasty)
    assert sh.quote(nasty) == "'it'\\''s $(touch x) `y` \\ \"z\"'"
    assert fish.quote(nasty) == "'it\\'s $(touch x) `y` \\\\ \"z\"'"
    assert f"_pinniped_words=({sh.quote('frobnicate:' + nasty)})" in zsh.script(
        command_tree(parser))
    assert f"-d {fish.quote(nasty)}" in fish.script(command_tree(parser))
    assert nasty not in bash.script(command_tree(parser))  # bash shows no descriptions


@pytest.mark.parametrize("bad", ["two words", "semi;colon", "$(x)", "quote'"])
def test_names_that_a_script_could_not_carry_safely_are_refused(bad: str) -> None:
    parser = argparse.ArgumentParser(prog="pinniped")
    parser.add_argument("--mode", choices=("ok", bad))
    with pytest.raises(ValueError, match="cannot be completed"):
        command_tree(parser)


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_prints_the_script_of_the_real_parser(h: CLIHarness, shell: str) -> None:
    assert h.run(["completion", shell]) == 0
    assert h.last_stdout == script(shell, build_parser())
    assert h.last_stderr == ""


def test_each_script_says_how_to_load_it() -> None:
    parser = build_parser()
    assert "source <(pinniped completion bash)" in script("bash", parser)
    assert script("bash", parser).rstrip().endswith("complete -F _pinniped pinniped")
    assert script("zsh", parser).startswith("#compdef pinniped\n")
    assert "pinniped completion fish | source" in script("fish", parser)


def test_completion_help_shows_the_usage_for_each_shell(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pinniped_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["completion", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "source <(pinniped completion bash)" in out
    assert "source <(pinniped completion zsh)" in out
    assert "after compinit" in out
    assert "pinniped completion fish | source" in out
    assert "~/.config/fish/completions/pinniped.fish" in out


def test_completion_for_an_unknown_shell_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pinniped_cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["completion", "tcsh"])
    assert exc.value.code == 2
    assert "choose from 'bash', 'zsh', 'fish'" in capsys.readouterr().err
