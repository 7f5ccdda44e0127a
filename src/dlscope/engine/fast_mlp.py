"""A fast path for ensembles of tiny MLPs (func-fit, min-ratio): all members in lock-step as one
program with a hand-written backward pass, and a whole epoch compiled into one loop.

At batch size 1 a 573-parameter MLP costs almost nothing to compute; what costs is the
framework's overhead per operation (autograd, the optimizer's loop over tensors, the DataLoader).
So here every member's parameters live in one flat tensor [N, P] (in module order, as
`Ensemble.flat()`), the forward and backward passes are written out by hand as batched matrix
products over the member dimension, and Adam updates the flat tensors in a few element-wise ops.
Compiled, one call runs a whole epoch without Python between steps: on a CPU as numba machine code
(engine/mlp_kernel.py, members as SIMD lanes), elsewhere (or without numba) as torch.compile with
torch.while_loop, each step one fused C++ loop nest. If compiling fails, the same steps run
eagerly (a warning says so).

Semantics are those of `Trainer` / `train_reference`: member i starts from
`torch.manual_seed(seed_i); models.build(name)`, visits the data in the order of
`torch.randperm(n, generator=epoch_generator(seed_i, epoch))`, minimises the MSE with Adam
(coupled weight decay, as torch.optim.Adam) and StepLR. Only float rounding differs (float64:
~1e-16; float32: ~1e-7 relative over a few epochs, tests/test_fast_mlp.py).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from .. import models
from ..flat_mlp import (  # noqa: F401  the flat MLP (dlscope/flat_mlp.py), re-exported under the engine's names
    MLPSpec,
    _contract,
    _extended_to_flat,
    _layers,
    _linear,
    _num_threads,
    forward,
    full_batch_grad_norm,
    hessians,
    init_flat,
    mse_and_grad,
    spec_of,
    spec_of_model,
    supports,
)
from ..adam import adam_update
from . import mlp_kernel
from .accel import allow_recompiles, warn_once
from .optim import step_lr_scale
from .train import Checkpointer, TrainConfig, epoch_generator

# --------------------------------------------------------------------------- training steps on flat tensors


def train_steps(theta, exp_avg, exp_avg_sq, n_steps: int, xs, ys, step_size, bc2_sqrt, *, spec, weight_decay, betas, eps):
    """Adam steps i = 0 .. n_steps-1, eagerly; step i trains on batch i % D of xs [D, N, B, in],
    ys [D, N, B], with step_size[i] [N, 1] = lr / (1 - beta1^t) and bc2_sqrt[i] [1, 1].
    Returns (theta, exp_avg, exp_avg_sq, the batch losses [n_steps, N])."""
    losses = []
    for i in range(n_steps):
        loss, grad = mse_and_grad(theta, spec, xs[i % xs.shape[0]], ys[i % xs.shape[0]])
        theta, exp_avg, exp_avg_sq = adam_update(
            theta, grad, exp_avg, exp_avg_sq, step_size[i], bc2_sqrt[i], weight_decay, betas, eps
        )
        losses.append(loss)
    return theta, exp_avg, exp_avg_sq, torch.stack(losses)


def train_loop(theta, exp_avg, exp_avg_sq, n_steps, xs, ys, step_size, bc2_sqrt, *, spec, weight_decay, betas, eps):
    """What train_steps does, as one torch.while_loop for the compiler (n_steps a 0-d tensor, so
    one compiled loop serves any count up to len(step_size)). Returns the losses [len(step_size), N]
    (rows past n_steps are zero)."""
    d = xs.shape[0]

    def cond(i, theta, exp_avg, exp_avg_sq, losses):
        return i < n_steps

    def body(i, theta, exp_avg, exp_avg_sq, losses):
        at = i.view(1)
        j = at % d if d > 1 else torch.zeros_like(at)
        loss, grad = mse_and_grad(theta, spec, xs.index_select(0, j)[0], ys.index_select(0, j)[0], fused=True)
        theta, exp_avg, exp_avg_sq = adam_update(
            theta,
            grad,
            exp_avg,
            exp_avg_sq,
            step_size.index_select(0, at)[0],
            bc2_sqrt.index_select(0, at)[0],
            weight_decay,
            betas,
            eps,
        )
        return i + 1, theta, exp_avg, exp_avg_sq, losses.index_copy(0, at, loss.unsqueeze(0))

    start = torch.zeros((), dtype=torch.int64, device=theta.device)
    losses = theta.new_zeros(step_size.shape[0], theta.shape[0])
    _, theta, exp_avg, exp_avg_sq, losses = torch.while_loop(cond, body, (start, theta, exp_avg, exp_avg_sq, losses))
    return theta, exp_avg, exp_avg_sq, losses


# --------------------------------------------------------------------------- the trainer

COMPILE_MIN_STEPS = 100_000  # compile="auto": below this many steps compiling (~20-60 s here) does not pay
MIN_COMPILED_RUN = 8  # runs of fewer steps (a short last batch) stay eager rather than compile a shape of their own
FULL_BATCH_CHUNK = 500  # full-batch training: epochs per compiled call (between checkpoints)


class FastMLPTrainer:
    """Trains N same-architecture MLPs on x [n, in] with targets y [n] or [N, n], MSE, Adam.

    history["loss"]: full-data MSE per epoch ([N] tensors; entry 0 at initialisation),
    history["batch_loss"]: mean mini-batch loss of each epoch. `theta` [N, P] holds the weights.

    compile: True compiles each epoch into one call; False runs the same steps eagerly (bmm);
    "auto" compiles when the run has at least COMPILE_MIN_STEPS steps.
    kernel: on a CPU with numba, "compiled" means engine/mlp_kernel.py (one machine-code loop per
    epoch, members as SIMD lanes) where it is the faster way (mlp_kernel.suits: small batches, or
    narrow networks; "always": everywhere); False (or no numba, or a GPU) compiles with torch.compile.
    threads: CPU threads while training; None picks 1 for tiny steps, where a second thread costs
    more in synchronisation than it saves (and much more on a busy machine).
    """

    def __init__(
        self,
        model_name: str,
        cfg: TrainConfig,
        seeds: list[int],
        device="cpu",
        dtype=None,
        compile: bool | str = "auto",
        threads: int | None = None,
        theta: torch.Tensor | None = None,
        kernel: bool | str = True,
    ):
        if cfg.loss != "mse" or cfg.augment:
            raise ValueError("the fast MLP path trains MSE without augmentation")
        if not supports(model_name):
            raise ValueError(f"{model_name} is not a one-output MLP the fast path supports")
        spec = spec_of_model(model_name)
        self.model_name, self.spec, self.cfg, self.seeds = model_name, spec, cfg, list(seeds)
        self.theta = init_flat(model_name, seeds, device, dtype) if theta is None else theta.detach().clone()
        n = self.theta.shape[0]
        if n != len(self.seeds):
            raise ValueError(f"{len(self.seeds)} seeds for {n} members")
        self.exp_avg = torch.zeros_like(self.theta)
        self.exp_avg_sq = torch.zeros_like(self.theta)
        self.lr = torch.as_tensor(cfg.lr, dtype=torch.float64).reshape(-1).expand(n).clone()
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.t = 0  # Adam steps taken
        self.epoch = 0
        self.history: dict[str, list] = {}
        self.diverged = torch.zeros(n, dtype=torch.bool)
        self.seconds = 0.0
        self.compile_seconds = 0.0  # first calls of each compiled shape (tracing + code generation)
        self.compile = compile
        self.threads = threads
        self.kernel = kernel
        self._kernel_warm = False
        self._fns: dict = {}  # (data shape, table length) -> compiled loop

    @property
    def n(self) -> int:
        return self.theta.shape[0]

    # ------------------------------------------------------------------ steps

    def _steps(self, xs, ys, scales: list[float]) -> torch.Tensor:
        """len(scales) Adam steps (lr factor scales[i] at step i) on batches xs[i % D], ys[i % D];
        returns the batch losses [steps, N]."""
        dt, dev, count = self.theta.dtype, self.theta.device, len(scales)
        # Adam's bias corrections in float64, as torch.optim.Adam computes them
        t = torch.arange(self.t + 1, self.t + count + 1, dtype=torch.float64)
        step_size = self.lr[None, :] * torch.tensor(scales, dtype=torch.float64)[:, None] / (1 - self.betas[0] ** t)[:, None]
        step_size, bc2_sqrt = step_size.to(dev, dt).unsqueeze(-1), (1 - self.betas[1] ** t).sqrt().to(dev, dt).view(-1, 1, 1)
        state = (self.theta, self.exp_avg, self.exp_avg_sq)
        if count >= MIN_COMPILED_RUN and self._kernel_on():
            t0 = time.perf_counter()
            opt = {"spec": self.spec, "weight_decay": self.cfg.weight_decay, "betas": self.betas, "eps": self.eps}
            self.theta, self.exp_avg, self.exp_avg_sq, losses = mlp_kernel.run_adam_steps(
                *state, xs, ys, step_size, bc2_sqrt, **opt
            )
            if not self._kernel_warm:  # the first call compiles (or loads numba's cache)
                self.compile_seconds += time.perf_counter() - t0
                self._kernel_warm = True
            self.t += count
            return losses
        if count >= MIN_COMPILED_RUN and self._compiling():
            size = max(count, xs.shape[0] if xs.shape[0] > 1 else FULL_BATCH_CHUNK)  # one table length per data shape
            pad = size - count
            if pad:
                step_size = torch.cat([step_size, step_size.new_zeros(pad, *step_size.shape[1:])])
                bc2_sqrt = torch.cat([bc2_sqrt, bc2_sqrt.new_ones(pad, 1, 1)])
            out = self._compiled_call(*state, torch.tensor(count, device=dev), xs, ys, step_size, bc2_sqrt)
            if out is not None:
                self.theta, self.exp_avg, self.exp_avg_sq, losses = out
                self.t += count
                return losses[:count]
        opt = {"spec": self.spec, "weight_decay": self.cfg.weight_decay, "betas": self.betas, "eps": self.eps}
        self.theta, self.exp_avg, self.exp_avg_sq, losses = train_steps(*state, count, xs, ys, step_size, bc2_sqrt, **opt)
        self.t += count
        return losses

    def _compiled_call(self, *args):
        """The compiled loop for these shapes (compiling it on first use, timed); None if the
        compiler fails, after which this trainer runs eagerly."""
        key = (tuple(args[4].shape), args[6].shape[0], args[0].dtype)
        fn = self._fns.get(key)
        if fn is not None:
            return fn(*args)
        t0 = time.perf_counter()
        try:
            fn = _compiled(self.spec, self.cfg.weight_decay, self.betas, self.eps, torch.get_num_threads(), args[0].device.type)
            out = fn(*args)
        except Exception as e:  # the compiler failed: the same steps run eagerly
            warn_once(
                f"torch.compile failed for the fast MLP path ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running "
                "eagerly"
            )
            self.compile = False
            return None
        self.compile_seconds += time.perf_counter() - t0
        self._fns[key] = fn
        return out

    def _compiling(self) -> bool:
        if self.compile == "auto":
            self.compile = (self.cfg.epochs - self.epoch) * self._steps_per_epoch >= COMPILE_MIN_STEPS
        return bool(self.compile)

    def _kernel_on(self) -> bool:
        """Whether compiled steps run as the numba kernel (engine/mlp_kernel.py: on a CPU, 4-7x less
        time per step than torch.compile's loop for narrow networks) rather than torch.compile's."""
        suits = self.kernel == "always" or (self.kernel and mlp_kernel.suits(self.spec, self.cfg.batch_size))
        return bool(suits) and mlp_kernel.usable(self.theta) and self._compiling()

    def _threads_for(self, x: torch.Tensor) -> int:
        if self.threads:
            return self.threads
        work = self.n * min(self.cfg.batch_size, x.shape[0]) * max(self.spec.widths)
        return 1 if work < 1 << 17 or x.device.type != "cpu" else torch.get_num_threads()

    # ------------------------------------------------------------------ epochs

    def epoch_batches(self, x: torch.Tensor, y: torch.Tensor):
        """This epoch's data for all members, in the Trainer's order: a list of (xs [S, N, B, in],
        ys [S, N, B]) runs of equal batch size (a shorter last batch is a run of its own)."""
        n_ex, bsz, dev = x.shape[0], self.cfg.batch_size, x.device
        if bsz >= n_ex:  # one full batch: its mean loss does not depend on the order
            perms = torch.arange(n_ex, device=dev).expand(self.n, n_ex)
        else:
            perms = torch.stack(
                [torch.randperm(n_ex, generator=epoch_generator(s, self.epoch, dev), device=dev) for s in self.seeds]
            )
        xs, ys = x[perms], y.gather(1, perms)  # [N, n, in], [N, n]
        b = min(bsz, n_ex)
        full = n_ex // b * b
        runs = [
            (xs[:, :full].reshape(self.n, -1, b, x.shape[1]).transpose(0, 1), ys[:, :full].reshape(self.n, -1, b).transpose(0, 1))
        ]
        if full < n_ex:
            runs.append((xs[None, :, full:], ys[None, :, full:]))
        return [(u.contiguous(), v.contiguous()) for u, v in runs]

    def _data(self, x, y):
        self._steps_per_epoch = -(-x.shape[0] // self.cfg.batch_size)
        return x.to(self.theta.dtype), y.to(self.theta.dtype).expand(self.n, x.shape[0])

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One pass over the data for every member; returns the mean mini-batch loss [N]."""
        x, y = self._data(x, y)
        scale = step_lr_scale(self.epoch, self.cfg.lr_step, self.cfg.lr_gamma)
        with _num_threads(self._threads_for(x)):
            losses = [self._steps(xs, ys, [scale] * xs.shape[0]) for xs, ys in self.epoch_batches(x, y)]
        self.epoch += 1
        return torch.cat(losses).mean(0)

    def train_full_batch(self, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.Tensor:
        """`epochs` full-batch epochs (one step each) in one call; returns each step's loss
        [epochs, N], i.e. the full-data loss before each step."""
        if self.cfg.batch_size < x.shape[0]:
            raise ValueError("train_full_batch needs batch_size >= the number of examples")
        x, y = self._data(x, y)
        scales = [step_lr_scale(e, self.cfg.lr_step, self.cfg.lr_gamma) for e in range(self.epoch, self.epoch + epochs)]
        with _num_threads(self._threads_for(x)):
            losses = self._steps(x.expand(1, self.n, *x.shape), y.unsqueeze(0), scales)
        self.epoch += epochs
        return losses

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Full-data MSE per member [N]."""
        self._steps_per_epoch = -(-x.shape[0] // self.cfg.batch_size)
        if self._kernel_on():  # the same arithmetic as the kernel's training steps
            return mlp_kernel.run_mse(self.theta, self.spec, x, y.to(self.theta.dtype).expand(self.n, x.shape[0]))
        return (self.predict(x) - y.to(self.theta.dtype)).square().mean(1)

    mse = evaluate  # the name both trainers answer to (engine/entry.py)

    @property
    def n_params(self) -> int:
        return self.spec.n_params

    @torch.no_grad()
    def gradient(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Each member's full-data MSE and the norm of its gradient (the data loss alone), in
        float64 and in closed form (flat_mlp.full_batch_grad_norm), as float32 on the CPU:
        {"loss" [N], "grad_norm" [N]}. batch_size: unused (one pass)."""
        loss, norm = full_batch_grad_norm(self.theta, self.spec, x, y)
        return {"loss": loss.float().cpu(), "grad_norm": norm.float().cpu()}

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n]: each member's outputs on x [n, in]."""
        with _num_threads(self._threads_for(x)):
            return forward(self.theta, self.spec, x.to(self.theta.dtype)).squeeze(-1)

    # ------------------------------------------------------------------ the whole run

    def run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        checkpoint: Checkpointer | None = None,
        on_epoch: Callable[["FastMLPTrainer"], None] | None = None,
        evaluate: bool | str | Callable[["FastMLPTrainer"], dict] | None = True,
    ) -> dict[str, list]:
        """Train for cfg.epochs, recording at epoch 0 and after each epoch the full-data loss
        (evaluate True or "mse") or what evaluate(trainer) returns (a callable, as `Trainer.run`
        takes); resumes from and saves to the checkpoint as `Trainer.run` does. With a full batch,
        epochs run FULL_BATCH_CHUNK at a time (on_epoch and the checkpoint are called once per
        chunk, and a callable evaluate is refused), and the full-data loss after epoch e is the
        loss the next step measured."""
        full_batch = self.cfg.batch_size >= x.shape[0]
        measure = evaluate if callable(evaluate) else None
        evaluate = evaluate in (True, "mse")
        if measure is not None and full_batch:
            raise ValueError("a full batch trains its epochs in chunks: no evaluation after every epoch")
        state = checkpoint.load() if checkpoint else None
        if state is not None and state.get("kind") == "fast_mlp":
            self.load_state_dict(state)
        elif evaluate:
            self._record({"loss": self.evaluate(x, y)})
        elif measure is not None:
            self._record(measure(self))
        while self.epoch < self.cfg.epochs:
            t0 = time.perf_counter()
            if full_batch:
                losses = self.train_full_batch(x, y, min(FULL_BATCH_CHUNK, self.cfg.epochs - self.epoch))
                for i in range(len(losses)):
                    self._record({"batch_loss": losses[i]})
                    if evaluate:
                        self._record({"loss": losses[i + 1] if i + 1 < len(losses) else self.evaluate(x, y)})
                batch_loss = losses.mean(0)
            else:
                batch_loss = self.train_epoch(x, y)
                self._record({"batch_loss": batch_loss})
                if evaluate:
                    self._record({"loss": self.evaluate(x, y)})
                elif measure is not None:
                    self._record(measure(self))
            self.diverged |= ~torch.isfinite(batch_loss.cpu())
            self.seconds += time.perf_counter() - t0
            if on_epoch:
                on_epoch(self)
            if checkpoint:
                checkpoint.save(self.state_dict(), force=self.epoch == self.cfg.epochs)
                last = self.history.get("loss", self.history["batch_loss"])[-1]
                finite = last[torch.isfinite(last)]
                checkpoint.progress(
                    self.epoch, self.cfg.epochs, f"loss {finite.mean().item():.4g}" if len(finite) else "loss nan"
                )
        return self.history

    def _record(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v.detach().cpu())

    def state_dict(self) -> dict:
        return {
            "kind": "fast_mlp",
            "epoch": self.epoch,
            "t": self.t,
            "theta": self.theta.clone(),
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "history": self.history,
            "diverged": self.diverged,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        dev, dt = self.theta.device, self.theta.dtype
        self.epoch, self.t = state["epoch"], state["t"]
        self.theta, self.exp_avg, self.exp_avg_sq = (state[k].to(dev, dt) for k in ("theta", "exp_avg", "exp_avg_sq"))
        self.history = state["history"]
        self.diverged = state["diverged"]
        self.seconds = state.get("seconds", 0.0)

    # ------------------------------------------------------------------ as ordinary modules

    def params(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's parameters by module name (e.g. "0.weight")."""
        out = {}
        for l, (w, b) in enumerate(_layers(self.theta, self.spec)):
            out[f"{2 * l}.weight"], out[f"{2 * l}.bias"] = w[i], b[i]
        return out

    def member(self, i: int) -> nn.Module:
        """Member i as an ordinary nn.Module (a copy)."""
        with torch.random.fork_rng(devices=[]):
            m = models.build(self.model_name).to(self.theta.device, self.theta.dtype)
        with torch.no_grad():
            for k, p in m.named_parameters():
                p.copy_(self.params(i)[k])
        return m


# --------------------------------------------------------------------------- compiling


_COMPILED: dict = {}


def _compiled(spec: MLPSpec, weight_decay: float, betas, eps: float, threads: int, device_type: str) -> Callable:
    """The compiled train_loop for one architecture, optimizer setting and thread count, kept for
    the process. dynamic=False: each shape is compiled for itself, which is what lets a step
    become one fused loop nest. On a CPU the wrapper around the kernels is C++ too
    (cpp_wrapper), so the while_loop runs without Python: ~4x less time per step."""
    key = (spec, weight_decay, betas, eps, threads, device_type)
    if key not in _COMPILED:
        allow_recompiles()  # every architecture and shape is a recompilation of the same function

        def loop(*args):
            return train_loop(*args, spec=spec, weight_decay=weight_decay, betas=betas, eps=eps)

        options = {"cpp.threads": threads, "cpp_wrapper": True, "realize_reads_threshold": 16} if device_type == "cpu" else {}
        _COMPILED[key] = torch.compile(loop, dynamic=False, fullgraph=True, options=options)
    return _COMPILED[key]
