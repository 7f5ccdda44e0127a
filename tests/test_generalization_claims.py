"""The claims of random-labels, interpolation and sensitivity on synthetic results whose answer is
known: clearly shown, clearly not shown, and undecidable (the seeds disagree or are too few).
Every interpolation and sensitivity finding here is also recomputed from its own `sample` by the
second route of claims_check (scipy directly, or by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from claims_check import check, rank_rho
from dlscope import findings
from dlscope.experiments import interpolation, random_labels, sensitivity
from dlscope.experiments._base import resolve

SHOWN, NOT_SHOWN, INCONCLUSIVE = "shown", "not shown", "inconclusive"


def verdicts(found: list[dict]) -> dict:
    return {f["id"]: f["verdict"] for f in found}


def checked(found: list[dict]) -> list[dict]:
    """found, after each finding's numbers and verdict were reproduced by the second route."""
    for f in found:
        check(f)
    return found


# --------------------------------------------------------------------------- findings helpers


def test_within_decides_by_the_whole_interval():
    assert findings.within([0.10, 0.098, 0.102], 0.07, 0.13)[2] == SHOWN
    assert findings.within([0.50, 0.52, 0.55], 0.07, 0.13)[2] == NOT_SHOWN
    assert findings.within([0.05, 0.10, 0.15], 0.07, 0.13)[2] == INCONCLUSIVE  # straddles both edges
    assert findings.within([0.1], 0.07, 0.13)[2] == INCONCLUSIVE  # one seed: no interval
    value, ci, _, n = findings.within([0.1, float("nan"), 0.12], 0.07, 0.13)
    assert n == 2 and value == pytest.approx(0.11)
    # Student-t with 2 values (t = 12.7): wide, and honest about it
    want = stats.ttest_1samp([0.1, 0.12], 0.0).confidence_interval(0.95)
    assert ci == pytest.approx([want.low, want.high], abs=1e-12) and ci[0] < 0.07


def test_correlation_is_spearman_with_a_permutation_p():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + 0.3 * rng.normal(size=30)
    rho, ci, verdict, n = stat = findings.correlation(x, y)
    assert n == 30 and rho == pytest.approx(rank_rho(x, y), abs=1e-12)  # a second route to rho
    assert ci[0] <= rho <= ci[1] and verdict == SHOWN and stat.test == "spearman-permutation" and stat.p < 0.001
    assert findings.correlation(x, -y)[2] == NOT_SHOWN
    assert findings.correlation(x, rng.normal(size=30))[2] == INCONCLUSIVE  # unrelated
    assert findings.correlation([1, 2], [1, 2])[2] == INCONCLUSIVE  # too few points
    assert findings.correlation([1, 2, None, 4], [1, 2, 3, float("nan")])[3] == 2  # pairs with a gap dropped


