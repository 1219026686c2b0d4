"""On-device benchmark bundle: a folder (and .zip) that runs with Python, numpy and onnxruntime only.

    rec = make_bundle(Path("edgekd-out"), load_profile("rpi4"), Path("rpi4-bundle"))
    # on the device:   cd rpi4-bundle && python run.py          -> results.json
    # back home:       edgekd report edgekd-out --device-results results.json

Layout of a bundle::

    run.py          edgekd/_ortbench.py verbatim: latency + memory per model (each in a fresh
                    process) and accuracy / agreement with the teacher on the evaluation set
    bundle.json     what is inside: profile, models (sha256, the build's accuracy on the same
                    images), evaluation sets, the build it came from
    device.json     the device profile
    models/         the profile's precision: student.int8.onnx + student.int8.ort, or student.fp32.onnx
    eval.npz        images/SET, labels/SET, teacher/SET (the teacher's predicted class) for SET in
                    clean and NAME/SEVERITY (perturbed on the build machine, same seed as the build)
    README.txt      the one command to run

The evaluation set is the first ``max_images`` test images of the build (the same ones its report
scored; for a build whose sweep used a subset, the first of that subset), reloaded from the data the
build's manifest names and checked against the report's ``dataset.test_sha256``. Perturbed copies
are regenerated with :func:`edgekd.perturb.apply` (deterministic per image) and checked: the INT8
model's predictions on them must equal the build's ``predictions.npz``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .device_profiles import DeviceProfile
from .errors import ConfigError, InputError
from .files import move_into_place, read_json, sha256_file

BUNDLE_FORMAT = "edgekd-bundle"
DEFAULT_PERTURBATIONS = ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression", "occlusion")
DEFAULT_SEVERITY = 3
MODEL_FILES = {  # bundle model id -> (file in the artifact dir, format, precision)
    "student_int8": ("student.int8.onnx", "onnx", "int8"),
    "student_int8_ort": ("student.int8.ort", "ort", "int8"),
    "student_fp32": ("student.fp32.onnx", "onnx", "fp32"),
}


def check_bundle_dest(bundle_dir: Path) -> None:
    """Refuse to replace anything but an earlier bundle (nothing of the user's is lost)."""
    if bundle_dir.exists():
        if not bundle_dir.is_dir():
            raise ConfigError(f"bundle path {bundle_dir} exists and is not a directory")
        if any(bundle_dir.iterdir()) and not (bundle_dir / "bundle.json").is_file():
            raise ConfigError(f"{bundle_dir} exists, is not empty and is not an edgekd bundle; choose "
                              "another -o")


def _eval_images(out_dir: Path, manifest: dict, report: dict, preds: dict, max_images: int,
                 perturbations: tuple[str, ...], severity: int) -> tuple[dict, list[str], list[str]]:
    """The arrays of eval.npz, the set names and notes about perturbations left out."""
    from . import perturb
    from .config import from_dict
    from .data import load_dataset

    try:
        cfg = from_dict(manifest["config"], f"{out_dir / 'manifest.json'} config")
    except KeyError:
        raise InputError(f"{out_dir / 'manifest.json'} has no config") from None
    ds = load_dataset(cfg.data)
    want = (report.get("dataset") or {}).get("test_sha256")
    if want and ds.fingerprint() != want:
        raise InputError(f"the test images loaded from data.name = {cfg.data.name!r} (path "
                         f"{cfg.data.path!r}) differ from the ones {out_dir} was built with "
                         "(dataset.test_sha256); make the build's data available at the same path")
    n = min(max_images, len(ds.test))
    arrays = {"images/clean": ds.test.x[:n], "labels/clean": ds.test.y[:n].astype(np.int64),
              "teacher/clean": np.asarray(preds["teacher/clean"][:n]).astype(np.int64)}
    sets, notes = ["clean"], []
    sweep = np.asarray(preds["sweep_index"]) if "sweep_index" in preds else np.arange(len(ds.test))
    idx = sweep[:n]
    seed = (report.get("robustness") or {}).get("seed", 0)
    for name in perturbations:
        key = f"{name}/{severity}"
        if f"teacher/{key}" not in preds:
            notes.append(f"{key}: not in the build's sweep, left out")
            continue
        arrays[f"images/{key}"] = perturb.apply(name, ds.test.x[idx], severity, seed, ds.test.indices[idx])
        arrays[f"labels/{key}"] = ds.test.y[idx].astype(np.int64)
        arrays[f"teacher/{key}"] = np.asarray(preds[f"teacher/{key}"][:len(idx)]).astype(np.int64)
        sets.append(key)
    return arrays, sets, notes


def make_bundle(out_dir: Path, profile: DeviceProfile, bundle_dir: Path, max_images: int = 500,
                perturbations: tuple[str, ...] = DEFAULT_PERTURBATIONS, severity: int = DEFAULT_SEVERITY,
                make_zip: bool = True) -> dict:
    """Write ``bundle_dir`` (atomically) and ``bundle_dir.zip``; returns the bundle.json record."""
    from .gate import _load_npz
    from .runtimes import OrtRunner

    out_dir, bundle_dir = Path(out_dir), Path(bundle_dir).resolve()
    report, manifest = (read_json(out_dir / name, f"{out_dir / name} is missing: {out_dir} is not an "
                                  "edgekd artifact directory") for name in ("report.json", "manifest.json"))
    if not (out_dir / "predictions.npz").is_file():
        raise InputError(f"{out_dir / 'predictions.npz'} is missing; the bundle's teacher predictions come from it")
    preds = _load_npz(out_dir / "predictions.npz")
    shape = (report.get("dataset") or {}).get("image_shape") or [None]
    if shape[0] != profile.input_size:
        raise ConfigError(f"device profile {profile.name}: input_size = {profile.input_size}, but "
                          f"{out_dir} was built for {shape[0]}-pixel images (data.image_size); use a "
                          "profile with the build's input size")
    ids = [i for i, (_, _, prec) in MODEL_FILES.items() if prec == profile.precision]
    ids = [i for i in ids if (out_dir / MODEL_FILES[i][0]).is_file() or i == profile.model_id]
    if not (out_dir / MODEL_FILES[profile.model_id][0]).is_file():
        raise InputError(f"{out_dir} has no {MODEL_FILES[profile.model_id][0]}, the model profile "
                         f"{profile.name} deploys; rebuild with this edgekd or use a profile with "
                         "model_format = \"onnx\"")
    if max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    check_bundle_dest(bundle_dir)
    arrays, sets, notes = _eval_images(out_dir, manifest, report, preds, max_images, perturbations, severity)

    tmp = bundle_dir.parent / f".{bundle_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "models").mkdir(parents=True)
        models = []
        for mid in ids:
            fname, fmt, prec = MODEL_FILES[mid]
            dest = tmp / "models" / fname
            shutil.copyfile(out_dir / fname, dest)
            runner = OrtRunner(dest)
            build_acc = {}
            for s in sets:
                pred = runner.predict(arrays[f"images/{s}"]).argmax(1)
                build_acc[s] = float((pred == arrays[f"labels/{s}"]).mean())
                ref = preds.get(f"{mid}/{s}")
                if ref is not None and not np.array_equal(pred, np.asarray(ref[:len(pred)])):
                    raise InputError(f"{mid} on the regenerated {s} images does not reproduce the "
                                     f"build's predictions.npz; the data or edgekd.perturb changed since "
                                     f"{out_dir} was built")
            models.append({"id": mid, "file": f"models/{fname}", "format": fmt, "precision": prec,
                           "primary": mid == profile.model_id, "size_bytes": dest.stat().st_size,
                           "sha256": sha256_file(dest), "build_accuracy": build_acc})
        np.savez_compressed(tmp / "eval.npz", **arrays)
        shutil.copyfile(Path(__file__).with_name("_ortbench.py"), tmp / "run.py")
        prof = profile.to_dict()
        (tmp / "device.json").write_text(json.dumps(prof, indent=2) + "\n")
        rec = {"format": BUNDLE_FORMAT, "version": 1, "edgekd_version": __version__,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "profile": prof,
               "models": models,
               "eval": {"file": "eval.npz", "sets": sets, "n_images": int(len(arrays["labels/clean"])),
                        "severity": severity, "notes": notes},
               "build": {"artifact_dir": str(out_dir.resolve()), "report_created": report.get("created"),
                         "dataset": (report.get("dataset") or {}).get("name"),
                         "test_sha256": (report.get("dataset") or {}).get("test_sha256"),
                         "report_sha256": sha256_file(out_dir / "report.json")},
               "requires": "python >= 3.8, numpy, onnxruntime"}
        (tmp / "bundle.json").write_text(json.dumps(rec, indent=2) + "\n")
        (tmp / "README.txt").write_text(_readme(profile, rec))
        move_into_place(tmp, bundle_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_zip:
        zpath = bundle_dir.with_name(bundle_dir.name + ".zip")
        ztmp = zpath.with_name(f".{zpath.name}.partial-{os.getpid()}")
        with zipfile.ZipFile(ztmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(bundle_dir.rglob("*")):
                if p.is_file():
                    z.write(p, f"{bundle_dir.name}/{p.relative_to(bundle_dir)}")
        os.replace(ztmp, zpath)
        rec["zip"] = str(zpath)
    rec["dir"] = str(bundle_dir)
    return rec


def _readme(profile: DeviceProfile, rec: dict) -> str:
    models = ", ".join(m["file"] + (" (deployed)" if m["primary"] else "") for m in rec["models"])
    return f"""edgekd on-device benchmark bundle for device profile {profile.name}
({profile.description})

Needs Python 3.8+, numpy and onnxruntime (pip install numpy onnxruntime); no torch, no edgekd.

Run, in this folder:

    python run.py

It measures every model ({models}) in a fresh process each ({profile.threads} threads,
{profile.warmup_runs} warm-up + {profile.latency_runs} timed runs at batch {profile.batch}): latency
statistics, throughput and peak memory; then accuracy and agreement with the teacher on
{rec['eval']['n_images']} test images, clean and perturbed ({', '.join(rec['eval']['sets'][1:]) or 'none'}).
It prints a table and writes results.json (options: --threads N, --out FILE).

Bring results.json back and merge it into the build's report:

    edgekd report ARTIFACT_DIR --device-results results.json
    edgekd gate ARTIFACT_DIR            # checks it against the profile's budgets
"""
