"""``edgekd build``: every stage in order, written atomically into an artifact directory.

    result = build(load_config(None), Path("edgekd-out"), progress=False)
    result.report["models"]["student_int8"]["accuracy"]["clean"]  # -> 0.97...

Stages: data -> teacher (train or load) -> distil student -> export ONNX (parity) -> quantise INT8
-> measure all four models (clean, perturbed, latency) -> report -> gate. The directory is built in
a hidden sibling folder and moved into place only when complete, so a failed build never leaves
a directory that looks complete.
"""

from __future__ import annotations

import errno
import io
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, artifacts
from . import predictions as P
from .config import BuildConfig
from .data import Dataset, load_dataset
from .distill import distill, resolve_device, train_teacher
from .errors import ConfigError, InputError, check_terminated
from .export import check_parity, export_onnx
from .files import (
    BUILD_FORMAT,
    MANIFEST,
    build_manifest,
    move_into_place,
    recover_interrupted,
    sha256_file,
    unlisted_entries,
)
from .harness import measure_latency
from .harness import measure_set as measure_clean  # noqa: F401  (its name for the clean test set)
from .losses import training_meta
from .models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessed,
    build_model,
    count_params,
    pretrained_model,
    save_checkpoint,
)
from .device_profiles import deploy_profile
from .preflight import MEMORY_MEASURED, MODEL_IDS, build_policy, build_runtimes, check_compression, preflight  # noqa: F401
from .distributed import current, share_files
from .runtimes import RUNTIMES
from .training import Recipe



@dataclass
class BuildResult:
    out_dir: Path
    report: dict
    manifest: dict
    exit_code: int = 0
    gate_text: str = ""
    timings_s: dict = field(default_factory=dict)


def library_versions() -> dict:
    import onnx
    import onnxruntime
    import sklearn

    return {"edgekd": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "executorch": _version("executorch")}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# errors that mean the disk or the folder cannot take the build (not a bug in edgekd)
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output path that a build would replace unless it is empty or an earlier edgekd
    build holding only the files its manifest lists: nothing edgekd did not write is ever removed."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ConfigError(f"output path {out_dir} exists and is not a directory; choose another -o")
    if not any(out_dir.iterdir()):
        return
    manifest = build_manifest(out_dir)
    if manifest is None:
        raise ConfigError(f"output directory {out_dir} exists, is not empty and is not an edgekd "
                          "build (no edgekd manifest.json); choose another -o")
    extra = unlisted_entries(out_dir, manifest)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ConfigError(f"output directory {out_dir} is an earlier edgekd build but also holds "
                          f"{shown}, which its manifest does not list; move them away or choose "
                          "another -o (edgekd never deletes what it did not write)")


def _state_dict_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def prepare_teacher(cfg: BuildConfig, ds: Dataset, device: str, progress: bool) -> tuple[Preprocessed, dict]:
    """Load the teacher named by the config (any format, checked against the data), or train one
    (from scratch, or fine-tuned from torchvision's published weights with ``teacher.pretrained``);
    then check that it beats chance on the validation split."""
    from .teachers import check_not_chance, load_teacher, state_dict_sha256

    if cfg.teacher.weights:
        teacher, rec = load_teacher(cfg.teacher, ds, device)
    else:
        torch.manual_seed(cfg.teacher.seed)
        if cfg.teacher.pretrained:
            net = pretrained_model(cfg.teacher.arch, len(ds.classes))
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            net = build_model(cfg.teacher.arch, len(ds.classes), stem=cfg.teacher.stem,
                              image_size=ds.image_shape[0])
            mean, std = ds.mean, ds.std
        teacher = Preprocessed(net, mean, std)
        training = train_teacher(teacher, ds.train, cfg.teacher, device, progress, val=ds.val)
        rec = {"source": "pretrained+fine-tuned" if cfg.teacher.pretrained else "trained",
               "arch": cfg.teacher.arch, "epochs": training["epochs"], "log": training["log"],
               "kept": training["kept"], "sha256": state_dict_sha256(teacher)}
        teacher = teacher.to(device).eval()
    rec["check"] = check_not_chance(teacher, ds, device, cfg.teacher.allow_chance_level)
    return teacher, rec


