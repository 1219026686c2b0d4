"""The small exception tree of edgekd.

Library code raises these; only ``cli.py`` turns them into a message and an exit code.
Each error's text is one sentence a user can act on (it names the file, key or choice).
"""

from __future__ import annotations


class EdgekdError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with (2 = usage or input error)."""

    exit_code = 2


class ConfigError(EdgekdError):
    """A config file, key or value is wrong."""


class InputError(EdgekdError):
    """A data file, checkpoint, model or report given by the user cannot be used."""


class ParityError(EdgekdError):
    """An exported model does not reproduce the torch model (an internal failure, exit 3)."""

    exit_code = 3


class Terminated(BaseException):
    """SIGTERM arrived (a CI runner or a container stop): unwinds like Ctrl-C, so every stage's
    clean-up runs, and the CLI exits 143."""