@pytest.mark.parametrize("n", [7, 12])
def test_correlation_interval_and_p_by_a_second_route(n):
    """Fisher's z with Bonett & Wright's variance, by hand; the permutation p by enumerating every
    pairing (7 points) or by 20,000 random ones (12)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    y[:3] = y[0]  # ties, which share their average rank
    f = findings.Finding.from_stat(findings.correlation(x, y), "c", "claim", "src", "rho").as_dict()
    again = check(f)
    assert again["ci"] == pytest.approx(f["ci"], abs=1e-12) and f["sample"]["x"] == pytest.approx(list(x))


# --------------------------------------------------------------------------- random-labels


def curves(train_acc: list[list[float]], epochs: int) -> dict:
    """A fake random-labels trial result: given train-accuracy curves [seed][epoch 0..epochs];
    train loss falls as accuracy rises, test accuracy 10%, test loss rising."""
    acc = torch.tensor(train_acc).T  # [epochs + 1, seeds]
    n = acc.shape[1]
    t = torch.linspace(0, 1, epochs + 1)[:, None].expand(-1, n)
    return {
        "mnist-mlp": {
            "seeds": list(range(n)),
            "train_size": 100,
            "agreement_with_true": [0.1] * n,
            "train_acc": acc,
            "train_loss": 2.3 * (1 - acc) + 0.01,
            "test_acc": torch.full_like(acc, 0.1),
            "test_loss": 2.3 + 3 * t,
            "diverged": [False] * n,
        }
    }


def test_random_labels_final_is_the_window_mean_and_a_late_blow_up_is_flagged():
    cfg = resolve(random_labels, "quick")  # 150 epochs, final window 15
    rising = [min(1.0, e / 100) for e in range(151)]
    blow_up = list(rising)
    blow_up[143], blow_up[150] = 1.0, 0.85  # the example: 100% at epoch 143, 85% at 150
    table = random_labels.rows(cfg, curves([rising, blow_up, rising], 150))
    assert [r["unstable"] for r in table] == [False, True, False]
    assert table[1]["largest_train_acc_drop_in_window"] == pytest.approx(0.15)
    assert table[1]["last_epoch_train_acc"] == pytest.approx(0.85)
    assert table[1]["final_train_acc"] == pytest.approx(np.mean(blow_up[136:]), rel=1e-6)  # epochs 136..150
    found = random_labels.claims(cfg, table)
    assert verdicts(found) == {"memorises": SHOWN, "train-loss-falls": SHOWN, "test-at-chance": SHOWN, "test-loss-rises": SHOWN}
    assert "unstable seed(s) [1]" in found[0]["note"]


def test_random_labels_not_memorised_and_undecided():
    cfg = resolve(random_labels, "quick")
    slow = [0.1 + 0.2 * e / 150 for e in range(151)]  # stuck near 30%
    table = random_labels.rows(cfg, curves([slow] * 3, 150))
    assert verdicts(random_labels.claims(cfg, table))["memorises"] == NOT_SHOWN
    fast = [min(1.0, e / 100) for e in range(151)]
    table = random_labels.rows(cfg, curves([fast, slow, fast], 150))  # the seeds disagree
    assert verdicts(random_labels.claims(cfg, table))["memorises"] == INCONCLUSIVE
    table[0]["final_test_acc"], table[1]["final_test_acc"], table[2]["final_test_acc"] = 0.05, 0.10, 0.16
    assert verdicts(random_labels.claims(cfg, table))["test-at-chance"] == INCONCLUSIVE
    for r in table:
        r["final_test_acc"] = 0.6  # the true labels learnt: not at chance
    assert verdicts(random_labels.claims(cfg, table))["test-at-chance"] == NOT_SHOWN


# --------------------------------------------------------------------------- interpolation


def path_row(pair: str, a: float, b: float, rise_a: float, rise_b: float, dip: float = 0.2, keskar=None) -> dict:
    """An interpolation row whose train loss rises by rise_a / rise_b outward from the ends, and
    whose ends' Keskar sharpness is `keskar` (a, b) (default: the same as the rises)."""
    alpha = [-0.25, 0.0, 0.5, 1.0, 1.25]
    row = {
        "pair": pair,
        "a": a,
        "b": b,
        "alpha": alpha,
        "train_loss": [1.6 + rise_a, 1.6, 2.0, 1.7, 1.7 + rise_b],
        "test_acc": [0.4, 0.55, 0.55 - dip, 0.5, 0.45],
        "a_final_train_loss": 1.6,
        "b_final_train_loss": 1.7,
        "a_steps": 768,
        "b_steps": 200,
    }
    row["sharpness_a"] = interpolation.sharpness(row, "a", 0.25)
    row["sharpness_b"] = interpolation.sharpness(row, "b", 0.25)
    row["barrier"] = interpolation.barrier(row)
    row["a_keskar"], row["b_keskar"] = keskar or (rise_a, rise_b)
    return row


def test_interpolation_sharpness_and_barrier_of_a_known_path():
    row = path_row("batch", 32, 512, 0.05, 0.3)
    assert row["sharpness_a"] == pytest.approx(0.05) and row["sharpness_b"] == pytest.approx(0.3)
    assert row["barrier"] == pytest.approx(0.5 - 0.35)  # the worse end (0.5) minus the dip (0.35)


