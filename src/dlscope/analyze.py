"""`dlscope analyze`: curvature, sharpness and the loss plane of any model, as a run folder.

    dlscope analyze --model mymodels:build_cnn [--weights w.pt] --data cifar10 --train-size 1000 --out DIR
    dlscope analyze --run RUN_DIR [--experiment interpolation] [--out DIR]

--run measures the trained models a finished study keeps (interpolation and sensitivity keep each
model's final weights in their trials/*.pt), all of them as one ensemble, on the data they were
trained on; --out defaults to RUN_DIR/analyze, where `dlscope report RUN_DIR` finds it.

Everything is checked before anything is written (not even the folder): every setting's range,
the model and its weights, and one forward pass on one batch (the images fit the model, its
outputs fit the classes and the loss, two passes agree). Bad usage is one line and exit 2; a
measure that fails while running is one line and exit 1. A model with non-finite or exploded
weights, or a non-finite loss, is a result: recorded as diverged in summary.json, nothing measured.

The folder is a run folder of store.RunStore (RunStore.folder): its lock, its atomic writes, no
folder of it a symbolic link, the temporary files of killed writes removed, resume by running the
same command again. Every file read back from it is read as data (never through a link) and its
shape is checked; a damaged measure is named and computed again.

MODULE:FACTORY is imported from the current folder or PYTHONPATH; FACTORY() must return an
nn.Module for the data's images ([B, 3, 32, 32] for cifar10, [B, 1, 32, 32] for mnist). Weights
are read with torch.load(weights_only=True): a state dict, or a dict holding one under
"state_dict" or "model". The folder holds:

    config.json               the settings (a rerun with other settings is refused)
    measures/<name>.json      each finished measure; present = done, skipped on resume
    measures/<name>.error.txt a failed measure's error (run again on resume)
    summary.json              top_eigenvalues, trace, sharpness, plane, density (null if not run);
                              with --run each holds one entry per model (in "models" order), and
                              "per_model" the same per model; "diverged": why the model counts
                              as diverged (then nothing is measured), else null
    figures/density.png, figures/plane.png, figures/sharpness.png
    report.md, report.html    self-contained (figures embedded)
"""

from __future__ import annotations

import base64
import html
import importlib
import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

MEASURES = ("top_eigenvalues", "trace", "density", "sharpness", "plane")
SHARPNESS_KINDS = ("keskar", "sam", "adaptive", "average")


