"""On-device benchmark bundle: a folder (and .zip) that runs with Python, numpy and the models' runtimes.

    rec = make_bundle(Path("edgekd-out"), load_profile("rpi4"), Path("rpi4-bundle"))
    # on the device:   cd rpi4-bundle && python run.py          -> results.json
    # back home:       edgekd report edgekd-out --device-results results.json

Layout of a bundle::

    run.py          edgekd/_ortbench.py (the device runner) verbatim: latency + memory per model
                    (each in a fresh process) and accuracy / agreement with the teacher on the
                    evaluation set
    _ptesession.py  edgekd/_ptesession.py verbatim: run.py's ExecuTorch sessions (.pte)
    bundle.json     what is inside: profile, models (sha256, the build's accuracy on the same
                    images), evaluation sets, the build it came from
    device.json     the device profile
    models/         the profile's precision, for each runtime it names: student.int8.onnx +
                    student.int8.ort (+ student.int8.pte with ExecuTorch), or the fp32 files
    eval.npz        images/SET, labels/SET, teacher/SET (the teacher's predicted class) for SET in
                    clean, NAME/SEVERITY (perturbed on the build machine, same seed as the build)
                    and shift/NAME (the first images of each of the build's robustness.shift_sets)
    README.txt      the one command to run

The evaluation set is the first ``first_images`` test images of the build (the same ones its report
scored; for a build whose sweep used a subset, the first of that subset), reloaded from the data the
build's manifest names and checked against the report's ``dataset.test_sha256``. Perturbed copies
are regenerated with :func:`edgekd.perturb.apply` (deterministic per image) and checked: the INT8
model's predictions on them must equal the build's ``predictions.npz``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__, artifacts
from . import predictions as P
from .device_profiles import DeviceProfile
from .errors import ConfigError, InputError
from .files import MANIFEST, move_into_place, read_json, recover_interrupted, sha256_file, write_text

BUNDLE_FORMAT = "edgekd-bundle"
DEFAULT_PERTURBATIONS = ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression", "occlusion")
DEFAULT_SEVERITY = 3
# bundle model id -> (file in the artifact dir, format, precision), from the artifacts table
MODEL_FILES = {a.id: (a.file, a.format, a.precision) for a in artifacts.model_files()}
# what a device installs to run a bundle's models, by runtime (the lightest package that runs them)
RUNTIME_PACKAGES = {
    "onnxruntime": ("onnxruntime", "pip install numpy onnxruntime"),
    # executorch-numpy-runtime 1.4.0 (ExecuTorch 1.3.1 inside, no torch, ~96 MB venv) loads and runs
    # the programs of executorch 1.5.1 (checked in benchmarks/RESULTS.md); executorch itself needs torch
    "executorch": ("executorch-numpy-runtime (Python >= 3.12, no torch) or executorch (with torch)",
                   "pip install numpy executorch-numpy-runtime   # Python >= 3.12; elsewhere: pip install "
                   "numpy executorch (brings torch)"),
}


BUNDLE_ENTRIES = ("run.py", "_ptesession.py", "bundle.json", "device.json", "eval.npz", "README.txt", "models")
MAX_BUNDLE_JSON = 1 << 20  # bundle.json inside an earlier bundle's zip is read only up to this


def _is_bundle_record(doc: object) -> bool:
    return isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT


def _unlisted_in_bundle(folder: Path) -> list[str] | None:
    """None when ``folder`` is not an edgekd bundle (no bundle.json with its format marker); else
    what it holds that edgekd did not write there (e.g. a results.json of run.py)."""
    try:
        rec = read_json(folder / "bundle.json", "no bundle.json")
    except InputError:
        return None
    if not _is_bundle_record(rec):
        return None
    models = rec.get("models") if isinstance(rec.get("models"), list) else []
    listed = {str(m.get("file")) for m in models if isinstance(m, dict)}
    extra = []
    for p in sorted(folder.iterdir()):
        if p.name not in BUNDLE_ENTRIES or p.is_symlink() or p.is_dir() != (p.name == "models"):
            extra.append(p.name)
        elif p.name == "models":
            extra += [f"models/{q.name}" for q in sorted(p.iterdir())
                      if f"models/{q.name}" not in listed or q.is_symlink() or not q.is_file()]
    return extra


def _is_bundle_zip(path: Path, name: str) -> bool:
    """True when ``path`` is a regular file holding the zip of a bundle folder ``name`` (its
    ``name/bundle.json`` carries the bundle format marker)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{name}/bundle.json")
            if info.file_size > MAX_BUNDLE_JSON:
                return False
            return _is_bundle_record(json.loads(z.read(info)))
    except (OSError, KeyError, ValueError, RecursionError, NotImplementedError, RuntimeError,
            zipfile.BadZipFile, EOFError):
        return False


