"""The `pinniped` command tree as shell completion sees it, read from the real parser.

The scripts are generated from `build_parser()`, so a new subcommand, flag or
choice is completed without touching the generators. This reads argparse's
internals (`_actions`, and the subparsers action's `choices` and
`_choices_actions`), unchanged since Python 3.2; the tests run the scripts in
the real shells, so a change there would fail loudly rather than quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: A flag whose metavar is one of these takes a path: its value completes to file names.
FILE_METAVARS = ("FILE", "PATH")
#: Longest description a shell shows beside a completion.
MAX_HELP = 70
#: What may appear in a script unquoted: every name and choice must look like this.
_WORD = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    help: str
    #: Whether the next word is this flag's value (argparse nargs other than 0).
    takes_value: bool
    #: What the value completes to: these words, or file names when `files`, else nothing.
    choices: tuple[str, ...] = ()
    files: bool = False


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    help: str
    flags: tuple[Flag, ...]
    #: Each positional argument's choices, in order (empty: any word).
    positionals: tuple[tuple[str, ...], ...]
    subcommands: tuple[Command, ...]

    @property
    def name(self) -> str:
        """The words that reach this command, as the scripts key their tables."""
        return " ".join(self.path)

    def walk(self) -> Iterator[Command]:
        """This command, then every command below it, depth first."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] | None = None,
                 help_text: str = "") -> Command:
    """The completion view of `parser` and everything below it."""
    path = path or (parser.prog,)
    flags: list[Flag] = []
    positionals: list[tuple[str, ...]] = []
    subcommands: list[Command] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: _help(choice, parser.prog) for choice in
                     action._choices_actions}
            for name, sub in action.choices.items():
                subcommands.append(command_tree(sub, (*path, _word(name)), helps.get(name, "")))
        elif action.option_strings:
            choices = _choices(action)
            flags.append(Flag(
                names=tuple(_word(name) for name in action.option_strings),
                help=_help(action, parser.prog), takes_value=action.nargs != 0,
                choices=choices, files=not choices and action.metavar in FILE_METAVARS))
        else:
            positionals.append(_choices(action))
    return Command(path=path, help=help_text, flags=tuple(flags),
                   positionals=tuple(positionals), subcommands=tuple(subcommands))


def _choices(action: argparse.Action) -> tuple[str, ...]:
    return tuple(_word(str(choice)) for choice in action.choices or ())


def _word(word: str) -> str:
    """`word`, checked to be safe unquoted in every shell's pattern and word list."""
    if not _WORD.fullmatch(word):
        raise ValueError(f"{word!r} cannot be completed: names and choices must be letters, "
                         "digits and _.+- (rename it in the parser)")
    return word


def _help(action: argparse.Action, prog: str) -> str:
    """The first clause of the action's help, with argparse's %(...)s filled in."""
    text = action.help or ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if action.choices is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices)
    with contextlib.suppress(KeyError, TypeError, ValueError):  # else shown as written
        text = text % params
    text = " ".join(re.split(r";|\s\(default", text, maxsplit=1)[0].split())
    return text if len(text) <= MAX_HELP else text[:MAX_HELP - 3].rstrip() + "..."