def add_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="MODULE:FACTORY", help="a function returning your nn.Module")
    which.add_argument("--run", metavar="RUN_DIR", help="a finished study's run folder: measure the trained models it kept")
    p.add_argument(
        "--experiment",
        action="append",
        default=None,
        metavar="NAME",
        help="with --run: only this experiment's models (repeatable; default: every experiment that kept some)",
    )
    p.add_argument("--weights", default=None, help="a state dict saved with torch.save (read with weights_only=True)")
    p.add_argument(
        "--data", default=None, choices=["cifar10", "mnist"], help="required with --model; with --run, the models' own"
    )
    p.add_argument("--train-size", type=int, default=1000, help="training images measured on (balanced subset)")
    p.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    p.add_argument("--out", default=None, help="the output folder (required with --model; default with --run: RUN_DIR/analyze)")
    p.add_argument("--loss", default="ce", choices=["ce", "mse"])
    p.add_argument("--mode", default="eval", choices=["eval", "train"], help="batch norm / dropout mode (default eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=3, help="top eigenvalues to compute")
    p.add_argument("--trace-hvp", type=int, default=99, help="Hessian-vector products for the trace")
    p.add_argument("--density-vectors", type=int, default=5)
    p.add_argument("--density-steps", type=int, default=60)
    p.add_argument("--sharpness-steps", type=int, default=20)
    p.add_argument("--plane-steps", type=int, default=21)
    p.add_argument("--batch-size", type=int, default=500, help="examples per pass (memory only)")
    p.add_argument("--data-dir", default=None)


# Each number setting: (lowest, highest). The highest are far beyond any useful budget: a typo
# such as an extra zero is refused instead of running for days.
LIMITS = {
    "seed": (0, 2**32 - 1),  # as `dlscope run --seed`
    "k": (1, 100),  # Lanczos takes at most 100 steps
    "trace_hvp": (8, 100_000),  # Hutch++ needs 8 products
    "density_vectors": (1, 1_000),
    "density_steps": (1, 1_000),
    "sharpness_steps": (1, 100_000),
    "plane_steps": (3, 201),  # odd: the model is the centre point; 3 is the smallest plane to draw
    "batch_size": (1, 10_000_000),
}
TRAIN_IMAGES = {"cifar10": 50_000, "mnist": 60_000}  # the training sets' sizes
CLASSES = 10
SUBFOLDERS = ("measures", "figures")  # below the analyze folder (RunStore checks and cleans them)


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_settings(args) -> None:
    """ConfigError (one line) for a setting out of range or a bad combination; reads nothing."""
    from .experiments.base import ConfigError

    if args.model and (args.data is None or args.out is None):
        raise ConfigError("--model needs --data and --out")
    if args.run and (args.weights or args.data):
        raise ConfigError("--run measures the run's own models on their own data: drop --weights and --data")
    if args.experiment and not args.run:
        raise ConfigError("--experiment goes with --run")
    for key, (lo, hi) in LIMITS.items():
        value = getattr(args, key)
        if not lo <= value <= hi:
            raise ConfigError(f"{_option(key)} {value}: expected {lo} to {hi}")
    if args.plane_steps % 2 != 1:
        raise ConfigError(f"--plane-steps {args.plane_steps}: expected an odd number (the model is the centre point)")
    check_train_size(args)
    if len(set(args.measures)) != len(args.measures):
        raise ConfigError(f"--measures {' '.join(args.measures)}: a measure is listed twice")


def check_train_size(args) -> None:
    """--train-size against the data set's size (with --run, known once the run is read)."""
    from .experiments.base import ConfigError

    if args.train_size < 1:
        raise ConfigError(f"--train-size {args.train_size}: expected at least 1 image")
    if args.data and args.train_size > TRAIN_IMAGES[args.data]:
        raise ConfigError(f"--train-size {args.train_size}: {args.data} has {TRAIN_IMAGES[args.data]} training images")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def load_factory(spec: str):
    """The model FACTORY() of MODULE returns. Every way this can go wrong is one ConfigError: the
    user's own code is imported and run here, so any exception it raises is bad usage."""
    from torch import nn

    from .experiments.base import ConfigError

    mod_name, _, fn_name = spec.partition(":")
    if spec.count(":") != 1 or not mod_name or not fn_name:
        raise ConfigError(f"--model {spec!r}: expected MODULE:FACTORY, e.g. mymodels:build")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"--model: cannot import {mod_name!r} from the current folder or PYTHONPATH ({e})") from e
    except Exception as e:  # a syntax error, or an error while the module runs
        raise ConfigError(f"--model: importing {mod_name!r} failed ({_first_line(e)})") from None
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise ConfigError(f"--model: {mod_name} has no function {fn_name!r}")
    try:
        model = factory()
    except Exception as e:
        raise ConfigError(f"--model: {spec}() failed ({_first_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model: {spec}() returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model, path: str) -> None:
    """The state dict of `path` into model; ConfigError naming the file when it is not one that
    fits. Read with weights_only=True: data, never code."""
    import torch

    from .experiments.base import ConfigError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing, a folder, garbage, or objects weights_only refuses to build
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise ConfigError(f"--weights {path}: not a weights file dlscope can read ({reason})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise ConfigError(f"--weights {path}: does not fit the model ({_first_line(e)})") from None


def check_model(model, spec: str, x, y, args) -> str | None:
    """One forward pass on one batch, before anything runs or is written: ConfigError (one line)
    if the model does not take the data set's images, or its outputs do not fit the classes and
    the loss, or two passes differ. Returns why the model counts as diverged (non-finite or
    exploded weights, a non-finite loss), or None. The model itself is not changed."""
    import copy

    import torch

    from .analysis.objective import NondeterministicObjective, Objective
    from .experiments.base import WEIGHT_LIMIT, ConfigError
    from .losses import mean_loss

    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_params == 0:
        raise ConfigError(f"--model {spec}: the model has no trainable parameters; nothing to measure")
    if "top_eigenvalues" in args.measures and args.k > n_params:
        raise ConfigError(f"--k {args.k}: the model has only {n_params} parameters")
    xb, yb = x[: args.batch_size], y[: args.batch_size]
    images = f"{args.data} images [B, {', '.join(str(d) for d in x.shape[1:])}]"
    try:
        probe = copy.deepcopy(model)  # a train-mode pass updates batch-norm statistics: not the model's
        probe.train(args.mode == "train")
        with torch.no_grad():
            out = probe(xb)
    except Exception as e:
        raise ConfigError(f"--model {spec} does not take {images} ({_first_line(e)})") from None
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise ConfigError(
            f"--model {spec} returns {type(out).__name__ if not isinstance(out, torch.Tensor) else out.dtype}, "
            f"not a tensor of floating-point outputs"
        )
    got = f"[B, {', '.join(str(d) for d in out.shape[1:])}]" if out.dim() else "a scalar"
    if args.loss == "ce" and (out.dim() != 2 or out.shape != (len(xb), CLASSES)):
        raise ConfigError(
            f"--model {spec} gives outputs {got} for {images}; --loss ce needs [B, {CLASSES}], one per class of {args.data}"
        )
    if args.loss == "mse" and out.numel() != len(xb):
        raise ConfigError(f"--model {spec} gives outputs {got}; --loss mse needs one output per image ([B] or [B, 1])")
    try:
        loss = mean_loss(out, yb.to(out.dtype) if args.loss == "mse" else yb, args.loss)
    except Exception as e:
        raise ConfigError(f"--model {spec}: its outputs do not fit --loss {args.loss} ({_first_line(e)})") from None
    weights = [t.detach() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    if not all(bool(torch.isfinite(t).all()) for t in weights):
        return "non-finite weights"
    if any(t.numel() and float(t.abs().max()) > WEIGHT_LIMIT for t in weights):
        return f"weights beyond {WEIGHT_LIMIT:g} in size"
    if not torch.isfinite(loss):
        return "a non-finite loss"
    try:  # every measure checks this first: one line here instead of one failure per measure
        Objective(model, (xb, yb), args.loss, args.mode).check_deterministic()
    except NondeterministicObjective as e:
        raise ConfigError(f"--model {spec} in --mode {args.mode}: {e}") from None
    return None


def _finite(obj):
    """JSON without NaN: a non-finite number is recorded as null (the measure diverged there)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _compute(name: str, model, data, args) -> dict:
    from . import analysis as an

    common = dict(loss=args.loss, mode=args.mode, batch_size=args.batch_size)
    if name == "top_eigenvalues":
        return an.top_eigenvalues(model, data, k=args.k, seed=args.seed, **common).to_dict()
    if name == "trace":
        return an.trace(model, data, n_hvp=args.trace_hvp, seed=args.seed, **common).to_dict()
    if name == "density":
        return an.spectral_density(
            model, data, n_vectors=args.density_vectors, steps=args.density_steps, seed=args.seed, **common
        ).to_dict()
    if name == "sharpness":
        return {
            kind: an.sharpness(model, data, kind=kind, steps=args.sharpness_steps, seed=args.seed, **common).to_dict()
            for kind in SHARPNESS_KINDS
        }
    if name == "plane":
        return an.loss_plane(model, data, steps=args.plane_steps, seed=args.seed, **common).to_dict()
    raise ValueError(name)


# --------------------------------------------------------------------------- the shapes of what the folder holds


def _floats(v):
    """Nested lists of JSON numbers with null (not finite) as NaN; ValueError for anything else."""
    if isinstance(v, list):
        return [_floats(x) for x in v]
    if v is None:
        return math.nan
    if type(v) in (int, float):
        return float(v)
    raise ValueError(f"a {type(v).__name__} where a number belongs")


def _array(v, dims: int, n: int | None = None):
    """v as a float64 tensor of `dims` dimensions (one more, of length n, per model for an
    ensemble); ValueError if it is not a rectangular nested list of numbers of that shape."""
    import torch

    t = torch.tensor(_floats(v), dtype=torch.float64)
    want = dims + (n is not None)
    if t.dim() != want or (n is not None and t.shape[0] != n) or (dims and t.numel() == 0):
        raise ValueError(f"not {want}-dimensional{f' with {n} models' if n is not None else ''}")
    return t


def _number(v) -> bool:
    return v is None or type(v) in (int, float)


def _count(v) -> bool:
    return type(v) is int and v >= 0


def _flags(v, n) -> bool:
    return type(v) is bool if n is None else isinstance(v, list) and len(v) == n and all(type(b) is bool for b in v)


def _interval(v, n) -> None:
    if _array(v, 1, n).shape[-1] != 2:
        raise ValueError("an interval is two numbers")


def measure_problem(name: str, r, n: int | None = None) -> str | None:
    """None if r has the shape measure `name` is written in (n: models of an ensemble, None for one
    model); else what is wrong, in a few words."""
    try:
        if not isinstance(r, dict):
            return f"a JSON {type(r).__name__}, not an object"
        if name == "top_eigenvalues":
            _array(r.get("values"), 1, n)
            ok = _flags(r.get("converged"), n) and _count(r.get("n_hvp"))
        elif name == "trace":
            _array(r.get("value"), 0, n)
            _interval(r.get("ci"), n)
            ok = _count(r.get("n_hvp")) and isinstance(r.get("method"), str)
        elif name == "density":
            nodes, weights = _array(r.get("nodes"), 2, n), _array(r.get("weights"), 2, n)
            ok = nodes.shape == weights.shape and all(_count(r.get(k)) for k in ("n_hvp", "n_vectors", "steps"))
        elif name == "sharpness":
            ok = bool(r) and set(r) <= set(SHARPNESS_KINDS) and all(isinstance(v, dict) for v in r.values())
            for v in r.values() if ok else ():
                for key in ("value", "loss", "max_loss"):
                    _array(v.get(key), 0, n)
                if v.get("ci") is not None:
                    _interval(v["ci"], n)
                ok = ok and _number(v.get("radius")) and _count(v.get("steps"))
        elif name == "plane":
            alphas, betas = _array(r.get("alphas"), 1), _array(r.get("betas"), 1)
            loss = _array(r.get("loss"), 2, n)
            ok = (
                loss.shape[-2:] == (len(alphas), len(betas))
                and len(alphas) % 2 == 1
                and len(betas) % 2 == 1
                and _number(r.get("span"))
            )
        else:
            return "not a measure of dlscope analyze"
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        return str(e) or type(e).__name__
    return None if ok else "a field is missing or of the wrong type"


def read_measure(path: Path, name: str, n: int | None) -> tuple[dict | None, str | None]:
    """(a finished measure's result, None), (None, None) if there is none, or (None, why the file
    is damaged): read as data, its shape checked, never through a link."""
    from .store import read_json

    obj, why = read_json(path)
    if why is None and obj is not None:
        why = measure_problem(name, obj, n)
    return (None, why) if why else (obj, None)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def read_summary(folder: Path) -> tuple[dict | None, list[str]]:
    """An analyze folder's summary.json as the report uses it, or (None, what is damaged). The
    per-model tables are rebuilt from the measures, so that they cannot disagree with them."""
    from .store import read_json

    path = folder / "summary.json"
    s, why = read_json(path)
    if why or not isinstance(s, dict):
        return None, [f"summary.json: {why or ('missing' if s is None else 'not a JSON object')}"]
    problems = [
        f"summary.json: {key} is not text" for key in ("model", "data", "loss", "mode") if not isinstance(s.get(key), str)
    ]
    if not _count(s.get("train_size")):
        problems.append("summary.json: train_size is not a number of images")
    if not _strings(s.get("failed", [])):
        problems.append("summary.json: failed is not a list of measures")
    if s.get("diverged") is not None and not isinstance(s["diverged"], str):
        problems.append("summary.json: diverged is not text")
    n = None
    if "models" in s:
        if (
            not _strings(s["models"])
            or not s["models"]
            or not isinstance(s.get("run"), str)
            or not _strings(s.get("skipped_diverged", []))
        ):
            problems.append("summary.json: models, run or skipped_diverged is not what dlscope analyze --run writes")
        else:
            n = len(s["models"])
    for name in MEASURES:
        if s.get(name) is not None and (why := measure_problem(name, s[name], n)):
            problems.append(f"summary.json: {name}: {why}")
    if problems:
        return None, problems
    if n is not None:
        s["per_model"] = per_model(s, s["models"])
    return s, []


# --------------------------------------------------------------------------- the run


def kept_models(run_dir: Path, only: list[str] | None = None) -> list[dict]:
    """The trained models a study's run folder keeps: [{"experiment", "trial", "model", "labels",
    "params", "buffers"}], one entry per trial that kept weights (experiments/curvature.py).
    run_dir is the study's folder or one experiment's folder. ConfigError (one line) when it holds
    no run, or no kept models; RunFolderError when a folder of it is a link."""
    from . import experiments
    from .experiments.base import ConfigError
    from .store import RunStore, read_pt

    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such folder")
    if (run_dir / "config.json").exists() and run_dir.name in experiments.names():
        folders = [run_dir]
    else:
        folders = [run_dir / n for n in experiments.names() if (run_dir / n / "config.json").exists()]
    if not folders:
        raise ConfigError(f"--run {run_dir}: holds no dlscope run (no experiment folder with a config.json)")
    if only:
        unknown = sorted(set(only) - {f.name for f in folders})
        if unknown:
            raise ConfigError(
                f"--experiment {', '.join(unknown)}: not in {run_dir} (it holds {', '.join(f.name for f in folders)})"
            )
        folders = [f for f in folders if f.name in only]
    kept = []
    for folder in folders:
        if folder != run_dir:  # an experiment's folder, or its trials/, that is a link: nothing is read through it
            RunStore(run_dir, folder.name).check_folders()
        for path in sorted((folder / "trials").glob("*.pt")):
            result = read_pt(path)  # tensors only (weights_only=True), never through a link
            w = (result or {}).get("weights")
            if isinstance(w, dict) and isinstance(w.get("params"), dict) and w["params"]:
                kept.append({"experiment": folder.name, "trial": path.stem, **w})
    if not kept:
        raise ConfigError(
            f"--run {run_dir}: no trained models kept (interpolation and sensitivity keep their models' "
            f"final weights in trials/*.pt, in runs made by this version); nothing to measure"
        )
    return kept


def load_kept(kept: list[dict]):
    """One engine.Ensemble of every kept model that did not blow up, its labels, and the labels
    of those left out. All kept models must be of one zoo model."""
    import torch

    from . import models
    from .engine import Ensemble
    from .experiments.base import ConfigError, blown_up

    names = sorted({str(k.get("model")) for k in kept})
    if len(names) != 1:
        raise ConfigError(
            f"--run: the kept models are of several architectures ({', '.join(names)}); choose one with --experiment"
        )
    try:
        params = {k: torch.cat([m["params"][k] for m in kept]) for k in kept[0]["params"]}
        buffers = {k: torch.cat([m["buffers"][k] for m in kept]) for k in kept[0].get("buffers") or {}}
        labels = [f"{m['experiment']}: {lab}" for m in kept for lab in m["labels"]]
        module = models.build(names[0])
        for have, want in ((params, dict(module.named_parameters())), (buffers, dict(module.named_buffers()))):
            if set(have) != set(want) or any(have[k].shape[1:] != want[k].shape for k in want):
                raise ValueError("weights of other names or shapes")
        ens = Ensemble(module, params, buffers)
        if not all(isinstance(lab, str) for lab in labels) or len(labels) != ens.n:
            raise ValueError(f"{len(labels)} labels for {ens.n} models")
    except Exception as e:  # a kept file of another shape: data from elsewhere, never trusted
        trials = ", ".join(f"{m['experiment']}/trials/{m['trial']}.pt" for m in kept)
        raise ConfigError(f"--run: the kept models ({trials}) do not load as {names[0]} ({_first_line(e)})") from None
    bad = blown_up(ens)
    ok = [i for i, b in enumerate(bad) if not b]
    if not ok:
        raise ConfigError("--run: every kept model diverged (non-finite or exploded weights); nothing to measure")
    idx = torch.tensor(ok)
    ens = Ensemble(ens.module, {k: v[idx] for k, v in params.items()}, {k: v[idx] for k, v in buffers.items()})
    data = "cifar10" if models.info(names[0])["input_shape"] == (3, 32, 32) else "mnist"
    return ens, names[0], data, [labels[i] for i in ok], [labels[i] for i, b in enumerate(bad) if b]


@dataclass
class Plan:
    """What a checked `dlscope analyze` will do: everything known before anything is written."""

    out: Path
    store: object  # store.RunStore of the analyze folder
    config: dict
    model: object  # an nn.Module, or an engine.Ensemble of a run's kept models
    data: tuple
    labels: list[str] | None = None  # a run's kept models, in order
    skipped: list[str] = field(default_factory=list)  # kept models left out: diverged
    diverged: str | None = None  # why the model counts as diverged (nothing is measured)


def plan(args) -> Plan:
    """Every check of `dlscope analyze`, in order: settings, the folder, the model and its
    weights, the data, one forward pass. Reads only; nothing is written (not even --out)."""
    from . import data as datasets
    from .experiments.base import ConfigError
    from .store import RunStore

    check_settings(args)
    out = Path(args.out) if args.out else Path(args.run) / "analyze"
    store = RunStore.folder(out, SUBFOLDERS, "dlscope analyze")
    try:
        if out.exists() and not out.is_dir() and not out.is_symlink():
            raise ConfigError(f"--out {out}: a file, not a folder")
        store.check_folders()  # a link out of the folder: refused before any work
    except OSError as e:  # a name too long, a folder that cannot be read
        raise ConfigError(f"--out {out}: cannot use that folder ({e.strerror or e})") from None
    labels, skipped, diverged = None, [], None
    if args.run:
        model, arch, args.data, labels, skipped = load_kept(kept_models(Path(args.run), args.experiment))
        check_train_size(args)  # the data set is known now
    else:
        model = load_factory(args.model)
        if args.weights:
            load_weights(model, args.weights)
    split = datasets.load(args.data, "cpu", args.data_dir, train_size=args.train_size).train
    if len(split) != args.train_size:  # a smaller data root, or too few images of a class for a balanced subset
        raise ConfigError(
            f"--train-size {args.train_size}: a class-balanced subset of {args.data} has only {len(split)} "
            f"images here; choose at most {len(split)}"
        )
    if not args.run:
        diverged = check_model(model, args.model, split.x, split.y, args)
    config = {
        k: getattr(args, k)
        for k in (
            "model",
            "weights",
            "data",
            "train_size",
            "loss",
            "mode",
            "seed",
            "k",
            "trace_hvp",
            "density_vectors",
            "density_steps",
            "sharpness_steps",
            "plane_steps",
        )
    }
    config["weights"] = str(Path(args.weights).resolve()) if args.weights else None
    if args.run:
        config.update(model=arch, run=str(Path(args.run).resolve()), experiment=sorted(args.experiment or []), models=labels)
    try:
        store.check(config)  # other settings in the folder: refused; a damaged config.json: named
    except OSError as e:  # a name too long, a folder that cannot be read
        raise ConfigError(f"--out {out}: cannot use that folder ({e.strerror or e})") from None
    return Plan(out, store, config, model, (split.x, split.y), labels, skipped, diverged)


def run(args) -> int:
    """`dlscope analyze`: checks first (plan), then the measures into the folder, under its lock,
    through the run folder's code (store.RunStore): a kill at any moment resumes."""
    from .runner import run_folder
    from .store import write_json

    p = plan(args)
    with run_folder(p.out):  # makes the folder, holds its lock (a second writer is refused)
        p.store.prepare(p.config)  # config.json, and the temporary files of killed writes removed
        (p.out / "measures").mkdir(exist_ok=True)  # also when nothing is measured: it marks an analyze folder
        n = len(p.labels) if p.labels is not None else None
        results, failed = {}, []
        if p.diverged:
            print(f"the model diverged ({p.diverged}): recorded; nothing to measure")
        for name in args.measures:
            path, err = p.out / "measures" / f"{name}.json", p.out / "measures" / f"{name}.error.txt"
            kept, damaged = read_measure(path, name, n)
            if kept is not None:
                results[name] = kept
                print(f"{name}: done before, kept")
                continue
            if damaged:
                print(f"dlscope: {path}: damaged ({damaged}); computing {name} again", file=sys.stderr)
            if p.diverged:
                continue
            try:
                results[name] = _finite(_compute(name, p.model, p.data, args))
            except Exception as e:  # one failing measure never loses the others
                from .files import write_text_atomic

                write_text_atomic(err, traceback.format_exc())
                failed.append(name)
                print(f"{name}: FAILED ({_first_line(e)})", file=sys.stderr)
                continue
            write_json(path, results[name])
            err.unlink(missing_ok=True)
            print(f"{name}: {_one_line(name, results[name]) if p.labels is None else 'done'}")

        summary = {
            "model": p.config["model"],
            "data": args.data,
            "train_size": args.train_size,
            "loss": args.loss,
            "mode": args.mode,
            **{m: results.get(m) for m in MEASURES},
            "failed": failed,
            "diverged": p.diverged,
        }
        if p.labels is not None:
            summary.update(
                run=p.config["run"], models=p.labels, skipped_diverged=p.skipped, per_model=per_model(results, p.labels)
            )
        write_json(p.out / "summary.json", summary)
        render(p.out, summary)
    print(f"-> {p.out}")
    return 1 if failed else 0


def render(out: Path, summary: dict) -> list[Path]:
    """The figures and report.md / report.html of an analyze folder, from its summary."""
    figures = write_figures(out, summary)
    return write_report(out, summary, figures)


def render_folder(folder: Path) -> list[Path]:
    """`dlscope report` on an analyze folder: its figures and report again, from its summary read
    as data. RunFolderError (one line) if the summary is damaged or a folder of it is a link."""
    from .store import RunFolderError, RunStore

    RunStore.folder(folder, SUBFOLDERS, "dlscope analyze").check_folders()
    summary, damaged = read_summary(folder)
    if damaged:
        raise RunFolderError(f"{folder} is damaged ({'; '.join(damaged)}); run dlscope analyze again to write it anew")
    return render(folder, summary)


def is_analyze_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "summary.json").is_file() and (path / "measures").is_dir()


