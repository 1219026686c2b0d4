"""Typed build configuration: TOML loading, ``--set section.key=value`` overrides, validation.

Usage::

    cfg = load_config("edgekd.toml", overrides=["distill.epochs=0"])
    cfg.distill.epochs  # -> 0

Every option is a dataclass field with a default (the defaults reproduce the embedded digits
build) and a one-line ``help``. ``edgekd config`` prints them all; ``edgekd.example.toml`` in the
repository lists them too. Unknown sections or keys, wrong types and out-of-range values raise
:class:`ConfigError` with a sentence naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import ConfigError
from .fields import check_table, table_keys
from .fields import spec as field_spec


def opt(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
        max: float | None = None) -> Any:
    """A config field: default, one-line help, optional choices and numeric bounds (its rules are
    :func:`edgekd.fields.spec`'s, checked by :func:`edgekd.fields.check_table`)."""
    return field_spec(default, help, choices=choices, min=min, max=max)


@dataclass
class DataConfig:
    name: str = opt("digits", "dataset: digits (scikit-learn's bundled 8x8 digits), imagefolder (a "
                    "folder or .tar/.tar.gz/.zip archive of class folders), npz (arrays x uint8 NHWC, "
                    "y), cifar10 / cifar100 (torchvision's files under data.path)",
                    choices=("digits", "imagefolder", "npz", "cifar10", "cifar100"))
    path: str = opt("", "(paths in a config file are relative to its folder) imagefolder: the folder or archive (class folders, or train/ and val/ "
                    "folders of them); npz: the .npz file; cifar10/100: torchvision's root folder")
    test_path: str = opt("", "optional separate test set: a folder/archive of class folders, or "
                         "an .npz (then data.split is ignored)")
    download: bool = opt(False, "cifar10/100: let torchvision download the files into data.path "
                         "if they are missing")
    image_size: int = opt(32, "side in pixels the images are presented at (resized if stored at "
                          "another size)", min=8, max=1024)
    split: str = opt("auto", "how the test split is made: auto (the data's own train/test parts "
                     "when it has them, else random), random (seeded, data.test_fraction), "
                     "last_per_class (the last data.test_per_class images of each class, file "
                     "names sorted)", choices=("auto", "random", "last_per_class"))
    test_fraction: float = opt(0.2, "fraction of the data held out for testing (split = random)",
                               min=0.05, max=0.5)
    test_per_class: int = opt(500, "test images per class (split = last_per_class)", min=1)
    max_train_per_class: int = opt(0, "use at most this many training images per class (the "
                                   "first ones); 0 = all", min=0)
    calib_samples: int = opt(200, "images for INT8 calibration (and the export parity checks)",
                             min=1)
    calib_from: str = opt("train", "where the calibration images come from: train (a seeded sample "
                          "of the training images, which still train; calibration only has to be "
                          "disjoint from the test split) or held_out (removed from training)",
                          choices=("train", "held_out"))
    val_fraction: float = opt(0.1, "fraction of the training images held out as the validation "
                              "split (best-epoch selection, the teacher check); never the test "
                              "split; 0 = none", min=0.0, max=0.5)
    val_max_images: int = opt(2000, "at most this many validation images", min=1)
    split_seed: int = opt(0, "seed of the train / calibration / test split", min=0, max=2**31 - 1)
    stream: str = opt("auto", "imagefolder / npz: read the training images lazily, decoded by "
                      "data.workers DataLoader processes, instead of holding them all: auto (when "
                      "their decoded pixels would exceed data.memory_mb), on, off (docs/scale.md)",
                      choices=("auto", "on", "off"))
    memory_mb: int = opt(4096, "data.stream = auto streams a data set whose decoded images (N x "
                         "image_size^2 x 3 bytes) exceed this many MiB", min=1)
    workers: int = opt(2, "worker processes decoding a streamed data set (0 = in the main process)",
                       min=0, max=256)
    stream_test_images: int = opt(10000, "a streamed data set's test split is held in memory: at "
                                  "most this many images (a seeded sample of it when larger)", min=1)


@dataclass
class TeacherConfig:
    arch: str = opt("digits_teacher", "teacher architecture: a name from `edgekd models`, any "
                    "torchvision.models classifier, or module:function (your factory, called with "
                    "num_classes=); unused for torchscript / export files")
    weights: str = opt("", "the teacher's file: a state_dict (with arch), a TorchScript file or a "
                       "torch.export program (.pt2); empty = train one on the train split")
    format: str = opt("auto", "format of teacher.weights: auto (from the file), state_dict, "
                      "torchscript, export", choices=("auto", "state_dict", "torchscript", "export"))
    stem: str = opt("imagenet", "stem of a registry architecture: imagenet (torchvision's), cifar "
                    "(full-resolution stem for 32x32 images), auto", choices=("auto", "imagenet", "cifar"))
    meta: str = opt("", "JSON beside the weights with classes and input.mean / input.std; empty = "
                    "WEIGHTS.json when it exists")
    mean: list[float] = opt([], "per-channel mean of pixels/255 the teacher was trained with; [] = "
                            "from teacher.meta, else the training split's")
    std: list[float] = opt([], "per-channel std to go with teacher.mean")
    pretrained: bool = opt(False, "start teacher.arch (a torchvision classifier) from its published "
                           "ImageNet weights (fetched once into torch's cache; needs network on "
                           "first use) and fine-tune it with a new head; the normalisation is then "
                           "ImageNet's")
    epochs: int = opt(6, "epochs when edgekd trains the teacher itself", min=0)
    min_steps: int = opt(150, "teacher training takes at least this many optimiser steps (more "
                         "epochs on small data sets)", min=0)
    optimizer: str = opt("adam", "optimiser for teacher training: sgd (Nesterov), adam, adamw",
                         choices=("sgd", "adam", "adamw"))
    lr: float = opt(3e-3, "peak learning rate for teacher training (one-cycle)", min=0.0)
    weight_decay: float = opt(0.0, "weight decay of conv / linear weights in teacher training",
                              min=0.0)
    batch_size: int = opt(64, "batch size for teacher training", min=1)
    crop_flip: bool = opt(False, "random 4-px crop + horizontal flip in teacher training (natural "
                          "images)")
    allow_chance_level: bool = opt(False, "build on although the teacher scores no better than "
                                   "chance on the validation split (by default that fails the "
                                   "build: a student distilled from it means nothing)")
    seed: int = opt(0, "seed for teacher initialisation and training", min=0, max=2**31 - 1)


@dataclass
class StudentConfig:
    arch: str = opt("digits_student", "student architecture name (see `edgekd models`)")
    width: float = opt(1.0, "width multiplier (mobilenet_v2, mobilenet_v3_small, resnet8/14/20/32)",
                       min=0.05, max=8.0)
    stem: str = opt("auto", "auto (cifar for images up to 64 px), imagenet, cifar (no early "
                    "downsampling: keeps the detail of 32x32 images)", choices=("auto", "imagenet", "cifar"))
    min_compression: float = opt(5.0, "teacher params / student params must be at least this",
                                 min=1.0)


class _LossNames:
    """``distill.loss``'s choices: the names of the loss registry (``losses.LOSSES``), read when a
    value is checked (losses.py imports this module, so it cannot be imported here at load time)."""

    def _names(self) -> list[str]:
        from .losses import LOSSES

        return LOSSES.names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()


@dataclass
class DistillConfig:
    loss: str = opt("hinton", "distillation method (see `edgekd models`, docs/distill.md): hinton "
                    "(Hinton 2015 KD: soft targets at temperature T + hard-label CE), ce (labels "
                    "only, no teacher), fitnets (Romero 2015: KD + hint MSE of 1x1-regressed student "
                    "features to teacher features), attention (Zagoruyko 2017: KD + attention-map "
                    "transfer), augmix_js (Hendrycks 2020: KD + Jensen-Shannon consistency over 2 "
                    "views perturbed with distill.augment), ard (Goldblum 2020: KD on PGD examples of "
                    "the student + CE), rslad (Zi 2021: teacher soft labels on clean and PGD inputs, "
                    "T = 1, no labels)",
                    choices=_LossNames())
    epochs: int = opt(12, "student training epochs; 0 leaves the student untrained", min=0)
    temperature: float = opt(4.0, "softmax temperature T of the soft targets", min=1e-3)
    alpha: float = opt(0.9, "weight of the soft-target term; 1 - alpha weighs hard-label CE",
                       min=0.0, max=1.0)
    optimizer: str = opt("sgd", "optimiser: sgd (momentum, Nesterov), adam, adamw",
                         choices=("sgd", "adam", "adamw"))
    lr: float = opt(0.1, "peak learning rate (one-cycle / cosine); 0.1-0.2 for sgd, ~5e-3 for adam",
                    min=0.0)
    momentum: float = opt(0.9, "sgd momentum (one-cycle cycles it 0.05 either side, against the rate)",
                          min=0.0, max=0.999)
    nesterov: bool = opt(True, "sgd: Nesterov momentum")
    weight_decay: float = opt(5e-4, "weight decay of conv / linear weights (none on BatchNorm and "
                              "biases)", min=0.0)
    schedule: str = opt("onecycle", "learning-rate schedule per step: onecycle (warm-up to lr, then "
                        "cosine annealing), cosine (linear warm-up, cosine decay to 0), constant",
                        choices=("onecycle", "cosine", "constant"))
    warmup_fraction: float = opt(0.3, "fraction of the steps spent warming up to lr", min=0.0,
                                 max=0.9)
    label_smoothing: float = opt(0.0, "label smoothing of the hard-label cross-entropy term", min=0.0,
                                 max=0.5)
    ema_decay: float = opt(0.0, "exponential moving average of the weights (e.g. 0.999; 0 = off): "
                           "the EMA weights are validated and kept", min=0.0, max=0.99999)
    select: str = opt("clean", "which epoch's weights are kept: clean (best accuracy on the "
                      "validation split), perturbed (best accuracy on the validation images "
                      "perturbed with distill.augment), last", choices=("clean", "perturbed", "last"))
    early_stop_patience: int = opt(0, "stop after this many epochs without a better validation "
                                   "score (0 = run every epoch)", min=0)
    min_steps: int = opt(250, "training takes at least this many optimiser steps (more epochs on "
                         "small data sets)", min=0)
    amp: bool = opt(True, "on CUDA: bf16 autocast for the student's and the teacher's forward passes "
                    "(no effect on CPU)")
    batch_size: int = opt(64, "global batch size: under torchrun each of the N processes takes "
                          "batch_size / N images a step, so one step sees the same number of images "
                          "at any scale", min=1)
    lr_scaling: str = opt("fixed", "the learning-rate rule: fixed (distill.lr as given) or linear "
                          "(distill.lr x distill.batch_size / distill.lr_base_batch, Goyal et al. "
                          "2017); neither depends on the number of processes",
                          choices=("fixed", "linear"))
    lr_base_batch: int = opt(64, "lr_scaling = linear: the batch size distill.lr is meant for", min=1)
    seed: int = opt(0, "seed for student initialisation and batch order", min=0, max=2**31 - 1)
    augment: list[str] = opt(["speckle_noise", "gaussian_blur", "spatter", "occlusion", "pixel_dropout"],
                             "perturbations the student sees in training (corruption-augmented KD); "
                             "[] for plain KD. Disjoint from the 15 evaluated common corruptions by "
                             "default, so robustness figures are not inflated")
    crop_flip: bool = opt(False, "standard augmentation: random 4-px reflect-padded crop and "
                          "horizontal flip (natural images; not for digits)")
    cache_teacher_outputs: bool = opt(True, "cache the teacher's logits on the training images on "
                                      "disk (keyed by teacher, data and view) and reuse them")
    augment_prob: float = opt(0.5, "fraction of each batch that is perturbed; lower costs less clean accuracy "
                              "(CIFAR-10, benchmarks/RESULTS.md, vs plain KD: 0.5 gave +4.4 mCA / -4.0 "
                              "clean on one seed; 0.25 +3.3 / -2.7 and 0.1 +2.6 / -1.2 over 3 seeds)", min=0.0, max=1.0)
    augment_mode: str = opt("replace", "how perturbed images enter a batch: replace (in place of "
                            "their clean originals; same compute) or append (copies added after the "
                            "whole clean batch, which keeps all clean images; augment_prob more student "
                            "compute per step; CIFAR-10, benchmarks/RESULTS.md: append at 0.1 gave +2.6 "
                            "mCA / -0.9 clean over 3 seeds)", choices=("replace", "append"))
    teacher_view: str = opt("cached", "the images the soft targets come from: cached (the teacher's "
                            "outputs on the uncropped training images, plain and mirrored, computed "
                            "once: a crop gets its uncropped image's target) or same (the teacher "
                            "runs every step on the same crop and flip the student sees: consistent "
                            "teaching, Beyer et al. 2022; a teacher forward per step). Either way a "
                            "perturbed image's target is as augment_target says", choices=("cached", "same"))
    augment_target: str = opt("clean", "teacher output used as the soft target of a perturbed "
                              "image: clean (cached, Hendrycks-style clean soft labels) or perturbed "
                              "(teacher run on the perturbed image)", choices=("clean", "perturbed"))
    allow_eval_corruptions: bool = opt(False, "allow distill.augment to name evaluated common "
                                       "corruptions (the report then flags the robustness figures)")
    feature_layers: list[str] = opt([], "fitnets / attention: feature maps to match, as "
                                    "'student_module:teacher_module' (names from named_modules() of "
                                    "each network, e.g. '6:6' for the digits models); the teacher "
                                    "then runs on every batch")
    hint_weight: float = opt(1.0, "fitnets: weight of the hint loss (MSE of regressed student "
                             "features to teacher features, summed over layer pairs)", min=0.0)
    at_beta: float = opt(1000.0, "attention: beta of attention transfer; each layer pair weighs "
                         "beta / 2 (the paper's 1e3)", min=0.0)
    js_weight: float = opt(12.0, "augmix_js: weight lambda of the Jensen-Shannon consistency term "
                           "(the paper's 12)", min=0.0)
    adv_epsilon: float = opt(8.0, "ard / rslad: L-inf radius of the PGD examples the student trains "
                             "on, in pixel levels (/255)", min=0.0, max=64.0)
    adv_step_size: float = opt(2.0, "ard / rslad: PGD step in pixel levels (/255)", min=0.0, max=64.0)
    adv_steps: int = opt(10, "ard / rslad: PGD iterations per batch (each costs a student forward "
                         "and backward)", min=1, max=100)


@dataclass
class ExportConfig:
    preset: str = opt("fp32", "export preset: a file in export/ (see `edgekd presets`) or the path of "
                      "one; its [export] keys are the defaults of this section")
    opset: int = opt(17, "ONNX opset (>= 17)", min=17, max=23)
    parity_atol: float = opt(1e-3, "max |logit difference| allowed between torch and ONNX",
                             min=0.0)
    parity_samples: int = opt(128, "held-out images used for the parity check", min=1)
    runtimes: list[str] = opt(list(artifacts.DEFAULT_RUNTIMES), "runtimes to make artifacts for: "
                              "onnxruntime (.onnx, .ort), executorch (ExecuTorch programs for XNNPACK, "
                              "student.fp32.pte and student.int8.pte; needs pip install -e "
                              "'.[executorch]'); a device profile's runtimes are added",
                              choices=artifacts.runtime_names())
    pte_max_batch: int = opt(32, "ExecuTorch: the most images per call (the program's memory is planned "
                             "for it; longer batches run in chunks)", min=1, max=4096)
    pte_int8_min_agreement: float = opt(0.95, "ExecuTorch INT8: the least share of held-out images "
                                        "where it predicts the torch student's class", min=0.0, max=1.0)


@dataclass
class QuantizeConfig:
    preset: str = opt("int8-static-u8s8", "quantisation preset: a file in export/ (see `edgekd presets`) or "
                      "the path of one; its [quantize] keys are the defaults of this section. With "
                      "`edgekd build --device PROFILE` the profile's candidate presets are built instead")
    method: str = opt("static", "static (calibrated QDQ INT8), dynamic (int8 weights, activations "
                      "quantised at run time: ConvInteger / MatMulInteger), fp16 (float16 weights and "
                      "arithmetic, uint8 image in and float32 logits out kept; `edgekd quantize` only)",
                      choices=("static", "dynamic", "fp16"))
    calibrate_method: str = opt("minmax", "INT8 calibration: minmax, entropy, percentile",
                                choices=("minmax", "entropy", "percentile"))
    calib_samples: int = opt(0, "calibration images used (the first ones of the calibration split); "
                             "0 = all data.calib_samples", min=0)
    calib_percentile: float = opt(99.999, "percentile calibration: the percentile of |activation| kept",
                                  min=50.0, max=100.0)
    calib_num_bins: int = opt(2048, "entropy / percentile calibration: histogram bins", min=128, max=1_000_000)
    per_channel: bool = opt(True, "per-channel weight quantisation")
    activation_type: str = opt("uint8", "activation type of the QDQ model: uint8 (U8S8: on x86 without "
                               "VNNI onnxruntime runs it faster than fp32), or int8 (S8S8: ARM64, VNNI; "
                               "slower than fp32 on AVX2; benchmarks/RESULTS.md)", choices=("int8", "uint8"))
    reduce_range: bool = opt(True, "7-bit weights: avoids int16 saturation of onnxruntime's U8S8 "
                             "kernels on x86 CPUs without VNNI (AVX2); set false for ARM / VNNI targets")
    max_clean_drop: float = opt(0.01, "tolerance of an INT8 model against the fp32 student: clean accuracy "
                                "lost on the validation split (0.01 = 1 point)", min=0.0, max=1.0)
    max_perturbed_drop: float = opt(0.01, "tolerance on perturbed accuracy: mean accuracy lost on the "
                                    "validation images perturbed with quantize.tune_perturbations",
                                    min=0.0, max=1.0)
    search: bool = opt(True, "robustness-aware PTQ: when an INT8 model misses a tolerance, keep its most "
                       "sensitive nodes in float (ranked by onnxruntime's qdq_loss_debug on perturbed "
                       "images), the fewest that make the tolerances hold")
    max_float_nodes: int = opt(6, "the search keeps at most this many nodes in float", min=0, max=1000)
    tune_perturbations: list[str] = opt(["extra"], "perturbations of the tolerance check and the "
                                        "sensitivity search: Hendrycks' held-out validation corruptions "
                                        "(extra) by default, disjoint from the 15 evaluated ones")
    tune_severities: list[int] = opt([2, 4], "severities of the tolerance check")
    tune_images: int = opt(1000, "at most this many validation images in the tolerance check", min=16)
    qat: bool = opt(False, "quantisation-aware training (torchao PT2E, fine-tuned with the distillation "
                    "loss; pip install -e '.[qat]') when post-training quantisation with the search "
                    "still misses a tolerance")
    qat_epochs: int = opt(2, "QAT fine-tuning epochs", min=1, max=1000)
    qat_lr: float = opt(0.001, "QAT learning rate (SGD, cosine decay to 0): a fine-tuning rate, about "
                        "distill.lr / 100", min=0.0)


@dataclass
class MeasureConfig:
    latency_runs: int = opt(100, "timed runs at batch 1 per model", min=50)
    warmup_runs: int = opt(10, "untimed runs before timing", min=0)
    threads: int = opt(1, "intra-op threads for torch and onnxruntime during timing", min=1)
    # 64, not 256: on 2 CPU cores every model measured evaluates as fast or faster at 64 (onnxruntime
    # INT8 on one thread 9 % faster, as the perturbed sweep runs it while sets are generated; torch
    # fp32 10-30 %): the activations of 64 images stay in cache (benchmarks/RESULTS.md, issue 21)
    eval_batch_size: int = opt(64, "batch size for accuracy evaluation", min=1)


@dataclass
class RobustnessConfig:
    enabled: bool = opt(True, "run the perturbed-input sweep in `edgekd build`")
    perturbations: list[str] = opt(["all"], "perturbations to run: all, common, extra, missing, "
                                   "or names from `edgekd perturb list`")
    severities: list[int] = opt([1, 2, 3, 4, 5], "severities 1..5 to run")
    adversarial: bool = opt(True, "run FGSM / PGD-Linf (white-box on torch, transfer on ONNX)")
    epsilons: list[int] = opt([1, 2, 4, 8], "adversarial L-inf budgets in pixel levels (/255)")
    pgd_steps: int = opt(10, "PGD iterations (step = epsilon / 4)", min=1)
    seed: int = opt(0, "seed of every perturbation and attack", min=0, max=2**31 - 1)
    sample_images: int = opt(0, "0 = sweep every test image; else a seeded random subset of this "
                             "many test images for the perturbed and adversarial sweep (clean "
                             "accuracy still uses all; predictions.npz's sweep_index says which)",
                             min=0)
    shift_sets: dict[str, str] = opt({}, "the user's own held-out shifted data, NAME = path: ImageFolder "
                                     "folders / archives or .npz files with the training classes, each "
                                     "evaluated on every model, reported and gated (gate.max_shift_drop)")


@dataclass
class ComputeConfig:
    device: str = opt("auto", "where the teacher runs and the student trains: auto (cuda if "
                      "available), cpu, cuda; CPU builds are bit-reproducible, CUDA ones only close",
                      choices=("auto", "cpu", "cuda"))


@dataclass
class CacheConfig:
    dir: str = opt("", "root folder of the on-disk cache: perturbed test sets in DIR/perturbed, the "
                   "teacher's outputs in DIR/teacher-outputs (content-addressed: safe to delete); "
                   "empty = ~/.cache/edgekd ($XDG_CACHE_HOME/edgekd), 'none' disables it")


@dataclass
class DeployConfig:
    device: str = opt("", "device profile the build is for (`edgekd devices`; a name, the path of a .toml "
                      "profile, or host = this machine, its ISA detected): every INT8 preset the profile "
                      "lists is built and measured and the fastest that passes the gate is deployed as "
                      "the INT8 model; empty = quantize.preset alone (`edgekd build --device`)")


@dataclass
class BuildConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    # Gate policy lives in its own section; its schema is owned by edgekd/gate/policy.py.
    gate: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f for f in dataclasses.fields(BuildConfig)}