def student_options(cfg: BuildConfig, image_size: int) -> dict:
    """The options the student is built with (stored in student.pt so it can be rebuilt)."""
    return {"width": cfg.student.width, "stem": cfg.student.stem, "image_size": image_size}


def teacher_train_targets(cfg: BuildConfig, teacher, ds: Dataset, device: str
                          ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The teacher's logits on the training images (and on their mirror images when the student
    trains with flips), from the disk cache when the same teacher has seen the same images."""
    from .cache import cache_root
    from .losses import loss_spec
    from .teachers import teacher_outputs

    n_cls = len(ds.classes)
    if not cfg.distill.epochs or not loss_spec(cfg.distill.loss).uses_teacher \
            or cfg.distill.teacher_view == "same":
        # no cached soft targets needed (labels only, or the teacher runs on every batch)
        return np.zeros((len(ds.train), n_cls), np.float32), None, {"computed": 0, "from_cache": 0}
    cache = cache_root(cfg.cache.dir) if cfg.distill.cache_teacher_outputs else None
    views = ["clean", "hflip"] if cfg.distill.crop_flip else ["clean"]
    out, hits = {}, 0
    for view in views:  # sharded over the processes under torchrun
        out[view], hit = teacher_outputs(teacher, ds.train.x, device, cache, view, current())
        hits += hit
    return out["clean"], out.get("hflip"), {"views": views, "from_cache": hits,
                                            "computed": len(views) - hits,
                                            "cache_dir": str(cache) if cache else None}


def build(cfg: BuildConfig, out_dir: Path, progress: bool = True,
          say: Callable[[str], None] = lambda s: None) -> BuildResult:
    """Run the whole pipeline; returns the report and manifest (the gate verdict included)."""
    out_dir = Path(out_dir).resolve()
    group = current()  # under torchrun: this process's place among them (edgekd.distributed)
    if group.is_main:
        for line in recover_interrupted(out_dir):  # leftovers of killed builds
            say(line)
    check_out_dir(out_dir)
    policy = build_policy(cfg)  # a bad [gate] section fails before any training
    preflight(cfg)
    if not group.is_main:  # trains and evaluates its share; writes nothing
        return _follow(cfg, out_dir, progress)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as e:
        raise InputError(f"cannot create the output directory next to {out_dir}: {e.strerror}") from None
    try:
        result = _build_into(cfg, tmp, policy, progress, say)
        move_into_place(tmp, out_dir)
        result.out_dir = out_dir
        group.broadcast(result.exit_code)  # every process exits with the gate's code
        return result
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in _DISK_ERRORS:  # the disk, not edgekd: say where
            where = str(e.filename).replace(str(tmp), str(out_dir)) if e.filename else str(out_dir)
            raise InputError(f"cannot write the build to {where}: {e.strerror or e}; "
                             f"{out_dir} is as it was before") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _stages(timings: dict[str, float]) -> Callable[[str, float], None]:
    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 3)
        check_terminated()  # a SIGTERM dropped where it landed stops the build here, not at the end

    return stage


def _train(cfg: BuildConfig, progress: bool, say: Callable[[str], None], timings: dict) -> tuple:
    """Data, teacher and distilled student (every process of a torchrun build runs this):
    ``(ds, device, teacher, teacher_rec, student, dist)``."""
    stage = _stages(timings)
    t0 = time.perf_counter()
    ds = load_dataset(cfg.data)
    if cfg.robustness.shift_sets:  # the user's own shifted sets, in memory; checked before training
        from .shift import load_shift_sets

        ds.shifts = load_shift_sets(cfg.robustness.shift_sets, ds.classes, ds.image_shape[0])
    stage("data", t0)
    say(f"data: {ds.name}, {len(ds.train)} train / {0 if ds.val is None else len(ds.val)} validation / "
        f"{len(ds.test)} test images of {ds.image_shape}; {len(ds.calib)} calibration images from "
        + ("the training images" if cfg.data.calib_from == "train" else "held out of training"))

    # 1. teacher
    t0 = time.perf_counter()
    device = resolve_device(cfg.compute.device)
    teacher, teacher_rec = prepare_teacher(cfg, ds, device, progress)
    stage("teacher", t0)
    chk = teacher_rec["check"]
    say(f"teacher: {cfg.teacher.arch} ({teacher_rec['source']}) on {device}, {100 * chk['accuracy']:.1f}% on "
        f"the {chk['n_images']} {chk['split']} images (chance {100 * chk['chance']:.1f}%)"
        + ("" if chk["passed"] else " -- NO BETTER THAN CHANCE (teacher.allow_chance_level)"))

    # 2. student by distillation, against teacher logits computed once
    t0 = time.perf_counter()
    student, dist = distill_stage(cfg, ds, teacher, device, progress)
    training, t_params, s_params = dist["training"], dist["teacher_params"], dist["student_params"]
    timings["teacher_outputs"] = dist["teacher_outputs_s"]
    stage("distill", t0)
    say(f"student: {cfg.student.arch}, {s_params} params ({t_params / s_params:.1f}x fewer than the "
        f"teacher), {len(training['log'])} of {training['epochs']} epochs of {cfg.distill.loss} distillation"
        + (f" (distill.min_steps raised {cfg.distill.epochs})" if training["epochs"] > cfg.distill.epochs else "")
        + (f", kept epoch {training['kept']['kept_epoch']} ({training['kept']['why']})" if training["kept"] else "")
        + (f", augmented with {', '.join(cfg.distill.augment)}" if cfg.distill.augment else ""))
    return ds, device, teacher, teacher_rec, student, dist


def _follow(cfg: BuildConfig, out_dir: Path, progress: bool) -> BuildResult:
    """A torchrun process other than rank 0: trains with the others, evaluates its share of the
    models rank 0 made (sent to it, kept in a scratch folder), and exits with rank 0's code."""
    import tempfile

    group, timings = current(), {}
    ds, device, teacher, _rec, student, _dist = _train(cfg, False, lambda s: None, timings)
    in_memory = {artifacts.TEACHER: teacher, artifacts.STUDENT_TORCH: student}
    with tempfile.TemporaryDirectory(prefix=f"edgekd-rank{group.rank}-") as scratch:
        runners = _shared_runners(None, in_memory, device, Path(scratch))
        _evaluate(cfg, ds, runners, in_memory, False, lambda s: None, timings)
    return BuildResult(out_dir, {}, {}, int(group.broadcast(None)), "", timings)


