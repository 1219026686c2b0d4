"""onnxruntime and ExecuTorch-XNNPACK side by side on one built student, fp32 and INT8.

    python benchmarks/runtimes.py BUILD_DIR [--rounds 20] [--runs 100] [--json out.json]

BUILD_DIR is an ``edgekd build`` output. Its student.fp32.onnx and student.int8.onnx are used as
built; its student.fp32.pte / student.int8.pte too when the build made them (export.runtimes with
executorch), else they are exported from its student.pt here with the build's own stage
(``edgekd.executorch_export.executorch_stage``: same calibration images, same checks). Then, for the
four models, in one run:

- latency at batch 1 (p50, p90) and throughput at batch 32, **1 thread**, each model timed in each
  of ``--rounds`` interleaved rounds (``--runs`` timed calls after 30 warm-up calls per round, with
  edgekd's runners: ``runtimes.OrtRunner`` / ``runtimes.PteRunner`` and ``_ortbench.time_calls``,
  the build's timing code); medians over rounds, min-max spread, and the ratio of the best rounds
  (this VM's speed switches between two levels about 1.5x apart);
- size; clean accuracy on the test split; agreement with the teacher (clean, and mean over the
  perturbed cells, against the build's predictions.npz); mCA over the 15 common corruptions x 5
  severities on the build's sweep images, from the same cached perturbed sets as the build;
  agreement of each INT8 model with its runtime's fp32 model on the clean test images.

Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnxruntime

    from edgekd import artifacts, perturb
    from edgekd import predictions as P
    from edgekd._ortbench import pte_runtime_version, time_calls
    from edgekd.commands._stage import stored_config
    from edgekd.config import load_config
    from edgekd.data import load_dataset
    from edgekd.executorch_export import executorch_stage
    from edgekd.harness import accuracy, evaluate
    from edgekd.models import load_checkpoint
    from edgekd.robustness import PerturbedSets, perturbed_dir, sweep_subset
    from edgekd.runtimes import RUNTIMES

    b = args.build
    cfg = load_config(base=stored_config(b / "student.fp32.onnx"), base_where=str(b))
    ds = load_dataset(cfg.data)
    ids = [artifacts.STUDENT_FP32, artifacts.STUDENT_INT8, artifacts.STUDENT_FP32_PTE, artifacts.STUDENT_INT8_PTE]
    files = {mid: b / artifacts.get(mid).file for mid in ids}
    export_rec = None
    if not all(files[m].is_file() for m in ids[2:]):
        work = Path(tempfile.mkdtemp(prefix="edgekd-runtimes-"))
        student, _ = load_checkpoint(b / "student.pt", None, key="student")
        ptes = {artifacts.get(m).precision: m for m in ids[2:]}
        files.update({m: work / artifacts.get(m).file for m in ids[2:]})
        export_rec = executorch_stage(student, ds.calib.x, {p: files[m] for p, m in ptes.items()}, cfg.export)
    runners = {m: RUNTIMES.get(artifacts.get(m).runtime)(files[m]) for m in ids}

    rows = {m: {"size_bytes": files[m].stat().st_size, "p50": [], "p90": [], "b32": []} for m in ids}
    for r in runners.values():
        r.set_threads(1)
    x1, x32 = ds.test.x[:1], ds.test.x[:32]
    for _ in range(args.rounds):
        for m, r in runners.items():
            ms, _ = time_calls(lambda r=r: r.predict(x1), args.runs, warmup=30)
            rows[m]["p50"].append(float(np.percentile(ms, 50)))
            rows[m]["p90"].append(float(np.percentile(ms, 90)))
            ms32, wall = time_calls(lambda r=r: r.predict(x32), 20, warmup=2)
            rows[m]["b32"].append(640 / wall)

    for r in runners.values():  # accuracy: every core
        r.set_threads(0 if r.runtime == "onnxruntime" else os.cpu_count() or 1)
    preds = P.load(b / artifacts.PREDICTIONS)
    teacher_clean = preds[P.clean(artifacts.TEACHER)]
    test, index = sweep_subset(ds.test, cfg.robustness.sample_images, cfg.robustness.seed)
    sets = PerturbedSets(test, cfg.robustness.seed, perturbed_dir(cfg))
    clean = {m: evaluate(r, ds.test.x) for m, r in runners.items()}
    cells = {m: [] for m in ids}
    agree_t = {m: [] for m in ids}
    for name in perturb.COMMON:
        for sev in range(1, 6):
            imgs = sets.get(name, sev)
            t = preds.get(P.perturbed(artifacts.TEACHER, name, sev))
            for m, r in runners.items():
                pred = evaluate(r, imgs)
                cells[m].append(accuracy(pred, test.y))
                if t is not None:
                    agree_t[m].append(float((pred == t[:len(pred)]).mean()))
    for m in ids:
        rows[m].update(clean=accuracy(clean[m], ds.test.y), agree_teacher=float((clean[m] == teacher_clean).mean()),
                       agree_teacher_perturbed=float(np.mean(agree_t[m])) if agree_t[m] else None,
                       mca=float(np.mean(cells[m])))
    pairs = {artifacts.STUDENT_INT8: artifacts.STUDENT_FP32, artifacts.STUDENT_INT8_PTE: artifacts.STUDENT_FP32_PTE}
    for q, f in pairs.items():
        rows[q]["agree_own_fp32"] = float((clean[q] == clean[f]).mean())

    base = float(np.median(rows[artifacts.STUDENT_FP32]["p50"]))
    best = min(rows[artifacts.STUDENT_FP32]["p50"])
    print(f"{b}: {len(ds.test)} test images (mCA on {len(test)} of them, 15 x 5 cells); onnxruntime "
          f"{onnxruntime.__version__}, {pte_runtime_version()}, {platform.processor() or platform.machine()}, "
          f"1 thread, {args.rounds} rounds x {args.runs} runs")
    head = ("| model | runtime | p50 ms, median of rounds (min-max) | p90 ms | vs ORT fp32 at batch 1 (median / "
            "best round) | batch 32 img/s | size | clean | mCA | agree teacher (clean / perturbed) | "
            "INT8 agrees with its fp32 |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for m, r in rows.items():
        p50 = float(np.median(r["p50"]))
        at = r["agree_teacher_perturbed"]
        own = f"{100 * r['agree_own_fp32']:.2f} %" if "agree_own_fp32" in r else ""
        print(f"| {m} | {artifacts.get(m).runtime} | {p50:.4f} ({min(r['p50']):.4f}-{max(r['p50']):.4f}) | "
              f"{float(np.median(r['p90'])):.4f} | {base / p50:.2f}x / {best / min(r['p50']):.2f}x | "
              f"{float(np.median(r['b32'])):.0f} | {r['size_bytes'] / 1e3:.1f} kB | {100 * r['clean']:.2f} % | "
              f"{100 * r['mca']:.2f} % | {100 * r['agree_teacher']:.1f} % / "
              f"{'-' if at is None else f'{100 * at:.1f} %'} | {own} |")
    if args.json:
        args.json.write_text(json.dumps({"build": str(b), "rows": rows, "executorch_export": export_rec,
                                         "onnxruntime": onnxruntime.__version__,
                                         "executorch": pte_runtime_version()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
