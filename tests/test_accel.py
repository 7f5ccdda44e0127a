"""What changes on a GPU (engine/accel.py): compiled training steps, bf16 autocast, fused Adam.

Each test runs on the CPU and, where one is present, on CUDA, where the compiled step is
replayed as CUDA graphs: the same assertions hold on both."""

import warnings

import pytest
import torch
from reference_check import assert_follows_reference
from torch._dynamo.utils import counters

from dlscope import data
from dlscope.engine import BatchedAdam, Ensemble, Trainer, TrainConfig, accel

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv("DLSCOPE_COMPILE", raising=False)


def _problem(model: str, device: torch.device):
    """A small training problem for `model`: data and settings (the CNN with augmentation and a
    StepLR drop, as the CIFAR experiments train)."""
    g = torch.Generator().manual_seed(0)
    if model == "mlp-mid":
        x = torch.linspace(-1, 1, 64).unsqueeze(1)
        return x.to(device), torch.sin(3 * x[:, 0]).to(device), TrainConfig(3, 8, 1e-2, 1e-4, loss="mse", compile=True)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    return x.to(device), y.to(device), TrainConfig(2, 16, 1e-3, 1e-4, lr_step=1, augment=True, compile=True)


@pytest.mark.parametrize("model", ["mlp-mid", "cnn-21"])
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_follows_the_reference_loop(device, model):
    dev = torch.device(device)
    accel.configure(dev)
    x, y, cfg = _problem(model, dev)
    seeds = [0, 1]
    trainer = Trainer(Ensemble.from_seeds(model, seeds, dev, mode="vmap"), cfg, seeds)
    assert trainer._compiled is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        trainer.run(x, y)
    assert trainer._compiled.compiled is not None  # still compiled: it did not fall back
    assert_follows_reference(trainer, model, x, y, loss_tol=(1e-5, 1e-7))

    # the next trial of the same architecture reuses the compiled step: no new graph
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    again = Trainer(Ensemble.from_seeds(model, [5, 6], dev, mode="vmap"), cfg, [5, 6])
    assert again._compiled is trainer._compiled
    again.run(x, y)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_step_that_fails_to_compile_runs_eagerly(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no compiler here")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    step = accel.CompiledStep(lambda a, b: a * b + 1, torch.device("cpu"))
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        assert step(torch.tensor(2.0), torch.tensor(3.0)).item() == 7.0
    assert step.compiled is None and step(torch.tensor(1.0), torch.tensor(1.0)).item() == 2.0


def test_compile_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert accel.should_compile("auto", cuda) and not accel.should_compile("auto", cpu)
    assert accel.should_compile(True, cpu) and not accel.should_compile(False, cuda)
    monkeypatch.setenv("DLSCOPE_COMPILE", "0")
    assert not accel.should_compile("auto", cuda) and not accel.should_compile(True, cpu)
    monkeypatch.setenv("DLSCOPE_COMPILE", "1")
    assert accel.should_compile("auto", cpu)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_stays_close_to_float32(device, data_dir):
    """AMP changes rounding, not the training: on real CIFAR images, two epochs of cnn-21 under
    bf16 autocast follow the float32 loss curve within 2% (a different seed differs by more)."""
    dev = torch.device(device)
    d = data.load("cifar10", dev, data_dir, train_size=512, test_size=10)

    def curve(seeds, amp):
        cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-3, augment=True, amp=amp, compile=False)
        ens = Ensemble.from_seeds("cnn-21", seeds, dev)
        t = Trainer(ens, cfg, seeds)
        t.run(d.train.x, d.train.y)
        assert all(p.dtype == torch.float32 for p in ens.parameters())  # weights and Adam stay float32
        return torch.stack(t.history["batch_loss"])

    fp32, bf16, other_seed = curve([0], False), curve([0], True), curve([1], False)
    assert not torch.equal(fp32, bf16)  # autocast did change the arithmetic
    amp_gap = ((bf16 - fp32).abs() / fp32).max().item()
    seed_gap = ((other_seed - fp32).abs() / fp32).max().item()
    assert amp_gap < 0.02 and amp_gap < seed_gap


@pytest.mark.parametrize("device", DEVICES)
def test_batched_adam_with_one_lr_matches_torch_adam(device):
    """One lr for all members: the fused kernel (CPU and CUDA) against torch.optim.Adam."""
    torch.manual_seed(0)
    init = torch.randn(3, 4, 5, device=device)
    targets = torch.randn(3, 4, 5, device=device)
    stacked = init.clone().requires_grad_()
    opt = BatchedAdam([stacked], 1e-2, weight_decay=1e-2)
    single = init.clone().requires_grad_()
    topt = torch.optim.Adam([single], lr=1e-2, weight_decay=1e-2)
    for _ in range(20):
        for p, o in ((stacked, opt), (single, topt)):
            o.zero_grad()
            ((p - targets) ** 4).sum().backward()
            o.step()
    torch.testing.assert_close(stacked.detach(), single.detach(), rtol=1e-5, atol=1e-6)