@pytest.mark.parametrize(
    "rises, expected",
    [
        ([(0.05, 0.3), (0.04, 0.2), (0.06, 0.25)], SHOWN),  # the large batch (b) rises more in every replicate
        ([(0.3, 0.05), (0.2, 0.04), (0.25, 0.06)], NOT_SHOWN),
        ([(0.05, 0.3), (0.3, 0.05), (0.1, 0.12)], INCONCLUSIVE),  # the replicates disagree
        ([(0.05, 0.3)], INCONCLUSIVE),  # one replicate: no spread
    ],
)
def test_interpolation_large_batch_sharper(rises, expected):
    cfg = {"sharpness_delta": 0.25}
    table = [path_row("batch", 32, 512, ra, rb) for ra, rb in rises]
    assert verdicts(checked(interpolation.claims(cfg, table)))["large-batch-sharper"] == expected
    # the same pairs written the other way round (a the large batch) give the same verdict
    flipped = [path_row("batch", 512, 32, rb, ra) for ra, rb in rises]
    assert verdicts(checked(interpolation.claims(cfg, flipped)))["large-batch-sharper"] == expected
    # the note says where each end's training ended: a flat end on a high plateau is no flat minimum
    note = checked(interpolation.claims(cfg, table))[0]["note"]
    assert "small batch 1.600 (768 steps), large batch 1.700 (200 steps)" in note


@pytest.mark.parametrize(
    "rises, expected",
    [
        ([(0.3, 0.05), (0.2, 0.04), (0.25, 0.06)], SHOWN),  # the small lr (a) is sharper: the large lr flatter
        ([(0.05, 0.3), (0.04, 0.2), (0.06, 0.25)], NOT_SHOWN),
        ([(0.3, 0.05), (0.05, 0.3), (0.1, 0.12)], INCONCLUSIVE),
    ],
)
def test_interpolation_large_lr_flatter(rises, expected):
    table = [path_row("lr", 1e-3, 1e-2, ra, rb) for ra, rb in rises]
    found = verdicts(checked(interpolation.claims({"sharpness_delta": 0.25}, table)))
    assert found["large-lr-flatter"] == expected
    assert found["large-batch-sharper"] == INCONCLUSIVE  # that pair was not run


def test_interpolation_barrier_and_a_diverged_replicate():
    cfg = {"sharpness_delta": 0.25}
    assert (
        verdicts(checked(interpolation.claims(cfg, [path_row("batch", 32, 512, 0.1, 0.2, dip=d) for d in (0.2, 0.25, 0.3)])))[
            "barrier"
        ]
        == SHOWN
    )
    assert (
        verdicts(checked(interpolation.claims(cfg, [path_row("batch", 32, 512, 0.1, 0.2, dip=d) for d in (-0.1, -0.2, -0.1)])))[
            "barrier"
        ]
        == NOT_SHOWN
    )
    rows = [path_row("batch", 32, 512, 0.05, 0.3) for _ in range(3)]
    rows[0]["train_loss"][0] = float("nan")  # a diverged end: that replicate has no sharpness
    rows[0]["sharpness_a"] = interpolation.sharpness(rows[0], "a", 0.25)
    rows[0]["a_keskar"] = None  # (rows() gives a diverged end no curvature either)
    assert rows[0]["sharpness_a"] is None
    found = {f["id"]: f for f in checked(interpolation.claims(cfg, rows))}
    assert found["large-batch-sharper"]["n"] == 2 and "1 replicate(s) without a number" in found["large-batch-sharper"]["note"]


