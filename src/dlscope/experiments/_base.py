"""What an experiment is made of: settings per profile, trials, and the context a trial runs in.

An experiment is a module with:
    NAME, TITLE          its command-line name and a one-line title
    PROFILES             {"smoke": {...}, "quick": {...}, "full": {...}}: every setting, per profile
    WORK_SETTINGS        which settings measure a trial's work (nothing is guessed from a setting's
                         name): {"models": keys that count the models each trial trains (seeds),
                         "length": keys that count epochs or steps (the first is the training
                         length the report states), "data": keys that count training examples};
                         the progress display's time estimate scales with each group's sum
    POSITIVE_SETTINGS    the settings whose values (every value, for a list) must be > 0
    NON_NEGATIVE_SETTINGS  the settings whose values must be >= 0
    validate(settings)        raise ConfigError for impossible values (optional)
    trials(settings)          -> list[Trial]: independent units of work
    summarize(settings, results) -> dict merged into summary.json (results: key -> trial result; a
                         failed trial's key is absent)
    metrics(settings, results)   -> list of rows for metrics.csv (long format, see store.py)
    figures(settings, results, fig_dir) -> list of written paths

and, for the report and the progress display (so that report/ and runner.py name no experiment):
    PART                 optional: the heading of the study's part this experiment opens
                         ("Deep vs shallow", "Optimization", "Generalization")
    COST                 relative cost weight of the experiment in a study (progress estimates)
    SIDE_BY_SIDE         optional, default True: whether the default executor may run this
                         experiment's trials side by side on a multi-core CPU (one single-thread
                         worker process per core, heavier trials first: Trial.weight)
    LOOK_FOR             one paragraph: what to look for; it must not contradict the findings
    CAPTIONS             {"file.png": "a sentence saying what it shows (the original's Fig N)"}
    REFERENCE            the original study's numbers, or None: {"what": str, "original": str,
                         "kind": "acc" | "loss" | None (per row by its label), "rows": {label:
                         number or (low, high)}}
    ours(summary)        -> {label: number or (low, high)}: this run's numbers under REFERENCE's
                         row labels (read from summary.json alone); a value may also be
                         {"value": number or (low, high), "note": "ours at α = 0.6"}
    DIFFERENCES          optional: [(what, dlscope vs the original, why)] where dlscope's
                         definitions differ from the original's

REQUIRED and OPTIONAL below name these attributes (tests/test_report.py holds every experiment
to them).

summarize(...) returns, besides its tables, "findings": a list of findings.Finding.as_dict(),
computed from this experiment's results by its claim functions (see findings.py), and its
"results" rows carry one row per trained model and seed, with a "seed" field.

A trial is a module-level function fn(settings, ctx) -> dict (picklable: numbers, lists, tensors),
so any executor, in-process, a process pool or a cluster, can run it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ConfigError  # noqa: F401  (raised here, imported from here by the experiments)


REQUIRED = (
    "NAME",
    "TITLE",
    "PROFILES",
    "WORK_SETTINGS",
    "POSITIVE_SETTINGS",
    "NON_NEGATIVE_SETTINGS",
    "trials",
    "summarize",
    "metrics",
    "figures",
    "COST",
    "LOOK_FOR",
    "CAPTIONS",
    "REFERENCE",
)
OPTIONAL = ("validate", "PART", "SIDE_BY_SIDE", "ours", "DIFFERENCES")  # ours: required where REFERENCE is not None
WORK_GROUPS = ("models", "length", "data")  # WORK_SETTINGS' groups


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0  # a fraction lets a cluster pack several tiny trials onto one GPU


@dataclass(frozen=True)
class Trial:
    key: str  # unique in its experiment, safe as a file name
    fn: Callable[[dict, "TrialContext"], dict]
    settings: dict
    resources: Resources = field(default_factory=Resources)
    label: str = ""  # for progress displays
    weight: float = 1.0  # its expected cost relative to the experiment's other trials: side by side, heavier ones start first


@dataclass
class TrialContext:
    device: torch.device
    data_dir: str | None = None
    checkpoint: Any = None  # an engine.train.Checkpointer, or None

    def load_data(self, name: str, train_size: int | None = None, test_size: int | None = None):
        from ..data import load_cached

        return load_cached(name, str(self.device), self.data_dir, train_size, test_size)


# --------------------------------------------------------------------------- settings


def _parse_like(key: str, text: str, like: Any) -> Any:
    """Parse a --set value as the type of the default it replaces."""
    try:
        if isinstance(like, bool):
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, list):
            items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
            if not isinstance(items, list) or not items:
                raise ValueError
            proto = like[0] if like else None
            return [_parse_like(key, str(i), proto) if proto is not None else i for i in items]
        if like is None:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
        return text
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"--set {key}={text}: expected {_kind(like)}") from None


def _kind(like: Any) -> str:
    """What a --set value must be, in words: 'an integer', 'a list of numbers'."""
    if isinstance(like, bool):
        return "true or false"
    if isinstance(like, int):
        return "an integer"
    if isinstance(like, float):
        return "a number"
    if isinstance(like, list):
        items = {bool: "true/false values", int: "integers", float: "numbers", str: "names"}
        what = items.get(type(like[0]), "values") if like else "values"
        return f"a list of {what} (comma-separated)"
    return "a value"


def resolve(module, profile: str, overrides: list[str] | None = None, seed: int = 0) -> dict:
    """The full settings of one experiment run: the profile's, then --set key=value overrides."""
    if profile not in module.PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(module.PROFILES)}")
    settings = json.loads(json.dumps(module.PROFILES[profile]))  # a deep copy
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in settings:
            raise ConfigError(f"--set {key}: unknown setting of {module.NAME}; known: {', '.join(sorted(settings))}")
        settings[key] = _parse_like(key, text.strip(), settings[key])
    # trial seeds are --seed + i, and a generator's seed is (seed * 1,000,003 + epoch): 32 bits
    # keep all of them within what torch.Generator takes (64 bits)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"--seed {seed}: must be a whole number from 0 to {2**32 - 1}")
    settings = {"profile": profile, "seed": seed, **settings}
    check_common(settings, module.POSITIVE_SETTINGS, module.NON_NEGATIVE_SETTINGS)
    if hasattr(module, "validate"):
        module.validate(settings)
    return settings


