"""Training loops: the vectorized ensemble trainer used by every experiment, and a plain
one-model PyTorch loop that serves as the reference it is tested (and benchmarked) against.

Randomness is explicit: member i's shuffle order and augmentation in epoch e come from a
generator seeded with (seeds[i], e) alone, so an interrupted training that resumes from the
checkpoint of epoch e repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data import random_crop_flip
from ..losses import loss_per_member  # noqa: F401 (the trainer's loss; others import it from here)
from . import accel
from .ensemble import Ensemble
from .optim import BatchedAdam, step_lr_scale


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float | list[float]  # one value, or one per member
    weight_decay: float = 0.0
    lr_step: int | None = None  # StepLR step size in epochs; None keeps lr constant
    lr_gamma: float = 0.1
    augment: bool = False  # random crop (reflect pad 4) + horizontal flip
    loss: str = "ce"  # "ce" (cross-entropy on the model's output) or "mse"
    amp: bool = False  # forward and backward under bf16 autocast (weights and Adam stay float32)
    compile: bool | str = "auto"  # compile forward + loss (+ backward): "auto" = on CUDA (accel.py)

    @classmethod
    def from_settings(cls, settings: dict, prefix: str = "", **overrides) -> "TrainConfig":
        """The training configuration an experiment's settings declare: each field from overrides,
        else from settings[prefix + field] where the settings have that key, else its default
        (e.g. prefix "mlp_": mlp_epochs, mlp_lr, ...). An lr_step of 0 means none."""
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"TrainConfig has no field {', '.join(sorted(unknown))}")
        values = {k: settings[prefix + k] for k in names if prefix + k in settings} | overrides
        values["lr_step"] = values.get("lr_step") or None
        return cls(**values)


def epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    """The generator that drives shuffling and augmentation of one member in one epoch."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


# The layout of Trainer.state_dict(); a checkpoint in another layout (an older dlscope's) is
# dropped and the trial starts over. Raise it whenever the layout changes.
CHECKPOINT_FORMAT = 2


class Checkpointer(Protocol):
    def load(self) -> dict | None: ...
    def save(self, state: dict, force: bool = False) -> None: ...
    def progress(self, done: int, total: int, info: str = "") -> None: ...


