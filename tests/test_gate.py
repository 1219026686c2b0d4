"""The gate's checks and verdicts on synthetic builds, and the `edgekd gate` command's exit codes,
messages and output files (statistics: test_gate_stats.py; policy: test_gate_policy.py; budgets:
test_gate_budget_checks.py; table / gate.json / JUnit: test_gate_output.py).

Synthetic artifact directories have exactly the shape `edgekd build` writes (report.json +
predictions.npz), with predictions drawn from chosen per-model accuracies and the report's
figures computed from those predictions.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgekd import cli
from edgekd import gate as g
from edgekd.errors import ConfigError, InputError

COMMON = g.COMMON_CORRUPTIONS
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
MISSING = ("occlusion", "pixel_dropout")
MODELS = ("teacher", "student_torch", "student_fp32", "student_int8")
# only the clean-accuracy check: for tests about one check's arithmetic or decision rule
ONLY_CLEAN = {"max_mca_drop": False, "max_corruption_drop": False, "max_adversarial_drop": False,
              "min_agreement": False}


def make_artifact(d: Path, student: float = 0.95, teacher: float = 0.97, *, n: int = 400,
                  corr: dict | None = None, adv: dict | None = None, students: dict | None = None,
                  noise: float = 0.3, seed: int = 0, memory: bool = False) -> Path:
    """An artifact dir with report.json + predictions.npz.

    Clean accuracy per model: ``teacher`` / ``student`` (every student id) or ``students`` per id.
    ``corr[model]``: accuracy on every corruption cell (float) or {name: float}; default 0.1 below
    clean. ``adv[model]``: accuracy under every attack; default 0.6 / 0.5. Exactly round(acc * n)
    images are right in each cell; which ones follows a difficulty shared by all models plus
    ``noise`` (0 = nested sets, larger = more discordant pairs).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int64)
    clean = {"teacher": teacher, **{m: student for m in MODELS[1:]}, **(students or {})}
    corr, adv = corr or {}, adv or {}
    cells = ["clean"] + [f"{c}/{s}" for c in COMMON + EXTRA + MISSING for s in range(1, 6)] + [
        f"adv/{a}/{e}" for a in ("fgsm", "pgd") for e in (1, 2, 4, 8)]
    difficulty = {cell: rng.random(n) for cell in cells}
    wrong = (labels + 1 + rng.integers(0, 9, n)) % 10  # one wrong class per image, shared
    preds: dict[str, np.ndarray] = {"labels": labels}
    report_models = {}
    for mid, acc in clean.items():
        def target(cell: str, mid=mid, acc=acc) -> float:
            if cell == "clean":
                return acc
            if cell.startswith("adv/"):
                return adv.get(mid, 0.6 if mid == "teacher" else 0.5)
            c = corr.get(mid, acc - 0.1)
            return c.get(cell.split("/")[0], acc - 0.1) if isinstance(c, dict) else c

        accuracy = {}
        for cell in cells:
            score = difficulty[cell] + noise * rng.random(n)
            k = int(round(min(max(target(cell), 0), 1) * n))
            right = np.zeros(n, bool)
            right[np.argsort(score, kind="stable")[:k]] = True
            preds[f"{mid}/{cell}"] = np.where(right, labels, wrong).astype(np.int16)
            accuracy[cell] = float(right.mean())
        m = {"kind": "teacher" if mid == "teacher" else "student",
             "format": "onnx" if mid in ("student_fp32", "student_int8") else "torch",
             "precision": "int8" if mid == "student_int8" else "fp32", "runtime": "torch",
             "params": 390000 if mid == "teacher" else 40000,
             "size_bytes": {"teacher": 1560000, "student_int8": 60000}.get(mid, 160000),
             "accuracy": {
                 "clean": accuracy["clean"],
                 "corruptions": {c: [accuracy[f"{c}/{s}"] for s in range(1, 6)] for c in COMMON + EXTRA},
                 "mca": float(np.mean([accuracy[f"{c}/{s}"] for c in COMMON for s in range(1, 6)])),
                 "missing": {c: [accuracy[f"{c}/{s}"] for s in range(1, 6)] for c in MISSING},
                 "adversarial": {a: {str(e): accuracy[f"adv/{a}/{e}"] for e in (1, 2, 4, 8)}
                                 for a in ("fgsm", "pgd")}},
             "adversarial_source": "transfer:student_torch" if m_is_onnx(mid) else "white-box",
             "latency_ms": {"batch": 1, "threads": 1, "p50": 0.3, "p90": 0.35, "p99": 0.5}}
        if memory:
            m["memory"] = {"peak_rss_bytes": 123456789}
        report_models[mid] = m
    for mid, m in report_models.items():
        m["agreement_with_teacher"] = {"clean": float((preds[f"{mid}/clean"] ==
                                                       preds["teacher/clean"]).mean())}
    d.mkdir(parents=True, exist_ok=True)
    report = {"schema_version": 1, "dataset": {"name": "digits", "n_test": n,
                                               "classes": [str(i) for i in range(10)]},
              "corruption_table": "cifar10-c", "models": report_models}
    (d / "report.json").write_text(json.dumps(report, indent=1))
    np.savez_compressed(d / "predictions.npz", **preds)
    return d


