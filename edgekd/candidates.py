"""The INT8 candidates of a build: one model per preset, each checked against the fp32 student on
clean and perturbed validation images, mended where it misses, and the one to deploy chosen.

    cands = make_candidates(cfg, ds, fp32_path, work_dir, profile, calib_cache, say)
    ... score each (clean, perturbed sweep, latency, gate) like any other model ...
    winner, why = choose(cands, scores, profile, measured_here=same_cpu_class(profile))

Which presets: the device profile's ``presets`` (``edgekd build --device PROFILE``), else
``quantize.preset`` alone. A candidate is quantised with its preset's recipe (the keys of
:data:`edgekd.quantize.RECIPE_KEYS`) and the build's own tolerance, search and QAT keys.

**The tolerance check** (``quantize.max_clean_drop``, ``max_perturbed_drop``): accuracy the INT8
model loses against the fp32 student on the validation split (never the test split), clean and
perturbed with ``quantize.tune_perturbations`` (Hendrycks' held-out "extra" corruptions by
default, disjoint from the 15 the report's mCA averages) at ``tune_severities``. A candidate
that misses it goes through the **robustness-aware search** (:mod:`edgekd.sensitivity`: the most
sensitive nodes kept in float, the fewest that make the tolerance hold) and, where that is not
enough and ``quantize.qat`` is on, **quantisation-aware training** (:mod:`edgekd.qat`).

**The choice**: fewest failed gate checks first, then the tolerance, then the lowest p50 latency
measured on this machine when it speaks for the device (:func:`edgekd.device_profiles.same_cpu_class`),
else the profile's order of preference.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import perturb
from .config import BuildConfig, QuantizeConfig
from .data import Dataset, Split
from .fields import check_table
from .harness import accuracy, evaluate
from .presets import load_preset
from .quantize import RECIPE_KEYS, precision_of, quantize_model

ID_PREFIX = "candidate_"  # the sweep's model id of candidate i: candidate_0, candidate_1, ...


@dataclass
class Candidate:
    preset: str
    qcfg: QuantizeConfig
    path: Path
    model_id: str
    record: dict                                    # the quantisation record (+ search, qat)
    tolerance: dict = field(default_factory=dict)   # clean_drop, perturbed_drop, passed
    stage: str = "ptq"                              # ptq, ptq+search or qat: what made the file


def candidate_presets(cfg: BuildConfig, profile) -> list[str]:
    return list(profile.presets) if profile is not None and profile.presets else [cfg.quantize.preset]


def candidate_config(q: QuantizeConfig, preset: str) -> QuantizeConfig:
    """The [quantize] section of candidate ``preset``: the build's own section when it names that
    preset, else the preset's recipe with the build's tolerance / search / QAT keys."""
    if preset == q.preset:
        return q
    p = load_preset(preset, "quantize")
    out = QuantizeConfig(**{k: v for k, v in dataclasses.asdict(q).items() if k not in RECIPE_KEYS})
    for key, value in check_table(p.table, QuantizeConfig, p.source, "quantize").items():
        setattr(out, key, value)
    out.preset = preset
    return out


def check_candidates(cfg: BuildConfig, profile) -> None:
    """Before any training: every candidate preset makes INT8 models (ConfigError naming it)."""
    from .errors import ConfigError

    for preset in candidate_presets(cfg, profile):
        q = candidate_config(cfg.quantize, preset)
        if precision_of(q) != "int8":
            from .artifacts import STUDENT_FP32, get

            raise ConfigError(f"quantize.preset {preset!r} makes {precision_of(q)} models, but a build deploys an "
                              f"INT8 one; make an {precision_of(q)} model with `edgekd quantize "
                              f"{get(STUDENT_FP32).file} --set quantize.preset={preset}`")


class TuneSet:
    """The validation images of the tolerance check, clean and perturbed, and the fp32 student's
    accuracy on each; :meth:`drops` scores a model file against them."""

    def __init__(self, cfg: BuildConfig, ds: Dataset, fp32_path: Path) -> None:
        from .robustness import PerturbedSets, perturbed_dir
        from .runtimes import OrtRunner

        q = cfg.quantize
        base, self.source = (ds.val, "validation") if ds.val is not None and len(ds.val) else (ds.calib, "calibration")
        if len(base) > q.tune_images:
            keep = np.sort(np.random.default_rng(cfg.robustness.seed).permutation(len(base))[:q.tune_images])
            base = Split(base.x[keep], base.y[keep], base.indices[keep])
        self.clean = base
        sets = PerturbedSets(base, cfg.robustness.seed, perturbed_dir(cfg))
        self.cells = [(n, s) for n in perturb.resolve(q.tune_perturbations) for s in sorted(set(q.tune_severities))]
        self.perturbed = {c: sets.get(*c) for c in self.cells}
        self.q = q
        self.batch = cfg.measure.eval_batch_size
        self.fp32 = self._accuracies(OrtRunner(fp32_path))

    def _accuracies(self, runner) -> dict:
        return {"clean": accuracy(evaluate(runner, self.clean.x, self.batch), self.clean.y),
                **{c: accuracy(evaluate(runner, x, self.batch), self.clean.y) for c, x in self.perturbed.items()}}

    def drops(self, path: Path) -> dict:
        from .runtimes import OrtRunner

        acc = self._accuracies(OrtRunner(path))
        clean = self.fp32["clean"] - acc["clean"]
        pert = float(np.mean([self.fp32[c] - acc[c] for c in self.cells]))
        return {"clean_drop": round(clean, 6), "perturbed_drop": round(pert, 6),
                "passed": bool(clean <= self.q.max_clean_drop + 1e-12 and pert <= self.q.max_perturbed_drop + 1e-12)}

    def rank_images(self, n: int = 256) -> np.ndarray:
        """Perturbed validation images for ranking nodes: an equal share of each cell."""
        per = max(1, n // len(self.cells))
        return np.concatenate([self.perturbed[c][:per] for c in self.cells])

    def describe(self) -> dict:
        return {"images": len(self.clean), "split": self.source,
                "perturbations": sorted({n for n, _ in self.cells}),
                "severities": sorted({s for _, s in self.cells}),
                "fp32_accuracy": {"clean": self.fp32["clean"],
                                  "perturbed_mean": float(np.mean([self.fp32[c] for c in self.cells]))},
                "max_clean_drop": self.q.max_clean_drop, "max_perturbed_drop": self.q.max_perturbed_drop}


def make_candidates(cfg: BuildConfig, ds: Dataset, fp32_path: Path, work: Path, profile,
                    calib_cache: Path | None, say: Callable[[str], None],
                    qat_inputs: Callable[[], dict] | None = None) -> tuple[list[Candidate], dict]:
    """Quantise every candidate preset into ``work`` and check it against the tolerances, mending
    the ones that miss (search, then QAT where on). Returns the candidates and the tune-set record."""
    tune = TuneSet(cfg, ds, fp32_path)
    out: list[Candidate] = []
    for i, preset in enumerate(candidate_presets(cfg, profile)):
        q = candidate_config(cfg.quantize, preset)
        path = work / f"{preset}.onnx"
        t0 = time.perf_counter()
        rec = {"preset": preset, **quantize_model(fp32_path, path, ds.calib.x, q, calib_cache=calib_cache)}
        rec["quantize_s"] = round(time.perf_counter() - t0, 3)
        cand = Candidate(preset, q, path, f"{ID_PREFIX}{i}", rec, tune.drops(path))
        if not cand.tolerance["passed"] and q.search and q.max_float_nodes and q.method == "static":
            _search(cand, fp32_path, ds, tune, work, calib_cache)
        if not cand.tolerance["passed"] and q.qat and qat_inputs is not None:
            _qat(cand, ds, tune, work, cfg, qat_inputs())
        say(f"candidate {preset}: {cand.stage}, against fp32 on {len(tune.clean)} {tune.source} images "
            f"-{100 * cand.tolerance['clean_drop']:.2f} clean / -{100 * cand.tolerance['perturbed_drop']:.2f} "
            f"perturbed points ({'within' if cand.tolerance['passed'] else 'MISSES'} the tolerance)"
            + (f", {len(rec['search']['nodes'])} node(s) kept in float" if rec.get("search", {}).get("nodes") else ""))
        out.append(cand)
    return out, tune.describe()


def _better(drops: dict, than: dict) -> bool:
    """Whether tolerance record ``drops`` should replace ``than``: it passes, or loses less in all."""
    return drops["passed"] or drops["clean_drop"] + drops["perturbed_drop"] < than["clean_drop"] + than["perturbed_drop"]


def _search(cand: Candidate, fp32_path: Path, ds: Dataset, tune: TuneSet, work: Path, calib_cache) -> None:
    from .sensitivity import search

    def quantize(nodes: list[str], path: Path) -> dict:
        return quantize_model(fp32_path, path, ds.calib.x, cand.qcfg, nodes_to_exclude=nodes, calib_cache=calib_cache)

    res = search(fp32_path, quantize, tune.drops, tune.rank_images(), work / f"search-{cand.preset}",
                 max_nodes=cand.qcfg.max_float_nodes)
    cand.record["search"] = res.to_dict()
    if res.nodes and res.path is not None:
        best = next(t for t in reversed(res.trials) if t["nodes"] == res.nodes)
        if _better(best, cand.tolerance):
            cand.path, cand.stage = res.path, "ptq+search"
            cand.record["nodes_excluded"] = list(res.nodes)
            cand.tolerance = {k: best[k] for k in ("clean_drop", "perturbed_drop", "passed")}


def _qat(cand: Candidate, ds: Dataset, tune: TuneSet, work: Path, cfg: BuildConfig, inputs: dict) -> None:
    from .qat import qat_finetune

    q = cand.qcfg
    path = work / f"{cand.preset}.qat.onnx"
    rec = qat_finetune(inputs["student"], ds.train.x, ds.train.y, inputs["teacher_logits"], ds.calib.x,
                       cfg.distill, epochs=q.qat_epochs, lr=q.qat_lr, activation_type=q.activation_type,
                       reduce_range=q.reduce_range, per_channel=q.per_channel, batch_size=cfg.distill.batch_size,
                       seed=cfg.distill.seed, out_path=path, parity_images=ds.calib.x[:cfg.export.parity_samples])
    drops = tune.drops(path)
    rec["tolerance"] = drops
    cand.record["qat"] = rec
    if _better(drops, cand.tolerance):
        cand.path, cand.stage, cand.tolerance = path, "qat", drops


def choose(cands: list[Candidate], scores: dict[str, dict], profile, measured_here: bool) -> tuple[Candidate, str]:
    """The candidate to deploy and one sentence saying why. ``scores[model_id]``: ``gate_failed``
    (ids of failed gate checks) and ``p50_ms``."""
    order = {c.model_id: i for i, c in enumerate(cands)}

    def key(c: Candidate) -> tuple:
        s = scores[c.model_id]
        return (len(s["gate_failed"]), not c.tolerance["passed"],
                s["p50_ms"] if measured_here else order[c.model_id], order[c.model_id])

    ranked = sorted(cands, key=key)
    win = ranked[0]
    s = scores[win.model_id]
    verdict = ("passes the gate" if not s["gate_failed"] else
               f"fails {len(s['gate_failed'])} gate check(s) ({', '.join(s['gate_failed'])}), the fewest of any candidate")
    verdict += ("; it is within the quantisation tolerance" if win.tolerance["passed"]
                else "; it misses the quantisation tolerance")
    if len(cands) == 1:
        return win, f"{win.preset}: the only candidate; it {verdict}"
    if measured_here:
        others = ", ".join(f"{c.preset} {scores[c.model_id]['p50_ms']:.3f} ms" for c in ranked[1:])
        how = f"fastest measured here, p50 {s['p50_ms']:.3f} ms at batch 1 (others: {others})"
    else:
        from .device_profiles import host_isa

        arch, isa = host_isa()
        how = (f"first in {profile.name}'s order of preference ({', '.join(c.preset for c in cands)}); latency "
               f"not compared here: this machine ({arch}, {', '.join(isa) or 'baseline'}) does not run "
               f"{profile.name}'s INT8 kernels ({profile.arch}, {', '.join(profile.isa) or 'baseline'}); "
               "measure on the device with `edgekd bundle`")
    return win, f"{win.preset}: it {verdict}; {how}"


def candidate_record(c: Candidate, score: dict, metrics: dict) -> dict:
    """One row of report.json's ``quantization.candidates``."""
    return {"preset": c.preset, "stage": c.stage, "file_bytes": c.path.stat().st_size,
            "tolerance": c.tolerance, "gate_failed": score["gate_failed"],
            "latency_ms": {k: score["latency"][k] for k in ("p50", "p90", "mean") if k in score["latency"]},
            "accuracy": {"clean": metrics.get("accuracy", {}).get("clean"), "mca": metrics.get("accuracy", {}).get("mca")},
            "agreement_with_fp32": score.get("agreement_with_fp32"), "quantize": c.record}


