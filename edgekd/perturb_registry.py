"""The perturbation registry and the one list of the 15 common corruptions; no numpy, so the gate
and the report can import the names without the perturbation code.

    @perturbation("gaussian_noise", "common", "x + N(0, sigma) per pixel and channel")
    def gaussian_noise(u8, c, rng): ...     # (uint8 (N, H, W, C), table row, Rng) -> [0, 1] floats or uint8

Kernels register where they are defined (``_corruptions.py``); :mod:`edgekd.perturb` imports that
module and reads everything from ``PERTURBATIONS``. A perturbation defined elsewhere registers the
same way (family ``extra`` or ``missing``, with its severity ``rows`` when ``perturb.TABLES`` has
none) and is then resolvable by name, part of its family's group and listed by ``edgekd perturb``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .registry import Registry

# The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019) by category, in the benchmark's
# order; mCA is their mean accuracy over severities 1..5.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
COMMON: tuple[str, ...] = tuple(n for names in CATEGORIES.values() for n in names)
FAMILIES: tuple[str, ...] = ("common", "extra", "missing")  # common: the 15 above, nothing else
# where frost's texture comes from (perturb.frost_source): the one description of each, for the reports
FROST_SOURCES: dict[str, str] = {
    "photos": "the reference's frost photographs (hendrycks/robustness, Apache-2.0, from the "
              "imagecorruptions wheel)",
    "synthetic": "a SYNTHETIC texture (plasma cover + crystal ridges): the frost photographs are missing (or altered) "
                 "from this install (pip install --no-deps imagecorruptions==1.1.2), so frost is not "
                 "comparable with published figures"}
CIFAR_TABLE_MAX_PX = 64  # images up to this height use CIFAR-10-C's table (perturb.table_for), larger ImageNet-C's


@dataclass(frozen=True)
class Perturbation:
    name: str
    family: str  # "common" | "extra" | "missing"
    fn: Callable  # fn(images uint8 (N, H, W, C), table row, Rng) -> floats in [0, 1] or uint8
    description: str  # one line; says where it approximates the reference
    # severity rows 1..5, one tuple for every table or {table name: rows}; None: perturb.TABLES has them
    rows: tuple | Mapping[str, tuple] | None = None
    # True: fn takes the rows of several severities (a list) and returns one output per row, sharing
    # the work they have in common (perturb.apply_severities); False: fn takes one row
    many: bool = False
    # N * H * W * C values per chunk of images this kernel runs fastest on (perturb.apply_severities);
    # None: perturb's default. The bytes never depend on it (each image's output is its own)
    chunk_elements: int | None = None


PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def perturbation(name: str, family: str, description: str, *, rows: tuple | Mapping[str, tuple] | None = None,
                 many: bool = False, chunk_elements: int | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated kernel as perturbation ``name`` of ``family``; returns it unchanged.
    ``many=True``: the kernel takes a list of severity rows and returns a list of outputs.
    ``chunk_elements``: the size of the chunks of images it is given, when not perturb's default."""
    if family not in FAMILIES:
        raise ValueError(f"perturbation {name!r}: family {family!r} is not one of {', '.join(FAMILIES)}")
    if (family == "common") != (name in COMMON):
        raise ValueError(f"perturbation {name!r}: the common family is exactly the 15 corruptions of "
                         "COMMON (the mCA benchmark); register others as extra or missing")
    if not description or "\n" in description:
        raise ValueError(f"perturbation {name!r}: the description must be one non-empty line")

    def deco(fn: Callable) -> Callable:
        PERTURBATIONS.add(name, Perturbation(name, family, fn, description, rows, many, chunk_elements))
        return fn

    return deco


def family_names(family: str) -> tuple[str, ...]:
    """The registered perturbations of one family: common in COMMON's order, the others in the
    order they registered."""
    if family == "common":
        return tuple(n for n in COMMON if n in PERTURBATIONS)
    return tuple(n for n in PERTURBATIONS if PERTURBATIONS.get(n).family == family)


def groups() -> dict[str, tuple[str, ...]]:
    """The group words of ``perturb.resolve``: all (common + extra + missing) and each family."""
    fams = {f: family_names(f) for f in FAMILIES}
    return {"all": tuple(n for f in FAMILIES for n in fams[f]), **fams}
