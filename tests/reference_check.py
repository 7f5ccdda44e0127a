"""One check that several test modules share: a trained Trainer against the plain loop."""

import torch

from dlscope import models
from dlscope.engine import Trainer, train_reference


def assert_follows_reference(trainer: Trainer, model_name: str, x, y, loss_tol: tuple, param_tol: tuple | None = None):
    """Each member of `trainer` (trained on x, y) against `train_reference` from the same seed:
    the epochs' batch losses within loss_tol = (rtol, atol), and where param_tol is given the
    final weights within it."""
    for i, seed in enumerate(trainer.seeds):
        torch.manual_seed(seed)
        ref = models.build(model_name).to(x.device)
        losses = train_reference(ref, x, y, trainer.cfg, seed)
        got = torch.stack(trainer.history["batch_loss"])[:, i]
        torch.testing.assert_close(got, torch.tensor(losses, dtype=got.dtype), rtol=loss_tol[0], atol=loss_tol[1])
        if param_tol is not None:
            for k, p in ref.named_parameters():
                torch.testing.assert_close(trainer.ens.params[k][i].detach(), p.detach(), rtol=param_tol[0], atol=param_tol[1])
