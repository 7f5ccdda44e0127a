"""The tiny-MLP fast path against independent computations: autograd (gradients, Hessians), the
plain one-model loop `train_reference` (trajectories), and the generic Trainer (func-fit)."""

import warnings

import pytest
import torch
from reference_check import assert_follows_reference

from dlscope import models
from dlscope.engine import Ensemble, Trainer, TrainConfig, evaluate_regression, train_reference
from dlscope.engine import fast_mlp as fm

MLPS = ["mlp-deep", "mlp-mid", "mlp-shallow", "mlp-minratio"]


def _data(n=30):
    x = torch.linspace(-1, 1, n).unsqueeze(1)
    return x, torch.stack([torch.sin(3 * x[:, 0]), torch.sign(x[:, 0])])


def _reference(name, x, y, cfg, seed):
    torch.manual_seed(seed)
    model = models.build(name)
    losses = train_reference(model, x, y, cfg, seed)
    return torch.tensor(losses), torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("name", MLPS)
def test_spec_and_initial_weights_match_the_zoo(name):
    torch.manual_seed(0)
    spec = fm.spec_of(models.build(name))
    assert spec.n_params == models.count_params(models.build(name))
    theta = fm.init_flat(name, [3, 4])
    assert torch.equal(theta, Ensemble.from_seeds(name, [3, 4]).flat())
    assert fm.spec_of(models.build("cnn-1")) is None and not fm.supports("mnist-mlp")  # not a Linear stack


