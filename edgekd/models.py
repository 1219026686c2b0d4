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


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # option B: 1x1 projection
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet (6n+2 layers, three stages of 16/32/64 x width channels),
    3x3 stem at full resolution; ``stem = "imagenet"`` adds a stride-2 stem for large images."""

    def __init__(self, depth: int, num_classes: int, width: float = 1.0, stem: str = "cifar") -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, not {depth}")
        n = (depth - 2) // 6
        widths = [max(4, round(c * width)) for c in (16, 32, 64)]
        stride = 2 if stem == "imagenet" else 1
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, stride, 1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        if stem == "imagenet":
            layers.append(nn.MaxPool2d(3, 2, 1))
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(n):
                layers.append(_BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def _cifar_resnet(depth: int) -> Callable[..., nn.Module]:
    def make(num_classes: int = 10, width: float = 1.0, stem: str = "cifar") -> nn.Module:
        return CifarResNet(depth, num_classes, width, stem)

    make.__doc__ = (f"CIFAR-style ResNet-{depth} (He et al. 2016), 16/32/64 x width channels; "
                    "options: width, stem")
    return make


for _depth in (8, 14, 20, 32):
    MODELS.add(f"resnet{_depth}", _cifar_resnet(_depth))


def _cifar_stem(net: nn.Module, name: str) -> nn.Module:
    """Keep resolution on small (e.g. 32x32) inputs, where the ImageNet stem's 4x (resnet) or 2x
    (mobilenet) early downsampling throws away most of the image: resnet's 7x7/2 conv + max-pool
    becomes a 3x3/1 conv; mobilenet's first conv gets stride 1."""
    if name.startswith("resnet"):
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    else:  # mobilenet_v2 / mobilenet_v3_small: features[0] is conv-bn-act
        conv = net.features[0][0]
        conv.stride = (1, 1)
    return net


def _torchvision(name: str, width_option: bool) -> Callable[..., nn.Module]:
    def make(num_classes: int = 10, stem: str = "imagenet", **options) -> nn.Module:
        import torchvision

        kwargs = {"width_mult": options.pop("width")} if "width" in options else {}
        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **kwargs)
        return _cifar_stem(net, name) if stem == "cifar" else net

    if width_option:
        def make_w(num_classes: int = 10, width: float = 1.0, stem: str = "imagenet") -> nn.Module:
            return make(num_classes, stem, width=width)

        make_w.__doc__ = (f"torchvision.models.{name} (random init); options: width (width_mult), "
                          "stem (cifar: stride-1 first conv for 32x32 inputs)")
        return make_w

    def make_s(num_classes: int = 10, stem: str = "imagenet") -> nn.Module:
        return make(num_classes, stem)

    make_s.__doc__ = (f"torchvision.models.{name} (random init); option: stem (cifar: 3x3 stride-1 "
                      "stem, no max-pool, for 32x32 inputs)")
    return make_s


MODELS.add("resnet18", _torchvision("resnet18", False))
MODELS.add("mobilenet_v2", _torchvision("mobilenet_v2", True))
MODELS.add("mobilenet_v3_small", _torchvision("mobilenet_v3_small", True))

STEMS = ("auto", "imagenet", "cifar")


def resolve_stem(stem: str, image_size: int) -> str:
    """``auto`` -> ``cifar`` for images up to 64 px, else ``imagenet``."""
    if stem == "auto":
        return "cifar" if image_size <= 64 else "imagenet"
    return stem


def model_options(arch: str) -> tuple[str, ...]:
    """The options (besides num_classes) an architecture takes, e.g. ("width", "stem")."""
    import inspect

    fn = MODELS.get(arch)
    return tuple(p for p in inspect.signature(fn).parameters if p != "num_classes")