class Trainer:
    """Trains an Ensemble on device-resident data, one program for all members.

    Data: x [n, ...] shared by all members; y [n] shared, or [N, n] one target vector per member
    (func-fit's two functions, random-labels' seeded labels).
    """

    def __init__(self, ens: Ensemble, cfg: TrainConfig, seeds: list[int]):
        if len(seeds) != ens.n:
            raise ValueError(f"{len(seeds)} seeds for {ens.n} members")
        self.ens, self.cfg, self.seeds = ens, cfg, list(seeds)
        self.opt = BatchedAdam(ens.parameters(), cfg.lr, cfg.weight_decay)
        self.epoch = 0  # epochs completed
        self.history: dict[str, list] = {}
        self.diverged = torch.zeros(ens.n, dtype=torch.bool)
        self.seconds = 0.0
        self._compiled: accel.CompiledStep | None = None
        dev = ens.params[next(iter(ens.params))].device
        if ens.mode == "vmap" and accel.should_compile(cfg.compile, dev):
            self._compiled = compiled_batch_loss(ens.module, cfg.loss, cfg.amp, dev)

    @property
    def n(self) -> int:
        return self.ens.n

    @property
    def n_params(self) -> int:
        return self.ens.n_params()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n]: each member's outputs on x [n, ...] (a one-output model)."""
        return self.ens.forward_shared(x).reshape(self.ens.n, -1)

    def mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Full-data MSE per member [N]; y [n] or [N, n]."""
        return evaluate_regression(self.ens, x, y)

    def gradient(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Each member's full-data loss (cfg.loss) and the norm of its gradient (the data loss
        alone), by autograd over chunks of batch_size examples (all at once if None):
        {"loss", "grad_norm"} ([N] each, on the CPU), plus "acc" for cross-entropy."""
        from ..analysis.gradient import ensemble_gradient

        return ensemble_gradient(self.ens, x, y, loss=self.cfg.loss, batch_size=batch_size or len(x))

    def _batch_loss(self, xb, yb) -> torch.Tensor:
        """The loss of every member on its own batch [N]: what one training step differentiates."""
        if self._compiled is not None:  # the parameters are explicit inputs of the compiled graph
            return self._compiled(self.ens.params, self.ens.buffers, xb, yb)
        with accel.autocast(xb.device, self.cfg.amp):
            out = self.ens(xb)
        return loss_per_member(out.float() if self.cfg.amp else out, yb, self.cfg.loss)

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One pass over the data for every member; returns the mean mini-batch loss [N]."""
        ens, cfg, dev = self.ens, self.cfg, x.device
        n_ex = x.shape[0]
        y = y.expand(ens.n, n_ex) if y.dim() == 1 else y
        gens = [epoch_generator(s, self.epoch, dev) for s in self.seeds]
        perms = torch.stack([torch.randperm(n_ex, generator=g, device=dev) for g in gens])
        rows = torch.arange(ens.n, device=dev)[:, None]
        scale = step_lr_scale(self.epoch, cfg.lr_step, cfg.lr_gamma)
        total = torch.zeros(ens.n, device=dev)
        steps = 0
        for start in range(0, n_ex, cfg.batch_size):
            idx = perms[:, start : start + cfg.batch_size]
            xb = x[idx]  # [N, B, ...]
            if cfg.augment:
                xb = torch.stack([random_crop_flip(xb[i], gens[i]) for i in range(ens.n)])
            if ens.n == 1 or ens.mode == "loop":  # members run one by one: each on its own images
                xb = cpu_conv_layout(xb)
            loss = self._batch_loss(xb, y[rows, idx])
            self.opt.zero_grad()
            loss.sum().backward()  # member i's gradient is that of its own mean loss
            self.opt.step(scale)
            total += loss.detach()
            steps += 1
        self.epoch += 1
        return total / steps

    # ------------------------------------------------------------------ the whole run

    def run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        evaluate: Callable[["Trainer"], dict] | str | None = None,
        checkpoint: Checkpointer | None = None,
        on_epoch: Callable[["Trainer"], None] | None = None,
    ) -> dict[str, list]:
        """Train for cfg.epochs, calling evaluate(trainer) at epoch 0 (initialisation) and after
        every epoch; its dict of per-member values is appended to self.history (evaluate="mse":
        the full-data MSE as "loss", as the fast path records it). Resumes from the checkpoint if
        there is one, and saves one as it goes."""
        if evaluate == "mse":

            def evaluate(t: "Trainer") -> dict:
                return {"loss": t.mse(x, y)}

        state = checkpoint.load() if checkpoint else None
        if state is not None and not self.fits(state):
            state = None  # an older format, or another model's: start over
        if state is not None:
            self.load_state_dict(state)
        elif evaluate is not None:
            self._record(evaluate(self))
        while self.epoch < self.cfg.epochs:
            t0 = time.perf_counter()
            train_loss = self.train_epoch(x, y)
            self._record({"batch_loss": train_loss})
            if evaluate is not None:
                self._record(evaluate(self))
            self.diverged |= ~torch.isfinite(train_loss.cpu())
            self.seconds += time.perf_counter() - t0
            if on_epoch:
                on_epoch(self)
            if checkpoint:
                checkpoint.save(self.state_dict(), force=self.epoch == self.cfg.epochs)
                checkpoint.progress(self.epoch, self.cfg.epochs, self._progress_info())
        return self.history

    def _record(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v.detach().cpu() if torch.is_tensor(v) else v)

    def _progress_info(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if k in ("train_loss", "loss", "batch_loss") and torch.is_tensor(v[-1])}
        if not last:
            return ""
        k, v = next(iter(last.items()))
        finite = v[torch.isfinite(v)]
        return f"{k} {finite.mean().item():.4g}" if len(finite) else f"{k} nan"

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "ensemble": self.ens.state_dict(),
            "opt": self.opt.state_dict(),
            "history": self.history,
            "diverged": self.diverged,
            "seconds": self.seconds,
        }

    def fits(self, state) -> bool:
        """Whether a checkpoint is this trainer's: written in this format, for these members'
        parameters and optimizer, at an epoch within this training."""

        def shapes(tensors) -> list:  # a dict's or a list's tensor shapes
            items = sorted(tensors.items()) if isinstance(tensors, dict) else enumerate(tensors)
            return [(k, tuple(t.shape)) for k, t in items]

        mine = self.state_dict()
        try:
            return (
                state["format"] == CHECKPOINT_FORMAT
                and type(state["epoch"]) is int
                and 0 <= state["epoch"] <= self.cfg.epochs
                and all(shapes(state["ensemble"][k]) == shapes(mine["ensemble"][k]) for k in ("params", "buffers"))
                and all(shapes(state["opt"][k]) == shapes(mine["opt"][k]) for k in ("exp_avg", "exp_avg_sq"))
                and type(state["opt"]["t"]) is int
                and state["opt"]["lr"].shape == self.opt.lr.shape
                and isinstance(state["history"], dict)
                and state["diverged"].shape == self.diverged.shape
            )
        except (KeyError, TypeError, AttributeError):
            return False

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.ens.load_state_dict(state["ensemble"])
        self.opt.load_state_dict(state["opt"])
        self.history = state["history"]
        self.diverged = state["diverged"]
        self.seconds = state.get("seconds", 0.0)


_COMPILED_LOSSES: dict = {}


def compiled_batch_loss(template: nn.Module, loss: str, amp: bool, device: torch.device) -> accel.CompiledStep:
    """The compiled (params, buffers, xb [N, B, ...], yb [N, B]) -> loss [N] of a vmapped ensemble,
    one per architecture, loss, AMP and device for the whole process: every trial of the same
    architecture reuses it instead of compiling again (a new module object would fail the
    compiler's guards). functional_call replaces all of the template's weights, so which instance
    of the architecture serves as template does not matter."""
    key = (repr(template), loss, amp, str(device))
    if key not in _COMPILED_LOSSES:

        def call(p, b, x):
            return functional_call(template, {**p, **b}, (x,))

        def batch_loss(params, buffers, xb, yb):
            with accel.autocast(device, amp):
                out = vmap(call)(params, buffers, xb)
            return loss_per_member(out.float() if amp else out, yb, loss)

        _COMPILED_LOSSES[key] = accel.CompiledStep(batch_loss, device)
    return _COMPILED_LOSSES[key]


# --------------------------------------------------------------------------- evaluation


def cpu_conv_layout(x: torch.Tensor) -> torch.Tensor:
    """Images [B, C, H, W] (or [N, B, C, H, W]: each member's [B, C, H, W]) in channels_last on a
    CPU (float32): oneDNN's convolutions run faster in it (one cnn-7 training step: 37 -> 26 ms,
    measured). For members run one by one; vmap's grouped convolutions gain nothing from it."""
    if x.dim() not in (4, 5) or x.shape[-3] == 1 or x.device.type != "cpu" or x.dtype != torch.float32:
        return x
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@torch.inference_mode()
def evaluate_classifier(
    ens: Ensemble, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None
) -> dict[str, torch.Tensor]:
    """Full-data cross-entropy (on the model's output, as in training) and accuracy, per member.

    y may be [n] (shared) or [N, n] (per member, e.g. random labels)."""
    n = x.shape[0]
    batch_size = batch_size or eval_batch_size(x.device)
    y = y.expand(ens.n, n) if y.dim() == 1 else y
    loss = torch.zeros(ens.n, device=x.device, dtype=torch.float64)
    correct = torch.zeros(ens.n, device=x.device, dtype=torch.float64)
    for s in range(0, n, batch_size):
        xb = x[s : s + batch_size]
        out = ens.forward_shared(cpu_conv_layout(xb) if ens.n == 1 or ens.mode == "loop" else xb)
        yb = y[:, s : s + batch_size]
        loss += F.cross_entropy(out.flatten(0, 1), yb.reshape(-1), reduction="none").view(ens.n, -1).sum(1).double()
        correct += (out.argmax(-1) == yb).sum(1).double()
    return {"loss": (loss / n).float(), "acc": (correct / n).float()}


def eval_batch_size(device: torch.device) -> int:
    """Small batches stay in cache on a CPU (measured: 128 is ~2x faster than 1000); a GPU wants large ones."""
    return 4096 if device.type == "cuda" else 128


@torch.inference_mode()
def evaluate_regression(ens: Ensemble, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Full-data MSE per member; y [n] or [N, n]."""
    out = ens.forward_shared(x).reshape(ens.n, -1)
    return (out - y).pow(2).mean(1)


# --------------------------------------------------------------------------- the plain reference


def train_reference(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    on_epoch: Callable[[nn.Module, int], None] | None = None,
) -> list[float]:
    """One model, torch.optim.Adam, torch StepLR: the ordinary PyTorch loop, with the same data
    order and augmentation as the Trainer for the same seed. Returns the mean batch loss per epoch."""
    opt = torch.optim.Adam(
        model.parameters(), lr=float(cfg.lr if not isinstance(cfg.lr, list) else cfg.lr[0]), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma) if cfg.lr_step else None
    losses = []
    for epoch in range(cfg.epochs):
        g = epoch_generator(seed, epoch, x.device)
        perm = torch.randperm(len(x), generator=g, device=x.device)
        total, steps = 0.0, 0
        for s in range(0, len(x), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if cfg.augment:
                xb = random_crop_flip(xb, g)
            out = model(xb)
            loss = F.mse_loss(out.reshape(-1), yb) if cfg.loss == "mse" else F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        if sched:
            sched.step()
        losses.append(total / steps)
        if on_epoch:
            on_epoch(model, epoch)
    return losses