def _shared_runners(files: dict | None, in_memory: dict, device: str, scratch: Path) -> dict:
    """Rank 0's ``{id: (runtime, path)}`` of the model files, as runners on every process (the
    files copied into ``scratch`` elsewhere), with the in-memory torch models."""
    group = current()
    paths = share_files(group, None if files is None else {m: p for m, (_, p) in files.items()}, scratch)
    kinds = group.broadcast(None if files is None else {m: rt for m, (rt, _) in files.items()})
    runners = {a: RUNTIMES.get(artifacts.get(a).runtime)(m, _device_of(artifacts.get(a), device))
               for a, m in in_memory.items()}
    runners.update({m: RUNTIMES.get(kinds[m])(paths[m]) for m in sorted(kinds)})
    return runners


def _evaluate(cfg: BuildConfig, ds: Dataset, runners: dict, in_memory: dict, progress: bool,
              say: Callable[[str], None], timings: dict) -> tuple:
    """Every model on the clean and the perturbed test images and on the shift sets, shared out among torchrun's
    processes: ``(clean metrics, clean predictions, predictions, sweep or None, per-process
    timings)``."""
    stage = _stages(timings)
    t0 = time.perf_counter()
    clean_metrics, clean_preds = measure_clean(runners, ds.test.x, ds.test.y, cfg.measure.eval_batch_size,
                                               progress, current())
    predictions = {P.LABELS: ds.test.y.astype(np.int64), **{P.clean(m): p for m, p in clean_preds.items()}}
    stage("evaluate_clean", t0)
    if ds.shifts:
        from .report import merge_records
        from .shift import measure_shifts

        t0 = time.perf_counter()
        shift_metrics, shift_preds = measure_shifts(runners, ds.shifts, cfg.measure.eval_batch_size, progress,
                                                    current())
        clean_metrics = merge_records([clean_metrics, shift_metrics])
        predictions.update(shift_preds)
        stage("evaluate_shift", t0)
    sweep = None
    if cfg.robustness.enabled:
        from .robustness import run_sweep

        t0 = time.perf_counter()
        from .teachers import model_key

        teacher, runner = in_memory.get(artifacts.TEACHER), runners.get(artifacts.TEACHER)
        fixed = None if teacher is None or runner is None else \
            {artifacts.TEACHER: model_key(teacher, runner.runtime, runner.device)}
        sweep = run_sweep(cfg, ds, runners, in_memory, clean_preds, progress, say, current(), fixed)
        sweep.meta.update(training_meta(cfg.distill))  # what the student saw: are the figures inflated?
        predictions.update(sweep.predictions)
        stage("evaluate_perturbed", t0)
    ranks = current().gather({"rank": current().rank, "host": current().host, "timings_s": dict(timings)})
    return clean_metrics, clean_preds, predictions, sweep, ranks


