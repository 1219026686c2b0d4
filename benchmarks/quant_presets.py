"""Every quantisation preset of a built student side by side: speed, size, accuracy, robustness.

    python benchmarks/quant_presets.py BUILD_DIR [--rounds 5] [--runs 300] [--json out.json]
    python benchmarks/quant_presets.py out/cifar10 --presets int8-static-u8s8 int8-static-s8s8

BUILD_DIR is an ``edgekd build`` output (its student.fp32.onnx and stored config name the data).
For the fp32 model and each preset (export/*.toml, `edgekd presets`): the model is made with
``edgekd.quantize.quantize_model`` exactly as the build makes it, then

- latency at batch 1 (p50, p90) and throughput at batch 32, **1 thread**, every model timed in each
  of ``--rounds`` interleaved rounds (``--runs`` timed calls after 30 warm-up calls per round;
  medians over rounds, min-max spread, and the ratio of the best rounds: this VM's speed switches
  between two levels about 1.5x apart, and short interleaved rounds let every model see both),
  so the ratios come from one run on one machine state;
- size; clean accuracy on the test split and agreement with the fp32 model; mCA over the 15
  common corruptions x 5 severities on the build's sweep images (``robustness.sample_images``),
  from the same cached perturbed sets as the build.

One ablation row: int8-static-u8s8 without the full-size input normalisation constants
(``quantize_model(..., expand_constants=False)``, the graph edgekd made before issue 18).

Run it with nothing else on the cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--presets", nargs="*", help="preset names (default: every [quantize] preset)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--no-accuracy", action="store_true", help="timing and size only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import onnxruntime

    from edgekd import perturb
    from edgekd.commands._stage import stored_config
    from edgekd.config import load_config
    from edgekd.data import load_dataset
    from edgekd.fields import check_table
    from edgekd.harness import accuracy, evaluate
    from edgekd.presets import builtin_presets, load_preset
    from edgekd.config import QuantizeConfig
    from edgekd.quantize import quantize_model
    from edgekd.robustness import PerturbedSets, perturbed_dir, sweep_subset
    from edgekd.runtimes import OrtRunner

    fp32 = args.build / "student.fp32.onnx"
    cfg = load_config(base=stored_config(fp32), base_where=str(args.build))
    names = args.presets or [p.name for p in builtin_presets() if p.section == "quantize"]
    ds = load_dataset(cfg.data)
    work = Path(tempfile.mkdtemp(prefix="edgekd-presets-"))
    models = {"fp32": fp32}
    recs = {"fp32": {}}
    for name in names:
        p = load_preset(name, "quantize")
        q = QuantizeConfig(**check_table(p.table, QuantizeConfig, p.source, "quantize"))
        out = work / f"{name}.onnx"
        t0 = time.perf_counter()
        recs[name] = quantize_model(fp32, out, ds.calib.x, q, calib_cache=work / "calib")
        recs[name]["quantize_s"] = round(time.perf_counter() - t0, 2)
        models[name] = out
        if name == "int8-static-u8s8":  # ablation: the same model without the full-size input constants
            quantize_model(fp32, work / "u8s8-no-expand.onnx", ds.calib.x, q, calib_cache=work / "calib",
                           expand_constants=False)
            models["int8-static-u8s8, per-channel input constants"] = work / "u8s8-no-expand.onnx"
            recs["int8-static-u8s8, per-channel input constants"] = {"ablation": "expand_constants=False"}

    rows = {n: {"size_bytes": p.stat().st_size, "p50": [], "p90": [], "b32": []} for n, p in models.items()}
    sessions = {}
    for n, p in models.items():
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        sessions[n] = onnxruntime.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    x1, x32 = {"image": ds.test.x[:1]}, {"image": ds.test.x[:32]}
    for _ in range(args.rounds):
        for n, s in sessions.items():
            for _ in range(30):
                s.run(None, x1)
            t = np.empty(args.runs)
            for i in range(args.runs):
                t0 = time.perf_counter()
                s.run(None, x1)
                t[i] = time.perf_counter() - t0
            rows[n]["p50"].append(float(np.percentile(t, 50) * 1e3))
            rows[n]["p90"].append(float(np.percentile(t, 90) * 1e3))
            t0 = time.perf_counter()
            for _ in range(20):
                s.run(None, x32)
            rows[n]["b32"].append(640 / (time.perf_counter() - t0))

    if not args.no_accuracy:
        test, _ = sweep_subset(ds.test, cfg.robustness.sample_images, cfg.robustness.seed)
        sets = PerturbedSets(test, cfg.robustness.seed, perturbed_dir(cfg))
        runners = {n: OrtRunner(p, threads=0) for n, p in models.items()}
        clean = {n: evaluate(r, ds.test.x) for n, r in runners.items()}
        cells: dict[str, list[float]] = {n: [] for n in models}
        agree_p: dict[str, list[float]] = {n: [] for n in models}
        for name in perturb.COMMON:
            for sev in range(1, 6):
                imgs = sets.get(name, sev)
                ref = evaluate(runners["fp32"], imgs)
                for n, r in runners.items():
                    pred = ref if n == "fp32" else evaluate(r, imgs)
                    cells[n].append(accuracy(pred, test.y))
                    agree_p[n].append(float((pred == ref).mean()))
        for n in models:
            rows[n].update(clean=accuracy(clean[n], ds.test.y), agree_fp32=float((clean[n] == clean["fp32"]).mean()),
                           mca=float(np.mean(cells[n])), agree_fp32_perturbed=float(np.mean(agree_p[n])))

    base = float(np.median(rows["fp32"]["p50"]))
    best = min(rows["fp32"]["p50"])
    print(f"{args.build}: {len(ds.test)} test images ({'' if args.no_accuracy else f'mCA on {len(test)} of them, '}"
          f"15 x 5 cells); onnxruntime {onnxruntime.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    head = ("| model | p50 ms, median of rounds (min-max) | p90 ms | vs fp32 at batch 1 (median / best round) | "
            "batch 32 img/s | vs fp32 | size | clean | mCA | agree fp32 (clean / perturbed) |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    b32 = float(np.median(rows["fp32"]["b32"]))
    for n, r in rows.items():
        p50 = float(np.median(r["p50"]))
        acc = "" if args.no_accuracy else (f"{100 * r['clean']:.2f} % | {100 * r['mca']:.2f} % | "
                                           f"{100 * r['agree_fp32']:.1f} % / {100 * r['agree_fp32_perturbed']:.1f} %")
        print(f"| {n} | {p50:.4f} ({min(r['p50']):.4f}-{max(r['p50']):.4f}) | {float(np.median(r['p90'])):.4f} | "
              f"{base / p50:.2f}x / {best / min(r['p50']):.2f}x | {float(np.median(r['b32'])):.0f} | {float(np.median(r['b32'])) / b32:.2f}x | "
              f"{r['size_bytes'] / 1e3:.1f} kB | {acc or ' | | '} |")
    if args.json:
        args.json.write_text(json.dumps({"build": str(args.build), "rows": rows, "records": recs,
                                         "onnxruntime": onnxruntime.__version__}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
