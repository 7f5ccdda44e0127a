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

import importlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path


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
    p.add_argument(
        "--measures",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the measures to run (default: every one of analysis.measures.MEASURES: top_eigenvalues, trace, density, "
        "sharpness, plane, ...)",
    )
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


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_settings(args) -> None:
    """ConfigError (one line) for a setting out of range or a bad combination; reads nothing."""
    from .experiments._base import ConfigError

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
    from .analysis.measures import NAMES

    args.measures = list(NAMES) if args.measures is None else args.measures
    if unknown := [m for m in args.measures if m not in NAMES]:
        raise ConfigError(f"--measures {' '.join(unknown)}: not a measure (choose from {', '.join(NAMES)})")
    if len(set(args.measures)) != len(args.measures):
        raise ConfigError(f"--measures {' '.join(args.measures)}: a measure is listed twice")


def check_train_size(args) -> None:
    """--train-size against the data set's size (with --run, known once the run is read)."""
    from .experiments._base import ConfigError

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

    from .experiments._base import ConfigError

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

    from .experiments._base import ConfigError

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
    from .experiments._base import WEIGHT_LIMIT, ConfigError
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


# --------------------------------------------------------------------------- the run


def kept_models(run_dir: Path, only: list[str] | None = None) -> list[dict]:
    """The trained models a study's run folder keeps: [{"experiment", "trial", "model", "labels",
    "params", "buffers"}], one entry per trial that kept weights (experiments/_curvature.py).
    run_dir is the study's folder or one experiment's folder. ConfigError (one line) when it holds
    no run, or no kept models; RunFolderError when a folder of it is a link."""
    from . import experiments
    from .experiments._base import ConfigError
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
    from .experiments._base import ConfigError, blown_up

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
    from .experiments._base import ConfigError
    from .report.curvature_folder import SUBFOLDERS
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
    from .analysis.measures import BY_NAME
    from .findings import jsonable
    from .report.curvature_folder import measure_problem, render, summarize
    from .runner import run_folder

    p = plan(args)
    with run_folder(p.out):  # makes the folder, holds its lock (a second writer is refused)
        p.store.prepare(p.config)  # config.json, and the temporary files of killed writes removed
        (p.out / "measures").mkdir(exist_ok=True)  # also when nothing is measured: it marks an analyze folder
        n = len(p.labels) if p.labels is not None else None
        results, failed = {}, []
        if p.diverged:
            print(f"the model diverged ({p.diverged}): recorded; nothing to measure")
        b = budget(args)
        for name in args.measures:
            measure = BY_NAME[name]
            kept, damaged = p.store.read_record("measures", name, lambda r: measure_problem(name, r, n))
            if kept is not None:
                results[name] = kept
                print(f"{name}: done before, kept")
                continue
            if damaged:
                print(
                    f"dlscope: {p.store.record_path('measures', name)}: damaged ({damaged}); computing {name} again",
                    file=sys.stderr,
                )
            if p.diverged:
                continue
            try:
                results[name] = jsonable(measure.compute(p.model, p.data, b))
            except Exception as e:  # one failing measure never loses the others
                p.store.save_record_failure("measures", name, traceback.format_exc())
                failed.append(name)
                print(f"{name}: FAILED ({_first_line(e)})", file=sys.stderr)
                continue
            p.store.save_record("measures", name, results[name])
            print(f"{name}: {measure.one_line(results[name]) if p.labels is None else 'done'}")
        summary = summarize(p.config, results, failed, p.diverged, p.skipped)
        p.store.write_summary(summary)
        render(p.out, summary)
    print(f"-> {p.out}")
    return 1 if failed else 0


def budget(args):
    """The measures' budget from the command's settings (analysis.measures.Budget)."""
    from .analysis.measures import Budget

    return Budget(
        loss=args.loss,
        mode=args.mode,
        batch_size=args.batch_size,
        seed=args.seed,
        k=args.k,
        trace_hvp=args.trace_hvp,
        sharpness_steps=args.sharpness_steps,
        density_vectors=args.density_vectors,
        density_steps=args.density_steps,
        plane_steps=args.plane_steps,
    )