def _build_into(cfg: BuildConfig, out: Path, policy, progress: bool,
                say: Callable[[str], None]) -> BuildResult:
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    stage = _stages(timings)
    runtimes, skipped = build_runtimes(cfg)
    if skipped:
        say(skipped)
    ds, device, teacher, teacher_rec, student, dist = _train(cfg, progress, say, timings)
    training, t_params, s_params = dist["training"], dist["teacher_params"], dist["student_params"]
    save_student(cfg, ds, student, dist, out / artifacts.get(artifacts.STUDENT_TORCH).file)

    # 3. export + parity on held-out (calibration) images
    t0 = time.perf_counter()
    fp32 = out / artifacts.get(artifacts.STUDENT_FP32).file
    export_rec = export_stage(cfg, student, ds.calib.x, fp32)
    stage("export", t0)
    pte_rec = {}
    if "executorch" in runtimes:  # 3b. ExecuTorch programs for XNNPACK, fp32 and INT8
        from .executorch_export import executorch_stage

        t0 = time.perf_counter()
        ptes = {a.precision: out / a.file for a in artifacts.runtime_files("executorch")}
        pte_rec = executorch_stage(student, ds.calib.x, ptes, cfg.export)
        stage("executorch", t0)
        say("exported " + ", ".join(f"{r['path']} (XNNPACK took {100 * r['delegation']['fraction']:.0f}% of the "
                                    f"graph, agreement {100 * r['parity']['argmax_agreement']:.1f}%)"
                                    for r in pte_rec.values()))

    # 4. INT8 candidates: quantize.preset, or each preset of the device profile; each checked
    # against the fp32 student on clean and perturbed validation images (and mended where it misses)
    t0 = time.perf_counter()
    profile = deploy_profile(cfg)
    work = out / ".candidates"  # inside the partial folder: gone with it on any failure
    work.mkdir()
    from .cache import cache_root, folder
    from .candidates import make_candidates

    calib_cache = folder(cache_root(cfg.cache.dir), "calibration") or work / "calibration"
    cands, tune_rec = make_candidates(cfg, ds, fp32, work, profile, calib_cache, say,
                                      qat_inputs=lambda: _qat_inputs(cfg, teacher, ds, device, student))
    stage("quantize", t0)

    # 5. measure every model and every candidate (shared out among torchrun's processes)
    in_memory = {artifacts.TEACHER: teacher, artifacts.STUDENT_TORCH: student}
    fixed = [a for a in artifacts.build_models(runtimes) if a.id != artifacts.STUDENT_INT8]
    files = {a.id: (a.runtime, out / a.file) for a in fixed if a.format != "torch"}
    files.update({c.model_id: ("onnxruntime", c.path) for c in cands})
    runners = _shared_runners(files, in_memory, device, out)
    clean_metrics, clean_preds, predictions, sweep, ranks = _evaluate(cfg, ds, runners, in_memory, progress,
                                                                      say, timings)

    t0 = time.perf_counter()
    files = {a.id: out / a.file for a in artifacts.memory_models(runtimes) if a.id != artifacts.STUDENT_INT8}
    speed = measure_speed(runners, {**files, **{c.model_id: c.path for c in cands}}, ds.test.x[:1], cfg.measure)
    stage("latency", t0)

    # 6. the candidate to deploy: gated like the build, the fastest that passes (candidates.choose)
    from .candidates import as_int8, pick
    from .report import build_report

    described = {a.id: _describe_model(a, in_memory, teacher_rec, out, t_params, s_params, device) for a in fixed}
    for a in artifacts.runtime_files("executorch") if pte_rec else ():
        described[a.id].update(delegation=pte_rec[a.precision]["delegation"], parity=pte_rec[a.precision]["parity"])
    int8_art = artifacts.get(artifacts.STUDENT_INT8)
    records = [clean_metrics, sweep.models if sweep else {}, speed]
    winner, quant_section, predictions = pick(
        cands, lambda c: {**described, artifacts.STUDENT_INT8: _describe_model(
            int8_art, in_memory, teacher_rec, out, t_params, s_params, device, path=c.path)},
        records, predictions, policy, profile, lambda recs: build_report(
            cfg, ds, recs, sweep.meta if sweep else {}, device, None))
    int8 = out / int8_art.file
    shutil.copyfile(winner.path, int8)
    quant_rec = {**winner.record, "path": int8.name, "stage": winner.stage, "tolerance": winner.tolerance,
                 "tune_set": tune_rec, "chosen": quant_section["chosen"], "why": quant_section["why"]}
    shutil.rmtree(work)
    say(f"exported {fp32.name} (max |logit diff| {export_rec['parity']['max_abs_logit_diff']:.2g}) and {int8.name} "
        f"({quant_section['why']})")

    # 6b. ORT format of the INT8 model + operator configs for a reduced onnxruntime build
    t0 = time.perf_counter()
    from .ort_mobile import convert_to_ort

    ort_rec = convert_to_ort(int8, ds.calib.x[:cfg.export.parity_samples])
    stage("ort_format", t0)
    described[artifacts.STUDENT_INT8] = _describe_model(int8_art, in_memory, teacher_rec, out, t_params, s_params,
                                                        device)
    described[artifacts.STUDENT_INT8]["ort_format"] = {
        "file": ort_rec["path"], "size_bytes": ort_rec["size_bytes"],
        "operators_config": ort_rec["operators_config"], "parity": ort_rec["parity"]}
    records = as_int8(records, winner.model_id, [c.model_id for c in cands])

    report = build_report(cfg, ds, [described, *records], sweep.meta if sweep else {}, device,
                          training_record(cfg, ds, teacher_rec, training))
    report["quantization"] = quant_section
    P.save(out / artifacts.PREDICTIONS, predictions)
    timings["total"] = round(time.perf_counter() - t_start, 3)

    from .gate import evaluate_gate, format_table, write_gate_json

    gate = evaluate_gate(report, policy, predictions=predictions)
    write_gate_json(gate, out / artifacts.GATE_JSON)
    gate_rec, exit_code, gate_text = gate.to_dict(), gate.exit_code, format_table(gate)
    manifest = {
        "format": BUILD_FORMAT,
        "schema_version": 1,
        "edgekd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "seeds": {"split": cfg.data.split_seed, "teacher": cfg.teacher.seed,
                  "distill": cfg.distill.seed, "perturbations": cfg.robustness.seed},
        "versions": library_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(), "teacher_device": device},
        "input_contract": ds.contract(),
        "dataset": {"name": ds.name, "test_sha256": ds.fingerprint(),
                    "sizes": {"train": len(ds.train), "val": 0 if ds.val is None else len(ds.val),
                              "calib": len(ds.calib), "test": len(ds.test)},
                    "calib_from": cfg.data.calib_from},
        "stages": {"teacher": teacher_rec,
                   "distill": {"loss": cfg.distill.loss, "epochs": cfg.distill.epochs,
                               "augment": cfg.distill.augment, "crop_flip": cfg.distill.crop_flip,
                               "teacher_outputs": dist["teacher_outputs"], "log": training["log"],
                               "kept": training["kept"], "epochs_run": training["epochs"]},
                   "export": export_rec, "quantize": quant_rec, "ort_format": ort_rec,
                   "executorch": pte_rec or skipped},
        "timings_s": timings,
        "distributed": {"world_size": current().world, "backend": current().backend or "none",
                        "global_batch": cfg.distill.batch_size,
                        "batch_per_process": cfg.distill.batch_size // current().world,
                        "lr_scaling": cfg.distill.lr_scaling, "peak_lr": Recipe.from_config(cfg.distill).peak_lr,
                        "streamed": ds.streamed, "per_rank": ranks},
        "gate": gate_rec,
    }
    write_report_files(out, report, gate_text)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
                         for p in sorted(out.iterdir()) if p.is_file()}
    # written last: inside the partial folder, made visible whole by the final folder swap
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return BuildResult(out, report, manifest, exit_code, gate_text, timings)


