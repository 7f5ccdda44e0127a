"""The driver: settings -> trials -> executor -> run folder -> summary, metrics, figures.

Resuming is the same call again: finished trials (a result file exists) are skipped, unfinished
ones restart from their checkpoint, failed ones are tried again.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import experiments
from .executors import Executor, Job, LocalExecutor, Outcome
from .experiments.base import ConfigError, resolve
from .files import FolderInUse, folder_lock
from .findings import finite_or_none
from .progress import Progress, StudyProgress, estimate_seconds, plan_seconds, progress_seconds
from .store import RunStore, checkpoint_seconds


@dataclass
class RunResult:
    experiment: str
    out_dir: Path
    summary: dict | None
    failed: dict[str, str] = field(default_factory=dict)  # trial key -> error
    trials_run: int | None = None  # trials this invocation ran (0: every one was already done)

    @property
    def ok(self) -> bool:
        return not self.failed and self.summary is not None


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d{1,4}", device):
        raise ConfigError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available (this torch: {torch.__version__})")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def default_out() -> Path:
    return Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_experiment(
    name: str,
    profile: str = "quick",
    out: Path | str | None = None,
    seed: int = 0,
    device: str = "auto",
    overrides: list[str] | None = None,
    executor: Executor | None = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> RunResult:
    """Run one experiment into out/<name>/. Everything that can be wrong beforehand (settings,
    device, run folder) is checked before anything is written."""
    out = Path(out) if out else default_out()
    device, [(module, cfg, trials, store)] = check_plan(name, profile, overrides, seed, out, device)
    every = checkpoint_seconds()
    with run_folder(out):
        store.prepare(cfg)
        return _run_trials(
            name, profile, seed, module, cfg, trials, store, device, every, executor or LocalExecutor(), data_dir, progress
        )


def check_run(name: str, profile: str, overrides: list[str] | None, seed: int, out: Path):
    """(module, settings, trials, store) of one experiment's run, checked against the run folder:
    ConfigError for bad settings or settings other than the folder's. Reads only."""
    module = experiments.get(name)
    cfg = resolve(module, profile, overrides, seed)
    trials = module.trials(cfg)
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{name}: these settings give two trials the same name ({', '.join(keys)})")
    store = RunStore(out, name)
    try:
        store.check(cfg)
    except OSError as e:  # a name too long, a folder that cannot be read
        raise ConfigError(f"--out {out}: cannot use that folder ({e.strerror or e})") from None
    return module, cfg, trials, store


def check_plan(experiment: str, profile: str, overrides: list[str] | None, seed: int, out: Path, device: str):
    """Everything a run of one experiment, or of `all`, checks before it writes anything; reads
    only, so a dry run makes the same checks. (device, [(module, settings, trials, store)])."""
    if experiment == "all":
        per = split_overrides(overrides)
        checked = []
        for name in experiments.available():  # bad settings anywhere stop the run before anything starts
            try:
                checked.append(check_run(name, profile, per.get(name), seed, out))
            except ConfigError as e:
                raise ConfigError(f"{name}: {e}") from None
    else:
        checked = [check_run(experiment, profile, overrides, seed, out)]
    device = pick_device(device)
    checkpoint_seconds()
    progress_seconds()
    return device, checked


@contextlib.contextmanager
def run_folder(out: Path):
    """Create the run folder if need be and hold its lock while the block runs: a folder that
    cannot be written, or that another dlscope run is writing now, is a ConfigError naming it."""
    with contextlib.ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(folder_lock(out))
        except FolderInUse as e:
            raise ConfigError(str(e)) from None
        except OSError as e:  # a file, below a file, read-only, a name too long
            raise ConfigError(f"--out {out}: cannot write a run folder there ({e.strerror or e})") from None
        yield