def check_bundle_dest(bundle_dir: Path, zip_path: Path | None = None) -> None:
    """Refuse to replace anything but an earlier bundle (folder and zip) that holds only what
    edgekd wrote: nothing of the user's is lost."""
    if bundle_dir.exists() or bundle_dir.is_symlink():
        if bundle_dir.is_symlink() or not bundle_dir.is_dir():
            raise ConfigError(f"bundle path {bundle_dir} exists and is not a folder; choose another -o "
                              "or remove it")
        extra = _unlisted_in_bundle(bundle_dir) if any(bundle_dir.iterdir()) else []
        if extra is None:
            raise ConfigError(f"{bundle_dir} exists, is not empty and is not an edgekd bundle (no edgekd "
                              "bundle.json); choose another -o or remove it")
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise ConfigError(f"{bundle_dir} is an earlier edgekd bundle but also holds {shown}, which "
                              "edgekd did not write; move them away or choose another -o")
    if zip_path is not None and (zip_path.exists() or zip_path.is_symlink()):
        if zip_path.is_symlink() or not _is_bundle_zip(zip_path, bundle_dir.name):
            raise ConfigError(f"{zip_path} exists and is not the zip of an edgekd bundle; choose another "
                              "-o, remove it, or pass --no-zip")


def _eval_images(out_dir: Path, manifest: dict, report: dict, preds: dict, first_images: int,
                 perturbations: tuple[str, ...], severity: int) -> tuple[dict, list[str], list[str]]:
    """The arrays of eval.npz, the set names and notes about perturbations left out."""
    from . import perturb
    from .config import from_dict
    from .data import load_dataset

    try:
        cfg = from_dict(manifest["config"], f"{out_dir / 'manifest.json'} config", warn=False)
    except KeyError:
        raise InputError(f"{out_dir / 'manifest.json'} has no config") from None
    ds = load_dataset(cfg.data)
    want = (report.get("dataset") or {}).get("test_sha256")
    if want and ds.fingerprint() != want:
        raise InputError(f"the test images loaded from data.name = {cfg.data.name!r} (path "
                         f"{cfg.data.path!r}) differ from the ones {out_dir} was built with "
                         "(dataset.test_sha256); make the build's data available at the same path")
    n = min(first_images, len(ds.test))
    arrays = {"images/clean": ds.test.x[:n], "labels/clean": ds.test.y[:n].astype(np.int64),
              "teacher/clean": np.asarray(preds[P.clean(artifacts.TEACHER)][:n]).astype(np.int64)}
    sets, notes = ["clean"], []
    sweep = np.asarray(preds[P.SWEEP_INDEX]) if P.SWEEP_INDEX in preds else np.arange(len(ds.test))
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
    shifts = report.get("shift_sets") or {}
    if not isinstance(shifts, dict) or not all(isinstance(i, dict) and isinstance(i.get("path"), str)
                                               for i in shifts.values()):
        raise InputError(f"{out_dir / artifacts.REPORT_JSON}: shift_sets is not a table of sets with a path each; "
                         "rebuild it with edgekd build")
    if shifts:  # the build's own shifted data, reloaded and checked like the test images
        from .shift import fingerprint, load_shift_sets

        loaded = load_shift_sets({name: info["path"] for name, info in shifts.items()}, ds.classes,
                                 ds.image_shape[0])
        for name, split in loaded.items():
            key = P.shift_set(name)
            if fingerprint(split) != shifts[name].get("sha256"):
                raise InputError(f"shift set {name!r} loaded from {shifts[name]['path']} differs from the one "
                                 f"{out_dir} was built with (report.json shift_sets.{name}.sha256); make the "
                                 "build's data available at the same path")
            teacher = preds.get(P.shift(artifacts.TEACHER, name))
            if teacher is None:
                notes.append(f"{key}: the build's predictions.npz has no teacher predictions for it, left out")
                continue
            m = min(first_images, len(split))
            arrays[f"images/{key}"] = split.x[:m]
            arrays[f"labels/{key}"] = split.y[:m].astype(np.int64)
            arrays[f"teacher/{key}"] = np.asarray(teacher[:m]).astype(np.int64)
            sets.append(key)
    return arrays, sets, notes