def distill_stage(cfg: BuildConfig, ds: Dataset, teacher, device: str,
                  progress: bool) -> tuple[Preprocessed, dict]:
    """The student distilled from ``teacher`` on ``ds.train`` (on the CPU, in eval mode) and its
    record: ``training`` (epochs, log, kept epoch), the teacher's training targets, parameter counts."""
    torch.manual_seed(cfg.distill.seed)
    s_opts = student_options(cfg, ds.image_shape[0])
    student = Preprocessed(build_model(cfg.student.arch, len(ds.classes), **s_opts), ds.mean, ds.std)
    t_params, s_params = count_params(teacher.net), count_params(student.net)
    check_compression(cfg, t_params, s_params)  # known only now for TorchScript / exported teachers
    t1 = time.perf_counter()
    logits, logits_flip, targets_rec = teacher_train_targets(cfg, teacher, ds, device)
    targets_s = round(time.perf_counter() - t1, 3)
    training = distill(student, logits, ds.train, cfg.distill, device, progress, teacher=teacher,
                       teacher_logits_hflip=logits_flip, val=ds.val)
    return student.cpu().eval(), {"training": training, "teacher_outputs": targets_rec,
                                  "teacher_outputs_s": targets_s, "options": s_opts,
                                  "teacher_params": t_params, "student_params": s_params}


