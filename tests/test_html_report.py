"""report.html / compare.html: rendering, the matplotlib-less fallback, the `report` and `compare`
commands, and the default build's page in a real headless chromium (Debian's chromium +
chromium-driver, driven by selenium). Without chromium these tests skip locally but fail in CI
($CI set). The screenshots go to $EDGEKD_TEST_ARTIFACTS (default: test-artifacts/ in the repo)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import edgekd

from edgekd import html_report, perturb
from edgekd.html_report import COLUMNS, fmt, metric, render_compare_html, render_html

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PLOTS = ("severity-curves", "drop-heatmap", "latency", "pareto")
KINDS = {path: kind for _, path, kind in COLUMNS}


def _model(kind: str, acc: float, p50: float, size: int, memory: int | None = None) -> dict:
    m = {"kind": kind, "format": "torch" if kind == "teacher" else "onnx", "precision": "fp32",
         "params": 1000, "size_bytes": size,
         "accuracy": {"clean": acc, "mca": acc - 0.1,
                      "corruptions": {n: [acc - 0.02 * s for s in range(1, 6)] for n in perturb.COMMON},
                      "missing": {"occlusion": [acc - 0.05, None, None, None, None]}},
         "agreement_with_teacher": {"clean": 1.0 if kind == "teacher" else 0.97},
         "robustness": {"retention": 1.0 if kind == "teacher" else 0.95},
         "latency_ms": {"p50": p50, "p90": 1.2 * p50, "p99": 2 * p50, "min": 0.8 * p50, "max": 3 * p50,
                        "samples": [p50 * (0.8 + 0.01 * i) for i in range(50)]}}
    if memory:
        m["memory"] = {"peak_rss_bytes": memory}
    return m


def fake_report() -> dict:
    return {"schema_version": 1, "dataset": {"name": "digits <test>", "n_test": 10, "image_shape": [8, 8, 3]},
            "models": {"teacher": _model("teacher", 0.99, 3.0, 2_000_000),
                       "student_int8": _model("student", 0.95, 0.25, 40_000, memory=70_000_000)}}


FAILED_GATE = {"verdict": "fail", "mode": "strict",
               "checks": [{"id": "student_int8.clean_drop", "name": "clean accuracy drop <b>", "unit": "pp",
                           "value": 0.05, "threshold": 0.03, "comparison": "<=", "passed": False,
                           "detail": "teacher 99% -> 94%"},
                          {"id": "student_int8.agreement", "name": "agreement", "unit": "rate", "value": 0.97,
                           "threshold": 0.9, "comparison": ">=", "passed": True, "detail": ""}]}


def test_render_html_verdict_table_and_plots():
    page = render_html(fake_report(), FAILED_GATE)
    assert 'data-verdict="fail"' in page and "Gate: FAIL" in page
    assert 'data-check="student_int8.clean_drop"' in page.split('id="failed-checks"')[1].split("</ul>")[0]
    assert "&lt;b&gt;" in page and "digits &lt;test&gt;" in page and "<b>" not in page  # escaped
    for pid in PLOTS:
        assert re.search(rf'data-plot="{pid}"><img id="plot-{pid}" class="plot" src="data:image/png;base64,', page)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched
    assert 'data-model="student_int8" data-metric="memory.peak_rss_bytes" data-value="70000000">70.0 MB' in page
    assert 'data-model="teacher" data-metric="memory.peak_rss_bytes" data-value="">—' in page


def test_render_without_matplotlib_says_how_to_get_plots(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    for page in (render_html(fake_report(), None), render_compare_html([("a", fake_report()), ("b", fake_report())])):
        assert 'id="no-plots"' in page and html_report.PLOTS_HINT in page
        assert "data:image/png" not in page and "data-metric" in page
    assert 'data-verdict="none"' in render_html(fake_report(), None)


def test_device_runs_render_generically():
    rep = fake_report()
    rep["device_runs"] = [{"profile": "rpi4", "models": {"student_int8_ort": {"latency_ms": {"p90": 3.2}}},
                           "note": "<script>"}]
    page = render_html(rep, None)
    assert 'class="device-run" data-run="0"' in page and "models.student_int8_ort.latency_ms.p90" in page
    assert "&lt;script&gt;" in page and "<script>" not in page


def test_metric_and_fmt():
    m = {"peak_memory_bytes": 5_000_000, "latency_ms": {"p50": 0.1234}}
    assert metric(m, "memory.peak_rss_bytes") == 5_000_000 and metric(m, "latency_ms.p50") == 0.1234
    assert metric(m, "accuracy.mca") is None and fmt("pct", None) == "—"
    assert (fmt("pct", 0.9812), fmt("ms", 0.1234), fmt("size", 36_760), fmt("mem", 69_898_240)) == \
        ("98.1%", "0.123", "35.9 KiB", "69.9 MB")


def test_report_and_compare_input_errors(tmp_path, env):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{garbled")
    for args in (("report", str(tmp_path / "nowhere")), ("report", str(tmp_path / "bad")),
                 ("compare", str(tmp_path / "bad"), str(tmp_path / "nowhere"))):
        proc = edgekd(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("edgekd: error: "), proc.stderr


# ------------------------------------------------------------------------------------------
# In a real browser
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """A headless chromium (selenium); skipped without one, except in CI."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        msg = f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must not skip it")
        pytest.skip(msg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="edgekd-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1300,1000", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def artifacts_dir() -> Path:
    d = Path(os.environ.get("EDGEKD_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def screenshot(driver, name: str) -> Path:
    for _ in range(2):  # the page reflows once the window is resized: measure again
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1300, min(int(height) + 150, 8000))
    path = artifacts_dir() / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def check_plots(driver, ids) -> None:
    for pid in ids:
        img = driver.find_element("css selector", f'figure[data-plot="{pid}"] img')
        assert img.is_displayed(), pid
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0, pid


def check_cells(driver, models_by_row, row_attr: str = "") -> int:
    """Every numeric cell: data-value is report.json's number, the text its formatting."""
    n = 0
    for td in driver.find_elements("css selector", f"td[data-metric]{row_attr}"):
        model = models_by_row(td)
        path = td.get_attribute("data-metric")
        want, raw, text = metric(model, path), td.get_attribute("data-value"), td.text
        if want is None:
            assert raw == "" and text == "—", (path, raw, text)
            continue
        assert float(raw) == want, (path, raw, want)
        assert text == fmt(KINDS[path], want), (path, text, want)
        if KINDS[path] == "pct":
            assert abs(float(text.rstrip("%")) - 100 * want) <= 0.05 + 1e-9
        elif KINDS[path] == "ms":
            assert abs(float(text) - want) <= 0.0005 + 1e-12
        n += 1
    return n


def test_default_build_report_html_in_browser(default_build, browser, tmp_path, env):
    work, proc = default_build
    assert proc.returncode in (0, 1), proc.stderr
    assert (work / "out" / "report.html").is_file()  # the build writes it
    out = tmp_path / "out"
    shutil.copytree(work / "out", out)
    (out / "report.html").unlink()
    rc = edgekd("report", str(out), cwd=tmp_path, env=env)  # and `edgekd report` rewrites it
    assert rc.returncode == 0, rc.stderr
    report = json.loads((out / "report.json").read_text())
    gate = json.loads((out / "gate.json").read_text())

    browser.get((out / "report.html").as_uri())
    verdict = browser.find_element("id", "verdict")
    assert verdict.get_attribute("data-verdict") == gate["verdict"]
    assert f"Gate: {gate['verdict'].upper()}" in verdict.text
    assert len(browser.find_elements("css selector", "#failed-checks li")) == len(gate["failed"])
    check_plots(browser, PLOTS)
    training = browser.find_element("id", "training")
    assert training.is_displayed()
    assert training.get_attribute("data-method") == report["robustness"]["training_method"] == "hinton"
    assert ", ".join(report["robustness"]["training_perturbations"]) in training.text
    rows = browser.find_elements("css selector", "#models tr[data-model]")
    assert [r.get_attribute("data-model") for r in rows] == list(report["models"])
    n = check_cells(browser, lambda td: report["models"][td.get_attribute("data-model")])
    assert n >= 4 * 7 + 2  # every model's 7 figures, memory of the two ONNX artifacts
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert screenshot(browser, "report.png").stat().st_size > 10_000


def test_compare_two_builds_in_browser(default_build, browser, tmp_path, env):
    work, _ = default_build
    a, b = tmp_path / "baseline" / "out", tmp_path / "candidate" / "out"
    shutil.copytree(work / "out", a)
    shutil.copytree(work / "out", b)
    rep_b = json.loads((b / "report.json").read_text())
    rep_b["models"]["student_int8"]["accuracy"]["mca"] -= 0.05  # a second, different student
    rep_b["models"]["student_int8"]["latency_ms"]["p50"] *= 0.5
    (b / "report.json").write_text(json.dumps(rep_b))
    proc = edgekd("compare", str(a), str(b / "report.json"), "-o", "cmp.html", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "baseline/out, candidate/out" in proc.stdout
    reports = {"baseline/out": json.loads((a / "report.json").read_text()), "candidate/out": rep_b}

    browser.get((tmp_path / "cmp.html").as_uri())
    check_plots(browser, ("compare-pareto", "compare-latency", "compare-severity"))
    rows = browser.find_elements("css selector", "#compare tr[data-build]")
    assert len(rows) == 2 * len(rep_b["models"])
    n = check_cells(browser, lambda td: reports[td.get_attribute("data-build")]["models"][td.get_attribute("data-model")])
    assert n >= 2 * (4 * 7 + 2)
    cell = browser.find_element("css selector", '#compare td[data-build="candidate/out"][data-model="student_int8"]'
                                                '[data-metric="accuracy.mca"]')
    assert float(cell.get_attribute("data-value")) == rep_b["models"]["student_int8"]["accuracy"]["mca"]
    screenshot(browser, "compare.png")
