"""Shared fixtures: the digits dataset and one tiny trained teacher/student pair (seconds on CPU)."""

from __future__ import annotations

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
    distill(student, logits, digits.train, load_config(None, ["distill.epochs=4", "distill.augment=[]"]).distill, "cpu",
            progress=False)
    return teacher.eval(), student.eval()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
