"""Command line: ``edgekd COMMAND ...``. The only place that prints errors and maps them to exit codes.

Exit codes: 0 success / gate passed, 1 gate failed, 2 usage or input error, 3 internal error.
Each command lives in ``edgekd/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback

from .errors import EdgekdError, Terminated, clear_termination, terminate

# name -> module under edgekd.commands; listed explicitly so `edgekd --help` is complete.
COMMANDS = ("build", "distill", "export", "quantize", "eval", "perturb", "gate", "config", "models", "bench",
            "bundle", "devices", "presets", "report", "compare")

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its one-line form
        self.print_usage(sys.stderr)
        print(f"edgekd: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgekd", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f"edgekd.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _on_sigterm(signum, frame) -> None:
    terminate()


def _unraisable(previous):
    """A ``sys.unraisablehook`` that says nothing of a Terminated that Python dropped where it
    landed (a weakref callback, a ``__del__``): ``errors.terminate`` noted it, and the command
    stops at its next check with the one-line message; anything else goes to ``previous``."""
    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, Terminated):
            return
        previous(unraisable)
    return hook


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # SIGTERM (CI runners, container stops) unwinds like Ctrl-C: partial outputs are removed
    # (and a mask inherited from the parent that blocks them would keep the handlers from running)
    previous, hook = None, sys.unraisablehook
    clear_termination()
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        sys.unraisablehook = _unraisable(hook)
    try:
        return int(args._run(args))
    except Terminated:
        print("edgekd: terminated (SIGTERM); nothing half-written was left", file=sys.stderr)
        return 128 + signal.SIGTERM
    except EdgekdError as e:
        if args.debug:
            traceback.print_exc()
        print(f"edgekd: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `edgekd ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("edgekd: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in edgekd: say so, keep the traceback behind --debug
        if args.debug:
            traceback.print_exc()
        print(f"edgekd: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = hook
        clear_termination()
