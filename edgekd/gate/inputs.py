"""What the gate reads: a build's report.json and the per-image predictions of predictions.npz.

    build = load_build("edgekd-out")                 # artifact dir, report.json path or report dict
    build.correct("student_int8", "clean", "max_clean_drop")   # boolean per-image correctness
    build.metric("teacher", "accuracy.mca", "max_mca_drop", hint)   # InputError naming what is missing

Every error names the file, the model and the metric, and says which policy key needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import predictions as P
from ..artifacts import PREDICTIONS, REPORT_JSON
from ..errors import InputError
from ..fields import get_path, is_number
from ..files import check_regular, read_json
from ..predictions import load as load_npz  # noqa: F401  (the gate package re-exports it)


class Build:
    """One build's report and per-image predictions, with errors that name file, model and metric."""

    def __init__(self, report: Any, label: str, predictions: Mapping | None, pred_label: str) -> None:
        if not isinstance(report, dict) or not isinstance(report.get("models"), dict):
            raise InputError(f"{label}: not an edgekd report (no 'models' table)")
        version = report.get("schema_version", 1)
        if version != 1:
            raise InputError(f"{label}: report schema_version {version!r}; this edgekd reads version 1")
        self.report, self.label, self.preds, self.pred_label = report, label, predictions, pred_label
        self.models: dict = report["models"]
        self.labels: np.ndarray | None = None
        self.sweep_index: np.ndarray | None = None
        if predictions is not None:
            if "labels" not in predictions:
                raise InputError(f"{pred_label}: no 'labels' array")
            self.labels = np.asarray(predictions["labels"]).astype(np.int64).ravel()
            # a sweep on a subset of the test images (robustness.sample_images) says which
            self.sweep_index = (np.asarray(predictions[P.SWEEP_INDEX]).astype(np.int64).ravel()
                                if P.SWEEP_INDEX in predictions else None)
        n_test = (report.get("dataset") or {}).get("n_test")
        if self.labels is not None:
            if n_test is not None and n_test != len(self.labels):
                raise InputError(f"{pred_label} holds {len(self.labels)} labels but {label} says "
                                 f"n_test = {n_test}; they come from different builds")
            self.n = len(self.labels)
        elif isinstance(n_test, int) and n_test > 0:
            self.n = n_test
        else:
            raise InputError(f"{label}: no dataset.n_test")
        self._correct: dict[str, np.ndarray] = {}

    @property
    def n_sweep(self) -> int:
        """Images of the perturbed / adversarial sweep (all test images unless it ran on a subset)."""
        return len(self.sweep_index) if self.sweep_index is not None else self.n

    def metric(self, model: str, path: str, needed_by: str, hint: str) -> Any:
        node = get_path(self.models[model], path)
        if node is None:
            raise InputError(f"{self.label}: model {model} has no {path}, which {needed_by} needs; {hint}")
        return node

    def correct(self, model: str, key: str, needed_by: str) -> np.ndarray:
        """Boolean per-image correctness of ``predictions.npz["{model}/{key}"]``."""
        name = f"{model}/{key}"
        if name not in self._correct:
            if self.preds is None or name not in self.preds:
                raise InputError(f"{self.pred_label} has no array {name!r}, which {needed_by} needs; "
                                 "the report and predictions.npz must come from the same build")
            pred = np.asarray(self.preds[name]).ravel()
            labels = self.labels
            shift = P.shift_name(key)
            if shift is not None:  # a shift set has labels of its own
                labels = self.shift_labels(shift, needed_by)
                if pred.shape != labels.shape:
                    raise InputError(f"{self.pred_label}: {name!r} has {pred.size} predictions for the "
                                     f"{labels.size} labels of shift set {shift!r}")
            elif key != "clean" and self.sweep_index is not None and pred.shape == self.sweep_index.shape:
                labels = self.labels[self.sweep_index]
            elif pred.shape != self.labels.shape:
                raise InputError(f"{self.pred_label}: {name!r} has {pred.size} predictions for "
                                 f"{self.labels.size} labels")
            self._correct[name] = pred.astype(np.int64) == labels
        return self._correct[name]

    def shift_labels(self, name: str, needed_by: str) -> np.ndarray:
        """The labels of shift set ``name`` (``labels/shift/NAME`` of predictions.npz)."""
        key = P.shift_labels(name)
        if self.preds is None or key not in self.preds:
            raise InputError(f"{self.pred_label} has no array {key!r}, which {needed_by} needs; the report "
                             "and predictions.npz must come from the same build")
        return np.asarray(self.preds[key]).astype(np.int64).ravel()

    def agree(self, model: str, what: str, reported: Any, computed: float, n: int | None = None) -> None:
        """Point estimates from the predictions (of ``n`` images; default: the test set's) must
        equal the report's figures."""
        if not is_number(reported):
            raise InputError(f"{self.label}: model {model} {what} is {reported!r}, not a number")
        if abs(reported - computed) > 0.5 / (n or self.n) + 1e-6:
            raise InputError(f"{self.label}: model {model} {what} is {reported:.6g} but "
                             f"{Path(self.pred_label).name} gives {computed:.6g}; the report and "
                             "predictions.npz do not come from the same build")


def load_build(source: Any, predictions: Any = None, *, need_predictions: bool = True) -> Build:
    """``source``: an artifact directory, a report.json path, or a report dict (then ``predictions``
    is a mapping of arrays or a path to predictions.npz)."""
    if isinstance(source, Mapping):
        label = REPORT_JSON  # the in-memory report the build is about to write
        pred_path = Path(predictions) if isinstance(predictions, (str, os.PathLike)) else None
        report = dict(source)
    else:
        if not os.path.lexists(source):
            raise InputError(f"{source}: no such report file or artifact directory")
        p = check_regular(source, "report", folder_ok=True)
        report_path = p / REPORT_JSON if p.is_dir() else p
        label = str(report_path)
        report = read_json(report_path, f"{p}: no report.json in this directory (not an edgekd "
                                        "artifact directory)")
        pred_path = report_path.parent / PREDICTIONS if predictions is None else (
            Path(predictions) if isinstance(predictions, (str, os.PathLike)) else None)
    arrays = predictions if isinstance(predictions, Mapping) else None
    if arrays is None and pred_path is not None:
        if pred_path.is_file():
            arrays = load_npz(pred_path)
        elif need_predictions:
            raise InputError(f"{pred_path} is missing: the gate compares models image by image and "
                             "needs the predictions.npz that edgekd build writes next to report.json")
    if arrays is None and need_predictions:
        raise InputError(f"{label}: no predictions given; the gate needs per-image predictions")
    return Build(report, label, arrays, str(pred_path or "predictions"))
