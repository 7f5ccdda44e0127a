import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from dlscope import models

# SPEC's model table: the parameter counts are part of the contract.
SPEC_COUNTS = {
    "mlp-deep": 573,
    "mlp-mid": 574,
    "mlp-shallow": 573,
    "mlp-minratio": 385,
    "mlp-minratio-tanh": 49,
    "cnn-1": 36458,
    "cnn-2": 46842,
    "cnn-7": 430102,
    "cnn-21": 11085,
    "cnn-22": 12029,
    "cnn-23": 13656,
    "cnn-24": 16904,
    "cnn-25": 29254,
    "cnn-26": 52004,
    "cnn-27": 63054,
    "cnn-28": 74754,
    "cnn-29": 83854,
    "cnn-30": 130122,
    "cnn-31": 425194,
    "mnist-mlp": 149002,
}


def test_cli_models_json_gives_spec_counts():
    out = subprocess.run([sys.executable, "-m", "dlscope", "models", "--json"], capture_output=True, text=True, check=True)
    got = {r["name"]: r["params"] for r in json.loads(out.stdout)}
    assert got == SPEC_COUNTS


@pytest.mark.parametrize("name", list(SPEC_COUNTS))
def test_forward_shape(name):
    torch.manual_seed(0)
    m = models.build(name)
    x = torch.randn(2, *models.info(name)["input_shape"])
    out = m(x)
    assert out.shape == ((2, 1) if models.info(name)["task"] == "regression" else (2, 10))


def test_quirks_are_kept():
    torch.manual_seed(0)
    # cnn-1 ends in a Softmax: its outputs are probabilities
    p = models.build("cnn-1")(torch.randn(3, 3, 32, 32))
    assert torch.allclose(p.sum(1), torch.ones(3)) and (p >= 0).all()
    # cnn-7: nothing between its two Linear layers, so they compose to one affine map
    m = models.build("cnn-7")
    assert isinstance(m[-1], torch.nn.Linear) and isinstance(m[-2], torch.nn.Linear)
    # the MLPs start with a 1->1 layer
    assert models.build("mlp-deep")[0].weight.shape == (1, 1)


def test_same_seed_same_weights_and_unknown_name():
    torch.manual_seed(5)
    a = models.build("cnn-21")
    torch.manual_seed(5)
    b = models.build("cnn-21")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(KeyError, match="unknown model"):
        models.build("cnn-99")


@pytest.mark.parametrize("name", [n for n in models.names() if n.startswith("cnn-")])
def test_pool_before_relu_is_specs_network_bit_for_bit(name):
    """The zoo pools before its ReLUs (faster); outputs and all gradients equal SPEC's order's
    exactly, also where pooling windows hold ties and all-negative or all-zero values."""
    torch.manual_seed(0)
    model = models.build(name).double()
    assert any(isinstance(a, nn.MaxPool2d) and isinstance(b, nn.ReLU) for a, b in zip(model, list(model)[1:]))
    with torch.no_grad():  # some channels exactly 0 everywhere, some negative everywhere
        for conv in (m for m in model if isinstance(m, nn.Conv2d)):
            conv.weight[::3] = 0
            conv.bias[::3] = 0
            conv.bias[1::3] -= 5
    spec = models.spec_layer_order(copy.deepcopy(model))
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).round()  # ties
    w = torch.randn(4, 10, dtype=torch.float64)
    grads = []
    for m in (model, spec):
        xi = x.clone().requires_grad_()
        out = m(xi)
        (out * w).sum().backward()
        grads.append((out.detach(), xi.grad, [p.grad for p in m.parameters()]))
    (o1, gx1, gp1), (o2, gx2, gp2) = grads
    assert torch.equal(o1, o2) and torch.equal(gx1, gx2)
    assert all(torch.equal(a, b) for a, b in zip(gp1, gp2))
