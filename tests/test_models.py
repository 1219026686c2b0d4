import pytest
import torch

from edgekd.errors import ConfigError, InputError
from edgekd.models import build_model, load_checkpoint, load_weights


def test_unknown_arch_lists_choices():
    with pytest.raises(ConfigError, match="digits_student"):
        build_model("digits_studnet", 10)


def test_class_count_mismatch_names_key_and_counts(tmp_path):
    p = tmp_path / "t.pt"
    torch.save(build_model("digits_teacher", 5).state_dict(), p)
    with pytest.raises(InputError) as e:
        load_weights(build_model("digits_teacher", 10), p, "digits_teacher", 10, "teacher.weights")
    msg = str(e.value)
    assert "teacher.weights" in msg and "5 classes" in msg and "the data has 10" in msg


def test_unreadable_checkpoint(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a loadable torch state_dict"):
        load_weights(build_model("digits_teacher", 10), p, "digits_teacher", 10, "teacher.weights")
    with pytest.raises(InputError, match="does not exist"):
        load_weights(build_model("digits_teacher", 10), tmp_path / "none.pt", "x", 10, "teacher.weights")
    with pytest.raises(InputError, match="not an edgekd checkpoint"):
        load_checkpoint(p)
