"""edgekd build: the whole pipeline; exits with the gate's code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._stage import add_config_arguments

HELP = "distil, export, quantise, measure and gate (the whole pipeline)"
DESCRIPTION = """\
Run every stage: teacher -> distilled student -> ONNX -> INT8 candidates -> clean and perturbed
evaluation of every model -> the INT8 candidate to deploy -> report -> gate.

With no arguments it runs on the embedded default (scikit-learn's digits). Options live in
one TOML file (-c); every key, its default and meaning: `edgekd config` or edgekd.example.toml
(docs: README.md, "Configuration"). Exit codes: 0 built and gate passed, 1 gate failed
(artifacts still written), 2 usage or input error, 3 internal error.

Several processes (docs/scale.md): torchrun --nproc_per_node=N -m edgekd build ... trains with
DistributedDataParallel (gloo on the CPU, NCCL on GPUs) and shares out the evaluation; rank 0
writes the artifact directory, and every process exits with the same code."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("-o", "--out", default="edgekd-out", help="artifact directory (default: edgekd-out)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or stage lines")
    p.add_argument("--device", metavar="PROFILE", help="build for this device profile (`edgekd devices`, a "
                   ".toml path, or host = this machine): each INT8 preset it lists is built and measured, "
                   "and the fastest that passes the gate is deployed (deploy.device)")
    p.add_argument("--nproc-per-node", type=int, metavar="N", help="run the build in N processes on this "
                   "machine, as torchrun --standalone --nproc_per_node=N -m edgekd build would, and exit "
                   "with their code (for several machines use torchrun itself: docs/scale.md)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..distill import check_processes
    from ..pipeline import build

    from .. import distributed

    overrides = list(args.overrides) + ([f"deploy.device={args.device}"] if args.device else [])
    cfg = load_config(args.config, overrides)  # a bad config fails here, before any process starts
    check_processes(cfg, args.nproc_per_node or distributed.world_size())
    if args.nproc_per_node is not None:
        return _launch(args)
    if distributed.launched():
        return _run_distributed(args, cfg)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    result = build(cfg, Path(args.out), progress=not args.quiet, say=say)
    _print_result(result, t0)
    return result.exit_code


def _print_result(result, t0: float) -> None:
    from ..report import format_table, summary_rows

    print(format_table(summary_rows(result.report)))
    if result.gate_text:
        print()
        print(result.gate_text.rstrip())
    print(f"\nartifacts: {result.out_dir.resolve()}  ({time.perf_counter() - t0:.1f} s)")


def _launch(args: argparse.Namespace) -> int:
    """``--nproc-per-node N``: torch's elastic launcher (torchrun's engine) on this machine, with a
    standalone rendezvous; the processes' common exit code is this one's."""
    import os
    import uuid

    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # the launcher's own log lines: our ranks say what failed
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .. import distributed
    from ..errors import ConfigError

    n = args.nproc_per_node
    if n < 1 or distributed.launched():
        raise ConfigError("--nproc-per-node takes a number of processes of at least 1, and not under "
                          "torchrun (which already started the processes)" if distributed.launched() else
                          f"--nproc-per-node = {n}: needs at least 1 process")
    argv = ["-m", "edgekd", "build", "-o", args.out] + (["-c", args.config] if args.config else [])
    argv += [a for o in args.overrides for a in ("--set", o)] + (["-q"] if args.quiet else [])
    argv += ["--device", args.device] if args.device else []
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"edgekd-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1)
    try:
        elastic_launch(launch, sys.executable)(*argv)
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        return failure.exitcode if failure.exitcode in (1, 2, 3) else 3
    return 0


def _run_distributed(args: argparse.Namespace, cfg) -> int:
    """One torchrun process's build. A failure here is recorded for the others and ends this
    process at once (a collective with a dead peer would hang its teardown); a collective that
    fails because another process failed, or torchrun's SIGTERM after it, ends this one with that
    process's code and sentence."""
    import os

    from .. import distributed
    from ..distill import resolve_device
    from ..errors import EdgekdError, Terminated
    from ..pipeline import build

    def leave(code: int, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    group = distributed.init(resolve_device(cfg.compute.device))
    rank = f"rank {group.rank} of {group.world}"
    quiet = args.quiet or not group.is_main
    say = (lambda s: None) if quiet else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    try:
        result = build(cfg, Path(args.out), progress=not quiet, say=say)
    except EdgekdError as e:
        distributed.report_failure(group, e.exit_code, str(e))
        leave(e.exit_code, f"edgekd: error ({rank}): {e}")
    except (Terminated, RuntimeError, ConnectionError) as e:  # a peer's failure reaches us like this
        failure = distributed.peer_failure()
        if failure is not None and failure["rank"] != group.rank:
            leave(failure["code"], f"edgekd: stopped ({rank}): rank {failure['rank']} failed: {failure['message']}")
        if isinstance(e, Terminated):
            raise
        distributed.report_failure(group, 3, f"internal error: {type(e).__name__}: {e}")
        leave(3, f"edgekd: internal error ({rank}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    except Exception as e:
        distributed.report_failure(group, 3, f"internal error: {type(e).__name__}: {e}")
        leave(3, f"edgekd: internal error ({rank}): {type(e).__name__}: {e} (rerun with --debug in one process)")
    if group.is_main:
        _print_result(result, t0)
    distributed.leave_together(group, result.exit_code)
    return result.exit_code  # (not reached: the process ends in leave_together)
