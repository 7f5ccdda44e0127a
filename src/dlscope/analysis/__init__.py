"""Curvature, sharpness and loss landscape of any model.

Every measure takes a model (any nn.Module, or an ensemble such as dlscope.engine.Ensemble, whose
members are all measured in one call), data (an (x, y) pair of tensors, or any iterable of (x, y)
batches), a loss ("mse", "ce" or a callable (output, y) -> mean loss) and a mode ("eval", the
default, or "train": how batch norm and dropout run; recorded in every result). The caller's model
is left exactly as it was. See docs/analysis.md.

    from dlscope import analysis
    analysis.top_eigenvalues(model, (x, y), loss="ce", k=3).values
    analysis.trace(model, (x, y), seed=0)            # .value, .ci (95%), .n_hvp
    analysis.top_eigenvalues_and_trace(model, (x, y))  # both, sharing the Lanczos products
    analysis.spectral_density(model, (x, y)).plot()
    analysis.sharpness(model, (x, y), kind="keskar")  # "sam", "adaptive", "average"
    analysis.loss_plane(model, (x, y), steps=21).plot()

Exact Hessians: Objective(model, data).hessian(); the minimal ratio and the critical-point
solvers: analysis.critical_points. The study's other tools (analysis.pca, analysis.interpolation,
analysis.sensitivity) keep their own interfaces and export one function each with the conventions
above.
"""

from .gradient import grad_norm, mean_loss_of
from .interpolation import interpolation_path
from .pca import trajectory_pca
from .sensitivity import input_sensitivity
from .curvature import (
    Density,
    Eigenvalues,
    Estimate,
    plot_density,
    spectral_density,
    top_eigenvalues,
    top_eigenvalues_and_trace,
    trace,
)
from .objective import NondeterministicObjective, Objective
from .plane import Plane, loss_plane, plot_plane
from .sharpness_measures import Sharpness, sharpness  # (not "sharpness.py": the function would hide the module)

__all__ = [
    "top_eigenvalues",
    "trace",
    "top_eigenvalues_and_trace",
    "spectral_density",
    "plot_density",
    "sharpness",
    "loss_plane",
    "plot_plane",
    "grad_norm",
    "mean_loss_of",
    "interpolation_path",
    "input_sensitivity",
    "trajectory_pca",
    "Objective",
    "NondeterministicObjective",
    "Eigenvalues",
    "Estimate",
    "Density",
    "Sharpness",
    "Plane",
]
