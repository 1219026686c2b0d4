"""Hostile and careless model files (issue 16): a checkpoint that names code to run (class 4),
special files where a model or teacher file belongs (class 2), torch's and numpy's own load
errors and warnings (class 11), and the .ort file's byte reproducibility (class 12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch

from edgekd import cli
from edgekd.config import load_config
from edgekd.errors import InputError
from edgekd.export import export_onnx
from edgekd.models import Preprocessed, build_model, load_checkpoint, load_state_dict_file
from edgekd.ort_mobile import convert_to_ort
from edgekd.teachers import load_teacher

UNSAFE_ADVICE = ("weights_only", "allow_pickle", "safe_globals", "trust")

# a module whose import (or call) leaves a marker file: it must never run because a file names it
EVIL_MODULE = """\
import pathlib
pathlib.Path({marker!r}).write_text("imported")


def evil(num_classes=10):
    pathlib.Path({marker!r}).write_text("called")
    from edgekd.models import build_model
    return build_model("digits_student", num_classes)
"""


class Pickled:
    """Stands for any Python object a checkpoint may try to smuggle in through pickle."""


def save_student(path, **changes) -> None:
    """An edgekd student.pt (as ``save_checkpoint`` writes it), with ``changes`` applied."""
    model = Preprocessed(build_model("digits_student", 10), (0.5,) * 3, (0.25,) * 3)
    ck = {"arch": "digits_student", "num_classes": 10, "state_dict": model.state_dict(),
          "options": {"width": 1.0, "stem": "auto", "image_size": 32}, **changes}
    torch.save(ck, path)


def teacher_cfg(weights, *extra: str):
    return load_config(None, [f'teacher.weights="{weights}"', *extra]).teacher


# --- class 4: code named by a checkpoint -----------------------------------------------------------


def test_eval_of_a_checkpoint_naming_a_module_imports_nothing(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "ran.txt"
    (tmp_path / "edgekd_evil_arch.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edgekd_evil_arch", raising=False)
    ck = tmp_path / "student.pt"
    save_student(ck, arch="edgekd_evil_arch:evil", options={})
    rc = cli.main(["eval", str(ck), "--perturb", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "model factory 'edgekd_evil_arch:evil'" in err and "imports no code" in err
    assert not marker.exists()
    assert "edgekd_evil_arch" not in sys.modules


def test_factory_named_by_the_users_config_still_loads(tmp_path, monkeypatch):
    (tmp_path / "edgekd_user_factory.py").write_text(
        "from edgekd.models import build_model\n\n\n"
        "def make(num_classes):\n    return build_model('digits_student', num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edgekd_user_factory", raising=False)
    ck = tmp_path / "student.pt"
    save_student(ck, arch="edgekd_user_factory:make")
    with pytest.raises(InputError, match="imports no code a file names"):
        load_checkpoint(ck)
    assert "edgekd_user_factory" not in sys.modules
    model, _ = load_checkpoint(ck, trusted_factory="edgekd_user_factory:make")  # -c CONFIG names it
    assert model(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape == (1, 10)
    monkeypatch.delitem(sys.modules, "edgekd_user_factory", raising=False)


def test_teacher_sidecar_cannot_name_an_architecture(tmp_path, monkeypatch, digits):
    marker = tmp_path / "ran.txt"
    (tmp_path / "edgekd_evil_teacher.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edgekd_evil_teacher", raising=False)
    weights = tmp_path / "t.pt"
    torch.save(build_model("digits_teacher", 10).state_dict(), weights)
    (tmp_path / "t.json").write_text(json.dumps({"arch": "edgekd_evil_teacher:evil",
                                                 "classes": digits.classes}))
    _, rec = load_teacher(teacher_cfg(weights), digits, "cpu")
    assert rec["arch"] == "digits_teacher"  # teacher.arch, from the config
    assert not marker.exists() and "edgekd_evil_teacher" not in sys.modules


@pytest.mark.parametrize("change, needle", [
    ({"arch": "no_such_arch"}, "unknown architecture 'no_such_arch'"),
    ({"arch": 7}, "it needs an arch name and a state_dict"),
    ({"state_dict": {"mean": "not a tensor"}}, "it needs an arch name and a state_dict"),
    ({"num_classes": True}, "num_classes = True is not a positive integer"),
    # a class count the stored tensors do not have: refused before anything is allocated
    ({"num_classes": 10 ** 12}, "do not fit architecture 'digits_student' with 1000000000000 classes"),
    ({"options": {"exec": "print()"}}, "options must be a table of width, stem, image_size"),
    ({"options": {"width": 2.0}}, "cannot be built from the checkpoint's options"),
])
def test_checkpoint_fields_are_checked_before_building(tmp_path, change, needle):
    ck = tmp_path / "student.pt"
    save_student(ck, **change)
    with pytest.raises(InputError) as e:
        load_checkpoint(ck)
    assert needle in str(e.value) and "\n" not in str(e.value)


# --- class 2: special files where a model file belongs ---------------------------------------------

SPECIAL_FILE_PROBE = r"""
import contextlib, io, json, sys
from edgekd import cli
from edgekd.config import load_config
from edgekd.errors import InputError
from edgekd.models import build_model, load_checkpoint, load_weights
from edgekd.teachers import load_teacher, read_meta

