"""The perturbed-input sweep: generate each perturbed test set once (cached on disk by content
hash), run every model on it, craft adversarial examples, and turn predictions into metrics.

    sets = PerturbedSets(test_split, seed=0, cache_dir=default_cache_dir())
    images = sets.get("fog", 3)                    # uint8, same shape as the clean test images
    metrics = corruption_metrics(predictions, labels, ["teacher", "student_int8"], names, sevs)

Metric names in report.json, under each model (definitions: Hendrycks & Dietterich 2019, see
../shared/ROBUSTNESS.md and docs/report.md):

- ``accuracy.corruptions[name]``: 5 accuracies (severity 1..5; null where a severity was not run)
  for each of the 19 corruptions; ``accuracy.missing[name]`` likewise for occlusion / pixel_dropout;
- ``accuracy.mca``: mean over the 15 common corruptions x 5 severities;
- ``accuracy.adversarial[attack][eps]``: white-box for torch models, transfer from the fp32 torch
  student for ONNX artifacts (``adversarial_source`` says which); ``accuracy.adversarial_transfer
  [source][attack][eps]``: every model on the examples crafted on each source;
- ``robustness.ce[name]``, ``robustness.mce``, ``robustness.relative_mce`` (teacher = reference),
  ``robustness.retention`` (model mCA / teacher mCA), ``robustness.flip_rate[name]`` (5 values),
  ``robustness.mean_flip_rate``;
- ``agreement_with_teacher.corruptions[name]`` (5 values) and ``agreement_with_teacher.mean_corrupted``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import artifacts, perturb
from . import predictions as P
from .attacks import ATTACKS, craft_epsilons
from .cache import cache_root, default_root, folder, load_array, save_array
from .cores import CoreSplit, cores_per_process, no_spinning_between, one_blas_thread
from .data import Split
from .harness import accuracy, evaluate
from .ring import Ring

CACHE_VERSION = "1"  # bump when a perturbation's definition changes
# the perturbed sets of one perturbation generated together at most (iter_sets holds workers + 1 groups)
GROUP_BYTES = 128 << 20


def default_cache_dir() -> Path:
    return folder(default_root(), "perturbed")


def perturbed_dir(cfg) -> Path | None:
    """The perturbed sets' folder of a build config: ``cache.dir``/perturbed (``cache.dir`` is the
    cache root: "" = the default, "none" = no cache -> None)."""
    return folder(cache_root(cfg.cache.dir), "perturbed")


class PerturbedSets:
    """Perturbed copies of one clean set, generated once and cached by content hash."""

    def __init__(self, clean: Split, seed: int, cache_dir: Path | None) -> None:
        self.clean = clean
        self.seed = seed
        self.cache_dir = cache_dir
        h = hashlib.sha256(clean.x.tobytes())
        h.update(clean.indices.astype(np.int64).tobytes())
        self._clean_hash = h.hexdigest()[:24]
        self.hits = 0
        self.misses = 0
        self.generate_cpu_s = 0.0  # CPU seconds spent making sets (the generating processes' and this one's)
        self._lock = threading.Lock()
        self._ring: Ring | None = None  # while iter_sets runs: the sets' shared slots (Ring)

    def key(self, name: str, severity: int) -> str:
        source = f"|{perturb.frost_source()}" if name == "frost" else ""  # photos or the fallback texture
        text = f"{self._clean_hash}|{name}|{severity}|{self.seed}|{CACHE_VERSION}|{perturb.VERSION}{source}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _path(self, name: str, severity: int) -> Path | None:
        return None if self.cache_dir is None else \
            self.cache_dir / f"{name}-s{severity}-{self.key(name, severity)}.npy"

    def predictions_path(self, model_key: str, name: str, severity: int, batch_size: int) -> Path | None:
        """Where a model's predicted classes on set (name, severity) are cached (``model_key``: what
        the model computes, ``sweep_predictions``' ``fixed``; the batch, in case it changes a
        float sum)."""
        if self.cache_dir is None:
            return None
        text = f"{self.key(name, severity)}|{model_key}|batch {batch_size}"
        return self.cache_dir / "predictions" / f"{name}-s{severity}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"

    def get(self, name: str, severity: int) -> np.ndarray:
        return self.get_many(name, [severity])[severity]

    def cached(self, name: str, severity: int) -> bool:
        path = self._path(name, severity)
        return path is not None and path.is_file()

    def get_many(self, name: str, severities: list[int], count: bool = True) -> dict[int, np.ndarray]:
        """``{severity: images}``: each from the cache, or generated (all the missing severities of
        ``name`` in one ``perturb.apply_severities``, which shares their work) and cached.
        ``count=False``: not counted in hits / misses (a set read back after ``_fill`` counted it)."""
        out, hits, misses, cpu_s, _ = self._load_or_make(name, severities)
        if count:
            self._count(hits, misses, cpu_s)
        return out

    def _load_or_make(self, name: str, severities: list[int], ring: Ring | None = None
                      ) -> tuple[dict[int, np.ndarray], int, int, float, dict[int, int]]:
        """``get_many``'s sets, with the cache hits, the sets generated and the CPU seconds spent
        generating them (the caller counts them: ``_count``), and ``{severity: slot}``: the sets
        made straight into ``ring``'s free slots (and written to the cache from there)."""
        out = {s: load_array(self._path(name, s), lambda a: a.shape == self.clean.x.shape and a.dtype == np.uint8)
               for s in severities}
        missing = [s for s, a in out.items() if a is None]
        cpu_s, slots = 0.0, {}
        if missing:
            t0 = time.thread_time()
            if ring is not None:
                slots = dict(zip(missing, ring.take(len(missing))))
            made = perturb.apply_severities(name, self.clean.x, missing, self.seed, self.clean.indices,
                                            out={s: ring.array(k) for s, k in slots.items()})
            for s in missing:
                if s in slots:
                    ring.save(slots[s], self._path(name, s))
                else:
                    save_array(self._path(name, s), made[s])
            out.update(made)
            cpu_s = time.thread_time() - t0
        return out, len(out) - len(missing), len(missing), cpu_s, slots

    def _count(self, hits: int, misses: int, cpu_s: float) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.generate_cpu_s += cpu_s

    def _make_here(self, name: str, severities: list[int], ring: Ring | None) -> dict[int, np.ndarray]:
        """``get_many`` in the sweep's thread, made into ``ring``'s free slots where it has them."""
        out, hits, misses, cpu_s, slots = self._load_or_make(name, severities, ring)
        self._count(hits, misses, cpu_s)
        return out | {s: ring.hand_over(k) for s, k in slots.items()}

    def _read_ahead(self, groups: list[tuple[str, list[int]]], ring: Ring | None
                    ) -> Iterator[tuple[tuple[str, list[int]], dict[int, np.ndarray]]]:
        """``(group, its sets)`` for cached groups, in order, each group read (``_read``) in a thread
        while the caller uses the one before."""
        yield from _ahead(lambda name, sevs: self._read(name, sevs, ring), groups, ahead=0, threads=1)

    def _read(self, name: str, severities: list[int], ring: Ring | None) -> dict[int, np.ndarray]:
        """``get_many`` (counted), each set read into a free slot of ``ring`` where there is one
        and the file is one ``Ring.save`` wrote (O_DIRECT: no page cache, whose fresh pages this
        VM makes slow; its slots' pages are used over and over)."""
        out = {}
        for s in severities:
            slot = ring.take(1) if ring is not None else []
            if slot and ring.load(slot[0], self._path(name, s)):
                out[s] = ring.hand_over(slot[0])
            elif slot:
                ring.release(slot[0])
        if out:
            self._count(len(out), 0, 0.0)
        rest = [s for s in severities if s not in out]
        return out | (self.get_many(name, rest) if rest else {})

    def writable(self) -> bool:
        """Whether generated sets can go to the cache (a read-only cache is read, not filled)."""
        if self.cache_dir is None:
            return False
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.cache_dir, os.W_OK)

    def _fill(self, name: str, severities: list[int], ring: Ring | None = None
              ) -> tuple[int, int, float, dict[int, int]]:
        """Generate into the cache (and ``ring``'s free slots); keeps nothing else in memory (the
        caller takes the sets from their slots or reads them back, and counts the returned hits,
        sets generated and CPU seconds: ``_count``). Runs in a generating thread or process
        (``_iter_ahead``)."""
        return self._load_or_make(name, severities, ring)[1:]

    def _groups(self, cells: list[tuple[str, int]]) -> list[tuple[str, list[int]]]:
        """Consecutive cells of one perturbation whose severities share work (registered
        ``many=True``), generated together, up to GROUP_BYTES of sets; any other cell alone (the
        smaller the units of work, the sooner the first set and the shorter the last one)."""
        per_group = max(1, GROUP_BYTES // max(1, self.clean.x.nbytes))
        groups: list[tuple[str, list[int]]] = []
        for name, sev in cells:
            if groups and groups[-1][0] == name and len(groups[-1][1]) < per_group \
                    and perturb.PERTURBATIONS.get(name).many:
                groups[-1][1].append(sev)
            else:
                groups.append((name, [sev]))
        return groups

    def iter_sets(self, cells: list[tuple[str, int]], workers: int = 2, on_generated=None,
                  processes: bool | None = None) -> Iterator[tuple[str, int, np.ndarray]]:
        """Yield ``(name, severity, images)`` for every cell once, while ``workers`` threads or
        processes generate the missing sets, the severities of one perturbation together
        (``_groups``), so generation overlaps with whatever the caller does with each set.

        With a cache it can write, the workers run ahead as fast as they can, at the lowest
        priority (``_background``), on the groups with a set missing, each written to the cache and
        handed over as soon as it is made (on Linux in shared memory, ``ring.Ring``; else read back
        from the cache): the cached groups come first, read one group ahead, then the others in the
        order they are finished (memory holds about two groups, whatever the number of cells);
        ``on_generated()`` is called once every set exists. The workers are processes forked from
        this one where ``processes`` (default: where fork is safe to use, ``fork_generators``): with
        both cores to themselves, two generating threads wait on each other's GIL (the 19 x 5 sets
        of 1,000 CIFAR images: 3.3 s and 5.6 CPU-s, against 2.6 s and 4.8 CPU-s in two processes;
        benchmarks/RESULTS.md, issue 21), and a forked worker starts in milliseconds with what this
        process has imported. A worker process that dies leaves its groups to this thread. When
        no group is ready, this thread makes the smallest one no worker has started rather than
        wait (its caller's core would sit idle): the sweep runs ``cores - 1`` workers beside its
        inference thread, and this thread generates only while inference has nothing to run.

        Without a cache to write, the cells come in order, generated by ``workers`` threads (numpy
        and scipy release the GIL), at most ``workers + 1`` groups made ahead and held (each at most
        GROUP_BYTES, or one set)."""
        groups = self._groups(cells)
        if self.writable():
            yield from self._iter_ahead(groups, workers, on_generated,
                                        fork_generators() if processes is None else processes)
            return
        for (name, sevs), sets in _ahead(self.get_many, groups, ahead=workers, threads=workers):
            for sev in sevs:
                yield name, sev, sets.pop(sev)

    def _iter_ahead(self, groups: list[tuple[str, list[int]]], workers: int, on_generated,
                    processes: bool) -> Iterator[tuple[str, int, np.ndarray]]:
        """``iter_sets`` with a cache to write: the workers fill it, this thread reads it back."""
        cached = [all(self.cached(name, s) for s in sevs) for name, sevs in groups]
        # the largest groups first, so the last units of work are short (a core left idle while
        # another finishes a long group is time inference cannot use)
        todo = sorted((g for g, c in zip(groups, cached) if not c), key=lambda g: -len(g[1]))
        # the sets handed over in shared memory, made there or read there from the cache (Linux): made
        # before the fork, so the workers share it (Ring)
        sets_in_ring = sum(len(sevs) for (_, sevs), c in zip(groups, cached) if c or processes)
        ring = self._ring = Ring.sized(self.clean.x.shape, sets_in_ring, GROUP_BYTES) \
            if fork_generators() and sets_in_ring else None
        if processes and todo:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_generator_start, initargs=(self,))
            fill = _generator_fill
        else:
            pool, fill = ThreadPoolExecutor(max_workers=workers, initializer=_background), self._fill
        closer = None  # the thread that shuts the pool down once every set exists
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns on any fork beside threads (ours: idle)
                warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
                futures = {pool.submit(fill, *g): g for g in todo}

            def ready():  # (group, its sets when made here, count them): the cached groups at once,
                # then the others as they are made, never waiting on one while another is ready
                yield from ((g, sets, False) for g, sets in self._read_ahead([g for g, c in zip(groups, cached) if c],
                                                                             ring))
                left = list(futures)  # in submission order: the largest groups first
                while left:
                    fut = next((f for f in left if f.done()), None)
                    if fut is None:  # none ready: make the smallest group not started here
                        stolen = next((f for f in reversed(left) if f.cancel()), None)
                        if stolen is not None:
                            left.remove(stolen)
                            yield futures[stolen], self._make_here(*futures[stolen], ring), False
                            continue
                        fut = next(iter(wait(left, return_when=FIRST_COMPLETED).done))
                    left.remove(fut)
                    try:
                        hits, made, cpu_s, slots = fut.result()
                    except BrokenProcessPool:  # a worker died (killed, out of memory): made here
                        yield futures[fut], None, True
                        continue
                    self._count(hits, made, cpu_s)
                    name, sevs = futures[fut]  # the sets made into shared slots, the others from the cache
                    sets = {s: ring.hand_over(k) for s, k in slots.items()}
                    rest = [s for s in sevs if s not in sets]
                    yield futures[fut], sets | (self.get_many(name, rest, count=False) if rest else {}), False

            for (name, sevs), sets, count in ready():
                if closer is None and all(f.done() for f in futures):
                    # every set exists: the workers exit (writing their last sets, freeing their
                    # memory) while the sets left are inferred, not after (20-40 ms at 32 px)
                    closer = threading.Thread(target=pool.shutdown, name="edgekd-generators-exit")
                    closer.start()
                    if on_generated is not None:
                        on_generated()
                if sets is None:  # from the cache (made again if it failed to write)
                    sets = self.get_many(name, sevs, count=count)
                for sev in sevs:
                    yield name, sev, sets.pop(sev)
        finally:
            if closer is not None:
                closer.join()
            pool.shutdown(wait=True, cancel_futures=True)  # a worker process writes its last sets first
            if ring is not None:
                ring.flush()  # the sets this thread made
            self._ring = None  # the slots still handed out stay mapped until their sets are dropped


