"""The user's own shifted data (robustness.shift_sets): loading with the training classes, a real
build that evaluates, reports and gates two colour-shifted sets, and the refusals (gate arithmetic on
synthetic builds: test_gate.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import edgekd
from PIL import Image
from test_bundle import PROFILE

from edgekd import predictions as P
from edgekd.config import load_config
from edgekd.errors import ConfigError, InputError
from edgekd.shift import load_shift_sets

TINY = ["--set", "distill.epochs=2", "--set", "teacher.epochs=2", "--set", "distill.min_steps=40",
        "--set", "teacher.min_steps=40", "--set", "robustness.enabled=false",
        "--set", 'export.runtimes=["onnxruntime"]', "--set", "compute.device=cpu",
        "--set", "measure.latency_runs=50"]
# the sweep is off: the gate checks what the build measured (clean, agreement, shift sets)
NO_SWEEP_GATE = ["--set", "gate.max_mca_drop=false", "--set", "gate.max_corruption_drop=false",
                 "--set", "gate.max_adversarial_drop=false"]


def colour_shift(x: np.ndarray, gain: tuple[float, float, float], offset: tuple[int, int, int]) -> np.ndarray:
    return np.clip(x * np.asarray(gain) + np.asarray(offset), 0, 255).astype(np.uint8)


def write_tree(root, x: np.ndarray, y: np.ndarray, classes: list[str]):
    for c in classes:
        (root / c).mkdir(parents=True)
    for i, (img, k) in enumerate(zip(x, y)):
        Image.fromarray(img).save(root / classes[k] / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def shift_sets(tmp_path_factory, digits):
    """Three ImageFolder folders of the digits test images (the build's own test split): warm
    (red kept, blue halved), night (dark and blue) and unshifted (the images as they are)."""
    root = tmp_path_factory.mktemp("shift")
    x, y, classes = digits.test.x, digits.test.y, digits.classes
    write_tree(root / "warm", colour_shift(x, (1.0, 0.75, 0.5), (0, 0, 0)), y, classes)
    write_tree(root / "night", colour_shift(x, (0.45, 0.45, 0.6), (10, 10, 40)), y, classes)
    write_tree(root / "unshifted", x, y, classes)
    return root


def test_sets_load_with_the_training_classes_and_refuse_others(tmp_path, shift_sets, digits):
    sets = load_shift_sets({"warm": str(shift_sets / "warm"), "plain": str(shift_sets / "unshifted")},
                           digits.classes, 32)
    assert list(sets) == ["warm", "plain"]
    order = np.argsort(digits.test.y, kind="stable")  # class folders are read in class order
    assert np.array_equal(sets["plain"].y, digits.test.y[order])
    assert np.array_equal(sets["plain"].x, digits.test.x[order])  # PNG: the same pixels
    assert sets["warm"].x[..., 2].mean() < 0.6 * sets["warm"].x[..., 0].mean()
    # an .npz set: x, y and (when given) the training classes
    np.savez(tmp_path / "field.npz", x=digits.test.x[:20], y=digits.test.y[:20], classes=np.array(digits.classes))
    field = load_shift_sets({"field": str(tmp_path / "field.npz")}, digits.classes, 32)["field"]
    assert np.array_equal(field.x, digits.test.x[:20]) and np.array_equal(field.y, digits.test.y[:20])
    refusals = []
    np.savez(tmp_path / "other.npz", x=digits.test.x[:20], y=digits.test.y[:20],
             classes=np.array([f"k{i}" for i in range(10)]))
    bad_tree = write_tree(tmp_path / "nine", digits.test.x[:40], digits.test.y[:40] % 9, digits.classes[:9])
    for path in (tmp_path / "other.npz", bad_tree, tmp_path / "absent"):
        with pytest.raises(InputError) as e:
            load_shift_sets({"field": str(path)}, digits.classes, 32)
        refusals.append(str(e.value))
    assert all(r.startswith("robustness.shift_sets.field = ") and "\n" not in r for r in refusals)
    assert "not the training classes" in refusals[0]
    assert "class folders differ from the training set's; missing 9" in refusals[1]
    assert "no such folder or archive" in refusals[2]


@pytest.mark.parametrize("value, message", [
    ('{"9lives" = "x"}', "name '9lives' must start with a letter"),
    ('{"a.b" = "x"}', "name 'a.b' must start with a letter"),
    ("{field = 3}", "robustness.shift_sets.field must be a string"),
    ('"x"', "robustness.shift_sets must be a table of NAME = string entries"),
])
def test_bad_shift_set_config_is_one_sentence(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"robustness.shift_sets={value}"])


def test_paths_in_a_config_file_are_relative_to_it(tmp_path):
    (tmp_path / "edgekd.toml").write_text('[robustness]\nshift_sets = { field = "data/field", abs = "/x.npz" }\n')
    cfg = load_config(tmp_path / "edgekd.toml")
    assert cfg.robustness.shift_sets == {"field": str(tmp_path / "data/field"), "abs": "/x.npz"}


def test_a_build_reports_and_gates_its_shift_sets(tmp_path, env, shift_sets):
    sets = f'{{warm = "{shift_sets / "warm"}", night = "{shift_sets / "night"}", ' \
           f'unshifted = "{shift_sets / "unshifted"}"}}'
    proc = edgekd("build", "-o", "out", "-q", *TINY, *NO_SWEEP_GATE, "--set", f"robustness.shift_sets={sets}",
                  "--set", "gate.max_clean_drop=false", "--set", "gate.min_agreement=false",
                  "--set", "gate.max_shift_drop=1", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    with np.load(out / "predictions.npz") as z:
        preds = {k: z[k] for k in z.files}
    assert list(report["shift_sets"]) == ["warm", "night", "unshifted"]
    n = len(preds[P.LABELS])
    for name in report["shift_sets"]:
        assert report["shift_sets"][name]["n_images"] == n == len(preds[P.shift_labels(name)])
    models = report["models"]
    for name in report["shift_sets"]:
        labels, teacher = preds[P.shift_labels(name)], preds[P.shift("teacher", name)]
        for mid, m in models.items():
            p = preds[P.shift(mid, name)]
            assert m["accuracy"]["shift"][name] == pytest.approx(float((p == labels).mean()))
            assert m["agreement_with_teacher"]["shift"][name] == pytest.approx(float((p == teacher).mean()))
            assert m["shift_drop_vs_teacher"][name] == pytest.approx(
                models["teacher"]["accuracy"]["shift"][name] - m["accuracy"]["shift"][name])
    # the unshifted set holds the test images themselves: every model scores its clean accuracy
    for mid, m in models.items():
        assert m["accuracy"]["shift"]["unshifted"] == pytest.approx(m["accuracy"]["clean"]), mid
    # the colour shifts cost the teacher accuracy (the digits models never saw colour)
    t_acc = models["teacher"]["accuracy"]
    assert t_acc["shift"]["night"] < t_acc["clean"] - 0.05
    gate = json.loads((out / "gate.json").read_text())
    checks = {c["id"]: c for c in gate["checks"]}
    for name in report["shift_sets"]:
        c = checks[f"student_int8.shift_drop.{name}"]
        assert c["passed"] and c["value"] == pytest.approx(models["student_int8"]["shift_drop_vs_teacher"][name])
    md = (out / "report.md").read_text()
    assert "## Shifted data sets" in md and "| night |" in md
    html = (out / "report.html").read_text()
    assert 'id="shift-sets"' in html and ">warm<" in html
    # the same build gated again, strictly, with a threshold below the student's largest drop
    drops = models["student_int8"]["shift_drop_vs_teacher"]
    worst = max(drops, key=drops.get)
    assert drops[worst] > 0, drops  # a 2-epoch student is below its teacher somewhere
    again = edgekd("gate", "out", "--set", "max_clean_drop=false", "--set", "min_agreement=false",
                   *[s.removeprefix("gate.") for s in NO_SWEEP_GATE], "--set", "mode=strict",
                   "--set", f"max_shift_drop={drops[worst] / 2:.6f}", cwd=tmp_path, env=env)
    assert again.returncode == 1 and f"FAIL student_int8.shift_drop.{worst}" in again.stdout, again.stdout
    # edgekd eval on the deployed file evaluates the build's shift sets (from the manifest beside
    # it) and reproduces the build's figures: the same images, the same model
    ev = edgekd("eval", "out/student.int8.onnx", "--perturb", "none", "--json", "ev.json", "-q",
                cwd=tmp_path, env=env)
    assert ev.returncode == 0, ev.stderr
    res = json.loads((tmp_path / "ev.json").read_text())
    assert res["shift_sets"] == report["shift_sets"]
    assert res["accuracy"]["shift"] == pytest.approx(models["student_int8"]["accuracy"]["shift"])
    assert f"shift set night ({n} images): accuracy" in ev.stdout
    # a set of the build that is not on this machine is left out, with a line saying so; a set of
    # the user's own -c config that cannot be read is refused in one sentence (exit 2)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(out / "student.int8.onnx", moved)
    man = json.loads((out / "manifest.json").read_text())
    man["config"]["robustness"]["shift_sets"]["night"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(man))
    ev = edgekd("eval", "moved/student.int8.onnx", "--perturb", "none", "--json", "ev2.json", "-q",
                cwd=tmp_path, env=env)
    assert ev.returncode == 0, ev.stderr
    assert "the build's shift set night is left out" in ev.stderr
    assert set(json.loads((tmp_path / "ev2.json").read_text())["accuracy"]["shift"]) == {"warm", "unshifted"}
    (tmp_path / "mine.toml").write_text(f'[robustness]\nshift_sets = {{ field = "{tmp_path / "gone"}" }}\n')
    ev = edgekd("eval", "out/student.int8.onnx", "-c", "mine.toml", "--perturb", "none", cwd=tmp_path, env=env)
    assert ev.returncode == 2 and len(ev.stderr.strip().splitlines()) == 1, ev.stderr
    assert "robustness.shift_sets.field = " in ev.stderr and "Traceback" not in ev.stderr
    # the on-device bundle carries the first images of each set, checked against the build
    (tmp_path / "box.toml").write_text(PROFILE.format(latency="1e6"))
    b = edgekd("bundle", "out", "--device", "box.toml", "-o", "b", "--no-zip", "--first-images", "60",
               cwd=tmp_path, env=env)
    assert b.returncode == 0, b.stderr
    rec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert [s for s in rec["eval"]["sets"] if s.startswith("shift/")] == [f"shift/{k}" for k in report["shift_sets"]]
    with np.load(tmp_path / "b" / "eval.npz") as z:
        assert np.array_equal(z["labels/shift/night"], preds[P.shift_labels("night")][:60])
        assert np.array_equal(z["teacher/shift/night"], preds[P.shift("teacher", "night")][:60])
    int8 = next(m for m in rec["models"] if m["id"] == "student_int8")
    assert int8["build_accuracy"]["shift/night"] == pytest.approx(
        float((preds[P.shift("student_int8", "night")][:60] == preds[P.shift_labels("night")][:60]).mean()))
    run = subprocess.run([sys.executable, "run.py", "--out", "results.json"], cwd=tmp_path / "b",
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    dev = json.loads((tmp_path / "b" / "results.json").read_text())
    for m in dev["models"].values():  # the device scores the shift sets like the build
        assert m["accuracy"]["shift/night"] == pytest.approx(m["build_accuracy"]["shift/night"], abs=0.02)
    merged = edgekd("report", "out", "--device-results", "b/results.json", cwd=tmp_path, env=env)
    assert merged.returncode == 0, merged.stderr
    # a set that is no longer the one the build measured is refused in one sentence
    rep = json.loads((out / "report.json").read_text())
    rep["shift_sets"]["warm"]["sha256"] = "0" * 64
    (out / "report.json").write_text(json.dumps(rep))
    bad = edgekd("bundle", "out", "--device", "box.toml", "-o", "b2", "--no-zip", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert "shift set 'warm' loaded from" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b2").exists()


def test_a_shift_set_with_other_classes_stops_the_build_with_exit_2(tmp_path, env, digits):
    bad = write_tree(tmp_path / "field", digits.test.x[:50], digits.test.y[:50] % 9, digits.classes[:9])
    proc = edgekd("build", "-o", "out", "-q", *TINY, "--set", f'robustness.shift_sets={{field = "{bad}"}}',
                  cwd=tmp_path, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("edgekd: error: robustness.shift_sets.field = ") and "missing 9" in lines[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
