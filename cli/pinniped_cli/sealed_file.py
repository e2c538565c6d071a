"""A JSON file of sealed values by slot: the on-disk form of both caches.

The cluster-credential cache and the no-keyring session file are the same
kind of file, so they share this one reader and writer (and one set of rules):
an unreadable, foreign or corrupt file is empty (said once) and replaced on
the next write; anything in it but a sealed string (plain text from older
versions, say) is dropped; a write that fails says what to check instead of
failing the login. Stdlib only apart from what `pinniped_cli.sealing` loads to open a
value.

The document is `pinniped_cli.map_file`'s, each value a string::

    {"apiVersion": "cli.pinniped.dev/v1", "kind": "<kind>",
     "<field>": {"<slot>": "aesgcm1:<sealed value>"}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from pinniped_cli import map_file
from pinniped_cli.sealing import CacheKey
from pinniped_cli.securefile import read_private, write_private


class SealedMapFile:
    """One such file: `kind` names it (and binds its values to it), `field` holds the map.

    `what` names the file for people ("credential cache"); `lost` says what a
    failed write costs them.
    """

    __slots__ = ("_lost", "_tighten_dir", "_warn", "_what", "field", "key", "kind", "path")

    def __init__(self, path: Path, *, kind: str, field: str, key: CacheKey,
                 warn: Callable[[str], None], what: str, lost: str,
                 tighten_dir: bool = False) -> None:
        self.path = path
        self.kind = kind
        self.field = field
        self.key = key
        self._warn = warn
        self._what = what
        self._lost = lost
        self._tighten_dir = tighten_dir

    def read(self) -> dict[str, str]:
        """The sealed values by slot; {} for a missing, foreign or unreadable file."""
        raw = read_private(self.path)
        if raw is None:
            return {}
        values = map_file.load(raw, self.kind, self.field)
        if values is None:
            self._warn(f"ignoring the unreadable {self._what} {self.path}; it will be replaced "
                       "at the next login")
            return {}
        return {k: v for k, v in values.items() if isinstance(v, str)}

    def seal(self, slot: str, plaintext: bytes) -> str:
        """`plaintext` sealed for `slot` of this file; raises sealing.KeyUnavailable."""
        return self.key.seal(self.kind, slot, plaintext)

    def open(self, slot: str, sealed: object) -> object:
        """The JSON value sealed for `slot` of this file, or None (never an exception).

        Both caches seal JSON, so an entry that opens but does not parse is a
        miss here, like one that does not open; callers check the value's shape.
        """
        plaintext = self.key.open(self.kind, slot, sealed)
        if plaintext is None:
            return None
        try:
            return json.loads(plaintext)
        except ValueError:  # includes UnicodeDecodeError
            return None

    def write(self, values: Mapping[str, object]) -> bool:
        """Replace the file with `values`; on failure say what to check and return False."""
        try:
            write_private(self.path, map_file.dump(self.kind, self.field, dict(values)),
                          tighten_dir=self._tighten_dir)
        except OSError as exc:
            self._warn(f"could not write the {self._what} {self.path} "
                       f"({exc.strerror or type(exc).__name__}); {self._lost} Check the "
                       "permissions of that directory, or choose another file.")
            return False
        return True