special, regular = sys.argv[1], sys.argv[2]
found = {}

def attempt(name, fn):
    try:
        fn()
        found[name] = "accepted"
    except InputError as e:
        found[name] = str(e)

def teacher(*extra):
    return load_config(None, list(extra)).teacher

attempt("checkpoint", lambda: load_checkpoint(special))
attempt("weights", lambda: load_weights(build_model("digits_teacher", 10), special, "digits_teacher",
                                        10, "teacher.weights"))
attempt("teacher", lambda: load_teacher(teacher(f'teacher.weights="{special}"'), None, "cpu"))
attempt("meta", lambda: read_meta(teacher(f'teacher.meta="{special}"')))
attempt("sidecar", lambda: read_meta(teacher(f'teacher.weights="{regular}"')))
err = io.StringIO()
with contextlib.redirect_stderr(err):
    found["eval_rc"] = cli.main(["eval", special, "--quiet"])
found["eval"] = err.getvalue()
print(json.dumps(found))
"""


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_are_refused_without_opening_them(tmp_path, kind):
    if kind == "fifo":
        special = tmp_path / "t.pt"
        os.mkfifo(special)  # opening it to read would block forever
        regular = tmp_path / "r.pt"  # the sidecar r.json next to regular weights is a FIFO
        os.mkfifo(tmp_path / "r.json")
    else:
        special = "/dev/zero"  # reading it never ends
        regular = tmp_path / "r.pt"
        os.symlink("/dev/zero", tmp_path / "r.json")
    torch.save(build_model("digits_teacher", 10).state_dict(), regular)
    # a subprocess with a timeout: a regression fails here instead of hanging the test run
    proc = subprocess.run([sys.executable, "-c", SPECIAL_FILE_PROBE, str(special), str(regular)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("checkpoint", "weights", "teacher", "meta", "sidecar"):
        assert "not a regular file" in found[name], (name, found[name])
    assert found["eval_rc"] == 2
    assert "not a regular file" in found["eval"] and len(found["eval"].strip().splitlines()) == 1


# --- class 11: torch's and numpy's own words ---------------------------------------------------------


def test_load_errors_never_advise_loading_unsafely(tmp_path, capsys):
    from edgekd.models import load_error_reason

    pickled = tmp_path / "student.pt"
    save_student(pickled, extra=Pickled())  # weights_only=True refuses it, and torch advises False
    sd = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Pickled()}, sd)
    messages = []
    for load in (lambda: load_checkpoint(pickled), lambda: load_state_dict_file(sd, "teacher.weights")):
        with pytest.raises(InputError) as e:
            load()
        messages.append(str(e.value))
    assert all("more than tensors" in m and "Pickled" in m for m in messages), messages
    rc = cli.main(["eval", str(pickled), "--quiet"])
    messages.append(capsys.readouterr().err)
    assert rc == 2 and len(messages[-1].strip().splitlines()) == 1
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError) as e:
        np.load(objects)
    assert "allow_pickle" in str(e.value)  # numpy's own text, which edgekd must not pass on
    messages.append(load_error_reason(e.value))
    assert "object arrays" in messages[-1]
    for m in messages:
        assert not any(word in m for word in UNSAFE_ADVICE), m


def test_damaged_torch_files_give_one_sentence_and_nothing_on_stderr(tmp_path, digits, capfd):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"\x00garbage" * 10)
    no_version = tmp_path / "partial.pt2"  # a zip archive, but not a torch.export program
    with zipfile.ZipFile(no_version, "w") as z:
        z.writestr("partial/models/model.json", "{}")
    script = tmp_path / "junk.ts"
    script.write_bytes(b"PK\x03\x04 not really a TorchScript archive")
    capfd.readouterr()
    for path, fmt in ((junk, "auto"), (no_version, "auto"), (script, "torchscript")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InputError) as e:
                load_teacher(teacher_cfg(path, f'teacher.format="{fmt}"'), digits, "cpu")
        msg = str(e.value)
        assert "not a loadable" in msg and "\n" not in msg and "warnings above" not in msg, msg
        assert not [str(w.message) for w in caught]  # torch's deprecation notices stay inside
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""  # torch.export.load logged a whole traceback here


# --- class 12: student.int8.ort is byte-reproducible -------------------------------------------------

CONVERT = """
import sys
from pathlib import Path
import numpy as np
from edgekd.ort_mobile import convert_to_ort
convert_to_ort(Path(sys.argv[1]), np.load(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort")
    torch.manual_seed(0)
    model = Preprocessed(build_model("digits_student", 10), (0.5,) * 3, (0.25,) * 3).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    export_onnx(model, images, d / "m.onnx", 17)
    np.save(d / "x.npy", images)
    return d


def _operator_table_positions(ort_bytes: bytes) -> list[int]:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    session = InferenceSession.InferenceSession.GetRootAs(bytearray(ort_bytes), 0)
    table = session.KernelTypeStrResolver()
    return [table.OpKernelTypeStrArgs(i)._tab.Pos for i in range(table.OpKernelTypeStrArgsLength())]


def test_ort_operator_table_is_laid_out_in_table_order(tiny_onnx, tmp_path):
    from edgekd.ort_mobile import canonical_ort

    src = tmp_path / "m.onnx"
    shutil.copyfile(tiny_onnx / "m.onnx", src)
    rec = convert_to_ort(src, np.load(tiny_onnx / "x.npy"))
    data = (tmp_path / "m.ort").read_bytes()
    assert rec["byte_reproducible"] and rec["parity"]["argmax_agreement"] == 1.0
    positions = _operator_table_positions(data)
    # onnxruntime writes the entries in its hash map's order, which changes from process to
    # process; canonical_ort writes them in the table's own (sorted) order, so each one lies
    # before the previous one in the file (a FlatBuffer is written back to front)
    assert len(positions) > 3 and positions == sorted(positions, reverse=True)
    assert canonical_ort(data) == data


def test_ort_conversion_is_byte_identical_across_processes(tiny_onnx, tmp_path):
    # separate processes: the variation comes from a per-process hash seed in onnxruntime
    outputs = []
    for i in range(3):
        d = tmp_path / f"run{i}"
        d.mkdir()
        shutil.copyfile(tiny_onnx / "m.onnx", d / "m.onnx")
        proc = subprocess.run([sys.executable, "-c", CONVERT, str(d / "m.onnx"), str(tiny_onnx / "x.npy")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outputs.append([(d / name).read_bytes() for name in
                        ("m.ort", "m.required_operators.config", "m.required_operators_and_types.config")])
    assert outputs[0] == outputs[1] == outputs[2]
