"""Robustness-aware PTQ and QAT against plain PTQ, on a built student with a recipe that hurts.

    python benchmarks/robust_ptq.py BUILD_DIR --set per_channel=false --set calib_samples=16
    python benchmarks/robust_ptq.py out/cifar10 --set per_channel=false --qat-epochs 2 --json r.json

BUILD_DIR is an ``edgekd build`` output (student.pt, student.fp32.onnx and the stored config). The
``--set`` keys change its [quantize] section (the recipe under test). Three INT8 models of the
same fp32 student are compared with the fp32 model on the **test** split (clean accuracy, and mCA
over the 15 common corruptions x 5 severities on the build's sweep images):

1. plain PTQ (``edgekd.quantize.quantize_model``);
2. robustness-aware PTQ: the build's tolerance check on the validation split, perturbed with
   ``quantize.tune_perturbations`` (Hendrycks' held-out "extra" corruptions, none of the 15
   scored here), and ``edgekd.sensitivity.search`` keeping the fewest nodes in float;
3. QAT (``edgekd.qat``), fine-tuned against the fp32 student's own logits (self-distillation).

Latency at batch 1, 1 thread, is measured in interleaved rounds for each. Run it on quiet cores.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a [quantize] key of the recipe under test, e.g. per_channel=false")
    ap.add_argument("--max-nodes", type=int, default=6)
    ap.add_argument("--qat-epochs", type=int, default=2, help="0 = no QAT")
    ap.add_argument("--qat-lr", type=float, default=1e-3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from edgekd import perturb
    from edgekd.candidates import TuneSet
    from edgekd.commands._stage import stored_config
    from edgekd.config import load_config
    from edgekd.data import load_dataset
    from edgekd.harness import accuracy, evaluate, measure_latency
    from edgekd.models import load_checkpoint, predict_logits
    from edgekd.quantize import quantize_model
    from edgekd.robustness import PerturbedSets, perturbed_dir, sweep_subset
    from edgekd.runtimes import OrtRunner
    from edgekd.sensitivity import search

    fp32 = args.build / "student.fp32.onnx"
    cfg = load_config(base=stored_config(fp32), base_where=str(args.build),
                      overrides=[f"quantize.{o}" for o in args.overrides])
    q = cfg.quantize
    ds = load_dataset(cfg.data)
    work = Path(tempfile.mkdtemp(prefix="edgekd-robust-ptq-"))
    calib_cache = work / "calib"
    models: dict[str, Path] = {"fp32": fp32}
    notes: dict[str, dict] = {}

    t0 = time.perf_counter()
    plain = work / "plain.onnx"
    quantize_model(fp32, plain, ds.calib.x, q, calib_cache=calib_cache)
    models["plain PTQ"] = plain
    tune = TuneSet(cfg, ds, fp32)
    notes["plain PTQ"] = {"tolerance": tune.drops(plain), "s": round(time.perf_counter() - t0, 1)}

    t0 = time.perf_counter()
    res = search(fp32, lambda nodes, path: quantize_model(fp32, path, ds.calib.x, q, nodes_to_exclude=nodes,
                                                          calib_cache=calib_cache),
                 tune.drops, tune.rank_images(), work / "search", max_nodes=args.max_nodes)
    if res.path is not None:
        models["robust PTQ (search)"] = res.path
    notes["robust PTQ (search)"] = {"nodes": res.nodes, "passed": res.passed, "trials": len(res.trials),
                                    "ranking": res.ranking[:args.max_nodes], "s": round(time.perf_counter() - t0, 1)}

    if args.qat_epochs:
        from edgekd.qat import qat_finetune

        student, _ = load_checkpoint(args.build / "student.pt")
        t0 = time.perf_counter()
        soft = predict_logits(student, ds.train.x, "cpu")  # the fp32 student teaches its INT8 twin
        qat_path = work / "qat.onnx"
        rec = qat_finetune(student, ds.train.x, ds.train.y, soft, ds.calib.x, cfg.distill, epochs=args.qat_epochs,
                           lr=args.qat_lr, activation_type=q.activation_type, reduce_range=q.reduce_range,
                           per_channel=q.per_channel, batch_size=cfg.distill.batch_size, seed=0, out_path=qat_path,
                           parity_images=ds.calib.x[:128])
        models["QAT"] = qat_path
        notes["QAT"] = {"tolerance": tune.drops(qat_path), "parity": rec["parity"],
                        "s": round(time.perf_counter() - t0, 1)}

    test, _ = sweep_subset(ds.test, cfg.robustness.sample_images, cfg.robustness.seed)
    sets = PerturbedSets(test, cfg.robustness.seed, perturbed_dir(cfg))
    runners = {n: OrtRunner(p) for n, p in models.items()}
    rows = {n: {"clean": accuracy(evaluate(r, ds.test.x), ds.test.y), "cells": [], "p50": []}
            for n, r in runners.items()}
    for name in perturb.COMMON:
        for sev in range(1, 6):
            imgs = sets.get(name, sev)
            for n, r in runners.items():
                rows[n]["cells"].append(accuracy(evaluate(r, imgs), test.y))
    for _ in range(args.rounds):
        for n, r in runners.items():
            rows[n]["p50"].append(measure_latency(r, ds.test.x[:1], 200, 30, 1)["p50"])
    ref = rows["fp32"]
    print(f"{args.build}, recipe {dict(cfg.quantize.__dict__)}")
    print("| model | clean | vs fp32 | mCA | vs fp32 | p50 ms (1 thread) | float nodes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for n, r in rows.items():
        mca = float(np.mean(r["cells"]))
        r["mca"] = mca
        nodes = ", ".join(notes.get(n, {}).get("nodes", [])) if "search" in n else ""
        print(f"| {n} | {100 * r['clean']:.2f} % | {100 * (r['clean'] - ref['clean']):+.2f} | {100 * mca:.2f} % | "
              f"{100 * (mca - float(np.mean(ref['cells']))):+.2f} | {float(np.median(r['p50'])):.4f} | {nodes} |")
    print(json.dumps(notes, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
