"""Architectures by name, the preprocessing wrapper, and checkpoint loading / saving.

    net = build_model("digits_student", num_classes=10)
    model = Preprocessed(net, mean, std)      # takes uint8 NHWC images (or float 0..255)
    model(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape -> (2, 10)

Tiny models used by the default build and the tests live in the same registry as real ones.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, InputError
from .files import check_regular, load_error_reason
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
        k, v = bad[0]
        raise ConfigError(f"architecture {arch!r} has no option {k} = {v!r}; it takes: "
                          f"{', '.join(valid) or 'no options'}")
    return MODELS.get(arch)(num_classes=num_classes, **kwargs)


def _torchvision_any(arch: str, num_classes: int, width: float, stem: str) -> nn.Module:
    """Any other torchvision.models classifier by name (torchvision's own stem, no options)."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"unknown model architecture {arch!r}; valid: {', '.join(MODELS.names())}, "
                          "any torchvision.models classifier (e.g. resnet50, efficientnet_b0), or "
                          "module:function")
    if width != 1.0 or stem not in ("auto", "imagenet"):
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


# sentences of torch's and numpy's load errors that advise loading the file unsafely (pickle:
# arbitrary code) or point at output edgekd hides; they are never shown to a user
@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """While torch tries to load a file: no warnings (deprecation notices, damaged-file hints) and
    no log records (``torch.export.load`` logs the whole traceback of a damaged ``.pt2``) reach
    stderr; the caller reports the failure as one sentence."""
    log = logging.getLogger("torch.export")
    disabled = log.disabled
    log.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.disabled = disabled


def _torch_load(p: Path) -> object:
    """``torch.load`` with ``weights_only=True`` (tensors and plain containers only: no pickled code
    runs); errors are left to the caller."""
    with quiet_loading():
        return torch.load(p, map_location="cpu", weights_only=True)


def load_state_dict_file(path: str | Path, key: str) -> dict:
    """Load a state_dict (plain or inside {'state_dict': ...}); errors name the file and key."""
    p = check_regular(path, key)
    try:
        obj = _torch_load(p)
    except Exception as e:  # torch raises many kinds here
        raise InputError(f"{key} = {str(p)!r}: not a loadable torch state_dict "
                         f"({load_error_reason(e)})") from None
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


CHECKPOINT_OPTIONS = ("width", "stem", "image_size")  # what save_checkpoint's callers store


def known_architecture(arch: str) -> bool:
    """An edgekd registry name or a torchvision.models classifier: a fixed list of constructors,
    no code named by the caller."""
    if arch in MODELS.names():
        return True
    import torchvision

    return arch in torchvision.models.list_models(module=torchvision.models)


def load_checkpoint(path: str | Path, trusted_factory: str | None = None,
                    key: str = "model") -> tuple[Preprocessed, dict]:
    """Inverse of :func:`save_checkpoint` (used by ``edgekd eval student.pt``).

    The checkpoint names its architecture, and a file someone hands over must not run code: only
    registered architectures (:func:`known_architecture`) are built from that name. A
    ``module:function`` factory is imported only when it is ``trusted_factory``, the name the user's
    own config gives (``edgekd eval -c CONFIG``: its student.arch). The architecture is first
    built on the meta device (no memory) and checked against the stored tensors' shapes, so a
    checkpoint cannot make edgekd allocate more than it holds."""
    p = check_regular(path, key)
    try:
        ck = _torch_load(p)
    except Exception as e:  # torch raises many kinds here
        raise InputError(f"{p}: not an edgekd checkpoint ({load_error_reason(e)})") from None
    sd = ck.get("state_dict") if isinstance(ck, dict) else None
    if not (isinstance(ck, dict) and isinstance(ck.get("arch"), str) and isinstance(sd, dict)
            and sd and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())):
        raise InputError(f"{p}: not an edgekd checkpoint (it needs an arch name and a state_dict "
                         "of tensors)")
    arch, n_cls, options = ck["arch"], ck.get("num_classes"), ck.get("options", {})
    if ":" in arch:
        if arch != trusted_factory:
            raise InputError(f"{p}: the checkpoint names the model factory {arch!r}, and edgekd "
                             "imports no code a file names; give the config that names it "
                             f"(-c CONFIG with student.arch = {arch!r})")
    elif not known_architecture(arch):
        raise InputError(f"{p}: the checkpoint names an unknown architecture {arch!r}")
    if isinstance(n_cls, bool) or not isinstance(n_cls, int) or n_cls < 1:
        raise InputError(f"{p}: not an edgekd checkpoint (num_classes = {n_cls!r} is not a "
                         "positive integer)")
    if not (isinstance(options, dict) and set(options) <= set(CHECKPOINT_OPTIONS)):
        raise InputError(f"{p}: not an edgekd checkpoint (options must be a table of "
                         f"{', '.join(CHECKPOINT_OPTIONS)})")
    if not (isinstance(sd.get("mean"), torch.Tensor) and 1 <= sd["mean"].numel() <= 4):
        raise InputError(f"{p}: not an edgekd checkpoint (no preprocessing mean in its state_dict)")
    n = sd["mean"].numel()

    def make() -> Preprocessed:
        return Preprocessed(build_model(arch, n_cls, **options), (0.0,) * n, (1.0,) * n)

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in make().state_dict().items()}
    except (ConfigError, InputError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{p}: architecture {arch!r} cannot be built from the checkpoint's "
                         f"options ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
                         ) from None
    if shapes != {k: tuple(v.shape) for k, v in sd.items()}:
        raise InputError(f"{p}: its tensors do not fit architecture {arch!r} with "
                         f"{n_cls} classes and options {options}")
    try:
        model = make()
        model.load_state_dict(sd)
    except Exception as e:
        raise InputError(f"{p}: not an edgekd checkpoint ({load_error_reason(e)})") from None
    return model.eval(), ck


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, device: str, batch_size: int = 512) -> np.ndarray:
    """Logits of a torch model over uint8 NHWC images, batched, in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
