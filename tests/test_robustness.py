import numpy as np
import pytest

from edgekd import perturb, robustness
from edgekd.cache import PAGE_BYTES
from edgekd.ring import Ring
from edgekd.robustness import PerturbedSets, corruption_metrics


class _Runner:
    """A runner that records its thread settings; class = the first pixel's value mod 10."""
    runtime, device, threads = "fake", "cpu", 0

    def __init__(self):
        self.calls = []

    def set_threads(self, t):
        self.calls.append(t)
        self.threads = t

    def predict(self, x):  # differs between perturbed sets
        return np.eye(10, dtype=np.float32)[x.reshape(len(x), -1)[:, 0] % 10]


def _head(split, n: int):
    """The first ``n`` images of a split, as a split."""
    return type(split)(split.x[:n], split.y[:n], split.indices[:n])


def test_cache_returns_identical_bytes_and_survives_damage(digits, tmp_path):
    sets = PerturbedSets(digits.test, seed=0, cache_dir=tmp_path)
    a = sets.get("fog", 3)
    assert sets.misses == 1 and len(list(tmp_path.glob("fog-s3-*.npy"))) == 1
    again = PerturbedSets(digits.test, seed=0, cache_dir=tmp_path)
    b = again.get("fog", 3)
    assert again.hits == 1 and np.array_equal(a, b)
    assert np.array_equal(a, perturb.apply("fog", digits.test.x, 3, 0, digits.test.indices))
    # another seed is another key
    assert not np.array_equal(PerturbedSets(digits.test, 1, tmp_path).get("fog", 3), a)
    # a damaged cache entry is regenerated, not trusted
    next(tmp_path.glob("fog-s3-*.npy")).write_bytes(b"garbage")
    c = PerturbedSets(digits.test, 0, tmp_path)
    assert np.array_equal(c.get("fog", 3), a) and c.misses == 1


def test_iter_sets_keeps_order_and_matches_get(digits):
    small = _head(digits.test, 40)
    cells = [("gaussian_noise", 1), ("fog", 2), ("occlusion", 5), ("contrast", 3), ("snow", 4)]
    got = list(PerturbedSets(small, 0, None).iter_sets(cells, workers=2))
    assert [(n, s) for n, s, _ in got] == cells
    for n, s, arr in got:
        assert np.array_equal(arr, perturb.apply(n, small.x, s, 0, small.indices))


@pytest.mark.parametrize("workers,processes", [(1, False), (2, False), (2, True)])
def test_iter_sets_runs_ahead_into_the_cache(digits, tmp_path, workers, processes):
    if processes and not robustness.fork_generators():
        pytest.skip("generating processes are forked on Linux only")
    small = _head(digits.test, 40)
    cells = [("fog", 1), ("fog", 2), ("zoom_blur", 5), ("zoom_blur", 1), ("fog", 3), ("shot_noise", 2)]
    sets, calls = PerturbedSets(small, 0, tmp_path), []
    got = list(sets.iter_sets(cells, workers, on_generated=lambda: calls.append(1), processes=processes))
    assert sets.generate_cpu_s > 0  # counted in this process, wherever the sets were made
    seq = [(n, s) for n, s, _ in got]  # each group's cells together, the groups as they were made
    groups = [[(n, s) for s in sevs] for n, sevs in sets._groups(cells)]
    assert len(groups) == 4 and calls == [1]
    while seq:
        g = next(g for g in groups if g[0] == seq[0])
        assert seq[:len(g)] == g
        seq, groups = seq[len(g):], [h for h in groups if h is not g]
    assert groups == []
    assert (sets.misses, sets.hits) == (6, 0) and len(list(tmp_path.glob("*.npy"))) == 6
    for n, s, arr in got:
        assert np.array_equal(arr, perturb.apply(n, small.x, s, 0, small.indices))
    again = PerturbedSets(small, 0, tmp_path)
    made = {(n, s): a.tobytes() for n, s, a in got}
    assert {(n, s): a.tobytes() for n, s, a in again.iter_sets(cells, workers)} == made
    assert (again.misses, again.hits) == (0, 6)
    more = PerturbedSets(small, 0, tmp_path)  # cached groups first, each set read once; the new one made
    got = list(more.iter_sets([("snow", 1)] + cells, workers))
    assert [(n, s) for n, s, _ in got][-1] == ("snow", 1) and (more.misses, more.hits) == (1, 6)


