"""The study's experiments, in SPEC order, each a module (see _base.py for what one holds)."""

from __future__ import annotations

import importlib

from ._base import ConfigError

# name -> module, in the order of SPEC and of the report
REGISTRY = {
    "func-fit": "dlscope.experiments.func_fit",
    "cifar-depth": "dlscope.experiments.cifar_depth",
    "trajectory": "dlscope.experiments.trajectory",
    "grad-norm": "dlscope.experiments.grad_norm",
    "min-ratio": "dlscope.experiments.min_ratio",
    "random-labels": "dlscope.experiments.random_labels",
    "param-count": "dlscope.experiments.param_count",
    "interpolation": "dlscope.experiments.interpolation",
    "sensitivity": "dlscope.experiments.sensitivity",
}


# Where dlscope's definitions differ from the original's for the whole study (an experiment's own
# differences are its module's DIFFERENCES): [(what, dlscope vs the original, why)]
STUDY_NOTES = [
    (
        "Train metrics",
        "dlscope measures train loss and accuracy in a separate evaluation pass over the un-augmented "
        "training set after each epoch, not as running averages over the epoch's augmented mini-batches.",
        "A running average mixes the model's states over the epoch and the augmentation; the evaluation "
        "pass measures one model on the data it is trained to fit.",
    ),
]


def names() -> list[str]:
    return list(REGISTRY)


def is_available(name: str) -> bool:
    return importlib.util.find_spec(REGISTRY[name]) is not None


def available() -> list[str]:
    """The experiments implemented in this version, in SPEC order."""
    return [n for n in REGISTRY if is_available(n)]


def get(name: str):
    if name not in REGISTRY:
        raise ConfigError(f"unknown experiment {name!r}; choose from: {', '.join(REGISTRY)}, all")
    if not is_available(name):
        raise ConfigError(f"experiment {name!r} is not implemented in this version")
    return importlib.import_module(REGISTRY[name])
