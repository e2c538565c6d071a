"""The cached path: a kubectl call answered from the credential cache, and nothing else.

kubectl runs `pinniped login oidc ...` before each of its commands, and
mostly the credential it wants is cached. Answering that costs a Python start
(~10 ms) and whatever we import, so this path imports what it cannot do
without, and no more: no argparse (its parser of our flags costs ~5 ms), no
pathlib (~3 ms), no hashlib (~3 ms: OpenSSL), no datetime. It reads the flags
with `login_flags.read_args`, computes the cache key as the full command does
(`cache_keys`), opens the one entry and prints it as the ExecCredential
(`execcredential`). In the private runtime directory the entry is in the clear
(`pinniped_cli.runtime_cache` says why), so `cryptography` is not imported
either; elsewhere the sealed file is opened (`sealing.open_once`), which
costs its import (~9 ms) but still none of the rest.

Anything it is not sure of makes it return False, and the full command
(`pinniped_cli.main.run`) runs as if this had not been tried: flags it does
not read, an explicit --credential-cache, a miss, an entry that expires within
the minute (within seconds, for one with elevated groups:
`credential_entry.min_remaining_seconds`), a run by hand (no
KUBERNETES_EXEC_INFO), or anything that would be an error or a warning. It
never writes, prints a message, or fails.

The one case where it reaches the network: an entry with the elevation hint
(the user has an elevation pending or active) is handed out only after the
concierge confirms nothing changed (`pinniped_cli.elevation_check`, imported
only for such an entry; stdlib `socket` and `ssl`, at most ~3 s). The same
state, or no answer at all (the apiserver and concierge enforce what the
credential may do, so an outage only delays noticing), serves the entry; a
change, a 401 or nothing left open goes to the full command, which checks
again and logs in or rewrites the entry (`cluster_credential.get_credential`).
"""

from __future__ import annotations

import json
import os
import time

from pinniped_cli import credential_entry, execcredential, login_flags, map_file, runtime_cache
from pinniped_cli.cache_keys import credential_key
from pinniped_cli.errors import UsageError
from pinniped_cli.securefile import config_dir_name, read_private

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TextIO


def serve(args: list[str], env: Mapping[str, str], out: TextIO,
          clock: Callable[[], float] = time.time) -> bool:
    """Print the cached credential for `login oidc ARGS` on `out` and return True, or
    return False having printed nothing (see the module docstring for when)."""
    raw_info = env.get(execcredential.ENV_VAR)
    if not raw_info:
        return False
    values = login_flags.read_args(args)
    if values is None or "credential_cache" in values:
        return False
    try:
        identity = login_flags.checked(values, env).identity
        info = execcredential.read_exec_info(raw_info, stdin_is_tty=False)
    except UsageError:
        return False
    entry = cached_entry(env, credential_key(identity, info.cluster))
    found = credential_entry.fields(entry)
    if found is None:
        return False
    token, expiration, _, _, elevated = found
    if not credential_entry.is_canonical(expiration) or not credential_entry.lasts_until(
            expiration, clock() + credential_entry.min_remaining_seconds(elevated)):
        return False
    if elevated is not None and not _still_elevated(values, token, elevated):
        return False
    out.write(execcredential.render(info, token, expiration))
    out.flush()
    return True


def _still_elevated(values: Mapping[str, object], token: str, elevated: tuple[str, ...]
                    ) -> bool:
    """Whether the concierge says the elevation state is unchanged (or cannot say)."""
    from pinniped_cli import elevation_check

    try:
        ca_pem = elevation_check.ca_pem(_strings(values.get("concierge_ca_bundle")),
                                        _strings(values.get("concierge_ca_bundle_data")))
    except (OSError, ValueError):
        return False  # the full command says what is wrong with the flag
    endpoint = str(values["concierge_endpoint"]).rstrip("/")
    return elevation_check.check(endpoint, ca_pem, token, elevated) in (
        elevation_check.SAME, elevation_check.UNREACHABLE)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def cached_entry(env: Mapping[str, str], key: str) -> object:
    """The entry for `key` in the default credential cache of `env`, opened; None if there
    is none (or the file would have the full command warn)."""
    kind, field = credential_entry.KIND, credential_entry.FIELD
    in_runtime_dir = runtime_cache.cache_path(env)
    if in_runtime_dir is not None:
        return (runtime_cache.read(in_runtime_dir, kind, field) or {}).get(key)
    raw = read_private(os.path.join(config_dir_name(env), credential_entry.FILE_NAME))
    sealed = None if raw is None else (map_file.load(raw, kind, field) or {}).get(key)
    if sealed is None:
        return None
    from pinniped_cli import sealing

    plaintext = sealing.open_once(sealing.key_file(env), kind, key, sealed)
    try:
        return None if plaintext is None else json.loads(plaintext)
    except ValueError:
        return None