def _ahead(fn, items: list[tuple], ahead: int, threads: int) -> Iterator[tuple[tuple, object]]:
    """``(item, fn(*item))`` for each item in order, made in ``threads`` threads up to ``ahead`` + 1
    items beyond the one the caller is using."""
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        queue: deque = deque()
        todo = iter(items)
        for item in todo:
            queue.append((item, pool.submit(fn, *item)))
            if len(queue) > ahead:
                break
        while queue:
            item, fut = queue.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(fn, *nxt)))
            yield item, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def fork_generators() -> bool:
    """Whether perturbed sets are generated in forked worker processes: on Linux (fork is the
    start method DataLoader workers use there; macOS and Windows keep threads)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


_GENERATOR: PerturbedSets | None = None  # in a generating process: the sets it fills


def _generator_start(sets: PerturbedSets) -> None:
    """A forked generating process: its sets (inherited, not pickled) with a lock of its own (the
    parent's may have been held by another thread at the fork), the lowest priority, and torch
    (when the parent had imported it) and the BLAS on one thread like the parent's sweep."""
    global _GENERATOR
    sets._lock = threading.Lock()
    _GENERATOR = sets
    _background()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    one_blas_thread()  # for the life of the process


def _generator_fill(name: str, severities: list[int]) -> tuple[int, int, float, dict[int, int]]:
    """``PerturbedSets._fill`` in a generating process, into the shared slots its sweep made."""
    return _GENERATOR._fill(name, severities, _GENERATOR._ring)


def _background() -> None:
    """Lower the calling thread's scheduling priority (Linux: nice 19 for this thread only, or a
    generating process's main thread), so workers that run ahead take only the CPU the inference
    thread leaves: it is never preempted, keeps up with the sets, and nothing is left for it after
    the last one. Elsewhere: no change."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


def sweep_predictions(runners: dict, sets: PerturbedSets, names: list[str], severities: list[int],
                      batch_size: int, progress: bool, group=None,
                      seconds: dict[str, float] | None = None,
                      fixed: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """``{"{model}/{name}/{severity}": predicted classes}`` for every model on every perturbed set;
    under torchrun (``group``) each process generates and runs its share of the cells.
    ``seconds[model]`` (when given) gathers each model's inference wall time. ``fixed``: ``{model:
    key}`` for models that are the same from build to build (the teacher; the key names its
    weights, structure and runtime): their predictions on each set are cached beside it and read
    back instead of running the model (the default build's warm sweep: 10.3 of its 15.8 s were
    the teacher's; benchmarks/RESULTS.md, issue 21)."""
    from .distributed import SINGLE

    group = group or SINGLE
    out: dict[str, np.ndarray] = {}
    seconds = {} if seconds is None else seconds
    cells = group.shard([(n, s) for n in names for s in severities])
    cores = cores_per_process(group.world)
    # sets to make (and a cache to run ahead into): cores - 1 workers generate while inference keeps
    # one thread busy, and the sweep's thread makes a set itself whenever none is ready (iter_sets);
    # once every set exists, inference gets every core back (CoreSplit). With a worker per core, the
    # two on one core cost a fifth more CPU than alone (benchmarks/RESULTS.md, issue 21)
    writable = sets.writable()
    generating = cores > 1 and writable and any(not sets.cached(*c) for c in cells)
    workers = cores - 1 if generating else 2
    split = CoreSplit(runners, 1 if generating else 0)
    keep = fixed if fixed and writable else {}
    with no_spinning_between(runners):
        try:
            it = sets.iter_sets(cells, workers, on_generated=split.end)
            for name, sev, images in tqdm(it, total=len(cells), desc="perturbed sweep", disable=not progress,
                                          leave=False):
                fits = (len(images),)
                for mid, r in runners.items():
                    t0 = time.perf_counter()
                    path = sets.predictions_path(keep[mid], name, sev, batch_size) if mid in keep else None
                    pred = load_array(path, lambda a: a.shape == fits and a.dtype == np.int16)  # noqa: B023
                    if pred is None:
                        pred = evaluate(r, images, batch_size)
                        save_array(path, pred)
                    out[P.perturbed(mid, name, sev)] = pred
                    _add_since(seconds, mid, t0)
        finally:
            split.close()
    order = [P.perturbed(mid, n, s) for n, s in cells for mid in runners]  # sets may come as made
    return group.merge({k: out[k] for k in order})


def _add_since(seconds: dict[str, float], key: str, t0: float) -> None:
    """Add the wall time since ``t0`` (``time.perf_counter``) to ``seconds[key]``."""
    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0


def adversarial_predictions(runners: dict, sources: dict, clean: Split, epsilons: list[int],
                            steps: int, seed: int, batch_size: int, progress: bool, group=None,
                            seconds: dict[str, dict] | None = None) -> dict:
    """Craft FGSM / PGD examples on each torch ``source`` model, run every model on them (under
    torchrun, each process its share of the attacks). ``seconds`` (when given) gathers the wall
    time of crafting per source (``craft``) and of inference per model (``inference``).

    Keys: ``"{model}/adv_from/{source}/{attack}/{eps}"``.
    """
    from .distributed import SINGLE

    group = group or SINGLE
    out: dict[str, np.ndarray] = {}
    seconds = {} if seconds is None else seconds
    craft_s, infer_s = seconds.setdefault("craft", {}), seconds.setdefault("inference", {})
    jobs = group.shard([(s, a) for s in sources for a in ATTACKS])
    with no_spinning_between(runners):  # torch's crafting and inference take turns with onnxruntime's
        for src, attack in tqdm(jobs, desc="adversarial", disable=not progress, leave=False):
            t0 = time.perf_counter()
            advs = craft_epsilons(attack, sources[src], clean.x, clean.y, epsilons, steps, seed, batch_size)
            _add_since(craft_s, src, t0)
            for eps, adv in advs.items():
                for mid, r in runners.items():
                    t0 = time.perf_counter()
                    out[P.adversarial_from(mid, src, attack, eps)] = evaluate(r, adv, batch_size)
                    _add_since(infer_s, mid, t0)
    return group.merge(out)


def corruption_metrics(preds: dict, labels: np.ndarray, model_ids: list[str], names: list[str],
                       severities: list[int], teacher: str = artifacts.TEACHER) -> dict[str, dict]:
    """Per model: accuracy / agreement / flip rate per (name, severity), mCA, CE, mCE, retention."""
    common = [n for n in perturb.COMMON if n in names]
    full_mca = len(common) == len(perturb.COMMON) and len(severities) == 5
    res: dict[str, dict] = {}
    for mid in model_ids:
        clean = preds[P.clean(mid)]
        acc, agree, flip = {}, {}, {}
        for n in names:
            acc[n], agree[n], flip[n] = [None] * 5, [None] * 5, [None] * 5
            for s in severities:
                p = preds[P.perturbed(mid, n, s)]
                acc[n][s - 1] = accuracy(p, labels)
                agree[n][s - 1] = accuracy(p, preds[P.perturbed(teacher, n, s)])
                flip[n][s - 1] = float((p != clean).mean())
        cells = [acc[n][s - 1] for n in common for s in severities]
        res[mid] = {"acc": acc, "agree": agree, "flip": flip,
                    "mca": float(np.mean(cells)) if cells else None,
                    "mca_complete": full_mca, "clean": accuracy(clean, labels)}
    t = res.get(teacher)
    for r in res.values():
        ce, rel = {}, {}
        for n in common:
            e = [1 - r["acc"][n][s - 1] for s in severities]
            er = [1 - t["acc"][n][s - 1] for s in severities]
            ce[n] = sum(e) / sum(er) if sum(er) > 0 else None
            d_ref = sum(x - (1 - t["clean"]) for x in er)
            rel[n] = sum(x - (1 - r["clean"]) for x in e) / d_ref if d_ref > 0 else None
        r["ce"] = ce
        vals = [v for v in ce.values() if v is not None]
        rvals = [v for v in rel.values() if v is not None]
        r["mce"] = float(np.mean(vals)) if vals and len(vals) == len(ce) else None
        r["relative_mce"] = float(np.mean(rvals)) if rvals and len(rvals) == len(rel) else None
        r["relative_ce"] = rel
        r["retention"] = (r["mca"] / t["mca"]) if r["mca"] is not None and t["mca"] else None
    return res


def sweep_subset(test: Split, sample_images: int, seed: int) -> tuple[Split, np.ndarray | None]:
    """The test images the sweep runs on: all (index None), or a seeded random subset of
    ``sample_images`` (``robustness.sample_images``)."""
    if not sample_images or sample_images >= len(test):
        return test, None
    index = np.sort(np.random.default_rng(seed).permutation(len(test))[:sample_images])
    return Split(test.x[index], test.y[index], test.indices[index]), index


@dataclass
class SweepResult:
    """What the perturbed-input stage measured: report.json's ``robustness`` section (``meta``), each
    model's perturbed metrics (merged into ``models[id]`` by the report) and the predictions."""

    meta: dict
    models: dict[str, dict]
    predictions: dict[str, np.ndarray]


def run_sweep(cfg, ds, runners: dict, torch_models: dict, clean_preds: dict[str, np.ndarray],
              progress: bool, say, group=None, fixed: dict[str, str] | None = None) -> SweepResult:
    """The build's perturbed-input stage: every model on every perturbed set and adversarial
    examples; ``clean_preds[id]`` are the models' predictions on the whole clean test split. Under
    torchrun (``group``) the cells and attacks are shared out and the predictions gathered.
    ``fixed``: the models whose predictions on each set are cached (``sweep_predictions``)."""
    rc = cfg.robustness
    names = perturb.resolve(rc.perturbations)
    sevs = sorted(set(rc.severities))
    test, index = sweep_subset(ds.test, rc.sample_images, rc.seed)
    predictions: dict[str, np.ndarray] = {}
    if index is not None:
        predictions[P.SWEEP_INDEX] = index
    sets = PerturbedSets(test, rc.seed, perturbed_dir(cfg))
    bs = cfg.measure.eval_batch_size
    t_sweep = time.perf_counter()
    inference_s: dict[str, float] = {}
    predictions.update(sweep_predictions(runners, sets, names, sevs, bs, progress, group, inference_s, fixed))
    timings = {"perturbed_s": time.perf_counter() - t_sweep, "generate_cpu_s": sets.generate_cpu_s,
               "perturbed_inference_s": inference_s}
    if group is not None:
        sets.hits, sets.misses = (int(v) for v in group.all_sum([sets.hits, sets.misses]))
    corr = [n for n in names if perturb.PERTURBATIONS.get(n).family != "missing"]
    missing = [n for n in names if n not in corr]
    on_subset = dict(predictions)  # clean predictions on the same images, for flip rates
    on_subset.update({P.clean(m): clean_preds[m] if index is None else clean_preds[m][index] for m in runners})
    met = corruption_metrics(on_subset, test.y, list(runners), names, sevs)
    models: dict[str, dict] = {}
    for mid in runners:
        r = met[mid]
        agree = [v for n in corr for v in r["agree"][n] if v is not None]
        flips = [v for n in corr for v in r["flip"][n] if v is not None]
        models[mid] = {
            "accuracy": {"corruptions": {n: r["acc"][n] for n in corr},
                         "missing": {n: r["acc"][n] for n in missing}, "mca": r["mca"]},
            "agreement_with_teacher": {"corruptions": {n: r["agree"][n] for n in names},
                                       "mean_corrupted": float(np.mean(agree)) if agree else None},
            "robustness": {"ce": r["ce"], "relative_ce": r["relative_ce"], "mce": r["mce"],
                           "relative_mce": r["relative_mce"], "retention": r["retention"],
                           "flip_rate": {n: r["flip"][n] for n in names},
                           "mean_flip_rate": float(np.mean(flips)) if flips else None}}
    meta = {"corruption_table": perturb.table_for(ds.image_shape[0]), "perturbations": names,
            "frost_source": perturb.frost_source() if "frost" in names else None,
            "n_images": len(test),
            "severities": sevs, "seed": rc.seed, "mca_complete": met[artifacts.TEACHER]["mca_complete"],
            "cache": {"dir": str(sets.cache_dir) if sets.cache_dir else None, "hits": sets.hits,
                      "generated": sets.misses},
            "timings": timings}
    if rc.adversarial:
        t_adv, adv_s = time.perf_counter(), {}
        adv = adversarial_predictions(runners, torch_models, test, rc.epsilons, rc.pgd_steps,
                                      rc.seed, bs, progress, group, adv_s)
        timings.update({"adversarial_s": time.perf_counter() - t_adv, "adversarial_craft_s": adv_s["craft"],
                        "adversarial_inference_s": adv_s["inference"]})
        predictions.update(adv)
        for mid, m in models.items():
            # white-box where the model is differentiable (torch), transfer from the torch student
            # for ONNX artifacts (onnxruntime has no gradients)
            src = mid if mid in torch_models else artifacts.STUDENT_TORCH
            m["adversarial_source"] = "white-box" if src == mid else f"transfer:{src}"
            white = m["accuracy"]["adversarial"] = {}
            transfer = m["accuracy"]["adversarial_transfer"] = {s: {} for s in torch_models}
            for attack in ATTACKS:
                white[attack] = {}
                for s in torch_models:
                    transfer[s][attack] = {}
                for eps in rc.epsilons:
                    for s in torch_models:
                        transfer[s][attack][str(eps)] = accuracy(adv[P.adversarial_from(mid, s, attack, eps)], test.y)
                    p = adv[P.adversarial_from(mid, src, attack, eps)]
                    predictions[P.adversarial(mid, attack, eps)] = p
                    white[attack][str(eps)] = accuracy(p, test.y)
        meta["adversarial"] = {"attacks": list(ATTACKS), "epsilons_255": rc.epsilons,
                               "pgd_steps": rc.pgd_steps, "pgd_step_size": "epsilon / 4",
                               "sources": list(torch_models)}
    say(f"robustness: {len(names)} perturbations x {len(sevs)} severities "
        f"({sets.misses} sets generated, {sets.hits} from cache)"
        + (f", FGSM/PGD at eps {rc.epsilons}/255" if rc.adversarial else ""))
    return SweepResult(meta, models, predictions)
