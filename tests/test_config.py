import pytest

from edgekd.config import BuildConfig, describe, load_config, parse_override
from edgekd.errors import ConfigError


def test_defaults_reproduce_the_embedded_build():
    cfg = load_config(None)
    assert cfg == BuildConfig()
    assert cfg.data.name == "digits" and cfg.teacher.weights == "" and cfg.distill.epochs > 0


def test_file_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[distill]\nepochs = 3\ntemperature = 2\n[compute]\ndevice = "cpu"\n')
    cfg = load_config(p, ["distill.epochs=0", "robustness.severities=[1,3]", "compute.device=cpu"])
    assert cfg.distill.epochs == 0
    assert cfg.distill.temperature == 2.0 and isinstance(cfg.distill.temperature, float)
    assert cfg.robustness.severities == [1, 3]


@pytest.mark.parametrize("text, needle", [
    ("[distil]\nepochs = 1\n", "unknown section [distil]; valid: data, teacher"),
    ("[distill]\nepoch = 1\n", "unknown key distill.epoch; valid keys of [distill]: loss, epochs"),
    ("[distill]\nepochs = 'many'\n", "distill.epochs must be an integer, got 'many'"),
    ("[distill]\nalpha = 1.5\n", "distill.alpha = 1.5 must lie in [0.0, 1.0]"),  # both bounds: the range
    ("[compute]\ndevice = 'tpu'\n", "compute.device = 'tpu' is not one of auto, cpu, cuda"),
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
    assert parse_override("compute.device=cpu") == ("compute", "device", "cpu")
    assert parse_override("distill.alpha=0.5") == ("distill", "alpha", 0.5)


def test_example_config_is_valid_and_complete(tmp_path):
    from pathlib import Path

    example = Path(__file__).parent.parent / "edgekd.example.toml"
    assert load_config(example) == BuildConfig()
    # the committed example lists every option
    for line in describe().splitlines():
        if "=" in line:
            assert line.split("=")[0].strip() + " =" in example.read_text()


# ---------------------------------------------------------------------------------------------
# [compute], [cache], robustness.sample_images and their deprecated names (issue 17 item 8)
# ---------------------------------------------------------------------------------------------

def test_new_sections_and_keys(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('[compute]\ndevice = "cpu"\n[cache]\ndir = "cache"\n[robustness]\nsample_images = 60\n')
    cfg = load_config(p)
    assert cfg.compute.device == "cpu" and cfg.robustness.sample_images == 60
    assert cfg.cache.dir == str(tmp_path / "cache")  # a path, relative to the config file
    assert not hasattr(cfg.teacher, "device") and not hasattr(cfg.robustness, "max_images")
    assert not hasattr(cfg.robustness, "cache_dir")
    assert capsys.readouterr().err == ""  # the new names do not warn
    d = BuildConfig()
    assert (d.compute.device, d.cache.dir, d.robustness.sample_images) == ("auto", "", 0)


def test_cache_dir_is_the_cache_root(tmp_path):
    from edgekd.cache import default_root
    from edgekd.robustness import perturbed_dir

    assert perturbed_dir(load_config(None, [f"cache.dir={tmp_path}"])) == tmp_path / "perturbed"
    assert perturbed_dir(load_config(None)) == default_root() / "perturbed"
    assert perturbed_dir(load_config(None, ["cache.dir=none"])) is None


@pytest.mark.parametrize("old, new, value, expect", [
    (("teacher", "device"), ("compute", "device"), "cpu", "cpu"),
    (("robustness", "max_images"), ("robustness", "sample_images"), 60, 60),
    (("robustness", "cache_dir"), ("cache", "dir"), "none", "none"),
])
def test_deprecated_key_works_with_one_warning(tmp_path, capsys, old, new, value, expect):
    import tomllib

    from edgekd.config import _toml

    text = f"[{old[0]}]\n{old[1]} = {_toml(value)}\n"
    assert tomllib.loads(text)
    p = tmp_path / "old.toml"
    p.write_text(text)
    for load in (lambda: load_config(p), lambda: load_config(None, [f"{old[0]}.{old[1]}={value}"])):
        cfg = load()
        assert getattr(getattr(cfg, new[0]), new[1]) == expect
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(f"edgekd: warning: {old[0]}.{old[1]} is deprecated; use {new[0]}.{new[1]} (")


def test_deprecated_messages():
    from edgekd.config import DEPRECATED

    assert DEPRECATED["teacher.device"][0] == "compute.device"
    assert "student trains" in DEPRECATED["teacher.device"][1]
    assert "DIR/perturbed" in DEPRECATED["robustness.cache_dir"][1]  # the layout changed
    assert DEPRECATED["robustness.max_images"][0] == "robustness.sample_images"


def test_teacher_device_warning_line(capsys):
    load_config(None, ["teacher.device=cpu"])
    assert capsys.readouterr().err == ("edgekd: warning: teacher.device is deprecated; use compute.device "
                                       "(it also decides where the student trains)\n")


def test_deprecated_cache_dir_is_a_path_relative_to_the_file(tmp_path, capsys):
    p = tmp_path / "old.toml"
    p.write_text('[robustness]\ncache_dir = "c"\n')
    assert load_config(p).cache.dir == str(tmp_path / "c")
    assert "DIR/perturbed" in capsys.readouterr().err


@pytest.mark.parametrize("text, overrides, names", [
    ('[teacher]\ndevice = "cpu"\n[compute]\ndevice = "cpu"\n', [], ("teacher.device", "compute.device")),
    ('[robustness]\nmax_images = 5\nsample_images = 5\n', [], ("robustness.max_images", "robustness.sample_images")),
    ('[robustness]\ncache_dir = ""\n[cache]\ndir = ""\n', [], ("robustness.cache_dir", "cache.dir")),
])
def test_old_and_new_key_together_is_an_error(tmp_path, text, overrides, names):
    p = tmp_path / "both.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    assert all(n in str(e.value) for n in names) and str(p) in str(e.value)


def test_from_dict_does_not_change_its_argument_and_can_stay_quiet(capsys):
    from edgekd.config import from_dict

    raw = {"teacher": {"device": "cpu"}, "robustness": {"max_images": 7}}
    cfg = from_dict(raw, warn=False)
    assert (cfg.compute.device, cfg.robustness.sample_images) == ("cpu", 7)
    assert raw == {"teacher": {"device": "cpu"}, "robustness": {"max_images": 7}}
    assert capsys.readouterr().err == ""
    # a stored config (manifest.json of a build) round-trips under the new names
    assert from_dict(cfg.to_dict()) == cfg and capsys.readouterr().err == ""


def test_config_command_lists_the_new_sections(capsys):
    from edgekd.cli import main

    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for needle in ("[compute]\ndevice = \"auto\"", "[cache]\ndir = \"\"", "sample_images = 0",
                   "#   teacher.device -> compute.device"):
        assert needle in out
    keys = [line.split(" = ")[0] for line in out.splitlines() if " = " in line and not line.startswith("#")]
    assert "max_images" not in keys and "cache_dir" not in keys
    assert "\ndevice" not in out.split("[teacher]")[1].split("[student]")[0]


def test_bundle_first_images_and_its_deprecated_name(capsys):
    from edgekd.cli import make_parser
    from edgekd.commands.bundle import first_images

    def parse(*flags):
        return make_parser().parse_args(["bundle", "out", "--device", "rpi4", *flags])

    assert first_images(parse()) == 500
    assert first_images(parse("--first-images", "20")) == 20
    assert capsys.readouterr().err == ""
    assert first_images(parse("--max-images", "30")) == 30
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("edgekd: warning: --max-images is deprecated; use --first-images")
    with pytest.raises(ConfigError, match="--max-images.*--first-images"):
        first_images(parse("--max-images", "30", "--first-images", "20"))


def test_presets_fill_their_sections_and_the_config_wins(tmp_path):
    """export.preset / quantize.preset (export/*.toml): the preset's keys are the section's defaults,
    the config's own keys override them, a preset named by path in a config file is relative to
    that file, and a wrong or unknown preset is one ConfigError listing the valid ones."""
    base = load_config(None)
    assert (base.export.preset, base.quantize.preset) == ("fp32", "int8-static-u8s8")
    s8 = load_config(None, ['quantize.preset="int8-static-s8s8"'])
    assert s8.quantize.activation_type == "int8" and not s8.quantize.reduce_range
    old = load_config(None, ['quantize.preset="int8-static"'])  # the old name, for stored configs
    assert old.quantize.activation_type == "int8"
    u8 = load_config(None, ['quantize.preset="int8-static-u8s8"'])
    assert u8.quantize.activation_type == "uint8" and u8.quantize.reduce_range
    mixed = load_config(None, ['quantize.preset="int8-static-u8s8"', 'quantize.activation_type="int8"'])
    assert mixed.quantize.activation_type == "int8"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mine.toml").write_text('name = "mine"\ndescription = "entropy"\nprecision = "int8"\n'
                                              '[quantize]\ncalibrate_method = "entropy"\n')
    (tmp_path / "c.toml").write_text('[quantize]\npreset = "p/mine.toml"\n')
    assert load_config(tmp_path / "c.toml").quantize.calibrate_method == "entropy"
    with pytest.raises(ConfigError, match=r"unknown quantize preset 'nope'; valid: fp16, int8-dynamic, int8-static-s8s8"):
        load_config(None, ['quantize.preset="nope"'])
    with pytest.raises(ConfigError, match=r"'fp32' is an \[export\] preset"):
        load_config(None, ['quantize.preset="fp32"'])
    (tmp_path / "bad.toml").write_text('name = "bad"\ndescription = "x"\nprecision = "int8"\n'
                                       '[quantize]\nactivation_type = "int4"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: quantize.activation_type = 'int4' is not one of"):
        load_config(None, [f'quantize.preset="{tmp_path / "bad.toml"}"'])


def test_set_overrides_win_over_a_file_also_across_deprecated_names(tmp_path, capsys):
    (tmp_path / "old.toml").write_text('[teacher]\ndevice = "cpu"\n[robustness]\nmax_images = 100\n')
    cfg = load_config(tmp_path / "old.toml", ["robustness.sample_images=200", "compute.device=auto"])
    assert (cfg.robustness.sample_images, cfg.compute.device) == (200, "auto")
    assert capsys.readouterr().err.count("is deprecated") == 2
    (tmp_path / "new.toml").write_text('[compute]\ndevice = "cpu"\n')
    assert load_config(tmp_path / "new.toml", ["teacher.device=auto"]).compute.device == "auto"


def test_a_whole_config_with_the_new_sections_is_a_gate_policy_file(tmp_path):
    from edgekd.gate import load_policy_file

    (tmp_path / "edgekd.toml").write_text('[compute]\ndevice = "cpu"\n[cache]\ndir = "none"\n'
                                          '[gate]\nmax_clean_drop = 0.05\n')
    assert load_policy_file(tmp_path / "edgekd.toml").max_clean_drop == 0.05
