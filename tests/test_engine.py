"""The vectorized engine against independent implementations: torch.optim.Adam, StepLR and the
plain one-model loop."""

import pytest
import torch
from reference_check import assert_follows_reference

from dlscope.engine import (
    BatchedAdam,
    Ensemble,
    Trainer,
    TrainConfig,
    evaluate_classifier,
    step_lr_scale,
)


def test_batched_adam_matches_torch_adam_per_member_lr():
    torch.manual_seed(0)
    lrs = [1e-2, 3e-3, 1e-4]
    init = torch.randn(3, 4, 5, dtype=torch.float64)
    stacked = init.clone().requires_grad_()
    opt = BatchedAdam([stacked], lrs, weight_decay=1e-2)
    singles = [init[i].clone().requires_grad_() for i in range(3)]
    topts = [torch.optim.Adam([p], lr=lr, weight_decay=1e-2) for p, lr in zip(singles, lrs)]
    targets = torch.randn(3, 4, 5, dtype=torch.float64)
    for step in range(20):
        opt.zero_grad()
        ((stacked - targets) ** 4).sum().backward()
        opt.step(lr_scale=0.1 if step >= 10 else 1.0)
        for i, (p, o) in enumerate(zip(singles, topts)):
            for g in o.param_groups:
                g["lr"] = lrs[i] * (0.1 if step >= 10 else 1.0)
            o.zero_grad()
            ((p - targets[i]) ** 4).sum().backward()
            o.step()
    for i in range(3):
        torch.testing.assert_close(stacked[i].detach(), singles[i].detach(), rtol=1e-12, atol=1e-14)


def test_step_lr_scale_matches_torch_steplr():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    for epoch in range(35):
        assert abs(opt.param_groups[0]["lr"] - step_lr_scale(epoch, 10, 0.1)) < 1e-15
        opt.step()
        sched.step()


def _ensemble_vs_reference(model_name, x, y, cfg, seeds):
    ens = Ensemble.from_seeds(model_name, seeds)
    trainer = Trainer(ens, cfg, seeds)
    trainer.run(x, y)
    assert_follows_reference(trainer, model_name, x, y, loss_tol=(1e-9, 1e-12), param_tol=(1e-8, 1e-10))


def test_ensemble_equals_one_by_one_mlp(float64):
    x = torch.linspace(-1, 1, 40).unsqueeze(1)
    y = torch.sin(3 * x[:, 0])
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-2, weight_decay=1e-4, loss="mse")
    _ensemble_vs_reference("mlp-mid", x, y, cfg, [0, 1, 2])


def test_ensemble_equals_one_by_one_cnn_with_augmentation_and_steplr(float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-3, weight_decay=1e-4, lr_step=2, augment=True)
    _ensemble_vs_reference("cnn-21", x, y, cfg, [3, 4])


def test_single_member_path_equals_reference(float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, weight_decay=1e-4)
    _ensemble_vs_reference("cnn-1", x, y, cfg, [7])


def test_per_member_targets_and_lrs_are_independent(float64):
    """Member i trained inside an ensemble equals member i trained alone (its own targets and lr)."""
    x = torch.linspace(-1, 1, 30).unsqueeze(1)
    y = torch.stack([torch.sin(3 * x[:, 0]), torch.sign(x[:, 0])])
    cfg = TrainConfig(epochs=2, batch_size=5, lr=[1e-2, 1e-3], loss="mse")
    both = Ensemble.from_seeds("mlp-shallow", [0, 1])
    Trainer(both, cfg, [0, 1]).run(x, y)
    alone = Ensemble.from_seeds("mlp-shallow", [1])
    Trainer(alone, TrainConfig(epochs=2, batch_size=5, lr=1e-3, loss="mse"), [1]).run(x, y[1])
    torch.testing.assert_close(both.flat()[1], alone.flat()[0], rtol=1e-10, atol=1e-12)


