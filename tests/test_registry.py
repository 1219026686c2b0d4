"""edgekd.registry.Registry: name -> object tables whose errors list the valid names."""

from __future__ import annotations

import pytest

from edgekd.errors import ConfigError, EdgekdError
from edgekd.registry import Registry


def _fresh() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("zeta")
    def zeta():
        return "z"

    reg.add("alpha", 1)
    reg.add("mid", [2])
    return reg


def test_register_returns_the_object_and_get_finds_it():
    reg: Registry = Registry("widget")

    def f():
        return 42

    assert reg.register("f")(f) is f
    assert reg.get("f") is f and reg.get("f")() == 42
    obj = object()
    assert reg.add("o", obj) is obj and reg.get("o") is obj


def test_names_iter_and_contains_keep_registration_order():
    reg = _fresh()
    assert reg.names() == ["zeta", "alpha", "mid"]  # registration order, not sorted
    assert list(reg) == reg.names()
    assert "alpha" in reg and "zeta" in reg
    assert "beta" not in reg and 1 not in reg and None not in reg
    assert reg.get("zeta")() == "z" and reg.get("mid") == [2]


def test_names_is_a_copy():
    reg = _fresh()
    reg.names().append("intruder")
    assert "intruder" not in reg and reg.names() == ["zeta", "alpha", "mid"]


def test_double_registration_raises_and_keeps_the_first():
    reg = _fresh()
    with pytest.raises(ValueError, match="widget 'alpha' registered twice"):
        reg.add("alpha", 99)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("zeta")(lambda: "other")
    assert reg.get("alpha") == 1 and reg.get("zeta")() == "z"
    assert reg.names() == ["zeta", "alpha", "mid"]


def test_unknown_name_is_a_config_error_listing_valid_names_in_order():
    reg = _fresh()
    with pytest.raises(ConfigError) as e:
        reg.get("alpah")
    assert str(e.value) == "unknown widget 'alpah'; valid: zeta, alpha, mid"
    assert isinstance(e.value, EdgekdError) and e.value.exit_code == 2
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no KeyError chained


def test_empty_registry():
    reg: Registry = Registry("thing")
    assert reg.names() == [] and list(reg) == [] and "x" not in reg
    with pytest.raises(ConfigError, match=r"unknown thing 'x'; valid: $"):
        reg.get("x")


def test_registries_are_independent():
    a: Registry = Registry("a")
    b: Registry = Registry("b")
    a.add("same", 1)
    b.add("same", 2)  # the same name in another registry is fine
    assert a.get("same") == 1 and b.get("same") == 2


def test_remove_returns_the_entry_and_frees_the_name():
    reg = _fresh()
    assert reg.remove("alpha") == 1
    assert "alpha" not in reg and reg.names() == ["zeta", "mid"]
    with pytest.raises(ConfigError, match="valid: zeta, mid$"):
        reg.get("alpha")
    reg.add("alpha", 3)  # registering it again is not a double registration
    assert reg.get("alpha") == 3 and reg.names() == ["zeta", "mid", "alpha"]
