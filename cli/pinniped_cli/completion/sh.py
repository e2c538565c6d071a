"""The lookup tables that the bash and zsh scripts share, as shell `case` functions.

Both shells read the command tree through four functions keyed by the words
typed so far; only how a function hands back its words differs (a string in
bash, an array with descriptions in zsh), so each passes its own `assign`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pinniped_cli.completion.tree import Command

#: What a function sets for a list of (word, description): one shell assignment.
Assign = Callable[[Sequence[tuple[str, str]]], str]
#: The value a flag's table entry holds when its value completes to file names.
FILES = "@files"


def quote(text: str) -> str:
    """`text` single-quoted, the same for bash and zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def tables(root: Command, assign: Assign) -> str:
    """The four functions the completer reads; each sets the words it found via `assign`."""
    commands = list(root.walk())
    subcommands = [([c.name], assign([(s.path[-1], s.help) for s in c.subcommands]))
                   for c in commands if c.subcommands]
    flags = [([c.name], assign([(n, f.help) for f in c.flags for n in f.names]))
             for c in commands if c.flags]
    values = [([f"{c.name} {n}" for n in f.names],
               assign([(FILES, "")] if f.files else [(v, "") for v in f.choices]))
              for c in commands for f in c.flags if f.takes_value]
    positionals = [([f"{c.name} {i}"], assign([(v, "") for v in choices]))
                   for c in commands for i, choices in enumerate(c.positionals) if choices]
    empty = assign([])
    return "\n".join([
        _case("_pinniped_subcommands", "the subcommands of command $1", '"$1"',
              subcommands, empty),
        _case("_pinniped_flags", "the flags of command $1", '"$1"', flags, empty),
        _case("_pinniped_flag_value",
              f"what the value of flag $2 of command $1 completes to ({FILES}: file names); "
              "fails when the flag takes no value", '"$1 $2"', values, "return 1"),
        _case("_pinniped_positional", "the choices of positional argument $2 of command $1",
              '"$1 $2"', positionals, empty),
    ])


def _case(name: str, doc: str, key: str, arms: list[tuple[list[str], str]],
          default: str) -> str:
    lines = [f"# Sets _pinniped_words to {doc}.", f"{name}() {{", f"    case {key} in"]
    lines += [f"        {'|'.join(quote(p) for p in patterns)}) {body} ;;"
              for patterns, body in arms]
    lines += [f"        *) {default} ;;", "    esac", "}", ""]
    return "\n".join(lines)