@pytest.mark.parametrize(
    "keskar, expected",
    [
        ([(1.0, 2.0), (1.2, 2.5), (0.9, 1.6)], SHOWN),  # the large batch (b) is sharper in every replicate
        ([(2.0, 1.0), (2.5, 1.2), (1.6, 0.9)], NOT_SHOWN),
        ([(1.0, 2.0), (2.5, 1.2), (1.1, 1.2)], INCONCLUSIVE),  # the replicates disagree
    ],
)
def test_large_batch_sharper_is_keskar_sharpness_not_the_line(keskar, expected):
    """large-batch-sharper is decided by each end's Keskar sharpness; the line's rise (here the
    opposite in every replicate) is its own finding."""
    table = [path_row("batch", 32, 512, 0.3, 0.05, keskar=k) for k in keskar]
    found = {f["id"]: f for f in checked(interpolation.claims({"sharpness_delta": 0.25}, table))}
    assert found["large-batch-sharper"]["verdict"] == expected
    diffs = [b - a for a, b in keskar]
    assert found["large-batch-sharper"]["value"] == pytest.approx(sum(diffs) / len(diffs))
    assert found["large-batch-line-sharper"]["verdict"] == NOT_SHOWN
    assert "Keskar" in found["large-batch-sharper"]["statistic"]


def test_large_batch_sharper_without_curvature_is_undecided():
    """Rows of a run that measured no curvature (an older run): no verdict, and the note says so."""
    table = [path_row("batch", 32, 512, 0.05, 0.3, keskar=(None, None)) for _ in range(3)]
    found = {f["id"]: f for f in checked(interpolation.claims({"sharpness_delta": 0.25}, table))}
    assert found["large-batch-sharper"]["verdict"] == INCONCLUSIVE and found["large-batch-sharper"]["n"] == 0
    assert "not measured" in found["large-batch-sharper"]["note"]
    assert found["large-batch-line-sharper"]["verdict"] == SHOWN


# --------------------------------------------------------------------------- sensitivity


def sweep_rows(sens: dict, gap=None, test_acc=None) -> list[dict]:
    """Rows of a batch sweep: sens[seed] = sensitivity per batch size 16, 64, 256, 1024."""
    out = []
    for seed, values in sens.items():
        for i, (b, s) in enumerate(zip((16, 64, 256, 1024), values)):
            g = gap[seed][i] if gap else 0.1
            acc = test_acc[seed][i] if test_acc else 0.5
            out.append(
                {
                    "sweep": "batch",
                    "batch_size": b,
                    "lr": 4e-4,
                    "seed": seed,
                    "sensitivity": s,
                    "train_acc": acc + g,
                    "test_acc": acc,
                    "acc_gap": g,
                    "loss_gap": g,
                    "diverged": False,
                }
            )
    return out


@pytest.mark.parametrize(
    "sens, expected",
    [
        ({0: [4, 3, 2, 1], 1: [5, 3, 2.5, 1], 2: [4, 3.5, 2, 0.5]}, SHOWN),  # falls in every seed
        ({0: [1, 2, 3, 4], 1: [1, 3, 3.5, 5], 2: [0.5, 2, 3, 4]}, NOT_SHOWN),  # rises in every seed
        ({0: [4, 3, 2, 1], 1: [1, 2, 3, 4], 2: [2, 4, 1, 3]}, INCONCLUSIVE),  # the seeds disagree
    ],
)
def test_sensitivity_falls_with_batch(sens, expected):
    assert verdicts(checked(sensitivity.claims({}, sweep_rows(sens))))["sensitivity-falls-with-batch"] == expected


def test_sensitivity_trend_leaves_out_a_configuration_that_diverged_in_every_seed():
    rows = sweep_rows({0: [9, 4, 3, 2], 1: [9, 5, 3, 2.5], 2: [9, 4, 3.5, 2]})
    for r in rows:
        if r["batch_size"] == 16:  # diverged in every seed (as the largest lr may)
            r["sensitivity"], r["diverged"] = None, True
    found = {f["id"]: f for f in checked(sensitivity.claims({}, rows))}
    f = found["sensitivity-falls-with-batch"]
    assert f["n"] == 3 and f["sample"]["x"] == [64.0, 256.0, 1024.0]  # every seed kept, the level left out