def _bundle_path(path: Path) -> Path:
    """``path`` made absolute, with its folder resolved but not the last component (a symlink
    there is refused by check_bundle_dest, never followed)."""
    p = Path(path).absolute()
    p = p.parent.resolve() / p.name if p.name not in ("", "..") else p.resolve()
    if not p.name:
        raise ConfigError(f"bundle path {path} names no folder; choose another -o")
    return p


def make_bundle(out_dir: Path, profile: DeviceProfile, bundle_dir: Path, first_images: int = 500,
                perturbations: tuple[str, ...] = DEFAULT_PERTURBATIONS, severity: int = DEFAULT_SEVERITY,
                make_zip: bool = True) -> dict:
    """Write ``bundle_dir`` and ``bundle_dir.zip``; returns the bundle.json record.

    Both are checked first (only an earlier bundle is replaced), built beside their destination
    under a ``.NAME.partial-PID`` name and moved into place at the end: a failure leaves what was
    there. A folder that cannot be written is an InputError naming it.
    """
    out_dir, bundle_dir = Path(out_dir), _bundle_path(bundle_dir)
    zpath = bundle_dir.with_name(bundle_dir.name + ".zip") if make_zip else None
    if first_images < 1:
        raise ConfigError(f"--first-images must be >= 1, got {first_images}")
    tmp = bundle_dir.parent / f".{bundle_dir.name}.partial-{os.getpid()}"
    ztmp = zpath.with_name(f".{zpath.name}.partial-{os.getpid()}") if zpath else None
    try:
        for dest in (bundle_dir, zpath):
            if dest is not None:
                recover_interrupted(dest)  # leftovers of killed edgekd processes
        check_bundle_dest(bundle_dir, zpath)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "models").mkdir(parents=True)  # first: a folder we cannot write fails before the work
        rec = _write_bundle(out_dir, profile, tmp, first_images, perturbations, severity)
        if ztmp is not None:
            with zipfile.ZipFile(ztmp, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(tmp.rglob("*")):
                    if f.is_file():
                        z.write(f, f"{bundle_dir.name}/{f.relative_to(tmp)}")
        move_into_place(tmp, bundle_dir)
        if ztmp is not None:
            os.replace(ztmp, zpath)
            rec["zip"] = str(zpath)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise InputError(f"cannot write the bundle {bundle_dir}: {e.strerror or e}{where}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if ztmp is not None:
            try:
                ztmp.unlink(missing_ok=True)
            except OSError:
                pass
    rec["dir"] = str(bundle_dir)
    return rec


def _write_bundle(out_dir: Path, profile: DeviceProfile, tmp: Path, first_images: int,
                  perturbations: tuple[str, ...], severity: int) -> dict:
    """Fill the folder ``tmp`` (holding an empty models/) with the bundle; returns bundle.json's record."""
    from . import _ortbench, _ptesession
    from .gate import load_npz
    from .runtimes import RUNTIMES

    report, manifest = (read_json(out_dir / name, f"{out_dir / name} is missing: {out_dir} is not an "
                                  "edgekd artifact directory") for name in (artifacts.REPORT_JSON, MANIFEST))
    if not (out_dir / artifacts.PREDICTIONS).is_file():
        raise InputError(f"{out_dir / 'predictions.npz'} is missing; the bundle's teacher predictions come from it")
    preds = load_npz(out_dir / artifacts.PREDICTIONS)
    shape = (report.get("dataset") or {}).get("image_shape") or [None]
    if shape[0] != profile.input_size:
        raise ConfigError(f"device profile {profile.name}: input_size = {profile.input_size}, but "
                          f"{out_dir} was built for {shape[0]}-pixel images (data.image_size); use a "
                          "profile with the build's input size")
    runtimes = profile.all_runtimes
    ids = [a.id for a in artifacts.model_files() if a.precision == profile.precision and a.runtime in runtimes]
    ids = [i for i in ids if (out_dir / MODEL_FILES[i][0]).is_file() or i == profile.model_id]
    if not (out_dir / MODEL_FILES[profile.model_id][0]).is_file():
        raise InputError(f"{out_dir} has no {MODEL_FILES[profile.model_id][0]}, the model profile "
                         f"{profile.name} deploys; rebuild with this edgekd or use a profile with "
                         "model_format = \"onnx\"")
    arrays, sets, notes = _eval_images(out_dir, manifest, report, preds, first_images, perturbations, severity)
    models = []
    for mid in ids:
        fname, fmt, prec = MODEL_FILES[mid]
        dest = tmp / "models" / fname
        shutil.copyfile(out_dir / fname, dest)
        runner = RUNTIMES.get(artifacts.get(mid).runtime)(dest)
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
    used = list(dict.fromkeys(artifacts.get(m["id"]).runtime for m in models))
    missing = [r for r in runtimes if r not in used]
    if missing:
        notes.append(f"the profile names {', '.join(missing)}, but {out_dir} has no {profile.precision} "
                     f"artifact for it (build with --device {profile.name} and the runtime installed)")
    np.savez_compressed(tmp / "eval.npz", **arrays)
    shutil.copyfile(_ortbench.__file__, tmp / "run.py")  # the device runner, verbatim
    shutil.copyfile(_ptesession.__file__, tmp / "_ptesession.py")  # its ExecuTorch sessions
    prof = profile.to_dict()
    write_text(tmp / "device.json", json.dumps(prof, indent=2) + "\n")
    rec = {"format": BUNDLE_FORMAT, "version": 1, "edgekd_version": __version__,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "profile": prof,
           "models": models,
           "eval": {"file": "eval.npz", "sets": sets, "n_images": int(len(arrays["labels/clean"])),
                    "severity": severity, "notes": notes},
           "build": {"artifact_dir": str(out_dir.resolve()), "report_created": report.get("created"),
                     "dataset": (report.get("dataset") or {}).get("name"),
                     "test_sha256": (report.get("dataset") or {}).get("test_sha256"),
                     "report_sha256": sha256_file(out_dir / artifacts.REPORT_JSON)},
           "runtimes": used, "requires": "python >= 3.8, numpy, " + ", ".join(
               RUNTIME_PACKAGES[r][0] for r in used)}
    write_text(tmp / "bundle.json", json.dumps(rec, indent=2) + "\n")
    write_text(tmp / "README.txt", _readme(profile, rec))
    return rec


def _readme(profile: DeviceProfile, rec: dict) -> str:
    models = ", ".join(m["file"] + (" (deployed)" if m["primary"] else "") for m in rec["models"])
    installs = "\n".join(f"    {RUNTIME_PACKAGES[r][1]}" for r in rec["runtimes"])
    return f"""edgekd on-device benchmark bundle for device profile {profile.name}
({profile.description})

Needs {rec['requires']} (the runtime of each model); no edgekd:

{installs}

run.py runs each model with the lightest runtime installed and says which; a model whose runtime
is missing is skipped with a warning naming what to install.

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
