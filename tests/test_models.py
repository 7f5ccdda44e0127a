import json
import subprocess
import sys

import pytest
import torch

from dlscope import models

# SPEC's model table: the parameter counts are part of the contract.
SPEC_COUNTS = {
    "mlp-deep": 573, "mlp-mid": 574, "mlp-shallow": 573, "mlp-minratio": 385,
    "cnn-1": 36458, "cnn-2": 46842, "cnn-7": 430102,
    "cnn-21": 11085, "cnn-22": 12029, "cnn-23": 13656, "cnn-24": 16904, "cnn-25": 29254,
    "cnn-26": 52004, "cnn-27": 63054, "cnn-28": 74754, "cnn-29": 83854, "cnn-30": 130122,
    "cnn-31": 425194, "mnist-mlp": 149002,
}  # fmt: skip


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
