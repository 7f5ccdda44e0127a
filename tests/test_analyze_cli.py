"""`dlscope analyze` end to end on a model that is not in the zoo (batch norm and dropout),
written by the test into its own folder, on real CIFAR-10 images."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

MODULE = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 10))
"""

FAST = [
    "--train-size",
    "40",
    "--plane-steps",
    "3",
    "--trace-hvp",
    "9",
    "--density-vectors",
    "1",
    "--density-steps",
    "4",
    "--sharpness-steps",
    "2",
    "--k",
    "1",
]


def analyze(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "dlscope", "analyze", "--model", "mycnn:build", "--data", "cifar10", *FAST, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )


def test_analyze_runs_end_to_end_resumes_and_reports(tmp_path, data_dir):
    (tmp_path / "mycnn.py").write_text(MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import mycnn
    finally:
        sys.path.remove(str(tmp_path))
    model = mycnn.build()
    model.train()
    for _ in range(2):  # trained-looking batch-norm statistics, saved as the weights file
        model(torch.randn(16, 3, 32, 32))
    torch.save(model.state_dict(), tmp_path / "w.pt")

    out = tmp_path / "run"
    first = analyze(tmp_path, "--weights", "w.pt", "--out", str(out), "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("top_eigenvalues", "trace", "sharpness", "plane", "density"):
        assert summary[key] is not None, key
    assert summary["trace"]["ci"][0] <= summary["trace"]["value"] <= summary["trace"]["ci"][1]
    assert set(summary["sharpness"]) == {"keskar", "sam", "adaptive", "average"}
    # the plane's centre is the loaded model's own loss, in eval mode, on the same images
    from dlscope import data

    split = data.load("cifar10", "cpu", data_dir, train_size=40).train
    model.eval()
    with torch.no_grad():
        want = float(torch.nn.functional.cross_entropy(model(split.x), split.y))
    assert abs(summary["plane"]["loss"][1][1] - want) <= 1e-5 * want
    for fig in ("density", "plane", "sharpness"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "mycnn:build" in page
    assert "Hessian trace" in (out / "report.md").read_text()

    again = analyze(tmp_path, "--weights", "w.pt", "--out", str(out), "--data-dir", data_dir)
    assert again.returncode == 0 and again.stdout.count("done before, kept") == 5
    assert json.loads((out / "summary.json").read_text()) == summary

    other = analyze(tmp_path, "--weights", "w.pt", "--out", str(out), "--data-dir", data_dir, "--seed", "1")
    assert other.returncode == 2 and "other settings" in other.stderr


def test_analyze_names_a_factory_it_cannot_find(tmp_path, data_dir):
    r = analyze(tmp_path, "--out", str(tmp_path / "run"), "--data-dir", data_dir)
    assert r.returncode == 2 and "mycnn" in r.stderr