def m_is_onnx(mid: str) -> bool:
    return mid in ("student_fp32", "student_int8")


@pytest.fixture
def run_gate(monkeypatch, capsys):
    """Run `edgekd gate ...` through cli.main (only the gate command registered, so the test does
    not depend on the other commands' modules); returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli, "COMMANDS", ("gate",))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(["gate", *map(str, argv)])
        except SystemExit as e:  # argparse usage errors
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


# ---------------------------------------------------------------------------- verdicts

def test_same_report_passes_one_policy_and_fails_another(tmp_path):
    art = make_artifact(tmp_path / "a", student=0.93, teacher=0.97, n=1000)
    lenient = g.evaluate_gate(art, g.load_policy({"max_clean_drop": 0.10}))
    assert lenient.passed and lenient.exit_code == 0 and lenient.verdict == "pass"
    assert {c.id for c in lenient.checks} >= {"student_int8.clean_drop", "student_int8.mca_drop",
                                              "student_int8.worst_corruption_drop",
                                              "student_int8.adversarial_drop", "student_int8.agreement"}
    strict = g.evaluate_gate(art, g.load_policy({"max_clean_drop": 0.01}))
    assert not strict.passed and strict.exit_code == 1
    assert [c.id for c in strict.failed] == ["student_int8.clean_drop"]
    clean = strict.failed[0]
    # the point estimate equals the report's figures
    report = json.loads((art / "report.json").read_text())["models"]
    assert clean.value == pytest.approx(report["teacher"]["accuracy"]["clean"]
                                        - report["student_int8"]["accuracy"]["clean"])
    assert clean.interval[0] > 0.01 and "McNemar" in clean.detail
    mca = next(c for c in strict.checks if c.id == "student_int8.mca_drop")
    assert mca.value == pytest.approx(report["teacher"]["accuracy"]["mca"]
                                      - report["student_int8"]["accuracy"]["mca"])


def test_damaged_student_fails_and_table_names_the_checks(tmp_path):
    art = make_artifact(tmp_path / "bad", students={"student_int8": 0.10},
                        corr={"student_int8": 0.10}, adv={"student_int8": 0.10})
    result = g.evaluate_gate(art, g.load_policy({}))
    failed = {c.id for c in result.failed}
    assert failed == {"student_int8.clean_drop", "student_int8.mca_drop",
                      "student_int8.worst_corruption_drop", "student_int8.adversarial_drop",
                      "student_int8.agreement"}
    table = g.format_table(result)
    assert table.count("FAIL") >= len(failed) + 1
    last = table.splitlines()[-1]
    assert last.startswith("gate: FAIL (5 of 5 checks failed")
    for cid in failed:
        assert cid in last
    assert "markdown" not in table and "| student_int8.clean_drop |" in g.markdown_summary(result)


def test_strict_and_confident_differ_on_a_borderline_student(tmp_path):
    # drop 4 points on 200 images with many discordant pairs: beyond 3 points as a point
    # estimate, but the 95% interval reaches well below 3 points
    art = make_artifact(tmp_path / "b", student=0.86, teacher=0.90, n=200, noise=2.0)
    strict = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "mode": "strict"}))
    confident = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "mode": "confident"}))
    (cs,), (cc,) = strict.checks, confident.checks
    assert cs.value == pytest.approx(0.04) and cs.interval[0] < 0.03 < cs.interval[1]
    assert (cc.value, cc.interval) == (cs.value, cs.interval)  # same statistics, other decision rule
    assert not strict.passed and confident.passed


def test_per_corruption_checks_are_holm_corrected(tmp_path):
    teacher_corr = 0.85
    art = make_artifact(tmp_path / "c", corr={"teacher": teacher_corr,
                                              "student_int8": {"fog": 0.30, "frost": 0.73}},
                        students={"student_int8": 0.95}, n=400)
    policy = g.load_policy({"per_corruption": True})
    result = g.evaluate_gate(art, policy)
    per = [c for c in result.checks if ".corruption_drop." in c.id]
    assert len(per) == 15
    assert [c.id for c in per if not c.passed] == ["student_int8.corruption_drop.fog"]
    frost = next(c for c in per if c.id.endswith("frost"))
    # teacher 85% - frost 73% = 12 points: within 15, passes; Holm-adjusted p reported
    assert frost.passed and frost.value == pytest.approx(0.12) and "Holm-adjusted" in frost.detail
    worst = next(c for c in result.checks if c.id == "student_int8.worst_corruption_drop")
    assert "fog" in worst.detail and not worst.passed


def test_baseline_regression_detected_paired_and_unpaired(tmp_path):
    old = make_artifact(tmp_path / "old", student=0.96, n=500, corr={"student_int8": 0.85})
    new = make_artifact(tmp_path / "new", student=0.92, n=500, corr={"student_int8": 0.85})
    same = g.evaluate_gate(old, g.load_policy({}), baseline=old)
    base = [c for c in same.checks if ".baseline_" in c.id]
    assert [c.id for c in base] == ["student_int8.baseline_clean_drop", "student_int8.baseline_mca_drop"]
    assert all(c.passed and c.value == 0 for c in base)
    result = g.evaluate_gate(new, g.load_policy({"max_clean_drop": 0.10}), baseline=old / "report.json")
    assert [c.id for c in result.failed] == ["student_int8.baseline_clean_drop"]
    assert result.failed[0].value == pytest.approx(0.04) and "paired images" in result.failed[0].detail
    (old / "predictions.npz").unlink()  # an old build without predictions: unpaired interval
    result = g.evaluate_gate(new, g.load_policy({"max_clean_drop": 0.10}), baseline=old)
    failed = result.failed[0]
    assert failed.id == "student_int8.baseline_clean_drop" and "unpaired" in failed.detail
    # SE = sqrt(.96*.04/500 + .92*.08/500) = sqrt(2.24e-4) = 0.0149666; CI = 0.04 -+ 1.959964 * SE
    assert failed.interval == (pytest.approx(0.04 - 1.959964 * 0.0149666, abs=1e-5),
                               pytest.approx(0.04 + 1.959964 * 0.0149666, abs=1e-5))


def test_budgets_and_report_dict_input(tmp_path):
    art = make_artifact(tmp_path / "d", memory=True)
    report = json.loads((art / "report.json").read_text())
    policy = g.load_policy({"budgets": {"student_int8": {"max_size_bytes": 50000,
                                                         "max_latency_p90_ms": 1.0,
                                                         "max_peak_memory_bytes": 2e8}}})
    result = g.evaluate_gate(report, policy, predictions=art / "predictions.npz")
    assert [c.id for c in result.failed] == ["student_int8.size_bytes"]  # 60000 B > 50000 B
    assert {"student_int8.latency_p90_ms", "student_int8.peak_memory_bytes"} <= {c.id for c in result.checks}
    del report["models"]["teacher"]
    with pytest.raises(InputError, match="no teacher model to compare with; models in it: student_torch"):
        g.evaluate_gate(report, policy, predictions=art / "predictions.npz")


def test_min_accuracy_is_an_absolute_floor_for_any_model(tmp_path):
    art = make_artifact(tmp_path / "d")
    report = json.loads((art / "report.json").read_text())
    acc = {m: report["models"][m]["accuracy"]["clean"] for m in ("teacher", "student_int8")}
    policy = g.load_policy({"budgets": {"student_int8": {"min_accuracy": acc["student_int8"] + 0.01},
                                        "teacher": {"min_accuracy": acc["teacher"] - 0.01}}})
    result = g.evaluate_gate(report, policy, predictions=art / "predictions.npz")
    checks = {c.id: c for c in result.checks}
    floor = checks["student_int8.min_accuracy"]
    assert not floor.passed and floor.comparison == ">=" and floor.value == pytest.approx(acc["student_int8"])
    assert checks["teacher.min_accuracy"].passed
    assert [c.id for c in result.failed] == ["student_int8.min_accuracy"]
    with pytest.raises(ConfigError, match="min_accuracy must be a fraction"):
        g.load_policy({"budgets": {"student_int8": {"min_accuracy": 80}}})


# ---------------------------------------------------------------------------- the command

def test_command_exit_codes_and_outputs(tmp_path, run_gate, monkeypatch):
    good = make_artifact(tmp_path / "good")
    code, out, err = run_gate(good)
    assert code == 0 and "gate: PASS" in out and err == ""
    verdict = json.loads((good / "gate.json").read_text())  # default: next to the report
    assert verdict["verdict"] == "pass" and verdict["n_checks"] == 5

    bad = make_artifact(tmp_path / "bad", students={"student_int8": 0.10}, corr={"student_int8": 0.1})
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "gate.xml"
    code, out, err = run_gate(bad / "report.json", "--junit", junit, "--json", tmp_path / "v.json")
    assert code == 1 and "student_int8.clean_drop" in out.splitlines()[-1]
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["exit_code"] == 1
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite.get("name") == "edgekd.gate"
    assert int(suite.get("tests")) == len(suite.findall("testcase")) == verdict["n_checks"]
    failures = suite.findall("testcase/failure")
    assert int(suite.get("failures")) == len(failures) == len(verdict["failed"]) >= 4
    assert any("clean accuracy drop" in f.get("message") and " pp" in f.get("message") for f in failures)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "### edgekd gate: FAIL" in text

    # --mode and --set override the policy file
    policy = tmp_path / "gate.toml"
    policy.write_text("max_clean_drop = 0.9\nmax_mca_drop = 0.9\nmax_corruption_drop = 0.9\n"
                      "max_adversarial_drop = 0.9\nmin_agreement = 0.0\n")
    assert run_gate(bad, "--policy", policy, "--mode", "strict")[0] == 0
    assert run_gate(bad, "--policy", policy, "--set", "max_clean_drop=0.5")[0] == 1


@pytest.mark.parametrize("setup, args, needles", [
    ("none", ["no-such-report.json"], ["no-such-report.json"]),
    ("art", ["--policy", "{tmp}/typo.toml"], ["unknown key 'max_clean_dorp'", "valid keys:"]),
    ("art", ["--policy", "{tmp}/type.toml"], ["max_mca_drop must be a fraction", "'five'"]),
    ("art", ["--set", "budgets.student_int8.max_peak_memory_bytes=1000000"],
     ["model student_int8 has no memory.peak_rss_bytes, which the budget max_peak_memory_bytes "
      "needs; remove that budget or rebuild with memory measurement"]),
    ("art", ["--set", 'models=["student_fp16"]'],
     ["'student_fp16' is not in the report", "teacher, student_torch, student_fp32, student_int8"]),
    ("art", ["--set", "adversarial_epsilon=16"], ["has no accuracy.adversarial.pgd.16"]),
    ("nosweep", [], ["has no accuracy.mca, which max_mca_drop needs"]),
    ("nonpz", [], ["predictions.npz is missing"]),
    ("badjson", [], ["report.json: not valid JSON"]),
    ("mismatch", [], ["accuracy.clean is 0.5 but predictions.npz gives"]),
    ("art", ["--baseline", "{tmp}/nothing"], ["nothing: no such report file"]),
])
def test_command_input_errors_exit_2_with_one_line(tmp_path, run_gate, setup, args, needles):
    (tmp_path / "typo.toml").write_text("max_clean_dorp = 0.1\n")
    (tmp_path / "type.toml").write_text('[gate]\nmax_mca_drop = "five"\n')
    art = tmp_path / "art"
    if setup != "none":
        make_artifact(art, n=120)
    report = json.loads((art / "report.json").read_text()) if setup != "none" else None
    if setup == "nosweep":
        for m in report["models"].values():
            del m["accuracy"]["corruptions"], m["accuracy"]["mca"]
    if setup == "mismatch":
        report["models"]["student_int8"]["accuracy"]["clean"] = 0.5
    if report is not None:
        (art / "report.json").write_text(json.dumps(report))
    if setup == "nonpz":
        (art / "predictions.npz").unlink()
    if setup == "badjson":
        (art / "report.json").write_text('{"models": ')
    target = [] if args and args[0] == "no-such-report.json" else [art]
    code, out, err = run_gate(*target, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("usage:")]
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_command_usage_error_exits_2(tmp_path, run_gate):
    code, _, err = run_gate(make_artifact(tmp_path / "a", n=100), "--mode", "lax")
    assert code == 2 and err.strip().splitlines()[-1].startswith("edgekd: error: argument --mode")


def test_gate_corruption_list_matches_the_perturbation_registry():
    from edgekd import perturb

    assert g.COMMON_CORRUPTIONS == perturb.COMMON


# ---------------------------------------------------------------------------- shift sets

def add_shift_set(d: Path, name: str, accs: dict[str, float], n: int = 300, seed: int = 1) -> Path:
    """Add a shift set (robustness.shift_sets) to a synthetic artifact: exactly round(acc * n) of
    its n images right per model (nested: whatever the student gets right, the teacher does too),
    with the report's figures computed from those predictions, as a build writes them."""
    rng = np.random.default_rng(seed)
    report = json.loads((d / "report.json").read_text())
    with np.load(d / "predictions.npz") as z:
        preds = {k: z[k] for k in z.files}
    labels = rng.integers(0, 10, n).astype(np.int64)
    order = rng.permutation(n)
    preds[f"labels/shift/{name}"] = labels
    for mid in report["models"]:
        right = np.zeros(n, bool)
        right[order[:int(round(accs.get(mid, accs["student"]) * n))]] = True
        preds[f"{mid}/shift/{name}"] = np.where(right, labels, (labels + 1) % 10).astype(np.int16)
    t = preds[f"teacher/shift/{name}"]
    for mid, m in report["models"].items():
        p = preds[f"{mid}/shift/{name}"]
        acc = float((p == labels).mean())
        m["accuracy"].setdefault("shift", {})[name] = acc
        m["agreement_with_teacher"].setdefault("shift", {})[name] = float((p == t).mean())
        m.setdefault("shift_drop_vs_teacher", {})[name] = float((t == labels).mean()) - acc
    report.setdefault("shift_sets", {})[name] = {"path": f"/data/{name}", "n_images": n, "sha256": "0" * 64}
    (d / "report.json").write_text(json.dumps(report, indent=1))
    np.savez_compressed(d / "predictions.npz", **preds)
    return d