def test_evaluate_classifier_matches_plain_module():
    torch.manual_seed(0)
    x, y = torch.randn(50, 3, 32, 32), torch.randint(0, 10, (50,))
    ens = Ensemble.from_seeds("cnn-2", [0, 1])
    got = evaluate_classifier(ens, x, y, batch_size=16)
    for i in range(2):
        with torch.no_grad():
            out = ens.member(i)(x)
        torch.testing.assert_close(got["loss"][i], torch.nn.functional.cross_entropy(out, y), rtol=1e-5, atol=1e-6)
        assert abs(got["acc"][i].item() - (out.argmax(1) == y).float().mean().item()) < 1e-6


def test_nan_member_is_recorded_and_others_unaffected():
    x = torch.linspace(-1, 1, 20).unsqueeze(1)
    y = torch.sin(3 * x[:, 0])
    ens = Ensemble.from_seeds("mlp-mid", [0, 1])
    with torch.no_grad():
        ens.params["0.weight"][1] = float("nan")
    ref = Ensemble.from_seeds("mlp-mid", [0])
    cfg = TrainConfig(epochs=2, batch_size=5, lr=1e-2, loss="mse")
    t = Trainer(ens, cfg, [0, 1])
    t.run(x, y)
    Trainer(ref, cfg, [0]).run(x, y)
    assert t.diverged.tolist() == [False, True]
    torch.testing.assert_close(ens.flat()[0], ref.flat()[0])


def test_vmap_and_loop_modes_agree(float64):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=[1e-3, 3e-3, 1e-4], augment=True)
    flat = []
    for mode in ("vmap", "loop"):
        ens = Ensemble.from_seeds("cnn-2", [0, 1, 2], mode=mode)
        Trainer(ens, cfg, [0, 1, 2]).run(x, y)
        flat.append(ens.flat())
    torch.testing.assert_close(flat[0], flat[1], rtol=1e-9, atol=1e-11)


def test_batched_adam_follows_a_replaced_or_rewritten_lr():
    """The shared lr is remembered between steps; replacing opt.lr (min-ratio's schedule) or
    writing into it must take effect at the next step, as in torch.optim.Adam."""
    init = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stacked = init.clone().requires_grad_()
    opt = BatchedAdam([stacked], 1e-2)
    singles = [init[i].clone().requires_grad_() for i in range(2)]
    topts = [torch.optim.Adam([p], lr=1e-2) for p in singles]
    schedule = [1e-2, 5e-3, 5e-3, 2e-3, 1e-3, 1e-3, 3e-2]
    for step, lr in enumerate(schedule):
        if step % 2:
            opt.lr = torch.full((2,), lr, dtype=torch.float64)  # a new tensor
        else:
            opt.lr.fill_(lr)  # in place
        opt.zero_grad()
        stacked.pow(4).sum().backward()
        opt.step()
        for p, o in zip(singles, topts):
            o.param_groups[0]["lr"] = lr
            o.zero_grad()
            p.pow(4).sum().backward()
            o.step()
    for i in range(2):
        torch.testing.assert_close(stacked[i].detach(), singles[i].detach(), rtol=1e-12, atol=1e-14)


def test_train_config_from_settings_reads_the_declared_fields_and_nothing_else():
    settings = {
        "epochs": 3,
        "batch_size": 8,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "lr_step": 0,
        "augment": True,
        "seeds": 4,
        "mlp_epochs": 7,
        "mlp_batch_size": 1,
        "mlp_lr": 4e-4,
    }
    assert TrainConfig.from_settings(settings) == TrainConfig(3, 8, 1e-3, 1e-4, None, augment=True)  # lr_step 0: none
    assert TrainConfig.from_settings(settings, loss="mse", lr=[1e-2, 1e-3]) == TrainConfig(
        3, 8, [1e-2, 1e-3], 1e-4, augment=True, loss="mse"
    )
    # a prefix reads only its own keys: the MLP's settings, not the CNNs' decay or augmentation
    assert TrainConfig.from_settings(settings, "mlp_", loss="mse") == TrainConfig(7, 1, 4e-4, loss="mse")
    with pytest.raises(TypeError, match="no field epoch"):
        TrainConfig.from_settings(settings, epoch=3)
