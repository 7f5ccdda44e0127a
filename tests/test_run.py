"""End to end through the CLI: the two deep-vs-shallow experiments, settings validation, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dlscope.experiments import func_fit

DLSCOPE = [sys.executable, "-m", "dlscope"]


def run_cli(*args, env=None, check=False):
    return subprocess.run(DLSCOPE + list(args), capture_output=True, text=True, env={**os.environ, **(env or {})}, check=check)


def test_list_names_every_experiment():
    out = run_cli("list", check=True).stdout
    for name in [
        "func-fit",
        "cifar-depth",
        "trajectory",
        "grad-norm",
        "min-ratio",
        "random-labels",
        "param-count",
        "interpolation",
        "sensitivity",
    ]:
        assert name in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nope"], "unknown experiment"),
        (["run", "func-fit", "--set", "epochs=ten"], "expected an integer"),
        (["run", "func-fit", "--set", "bogus=1"], "unknown setting"),
        (["run", "func-fit", "--set", "lr=-1"], "must be positive"),
        (["run", "func-fit", "--set", "models=mlp-deep,cnn-1"], "not one of the 1-D MLPs"),
        (["run", "func-fit", "--profile", "huge"], "invalid choice"),
        (["run", "all", "--set", "epochs=3"], "EXPERIMENT.KEY=VALUE"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path, args, message):
    r = run_cli(*args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_converged_epoch_rule():
    # loss falls by 1e-3 per 100 epochs until epoch 1500, then by less than 1e-6
    loss = [1.0 - 1e-5 * min(e, 1500) - 1e-10 * e for e in range(3001)]
    assert func_fit.converged_epoch(loss, 1000, 100, 1e-6) == 1600
    assert func_fit.converged_epoch(loss[:1500], 1000, 100, 1e-6) is None
    assert func_fit.f1(torch.tensor([0.0])).item() == 1.0
    x = torch.tensor([0.1, -0.3])
    torch.testing.assert_close(func_fit.f1(x), torch.sin(5 * torch.pi * x) / (5 * torch.pi * x))


def test_func_fit_smoke(tmp_path):
    r = run_cli("run", "func-fit", "--profile", "smoke", "--out", str(tmp_path), "--no-progress")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "func-fit" / "summary.json").read_text())
    assert s["experiment"] == "func-fit" and s["profile"] == "smoke"
    assert {(row["function"], row["model"]) for row in s["results"]} == {
        (f, m) for f in ("f1", "f2") for m in ("mlp-deep", "mlp-mid", "mlp-shallow")
    }
    for row in s["results"]:
        assert set(row) >= {"function", "model", "params", "final_loss", "converged_epoch"} and row["final_loss"] > 0
    assert {p.name for p in (tmp_path / "func-fit" / "figures").iterdir()} == {
        "functions.png",
        "loss.png",
        "convergence.png",
        "predictions.png",
    }
    header = (tmp_path / "func-fit" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("epoch,metric,value")
    # the summary's final losses are the last rows of the per-epoch curves
    rows = [l.split(",") for l in (tmp_path / "func-fit" / "metrics.csv").read_text().splitlines()[1:]]
    last = {(r[0], r[1]): float(r[-1]) for r in rows if int(r[3]) == 12}
    for row in s["results"]:
        assert abs(last[(row["model"], row["function"])] - row["final_loss"]) < 1e-9


def _summary(folder: Path, exp: str) -> dict:
    return json.loads((folder / exp / "summary.json").read_text())


def test_sigkill_then_resume_gives_the_same_summary(tmp_path):
    """Kill the run mid-way (SIGKILL, no clean-up), start it again: same summary as a run that
    was never interrupted."""
    args = ["run", "cifar-depth", "--profile", "smoke", "--set", "epochs=3", "--no-progress"]
    env = {"DLSCOPE_CHECKPOINT_SECONDS": "0"}  # checkpoint after every epoch
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run_cli(*args, "--out", str(clean), env=env).returncode == 0

    proc = subprocess.Popen(
        DLSCOPE + args + ["--out", str(killed)], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpts = killed / "cifar-depth" / "checkpoints"
    deadline = time.monotonic() + 120
    # wait until some trial has checkpointed mid-way (the second model's first epoch)
    while not (ckpts / "cnn-2.pt").exists():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trials = killed / "cifar-depth" / "trials"
    assert (trials / "cnn-1.pt").exists() and not (trials / "cnn-7.pt").exists()
    assert not (killed / "cifar-depth" / "summary.json").exists()

    r = run_cli(*args, "--out", str(killed), env=env)
    assert r.returncode == 0, r.stderr
    assert _summary(killed, "cifar-depth") == _summary(clean, "cifar-depth")
    assert (killed / "cifar-depth" / "metrics.csv").read_text() == (clean / "cifar-depth" / "metrics.csv").read_text()


def test_rerun_with_other_settings_is_refused(tmp_path):
    assert run_cli("run", "func-fit", "--profile", "smoke", "--out", str(tmp_path), "--no-progress").returncode == 0
    r = run_cli("run", "func-fit", "--profile", "smoke", "--set", "lr=0.01", "--out", str(tmp_path), "--no-progress")
    assert r.returncode == 2 and "other settings" in r.stderr


def test_cifar_depth_smoke_summary(tmp_path):
    r = run_cli("run", "cifar-depth", "--profile", "smoke", "--out", str(tmp_path), "--no-progress")
    assert r.returncode == 0, r.stderr
    s = _summary(tmp_path, "cifar-depth")
    # one row per (model, seed); the smoke profile trains 2 seeds of each model
    assert [(row["model"], row["seed"]) for row in s["results"]] == [(m, k) for m in ("cnn-1", "cnn-2", "cnn-7") for k in (0, 1)]
    assert [row["params"] for row in s["results"]] == [36458, 36458, 46842, 46842, 430102, 430102]
    for row in s["results"]:
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1 and row["test_loss"] > 0
        assert row["steps"] == 2 * 10 and row["epochs"] == 2 and row["final_batch_loss"] > 0  # 600 images, batch 64
    assert (tmp_path / "cifar-depth" / "figures" / "curves.png").stat().st_size > 10000
    # every verdict again, from the summary's own per-seed numbers
    from dlscope import findings as fd

    acc = {(row["model"], row["seed"]): 100 * row["test_acc"] for row in s["results"]}
    diff = {
        (a, b): [acc[a, k] - acc[b, k] for k in (0, 1)] for a, b in (("cnn-2", "cnn-1"), ("cnn-7", "cnn-2"), ("cnn-7", "cnn-1"))
    }
    expected = {
        "deeper-is-better": [min(x, y) for x, y in zip(diff["cnn-2", "cnn-1"], diff["cnn-7", "cnn-1"])],
        "cnn-2-over-cnn-1": diff["cnn-2", "cnn-1"],
        "cnn-7-over-cnn-2": diff["cnn-7", "cnn-2"],
    }
    found = {f["id"]: f for f in s["findings"]}
    assert set(found) == set(expected) | {"lowest-loss-highest-accuracy", "depth-ordering"}
    for f in found.values():  # how each verdict was reached is recorded with it
        assert {"test", "p", "sample", "detectable"} <= set(f) and f["test"] and isinstance(f["sample"], dict)
    # the paired leads by a second route: Student-t by hand (mean ± t_0.975,1 × s / √2), p from scipy
    from scipy import stats

    for fid, values in expected.items():
        f = found[fid]
        assert f["value"] == pytest.approx(sum(values) / 2) and f["n"] == 2 and f["test"] == "paired-t"
        assert f["sample"]["diffs"] == pytest.approx(values)
        half = stats.t.ppf(0.975, 1) * abs(values[0] - values[1]) / 2  # s = |a - b| / √2 for two values
        lo, hi = sum(values) / 2 - half, sum(values) / 2 + half
        assert f["ci"] == pytest.approx([lo, hi])
        assert f["p"] == pytest.approx(stats.ttest_1samp(values, 0, alternative="greater").pvalue)
        assert f["detectable"] == pytest.approx(half)
        assert f["verdict"] == (fd.SHOWN if lo > 0 else fd.NOT_SHOWN if hi < 0 else fd.INCONCLUSIVE)
    # per seed: the three models ordered by falling test loss; Page's exact test of their accuracies
    order = []
    for k in (0, 1):
        mine = sorted((row for row in s["results"] if row["seed"] == k), key=lambda r: -r["test_loss"])
        order.append([r["test_acc"] for r in mine])
    page = found["lowest-loss-highest-accuracy"]
    assert page["test"] == "page-L" and page["n"] == 2 and page["sample"]["x"] == [0, 1, 2]
    assert np.allclose(page["sample"]["y"], order)
    if all(len(set(r)) == 3 for r in order):  # no tied accuracies: scipy's exact Page test, and Spearman by hand
        assert page["p"] == pytest.approx(stats.page_trend_test(order, method="exact").pvalue)
        rhos = [1 - 6 * sum((i - sorted(r).index(v)) ** 2 for i, v in enumerate(r)) / 24 for r in order]
        assert page["value"] == pytest.approx(sum(rhos) / 2)
    # two seeds of three models cannot decide: even the same order in both gives p = 1/36 = 0.028
    assert page["p"] >= 1 / 36 - 1e-12 and page["verdict"] == fd.INCONCLUSIVE and page["detectable"] is None
    assert "with 2 seeds × 3 levels no ordering can reach p ≤ 0.025" in page["note"]