def test_each_shift_set_is_gated_against_the_teacher_image_by_image(tmp_path):
    art = make_artifact(tmp_path / "a", student=0.95, teacher=0.96, n=400)
    add_shift_set(art, "warm", {"teacher": 0.90, "student": 0.89}, seed=1)
    add_shift_set(art, "night", {"teacher": 0.80, "student": 0.50}, seed=2)
    res = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.05}))
    by_id = {c.id: c for c in res.checks}
    warm, night = by_id["student_int8.shift_drop.warm"], by_id["student_int8.shift_drop.night"]
    assert warm.passed and not night.passed and res.exit_code == 1
    assert warm.value == pytest.approx(0.01) and night.value == pytest.approx(0.30)
    assert warm.metric == "accuracy.shift.warm" and "300 paired images" in night.detail
    # confident mode over two sets: each p is Holm-adjusted over both
    assert "Holm-adjusted over 2 sets" in night.detail
    assert night.p_value <= warm.p_value <= 1
    # the threshold is the user's; false turns the checks off; a build without sets has none
    assert g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.40})).passed
    off = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": False}))
    assert not any(".shift_drop." in c.id for c in off.checks)
    plain = make_artifact(tmp_path / "b", n=400)
    assert not any(".shift_drop." in c.id for c in g.evaluate_gate(plain, g.load_policy({})).checks)