def save_student(cfg: BuildConfig, ds: Dataset, student: Preprocessed, dist: dict, path: Path) -> None:
    """student.pt: what ``edgekd eval`` / ``edgekd export`` rebuild the student from."""
    save_checkpoint(student, cfg.student.arch, len(ds.classes), path,
                    {"classes": ds.classes, "options": dist["options"], "config": cfg.to_dict()})


def export_stage(cfg: BuildConfig, student: Preprocessed, calib: np.ndarray, path: Path) -> dict:
    """``path`` (fp32 ONNX, uint8 NHWC in, logits out), parity-checked against the torch student on
    the first ``export.parity_samples`` calibration images."""
    rec = {"preset": cfg.export.preset, **export_onnx(student, calib, path, cfg.export.opset)}
    rec["parity"] = check_parity(student, path, calib[:cfg.export.parity_samples], cfg.export.parity_atol)
    return rec


def quantize_stage(cfg: BuildConfig, fp32: Path, calib: np.ndarray, path: Path) -> dict:
    """``path``: the ``[quantize]`` model of ``fp32`` (INT8 calibrated on ``calib``, or fp16), the
    calibration ranges cached under ``cache.dir``."""
    from .cache import cache_root, folder
    from .quantize import quantize_model

    return {"preset": cfg.quantize.preset, **quantize_model(
        fp32, path, calib, cfg.quantize, calib_cache=folder(cache_root(cfg.cache.dir), "calibration"))}