# Renamed keys, read for one more release: old "section.key" -> (new "section.key", what to know).
# A config that sets both is an error; the old one prints one warning line to stderr.
DEPRECATED = {
    "teacher.device": ("compute.device", "it also decides where the student trains"),
    "robustness.cache_dir": ("cache.dir", "the cache root: the folder layout changed, perturbed sets "
                             "now live in DIR/perturbed"),
    "robustness.max_images": ("robustness.sample_images", "the same seeded random subset of the test "
                              "images, renamed apart from edgekd bundle --first-images"),
}


def _apply_deprecated(raw: dict, where: str, warn: bool) -> dict:
    """``raw`` with each deprecated key moved to its new name (a copy: ``raw`` is not changed)."""
    out = dict(raw)
    for old, (new, note) in DEPRECATED.items():
        o_sec, o_key = old.split(".")
        n_sec, n_key = new.split(".")
        if not isinstance(out.get(o_sec), dict) or o_key not in out[o_sec]:
            continue
        target = out.get(n_sec, {})
        if not isinstance(target, dict):
            continue  # the section check of from_dict reports it
        if n_key in target:
            raise ConfigError(f"{where}: both {old} (deprecated) and {new} are set; keep {new}")
        out[o_sec] = {k: v for k, v in out[o_sec].items() if k != o_key}
        out[n_sec] = {**(out[o_sec] if n_sec == o_sec else target), n_key: raw[o_sec][o_key]}
        if warn:
            print(f"edgekd: warning: {old} is deprecated; use {new} ({note})", file=sys.stderr)
    return out