def check_common(settings: dict, positive=(), non_negative=()) -> None:
    """Values no experiment can use: numbers that are not finite or beyond 64 bits, a list that
    names an entry twice; and a value <= 0 of a setting the experiment declares positive
    (POSITIVE_SETTINGS: sizes, epochs, learning rates), < 0 of one it declares non-negative."""
    for key, v in settings.items():
        _check_numbers(key, v, v)
        if isinstance(v, list):
            seen = []
            for x in v:
                if x in seen:
                    raise ConfigError(f"{key}={_show(v)}: {_show(x)} is listed twice")
                seen.append(x)
        vals = v if isinstance(v, list) else [v]
        for x in vals:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if key in positive and x <= 0:
                raise ConfigError(f"{key}={v}: must be positive")
            if key in non_negative and x < 0:
                raise ConfigError(f"{key}={v}: must not be negative")


def _check_numbers(key: str, whole, v) -> None:
    """Every number in v (a setting, or anything inside a list or dict of it) finite and 64-bit."""
    import math

    if isinstance(v, (list, tuple)):
        for x in v:
            _check_numbers(key, whole, x)
    elif isinstance(v, dict):
        for x in v.values():
            _check_numbers(key, whole, x)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{key}={_show(whole)}: must be a finite number")
    elif isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
        raise ConfigError(f"{key}={_show(whole)}: too large")


def _show(v) -> str:
    """A setting's value as one would write it after --set (lists comma-separated)."""
    text = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def trial_per_model(settings: dict, fn, weigh_by_params: bool = False) -> list[Trial]:
    """One trial per model of settings["models"] (architectures that differ cannot share an ensemble);
    weigh_by_params: each trial's weight is its model's parameter count (CNNs trained alike)."""
    from .. import models

    def weight(m: str) -> float:
        if not weigh_by_params:
            return 1.0
        with torch.random.fork_rng(devices=[]):
            return float(models.count_params(models.build(m)))

    return [Trial(key=m, fn=fn, settings={**settings, "model": m}, label=m, weight=weight(m)) for m in settings["models"]]


SEED_PARTS = 2  # trials an ensemble of seeds is split into, so that two cores can share its work


def trials_by_seed_parts(settings: dict, fn, key: str, seeds: list[int], label: str, parts: int = SEED_PARTS) -> list[Trial]:
    """One ensemble of `seeds` as `parts` trials of consecutive seeds ("KEY-1", "KEY-2", ...), each
    with settings["trial_seeds"]: the members are independent, so the parts can run side by side, and
    join_seed_parts puts their results back together. The split depends on the settings alone, not
    on the machine, so that a run resumes anywhere."""
    n = min(parts, len(seeds))
    bounds = [round(i * len(seeds) / n) for i in range(n + 1)]
    chunks = [seeds[a:b] for a, b in zip(bounds, bounds[1:])]
    return [
        Trial(
            key=f"{key}-{i + 1}",
            fn=fn,
            settings={**settings, "trial_seeds": c},
            label=f"{label}, seeds {c[0]}-{c[-1]}",
            weight=len(c),
        )
        for i, c in enumerate(chunks)
    ]