def write_report_files(out: Path, report: dict, gate_text: str) -> None:
    """report.json, report.md and report.html of a build (after its gate.json)."""
    from .html_report import load_gate, render_html
    from .report import render_markdown, report_json

    (out / artifacts.REPORT_JSON).write_text(report_json(report))
    (out / artifacts.REPORT_MD).write_text(render_markdown(report, gate_text))
    (out / artifacts.REPORT_HTML).write_text(render_html(report, load_gate(out / artifacts.GATE_JSON)),
                                                encoding="utf-8")


def training_record(cfg: BuildConfig, ds: Dataset, teacher_rec: dict, training: dict) -> dict:
    """report.json ``training``: the student's recipe, which epoch's weights were kept and why, and
    the teacher's check against chance."""
    d = cfg.distill
    return {"student": {"method": d.loss, "optimizer": d.optimizer, "lr": d.lr, "schedule": d.schedule,
                        "batch_size": d.batch_size, "epochs": training["epochs"],
                        "epochs_run": len(training["log"]), "ema_decay": d.ema_decay,
                        "label_smoothing": d.label_smoothing, "kept": training["kept"],
                        "val_images": 0 if ds.val is None else len(ds.val)},
            "teacher": {"source": teacher_rec["source"], "check": teacher_rec.get("check")}}


def _device_of(a: artifacts.Artifact, teacher_device: str) -> str:
    return teacher_device if a.kind == "teacher" else "cpu"


def _describe_model(a: artifacts.Artifact, in_memory: dict, teacher_rec: dict, out: Path, t_params: int,
                    s_params: int, teacher_device: str, path: Path | None = None) -> dict:
    """``models[id]``'s description; ``path``: the student's file when it is not yet ``out / a.file``
    (an INT8 candidate)."""
    dev = _device_of(a, teacher_device)
    rec = {"kind": a.kind, "format": a.format, "precision": a.precision, "runtime": f"{a.runtime}-{dev}",
           "device": dev, "file": a.file}
    if a.kind == "teacher":
        rec.update(source=teacher_rec["source"], params=t_params,
                   size_bytes=_state_dict_bytes(in_memory[a.id].net))
    else:
        rec.update(params=s_params, size_bytes=(path or out / a.file).stat().st_size)
    return rec


def measure_speed(runners: dict, files: dict[str, Path], sample: np.ndarray, mc) -> dict[str, dict]:
    """``{id: {"latency_ms": ..., "memory": ...}}``: latency of every runner on ``sample`` (``mc`` is
    the [measure] config), and peak memory of the model ``files[id]`` measured in a fresh process."""
    from .bench import memory_of  # peak RSS of a fresh numpy + onnxruntime process per artifact

    torch_threads = torch.get_num_threads()
    rec = {mid: {"latency_ms": measure_latency(r, sample, mc.latency_runs, mc.warmup_runs, mc.threads)}
           for mid, r in runners.items()}
    torch.set_num_threads(torch_threads)
    for mid, path in files.items():
        rec[mid]["memory"] = memory_of(path, mc.threads)
    return rec


def _qat_inputs(cfg: BuildConfig, teacher, ds: Dataset, device: str, student) -> dict:
    """What QAT fine-tunes with: the student and the teacher's logits on the training images (from
    the disk cache when the distillation stage computed them)."""
    from .losses import loss_spec

    logits = None
    if loss_spec(cfg.distill.loss).uses_teacher:
        from .cache import cache_root
        from .teachers import teacher_outputs

        cache = cache_root(cfg.cache.dir) if cfg.distill.cache_teacher_outputs else None
        logits, _ = teacher_outputs(teacher, ds.train.x, device, cache, "clean")
    return {"student": student, "teacher_logits": logits}