def from_dict(raw: dict, where: str = "config", *, warn: bool = True) -> BuildConfig:
    """Validate a nested dict (as read from TOML) into a :class:`BuildConfig`. Deprecated keys
    (:data:`DEPRECATED`) are read under their new names, with a warning on stderr unless ``warn``
    is false."""
    raw = _apply_deprecated(raw, where, warn)
    cfg = BuildConfig()
    _apply_presets(cfg, raw, where)
    for section, body in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}]; valid: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: [{section}] must be a table of keys")
        if section == "gate":
            cfg.gate = dict(body)  # validated by gate.load_policy, which owns its schema
            continue
        target = getattr(cfg, section)
        for key, value in check_table(body, type(target), where, section).items():
            setattr(target, key, value)
    from .config_checks import cross_checks  # the rules across keys and sections

    cross_checks(cfg, where)
    return cfg


def _apply_presets(cfg: BuildConfig, raw: dict, where: str) -> None:
    """The defaults of [export] and [quantize] from the presets they name (export/*.toml); the
    section's own keys, applied after, win."""
    from .presets import SECTIONS, load_preset

    for section in SECTIONS:
        body = raw.get(section) if isinstance(raw.get(section), dict) else {}
        target = getattr(cfg, section)
        name = check_table({"preset": body.get("preset", target.preset)}, type(target), where, section)["preset"]
        if all(k in body for k in table_keys(type(target)) if k != "preset"):
            target.preset = name  # a complete section (a stored config): the preset adds nothing
            continue
        try:
            preset = load_preset(name, section)
        except ConfigError as e:
            raise ConfigError(f"{where}: {section}.preset: {e}") from None
        for key, value in check_table(preset.table, type(target), preset.source, section).items():
            setattr(target, key, value)
        target.preset = name


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"distill.epochs=0"`` -> ``("distill", "epochs", 0)``; the value is read as TOML."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    return section, key.strip(), parse_value(raw)