def _run_trials(name, profile, seed, module, cfg, trials, store, device, every, executor, data_dir, progress) -> RunResult:
    keys = [t.key for t in trials]
    todo = [t for t in trials if store.read_result(t.key) is None]  # unreadable results run again
    store.remove_checkpoints_except({t.key for t in todo})
    jobs = [Job(name, t, device, data_dir, str(store.checkpoint_path(t.key)), every) for t in todo]

    planned = estimate_seconds(name, cfg, len(trials), len(todo), str(device), seed)  # alone: the dry run's time
    bar = Progress(name, len(trials), len(trials) - len(todo), enabled=progress, planned=planned)
    failed: dict[str, str] = {}
    t0 = time.perf_counter()

    def on_outcome(job: Job, outcome: Outcome) -> None:
        if outcome.error is None:
            result = dict(outcome.result or {})
            result["_seconds"] = outcome.seconds
            store.save_result(job.trial.key, result)
        else:
            store.save_failure(job.trial.key, outcome.error)
            failed[job.trial.key] = outcome.error
            bar.write(f"{name}: trial {job.trial.key} failed: {outcome.error.strip().splitlines()[-1]}")
        bar.trial_done()

    try:
        executor.run(jobs, on_outcome, bar.epoch)
    finally:
        bar.close()

    results = {k: r for k in keys if (r := store.read_result(k, warn=False)) is not None}
    wall = time.perf_counter() - t0
    summary = {"experiment": name, "profile": profile, "seed": seed}
    summary.update(module.summarize(cfg, results))
    if failed:
        summary["failed_trials"] = sorted(failed)
    store.write_summary(_jsonable(summary))
    store.write_metrics(module.metrics(cfg, results))
    figures = module.figures(cfg, results, store.fig_dir) if results else []
    store.write_timing(
        {
            "device": device,
            "device_name": device_description(device),
            "executor": getattr(executor, "name", type(executor).__name__),
            "torch": torch.__version__,
            "wall_seconds_this_invocation": round(wall, 3),
            "trial_seconds": {k: round(r.get("_seconds", 0.0), 3) for k, r in results.items()},
            "total_trial_seconds": round(sum(r.get("_seconds", 0.0) for r in results.values()), 3),
            "figures": [Path(f).name for f in figures],
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    )
    return RunResult(name, store.dir, summary, failed, trials_run=len(todo))


def _jsonable(obj):
    """Plain JSON: tensors to lists, non-finite floats to null (diverged trials)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def split_overrides(overrides: list[str] | None) -> dict[str, list[str]]:
    """`run all --set EXPERIMENT.KEY=VALUE` -> {experiment: ["KEY=VALUE"]}."""
    per: dict[str, list[str]] = {}
    for item in overrides or []:
        head, sep, value = item.partition("=")
        exp, dot, key = head.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {item}: with `all`, write EXPERIMENT.KEY=VALUE")
        if exp not in experiments.names():
            raise ConfigError(f"--set {item}: unknown experiment {exp!r}")
        per.setdefault(exp, []).append(f"{key}={value}")
    return per


def run_all(
    profile: str = "quick",
    out=None,
    seed: int = 0,
    device: str = "auto",
    executor=None,
    data_dir=None,
    progress=True,
    overrides=None,
) -> list[RunResult]:
    """Every experiment in SPEC order, one after another, under one overall progress line.
    One failing (a trial, or the experiment itself) is reported and the others still run; the
    caller sees it in the results (RunResult.ok) and sets the exit code."""
    out = Path(out) if out else default_out()
    picked, plans = check_plan("all", profile, overrides, seed, out, device)
    planned = plan_seconds(plans, picked, seed)
    per = split_overrides(overrides)
    names = experiments.available()
    missing = [n for n in experiments.names() if n not in names]
    if missing:
        print(f"dlscope: not implemented in this version, skipped: {', '.join(missing)}", file=sys.stderr)
    results = []
    with run_folder(out), StudyProgress(names, enabled=progress, planned=planned) as study:
        for name in names:
            study.enter(name)
            try:
                result = run_experiment(name, profile, out, seed, device, per.get(name), executor, data_dir, progress)
            except ConfigError:
                raise
            except Exception as e:  # a crash outside the trials (summaries, figures): report, go on
                import traceback

                study.write(f"dlscope: {name} failed: {type(e).__name__}: {e}")
                result = RunResult(name, out / name, None, {"<experiment>": traceback.format_exc()})
            study.end_experiment()
            if not result.ok:
                what = ", ".join(sorted(result.failed)) or "no summary"
                study.write(f"dlscope: {name}: FAILED ({what}); going on with the others")
            results.append(result)
        study.finish([r.experiment for r in results if not r.ok])
    return results
