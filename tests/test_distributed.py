"""Builds in several processes (edgekd.distributed): torchrun with gloo on 2 CPU processes writes one
artifact directory; a rank that raises ends every process with its code and no directory at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_digit_tree
from edgekd.config import load_config
from edgekd.distributed import SINGLE, Group, epoch_batches
from edgekd.errors import ConfigError
from edgekd.training import Recipe

TINY = ["teacher.epochs=2", "teacher.min_steps=80", "distill.epochs=2", "distill.min_steps=60",
        'robustness.perturbations=["gaussian_noise", "fog", "pixel_dropout"]', "robustness.severities=[1, 3]",
        "robustness.epsilons=[2]", "robustness.pgd_steps=2", "measure.latency_runs=50",
        "measure.warmup_runs=5", "data.calib_samples=64"]

FAILING = '''
import os
from torch import nn
from edgekd.errors import InputError
from edgekd.models import build_model

def teacher(num_classes):
    if os.environ.get("RANK") == "1":
        raise InputError("the teacher factory refuses rank 1")
    return build_model("digits_teacher", num_classes)

class Boom(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0
    def forward(self, x):
        self.calls += 1
        if self.training and os.environ.get("RANK") == "1" and self.calls > 3:
            raise RuntimeError("rank 1 blew up mid-training")
        return self.net(x)

def student(num_classes):
    return Boom(build_model("digits_student", num_classes))
'''


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


@pytest.fixture(scope="module")
def digit_tree(tmp_path_factory, digits) -> Path:
    return write_digit_tree(tmp_path_factory.mktemp("ddp") / "digits", digits, 60)


def test_a_two_process_torchrun_build_writes_one_directory(tmp_path, digit_tree):
    """gloo, 2 processes, the training split streamed by DataLoader workers: rank 0 writes the
    directory, the manifest says who did what, and the sweep holds every cell."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edgekd",
           "build", "-q", "-o", "out", *_sets(TINY + ['data.name="imagefolder"', f'data.path="{digit_tree}"',
                                                       'data.stream="on"', "data.workers=1",
                                                       f'cache.dir="{tmp_path / "cache"}"'])]
    proc = _run(cmd, tmp_path)
    assert proc.returncode in (0, 1) and (tmp_path / "out").is_dir(), proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]  # nothing partial, no second copy
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    d = manifest["distributed"]
    assert (d["world_size"], d["backend"], d["streamed"], d["batch_per_process"]) == (2, "gloo", True, 32)
    assert [r["rank"] for r in d["per_rank"]] == [0, 1]
    assert "export" in d["per_rank"][0]["timings_s"] and "export" not in d["per_rank"][1]["timings_s"]
    assert all(r["timings_s"]["evaluate_perturbed"] > 0 for r in d["per_rank"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for m in ("teacher", "student_torch", "student_fp32", "student_int8"):
        acc = report["models"][m]["accuracy"]
        cells = [acc["corruptions"][n][s - 1] for n in ("gaussian_noise", "fog") for s in (1, 3)]
        assert all(c is not None for c in cells) and acc["missing"]["pixel_dropout"][0] is not None
        assert acc["adversarial"]["pgd"]["2"] is not None
    assert manifest["stages"]["teacher"]["check"]["passed"]
    assert proc.stdout.count("gate:") == 1  # the summary and gate table once, from rank 0


@pytest.mark.parametrize("sets, code, sentence", [
    (["teacher.arch=failing:teacher"], 2, "rank 1 failed: the teacher factory refuses rank 1"),
    (["student.arch=failing:student"], 3, "rank 1 failed: internal error: RuntimeError: rank 1 blew up mid-training"),
])
def test_a_rank_that_raises_ends_every_rank_with_its_code(tmp_path, sets, code, sentence):
    (tmp_path / "failing.py").write_text(FAILING)
    proc = _run([sys.executable, "-m", "edgekd", "build", "-q", "-o", "out", "--nproc-per-node", "2",
                 *_sets(TINY + sets)], tmp_path)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert f"edgekd: stopped (rank 0 of 2): {sentence}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["failing.py"]


@pytest.mark.parametrize("sets, sentence", [
    (['distill.loss="augmix_js"'], "distill.loss = 'augmix_js' runs its own passes per batch (a step method); in "
                                 "several processes only the loss methods train ("),
    (["distill.batch_size=63"], "distill.batch_size = 63 (the global batch) does not split evenly over 2 processes"),
])
def test_what_cannot_run_in_several_processes_is_refused_before_any_starts(tmp_path, sets, sentence):
    proc = _run([sys.executable, "-m", "edgekd", "build", "-q", "-o", "out", "--nproc-per-node", "2",
                 *_sets(sets)], tmp_path, timeout=120)
    assert proc.returncode == 2 and sentence in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("edgekd: error:") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_each_epoch_is_shared_out_whole():
    n, batch = 103, 8
    shares = [epoch_batches(Group(rank=r, world=2), n, batch, seed=5, epoch=1) for r in (0, 1)]
    assert all(len(b) == 4 for s in shares for b in s[:-1]) and len(shares[0]) == len(shares[1])
    seen = np.concatenate([b for s in shares for b in s])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == 104  # padded by one to equal shares
    again = epoch_batches(Group(rank=0, world=2), n, batch, seed=5, epoch=2)
    assert not np.array_equal(np.concatenate(again), np.concatenate(shares[0]))  # reshuffled per epoch
    with pytest.raises(ConfigError, match="batch size 9 does not split evenly over 2 processes"):
        epoch_batches(Group(rank=0, world=2), n, 9, seed=5, epoch=0)


def test_one_process_collectives_are_the_identity():
    assert SINGLE.broadcast(3) == 3 and SINGLE.gather({"a": 1}) == [{"a": 1}]
    assert SINGLE.shard([1, 2, 3]) == [1, 2, 3] and SINGLE.shard_range(7) == slice(0, 7)
    assert Group(rank=1, world=3).shard(list(range(7))) == [1, 4] and Group(rank=2, world=3).shard_range(7) == slice(6, 7)


def test_the_learning_rate_rule_depends_on_the_global_batch_only():
    cfg = load_config(None, ["distill.lr=0.1", "distill.batch_size=256"]).distill
    assert Recipe.from_config(cfg).peak_lr == 0.1  # fixed
    cfg = load_config(None, ["distill.lr=0.1", "distill.batch_size=256", 'distill.lr_scaling="linear"',
                             "distill.lr_base_batch=64"]).distill
    assert Recipe.from_config(cfg).peak_lr == pytest.approx(0.4)
