"""The curvature the study records of its trained models (experiments/_curvature.py), checked
against an independent computation, and `dlscope analyze --run` on the weights a run keeps."""

from __future__ import annotations

import json

import pytest
import torch

from dlscope import data, models
from dlscope.cli import main
from dlscope.experiments import _curvature as curvature
from dlscope.runner import run_experiment
from dlscope.store import read_pt
from test_analyze_cli import FAST  # the same small measure budgets as the analyze CLI tests

# one batch size and one lr, one seed: two trained cnn-1s; Lanczos run to a tight tolerance here
TINY = ["batch_sizes=64", "lrs=1e-3", "seeds=1", "curvature_tol=1e-5", "curvature_max_steps=60"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("study")
    res = run_experiment("sensitivity", "smoke", out=out, data_dir=data_dir, progress=False, overrides=TINY)
    assert res.ok, res.failed
    return out


def kept_model(trial: dict, i: int) -> torch.nn.Module:
    w = trial["weights"]
    model = models.build(w["model"])
    model.load_state_dict({k: v[i] for k, v in {**w["params"], **w["buffers"]}.items()})
    return model.eval()


def power_top_eigenvalue(model: torch.nn.Module, x, y, iters: int = 1000) -> float:
    """The Hessian's largest eigenvalue by power iteration on float64 Hessian-vector products from
    torch.autograd (double backward), with no code of dlscope.analysis. Power iteration finds the
    eigenvalue largest in size; if that is negative (σ), a second run on H − σI finds the top one."""
    model = model.double()
    params = list(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x.double()), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def power(shift: float) -> float:
        g = torch.Generator().manual_seed(1)
        v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        lam = None
        for _ in range(iters):
            norm = torch.sqrt(sum((t * t).sum() for t in v))
            v = [t / norm for t in v]
            hv = [h - shift * t for h, t in zip(torch.autograd.grad(grads, params, v, retain_graph=True), v)]
            new = float(sum((a * b).sum() for a, b in zip(v, hv)))  # Rayleigh quotient
            if lam is not None and abs(new - lam) <= 1e-8 * abs(new):
                break
            lam, v = new, [t.detach() for t in hv]
        return new + shift

    top = power(0.0)
    return top if top > 0 else power(top)


def test_recorded_top_eigenvalue_equals_power_iteration_on_the_kept_model(run, data_dir):
    summary = json.loads((run / "sensitivity" / "summary.json").read_text())
    cfg = json.loads((run / "sensitivity" / "config.json").read_text())
    trial = read_pt(run / "sensitivity" / "trials" / "batch-64.pt")
    row = next(r for r in summary["results"] if r["sweep"] == "batch")
    model = kept_model(trial, 0)
    split = data.load("cifar10", "cpu", data_dir, train_size=cfg["train_size"], test_size=cfg["test_size"])
    # the kept weights are the trained model: its train loss is the row's
    with torch.no_grad():
        assert torch.nn.functional.cross_entropy(model(split.train.x), split.train.y).item() == pytest.approx(
            row["train_loss"], rel=1e-5
        )
    x, y = curvature.subset(cfg, split.train)
    assert len(x) == cfg["curvature_samples"] == 64 and torch.bincount(y, minlength=10).min() >= 6  # class-balanced
    assert trial["curvature"]["converged"] == [True]
    want = power_top_eigenvalue(model, x, y)
    assert want > 0
    assert row["top_eigenvalue"] == pytest.approx(want, rel=2e-3)
    assert row["trace_ci"][0] <= row["trace"] <= row["trace_ci"][1]
    assert row["keskar"] > 0
    # size: cnn-1's parameters in float32, nothing else of note
    n_params = sum(p.numel() for p in models.build("cnn-1").parameters())
    assert sum(v.numel() * v.element_size() for v in trial["weights"]["params"].values()) == 4 * n_params


def dlscope(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start per call): (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_measures_the_models_a_run_kept_and_the_study_report_shows_them(run, data_dir, tmp_path, capsys):
    code, _, err = dlscope(capsys, "analyze", "--run", str(run), *FAST, "--data-dir", data_dir)
    assert code == 0, err
    out = run / "analyze"  # the default --out
    s = json.loads((out / "summary.json").read_text())
    assert s["models"] == [
        "sensitivity: batch sweep: batch 64, lr 0.0004, seed 0",
        "sensitivity: lr sweep: batch 128, lr 0.001, seed 0",
    ]
    assert [m["label"] for m in s["per_model"]] == s["models"]
    for key in ("top_eigenvalues", "trace", "sharpness", "plane"):
        assert s[key] is not None and all(m[key] is not None for m in s["per_model"])
    # each plane's centre is its kept model's loss on the same 40 images, in eval mode
    split = data.load("cifar10", "cpu", data_dir, train_size=40).train
    for i, key in enumerate(("batch-64", "lr")):
        model = kept_model(read_pt(run / "sensitivity" / "trials" / f"{key}.pt"), 0)
        with torch.no_grad():
            want = torch.nn.functional.cross_entropy(model(split.x), split.y).item()
        assert s["per_model"][i]["plane"]["loss"][1][1] == pytest.approx(want, rel=1e-5)
        t = s["per_model"][i]["trace"]
        assert t["ci"][0] <= t["value"] <= t["ci"][1] and t["n_hvp"] == 9
    assert (out / "figures" / "plane.png").stat().st_size > 1000
    assert "sensitivity: lr sweep" in (out / "report.html").read_text()

    code, again, _ = dlscope(capsys, "analyze", "--run", str(run), *FAST, "--data-dir", data_dir)
    assert code == 0 and again.count("done before, kept") == 5

    # `dlscope report` on the analyze folder, and on the study: its report has the section
    assert dlscope(capsys, "report", str(out))[0] == 0
    assert dlscope(capsys, "report", str(run))[0] == 0
    page = (run / "report.html").read_text()
    assert '<section id="analyze">' in page and "sensitivity: batch sweep: batch 64" in page

    # one-line errors: no run, no kept models
    code, _, err = dlscope(capsys, "analyze", "--run", str(tmp_path))
    assert code == 2 and "holds no dlscope run" in err and len(err.strip().splitlines()) == 1
    old = tmp_path / "old"
    (old / "sensitivity" / "trials").mkdir(parents=True)
    (old / "sensitivity" / "config.json").write_text("{}")
    code, _, err = dlscope(capsys, "analyze", "--run", str(old))
    assert code == 2 and "no trained models kept" in err
