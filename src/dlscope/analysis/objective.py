"""The loss of one model, or of every member of an ensemble, as a function of a flat parameter
vector: what every measure in `dlscope.analysis` differentiates.

    obj = Objective(model, data, loss="ce", mode="eval")
    obj.theta0                  # [N, P]: the members' parameters (N = 1 for an nn.Module)
    obj.loss(theta)             # [N]: the mean loss over all the data, per member
    obj.grad(theta)             # [N, P]
    obj.hvp(v)                  # [N, P] or [N, k, P]: Hessian-vector products at theta0
    obj.hessian(theta)          # [N, P, P]: the exact Hessian (small models)

Conventions shared by every measure:

* model: any nn.Module, or an ensemble, duck-typed: an object with `.module` (a template
  nn.Module), `.params` (name -> stacked [N, ...] tensors) and `.buffers` (name -> [N, ...]), as
  `dlscope.engine.Ensemble` has. Its members are evaluated together with torch.func.vmap.
* data: an `(x, y)` pair of tensors, or any iterable of `(x, y)` batches (a DataLoader). An
  iterable is read once and kept, so every evaluation sees the same batches. The loss is the mean
  over all examples (batches weighted by their size); `batch_size` only splits the work (in
  "eval" mode an (x, y) pair is split into chunks of EVAL_CHUNK examples unless it is given).
* loss: "mse", "ce" (cross-entropy on the model's output) or a callable (output, y) -> mean loss.
* mode: "eval" (default) or "train": the mode batch norm and dropout run in, recorded in every
  result. The measures work on a copy of the model, so the caller's model, its mode, weights and
  batch-norm statistics are never touched. In "train" mode batch norm normalises by the batch's
  own statistics and its running statistics are not updated.

Before an iterative method runs, `check_deterministic()` evaluates the loss twice: if the two
differ (dropout in "train" mode, say), it raises an error naming the first module whose output
differed, because a power iteration on a random function measures noise.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from ..losses import LossArg, mean_loss  # noqa: F401

MODES = ("eval", "train")


class NondeterministicObjective(RuntimeError):
    """Two evaluations of the loss at the same parameters differ."""


# In eval mode an (x, y) pair is worked through in chunks of this many examples: the same mean
# loss (to rounding), and on a CPU each Hessian-vector product of cnn-1 on 1,000 CIFAR-10 images
# takes half the time of one 1,000-image pass (its activations stay in cache; measured).
EVAL_CHUNK = 256


def as_batches(data, batch_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The data as a list of (x, y) batches: an (x, y) pair of tensors is split into chunks of
    batch_size (one chunk if None); any other iterable of (x, y) is read once, as it is."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples, y {len(y)}")
        size = batch_size or len(x)
        return [(x[s : s + size], y[s : s + size]) for s in range(0, len(x), size)]
    if not isinstance(data, Iterable):
        raise TypeError("data must be an (x, y) pair of tensors or an iterable of (x, y) batches")
    batches = []
    for item in data:
        x, y = item[0], item[1]
        batches.append((x, y))
    if not batches:
        raise ValueError("the data has no batches")
    return batches


def is_ensemble(model) -> bool:
    return not isinstance(model, nn.Module) and all(hasattr(model, a) for a in ("module", "params"))


class Objective:
    def __init__(
        self, model, data, loss: LossArg = "ce", mode: str = "eval", batch_size: int | None = None, hvp_backend: str = "graph"
    ):
        if hvp_backend not in ("graph", "forward"):
            raise ValueError(f"hvp_backend must be 'graph' or 'forward', not {hvp_backend!r}")
        self.hvp_backend, self._graph = hvp_backend, None
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.loss_fn, self.mode = loss, mode
        self.ensemble = is_ensemble(model)
        if self.ensemble:
            template = model.module
            params = {k: v.detach() for k, v in model.params.items()}
            buffers = {k: v.detach() for k, v in getattr(model, "buffers", {}).items()}
        else:
            template = model
            params = {k: p.detach()[None] for k, p in model.named_parameters() if p.requires_grad}
            buffers = {k: b.detach()[None] for k, b in model.named_buffers()}
        # A private copy in the requested mode: the caller's model is never changed.
        self.module = copy.deepcopy(template)
        self.module.train(mode == "train")
        if mode == "train":
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.track_running_stats = False  # batch statistics, and no running-stat update
        self.names = list(params)
        self.shapes = [params[k].shape[1:] for k in self.names]
        self.theta0 = torch.cat([params[k].reshape(len(params[k]), -1) for k in self.names], 1).clone()
        self.buffers = {k: v.clone() for k, v in buffers.items()}
        if batch_size is None and mode == "eval":  # in "train" mode batch norm sees the batch: keep it whole
            batch_size = EVAL_CHUNK
        self.batches = as_batches(data, batch_size)
        self._loss_batches = None  # the batches as loss() reads them (see loss)
        self.n_examples = sum(len(x) for x, _ in self.batches)
        self.n_hvp = 0  # Hessian-vector products computed so far, per member

    # ------------------------------------------------------------------ shapes

    @property
    def n(self) -> int:
        return self.theta0.shape[0]

    @property
    def dim(self) -> int:
        return self.theta0.shape[1]

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """One member's flat [P] vector -> {name: tensor}."""
        pieces = torch.split(theta, [s.numel() for s in self.shapes])
        return {k: v.view(s) for k, v, s in zip(self.names, pieces, self.shapes)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: [N, ...] or [...]} -> [N, P] (the inverse of unflatten, per member)."""
        rows = [tensors[k].reshape(-1, s.numel()) for k, s in zip(self.names, self.shapes)]
        return torch.cat(rows, 1)

    def member(self, i: int) -> "Objective":
        """Member i alone, as an objective of its own (the same module, data and mode, shared)."""
        sub = copy.copy(self)
        sub.theta0 = self.theta0[i : i + 1].clone()
        sub.buffers = {k: v[i : i + 1] for k, v in self.buffers.items()}
        sub._graph, sub.n_hvp = None, 0
        return sub

    # ------------------------------------------------------------------ one member, one batch

    def _member_loss(self, theta, buffers, x, y):
        out = functional_call(self.module, {**self.unflatten(theta), **buffers}, (x,))
        return mean_loss(out, y, self.loss_fn)

    def _member_hvp(self, theta, buffers, v, x, y):
        g = lambda t: grad(self._member_loss)(t, buffers, x, y)  # noqa: E731
        return jvp(g, (theta,), (v,))[1]

    def _over_data(self, fn: Callable, batches=None) -> torch.Tensor:
        """Σ_b (n_b / n) fn(x_b, y_b): the full-data mean from per-batch means."""
        total = None
        for x, y in self.batches if batches is None else batches:
            part = fn(x, y) * (len(x) / self.n_examples)
            total = part if total is None else total + part
        return total

    # ------------------------------------------------------------------ all members

    def loss(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """[N] mean loss per member at theta [N, P] (theta0 if None)."""
        theta = self.theta0 if theta is None else theta
        if self._loss_batches is None:
            # Images in channels-last layout: a forward pass of cnn-1 is ~2x faster on a CPU
            # (measured), the same numbers to rounding. Only here: it slows the HVP graph down.
            self._loss_batches = [
                (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x, y) for x, y in self.batches
            ]
        f = vmap(self._member_loss, in_dims=(0, 0, None, None), randomness="different")
        with torch.no_grad():
            return self._over_data(lambda x, y: f(theta, self.buffers, x, y), self._loss_batches)

    def grad(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """[N, P] gradient of each member's mean loss."""
        theta = self.theta0 if theta is None else theta
        g = vmap(grad(self._member_loss), in_dims=(0, 0, None, None), randomness="different")
        return self._over_data(lambda x, y: g(theta, self.buffers, x, y))

    def loss_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.func import grad_and_value

        f = vmap(grad_and_value(self._member_loss), in_dims=(0, 0, None, None), randomness="different")
        gs, ls = [], []
        for x, y in self.batches:
            g, l = f(theta, self.buffers, x, y)
            w = len(x) / self.n_examples
            gs.append(g * w)
            ls.append(l.detach() * w)
        return torch.stack(ls).sum(0), torch.stack(gs).sum(0)

    def hessian(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """[N, P, P] the exact Hessian of each member's mean loss (torch.func forward-over-reverse,
        summed over the batches, symmetrised: the halves differ only by rounding). Memory grows as
        P × batch size × the model's activations: for models up to a few thousand parameters."""
        theta = self.theta0 if theta is None else theta
        one = lambda t, buffers, x, y: torch.func.hessian(self._member_loss)(t, buffers, x, y)  # noqa: E731
        f = vmap(one, in_dims=(0, 0, None, None), randomness="different")
        H = self._over_data(lambda x, y: f(theta, self.buffers, x, y)).detach()
        return (H + H.transpose(1, 2)) / 2

    def hvp(self, v: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Hessian-vector products at theta (theta0 if None).
        v: [N, P] (one vector per member) or [N, k, P] (k vectors per member).

        At theta0 with hvp_backend "graph" (the default), PyHessian's way: the gradient's graph is
        built once, for all members and batches, and each product is one more backward pass
        through it (fastest on a CPU; memory: every batch's activations are kept). "forward":
        torch.func forward-over-reverse, batched with vmap, nothing kept between products."""
        if theta is None and self.hvp_backend == "graph":
            return self._graph_hvp(v)
        theta = self.theta0 if theta is None else theta
        v = v.to(theta.dtype)
        one = self._member_hvp
        if v.dim() == 3:
            one = vmap(one, in_dims=(None, None, 0, None, None), randomness="different")
            self.n_hvp += v.shape[1]
        else:
            self.n_hvp += 1
        batched = vmap(one, in_dims=(0, 0, 0, None, None), randomness="different")
        return self._over_data(lambda x, y: batched(theta, self.buffers, v, x, y)).detach()

    def _graph_hvp(self, v: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            theta = self.theta0.detach().clone().requires_grad_()
            total = 0.0
            for x, y in self.batches:  # member by member: plain (not grouped) convolutions
                for i in range(self.n):
                    buffers = {k: b[i] for k, b in self.buffers.items()}
                    total = total + self._member_loss(theta[i], buffers, x, y) * (len(x) / self.n_examples)
            (g,) = torch.autograd.grad(total, theta, create_graph=True)
            self._graph = (theta, g)
        theta, g = self._graph
        vs = v.to(theta.dtype)
        if vs.dim() == 2:
            self.n_hvp += 1
            return torch.autograd.grad(g, theta, grad_outputs=vs, retain_graph=True)[0].detach()
        self.n_hvp += vs.shape[1]
        return torch.stack(
            [torch.autograd.grad(g, theta, grad_outputs=vs[:, j], retain_graph=True)[0].detach() for j in range(vs.shape[1])], 1
        )

    # ------------------------------------------------------------------ checks

    def check_deterministic(self, rtol: float = 1e-6) -> None:
        """Evaluate the loss twice at theta0; raise NondeterministicObjective naming the first
        module whose output differed if the two values are not equal (to rtol)."""
        a, b = self.loss(), self.loss()
        if torch.allclose(a, b, rtol=rtol, atol=0, equal_nan=True):
            return
        culprit = self._first_differing_module()
        raise NondeterministicObjective(
            f"two evaluations of the loss at the same weights differ ({a.tolist()} vs {b.tolist()}) "
            f"in mode {self.mode!r}; the first module whose output differs is {culprit}. "
            "Use mode='eval', or make that module deterministic."
        )

    def _first_differing_module(self) -> str:
        x, _ = self.batches[0]
        params = {**self.unflatten(self.theta0[0]), **{k: v[0] for k, v in self.buffers.items()}}
        runs = []
        for _ in range(2):
            outs: list[tuple[str, torch.Tensor]] = []
            hooks = [
                m.register_forward_hook(lambda mod, i, o, name=name: outs.append((name, o)))
                for name, m in self.module.named_modules()
                if name and not list(m.children())
            ]
            try:
                with torch.no_grad():
                    functional_call(self.module, params, (x,))
            finally:
                for h in hooks:
                    h.remove()
            runs.append(outs)
        for (name, o1), (_, o2) in zip(*runs):
            if isinstance(o1, torch.Tensor) and not torch.equal(o1, o2):
                return f"{name!r} ({type(dict(self.module.named_modules())[name]).__name__})"
        return "none of the leaf modules (the loss function itself?)"

    def describe(self) -> dict:
        """What the numbers were computed on: recorded in every result."""
        return {
            "mode": self.mode,
            "loss_fn": self.loss_fn if isinstance(self.loss_fn, str) else getattr(self.loss_fn, "__name__", "callable"),
            "n_examples": self.n_examples,
            "n_params": self.dim,
            "members": self.n,
        }


def unbatch(value, obj: Objective):
    """A per-member result as the caller gave the model: the single entry for an nn.Module."""
    return value if obj.ensemble else value[0]