@pytest.mark.parametrize("name", MLPS)
@pytest.mark.parametrize("fused", [False, True])
def test_hand_written_gradient_equals_autograd(name, fused, float64):
    x, y = _data(9)
    spec = fm.spec_of(models.build(name))
    theta = fm.init_flat(name, [0, 1])
    loss, grad = fm.mse_and_grad(theta, spec, x.expand(2, -1, -1), y, fused)
    for i in range(2):
        torch.manual_seed(i)
        m = models.build(name)
        ref = torch.nn.functional.mse_loss(m(x).reshape(-1), y[i])
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach(), rtol=1e-14, atol=0)
        torch.testing.assert_close(grad[i], torch.cat([p.grad.reshape(-1) for p in m.parameters()]), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", MLPS)
def test_eager_fast_path_equals_reference_loop(name, float64):
    """Per-member lr, weight decay, StepLR, a short last batch (30 = 7 x 4 + 2): the batch losses
    of every epoch and the final weights equal torch.optim.Adam's one-model loop."""
    x, y = _data(30)
    lrs = [1e-2, 3e-3]
    tr = fm.FastMLPTrainer(name, TrainConfig(3, 4, lrs, 1e-4, lr_step=2, loss="mse"), [0, 1], compile=False)
    tr.run(x, y)
    for i, seed in enumerate([0, 1]):
        losses, params = _reference(name, x, y[i], TrainConfig(3, 4, lrs[i], 1e-4, lr_step=2, loss="mse"), seed)
        torch.testing.assert_close(torch.stack(tr.history["batch_loss"])[:, i], losses, rtol=1e-12, atol=0)
        torch.testing.assert_close(tr.theta[i], params, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(tr.member(i)(x).reshape(-1), tr.predict(x)[i], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel", ["always", False], ids=["numba-kernel", "torch-compile"])
def test_compiled_fast_path_equals_reference_loop(kernel):
    """float32, compiled (an epoch per call: the numba kernel, or torch.compile's while_loop):
    within float32 rounding of the plain loop over 3 epochs (PERF-NOTES: 1.2e-7 relative; seen
    here up to ~2e-7)."""
    x, y = _data(40)
    cfg = TrainConfig(3, 4, 1e-2, 1e-4, loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = fm.FastMLPTrainer("mlp-shallow", cfg, [0, 1], compile=True, kernel=kernel)
        tr.run(x, y)
    if any("torch.compile failed" in str(w.message) for w in caught):
        pytest.skip("torch.compile does not work here (no C++ compiler?): the eager path is tested above")
    assert tr.compile_seconds > 0
    assert tr._kernel_warm == (kernel == "always") and bool(tr._fns) == (not kernel)  # the path asked for ran
    for i in range(2):
        losses, params = _reference("mlp-shallow", x, y[i], cfg, i)
        torch.testing.assert_close(torch.stack(tr.history["batch_loss"])[:, i], losses, rtol=2e-6, atol=0)
        torch.testing.assert_close(tr.theta[i], params, rtol=1e-5, atol=1e-6)


def test_full_batch_chunks_record_the_same_history_as_epoch_by_epoch(float64):
    x, y = _data(25)
    cfg = TrainConfig(7, 25, [1e-2, 1e-3], loss="mse")
    chunked = fm.FastMLPTrainer("mlp-minratio", cfg, [0, 1], compile=False)
    old = fm.FULL_BATCH_CHUNK
    fm.FULL_BATCH_CHUNK = 3  # 7 epochs as 3 + 3 + 1
    try:
        chunked.run(x, y)
    finally:
        fm.FULL_BATCH_CHUNK = old
    single = fm.FastMLPTrainer("mlp-minratio", cfg, [0, 1], compile=False)
    loss = [single.evaluate(x, y)]
    for _ in range(7):
        single.train_epoch(x, y)
        loss.append(single.evaluate(x, y))
    assert len(chunked.history["loss"]) == 8 and len(chunked.history["batch_loss"]) == 7
    torch.testing.assert_close(torch.stack(chunked.history["loss"]), torch.stack(loss), rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked.theta, single.theta, rtol=1e-13, atol=0)


class MemoryCheckpointer:
    def __init__(self):
        self.state, self.saves = None, 0

    def load(self):
        return self.state

    def save(self, state, force=False):
        self.state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
        self.state["history"] = {k: list(v) for k, v in state["history"].items()}
        self.saves += 1

    def progress(self, done, total, info=""):
        assert 0 < done <= total and info.startswith("loss")


def test_resume_from_checkpoint_repeats_the_uninterrupted_run(float64):
    x, y = _data(20)
    cfg = TrainConfig(4, 5, 1e-2, 1e-4, loss="mse")
    whole = fm.FastMLPTrainer("mlp-mid", cfg, [0, 1], compile=False)
    whole.run(x, y)

    class Stop(Exception):
        pass

    def stop_after_two(t):
        if t.epoch == 2:
            raise Stop

    ckpt = MemoryCheckpointer()
    first = fm.FastMLPTrainer("mlp-mid", cfg, [0, 1], compile=False)
    with pytest.raises(Stop):
        first.run(x, y, checkpoint=ckpt, on_epoch=stop_after_two)
    assert ckpt.saves == 1 and ckpt.state["epoch"] == 1  # the crash came before epoch 2's save
    resumed = fm.FastMLPTrainer("mlp-mid", cfg, [0, 1], compile=False)
    resumed.run(x, y, checkpoint=ckpt)
    assert torch.equal(resumed.theta, whole.theta)
    assert torch.equal(torch.stack(resumed.history["loss"]), torch.stack(whole.history["loss"]))


@pytest.mark.parametrize("name", MLPS)
def test_closed_form_hessians_equal_autograd(name, float64):
    x, y = _data(40)
    spec = fm.spec_of(models.build(name))
    theta = fm.init_flat(name, [0, 1])
    H = fm.hessians(theta, spec, x, y[0])
    for i in range(2):

        def loss(th):
            return (fm.forward(th.unsqueeze(0), spec, x).reshape(-1) - y[0]).square().mean()

        torch.testing.assert_close(H[i], torch.autograd.functional.hessian(loss, theta[i], vectorize=True), rtol=0, atol=1e-13)


def test_func_fit_trial_equals_the_generic_trainer(float64):
    """func-fit's trial runs on the fast path; its result has the same structure and numbers as
    training the same members with the generic vectorized Trainer."""
    from dlscope.experiments import func_fit
    from dlscope.experiments._base import TrialContext

    args = {**func_fit.PROFILES["smoke"], "seed": 0, "model": "mlp-mid", "epochs": 3}
    got = func_fit.train_model(args, TrialContext(torch.device("cpu")))
    x = func_fit.inputs(args["points"])
    y = torch.stack([func_fit.FUNCTIONS[m["function"]](x[:, 0]) for m in got["members"]])
    seeds = [m["seed"] for m in got["members"]]
    ens = Ensemble.from_seeds("mlp-mid", seeds)
    t = Trainer(ens, TrainConfig(3, args["batch_size"], args["lr"], args["weight_decay"], loss="mse"), seeds)
    t.run(x, y, evaluate=lambda t: {"loss": evaluate_regression(t.ens, x, y)})
    assert got["loss"].shape == (4, len(seeds)) and got["params"] == 574 and got["diverged"] == [False] * len(seeds)
    torch.testing.assert_close(got["loss"], torch.stack(t.history["loss"]), rtol=1e-12, atol=0)
    torch.testing.assert_close(got["pred"], ens.forward_shared(x).reshape(len(seeds), -1).detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,seeds", [("cnn-1", [7]), ("cnn-21", [3, 4])])
def test_trainer_fast_cpu_paths_follow_the_reference_loop_in_float32(name, seeds):
    """float32 turns on the Trainer's CPU speed paths (channels_last images for members run one by
    one, PyTorch's fused Adam kernel); the batch losses stay within float32 rounding of the plain
    loop's (NCHW, torch.optim.Adam)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, weight_decay=1e-4, augment=True)
    t = Trainer(Ensemble.from_seeds(name, seeds), cfg, seeds)
    t.run(x, y)
    assert_follows_reference(t, name, x, y, loss_tol=(1e-5, 0), param_tol=(1e-4, 1e-5))


@pytest.mark.parametrize("name, batch, batches", [("mlp-deep", 1, 30), ("mlp-mid", 4, 5), ("mlp-minratio", 25, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_kernel_steps_equal_the_torch_steps(name, batch, batches, dtype):
    """engine/mlp_kernel.py against fast_mlp.train_steps (the same Adam steps in torch, checked
    against autograd and torch.optim.Adam above): 60 steps, batches cycled, per-member step sizes."""
    from dlscope.engine import mlp_kernel

    spec, n = fm.spec_of_model(name), 5
    theta = fm.init_flat(name, list(range(n)), dtype=dtype)
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(batches, n, batch, spec.widths[0], generator=g, dtype=dtype) * 2 - 1
    ys = torch.sin(3 * xs[..., 0]) + 0.1 * torch.randn(xs.shape[:-1], generator=g, dtype=dtype)
    t = torch.arange(1, 61, dtype=torch.float64)
    step = (torch.linspace(1e-3, 5e-3, n, dtype=torch.float64)[None, :] / (1 - 0.9**t)[:, None]).to(dtype).unsqueeze(-1)
    bc2 = (1 - 0.999**t).sqrt().to(dtype).view(-1, 1, 1)
    opt = dict(spec=spec, weight_decay=1e-3, betas=(0.9, 0.999), eps=1e-8)
    state = (theta, torch.zeros_like(theta), torch.zeros_like(theta))
    want = fm.train_steps(*state, 60, xs, ys, step, bc2, **opt)
    got = mlp_kernel.run_adam_steps(*state, xs, ys, step, bc2, **opt)
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    assert not torch.equal(got[0], theta)  # it trained
    y = ys[0, 0].expand(n, -1)  # one target row for every member, as evaluate() passes it
    mse = (fm.forward(theta, spec, xs[0, 0]).squeeze(-1) - y).square().mean(1)
    torch.testing.assert_close(mlp_kernel.run_mse(theta, spec, xs[0, 0], y), mse, **tol)


# --------------------------------------------------------------------------- one entry: engine.trainer


def test_engine_trainer_picks_the_path_and_both_answer_the_same_calls():
    from dlscope import engine

    x, y = _data(20)
    mse = TrainConfig(epochs=2, batch_size=5, lr=1e-3, loss="mse")
    assert engine.uses_fast_path("mlp-mid") and not engine.uses_fast_path("cnn-1")
    assert not engine.uses_fast_path("mlp-mid", TrainConfig(epochs=1, batch_size=5, lr=1e-3))  # cross-entropy
    full = TrainConfig(epochs=2, batch_size=20, lr=1e-3, loss="mse")
    assert engine.uses_fast_path("mlp-mid", full, examples=20)  # epochs in chunks: fine without a per-epoch call
    assert not engine.uses_fast_path("mlp-mid", full, examples=20, each_epoch=True)
    fast = engine.trainer("mlp-mid", mse, [0, 1])
    per_epoch = engine.trainer("mlp-mid", mse, [0, 1], each_epoch=True, examples=20)
    slow = engine.trainer("mlp-mid", full, [0, 1], each_epoch=True, examples=20)
    assert isinstance(fast, fm.FastMLPTrainer) and isinstance(per_epoch, fm.FastMLPTrainer) and isinstance(slow, Trainer)
    general = Trainer(Ensemble.from_seeds("mlp-mid", [0, 1]), mse, [0, 1])
    for t in (fast, general):
        t.run(x, y, evaluate=lambda t: {"mse": t.mse(x, y), **t.gradient(x, y)})
        assert len(t.history["mse"]) == len(t.history["grad_norm"]) == 3 and t.n_params == 574
        assert t.predict(x).shape == (2, 20) and t.diverged.shape == (2,)
    for k in ("mse", "loss", "grad_norm"):
        torch.testing.assert_close(torch.stack(fast.history[k]), torch.stack(general.history[k]), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="full batch"):
        fm.FastMLPTrainer("mlp-mid", full, [0]).run(x, y[0], evaluate=lambda t: {})


def test_the_kernel_takes_small_batches_and_narrow_networks_and_torch_compile_the_rest():
    """mlp_kernel.suits, from measurement: the kernel at batch 1 (func-fit, grad-norm) whatever the
    width, torch.compile for min-ratio's 128 units at a full batch (see engine/mlp_kernel.py)."""
    from dlscope.engine import mlp_kernel

    chosen = {}
    for name, batch in (("mlp-deep", 1), ("mlp-shallow", 1), ("mlp-mid", 100), ("mlp-minratio", 100), ("mlp-minratio", 1)):
        tr = fm.FastMLPTrainer(name, TrainConfig(400, batch, 1e-3, loss="mse"), [0], compile=True)
        tr._steps_per_epoch = 300
        chosen[name, batch] = tr._kernel_on()
    want = {("mlp-deep", 1): True, ("mlp-shallow", 1): True, ("mlp-mid", 100): True}
    want |= {("mlp-minratio", 100): False, ("mlp-minratio", 1): True}
    assert chosen == want or not mlp_kernel.AVAILABLE
    forced = fm.FastMLPTrainer("mlp-minratio", TrainConfig(400, 100, 1e-3, loss="mse"), [0], compile=True, kernel="always")
    forced._steps_per_epoch = 300
    assert forced._kernel_on() == mlp_kernel.AVAILABLE
