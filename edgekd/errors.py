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


_TERMINATION = {"asked": False}  # a SIGTERM arrived in this process (terminate), until cleared


def terminate() -> None:
    """What the CLI's SIGTERM handler does: note that the process is to stop, and raise
    :class:`Terminated` where the main thread is. The note outlives the exception, which Python
    drops ("Exception ignored in ...") when it lands in a weakref callback or a ``__del__`` (CI saw
    it land in importlib's module-lock callback, and the build then ran on and replaced the
    previous one): the points where a command makes its output visible call
    :func:`check_terminated`, so nothing is published after a SIGTERM, wherever it landed."""
    _TERMINATION["asked"] = True
    raise Terminated()


def check_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived (:func:`terminate`), even one whose exception
    was dropped where it landed."""
    if _TERMINATION["asked"]:
        raise Terminated()


def clear_termination() -> None:
    """Forget a SIGTERM (the CLI, once it has answered it or before a command starts)."""
    _TERMINATION["asked"] = False