def test_a_shared_slot_is_written_to_the_cache_and_taken_again_only_once_its_set_is_dropped(digits, tmp_path):
    if not robustness.fork_generators():
        pytest.skip("the shared slots are made on Linux only")
    small = _head(digits.test, 30)
    ring = Ring(small.x.shape, 2)
    a, b = ring.take(5)
    ring.array(a)[:] = small.x
    ring.save(a, tmp_path / "a.npy")
    ring.flush()
    assert np.array_equal(np.load(tmp_path / "a.npy"), small.x)  # a .npy file np.load reads
    view = ring.hand_over(a)
    part = view[3:7]  # a view of the set keeps its slot
    del view
    assert ring.take(1) == []
    del part
    assert ring.take(1) == [a]
    ring.free[b] = 1
    assert ring.load(b, tmp_path / "a.npy") and np.array_equal(ring.array(b), small.x)
    np.save(tmp_path / "b.npy", small.x)  # not one the ring wrote: read by np.load instead
    assert not ring.load(b, tmp_path / "b.npy") and not ring.load(b, tmp_path / "missing.npy")


def test_a_file_system_without_o_direct_gets_an_ordinary_write(digits, tmp_path, monkeypatch):
    import errno
    import os

    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    real, tried = os.open, []

    def no_direct(path, flags, *mode):  # what tmpfs answers
        if flags & os.O_DIRECT:
            tried.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, *mode)

    small = _head(digits.test, 30)
    ring = Ring(small.x.shape, 1)
    [slot] = ring.take(1)
    ring.array(slot)[:] = small.x
    monkeypatch.setattr(os, "open", no_direct)
    ring.save(slot, tmp_path / "a.npy")
    ring.flush()
    assert tried and np.array_equal(np.load(tmp_path / "a.npy"), small.x) and list(tmp_path.iterdir()) == [
        tmp_path / "a.npy"]  # no temporary file left
    ring.release(slot)
    assert ring.take(1) == [slot] and ring.load(slot, tmp_path / "a.npy")  # read without O_DIRECT too
    assert np.array_equal(ring.array(slot), small.x)


