"""The teacher-on-GPU path. Skipped where torch sees no CUDA device (CI and the 2-core machine);
run on a GPU machine with `pytest tests/test_gpu.py`."""

import numpy as np
import pytest
import torch

from edgekd.attacks import craft
from edgekd.distill import predict_logits, resolve_device
from edgekd.harness import measure_latency
from edgekd.runtimes import TorchRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_device_picks_cuda():
    assert resolve_device("auto") == "cuda"


def test_teacher_on_cuda_matches_cpu(trained_pair, digits):
    teacher, _ = trained_pair
    cpu = predict_logits(teacher.cpu(), digits.test.x, "cpu")
    gpu = predict_logits(teacher.to("cuda"), digits.test.x, "cuda")
    teacher.cpu()
    # cuDNN convolutions use TF32 by default on Ampere and later: ~1e-3 relative error
    assert np.abs(cpu - gpu).max() < 1e-2 * np.abs(cpu).max()
    assert (cpu.argmax(1) == gpu.argmax(1)).mean() >= 0.995


def test_attack_and_latency_on_cuda(trained_pair, digits):
    teacher, _ = trained_pair
    teacher.to("cuda")
    adv = craft("pgd", teacher, digits.test.x[:64], digits.test.y[:64], eps=8, steps=5)
    assert adv.dtype == np.uint8 and np.abs(adv.astype(int) - digits.test.x[:64]).max() <= 8
    lat = measure_latency(TorchRunner(teacher, "cuda"), digits.test.x[:1], runs=50, warmup=5, threads=1)
    teacher.cpu()
    assert lat["device"] == "cuda" and lat["p50"] > 0
