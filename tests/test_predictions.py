"""edgekd.predictions: the keys of predictions.npz, parsing them, saving and loading the file."""

from __future__ import annotations

import os
import threading
import zipfile

import numpy as np
import pytest

from edgekd import artifacts
from edgekd import predictions as P
from edgekd.errors import InputError


def test_key_builders():
    assert P.clean("student_int8") == "student_int8/clean"
    assert P.perturbed("student_fp32", "fog", 3) == "student_fp32/fog/3"
    assert P.perturbed("student_fp32", "fog", "3") == P.perturbed("student_fp32", "fog", 3)
    assert P.perturbed_set("fog", 5) == "fog/5"
    assert P.perturbed("m", "fog", 5) == "m/" + P.perturbed_set("fog", 5)
    assert P.adversarial("teacher", "pgd", 8) == "teacher/adv/pgd/8"
    assert P.adversarial_from("student_int8", "student_torch", "fgsm", 2) == "student_int8/adv_from/student_torch/fgsm/2"
    assert P.LABELS == "labels" and P.SWEEP_INDEX == "sweep_index" and P.CLEAN == "clean"


def test_parse_inverts_clean_and_perturbed_keys():
    for a in artifacts.build_models():
        assert P.parse(P.clean(a.id)) == P.Key(a.id, P.CLEAN)
        assert P.parse(P.clean(a.id)).severity is None
        for name, sev in (("fog", 1), ("gaussian_noise", 5), ("occlusion", 3)):
            key = P.parse(P.perturbed(a.id, name, sev))
            assert key == P.Key(a.id, name, sev) and isinstance(key.severity, int)
    assert P.parse("student_int8/fog/3") == P.Key("student_int8", "fog", 3)


@pytest.mark.parametrize("key", [P.LABELS, P.SWEEP_INDEX, "", "m", "m/", "m/fog", "m/fog/x", "m/fog/-1",
                                 "m/fog/3/4", P.adversarial("m", "pgd", 8),
                                 P.adversarial_from("m", "t", "pgd", 8)])
def test_parse_other_keys_is_none(key):
    assert P.parse(key) is None


def test_save_load_round_trip(tmp_path):
    preds = {P.LABELS: np.array([0, 1, 2], np.int64), P.SWEEP_INDEX: np.array([2, 0], np.int64),
             P.clean("teacher"): np.array([0, 1, 1], np.int16),
             P.perturbed("student_int8", "fog", 3): np.array([1, 1], np.int16),
             P.adversarial("student_torch", "pgd", 8): np.array([2, 2], np.int16),
             P.adversarial_from("student_int8", "teacher", "fgsm", 1): np.array([0, 0], np.int16)}
    path = tmp_path / artifacts.PREDICTIONS
    P.save(path, preds)
    assert zipfile.is_zipfile(path)
    back = P.load(path)
    assert list(back) == list(preds)
    for k, v in preds.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    assert isinstance(back[P.LABELS], np.ndarray)  # read into memory, not a lazy view of a closed file


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert "allow_pickle" not in msg and "weights_only" not in msg
    assert msg.count(". ") == 0, msg


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_load_damaged_file(tmp_path, content):
    path = tmp_path / "predictions.npz"
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        P.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a readable .npz file (")
    _one_sentence(msg)


def test_load_truncated_file(tmp_path):
    good = tmp_path / "good.npz"
    P.save(good, {P.LABELS: np.arange(1000)})
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        P.load(bad)
    _one_sentence(str(e.value))


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, labels=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="Python objects") as e:
        P.load(path)
    _one_sentence(str(e.value))


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist") as e:
        P.load(tmp_path / "absent.npz")
    _one_sentence(str(e.value))


def test_load_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        P.load(tmp_path)


def test_load_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "predictions.npz"
    os.mkfifo(fifo)
    result: dict = {}

    def target():
        try:
            P.load(fifo)
        except Exception as e:  # recorded and checked below
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)  # a blocked open must not hang the test run
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "load() blocked opening a FIFO"
    err = result.get("error")
    assert isinstance(err, InputError), err
    assert "FIFO" in str(err) and "predictions" in str(err)
    _one_sentence(str(err))
