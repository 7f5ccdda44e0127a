"""The claims of cifar-depth, trajectory and param-count on synthetic results whose answer is known
(clearly shown, clearly not shown, undecidable), their geometry against hand computations, and
diverged runs: recorded as diverged, left out of the statistics and the PCA, never fatal."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from dlscope import findings as fd
from dlscope.analysis.pca import fit_pca
from dlscope.experiments import cifar_depth, param_count, trajectory
from dlscope.experiments._base import model_color, resolve
from dlscope.experiments._cifar import median_band, per_model_table


def by_id(found: list[dict]) -> dict:
    return {f["id"]: f for f in found}


# --------------------------------------------------------------------------- cifar-depth


def depth_rows(acc: dict, loss: dict | None = None) -> list[dict]:
    """Results rows from {model: [test accuracy per seed]} (None: diverged)."""
    rows = []
    for m, accs in acc.items():
        for seed, a in enumerate(accs):
            lo = None if a is None else (loss[m][seed] if loss else 2.5 - 2 * a)
            rows.append({"model": m, "seed": seed, "test_acc": a, "test_loss": lo, "diverged": a is None})
    return rows


def test_depth_claims_clearly_shown():
    acc = {"cnn-1": [0.40, 0.41, 0.39, 0.40], "cnn-2": [0.50, 0.49, 0.52, 0.50], "cnn-7": [0.60, 0.62, 0.61, 0.58]}
    f = by_id(cifar_depth.claims(depth_rows(acc)))
    assert {k: v["verdict"] for k, v in f.items()} == {
        "deeper-is-better": fd.SHOWN,
        "cnn-2-over-cnn-1": fd.SHOWN,
        "cnn-7-over-cnn-2": fd.SHOWN,
        "depth-ordering": fd.SHOWN,
        "lowest-loss-highest-accuracy": fd.SHOWN,
    }
    # the statistic by hand: per seed the smaller of the two deeper CNNs' leads, in points
    mins = [100 * (min(a2, a7) - a1) for a1, a2, a7 in zip(acc["cnn-1"], acc["cnn-2"], acc["cnn-7"])]
    assert f["deeper-is-better"]["value"] == pytest.approx(statistics.fmean(mins))
    assert f["deeper-is-better"]["n"] == 4 and f["deeper-is-better"]["ci"][0] > 0
    assert f["cnn-7-over-cnn-2"]["value"] == pytest.approx(100 * statistics.fmean(np.subtract(acc["cnn-7"], acc["cnn-2"])))
    assert f["lowest-loss-highest-accuracy"]["value"] == pytest.approx(1.0)
    # how each verdict was reached travels with it, and a second route agrees: scipy's t-test of the
    # paired leads, and scipy's exact Page test of the accuracies ordered by falling loss
    from scipy import stats

    t = stats.ttest_1samp(mins, 0.0)
    d = f["deeper-is-better"]
    assert d["test"] == "paired-t" and d["sample"]["diffs"] == pytest.approx(mins)
    assert d["ci"] == pytest.approx(list(t.confidence_interval(0.95))) and d["p"] == pytest.approx(t.pvalue / 2)
    assert d["detectable"] == pytest.approx(stats.t.ppf(0.975, 3) * np.std(mins, ddof=1) / 2)
    page = f["lowest-loss-highest-accuracy"]
    by_loss = [[acc[m][s] for m in ("cnn-1", "cnn-2", "cnn-7")] for s in range(4)]  # loss 2.5 - 2 acc: cnn-1 highest
    assert page["test"] == "page-L" and page["sample"]["x"] == [0, 1, 2] and np.allclose(page["sample"]["y"], by_loss)
    assert page["p"] == pytest.approx(stats.page_trend_test(by_loss, method="exact").pvalue) and page["p"] < 0.025
    assert page["n"] == 4


def test_depth_ordering_is_pages_test_over_the_original_order():
    # the order kept in all 3 seeds: p = 1/216 (Page, exact); one seed with cnn-2 above cnn-7: 0.032
    acc = {"cnn-1": [0.40, 0.41, 0.39], "cnn-2": [0.50, 0.49, 0.52], "cnn-7": [0.60, 0.62, 0.61]}
    f = by_id(cifar_depth.claims(depth_rows(acc)))["depth-ordering"]
    assert f["verdict"] == fd.SHOWN and f["p"] == pytest.approx(1 / 216) and "holds in 3 of 3 seeds" in f["note"]
    acc["cnn-2"][1] = 0.65
    f = by_id(cifar_depth.claims(depth_rows(acc)))["depth-ordering"]
    assert f["verdict"] == fd.INCONCLUSIVE and f["p"] == pytest.approx(0.032, abs=1e-3)
    acc["cnn-7"][2] = None  # diverged: that seed is left out
    f = by_id(cifar_depth.claims(depth_rows(acc)))["depth-ordering"]
    assert f["n"] == 2 and "1 seed(s) left out" in f["note"]


def test_depth_ordering_needs_page_not_a_bootstrap():
    """Three seeds that all rank loss and accuracy alike: Page's exact p = (1/6)^3 summed over the
    tail, 0.0046, shown. One swap in one seed: p = 0.032, inconclusive (the old mean-of-rho
    bootstrap called a rho of 0.5 in every seed shown)."""
    acc = {"cnn-1": [0.40, 0.41, 0.39], "cnn-2": [0.50, 0.49, 0.52], "cnn-7": [0.60, 0.62, 0.61]}
    f = by_id(cifar_depth.claims(depth_rows(acc)))["lowest-loss-highest-accuracy"]
    assert f["verdict"] == fd.SHOWN and f["p"] == pytest.approx(0.0046, abs=1e-4) and f["value"] == 1.0
    loss = {"cnn-1": [2.0, 2.0, 2.0], "cnn-2": [1.5, 1.0, 1.5], "cnn-7": [1.0, 1.5, 1.0]}  # seed 1: cnn-2, cnn-7 swapped
    f = by_id(cifar_depth.claims(depth_rows(acc, loss)))["lowest-loss-highest-accuracy"]
    assert f["verdict"] == fd.INCONCLUSIVE and f["p"] == pytest.approx(0.032, abs=1e-3)
    assert f["value"] == pytest.approx((1 + 0.5 + 1) / 3) and "rho = 1 (same order) in 2 of 3 seeds" in f["note"]
    assert "with 3 seeds × 3 levels" in f["note"]  # what this n could have shown


def test_depth_claims_clearly_not_shown():
    # cnn-1 best in every seed, and the lowest loss goes with the lowest accuracy
    acc = {"cnn-1": [0.60, 0.61, 0.62], "cnn-2": [0.50, 0.52, 0.51], "cnn-7": [0.40, 0.41, 0.42]}
    loss = {"cnn-1": [2.0, 2.1, 2.0], "cnn-2": [1.5, 1.4, 1.5], "cnn-7": [1.0, 1.1, 1.0]}
    f = by_id(cifar_depth.claims(depth_rows(acc, loss)))
    assert all(v["verdict"] == fd.NOT_SHOWN for v in f.values()), f
    assert f["lowest-loss-highest-accuracy"]["value"] == pytest.approx(-1.0)
    assert "0 of 3 seeds" in f["deeper-is-better"]["note"]


def test_depth_claims_undecidable_when_seeds_disagree_or_one_seed():
    acc = {"cnn-1": [0.50, 0.50, 0.50, 0.50], "cnn-2": [0.55, 0.45, 0.54, 0.46], "cnn-7": [0.55, 0.45, 0.54, 0.46]}
    f = by_id(cifar_depth.claims(depth_rows(acc)))
    assert f["deeper-is-better"]["verdict"] == f["cnn-2-over-cnn-1"]["verdict"] == fd.INCONCLUSIVE
    assert "2 of 4 seeds" in f["cnn-2-over-cnn-1"]["note"] and "still fell" not in f["cnn-2-over-cnn-1"]["note"]
    # the note names a model whose train loss was still falling at the end: the budget may not decide
    rows = depth_rows(acc)
    for r in rows:
        r.update(train_loss=1.5, train_loss_drop=0.05 if r["model"] == "cnn-2" else 0.001, drop_epochs=2)
    note = by_id(cifar_depth.claims(rows))["cnn-2-over-cnn-1"]["note"]
    assert "cnn-2's train loss still fell by 0.050 over its last 2 epochs" in note and "cnn-1's" not in note
    one = by_id(cifar_depth.claims(depth_rows({"cnn-1": [0.4], "cnn-2": [0.5], "cnn-7": [0.6]})))
    assert all(v["verdict"] == fd.INCONCLUSIVE and v["n"] == 1 and v["ci"] is None for v in one.values())
    assert "one seed only" in one["cnn-2-over-cnn-1"]["note"]
    assert "no ordering can reach p ≤ 0.025" in one["lowest-loss-highest-accuracy"]["note"]  # 1 seed × 3 models: min p 1/6
    # 3 seeds all ahead, but by 2, 12 and 1 points: Student-t at n = 3 needs a mean above 2.48 SD
    noisy = by_id(cifar_depth.claims(depth_rows({"cnn-1": [0.50, 0.50, 0.50], "cnn-2": [0.52, 0.62, 0.51], "cnn-7": [0.6] * 3})))
    assert (
        noisy["cnn-2-over-cnn-1"]["verdict"] == fd.INCONCLUSIVE and "ahead in 3 of 3 seeds" in noisy["cnn-2-over-cnn-1"]["note"]
    )
    assert "with n = 3 this design shows only means above" in noisy["cnn-2-over-cnn-1"]["note"]
    nothing = by_id(cifar_depth.claims([]))
    assert all(v["verdict"] == fd.INCONCLUSIVE and v["n"] == 0 and v["test"] for v in nothing.values())


def test_depth_claims_leave_out_a_diverged_seed_and_say_so():
    acc = {"cnn-1": [0.40, 0.41, None], "cnn-2": [0.50, 0.49, 0.52], "cnn-7": [0.60, 0.62, 0.61]}
    f = by_id(cifar_depth.claims(depth_rows(acc)))
    assert f["cnn-2-over-cnn-1"]["n"] == 2 and f["cnn-7-over-cnn-2"]["n"] == 3
    assert "1 seeds without a pair" in f["cnn-2-over-cnn-1"]["note"]
    assert f["cnn-2-over-cnn-1"]["value"] == pytest.approx(100 * ((0.50 - 0.40) + (0.49 - 0.41)) / 2)


def test_quick_and_full_profiles_train_three_seeds_per_model():
    for profile in ("quick", "full"):
        for module in (cifar_depth, param_count):
            cfg = resolve(module, profile)
            trials = module.trials(cfg)
            assert [t.settings["model"] for t in trials] == cfg["models"]  # one ensemble per model...
            assert all(t.settings["seeds"] >= 3 for t in trials)  # ...of at least 3 seeds
        assert resolve(trajectory, profile)["runs"] >= 3
    # issue 18: cifar-depth 3 seeds at quick (its time unchanged), 5 at full; trajectory's 8 runs
    assert [resolve(cifar_depth, p)["seeds"] for p in ("smoke", "quick", "full")] == [2, 3, 5]
    assert [resolve(trajectory, p)["runs"] for p in ("quick", "full")] == [8, 8]
    from dlscope.experiments import random_labels

    assert [resolve(random_labels, p)["seeds"] for p in ("smoke", "quick", "full")] == [3, 3, 5]
    # a fair comparison: every model of a run gets the same data, epochs, batch and seeds
    for module in (cifar_depth, param_count):
        args = [t.settings for t in module.trials(resolve(module, "quick"))]
        assert len({(a["train_size"], a["epochs"], a["batch_size"], a["lr"], a["seeds"], a["seed"]) for a in args}) == 1


# --------------------------------------------------------------------------- param-count


def count_rows(test_acc: list[list[float]], train_acc: list[list[float]] | None = None) -> list[dict]:
    """Rows from per-seed lists over the models in parameter order."""
    params = [11085, 12029, 29254, 130122, 425194]
    rows = []
    for seed, accs in enumerate(test_acc):
        for i, a in enumerate(accs):
            tr = train_acc[seed][i] if train_acc else (None if a is None else a + 0.01 * i)
            rows.append(
                {
                    "model": f"m{i}",
                    "params": params[i],
                    "seed": seed,
                    "test_acc": a,
                    "train_acc": tr,
                    "test_loss": None if a is None else 2 - 2 * a,
                    "diverged": a is None,
                }
            )
    return rows


def test_count_claims_clearly_shown():
    rows = count_rows([[0.30, 0.33, 0.36, 0.40, 0.45], [0.31, 0.32, 0.37, 0.41, 0.44], [0.29, 0.34, 0.35, 0.42, 0.46]])
    f = by_id(param_count.claims(rows))
    assert (
        f["more-params-better"]["verdict"]
        == f["more-params-lower-loss"]["verdict"]
        == f["gap-grows-with-params"]["verdict"]
        == fd.SHOWN
    )
    assert f["more-params-better"]["value"] == pytest.approx(1.0) and f["more-params-better"]["n"] == 3
    # Page's L, exact: 5 models in the same order in all 3 seeds, p = (1/5!)^3
    assert all(f[k]["test"] == "page-L" and f[k]["sample"]["y"] for k in f)
    assert f["more-params-better"]["p"] == pytest.approx(120.0**-3)
    # the gap is train - test accuracy of each row
    assert [r["gap"] for r in rows[:5]] == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])


def test_count_claims_clearly_not_shown():
    falling = [[0.45, 0.40, 0.36, 0.33, 0.30], [0.46, 0.41, 0.37, 0.32, 0.31], [0.44, 0.42, 0.35, 0.34, 0.29]]
    same_train = [[0.5] * 5] * 3  # train accuracy flat for every model
    f = by_id(param_count.claims(count_rows(falling, same_train)))
    assert f["more-params-better"]["verdict"] == f["more-params-lower-loss"]["verdict"] == fd.NOT_SHOWN
    assert f["more-params-better"]["value"] == pytest.approx(-1.0)
    assert f["gap-grows-with-params"]["verdict"] == fd.SHOWN  # flat train, falling test: a growing gap
    rising_test_flat_train = [[0.30, 0.33, 0.36, 0.40, 0.45]] * 3
    f = by_id(param_count.claims(count_rows(rising_test_flat_train, same_train)))
    assert f["gap-grows-with-params"]["verdict"] == fd.NOT_SHOWN


def test_count_claims_undecidable():
    opposite = [
        [0.30, 0.33, 0.36, 0.40, 0.45],
        [0.45, 0.40, 0.36, 0.33, 0.30],
        [0.30, 0.33, 0.36, 0.40, 0.45],
        [0.45, 0.40, 0.36, 0.33, 0.30],
    ]
    f = by_id(param_count.claims(count_rows(opposite)))
    assert f["more-params-better"]["verdict"] == fd.INCONCLUSIVE and f["more-params-better"]["value"] == pytest.approx(0.0)
    # one seed: a permutation test of its one rho; five models in a perfect order are significant
    f = by_id(param_count.claims(count_rows([[0.30, 0.33, 0.36, 0.40, 0.45]])))
    assert f["more-params-better"]["n"] == 1 and f["more-params-better"]["verdict"] == fd.SHOWN
    # a diverged cell is left out of its seed, not counted as a number
    rows = count_rows([[0.30, 0.33, None, 0.40, 0.45], [0.31, 0.32, 0.37, 0.41, 0.44]])
    f = by_id(param_count.claims(rows))
    assert f["more-params-better"]["n"] == 2 and f["more-params-better"]["value"] == pytest.approx(1.0)
    assert f["more-params-better"]["sample"]["x"] == [11085, 12029, 130122, 425194]  # the models common to both seeds
    assert "1 model(s) left out" in f["more-params-better"]["note"]
    # a seed with fewer than 3 models with a result is left out, not the models of the others
    rows = count_rows([[0.30, None, None, None, 0.45], [0.31, 0.32, 0.37, 0.41, 0.44], [0.29, 0.34, 0.35, 0.42, 0.46]])
    f = by_id(param_count.claims(rows))
    assert f["more-params-better"]["n"] == 2 and len(f["more-params-better"]["sample"]["x"]) == 5
    assert "1 seed(s) left out" in f["more-params-better"]["note"]
    f = by_id(param_count.claims(count_rows([[None] * 5, [None] * 5])))  # every cell diverged
    assert f["more-params-better"]["verdict"] == fd.INCONCLUSIVE and f["more-params-better"]["n"] == 0
    assert f["more-params-better"]["test"] == "page-L" and "no seed has 3 models" in f["more-params-better"]["note"]


# --------------------------------------------------------------------------- trajectory


def straight_runs(directions: list[list[float]], starts: list[list[float]], epochs: int = 4) -> dict:
    """Runs moving in straight lines, one unit of length per epoch: [epochs + 1, runs, P]."""
    d = torch.tensor(directions, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    s = torch.tensor(starts, dtype=torch.float64)
    pts = torch.stack([s + e * d for e in range(epochs + 1)]).float()
    runs = len(starts)
    return {
        "seeds": list(range(runs)),
        "whole": pts,
        "layer": pts[..., :2],
        "diverged": [False] * runs,
        "test_acc": torch.linspace(0.1, 0.4, epochs + 1)[:, None].repeat(1, runs),
        "test_loss": torch.linspace(2.3, 1.5, epochs + 1)[:, None].repeat(1, runs),
        "batch_loss": torch.linspace(2.2, 1.5, epochs)[:, None].repeat(1, runs),
    }


def test_run_geometry_by_hand():
    r = straight_runs([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 0], [10, 0, 0], [0, 30, 0]])
    geo = trajectory.run_geometry(r)
    assert [g["path_length"] for g in geo] == pytest.approx([4, 4, 4])
    assert [g["displacement"] for g in geo] == pytest.approx([4, 4, 4])
    assert geo[0]["nearest_start"] == pytest.approx(10)
    # ends: (4,0,0), (10,4,0), (0,30,4)
    assert geo[0]["nearest_end"] == pytest.approx(np.hypot(6, 4)) and geo[1]["nearest_end"] == pytest.approx(np.hypot(6, 4))
    assert geo[2]["nearest_end"] == pytest.approx(min(np.linalg.norm([4, 30, 4]), np.linalg.norm([10, 26, 4])))
    assert all(g["own_pc12"] == pytest.approx(1.0) for g in geo)  # a straight line lies in one direction


def test_trajectory_claims_shown_not_shown_undecidable():
    apart = [{"nearest_end": 10.0 + i, "path_length": 2.0, "own_pc12": 0.9} for i in range(4)]
    together = [{"nearest_end": 0.5 + 0.1 * i, "path_length": 2.0, "own_pc12": 0.2} for i in range(4)]
    mixed = [{"nearest_end": x, "path_length": 1.0, "own_pc12": y} for x, y in ((3, 0.9), (0.2, 0.1), (2.5, 0.8), (0.3, 0.2))]
    for rows, verdict in ((apart, fd.SHOWN), (together, fd.NOT_SHOWN), (mixed, fd.INCONCLUSIVE)):
        f = by_id(trajectory.claims(rows, joint_pc12=0.28))
        assert f["runs-end-apart"]["verdict"] == verdict and f["paths-nearly-planar"]["verdict"] == verdict
        assert "28.0%" in f["paths-nearly-planar"]["note"]  # the figure's explained variance, stated
        for x in f.values():  # how each verdict was reached travels with it
            assert x["test"] == "paired-t" and x["n"] == 4 and x["detectable"] is not None and x["p"] is not None
    f = by_id(trajectory.claims(apart))
    assert f["runs-end-apart"]["value"] == pytest.approx(statistics.fmean([5, 5.5, 6, 6.5]))
    # the interval and p by a second route: scipy's one-sample t-test of the ratios against 1
    from scipy import stats

    t = stats.ttest_1samp([5, 5.5, 6, 6.5], 1.0, alternative="greater")
    assert f["runs-end-apart"]["p"] == pytest.approx(t.pvalue)
    assert f["runs-end-apart"]["ci"] == pytest.approx(list(stats.ttest_1samp([5, 5.5, 6, 6.5], 0).confidence_interval(0.95)))
    assert f["runs-end-apart"]["sample"] == {"diffs": pytest.approx([5, 5.5, 6, 6.5]), "margin": 1.0, "negligible": 0.0}
    # mixed runs: the note says what this n could have shown
    assert "with n = 4" in by_id(trajectory.claims(mixed))["runs-end-apart"]["note"]


def test_trajectory_pca_leaves_out_a_diverged_run(tmp_path):
    r = straight_runs(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]], [[0, 0, 0, 0], [5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0]]
    )
    r["whole"][2:, 3] = float("nan")  # run 3 diverged at epoch 2
    r["diverged"][3] = True
    pca, xy = trajectory.projections(r, "whole")
    finite = fit_pca(r["whole"][:, :3].reshape(-1, 4), k=2)  # the PCA of the three finite runs alone
    torch.testing.assert_close(pca.components, finite.components)
    assert torch.isnan(xy[:, 3]).all() and torch.isfinite(xy[:, :3]).all()
    cfg = {"layer": "0.weight", "model": "cnn-21", "label_every": 1, "train_size": 100, "batch_size": 50}
    s = trajectory.summarize(cfg, {"runs": r})
    assert [x["diverged"] for x in s["results"]] == [False, False, False, True] and s["results"][3]["test_acc"] is None
    assert trajectory.ours(s)["final test accuracy, range over runs"] == pytest.approx((0.4, 0.4))  # the finite runs
    assert by_id(s["findings"])["runs-end-apart"]["n"] == 3
    assert s["results"][0]["steps"] == 4 * 2
    assert [p.rsplit("/", 1)[-1] for p in trajectory.figures(cfg, {"runs": r}, tmp_path)] == [
        "trajectory_whole.png",
        "trajectory_layer.png",
    ]
    assert trajectory.metrics(cfg, {"runs": r})
    # every run diverged: no PCA, the summary and the figures still come
    r["diverged"] = [True] * 4
    s = trajectory.summarize(cfg, {"runs": r})
    assert s["explained_variance_whole"] is None and all(f["verdict"] == fd.INCONCLUSIVE for f in s["findings"])
    assert len(trajectory.figures(cfg, {"runs": r}, tmp_path)) == 2


# --------------------------------------------------------------------------- shared pieces


def test_per_model_table_and_median_band():
    rows = [{"model": "a", "test_acc": v, "diverged": v is None} for v in (0.1, 0.5, 0.3, None)]
    t = per_model_table(rows, ["a", "b"], keys=("test_acc",))
    assert t == [{"model": "a", "n": 3, "diverged": 1, "test_acc_median": pytest.approx(0.3)}]
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    values = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [2.0, 4.0, 6.0, 1.0]])
    median_band(ax, [0, 1], values, "k", "x", diverged=[False, False, False, True])
    line = ax.get_lines()[0]
    assert line.get_label() == "x (n=3, 1 diverged)" and list(line.get_ydata()) == [2.0, 4.0]
    band = ax.collections[0].get_paths()[0].vertices
    assert {1.5, 2.5, 3.0, 5.0} <= set(np.round(band[:, 1], 6))  # the quartiles of (1,2,3) and (2,4,6)
    plt.close(fig)


def test_model_colors_are_one_per_model():
    from dlscope import models

    colors = [str(model_color(m)) for m in models.names()]
    assert len(set(colors)) == len(colors)
    assert model_color("cnn-1") == model_color("cnn-1") != model_color("cnn-2")


# --------------------------------------------------------------------------- diverging runs, for real

TINY = {
    "cifar-depth": ["epochs=1", "train_size=128", "test_size=64"],
    "trajectory": ["epochs=2", "train_size=200", "test_size=100"],
    "param-count": ["train_size=128", "test_size=64"],
}


@pytest.mark.parametrize("name", list(TINY))
def test_a_diverging_run_is_recorded_and_kills_nothing(tmp_path, data_dir, name):
    """lr 1e8 blows the CNNs' weights up: the run ends, each diverged seed is recorded as such with
    no numbers, the claims say they cannot decide, and every figure is still drawn."""
    import json

    from dlscope.runner import run_experiment

    res = run_experiment(name, "smoke", out=tmp_path, data_dir=data_dir, overrides=TINY[name] + ["lr=1e8"], progress=False)
    assert res.ok, res.failed
    s = json.loads((res.out_dir / "summary.json").read_text())
    rows = s["results"]
    diverged = [r for r in rows if r["diverged"]]
    assert diverged, "lr 1e8 should make some run diverge"
    for r in diverged:
        assert r["test_acc"] is None and r["test_loss"] is None and r["steps"] > 0
    for r in rows:
        if not r["diverged"]:  # cnn-1 ends in a Softmax: its loss stays bounded and it may survive
            assert r["test_acc"] is not None
    alive = {r["seed"] for r in rows if not r["diverged"]}
    for f in s["findings"]:  # a diverged seed never counts
        assert f["verdict"] in fd.VERDICTS and f["n"] <= len(alive)
    if len(diverged) == len(rows):
        assert all(f["verdict"] == fd.INCONCLUSIVE and f["n"] == 0 for f in s["findings"])
    figures = list((res.out_dir / "figures").glob("*.png"))
    assert figures and all(p.stat().st_size > 5000 for p in figures)