def per_model(results: dict, labels: list[str]) -> list[dict]:
    """An ensemble's results split per model: top_eigenvalues, trace, sharpness, plane (and density)."""
    out = []
    for i, label in enumerate(labels):
        m = {"label": label}
        e, t, s, p, d = (results.get(k) for k in ("top_eigenvalues", "trace", "sharpness", "plane", "density"))
        m["top_eigenvalues"] = {"values": e["values"][i], "converged": e["converged"][i], "n_hvp": e["n_hvp"]} if e else None
        m["trace"] = {"value": t["value"][i], "ci": t["ci"][i], "n_hvp": t["n_hvp"], "method": t["method"]} if t else None
        m["sharpness"] = (
            {
                kind: {
                    "value": v["value"][i],
                    "radius": v["radius"],
                    "loss": v["loss"][i],
                    "max_loss": v["max_loss"][i],
                    "steps": v["steps"],
                    "ci": v["ci"][i] if v.get("ci") else None,
                }
                for kind, v in s.items()
            }
            if s
            else None
        )
        m["plane"] = {"alphas": p["alphas"], "betas": p["betas"], "loss": p["loss"][i]} if p else None
        m["density"] = {"nodes": d["nodes"][i], "weights": d["weights"][i]} if d else None
        out.append(m)
    return out