def join_seed_parts(results: dict, key: str, shared: tuple[str, ...] = ()) -> dict | None:
    """The finished parts of trials_by_seed_parts(key=KEY) as one result, as if one trial had
    trained them all: tensors joined along the member axis (dim 1: [epochs + 1, members, ...]),
    lists joined, the `shared` fields (the same in every part) taken once. None if no part finished.
    A result under KEY itself (one trial of every seed) is taken as it is."""
    if key in results:
        return results[key]
    parts = [results[k] for k in sorted((k for k in results if k.startswith(f"{key}-")), key=lambda k: int(k.rsplit("-", 1)[1]))]
    if not parts:
        return None
    out = {}
    for field_name, first in parts[0].items():
        values = [p[field_name] for p in parts]
        if field_name in shared or field_name.startswith("_"):
            out[field_name] = first
        elif isinstance(first, torch.Tensor):
            out[field_name] = torch.cat(values, dim=1)
        elif isinstance(first, list):
            out[field_name] = [v for part in values for v in part]
        else:
            raise ValueError(f"join_seed_parts: {field_name!r} is neither a tensor nor a list nor shared")
    return out


def finished_models(settings: dict, results: dict):
    """(model, result) for each model of settings["models"] whose trial finished, in settings order."""
    return [(m, results[m]) for m in settings["models"] if m in results]


def seeds_for(settings: dict, count: int, offset: int = 0) -> list[int]:
    """The trial seeds of a run: consecutive from the run's base seed (--seed)."""
    return [settings["seed"] + offset + i for i in range(count)]


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed): the one place that sets it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig, path: Path) -> str:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    from ..files import atomic_file

    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- figures

# One colour per model across every figure of the study. The models compared side by side get
# distinct colours (func-fit's MLPs as before: blue, orange, green); the ordered family cnn-21 ...
# cnn-31 runs along a sequential colour map, from small (dark) to large (yellow).
_MODEL_COLORS = {
    "mlp-deep": "tab:blue",
    "mlp-mid": "tab:orange",
    "mlp-shallow": "tab:green",
    "cnn-1": "tab:red",
    "cnn-2": "tab:purple",
    "cnn-7": "tab:brown",
    "mlp-minratio": "tab:pink",
    "mnist-mlp": "tab:gray",
}


def model_color(name: str):
    """The colour of a zoo model in every figure (a matplotlib colour)."""
    if name in _MODEL_COLORS:
        return _MODEL_COLORS[name]
    from matplotlib import colormaps

    from ..models import CNN_FAMILY

    family = sorted(CNN_FAMILY)
    number = name.removeprefix("cnn-")
    if number.isdigit() and int(number) in family:
        return colormaps["viridis"](0.9 * family.index(int(number)) / max(len(family) - 1, 1))
    return "tab:olive"  # not in the zoo: one neutral colour


# --------------------------------------------------------------------------- curves over seeds


def median_iqr(runs) -> tuple:
    """runs [n_runs, points] -> (median, 25th, 75th percentile) per point, non-finite values (a
    diverged run) ignored; NaN where no run has a number."""
    import warnings

    import numpy as np

    a = np.asarray(runs, dtype=float).reshape(len(runs), -1)
    a = np.where(np.isfinite(a), a, np.nan)
    with warnings.catch_warnings():  # an all-NaN column is a gap in the curve, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, 0), np.nanpercentile(a, 25, 0), np.nanpercentile(a, 75, 0)


def plot_median_iqr(ax, x, runs, label: str, color, style: str = "-"):
    """One curve over seeds: the median as a line (matplotlib format `style`), the interquartile
    range as a band, and n (the runs with any finite value) in the legend label."""
    import numpy as np

    med, lo, hi = median_iqr(runs)
    n = int(np.isfinite(np.asarray(runs, dtype=float).reshape(len(runs), -1)).any(1).sum())
    ax.plot(x, med, style, color=color, ms=4, label=f"{label} (median, IQR, n={n})")
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


# --------------------------------------------------------------------------- divergence

WEIGHT_LIMIT = 1e6  # a weight beyond this in size: the training blew up


def blown_up(ens) -> list[bool]:
    """Per member of an engine.Ensemble: a non-finite weight, or one beyond WEIGHT_LIMIT in size.
    A huge learning rate (say 1e8) explodes the weights while the loss can stay finite (cnn-1's
    Softmax bounds its cross-entropy; an MLP's reaches 1e24 without overflowing): such a member
    has diverged too, and its numbers must not enter a claim."""
    out = torch.zeros(ens.n, dtype=torch.bool)
    for p in ens.params.values():
        flat = p.detach().reshape(ens.n, -1).cpu()
        out |= ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) > WEIGHT_LIMIT)
    return out.tolist()