def as_int8(records: list[dict[str, dict]], model_id: str, candidate_ids: list[str]) -> list[dict[str, dict]]:
    """The ``{id: record}`` tables with candidate ``model_id`` as the build's INT8 model and the
    other candidates left out."""
    from .artifacts import STUDENT_INT8

    out = []
    for part in records:
        table = {k: v for k, v in part.items() if k not in candidate_ids and k != STUDENT_INT8}
        if model_id in part:
            table[STUDENT_INT8] = part[model_id]
        out.append(table)
    return out


def pick(cands: list[Candidate], described_for: Callable[[Candidate], dict], records: list[dict[str, dict]],
         predictions: dict, policy, profile, report_of: Callable[[list[dict]], dict]) -> tuple[Candidate, dict, dict]:
    """Gate every candidate as the build's INT8 model, choose one (:func:`choose`); returns it,
    report.json's ``quantization`` section and the build's predictions with it as the INT8 model."""
    from . import predictions as P
    from .artifacts import STUDENT_FP32, STUDENT_INT8
    from .device_profiles import same_cpu_class
    from .gate import evaluate_gate

    ids = [c.model_id for c in cands]
    speed = records[-1]
    scores, views = {}, {}
    for c in cands:
        views[c.model_id] = P.as_model(predictions, c.model_id, STUDENT_INT8, drop=tuple(ids))
        gate = evaluate_gate(report_of([described_for(c), *as_int8(records, c.model_id, ids)]), policy,
                             predictions=views[c.model_id])
        lat = speed[c.model_id]["latency_ms"]
        scores[c.model_id] = {"gate_failed": [ch.id for ch in gate.checks if not ch.passed], "p50_ms": lat["p50"],
                              "latency": lat, "agreement_with_fp32": float(np.mean(
                                  predictions[P.clean(c.model_id)] == predictions[P.clean(STUDENT_FP32)]))}
    measured_here = profile is None or same_cpu_class(profile)
    winner, why = choose(cands, scores, profile, measured_here)
    fp32_p50 = speed[STUDENT_FP32]["latency_ms"]["p50"]
    slower = measured_here and scores[winner.model_id]["p50_ms"] > fp32_p50
    if slower:  # tiny models at batch 1: the INT8 kernels' fixed costs outweigh their arithmetic
        why += (f"; note: at batch 1 it is slower here than the fp32 model ({scores[winner.model_id]['p50_ms']:.3f} "
                f"vs {fp32_p50:.3f} ms p50), which may be the faster deployment on this CPU")
    metrics: dict[str, dict] = {}
    for part in records[:-1]:  # accuracies of every model (clean, then the sweep's), a new table
        for m, rec in part.items():
            metrics.setdefault(m, {"accuracy": {}})["accuracy"].update(rec.get("accuracy", {}))
    section = {"device": None if profile is None else profile.name, "latency_compared_here": measured_here,
               "slower_than_fp32": bool(slower),
               "chosen": winner.preset, "why": why,
               "candidates": [candidate_record(c, scores[c.model_id], metrics.get(c.model_id, {})) for c in cands]}
    return winner, section, views[winner.model_id]