def _one_line(name: str, r: dict) -> str:
    """A measure's result in one line; a non-finite number (null) shows as n/a."""
    if name == "top_eigenvalues":
        return "λ = " + ", ".join(_fmt(v) for v in r["values"])
    if name == "trace":
        return f"{_fmt(r['value'])}  95% [{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]  ({r['n_hvp']} HVPs, {r['method']})"
    if name == "sharpness":
        return "  ".join(f"{k} {_fmt(v['value'])}" for k, v in r.items())
    if name == "plane":
        return f"{len(r['alphas'])}×{len(r['betas'])} grid"
    return f"{r.get('n_vectors')} vectors × {r.get('steps')} steps"


# --------------------------------------------------------------------------- figures and report


def write_figures(out: Path, summary: dict) -> list[tuple[str, Path]]:
    from .experiments.base import pyplot

    plt = pyplot()

    from .analysis import Density, Plane, plot_density, plot_plane
    from .files import atomic_file

    figs = []

    def save(fig, name, caption):
        path = out / "figures" / name
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs.append((caption, path))

    if summary.get("per_model") is not None:
        _per_model_figures(summary, save)
        return figs

    d = summary.get("density")
    if d and _drawable(d):
        dens = Density(_array(d["nodes"], 2), _array(d["weights"], 2), d["n_hvp"], d)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_density(dens, ax, label=f"{summary['model']} (n = {d['n_vectors']} vectors)")
        save(fig, "density.png", "Hessian spectral density (stochastic Lanczos quadrature)")
    p = summary.get("plane")
    if p:
        plane = Plane(p["alphas"], p["betas"], _array(p["loss"], 2), (None, None), p)
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        plot_plane(
            plane, ax, title=f"{summary['model']}: loss on a filter-normalised plane ({len(p['alphas'])}×{len(p['betas'])})"
        )
        save(fig, "plane.png", "Loss plane (Li et al. 2018), the model at the centre")
    s = summary.get("sharpness")
    if s:
        rows = [
            [
                k,
                _fmt(v["value"]),
                _fmt(v["radius"]),
                _fmt(v["loss"]),
                _fmt(v["max_loss"]),
                "" if not v.get("ci") else f"[{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]",
            ]
            for k, v in s.items()
        ]
        fig, ax = plt.subplots(figsize=(9, 0.6 + 0.35 * len(rows)))
        ax.axis("off")
        table = ax.table(
            cellText=rows,
            colLabels=["kind", "sharpness", "radius", "loss", "max / mean loss", "95% interval"],
            loc="center",
            colWidths=[0.12, 0.13, 0.1, 0.12, 0.18, 0.35],
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        ax.set_title(f"{summary['model']}: sharpness", fontsize=10)
        save(
            fig, "sharpness.png", "Sharpness (keskar: % rise in an ε-box; sam/adaptive: worst rise in a ball; average: mean rise)"
        )
    return figs


FIGURE_CAPTIONS = {
    "density.png": "Hessian spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019); for a run's kept "
    "models, one line per model.",
    "plane.png": "Loss on a 2-D filter-normalised plane (Li et al. 2018) with the model at the centre (red star).",
    "sharpness.png": "Sharpness (keskar: % rise in an ε-box; sam/adaptive: worst rise in a ball; average: mean rise).",
}
SHOWN_MODELS = 9  # planes drawn for a run's kept models: the first few (every number is in summary.json)


def _per_model_figures(summary: dict, save) -> None:
    """A run's kept models: the density of each (one line per model) and the planes of the first
    SHOWN_MODELS, each in its own panel (the table is in the report)."""
    import matplotlib.pyplot as plt

    from .analysis import Density, Plane, plot_plane

    rows = summary["per_model"]
    d = summary.get("density")
    if d:
        fig, ax = plt.subplots(figsize=(8, 4))
        for m in rows:
            if not _drawable(m["density"]):
                continue
            dens = Density(_array(m["density"]["nodes"], 2), _array(m["density"]["weights"], 2), d["n_hvp"], d)
            grid, y = dens.curve()
            ax.plot(grid.numpy(), y.clamp_min(1e-12).numpy(), lw=1, label=m["label"])
        ax.set(yscale="log", xlabel="eigenvalue λ", ylabel="density (Gaussian-smoothed)")
        ax.set_ylim(bottom=1e-6)  # the Gaussian tails below say nothing
        ax.set_title(
            f"Hessian spectral density of each kept model (SLQ, {d['n_vectors']} vectors × {d['steps']} steps)", fontsize=9
        )
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
        save(
            fig, "density.png", "Hessian spectral density of each kept model (stochastic Lanczos quadrature), one line per model"
        )
    if summary.get("plane"):
        shown = rows[:SHOWN_MODELS]
        cols = min(3, len(shown))
        fig, axes = plt.subplots(
            (len(shown) + cols - 1) // cols,
            cols,
            figsize=(4.6 * cols, 3.9 * ((len(shown) + cols - 1) // cols)),
            squeeze=False,
            layout="constrained",
        )
        for ax, m in zip(axes.flat, shown):
            p = m["plane"]
            grid = _array(p["loss"], 2)
            plot_plane(Plane(p["alphas"], p["betas"], grid, (None, None), summary["plane"]), ax, title=m["label"])
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        more = f" (the first {len(shown)} of {len(rows)}; all in summary.json)" if len(rows) > len(shown) else ""
        save(fig, "plane.png", f"Loss plane (Li et al. 2018) around each kept model{more}, the model at the centre")


def _drawable(density: dict) -> bool:
    """Whether a density's nodes and weights are all finite (a diverged one has nothing to draw)."""
    import torch

    return bool(torch.isfinite(_array(density["nodes"], 2)).all() and torch.isfinite(_array(density["weights"], 2)).all())


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def summary_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The measures as one table (head, rows of text): one row per measure for one model, one row
    per model for a run's kept models. Also what a study's report shows of it."""
    if summary.get("per_model") is not None:
        kinds = list(summary.get("sharpness") or {})
        head = ["model", "top eigenvalues", "Hessian trace [95%]", *[f"sharpness {k}" for k in kinds], "plane centre loss"]
        rows = []
        for m in summary["per_model"]:
            e, t, sh, p = m.get("top_eigenvalues"), m.get("trace"), m.get("sharpness") or {}, m.get("plane")
            c = len(p["alphas"]) // 2 if p else 0
            rows.append(
                [
                    m["label"],
                    ", ".join(_fmt(v) for v in e["values"]) if e else "—",
                    f"{_fmt(t['value'])} [{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}]" if t else "—",
                    *[_fmt(sh[k]["value"]) if k in sh else "—" for k in kinds],
                    _fmt(p["loss"][c][c]) if p else "—",
                ]
            )
        return head, rows
    rows = []
    e, t = summary.get("top_eigenvalues"), summary.get("trace")
    if e:
        rows.append(
            [
                "top eigenvalues",
                ", ".join(_fmt(v) for v in e["values"]),
                f"Lanczos, {e['n_hvp']} HVPs, converged {e['converged']}",
            ]
        )
    if t:
        rows.append(
            [
                "Hessian trace",
                _fmt(t["value"]),
                f"95% [{_fmt(t['ci'][0])}, {_fmt(t['ci'][1])}], {t['n_hvp']} HVPs ({t['method']})",
            ]
        )
    for kind, sh in (summary.get("sharpness") or {}).items():
        cert = (
            f"95% [{_fmt(sh['ci'][0])}, {_fmt(sh['ci'][1])}], {sh['steps']} draws"
            if sh.get("ci")
            else f"best of {sh['steps']} ascent steps (a lower bound)"
        )
        rows.append([f"sharpness ({kind}, radius {_fmt(sh['radius'])})", _fmt(sh["value"]), cert])
    p = summary.get("plane")
    if p:
        c = len(p["alphas"]) // 2
        rows.append(
            ["loss plane", f"centre {_fmt(p['loss'][c][c])}", f"{len(p['alphas'])}×{len(p['betas'])} grid, span ±{p['span']}"]
        )
    return ["measure", "value", "certificate"], rows


def summary_text(summary: dict) -> list[str]:
    """The paragraphs above the table: what was measured, on what, and with which budget."""
    lines = [
        f"Data: {summary['data']} ({summary['train_size']} training images), loss {summary['loss']}, mode {summary['mode']}."
    ]
    if summary.get("per_model") is not None:
        e, t, sh = summary.get("top_eigenvalues"), summary.get("trace"), summary.get("sharpness") or {}
        budget = [
            f"top eigenvalues by Lanczos ({e['n_hvp']} HVPs)" if e else "",
            f"trace by {t['method']} ({t['n_hvp']} HVPs)" if t else "",
            ", ".join(f"{k} radius {_fmt(v['radius'])}" for k, v in sh.items()),
        ]
        lines.append(
            f"The {len(summary['per_model'])} trained models kept in {summary['run']}, measured as one ensemble: "
            + "; ".join(b for b in budget if b)
            + "."
        )
        if summary.get("skipped_diverged"):
            lines.append(f"Left out (diverged): {', '.join(summary['skipped_diverged'])}.")
    if summary.get("diverged"):
        lines.append(
            f"The model diverged ({summary['diverged']}): nothing was measured, and every measure is recorded "
            f"as not finite (null)."
        )
    if summary.get("failed"):
        lines.append(f"Failed measures (see measures/*.error.txt): {', '.join(summary['failed'])}")
    return lines


def markdown_section(summary: dict, figures: list[tuple[str, Path]], out: Path) -> str:
    """The analyze run as Markdown (figures linked relative to out)."""
    lines = [f"# dlscope analyze: {summary['model']}", ""]
    for text in summary_text(summary):
        lines += [text, ""]
    head, rows = summary_table(summary)
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    lines.append("")
    for caption, path in figures:
        lines += [f"![{caption}]({path.relative_to(out)})", ""]
    return "\n".join(lines)


def write_report(out: Path, summary: dict, figures: list[tuple[str, Path]]) -> list[Path]:
    """report.md (figures linked) and report.html (figures embedded, text escaped)."""
    from .files import write_text_atomic

    write_text_atomic(out / "report.md", markdown_section(summary, figures, out))
    body = [f"<h1>{html.escape('dlscope analyze: ' + str(summary['model']))}</h1>"]
    body += [f"<p>{html.escape(t)}</p>" for t in summary_text(summary)]
    head, rows = summary_table(summary)
    body.append("<table border=1 cellpadding=4><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
    body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    body.append("</table>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    style = "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}</style>"
    page = f"<!doctype html><meta charset=utf-8><title>dlscope analyze</title>{style}\n" + "\n".join(body) + "\n"
    write_text_atomic(out / "report.html", page)
    return [out / "report.md", out / "report.html"]
