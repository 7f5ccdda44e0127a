"""Linear interpolation between two models: exact end points, linearity, buffers, evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlscope import models
from dlscope.analysis.interpolation import alpha_grid, evaluate, evaluate_path, interpolate, interpolate_state, loss_and_accuracy


def two(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(10)
    a = models.build(name)
    torch.manual_seed(11)
    return a, models.build(name)


def test_end_points_are_the_models_bit_for_bit_and_reproduce_their_metrics():
    a, b = two("cnn-1")
    torch.manual_seed(0)
    splits = {
        "train": (torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))),
        "test": (torch.randn(30, 3, 32, 32), torch.randint(0, 10, (30,))),
    }
    sens_x = torch.randn(5, 3, 32, 32)
    path = evaluate_path(a, b, alpha_grid(-1, 2, 4), splits, True, sens_x)
    for alpha, end in ((0.0, a), (1.0, b)):
        sd = interpolate(a, b, alpha).state_dict()
        assert all(torch.equal(sd[k], v) for k, v in end.state_dict().items())
        i = path["alpha"].index(alpha)
        expected = evaluate(end, splits, True, sens_x)
        assert {k: path[k][i] for k in expected} == expected  # exactly equal, not approximately
    assert path["train_loss"][path["alpha"].index(0.0)] != path["train_loss"][path["alpha"].index(1.0)]


def test_linear_model_midpoint_is_the_average_and_extrapolation_is_linear():
    torch.manual_seed(1)
    a, b = nn.Linear(6, 3).double(), nn.Linear(6, 3).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    mid = interpolate(a, b, 0.5)
    torch.testing.assert_close(mid.weight, (a.weight + b.weight) / 2)
    torch.testing.assert_close(mid(x), (a(x) + b(x)) / 2)
    # the output of a linear model is linear in its parameters: theta(-2) = 3 theta_a - 2 theta_b
    torch.testing.assert_close(interpolate(a, b, -2.0)(x), 3 * a(x) - 2 * b(x))
    torch.testing.assert_close(interpolate(a, b, 2.0)(x), 2 * b(x) - a(x))


def test_buffers_are_interpolated_and_counters_taken_from_the_nearer_end():
    a, b = nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    a.running_mean.fill_(1.0)
    b.running_mean.fill_(3.0)
    a.num_batches_tracked.fill_(5)
    b.num_batches_tracked.fill_(9)
    s = interpolate_state(a.state_dict(), b.state_dict(), 0.25)
    assert torch.allclose(s["running_mean"], torch.full((4,), 1.5))
    assert s["num_batches_tracked"].item() == 5
    assert interpolate_state(a.state_dict(), b.state_dict(), 0.75)["num_batches_tracked"].item() == 9


def test_models_of_different_architectures_are_refused():
    torch.manual_seed(0)
    with pytest.raises(ValueError):
        interpolate(models.build("cnn-21"), models.build("cnn-22"), 0.5)
    with pytest.raises(ValueError):
        interpolate(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2)), 0.5)


def test_alpha_grid_holds_zero_and_one_exactly():
    grid = alpha_grid(-2, 2, 21)
    assert len(grid) == 21 and grid[0] == -2 and grid[-1] == 2
    assert 0.0 in grid and 1.0 in grid
    assert grid == pytest.approx([-2 + 0.2 * i for i in range(21)])


def test_loss_and_accuracy_against_a_direct_computation():
    torch.manual_seed(2)
    model = nn.Linear(5, 3)
    x, y = torch.randn(37, 5), torch.randint(0, 3, (37,))
    loss, acc = loss_and_accuracy(model, x, y, batch_size=8)  # several batches, one partial
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_an_end_is_itself_even_when_the_other_end_diverged():
    torch.manual_seed(3)
    a, b = nn.Linear(4, 2), nn.Linear(4, 2)
    with torch.no_grad():
        a.weight[0, 0] = float("inf")  # (1 - 1) * inf would be NaN
    at_b, at_a = interpolate(a, b, 1.0).state_dict(), interpolate(a, b, 0.0).state_dict()
    assert all(torch.equal(at_b[k], v) for k, v in b.state_dict().items())
    assert all(torch.equal(at_a[k], v) for k, v in a.state_dict().items())
    assert not torch.isfinite(interpolate(a, b, 0.5).weight).all()  # in between, the divergence shows