def test_sensitivity_trend_leaves_out_a_seed_with_a_diverged_configuration():
    rows = sweep_rows({0: [4, 3, 2, 1], 1: [5, 3, 2.5, 1], 2: [4, 3.5, 2, 0.5]})
    rows[5]["sensitivity"], rows[5]["diverged"] = None, True  # seed 1, batch 64
    found = {f["id"]: f for f in checked(sensitivity.claims({}, rows))}
    f = found["sensitivity-falls-with-batch"]
    assert f["n"] == 2 and f["verdict"] == SHOWN and "1 seed(s) left out" in f["note"]
    assert found["sensitivity-falls-with-lr"]["n"] == 0 and found["sensitivity-falls-with-lr"]["verdict"] == INCONCLUSIVE


def test_accuracy_falls_with_batch():
    sens = {s: [4, 3, 2, 1] for s in range(3)}
    falling = {s: [0.6, 0.58, 0.55, 0.5 - 0.01 * s] for s in range(3)}
    assert verdicts(checked(sensitivity.claims({}, sweep_rows(sens, test_acc=falling))))["accuracy-falls-with-batch"] == SHOWN
    rising = {s: [0.5, 0.52, 0.55, 0.6 + 0.01 * s] for s in range(3)}
    assert verdicts(checked(sensitivity.claims({}, sweep_rows(sens, test_acc=rising))))["accuracy-falls-with-batch"] == NOT_SHOWN


def test_sensitivity_tracks_gap_across_models():
    rng = np.random.default_rng(0)
    sens = {s: list(rng.uniform(0.1, 1.0, 4)) for s in range(3)}
    tracks = {s: [0.3 * v + 0.01 * rng.normal() for v in sens[s]] for s in range(3)}  # gap ~ sensitivity
    opposite = {s: [-g for g in tracks[s]] for s in range(3)}
    unrelated = {s: list(rng.uniform(0, 0.3, 4)) for s in range(3)}

    def verdict(gap):
        return verdicts(checked(sensitivity.claims({}, sweep_rows(sens, gap=gap))))["sensitivity-tracks-gap"]

    assert verdict(tracks) == SHOWN
    assert verdict(opposite) == NOT_SHOWN
    assert verdict(unrelated) == INCONCLUSIVE
    # the two original claims and Novak's get separate verdicts even where they disagree
    found = verdicts(
        checked(
            sensitivity.claims(
                {}, sweep_rows({s: [4, 3, 2, 1] for s in range(3)}, gap={s: [0.1, 0.2, 0.3, 0.4] for s in range(3)})
            )
        )
    )
    assert found["sensitivity-falls-with-batch"] == SHOWN and found["sensitivity-tracks-gap"] == NOT_SHOWN


# --------------------------------------------------------------------------- fair budgets


def test_side_budget_gives_every_side_at_least_min_steps():
    from dlscope.experiments._cifar import side_budget

    cfg = resolve(sensitivity, "quick")  # 2,048 images, >= 12 epochs, >= 200 steps, lr drop at 9 of 12
    for b in cfg["batch_sizes"] + [cfg["lr_sweep_batch_size"]]:
        budget = side_budget(cfg, b)
        per_epoch = math.ceil(2048 / b)
        assert budget["steps"] == budget["epochs_trained"] * per_epoch >= 200 and budget["epochs_trained"] >= 12
        assert budget["steps"] - per_epoch < max(200, 12 * per_epoch)  # no more whole epochs than needed
        assert budget["lr_step"] / budget["epochs_trained"] == pytest.approx(9 / 12, abs=0.02)  # the drop at the same fraction
    assert side_budget(cfg, 512)["epochs_trained"] == 50
    full = resolve(sensitivity, "full")  # SPEC: 25 epochs already give every side >= 300 steps
    assert all(side_budget(full, b)["epochs_trained"] == 25 for b in full["batch_sizes"] + [512])
    assert side_budget(full, 4096)["lr_step"] == 10
    cfg = resolve(interpolation, "quick")
    assert [side_budget(cfg, b)["steps"] for b in cfg["batch_sizes"]] == [768, 200]
    full = resolve(interpolation, "full")
    assert all(side_budget(full, b)["epochs_trained"] == 25 for b in full["batch_sizes"] + [512])


