"""The per-image predictions of a build (predictions.npz): the one owner of its keys and format.

    preds = {LABELS: y, clean(mid): p, perturbed(mid, "fog", 3): p, adversarial(mid, "pgd", 8): p}
    save(out / artifacts.PREDICTIONS, preds)
    preds = load(path)                           # InputError (one sentence) on a damaged file
    parse("student_int8/fog/3")                  # -> Key("student_int8", "fog", 3)

Keys (every value a 1-D int array of predicted classes, one per image):

- ``labels``: the test labels; ``sweep_index``: the indices of the test images the sweep ran on
  (absent when it ran on all of them);
- ``MODEL/clean``: on the clean test images;
- ``MODEL/NAME/SEVERITY``: on a perturbed copy of the sweep's images;
- ``MODEL/shift/NAME``: on the user's shift set NAME (``robustness.shift_sets``), whose labels are
  ``labels/shift/NAME``;
- ``MODEL/adv/ATTACK/EPS``: on adversarial examples (white-box, or transferred: ``adversarial_source``
  in report.json says which); ``MODEL/adv_from/SOURCE/ATTACK/EPS``: on the examples crafted on each
  torch source.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import check_regular, load_error_reason

LABELS = "labels"
SWEEP_INDEX = "sweep_index"
CLEAN = "clean"
SHIFT = "shift"


def clean(model_id: str) -> str:
    return f"{model_id}/{CLEAN}"


def perturbed(model_id: str, name: str, severity: int | str) -> str:
    return f"{model_id}/{name}/{severity}"


def perturbed_set(name: str, severity: int | str) -> str:
    """The set part of a perturbed key (``NAME/SEVERITY``), as bundles name their sets."""
    return f"{name}/{severity}"


def shift(model_id: str, name: str) -> str:
    return f"{model_id}/{shift_set(name)}"


def shift_set(name: str) -> str:
    """The set part of a shift key (``shift/NAME``)."""
    return f"{SHIFT}/{name}"


def shift_name(set_part: str) -> str | None:
    """NAME of a set part ``shift/NAME``; None for any other set."""
    return set_part.split("/", 1)[1] if set_part.startswith(f"{SHIFT}/") else None


def shift_labels(name: str) -> str:
    return f"{LABELS}/{shift_set(name)}"


def adversarial(model_id: str, attack: str, eps: int | str) -> str:
    return f"{model_id}/adv/{attack}/{eps}"


def adversarial_from(model_id: str, source: str, attack: str, eps: int | str) -> str:
    return f"{model_id}/adv_from/{source}/{attack}/{eps}"


@dataclass(frozen=True)
class Key:
    model: str
    set: str            # "clean", a perturbation name, "adv" or "adv_from"
    severity: int | None = None


def parse(key: str) -> Key | None:
    """The model and set of a prediction key (None for labels / sweep_index / adversarial keys)."""
    parts = key.split("/")
    if len(parts) == 2 and parts[1] == CLEAN:
        return Key(parts[0], CLEAN)
    if len(parts) == 3 and parts[2].isdigit():
        return Key(parts[0], parts[1], int(parts[2]))
    return None


def model_of(key: str) -> str | None:
    """The model id a key belongs to (None for ``labels`` / ``sweep_index``)."""
    return key.split("/", 1)[0] if "/" in key else None


def as_model(preds: dict[str, np.ndarray], source: str, target: str, drop: tuple[str, ...] = ()) -> dict:
    """``preds`` with model ``source``'s keys renamed to ``target``'s (replacing any of ``target``'s)
    and the keys of the models in ``drop`` left out: one candidate's predictions as the build's."""
    out = {k: v for k, v in preds.items() if model_of(k) not in (*drop, source, target)}
    out.update({target + k[len(source):]: v for k, v in preds.items() if model_of(k) == source})
    return out


def save(path: Path, preds: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **preds)


def load(path: Path) -> dict[str, np.ndarray]:
    """Every array of a predictions.npz (no pickles); one sentence when it cannot be read."""
    check_regular(path, "predictions")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"{path}: not a readable .npz file ({load_error_reason(e)})") from None
