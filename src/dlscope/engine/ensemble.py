"""N same-shaped models as one: stacked parameters and a vmapped functional forward.

Member i is initialised exactly as `models.build(name)` after `torch.manual_seed(seeds[i])`, so a
member is the same network a one-by-one training of that seed would start from.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from .. import models


class Ensemble:
    def __init__(
        self,
        module: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor] | None = None,
        mode: str = "auto",
    ):
        self.module = module  # a template: its own weights are never used
        self.params = params  # name -> [N, ...] leaf tensors with requires_grad
        self.buffers = buffers or {}
        self.n = next(iter(params.values())).shape[0]
        if mode == "auto":
            # vmap turns N convolutions into one grouped convolution, whose backward pass is about
            # 2x slower per member on a CPU than N plain ones (measured, cnn-1); on a GPU, and for
            # the tiny MLPs, one batched program wins.
            dev = next(iter(params.values())).device
            has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
            mode = "loop" if dev.type == "cpu" and has_conv else "vmap"
        if mode not in ("vmap", "loop"):
            raise ValueError(f"mode must be auto, vmap or loop, not {mode!r}")
        self.mode = mode

    @classmethod
    def from_members(cls, members: list[nn.Module], device="cpu", mode: str = "auto") -> "Ensemble":
        template = copy.deepcopy(members[0]).to(device)
        params = {
            k: torch.stack([dict(m.named_parameters())[k].detach() for m in members]).to(device).requires_grad_()
            for k, _ in members[0].named_parameters()
        }
        buffers = {
            k: torch.stack([dict(m.named_buffers())[k] for m in members]).to(device) for k, _ in members[0].named_buffers()
        }
        return cls(template, params, buffers, mode)

    @classmethod
    def from_seeds(cls, model_name: str, seeds: list[int], device="cpu", mode: str = "auto") -> "Ensemble":
        members = []
        for s in seeds:
            torch.manual_seed(s)
            members.append(models.build(model_name))
        return cls.from_members(members, device, mode)

    # ------------------------------------------------------------------ forward

    def _call(self, p, b, x):
        return functional_call(self.module, {**p, **b}, (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, B, ...], one batch per member -> [N, B, out]."""
        if self.n == 1 or self.mode == "loop":  # member by member (views of the stacked leaves)
            return torch.stack([self._call(self.member_tensors(i), self.member_buffers(i), x[i]) for i in range(self.n)])
        return vmap(self._call)(self.params, self.buffers, x)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, ...], the same batch for every member -> [N, B, out]."""
        if self.n == 1 or self.mode == "loop":
            return torch.stack([self._call(self.member_tensors(i), self.member_buffers(i), x) for i in range(self.n)])
        return vmap(self._call, in_dims=(0, 0, None))(self.params, self.buffers, x)

    __call__ = forward

    # ------------------------------------------------------------------ members and vectors

    def member_tensors(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.params.items()}

    def member_buffers(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.buffers.items()}

    def member(self, i: int) -> nn.Module:
        """A standalone copy of member i as an ordinary nn.Module."""
        m = copy.deepcopy(self.module)
        with torch.no_grad():
            for k, p in m.named_parameters():
                p.copy_(self.params[k][i])
            for k, b in m.named_buffers():
                b.copy_(self.buffers[k][i])
        return m

    def flat(self, names: list[str] | None = None) -> torch.Tensor:
        """[N, P]: each member's parameters (or only those named) as one vector, in module order."""
        keys = names or list(self.params)
        return torch.cat([self.params[k].detach().reshape(self.n, -1) for k in keys], dim=1)

    def n_params(self) -> int:
        return sum(v[0].numel() for v in self.params.values())

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()}, "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v)
