"""Errors the CLI reports to a person: each carries what to do next.

Every failure the plugin can meet ends up as one of these, so `main` can
print a single clean line on stderr (never a traceback, never a secret) and
exit nonzero, which kubectl then reports alongside our message.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """A failure with a message meant for a person; `exit_code` is what the process returns."""

    exit_code = EXIT_FAILURE


class UsageError(CLIError):
    exit_code = EXIT_USAGE


class LoginError(CLIError):
    """Logging in at the identity provider failed."""


class HumanStepRequired(LoginError):
    """A login needs a person who could not finish it here; the message says what to run instead."""


class ConciergeError(CLIError):
    """The concierge refused or could not be reached."""
