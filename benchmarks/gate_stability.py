"""Seed-to-seed stability of the gate verdict on the default (digits) build.

    python benchmarks/gate_stability.py --seeds 0 1 2 3 --out /tmp/gate-stability

Rebuilds the default student with several `distill.seed` values (student initialisation, batch
order and training perturbations; the teacher and the data split are fixed), then runs the gate in
both modes on each build and prints a markdown table: clean / mCA drops with their intervals,
the worst corruption, and the verdicts. Also builds one untrained student (distill.epochs=0) as
the negative control. Each build takes about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def build(out: Path, overrides: list[str], regate: bool) -> tuple[int, float]:
    """Build into ``out`` (or, with --regate, reuse the earlier build's record)."""
    rec = out.parent / f"{out.name}-build.json"
    if regate and rec.is_file():
        r = json.loads(rec.read_text())
        return r["exit"], r["seconds"]
    cmd = [sys.executable, "-m", "edgekd", "build", "-o", str(out), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, capture_output=True, text=True).returncode
    secs = time.perf_counter() - t0
    rec.write_text(json.dumps({"exit": rc, "seconds": secs, "overrides": overrides}))
    return rc, secs


def gate(out: Path, mode: str) -> dict:
    js = out.parent / f"{out.name}-gate-{mode}.json"
    subprocess.run([sys.executable, "-m", "edgekd", "gate", str(out), "--mode", mode, "--json", str(js)],
                   capture_output=True, text=True)
    return json.loads(js.read_text())


def row(name: str, out: Path, rc: int, secs: float) -> str:
    checks = {c["id"].split(".", 1)[1]: c for c in gate(out, "confident")["checks"]}
    strict = gate(out, "strict")

    def fmt(cid: str) -> str:
        c = checks[cid]
        lo, hi = c["interval"] or (None, None)  # fractions; shown in accuracy points
        v = f"{100 * c['value']:+.1f}"
        return f"{v} [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else v

    worst = checks["worst_corruption_drop"]["detail"].split("corruptions: ")[-1].split(" ")[0]
    return (f"| {name} | {rc} | {fmt('clean_drop')} | {fmt('mca_drop')} | "
            f"{fmt('worst_corruption_drop')} ({worst}) | {fmt('adversarial_drop')} | "
            f"{gate(out, 'confident')['verdict']} | {strict['verdict']} | {secs:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgekd-gate-stability"))
    ap.add_argument("--regate", action="store_true", help="reuse existing builds in --out; rerun the "
                    "gate only (after a policy change)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| build | build exit (policy at build time) | clean drop pp [95% CI] | mCA drop pp [95% CI] | worst corruption drop pp | "
          "PGD eps 2 drop pp | verdict (confident) | verdict (strict) | build s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        rc, secs = build(out, [f"distill.seed={seed}"], args.regate)
        print(row(f"distill.seed={seed}", out, rc, secs), flush=True)
    out = args.out / "untrained"
    rc, secs = build(out, ["distill.epochs=0"], args.regate)
    print(row("distill.epochs=0", out, rc, secs), flush=True)


if __name__ == "__main__":
    main()
