"""Shared fixtures: the digits dataset and one tiny trained teacher/student pair (seconds on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.config import BuildConfig, load_config
from edgekd.data import load_dataset
from edgekd.distill import distill, predict_logits, train_teacher
from edgekd.models import Preprocessed, build_model


@pytest.fixture(scope="session")
def cfg() -> BuildConfig:
    return load_config(None)


@pytest.fixture(scope="session")
def digits(cfg):
    return load_dataset(cfg.data)


@pytest.fixture(scope="session")
def trained_pair(cfg, digits):
    """(teacher, student) trained briefly on digits; both Preprocessed, CPU, eval mode."""
    torch.manual_seed(0)
    teacher = Preprocessed(build_model("digits_teacher", 10), digits.mean, digits.std)
    cfg_t = load_config(None, ["teacher.epochs=2"]).teacher
    train_teacher(teacher, digits.train, cfg_t, "cpu", progress=False)
    torch.manual_seed(0)
    student = Preprocessed(build_model("digits_student", 10), digits.mean, digits.std)
    logits = predict_logits(teacher, digits.train.x, "cpu")
    # Adam at 5e-3, no weight decay: an undefended student that white-box attacks wreck (an SGD +
    # weight-decay student is smoother, and FGSM at 8/255 leaves it most of its accuracy on digits)
    recipe = ["distill.epochs=4", "distill.augment=[]", "distill.optimizer=adam", "distill.lr=5e-3",
              "distill.weight_decay=0"]
    distill(student, logits, digits.train, load_config(None, recipe).distill, "cpu", progress=False)
    return teacher.eval(), student.eval()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


def edgekd(*args: str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real `edgekd` command as a user would."""
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict:
    """Environment for `edgekd` subprocesses, with an isolated perturbed-set cache."""
    e = dict(os.environ)
    e["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    e.pop("GITHUB_STEP_SUMMARY", None)
    return e


@pytest.fixture(scope="session")
def default_build(tmp_path_factory, env):
    """(work_dir, CompletedProcess) of one `edgekd build -o out` on the embedded default.

    Shared by every test that needs real artifacts; treat work_dir/"out" as read-only
    (copy it first to modify it).
    """
    work = tmp_path_factory.mktemp("build")
    proc = edgekd("build", "-o", "out", "--quiet", "--set", "compute.device=cpu", cwd=work, env=env)
    return work, proc


def write_digit_tree(root: Path, digits, per_class: int) -> Path:
    """The digits images as an ImageFolder of 32-px PNGs (``per_class`` a class) under ``root``."""
    import numpy as np
    from PIL import Image

    x = np.concatenate([digits.train.x, digits.test.x])
    y = np.concatenate([digits.train.y, digits.test.y])
    for k in range(10):
        (root / f"c{k}").mkdir(parents=True)
        for i, j in enumerate(np.flatnonzero(y == k)[:per_class]):
            Image.fromarray(x[j]).save(root / f"c{k}" / f"{i:03d}.png")
    return root
