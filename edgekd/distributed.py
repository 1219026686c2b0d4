"""Several processes, one build: ``torchrun --nproc_per_node=N -m edgekd build ...``.

torchrun starts N copies of the build and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`init` joins them into one process group (gloo on the CPU, NCCL on
GPUs). What each part of the build does with the group (docs/scale.md):

* training (teacher and student): ``DistributedDataParallel`` with a ``DistributedSampler``,
  each process taking ``batch_size / N`` images a step; the teacher stays outside DDP, in eval;
* the teacher's outputs on the training images: each process computes its shard, the shards are
  gathered and rank 0 writes the cache;
* the clean evaluation and the perturbed sweep: shared out by model and cell, gathered on rank 0;
* everything that writes (export, quantisation, latency, the report, the gate, the artifact
  directory) runs on rank 0 only; the exit code is broadcast, so every process exits with it.

A process that fails records its exit code and sentence in torchrun's store and exits; the others
see their collective fail (or torchrun's SIGTERM), read the record, and exit with the same code
and sentence naming the rank. One process (no ``WORLD_SIZE``) uses :data:`SINGLE`, whose
collectives are no-ops.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError

FAILURE_KEY = "edgekd/failure"


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    host: str = field(default_factory=socket.gethostname)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: list) -> list:
        """This process's share of ``items``: every ``world``-th from ``rank``."""
        return list(items)[self.rank::self.world]

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def merge(self, part: dict) -> dict:
        """The union of every process's dict."""
        out: dict = {}
        for d in self.gather(part):
            out.update(d)
        return out

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def sync_module(self, module) -> None:
        """Rank 0's parameters and buffers into ``module`` on every process."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for t in module.state_dict().values():
                if isinstance(t, torch.Tensor) and t.numel():
                    dist.broadcast(t, src=0)

    def gather_rows(self, rows: np.ndarray, n: int) -> np.ndarray:
        """The arrays of contiguous shards (:func:`shard_range`) of ``n`` rows, concatenated."""
        parts = [p for p in self.gather(rows) if len(p)]
        out = np.concatenate(parts) if parts else rows
        assert len(out) == n, (len(out), n)
        return out

    def shard_range(self, n: int) -> slice:
        """This process's contiguous share of ``n`` rows."""
        per = -(-n // self.world)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))


def share_files(group: Group, files: dict | None, scratch: Path) -> dict[str, Path]:
    """Rank 0's ``{id: path}`` on every process: rank 0 passes its files and gets them back; the
    others pass None and get copies written into ``scratch`` (machines need not share a disk)."""
    if not group.distributed:
        return dict(files or {})
    payload = group.broadcast(None if not group.is_main else
                              {k: (Path(p).name, Path(p).read_bytes()) for k, p in files.items()})
    if group.is_main:
        return dict(files)
    out = {}
    for k, (name, data) in payload.items():
        (scratch / k).mkdir(parents=True, exist_ok=True)
        out[k] = scratch / k / name
        out[k].write_bytes(data)
    return out


SINGLE = Group()
_current = SINGLE


def current() -> Group:
    return _current


def world_size() -> int:
    """The number of processes torchrun (or another launcher setting ``WORLD_SIZE``) started; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched() -> bool:
    """Started by torchrun (or another launcher that sets ``WORLD_SIZE`` above 1)."""
    return world_size() > 1


def init(device: str, timeout_s: float = 1800.0) -> Group:
    """Join torchrun's processes into one group: NCCL when training on CUDA, else gloo."""
    global _current
    import datetime

    import torch
    import torch.distributed as dist

    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"WORLD_SIZE is set but RANK / LOCAL_RANK are missing or not integers ({e}); "
                          "start a multi-process build with torchrun") from None
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"LOCAL_RANK {local} has no GPU of its own (torch sees "
                              f"{torch.cuda.device_count()}); start at most that many processes per "
                              "machine, or set compute.device = 'cpu' for gloo")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    _current = Group(rank, world, local, backend)
    return _current


def shutdown() -> None:
    global _current
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _current = SINGLE


def _store():
    import torch.distributed as dist

    if not dist.is_initialized():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError):
        return None


def report_failure(group: Group, code: int, message: str) -> None:
    """Leave this process's failure where the others will read it (the first one stays)."""
    store = _store()
    if store is None:
        return
    try:
        if not store.check([FAILURE_KEY]):
            store.set(FAILURE_KEY, json.dumps({"rank": group.rank, "code": code, "message": message}))
    except Exception:  # the store may be gone with the launcher: nothing more to tell
        pass


def peer_failure(wait_s: float = 5.0) -> dict | None:
    """The failure another process recorded, waiting up to ``wait_s`` for it to arrive."""
    store = _store()
    if store is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if store.check([FAILURE_KEY]):
                return json.loads(store.get(FAILURE_KEY))
        except Exception:
            return None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


DONE_KEY = "edgekd/done"


def leave_together(group: Group, code: int) -> None:
    """End this process with ``code`` once every process got here. Rank 0 goes first; the others
    wait for its word, and end with the same code when torchrun stops them early (it stops the
    rest as soon as one process exits non-zero, e.g. with a failed gate's 1)."""
    import signal
    import sys

    group.broadcast(None)  # a barrier: everyone's work is done
    sys.stdout.flush()
    sys.stderr.flush()
    store = _store()
    if group.is_main or store is None:
        if store is not None:
            store.set(DONE_KEY, "1")
        os._exit(code)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if store.check([DONE_KEY]):
                break
        except Exception:  # the store went with rank 0's launcher
            break
        time.sleep(0.05)
    os._exit(code)


def epoch_batches(group: Group, n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """This process's batches of one epoch under DDP: torch's ``DistributedSampler`` (shuffled with
    ``seed`` and the epoch, padded to equal shares) cut into ``batch_size / world`` images."""
    from torch.utils.data import DistributedSampler

    if batch_size % group.world:
        raise ConfigError(f"the batch size {batch_size} does not split evenly over {group.world} processes; "
                          f"make it a multiple of {group.world}")
    sampler = DistributedSampler(range(n), num_replicas=group.world, rank=group.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    idx = np.fromiter(iter(sampler), np.int64)
    per = batch_size // group.world
    return [idx[i:i + per] for i in range(0, len(idx), per)]
