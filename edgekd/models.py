"""Architectures by name, the preprocessing wrapper, and checkpoint loading / saving.

    net = build_model("digits_student", num_classes=10)
    model = Preprocessed(net, mean, std)      # takes uint8 NHWC images (or float 0..255)
    model(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape -> (2, 10)

Tiny models used by the default build and the tests live in the same registry as real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model architecture")


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _plain_cnn(widths: tuple[int, ...], num_classes: int) -> nn.Module:
    """conv-bn-relu + 2x2 max-pool per stage, global average pool, linear head."""
    layers: list[nn.Module] = []
    cin = 3
    for w in widths:
        layers += _conv_bn(cin, w) + [nn.MaxPool2d(2)]
        cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


@MODELS.register("digits_teacher")
def digits_teacher(num_classes: int = 10) -> nn.Module:
    """~390k parameters; the default teacher edgekd trains itself in seconds."""
    return _plain_cnn((32, 64, 128, 256), num_classes)


@MODELS.register("digits_student")
def digits_student(num_classes: int = 10) -> nn.Module:
    """~24k parameters (16x fewer than digits_teacher)."""
    return _plain_cnn((16, 32, 64), num_classes)


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def make(num_classes: int = 10) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    make.__doc__ = f"torchvision.models.{name} (random init; load weights with teacher.weights)"
    return make


for _name in ("resnet18", "mobilenet_v2", "mobilenet_v3_small"):
    MODELS.add(_name, _torchvision(_name))


def build_model(arch: str, num_classes: int) -> nn.Module:
    return MODELS.get(arch)(num_classes=num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Preprocessed(nn.Module):
    """uint8 NHWC RGB (or float pixels in 0..255, for attacks) -> normalised NCHW -> ``net``.

    Baking this into the model makes the exported ONNX graph take raw images.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.net((x - self.mean) / self.std)


def load_state_dict_file(path: str | Path, key: str) -> dict:
    """Load a state_dict (plain or inside {'state_dict': ...}); errors name the file and key."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{key} = {str(p)!r}: file does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds here
        raise InputError(f"{key} = {str(p)!r}: not a loadable torch state_dict ({type(e).__name__})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{key} = {str(p)!r}: does not hold a state_dict of tensors")
    return obj


def load_weights(net: nn.Module, path: str | Path, arch: str, num_classes: int, key: str) -> nn.Module:
    """Load ``path`` into ``net``; a shape mismatch (e.g. another class count) is an InputError."""
    sd = load_state_dict_file(path, key)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        msg = str(e)
        head = [t for t in sd.values() if t.ndim == 2]  # the last matrix is the classifier
        hint = ""
        if head and head[-1].shape[0] != num_classes:
            hint = f" (its output layer has {head[-1].shape[0]} classes, the data has {num_classes})"
        first = msg.splitlines()[1].strip() if "\n" in msg else msg
        raise InputError(f"{key} = {str(path)!r}: does not fit architecture {arch!r}{hint}: {first}") from None
    return net


def save_checkpoint(model: Preprocessed, arch: str, num_classes: int, path: Path, extra: dict) -> None:
    """student.pt: architecture name + class count + state_dict (preprocessing buffers included)."""
    torch.save({"arch": arch, "num_classes": num_classes, "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path: str | Path) -> tuple[Preprocessed, dict]:
    """Inverse of :func:`save_checkpoint` (used by ``edgekd eval student.pt``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file does not exist")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        net = build_model(ck["arch"], ck["num_classes"])
        n = len(ck["state_dict"]["mean"].flatten())
        model = Preprocessed(net, (0.0,) * n, (1.0,) * n)
        model.load_state_dict(ck["state_dict"])
    except Exception as e:
        raise InputError(f"{p}: not an edgekd checkpoint (arch + state_dict) ({type(e).__name__}: {e})") from None
    return model.eval(), ck
