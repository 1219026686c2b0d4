"""Typed fields with metadata, and the one validator of the TOML tables users write.

Every table a user writes (a build config section, the gate policy and its budgets, a device
profile and its budgets) is a dataclass whose fields carry their rules::

    @dataclass(frozen=True)
    class Board:
        threads: int = spec(1, "intra-op threads", min=1, max=256)
        max_ms: float | None = spec(None, "latency budget", gt=0, off=True, expect="a positive number")

    Board(**check_table({"threads": 4}, Board, where="board.toml"))   # -> Board(threads=4, max_ms=None)

The type says what a value must be: ``bool``, ``int``, ``float`` (an integer is taken; finite),
``str``, ``list[T]`` / ``tuple[T, ...]`` (a single value stands for a one-item list), a dataclass (a
sub-table, checked the same way), ``dict[str, dataclass]`` (a table of named sub-tables) or
``dict[str, T]`` for a scalar T (a table of ``NAME = value`` entries). The
metadata of :func:`spec` adds: ``choices``; ``min`` / ``max`` (inclusive) and ``gt`` (exclusive)
bounds, applied to each item of a list; ``off``: ``false`` means off (None); ``expect``: one phrase
for every invalid value (``"a fraction in [0, 1]"``); ``normalize``: a function of the checked value
(a ValueError it raises is reported with ``expect``); ``internal``: not a key of the table.

Errors are a :class:`ConfigError`, one sentence that starts with ``where`` (the file, or the file
and section) and names the key::

    board.toml: unknown key 'thread'; valid keys: threads, max_ms
    board.toml: unknown key budgets.max_latency; valid keys of [budgets]: max_latency_p90_ms, ...
    board.toml: threads must be an integer, got 'four'
    board.toml: threads = 0 must lie in [1, 256]          (one bound: "is below its minimum 1")
    board.toml: mode = 'lax' is not one of strict, confident
    board.toml: max_ms must be a positive number or false to turn it off, got 0

Also here: :func:`is_number`, :func:`show_value` and :func:`get_path`, the small helpers the
validators of JSON documents (report.json, device results) share.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin, get_type_hints

from .errors import ConfigError


def spec(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, gt: float | None = None, off: bool = False, expect: str | None = None,
         normalize: Callable[[Any], Any] | None = None, internal: bool = False, compare: bool = True) -> Any:
    """A dataclass field with a default (a dataclass type: a fresh instance of it), one-line help
    and the rules :func:`check_table` applies (see the module docstring)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "gt": gt, "off": off,
            "expect": expect, "normalize": normalize, "internal": internal}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=meta, compare=compare)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta,
                                 compare=compare)
    return dataclasses.field(default=default, metadata=meta, compare=compare)


def table_keys(cls: type) -> tuple[str, ...]:
    """The keys a table of ``cls`` may hold, in field order."""
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


def check_table(raw: Any, cls: type, where: str, table: str = "") -> dict[str, Any]:
    """The checked values of the keys ``raw`` holds (pass them to ``cls(**...)``).

    ``table``: the dotted name of this table inside the file ("" at the top level, "distill",
    "budgets.student_int8"); errors name keys by it. Raises :class:`ConfigError`.
    """
    valid = table_keys(cls)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {table or 'the file'} must be a table with keys {', '.join(valid)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key not in valid:
            listed = f"valid keys of [{table}]" if table else "valid keys"
            name = f"{table}.{key}" if table else repr(key)
            raise ConfigError(f"{where}: unknown key {name}; {listed}: {', '.join(valid)}")
        out[key] = check_value(value, fields[key], hints[key], f"{table}.{key}" if table else key, where)
    return out


def check_value(value: Any, f: dataclasses.Field, hint: Any, key: str, where: str) -> Any:
    """One value of field ``f`` (type ``hint``), named ``key`` in errors."""
    meta = f.metadata
    if meta.get("off") and (value is False or value is None):
        return None
    try:
        checked = _check(value, _strip_optional(hint), meta, key, where)
        if meta.get("normalize"):
            checked = meta["normalize"](checked)
        return checked
    except (_Invalid, ValueError) as e:
        if meta.get("expect"):
            off = " or false to turn it off" if meta.get("off") else ""
            raise ConfigError(f"{where}: {key} must be {meta['expect']}{off}, got {value!r}") from None
        raise ConfigError(f"{where}: {e}") from None


class _Invalid(Exception):
    """An invalid value: the sentence without ``where``."""


_WHAT = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _check(value: Any, hint: Any, meta: Mapping, key: str, where: str) -> Any:
    origin = get_origin(hint)
    if origin in (list, tuple):
        item = get_args(hint)[0]
        items = value if isinstance(value, (list, tuple)) else [value]
        checked = [_scalar(v, item, meta, key) for v in items]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        sub = get_args(hint)[1]
        if not dataclasses.is_dataclass(sub):  # a table of NAME = value
            if not isinstance(value, Mapping):
                raise _Invalid(f"{key} must be a table of NAME = {_WHAT[sub].removeprefix('a ').removeprefix('an ')} "
                              f"entries, got {value!r}")
            return {str(name): _scalar(v, sub, meta, f"{key}.{name}") for name, v in value.items()}
        if not isinstance(value, Mapping):
            raise _Invalid(f"{key} must be a table of [{key}.NAME] tables")
        return {str(name): sub(**check_table(body, sub, where, f"{key}.{name}")) for name, body in value.items()}
    if dataclasses.is_dataclass(hint):
        return hint(**check_table(value, hint, where, key))
    return _scalar(value, hint, meta, key)


def _scalar(value: Any, typ: type, meta: Mapping, key: str) -> Any:
    if typ not in _WHAT:
        raise TypeError(f"{key}: fields of type {typ!r} are not supported")
    if typ in (int, float):  # a bool is no number; a float field takes an integer
        ok = isinstance(value, (int, float) if typ is float else int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, typ)
    if not ok:
        raise _Invalid(f"{key} must be {_WHAT[typ]}, got {value!r}")
    if typ is float:
        value = float(value)
        if not math.isfinite(value):
            raise _Invalid(f"{key} must be a finite number, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise _Invalid(f"{key} = {value!r} is not one of {', '.join(map(str, choices))}")
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise _Invalid(f"{key} = {value!r} must lie in [{lo}, {hi}]")
    if lo is not None and value < lo:
        raise _Invalid(f"{key} = {value!r} is below its minimum {lo}")
    if hi is not None and value > hi:
        raise _Invalid(f"{key} = {value!r} is above its maximum {hi}")
    if gt is not None and not value > gt:
        raise _Invalid(f"{key} = {value!r} must be greater than {gt}")
    return value


# ---------------------------------------------------------------------------------------------
# value helpers of the JSON-document validators
# ---------------------------------------------------------------------------------------------

def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def show_value(v: Any) -> str:
    """A value of a JSON document as an error sentence shows it: ``-1.0``, ``"3.2"``, ``true``,
    ``an object``, ``a list``; at most 40 characters."""
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    text = json.dumps(v) if v is None or isinstance(v, (bool, int, float, str)) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def get_path(node: Any, path: str) -> Any:
    """``node["a"]["b"]`` for ``"a.b"``; None where a part is missing or not an object."""
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