def test_sets_kept_by_the_caller_are_never_overwritten_by_later_ones(digits, tmp_path, monkeypatch):
    if not robustness.fork_generators():
        pytest.skip("the shared slots are made on Linux only")
    small = _head(digits.test, 30)
    stride = PAGE_BYTES * (2 + small.x.nbytes // PAGE_BYTES)
    monkeypatch.setattr(robustness, "GROUP_BYTES", 3 * stride // 2)  # 3 slots for 9 sets
    handed, real = [], Ring.hand_over
    monkeypatch.setattr(Ring, "hand_over", lambda self, k: handed.append(k) or real(self, k))
    cells = [(n, s) for n in ("fog", "contrast", "zoom_blur") for s in (1, 2, 3)]
    kept = list(PerturbedSets(small, 0, tmp_path).iter_sets(cells, workers=1, processes=True))
    assert 1 <= len(handed) <= 3 and len(kept) == 9  # the others came through the cache
    for n, s, arr in kept:
        assert np.array_equal(arr, perturb.apply(n, small.x, s, 0, small.indices))
    again = PerturbedSets(small, 0, tmp_path)  # read back into the slots, three at most at a time
    assert {(n, s): a.tobytes() for n, s, a in again.iter_sets(cells, workers=1)} == \
        {(n, s): a.tobytes() for n, s, a in kept} and again.hits == 9


def test_a_generating_process_that_dies_leaves_its_sets_to_the_sweep(digits, tmp_path, monkeypatch):
    import os

    if not robustness.fork_generators():
        pytest.skip("generating processes are forked on Linux only")
    small = _head(digits.test, 20)
    real, parent = perturb.apply_severities, os.getpid()

    def dies_on_fog(name, *args, **kwargs):  # a forked worker exits making fog; this process makes it
        if name == "fog" and os.getpid() != parent:
            os._exit(1)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(perturb, "apply_severities", dies_on_fog)
    cells = [("fog", 1), ("contrast", 2), ("fog", 2)]
    sets = PerturbedSets(small, 0, tmp_path)
    got = {(n, s): a for n, s, a in sets.iter_sets(cells, workers=2, processes=True)}
    assert sorted(got) == sorted(cells) and sets.misses + sets.hits == 3 and sets.misses >= 2
    for (n, s), arr in got.items():
        assert np.array_equal(arr, perturb.apply(n, small.x, s, 0, small.indices))


def test_the_sweeps_thread_makes_sets_while_none_is_ready(digits, tmp_path, monkeypatch):
    import threading

    small = _head(digits.test, 20)
    real, release, makers = PerturbedSets._load_or_make, threading.Event(), {}

    def held(self, name, severities, *ring):  # the worker's group waits until this thread made the rest
        if not makers.setdefault(name, threading.current_thread() is threading.main_thread()):
            assert release.wait(30)
        return real(self, name, severities, *ring)

    monkeypatch.setattr(PerturbedSets, "_load_or_make", held)
    cells = [("fog", 1), ("fog", 2), ("contrast", 1), ("pixelate", 2)]
    sets, got = PerturbedSets(small, 0, tmp_path), []
    for n, s, arr in sets.iter_sets(cells, workers=1, processes=False):
        got.append((n, s))
        assert np.array_equal(arr, perturb.apply(n, small.x, s, 0, small.indices))
        if len(got) == 2:
            release.set()
    # the worker took the largest group (fog); this thread made the others, smallest first
    assert got == [("pixelate", 2), ("contrast", 1), ("fog", 1), ("fog", 2)]
    assert makers == {"fog": False, "contrast": True, "pixelate": True}
    assert (sets.misses, sets.hits) == (4, 0) and len(list(tmp_path.glob("*.npy"))) == 4


def test_a_read_only_cache_is_read_not_filled(digits, tmp_path):
    small = _head(digits.test, 20)
    PerturbedSets(small, 0, tmp_path).get("fog", 1)
    tmp_path.chmod(0o555)
    try:
        sets = PerturbedSets(small, 0, tmp_path)
        if sets.writable():
            pytest.skip("this user can write to a read-only folder (root)")
        got = list(sets.iter_sets([("fog", 1), ("fog", 2)], workers=2))
        assert [(n, s) for n, s, _ in got] == [("fog", 1), ("fog", 2)] and (sets.hits, sets.misses) == (1, 1)
    finally:
        tmp_path.chmod(0o755)


def test_sweep_splits_the_cores_only_while_generating(digits, tmp_path):
    import os

    import torch

    from edgekd.robustness import sweep_predictions

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    small = _head(digits.test, 40)
    cold, warm = _Runner(), _Runner()
    torch_threads, blas = torch.get_num_threads(), blas_threads()
    preds = sweep_predictions({"m": cold}, PerturbedSets(small, 0, tmp_path), ["fog"], [1, 2], 16, False)
    assert sorted(preds) == ["m/fog/1", "m/fog/2"] and cold.threads == 0  # its own setting back
    assert torch.get_num_threads() == torch_threads and blas_threads() == blas  # and torch's, the BLAS's
    with robustness.one_blas_thread() as limits:  # what the sweep sets while sets are made
        assert set(blas_threads()) <= {1}
    assert blas_threads() == blas and limits is not None
    cores = os.cpu_count() or 1
    assert cold.calls == ([1, 0] if cores > 1 else [])  # one thread while the sets are made
    sweep_predictions({"m": warm}, PerturbedSets(small, 0, tmp_path), ["fog"], [1, 2], 16, False)
    assert warm.calls == []  # every set cached: inference keeps every core


def test_metrics_against_hand_computation():
    # 4 images, labels 0..3; one corruption "fog" at severities 1 and 2 only
    labels = np.array([0, 1, 2, 3])
    p = {
        "teacher/clean": np.array([0, 1, 2, 3]), "teacher/fog/1": np.array([0, 1, 2, 0]),
        "teacher/fog/2": np.array([0, 1, 0, 0]),
        "s/clean": np.array([0, 1, 2, 0]), "s/fog/1": np.array([0, 0, 0, 0]),
        "s/fog/2": np.array([0, 1, 0, 0]),
    }
    m = corruption_metrics(p, labels, ["teacher", "s"], ["fog"], [1, 2])
    s = m["s"]
    assert s["acc"]["fog"][:2] == [0.25, 0.5] and s["acc"]["fog"][2:] == [None] * 3
    assert s["agree"]["fog"][:2] == [0.5, 1.0]
    assert s["flip"]["fog"][:2] == [0.5, 0.25]  # clean [0,1,2,0] -> [0,0,0,0]: 2 of 4 change
    # CE = (0.75 + 0.5) / (0.25 + 0.5); relative CE = ((.75-.25)+(.5-.25)) / ((.25-0)+(.5-0))
    assert s["ce"]["fog"] == pytest.approx(1.25 / 0.75)
    assert s["relative_ce"]["fog"] == pytest.approx(0.75 / 0.75)
    assert m["teacher"]["ce"]["fog"] == pytest.approx(1.0)
    assert s["mca"] == pytest.approx(0.375) and not s["mca_complete"]
    assert s["retention"] == pytest.approx(0.375 / 0.625)


def test_a_fixed_models_predictions_are_cached_beside_each_set_and_read_back(digits, tmp_path):
    from edgekd.robustness import sweep_predictions

    class Counting(_Runner):
        def __init__(self):
            super().__init__()
            self.batches = []

        def predict(self, x):
            self.batches.append(len(x))
            return super().predict(x)

    small = _head(digits.test, 40)
    names, sevs = ["fog", "contrast"], [1, 3]

    def sweep(key):
        teacher, student = Counting(), Counting()
        got = sweep_predictions({"teacher": teacher, "student": student}, PerturbedSets(small, 0, tmp_path),
                                names, sevs, 16, False, fixed={"teacher": key})
        return got, len(teacher.batches), len(student.batches)

    first, t1, s1 = sweep("weights-a")
    again, t2, s2 = sweep("weights-a")  # the same teacher: its predictions read back, the student's run again
    other, t3, _ = sweep("weights-b")  # another teacher runs
    assert t1 == s1 == s2 == t3 == 4 * 3 and t2 == 0  # 4 sets of 40 images in batches of 16
    assert all(np.array_equal(first[k], again[k]) and np.array_equal(first[k], other[k]) for k in first)
    assert len(list((tmp_path / "predictions").glob("*.npy"))) == 8
    for f in (tmp_path / "predictions").glob("*.npy"):  # a damaged entry is run again, not trusted
        f.write_bytes(b"garbage")
    assert sweep("weights-a")[1] == 12


def test_sweep_returns_cells_in_order_and_generates_in_the_background(digits, tmp_path):
    import os
    import sys
    import threading

    from edgekd.robustness import _background, sweep_predictions

    small = _head(digits.test, 40)
    names, sevs = ["snow", "fog", "contrast"], [2, 1]
    preds = sweep_predictions({"a": _Runner(), "b": _Runner()}, PerturbedSets(small, 0, tmp_path), names, sevs, 16, False)
    assert list(preds) == [f"{m}/{n}/{s}" for n in names for s in sevs for m in "ab"]
    for n in names:
        for s in sevs:
            assert np.array_equal(preds[f"a/{n}/{s}"], perturb.apply(n, small.x, s, 0, small.indices)[:, 0, 0, 0] % 10)
    if sys.platform.startswith("linux"):
        nice, own = [], lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # noqa: E731
        before = own()
        t = threading.Thread(target=lambda: (_background(), nice.append(own())))
        t.start()
        t.join()
        assert nice == [19] and own() == before  # that thread only
