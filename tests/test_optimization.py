"""The optimization experiments (trajectory, grad-norm, min-ratio) end to end on their smoke
profiles, with their recorded numbers checked against independent computations."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from dlscope.experiments import trajectory
from dlscope import models
from dlscope import analysis
from dlscope.engine import Ensemble
from dlscope.experiments import ConfigError
from dlscope.experiments.func_fit import f1, inputs
from dlscope.runner import run_experiment
from dlscope.store import RunStore


def figures_written(res, names):
    for n in names:
        path = res.out_dir / "figures" / n
        assert path.exists() and path.stat().st_size > 5000, n


def test_trajectory_smoke(tmp_path, data_dir):
    res = run_experiment("trajectory", "smoke", out=tmp_path, data_dir=data_dir, progress=False)
    assert res.ok
    s = res.summary
    runs = s["runs"]
    assert runs == 3 and s["layer"] == "0.weight" and len(s["results"]) == runs
    assert all(0 <= row["test_acc"] <= 1 and not row["diverged"] for row in s["results"])
    figures_written(res, ["trajectory_whole.png", "trajectory_layer.png"])

    store = RunStore(tmp_path, "trajectory")
    parts = {k: store.load_result(k) for k in ("runs-1", "runs-2")}  # the ensemble in two trials of seeds
    assert [p["seeds"] for p in parts.values()] == [[0, 1], [2]]
    r = trajectory.joined(parts)
    assert r["seeds"] == [0, 1, 2] and r["layer_params"] == parts["runs-1"]["layer_params"]
    epochs = 4
    assert r["whole"].shape == (epochs + 1, runs, 11085) and r["layer"].shape == (epochs + 1, runs, 216)
    # the first point is the initialisation; the layer is the first 216 entries of the whole vector
    torch.testing.assert_close(r["whole"][0], Ensemble.from_seeds("cnn-21", r["seeds"]).flat())
    torch.testing.assert_close(r["layer"], r["whole"][..., :216])
    assert not torch.equal(r["whole"][1], r["whole"][0])  # training moved it
    # explained variance as NumPy computes it on the same points
    for which in ("whole", "layer"):
        pts = r[which].reshape(-1, r[which].shape[-1]).double().numpy()
        sv = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
        np.testing.assert_allclose(s[f"explained_variance_{which}"], (sv**2 / (sv**2).sum())[:2], rtol=1e-6)
    assert (res.out_dir / "metrics.csv").read_text().count("pc1_whole") == (epochs + 1) * runs
    # one row per run (seed); every verdict again, from the stored paths and the summary's numbers
    from dlscope import findings as fd

    pts = r["whole"].double().numpy()  # [epochs + 1, runs, P]
    rows = s["results"]
    assert [row["seed"] for row in rows] == r["seeds"] and all(
        row["steps"] == epochs * 3 for row in rows
    )  # 300 images, batch 100
    ratios = []
    for i, row in enumerate(rows):
        length = sum(np.linalg.norm(pts[e + 1, i] - pts[e, i]) for e in range(epochs))
        nearest = min(np.linalg.norm(pts[-1, i] - pts[-1, j]) for j in range(runs) if j != i)
        assert row["path_length"] == pytest.approx(length) and row["nearest_end"] == pytest.approx(nearest)
        own = pts[:, i] - pts[:, i].mean(0)
        sv = np.linalg.svd(own, compute_uv=False)
        assert row["own_pc12"] == pytest.approx((sv[:2] ** 2).sum() / (sv**2).sum())
        ratios.append(nearest / length)
    found = {f["id"]: f for f in s["findings"]}
    assert found["runs-end-apart"]["value"] == pytest.approx(np.mean(ratios))
    # the verdicts by a second route: scipy's one-sample t-test of the runs' numbers against the margin
    from scipy import stats

    for fid, values, margin in (("runs-end-apart", ratios, 1.0), ("paths-nearly-planar", [row["own_pc12"] for row in rows], 0.5)):
        f = found[fid]
        assert f["test"] == "paired-t" and f["sample"]["diffs"] == pytest.approx(values) and f["sample"]["margin"] == margin
        assert f["n"] == runs and f["value"] == pytest.approx(np.mean(values))
        t = stats.ttest_1samp(values, margin, alternative="greater")
        lo, hi = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert f["ci"] == pytest.approx([lo, hi]) and f["p"] == pytest.approx(t.pvalue)
        assert f["detectable"] == pytest.approx(margin + stats.t.ppf(0.975, runs - 1) * np.std(values, ddof=1) / np.sqrt(runs))
        assert f["verdict"] == (fd.SHOWN if lo > margin else fd.NOT_SHOWN if hi < margin else fd.INCONCLUSIVE)
    assert f"{100 * sum(s['explained_variance_whole']):.1f}%" in found["paths-nearly-planar"]["note"]


def test_trajectory_rejects_an_unknown_layer(tmp_path):
    with pytest.raises(ConfigError, match="layer"):
        run_experiment("trajectory", "smoke", out=tmp_path, overrides=["layer=2.weight"], progress=False)


def test_grad_norm_smoke(tmp_path, data_dir):
    res = run_experiment("grad-norm", "smoke", out=tmp_path, data_dir=data_dir, progress=False)
    assert res.ok
    rows = {r["model"]: r for r in res.summary["results"]}
    assert set(rows) == {"mlp-mid", "cnn-1", "cnn-2", "cnn-7"}
    for r in rows.values():
        assert r["final_grad_norm"] > 0 and math.isfinite(r["final_loss"])
    assert rows["mlp-mid"]["epochs"] == 6 and rows["cnn-7"]["epochs"] == 2
    assert "not a mean over mini-batches" in res.summary["grad_norm_definition"]
    figures_written(res, ["grad_norm_mlp.png", "grad_norm_cifar.png"])

    # epoch 0 is the initialisation: its full-batch gradient norm by a second route
    torch.manual_seed(0)
    model = models.build("mlp-mid")
    x = inputs(60)
    y = f1(x[:, 0])
    r = RunStore(tmp_path, "grad-norm").load_result("mlp-mid")
    assert r["grad_norm"][0, 0].item() == pytest.approx(analysis.grad_norm(model, (x, y), "mse"), rel=1e-5)
    with torch.no_grad():
        assert r["loss"][0, 0].item() == pytest.approx(float(torch.nn.functional.mse_loss(model(x)[:, 0], y)), rel=1e-5)


class _StopAfter:
    """An in-memory checkpointer that interrupts the trial (as a kill would) at its k-th save."""

    def __init__(self, k: int | None, state: dict | None = None):
        self.k, self.state, self.saves = k, state, 0

    def load(self):
        return self.state

    def save(self, state, force=False):
        buf = io.BytesIO()
        torch.save(state, buf)  # a copy, as the file checkpointer writes it
        buf.seek(0)
        self.state = torch.load(buf, weights_only=False)
        self.saves += 1
        if self.saves == self.k:
            raise KeyboardInterrupt

    def progress(self, done, total, info=""):
        pass


@pytest.mark.parametrize(
    "method,stop_at,at_step", [("newton-mr", 2, 200), ("newton-mr", 5, 302), ("adam", 4, 350)]
)  # phase 1, phase 2
def test_min_ratio_resumes_in_either_phase(monkeypatch, method, stop_at, at_step):
    from dlscope.engine import fast_mlp
    from dlscope.experiments import min_ratio
    from dlscope.experiments._base import TrialContext, resolve

    monkeypatch.setattr(fast_mlp, "FULL_BATCH_CHUNK", 100)  # phase 1 saves at 100, 200, 300 steps
    # phase 2 saves after each Newton iteration (301, 302, 303), or every 50 Adam steps (350, 400, 420)
    cfg = resolve(
        min_ratio, "smoke", ["phase1_steps=300", "newton_steps=3", "phase2_steps=120", "grad_tol=1e-30", f"phase2={method}"]
    )
    clean = min_ratio.train_and_measure(cfg, TrialContext(torch.device("cpu"), checkpoint=_StopAfter(None)))
    ck = _StopAfter(stop_at)
    with pytest.raises(KeyboardInterrupt):
        min_ratio.train_and_measure(cfg, TrialContext(torch.device("cpu"), checkpoint=ck))
    assert ck.state["step"] == at_step
    resumed = min_ratio.train_and_measure(cfg, TrialContext(torch.device("cpu"), checkpoint=_StopAfter(None, ck.state)))
    assert resumed["points"] == clean["points"]
    assert torch.equal(resumed["end_params"], clean["end_params"])


def test_phase2_gradients_in_chunks_equal_each_members_own():
    """min-ratio's phase 2: ∇(||∇L||²) computed a few members at a time equals, for every member,
    the double backward of its own ordinary module (and the all-at-once computation)."""
    from dlscope.engine.grad_norm_descent import gradient_norm_descent_grads

    x = inputs(50).double()
    y = f1(x[:, 0])
    members = []
    for s in range(5):
        torch.manual_seed(s)
        members.append(models.build("mlp-minratio").double())
    ens = Ensemble.from_members(members)
    loss, gn = gradient_norm_descent_grads(ens, x, y.expand(5, -1), chunk=2)
    chunked = {k: v.grad.clone() for k, v in ens.params.items()}
    gradient_norm_descent_grads(ens, x, y.expand(5, -1), chunk=5)
    for k, v in ens.params.items():
        torch.testing.assert_close(chunked[k], v.grad, rtol=1e-12, atol=1e-15)
    for i, m in enumerate(members):
        mse = torch.nn.functional.mse_loss(m(x)[:, 0], y)
        g = torch.autograd.grad(mse, list(m.parameters()), create_graph=True)
        norm2 = sum(gi.pow(2).sum() for gi in g)
        norm2.backward()
        assert gn[i].item() == pytest.approx(norm2.sqrt().item(), rel=1e-12)
        assert loss[i].item() == pytest.approx(mse.item(), rel=1e-12)
        for k, p in m.named_parameters():
            torch.testing.assert_close(chunked[k][i], p.grad, rtol=1e-10, atol=1e-14)
