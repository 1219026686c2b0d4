"""The user's own shifted data: held-out sets from the field (a new camera, another site, another
season), named in ``robustness.shift_sets`` and evaluated on every model beside the clean test set.

    sets = load_shift_sets({"night": "night/"}, ds.classes, 32)     # {name: Split}, in memory
    metrics, preds = measure_shifts(runners, sets, 256, progress=False)
    metrics["student_int8"]["accuracy"]["shift"]["night"]  # -> 0.91
    metrics["student_int8"]["shift_drop_vs_teacher"]["night"]  # -> 0.03 (teacher minus student)

A set is an ImageFolder folder or archive (class folders named as the training classes) or an
``.npz`` (``x``, ``y`` and, optionally, ``classes``: the training classes), resized like the training
data. Where the numbers go: report.json ``shift_sets.NAME`` (path, images, sha256) and per model
``accuracy.shift.NAME``, ``agreement_with_teacher.shift.NAME``, ``shift_drop_vs_teacher.NAME``;
predictions.npz ``MODEL/shift/NAME`` with the labels ``labels/shift/NAME``
(:mod:`edgekd.predictions`); the gate's ``max_shift_drop`` checks each set, paired image by image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import predictions as P
from .artifacts import TEACHER
from .data import Split, load_labelled
from .harness import measure_set

KEY = "robustness.shift_sets"


def load_shift_sets(paths: dict[str, str], classes: list[str], size: int) -> dict[str, Split]:
    """Every set of ``paths`` (name -> path), decoded at ``size`` px; an InputError naming the set
    (``robustness.shift_sets.NAME = 'path': ...``) when one is missing, unreadable or has other
    classes than ``classes``."""
    out = {}
    for name, path in paths.items():
        x, y = load_labelled(Path(path), classes, size, f"{KEY}.{name}")
        out[name] = Split(x, y, np.arange(len(y)))
    return out


def fingerprint(split: Split) -> str:
    h = hashlib.sha256(np.ascontiguousarray(split.x).data)
    h.update(np.ascontiguousarray(split.y).data)
    return h.hexdigest()


def describe(sets: dict[str, Split], paths: dict[str, str]) -> dict[str, dict]:
    """report.json ``shift_sets``: each set's path, number of images and sha256 of its pixels and labels."""
    return {name: {"path": str(paths[name]), "n_images": len(s), "sha256": fingerprint(s)}
            for name, s in sets.items()}


def measure_shifts(runners: dict, sets: dict[str, Split], batch_size: int, progress: bool,
                   group=None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Every model on every set (:func:`edgekd.harness.measure_set`, shared out among torchrun's
    processes): ``({id: {"accuracy": {"shift": {NAME: acc}}, "agreement_with_teacher": {"shift":
    {NAME: agr}}, "shift_drop_vs_teacher": {NAME: teacher acc - acc}}}, predictions)``."""
    metrics: dict[str, dict] = {mid: {"accuracy": {P.SHIFT: {}}, "agreement_with_teacher": {P.SHIFT: {}},
                                      "shift_drop_vs_teacher": {}} for mid in runners}
    preds: dict[str, np.ndarray] = {}
    for name, split in sets.items():
        m, p = measure_set(runners, split.x, split.y, batch_size, progress, group, key=(P.SHIFT, name))
        teacher_acc = m[TEACHER]["accuracy"][P.SHIFT][name]
        for mid, rec in m.items():
            acc = rec["accuracy"][P.SHIFT][name]
            metrics[mid]["accuracy"][P.SHIFT][name] = acc
            metrics[mid]["agreement_with_teacher"][P.SHIFT][name] = rec["agreement_with_teacher"][P.SHIFT][name]
            metrics[mid]["shift_drop_vs_teacher"][name] = teacher_acc - acc
        preds[P.shift_labels(name)] = split.y.astype(np.int64)
        preds.update({P.shift(mid, name): v for mid, v in p.items()})
    return metrics, preds


def shift_rows(report: dict) -> list[list[str]]:
    """The shift sets side by side for report.md and the HTML page (header first; [] without
    sets): per set and model, accuracy, agreement with the teacher and drop against it, in %."""
    sets = report.get("shift_sets") or {}
    if not sets:
        return []
    models = report["models"]
    rows = [["shift set", "images", "model", "accuracy", "agree(T)", "drop vs teacher"]]
    for name, info in sets.items():
        for mid, m in models.items():
            acc = (m.get("accuracy", {}).get(P.SHIFT) or {}).get(name)
            agr = (m.get("agreement_with_teacher", {}).get(P.SHIFT) or {}).get(name)
            drop = (m.get("shift_drop_vs_teacher") or {}).get(name)
            rows.append([name, str(info["n_images"]), mid, _pct(acc), _pct(agr),
                         "—" if drop is None else f"{100 * drop:+.1f} pts"])
    return rows


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"