def test_one_shift_set_uses_the_interval_rule_and_strict_mode_the_point(tmp_path):
    art = add_shift_set(make_artifact(tmp_path / "a", n=400), "field", {"teacher": 0.90, "student": 0.84})
    confident = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.05}))
    (chk,) = [c for c in confident.checks if c.id == "student_int8.shift_drop.field"]
    assert chk.value == pytest.approx(0.06) and chk.interval[0] < 0.05 < chk.interval[1]
    assert chk.passed and "Holm" not in chk.detail  # 6 points on 300 images: not confidently beyond 5
    strict = g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.05, "mode": "strict"}))
    assert not [c for c in strict.checks if c.id == "student_int8.shift_drop.field"][0].passed


def test_shift_set_figures_that_do_not_match_the_predictions_are_refused(tmp_path):
    art = add_shift_set(make_artifact(tmp_path / "a", n=400), "field", {"teacher": 0.9, "student": 0.8})
    report = json.loads((art / "report.json").read_text())
    report["models"]["student_int8"]["accuracy"]["shift"]["field"] = 0.95
    (art / "report.json").write_text(json.dumps(report))
    with pytest.raises(InputError, match="accuracy.shift.field is 0.95 but predictions.npz gives 0.8"):
        g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.05}))
    report["models"]["student_int8"]["accuracy"]["shift"]["field"] = 0.8
    report["shift_sets"]["field"]["n_images"] = 299
    (art / "report.json").write_text(json.dumps(report))
    with pytest.raises(InputError, match="holds 300 labels of shift set 'field' but .* says 299"):
        g.evaluate_gate(art, g.load_policy({**ONLY_CLEAN, "max_shift_drop": 0.05}))
