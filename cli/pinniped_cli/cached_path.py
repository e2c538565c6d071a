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
the minute, a run by hand (no KUBERNETES_EXEC_INFO), or anything that would be
an error or a warning. It never writes, prints a message, or fails.
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
    found = credential_entry.fields(cached_entry(env, credential_key(identity, info.cluster)))
    if found is None:
        return False
    token, expiration, _, _ = found
    if not credential_entry.is_canonical(expiration) or not credential_entry.lasts_until(
            expiration, clock() + credential_entry.MIN_REMAINING_SECONDS):
        return False
    out.write(execcredential.render(info, token, expiration))
    out.flush()
    return True


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
