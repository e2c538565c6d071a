"""The `pinniped` command: a kubectl ExecCredential plugin that logs people in with OIDC."""