def parse_value(raw: str) -> Any:
    """A ``--set`` value read as TOML (``3``, ``0.5``, ``[1, 2]``, ``false``); bare words are
    strings, so ``--set compute.device=cpu`` needs no quotes."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None,
                base_where: str = "defaults") -> BuildConfig:
    """Read a TOML file (or start from ``base``, a stored config dict, or the defaults), apply
    overrides, validate. Overrides win over the file, also when one of them uses a deprecated name
    and the other the new one."""
    raw: dict = {k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()}
    where = base_where
    if path is not None:
        from .files import read_toml

        p = Path(path)
        where = str(p)
        raw = read_toml(p, f"config file {p} does not exist")
        _resolve_paths(raw, p.parent)
    raw = _apply_deprecated(raw, where, warn=base is None)
    for text in overrides:
        section, key, value = parse_override(text)
        if f"{section}.{key}" in DEPRECATED:
            new, note = DEPRECATED[f"{section}.{key}"]
            print(f"edgekd: warning: {section}.{key} is deprecated; use {new} ({note})", file=sys.stderr)
            section, key = new.split(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {text}: [{section}] is not a table")
        raw[section][key] = value
    if overrides:
        where = "--set" if path is None and base is None else f"{where} with --set overrides"
    return from_dict(raw, where, warn=False)


# file paths: relative ones in a config file are relative to that file's folder (--set ones to
# the working directory), so a recipe runs from anywhere
PATH_KEYS = (("data", "path"), ("data", "test_path"), ("teacher", "weights"), ("teacher", "meta"),
             ("cache", "dir"))
# a device profile or preset named by path (a name is looked up among the built-in ones)
NAME_OR_PATH_KEYS = (("export", "preset"), ("quantize", "preset"), ("deploy", "device"))
# the deprecated names of path keys are paths too
_ALL_PATH_KEYS = PATH_KEYS + tuple(tuple(old.split(".")) for old, (new, _) in DEPRECATED.items()
                                   if tuple(new.split(".")) in PATH_KEYS)


# tables of NAME = path
PATH_TABLE_KEYS = (("robustness", "shift_sets"),)


def _resolve_paths(raw: dict, base: Path) -> None:
    def resolved(value):
        if isinstance(value, str) and value and value != "none" and not Path(value).is_absolute() \
                and ":" not in value:
            return str(base / value)
        return value

    for section, key in _ALL_PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if value is not None:
            raw[section][key] = resolved(value)
    for section, key in PATH_TABLE_KEYS:
        table = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(table, dict):
            raw[section][key] = {name: resolved(v) for name, v in table.items()}
    for section, key in NAME_OR_PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and (value.endswith(".toml") or "/" in value) and not Path(value).is_absolute():
            raw[section][key] = str(base / value)


def describe() -> str:
    """Every option with its default and help, as TOML (used for the example config)."""
    lines = ["# edgekd build configuration; every key is optional (defaults shown).", ""]
    for name, f in SECTIONS.items():
        if name == "gate":
            continue
        section = f.default_factory()
        lines.append(f"[{name}]")
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            lines.append(f"{sf.name} = {_toml(value)}  # {sf.metadata['help']}")
        lines.append("")
    lines.append("# Deprecated names, still read (with a warning) for one release:")
    lines += [f"#   {old} -> {new}" for old, (new, _) in DEPRECATED.items()]
    lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)