@pytest.mark.parametrize(
    "keskar, expected",
    [
        ([[1.0, 1.5, 2.0, 3.0], [0.8, 1.1, 1.9, 2.2], [1.2, 1.3, 1.4, 1.5]], SHOWN),  # rises with the batch in every seed
        ([[3.0, 2.0, 1.5, 1.0], [2.2, 1.9, 1.1, 0.8], [1.5, 1.4, 1.3, 1.2]], NOT_SHOWN),
        ([[1.0, 1.5, 2.0, 3.0], [3.0, 2.0, 1.5, 1.0], [1.0, 2.0, 1.5, 3.0]], INCONCLUSIVE),  # the seeds disagree
    ],
)
def test_sharpness_rises_with_batch(keskar, expected):
    rows = sweep_rows({s: [1.0, 0.9, 0.8, 0.7] for s in range(3)})
    for r in rows:
        r["keskar"] = keskar[r["seed"]][[16, 64, 256, 1024].index(r["batch_size"])]
    found = {f["id"]: f for f in checked(sensitivity.claims({}, rows))}["sharpness-rises-with-batch"]
    assert found["verdict"] == expected and found["n"] == 3
    assert found["value"] == pytest.approx(np.mean([rank_rho([16, 64, 256, 1024], k) for k in keskar]))


def test_sharpness_rises_with_batch_leaves_out_an_unmeasured_seed():
    rows = sweep_rows({s: [1.0, 0.9, 0.8, 0.7] for s in range(3)})
    for r in rows:
        r["keskar"] = float(r["batch_size"])
    next(r for r in rows if r["seed"] == 2)["keskar"] = None  # a diverged model has no sharpness
    found = {f["id"]: f for f in checked(sensitivity.claims({}, rows))}["sharpness-rises-with-batch"]
    assert found["n"] == 2 and "1 seed(s) left out" in found["note"]


# --------------------------------------------------------------------------- what n can detect


def test_a_consistent_but_noisy_difference_at_three_replicates_is_inconclusive_and_says_why():
    """Every replicate points the claimed way, but at n = 3 Student-t needs a mean of about 2.5
    standard deviations: the verdict is inconclusive and the note gives the smallest mean it could
    have shown (the Stat's `detectable`)."""
    keskar = [(1.0, 1.05), (1.0, 1.9), (1.0, 1.2)]  # b - a: 0.05, 0.9, 0.2
    table = [path_row("batch", 32, 512, 0.1, 0.1, keskar=k) for k in keskar]
    f = {f["id"]: f for f in checked(interpolation.claims({"sharpness_delta": 0.25}, table))}["large-batch-sharper"]
    assert f["verdict"] == INCONCLUSIVE and f["test"] == "paired-t" and f["sample"]["diffs"] == pytest.approx([0.05, 0.9, 0.2])
    assert "3 of 3 replicates point the claimed way" in f["note"]
    assert f"shows only means above {f['detectable']:.3g}" in f["note"] and f["detectable"] > f["value"]
    # the same differences, tighter: shown, and the note still says what this n could detect
    table = [path_row("batch", 32, 512, 0.1, 0.1, keskar=(1.0, b)) for b in (1.5, 1.6, 1.55)]
    f = {f["id"]: f for f in checked(interpolation.claims({"sharpness_delta": 0.25}, table))}["large-batch-sharper"]
    assert f["verdict"] == SHOWN and f"shows only means above {f['detectable']:.3g}" in f["note"]


def test_a_weak_trend_over_three_seeds_is_inconclusive_and_says_what_page_needs():
    sens = {0: [4, 3, 1, 2], 1: [3, 4, 2, 1], 2: [2, 3, 1, 4]}  # falling in 2 of 3 seeds, loosely
    f = {f["id"]: f for f in checked(sensitivity.claims({}, sweep_rows(sens)))}["sensitivity-falls-with-batch"]
    assert f["verdict"] == INCONCLUSIVE and f["test"] == "page-L" and 0 < f["value"] < f["detectable"]
    assert f["detectable"] == pytest.approx(0.7333, abs=1e-3)  # 3 seeds x 4 batch sizes
    assert "a mean ρ of about 0.73 is needed" in f["note"] and "falls in 2 of 3 seeds" in f["note"]
