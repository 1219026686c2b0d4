"""The one table of what a build holds: model ids, their files, formats, precisions and runtimes.

    ARTIFACTS.get("student_int8").file            # -> "student.int8.onnx"
    [a.id for a in build_models()]                # -> ["teacher", "student_torch", "student_fp32", ...]
    deployed("int8", "ort").id                    # -> "student_int8_ort"
    REPORT_JSON, GATE_JSON, PREDICTIONS           # the build's other files

Every other module iterates over this table or looks an entry up; nothing else spells a model id
or an artifact's file name. A new artifact (an fp16 model, a second runtime's program) is one
``_add(...)`` line here plus the stage that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .registry import Registry

# the build's files that are not models (the manifest's name is owned by edgekd.files.MANIFEST)
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
GATE_JSON = "gate.json"
PREDICTIONS = "predictions.npz"


@dataclass(frozen=True)
class Artifact:
    id: str                 # the model id in report.json, predictions.npz, gate.json and bundles
    kind: str               # "teacher" or "student"
    file: str | None        # file name in the build directory (None: the teacher is not copied)
    format: str             # "torch", "onnx", "ort" or "pte" (ExecuTorch program)
    precision: str          # "fp32" or "int8"
    runtime: str            # the runtime that runs it (edgekd.runtimes.RUNTIMES name)
    measured: bool          # scored by the build's harness (clean, perturbed, latency)
    memory: bool            # peak memory measured in a fresh process by the build
    deployable: bool        # can be shipped in a device bundle
    color: str              # its colour in report.html's plots

    @property
    def suffix(self) -> str:
        return "" if self.file is None else self.file[self.file.index("."):]


ARTIFACTS: Registry[Artifact] = Registry("model id")
TEACHER, STUDENT_TORCH, STUDENT_FP32, STUDENT_INT8, STUDENT_INT8_ORT, STUDENT_FP16 = (
    "teacher", "student_torch", "student_fp32", "student_int8", "student_int8_ort", "student_fp16")
STUDENT_FP32_PTE, STUDENT_INT8_PTE = "student_fp32_pte", "student_int8_pte"
# the runtimes whose artifacts a build makes unless the config or the device profile names more
DEFAULT_RUNTIMES = ("onnxruntime",)


def _add(a: Artifact) -> None:
    ARTIFACTS.add(a.id, a)


_add(Artifact(TEACHER, "teacher", None, "torch", "fp32", "torch", True, False, False, "#555555"))
_add(Artifact(STUDENT_TORCH, "student", "student.pt", "torch", "fp32", "torch", True, False, False, "#9467bd"))
_add(Artifact(STUDENT_FP32, "student", "student.fp32.onnx", "onnx", "fp32", "onnxruntime", True, True, True,
              "#1f77b4"))
_add(Artifact(STUDENT_INT8, "student", "student.int8.onnx", "onnx", "int8", "onnxruntime", True, True, True,
              "#d62728"))
_add(Artifact(STUDENT_INT8_ORT, "student", "student.int8.ort", "ort", "int8", "onnxruntime", False, False,
              True, "#ff7f0e"))
# ExecuTorch programs for the XNNPACK backend (edgekd.executorch_export), made when export.runtimes or
# the device profile's runtimes name executorch and the [executorch] extra is installed
_add(Artifact(STUDENT_FP32_PTE, "student", "student.fp32.pte", "pte", "fp32", "executorch", True, True, True,
              "#17becf"))
_add(Artifact(STUDENT_INT8_PTE, "student", "student.int8.pte", "pte", "int8", "executorch", True, True, True,
              "#8c564b"))
# made by `edgekd quantize` with an fp16 preset, not by the build (its ONNX Runtime CPU kernels are
# slower than fp32 on x86: benchmarks/RESULTS.md)
_add(Artifact(STUDENT_FP16, "student", "student.fp16.onnx", "onnx", "fp16", "onnxruntime", False, False, False,
              "#2ca02c"))


def get(model_id: str) -> Artifact:
    return ARTIFACTS.get(model_id)


def all_artifacts() -> list[Artifact]:
    return [ARTIFACTS.get(n) for n in ARTIFACTS]


def runtime_names() -> tuple[str, ...]:
    """The runtimes of deployable artifacts ("onnxruntime", "executorch"): what export.runtimes and
    a device profile's runtimes may name."""
    return tuple(dict.fromkeys(a.runtime for a in model_files()))


def _made(a: Artifact, runtimes: tuple[str, ...] | None) -> bool:
    return a.format == "torch" or a.runtime in (DEFAULT_RUNTIMES if runtimes is None else runtimes)


def build_models(runtimes: tuple[str, ...] | None = None) -> list[Artifact]:
    """The models a build with these ``runtimes`` scores (report.json ``models``), teacher first."""
    return [a for a in all_artifacts() if a.measured and _made(a, runtimes)]


def memory_models(runtimes: tuple[str, ...] | None = None) -> list[Artifact]:
    return [a for a in all_artifacts() if a.memory and _made(a, runtimes)]


def runtime_files(runtime: str) -> list[Artifact]:
    """The measured artifacts of one file runtime, fp32 first (what its export stage writes)."""
    return [a for a in all_artifacts() if a.runtime == runtime and a.measured]


def gated_int8(runtimes: tuple[str, ...]) -> list[str]:
    """The INT8 model of each runtime: what a build gates by default (gate.models)."""
    return [a.id for a in build_models(runtimes) if a.precision == "int8" and a.kind == "student"]


def plotted_formats() -> tuple[str, ...]:
    """File formats a build measures (latency, memory): the points of report.html's Pareto plot."""
    return tuple(dict.fromkeys(a.format for a in model_files() if a.measured))


def model_files() -> list[Artifact]:
    """The deployable model files of a build (what ``edgekd bench DIR`` measures), in report order."""
    return [a for a in all_artifacts() if a.deployable]


def by_file(name: str) -> Artifact | None:
    return next((a for a in all_artifacts() if a.file == name), None)


def quantized_file(precision: str) -> str:
    """The file name of the student at a reduced ``precision`` ("int8", "fp16")."""
    return next(a.file for a in all_artifacts() if a.kind == "student" and a.format == "onnx"
                and a.precision == precision)


def deployed(precision: str, model_format: str) -> Artifact:
    """The deployable artifact with this precision and file format (a device profile's choice)."""
    for a in model_files():
        if a.precision == precision and a.format == model_format:
            return a
    valid = ", ".join(f"{a.precision}/{a.format}" for a in model_files())
    raise ConfigError(f"no deployable artifact is {precision} in the {model_format} format; valid: {valid}")


def model_suffixes() -> tuple[str, ...]:
    """File suffixes of deployable models ('.onnx', '.ort', '.pte')."""
    return tuple(dict.fromkeys("." + a.file.rsplit(".", 1)[1] for a in model_files()))