def build_model(arch: str, num_classes: int, *, width: float = 1.0, stem: str = "auto",
                image_size: int = 32) -> nn.Module:
    """``arch`` from the registry, or ``module:function`` (a user's factory, called with
    ``num_classes=``). ``stem = "auto"`` picks the CIFAR stem for images up to 64 px on
    architectures that have the option; an option an architecture does not take is an error
    naming the ones it does."""
    if ":" in arch:
        if width != 1.0 or stem not in ("auto", "imagenet"):
            from .errors import ConfigError

            raise ConfigError(f"model factory {arch!r} takes no width / stem options; build them "
                              "into the factory")
        return _factory(arch)(num_classes=num_classes)
    if arch not in MODELS.names():
        return _torchvision_any(arch, num_classes, width, stem)
    valid = model_options(arch)
    kwargs: dict = {}
    if "stem" in valid:
        kwargs["stem"] = resolve_stem(stem, image_size)
    if "width" in valid:
        kwargs["width"] = width
    bad = [(k, v) for k, v in (("width", width), ("stem", stem))
           if k not in valid and not (k == "width" and v == 1.0) and not (k == "stem" and v in ("auto", "imagenet"))]
    if bad:
        from .errors import ConfigError

        k, v = bad[0]
        raise ConfigError(f"architecture {arch!r} has no option {k} = {v!r}; it takes: "
                          f"{', '.join(valid) or 'no options'}")
    return MODELS.get(arch)(num_classes=num_classes, **kwargs)


def _torchvision_any(arch: str, num_classes: int, width: float, stem: str) -> nn.Module:
    """Any other torchvision.models classifier by name (torchvision's own stem, no options)."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        from .errors import ConfigError

        raise ConfigError(f"unknown model architecture {arch!r}; valid: {', '.join(MODELS.names())}, "
                          "any torchvision.models classifier (e.g. resnet50, efficientnet_b0), or "
                          "module:function")
    if width != 1.0 or stem not in ("auto", "imagenet"):
        from .errors import ConfigError

        raise ConfigError(f"architecture {arch!r} (torchvision) takes no width / stem options here")
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation torchvision's pretrained weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)


def pretrained_model(arch: str, num_classes: int) -> nn.Module:
    """torchvision classifier ``arch`` with its published default (ImageNet) weights, its last
    linear layer replaced by a freshly initialised one with ``num_classes`` outputs. torchvision
    downloads the weights into torch's cache on first use (never in tests or the default build)."""
    import torchvision

    if ":" in arch or arch not in torchvision.models.list_models(module=torchvision.models):
        from .errors import ConfigError

        raise ConfigError(f"teacher.pretrained needs teacher.arch to be a torchvision.models "
                          f"classifier (e.g. resnet18, mobilenet_v3_large, efficientnet_b0), not {arch!r}")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        net = torchvision.models.get_model(arch, weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise InputError(f"teacher.pretrained: cannot fetch the {weights} weights of {arch!r} "
                         f"into torch's cache ({type(e).__name__}: {e}); put them there by hand or "
                         "train without teacher.pretrained") from None
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        from .errors import ConfigError

        raise ConfigError(f"teacher.pretrained: {arch!r} has no linear classifier layer to replace")
    name, head = linears[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))
    return net


def _factory(spec: str) -> Callable[..., nn.Module]:
    """``package.module:function`` -> the function (a user's model factory)."""
    import importlib

    mod_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"model factory {spec!r} cannot be imported ({type(e).__name__}: {e})") from None
    if not callable(fn):
        raise InputError(f"model factory {spec!r} is not callable")
    return fn


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
        net = build_model(ck["arch"], ck["num_classes"], **ck.get("options", {}))
        n = len(ck["state_dict"]["mean"].flatten())
        model = Preprocessed(net, (0.0,) * n, (1.0,) * n)
        model.load_state_dict(ck["state_dict"])
    except Exception as e:
        raise InputError(f"{p}: not an edgekd checkpoint (arch + state_dict) ({type(e).__name__}: {e})") from None
    return model.eval(), ck
