import pytest

from edgekd.config import BuildConfig, describe, load_config, parse_override
from edgekd.errors import ConfigError


def test_defaults_reproduce_the_embedded_build():
    cfg = load_config(None)
    assert cfg == BuildConfig()
    assert cfg.data.name == "digits" and cfg.teacher.weights == "" and cfg.distill.epochs > 0


def test_file_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[distill]\nepochs = 3\ntemperature = 2\n[teacher]\ndevice = "cpu"\n')
    cfg = load_config(p, ["distill.epochs=0", "robustness.severities=[1,3]", "teacher.device=cpu"])
    assert cfg.distill.epochs == 0
    assert cfg.distill.temperature == 2.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.robustness.severities == [1, 3]


@pytest.mark.parametrize("text, needle", [
    ("[distil]\nepochs = 1\n", "unknown section [distil]; valid: data, teacher"),
    ("[distill]\nepoch = 1\n", "unknown key distill.epoch; valid keys of [distill]: loss, epochs"),
    ("[distill]\nepochs = 'many'\n", "distill.epochs must be an integer, got 'many'"),
    ("[distill]\nalpha = 1.5\n", "distill.alpha = 1.5 must lie in [0.0, 1.0]"),  # both bounds: the range
    ("[teacher]\ndevice = 'tpu'\n", "teacher.device = 'tpu' is not one of auto, cpu, cuda"),
    ("[robustness]\nseverities = [0, 6]\n", "robustness.severities must lie in 1..5"),
    ("[distill\n", "is not valid TOML"),
    ("[distill]\ntemperature = inf\n", "distill.temperature must be a finite number"),
    ("[data]\nsplit_seed = -1\n", "data.split_seed = -1 must lie in [0, 2147483647]"),
    ("[distill]\nepochs = -1\n", "distill.epochs = -1 is below its minimum 0"),  # one bound: that bound
    ("[distill]\nalpha = true\n", "distill.alpha must be a number, got True"),
    ("[distill]\naugment = [1]\n", "distill.augment must be a string, got 1"),
    ("[robustness]\nperturbations = ['fgo']\n", "unknown perturbation 'fgo'"),
])
def test_errors_name_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs=3")
    assert parse_override("teacher.device=cpu") == ("teacher", "device", "cpu")
    assert parse_override("distill.alpha=0.5") == ("distill", "alpha", 0.5)


def test_example_config_is_valid_and_complete(tmp_path):
    from pathlib import Path

    example = Path(__file__).parent.parent / "edgekd.example.toml"
    assert load_config(example) == BuildConfig()
    # the committed example lists every option
    for line in describe().splitlines():
        if "=" in line:
            assert line.split("=")[0].strip() + " =" in example.read_text()
