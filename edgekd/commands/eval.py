"""edgekd eval: accuracy of one model (torch checkpoint or ONNX file) on clean and perturbed data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "accuracy of a student.pt or .onnx model on clean and perturbed inputs"
DESCRIPTION = """\
Evaluate MODEL (an edgekd checkpoint such as student.pt, or an ONNX file taking uint8 NHWC
images) on the test split of --data, clean and under perturbations (see `edgekd perturb list`),
and on each of the config's robustness.shift_sets (the build's own when no -c is given).
Torch checkpoints also get white-box FGSM / PGD with --adversarial."""


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _shift_only(section) -> dict:
    """The stored [robustness] section's shift_sets alone (the rest is this command's to choose)."""
    sets = section.get("shift_sets") if isinstance(section, dict) else None
    return {"shift_sets": sets} if sets else {}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="student.pt (edgekd checkpoint) or a .onnx file")
    p.add_argument("--data", help="dataset name (default: the checkpoint's, else digits)")
    p.add_argument("-c", "--config", help="build config whose [data] / [robustness] / [measure] / "
                   "[cache] sections to use (default: the config stored in a student.pt, else the defaults)")
    p.add_argument("--perturb", default="all",
                   help="all, common, extra, missing, none, or comma-separated names (default: all)")
    p.add_argument("--severities", type=_ints, help="e.g. 1,3,5 (default: the config's, 1..5)")
    p.add_argument("--adversarial", action="store_true", help="FGSM / PGD (torch checkpoints only)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import perturb
    from ..attacks import ATTACKS, craft
    from ..config import load_config
    from ..data import load_dataset
    from ..errors import InputError
    from ..files import check_regular, read_json
    from ..harness import accuracy, evaluate
    from ..models import load_checkpoint
    from .. import predictions as P
    from ..robustness import PerturbedSets, perturbed_dir, sweep_predictions
    from ..runtimes import OrtRunner, TorchRunner
    from ..shift import describe, load_shift_sets

    path = check_regular(args.model, "model")  # a FIFO or a device is refused before it is opened
    if path.suffix not in (".onnx", ".pt", ".pth"):
        raise InputError(f"{path}: expected an edgekd checkpoint (.pt) or an ONNX file (.onnx)")
    if args.adversarial and path.suffix == ".onnx":
        raise InputError("--adversarial needs a torch checkpoint: onnxruntime has no gradients "
                         "(the build measures ONNX artifacts by transfer)")
    overrides = []
    if args.data:
        overrides.append(f'data.name="{args.data}"')
    if args.severities:
        overrides.append(f"robustness.severities={args.severities}")
    # the user's own config, loaded first: a model factory (student.arch = "module:function") is
    # imported only when that config names it, never because a checkpoint does
    user_cfg = load_config(args.config, overrides) if args.config else None
    model, stored = None, {}
    if path.suffix == ".onnx":
        runner = OrtRunner(path)
        manifest = path.parent / "manifest.json"  # an artifact from `edgekd build`: its config
        if manifest.is_file():  # is_file: a regular file (a FIFO is not opened)
            try:
                stored = read_json(manifest, f"{manifest}: no such file").get("config", {})
            except InputError:
                stored = {}
    else:
        model, ck = load_checkpoint(path, user_cfg.student.arch if user_cfg else None)
        stored = ck.get("config", {})
        runner = TorchRunner(model, "cpu")
    if not isinstance(stored, dict):
        stored = {}
    if user_cfg is not None:
        cfg = user_cfg
    else:
        # the build's own [data] section (student.pt or the manifest beside an ONNX file), so the
        # test split is the one the model never trained on, and its shift sets
        from ..config import from_dict

        kept = {k: v for k, v in (("data", stored.get("data")),
                                  ("robustness", _shift_only(stored.get("robustness")))) if v}
        base = from_dict(kept, f"{path} (stored config)") if kept else None
        cfg = load_config(None, overrides)
        if base is not None and not args.data:  # the shift sets belong to the build's data
            cfg.data = base.data
            cfg.robustness.shift_sets = base.robustness.shift_sets
    ds = load_dataset(cfg.data)
    if user_cfg is not None:  # the user's sets: one that cannot be read is refused before any work
        shifts = load_shift_sets(cfg.robustness.shift_sets, ds.classes, ds.image_shape[0])
    else:  # the build's: one not here (another machine) is left out with a line on stderr
        shifts = {}
        for n, p in cfg.robustness.shift_sets.items():
            try:
                shifts.update(load_shift_sets({n: p}, ds.classes, ds.image_shape[0]))
            except InputError as e:
                print(f"edgekd eval: the build's shift set {n} is left out: {e}", file=sys.stderr)
    names = [] if args.perturb == "none" else perturb.resolve(args.perturb.split(","))
    sevs = sorted(set(cfg.robustness.severities))
    try:
        clean = evaluate(runner, ds.test.x, cfg.measure.eval_batch_size)
    except Exception as e:  # wrong input shape / dtype for this ONNX model
        raise InputError(f"{path}: cannot run on {ds.name} images {ds.image_shape} uint8 NHWC "
                         f"({str(e).splitlines()[0][:160]})") from None
    result = {"model": str(path), "data": ds.name, "n_test": len(ds.test),
              "accuracy": {"clean": accuracy(clean, ds.test.y)}}
    sets = PerturbedSets(ds.test, cfg.robustness.seed, perturbed_dir(cfg))
    preds = sweep_predictions({"m": runner}, sets, names, sevs, cfg.measure.eval_batch_size,
                              not args.quiet)
    table = {n: [None] * 5 for n in names}
    for n in names:
        for s in sevs:
            table[n][s - 1] = accuracy(preds[f"m/{n}/{s}"], ds.test.y)
    result["accuracy"]["perturbed"] = table
    common = [table[n][s - 1] for n in perturb.COMMON if n in table for s in sevs]
    if common:
        result["accuracy"]["mca_over_run_cells"] = float(np.mean(common))
    if shifts:
        result["shift_sets"] = describe(shifts, cfg.robustness.shift_sets)
        result["accuracy"][P.SHIFT] = {n: accuracy(evaluate(runner, s.x, cfg.measure.eval_batch_size), s.y)
                                       for n, s in shifts.items()}
    if model is not None and args.adversarial:
        result["accuracy"]["adversarial"] = {
            a: {str(e): accuracy(evaluate(runner, craft(a, model, ds.test.x, ds.test.y, e,
                                                          cfg.robustness.pgd_steps, cfg.robustness.seed)),
                                 ds.test.y) for e in cfg.robustness.epsilons} for a in ATTACKS}
    print(f"{path.name} on {ds.name} ({len(ds.test)} test images): clean accuracy "
          f"{100 * result['accuracy']['clean']:.1f}%")
    if names:
        print(f"{'perturbation':20s} " + " ".join(f"s{s:<5d}" for s in sevs))
        for n in names:
            print(f"{n:20s} " + " ".join(f"{100 * table[n][s - 1]:5.1f}%" for s in sevs))
    if "mca_over_run_cells" in result["accuracy"]:
        print(f"mean accuracy over the common corruptions run: "
              f"{100 * result['accuracy']['mca_over_run_cells']:.1f}%")
    for n, acc in result["accuracy"].get(P.SHIFT, {}).items():
        print(f"shift set {n} ({len(shifts[n])} images): accuracy {100 * acc:.1f}%")
    for a, by_eps in result["accuracy"].get("adversarial", {}).items():
        print(f"{a}: " + ", ".join(f"eps {e}/255 {100 * v:.1f}%" for e, v in by_eps.items()))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as e:
            raise InputError(f"--json {args.json}: cannot write it ({e.strerror})") from None
    return 0
