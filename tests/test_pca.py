"""Snapshots and joint PCA, checked against NumPy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlscope import models
from dlscope.analysis.pca import fit_pca, select_names, snapshot
from dlscope.engine import Ensemble


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(30, 12)) @ np.diag(np.linspace(3, 0.1, 12)) + 5.0  # off-centre on purpose
    pca = fit_pca(torch.tensor(pts, dtype=torch.float32), k=3)

    centred = pts - pts.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), (s**2 / (s**2).sum())[:3], rtol=1e-6)
    np.testing.assert_allclose(pca.explained_variance.numpy(), (s**2 / (len(pts) - 1))[:3], rtol=1e-6)
    # same directions up to sign; the projection of the training points is U·S (same signs)
    signs = np.sign(np.sum(pca.components.numpy() * vt[:3], axis=1))
    np.testing.assert_allclose(pca.components.numpy(), vt[:3] * signs[:, None], atol=1e-6)
    proj = pca.transform(torch.tensor(pts)).numpy()
    np.testing.assert_allclose(proj, u[:, :3] * s[:3] * signs, atol=1e-5)
    # orthonormal components, centred projections with the reported variances
    np.testing.assert_allclose(pca.components.numpy() @ pca.components.numpy().T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(proj.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(proj.var(0, ddof=1), pca.explained_variance.numpy(), rtol=1e-5)
    # the sign convention: each component's largest entry is positive
    comps = pca.components.numpy()
    assert all(c[np.abs(c).argmax()] > 0 for c in comps)


def test_points_in_a_plane_are_explained_fully_and_new_points_project():
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=torch.float64)).Q.T  # [2, 50]
    origin = torch.randn(50, generator=g, dtype=torch.float64)
    coords = torch.randn(40, 2, generator=g, dtype=torch.float64) * torch.tensor([4.0, 1.0], dtype=torch.float64)
    pts = origin + coords @ basis
    pca = fit_pca(pts, k=2)
    assert float(pca.explained_variance_ratio.sum()) == pytest.approx(1.0, abs=1e-12)
    # a new point in the plane is reconstructed exactly from its two coordinates
    new = origin + torch.tensor([0.3, -2.0], dtype=torch.float64) @ basis
    z = pca.transform(new)
    torch.testing.assert_close(pca.mean + z @ pca.components, new)


def test_snapshots_of_a_model_a_layer_and_an_ensemble():
    torch.manual_seed(0)
    model = models.build("cnn-21")
    params = dict(model.named_parameters())
    assert snapshot(model).numel() == 11085
    torch.testing.assert_close(snapshot(model, "0.weight"), params["0.weight"].reshape(-1))
    torch.testing.assert_close(snapshot(model, "0"), torch.cat([params["0.weight"].reshape(-1), params["0.bias"]]))
    assert select_names(list(params), "3") == ["3.weight", "3.bias"]
    with pytest.raises(KeyError):
        snapshot(model, "nope")
    # a snapshot is a copy, not a view
    s = snapshot(model, "0.weight")
    with torch.no_grad():
        params["0.weight"].add_(1.0)
    assert not torch.equal(s, params["0.weight"].reshape(-1))

    ens = Ensemble.from_seeds("cnn-21", [3, 4])
    rows = snapshot(ens, "0.weight")
    assert rows.shape == (2, 216)
    for i in range(2):
        torch.testing.assert_close(rows[i], snapshot(ens.member(i), "0.weight"))
        torch.testing.assert_close(snapshot(ens)[i], snapshot(ens.member(i)))


def test_non_finite_points_are_refused_with_a_clear_message():
    pts = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    pts[2, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit_pca(pts)
