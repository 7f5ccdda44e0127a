"""The model zoo, by name. Parameter counts are part of the contract (SPEC).

The quirks are the original study's and are kept so results compare: the MLPs start with a
1->1 layer, cnn-1 ends in a Softmax that is then fed to cross-entropy, cnn-7 has no activation
between its two Linear layers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[[], nn.Module]] = {}
_INFO: dict[str, dict] = {}


def register(name: str, input_shape: tuple[int, ...], task: str, description: str):
    def deco(fn):
        _REGISTRY[name] = fn
        _INFO[name] = {"input_shape": input_shape, "task": task, "description": description}
        return fn

    return deco


def build(name: str) -> nn.Module:
    """A freshly initialised model (uses the global torch RNG: seed before calling)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


def names() -> list[str]:
    return list(_REGISTRY)


def info(name: str) -> dict:
    return _INFO[name]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- MLPs on 1-D functions


def mlp(widths: list[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


MLP_WIDTHS = {
    "mlp-deep": [1, 1, 5, 10, 10, 10, 10, 10, 5, 1],
    "mlp-mid": [1, 1, 10, 18, 15, 4, 1],
    "mlp-shallow": [1, 1, 190, 1],
}

for _name, _w in MLP_WIDTHS.items():
    register(_name, (1,), "regression", f"Linear widths {'>'.join(map(str, _w))}, leaky_relu(0.01)")(
        lambda w=_w: mlp(w, lambda: nn.LeakyReLU(0.01))
    )


@register("mlp-minratio", (1,), "regression", "Linear 1>128>1, ReLU")
def _mlp_minratio():
    return mlp([1, 128, 1], nn.ReLU)


@register("mlp-minratio-tanh", (1,), "regression", "Linear 1>16>1, tanh (min-ratio's smooth model)")
def _mlp_minratio_tanh():
    # smooth: its critical points have a gradient, and saddles exist (Pennington & Bahri 2017: tanh, width 16)
    return mlp([1, 16, 1], nn.Tanh)


# --------------------------------------------------------------------------- CIFAR-10 CNNs


def conv_block(c_in: int, c_out: int, padding: int = 1) -> list[nn.Module]:
    """SPEC's [3x3 conv, ReLU, 2x2 max pool], built as [conv, max pool, ReLU]: the same function
    (ReLU is monotone, so it commutes with max; the gradients are equal too, tested bit for bit in
    tests/test_models.py), with the ReLU on a 4x smaller tensor: a training step of cnn-7 is ~14%
    faster on a CPU (measured), since these element-wise passes are memory-bound. The parameter
    names are SPEC's order's too (ReLU and pooling have none)."""
    return [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.MaxPool2d(2), nn.ReLU()]


def spec_layer_order(model: nn.Sequential) -> nn.Sequential:
    """The same network (the same module objects) in SPEC's written order: every [max pool, ReLU]
    as [ReLU, max pool]. For comparisons with the original study's code (bench/, tests)."""
    layers = list(model)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


def conv_stack(channels: list[int], n_classes: int = 10) -> nn.Sequential:
    """len(channels)-1 blocks of [3x3 conv pad 1, ReLU, 2x2 max pool], then Linear(c_last, 10)."""
    layers: list[nn.Module] = []
    for a, b in zip(channels[:-1], channels[1:]):
        layers += conv_block(a, b)
    layers += [nn.Flatten(), nn.Linear(channels[-1], n_classes)]
    return nn.Sequential(*layers)


@register("cnn-1", (3, 32, 32), "classification", "conv 3>16 (no pad), ReLU, pool, Linear(3600,10), Softmax")
def _cnn1():
    return nn.Sequential(*conv_block(3, 16, padding=0), nn.Flatten(), nn.Linear(3600, 10), nn.Softmax(dim=1))


@register("cnn-2", (3, 32, 32), "classification", "5 x [conv, ReLU, pool], channels 16>32>64>32>16, Linear(16,10)")
def _cnn2():
    return conv_stack([3, 16, 32, 64, 32, 16])


@register("cnn-7", (3, 32, 32), "classification", "2 x [conv, ReLU, pool] (32, 64), Linear(4096,100), Linear(100,10)")
def _cnn7():
    return nn.Sequential(*conv_block(3, 32), *conv_block(32, 64), nn.Flatten(), nn.Linear(4096, 100), nn.Linear(100, 10))


CNN_FAMILY = {
    21: [8, 10, 20, 25, 16],
    22: [16, 10, 20, 25, 16],
    23: [16, 10, 32, 20, 16],
    24: [16, 25, 20, 25, 16],
    25: [16, 64, 20, 24, 16],
    26: [16, 128, 20, 30, 16],
    27: [16, 128, 20, 64, 16],
    28: [16, 128, 20, 100, 16],
    29: [16, 128, 20, 128, 16],
    30: [16, 128, 32, 128, 32],
    31: [16, 256, 128, 64, 32],
}

for _k, _c in CNN_FAMILY.items():
    register(f"cnn-{_k}", (3, 32, 32), "classification", f"5 x [conv, ReLU, pool], channels {'>'.join(map(str, _c))}")(
        lambda c=_c: conv_stack([3] + c)
    )


# --------------------------------------------------------------------------- MNIST


@register(
    "mnist-mlp", (1, 32, 32), "classification", "flatten 32x32, Linear(1024,128), ReLU, Linear(128,128), ReLU, Linear(128,10)"
)
def _mnist_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def outputs_probabilities(name: str) -> bool:
    """Whether the model's own output is already class probabilities (cnn-1's Softmax)."""
    return name == "cnn-1"


def zoo() -> list[dict]:
    out = []
    for name in names():
        torch.manual_seed(0)
        out.append({"name": name, "params": count_params(build(name)), **info(name)})
    return out
