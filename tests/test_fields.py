"""edgekd.fields: the one validator of TOML tables (config sections, gate policy, device profiles)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgekd.errors import ConfigError
from edgekd.fields import check_table, get_path, is_number, show_value, spec, table_keys


@dataclass(frozen=True)
class Limits:
    max_ms: float | None = spec(None, "latency budget", gt=0, off=True, expect="a positive number")
    floor: float | None = spec(None, "a floor", min=0, max=1, off=True)


@dataclass(frozen=True)
class Board:
    name: str = spec("", "name")
    mode: str = spec("fast", "mode", choices=("fast", "slow"))
    threads: int = spec(1, "threads", min=1, max=256)
    runs: int = spec(10, "runs", min=10)
    scale: float = spec(1.0, "scale", max=8.0)
    pinned: bool = spec(False, "pinned")
    cpus: list[int] = spec([], "cpu ids", min=0, expect="a list of CPU ids (integers >= 0)",
                           normalize=lambda v: sorted(set(v)))
    tags: tuple[str, ...] = spec(("a",), "tags")
    limits: Limits = spec(Limits, "[limits]")
    per_model: dict[str, Limits] = spec({}, "[per_model.NAME]")
    source: str = spec("", "set by the loader", internal=True, compare=False)


def check(raw: dict) -> Board:
    return Board(**check_table(raw, Board, "b.toml"))


def test_valid_values_are_converted():
    b = check({"threads": 4, "scale": 2, "cpus": [3, 1, 3], "tags": "x", "limits": {"max_ms": 5},
               "per_model": {"m": {"floor": 0.5, "max_ms": False}}})
    assert b.threads == 4 and b.scale == 2.0 and isinstance(b.scale, float)
    assert b.cpus == [1, 3] and b.tags == ("x",)  # a single value stands for a one-item list
    assert b.limits == Limits(max_ms=5.0) and b.per_model == {"m": Limits(floor=0.5)}
    assert check({}) == Board() and Board().limits is not Board().limits  # fresh defaults
    assert table_keys(Board)[-1] == "per_model"  # internal fields are no keys


@pytest.mark.parametrize("raw, sentence", [
    ({"thread": 2}, "unknown key 'thread'; valid keys: name, mode, threads, runs, scale, pinned, cpus, "
                    "tags, limits, per_model"),
    ({"source": "x"}, "unknown key 'source'"),
    ({"limits": {"max": 1}}, "unknown key limits.max; valid keys of [limits]: max_ms, floor"),
    ({"per_model": {"m": {"x": 1}}}, "unknown key per_model.m.x; valid keys of [per_model.m]: max_ms, floor"),
    ({"threads": "four"}, "threads must be an integer, got 'four'"),
    ({"threads": True}, "threads must be an integer, got True"),
    ({"threads": 2.0}, "threads must be an integer, got 2.0"),
    ({"threads": 0}, "threads = 0 must lie in [1, 256]"),
    ({"runs": 5}, "runs = 5 is below its minimum 10"),
    ({"scale": 9}, "scale = 9.0 is above its maximum 8.0"),
    ({"scale": float("nan")}, "scale must be a finite number, got nan"),
    ({"scale": "2"}, "scale must be a number, got '2'"),
    ({"name": 5}, "name must be a string, got 5"),
    ({"pinned": "yes"}, "pinned must be true or false, got 'yes'"),
    ({"mode": "lax"}, "mode = 'lax' is not one of fast, slow"),
    ({"cpus": [-1]}, "cpus must be a list of CPU ids (integers >= 0), got [-1]"),
    ({"tags": [1]}, "tags must be a string, got 1"),
    ({"limits": 5}, "limits must be a table with keys max_ms, floor"),
    ({"limits": {"max_ms": 0}}, "limits.max_ms must be a positive number or false to turn it off, got 0"),
    ({"limits": {"max_ms": float("inf")}}, "limits.max_ms must be a positive number or false to turn it off"),
    ({"limits": {"floor": 2}}, "limits.floor = 2.0 must lie in [0, 1]"),
    ({"per_model": 5}, "per_model must be a table of [per_model.NAME] tables"),
    ({"per_model": {"m": 5}}, "per_model.m must be a table with keys max_ms, floor"),
])
def test_errors_are_one_sentence_naming_where_and_the_key(raw, sentence):
    with pytest.raises(ConfigError) as e:
        check(raw)
    assert str(e.value).startswith(f"b.toml: {sentence}"), str(e.value)


def test_false_means_off_only_where_allowed():
    assert check({"limits": {"max_ms": False, "floor": None}}).limits == Limits()
    with pytest.raises(ConfigError, match="threads must be an integer, got False"):
        check({"threads": False})


def test_value_helpers():
    assert is_number(1) and is_number(2.5) and not is_number(True) and not is_number(float("inf"))
    assert [show_value(v) for v in (-1.0, "3.2", True, None, {}, [])] == [
        "-1.0", '"3.2"', "true", "null", "an object", "a list"]
    assert show_value("x" * 50).endswith("...") and len(show_value("x" * 50)) == 40
    assert get_path({"a": {"b": 3}}, "a.b") == 3 and get_path({"a": 1}, "a.b") is None
