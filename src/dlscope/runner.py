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
from .executors import SIDE_BY_SIDE_MIN_SECONDS, AutoExecutor, Executor, Job, LocalExecutor, Outcome, heaviest_first
from .executors.process import ProcessExecutor, cpu_count
from .experiments._base import ConfigError, resolve
from .files import FolderInUse, folder_lock
from .findings import jsonable
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
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}"
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
    device, [(module, settings, trials, store)] = check_plan(name, profile, overrides, seed, out, device)
    every = checkpoint_seconds()
    with run_folder(out):
        store.prepare(settings)
        return _run_trials(
            name, profile, seed, module, settings, trials, store, device, every, executor or LocalExecutor(), data_dir, progress
        )


def check_run(name: str, profile: str, overrides: list[str] | None, seed: int, out: Path):
    """(module, settings, trials, store) of one experiment's run, checked against the run folder:
    ConfigError for bad settings or settings other than the folder's. Reads only."""
    module = experiments.get(name)
    settings = resolve(module, profile, overrides, seed)
    trials = module.trials(settings)
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{name}: these settings give two trials the same name ({', '.join(keys)})")
    store = RunStore(out, name)
    try:
        store.check(settings)
    except OSError as e:  # a name too long, a folder that cannot be read
        raise ConfigError(f"--out {out}: cannot use that folder ({e.strerror or e})") from None
    return module, settings, trials, store


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


@dataclass
class _Pending:
    """One experiment's run in progress: its jobs, and what its trials' outcomes have given."""

    name: str
    profile: str
    seed: int
    module: object
    settings: dict
    trials: list
    store: RunStore
    device: str
    jobs: list[Job]
    threads: int | None
    planned: float
    failed: dict[str, str] = field(default_factory=dict)
    left: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def record(self, job: Job, outcome: Outcome, say=None) -> None:
        """A trial's outcome into the run folder (the driver alone writes it)."""
        if outcome.error is None:
            result = dict(outcome.result or {})
            result["_seconds"] = outcome.seconds
            result["_cpu_seconds"] = outcome.cpu_seconds
            self.store.save_result(job.trial.key, result)
        else:
            self.store.save_failure(job.trial.key, outcome.error)
            self.failed[job.trial.key] = outcome.error
            if say:
                say(f"{self.name}: trial {job.trial.key} failed: {outcome.error.strip().splitlines()[-1]}")
        self.left -= 1


def _prepare(name, profile, seed, module, settings, trials, store, device, every, executor, data_dir) -> _Pending:
    todo = [t for t in trials if store.read_result(t.key) is None]  # unreadable results run again
    store.remove_checkpoints_except({t.key for t in todo})
    planned = estimate_seconds(name, settings, len(trials), len(todo), str(device), seed)  # alone: the dry run's time
    # one thread rule for the executors on this machine (Ray's trials take the CPUs Ray gives them)
    on_this_machine = isinstance(executor, (LocalExecutor, AutoExecutor, ProcessExecutor))
    threads = trial_threads(len(trials)) if on_this_machine and device == "cpu" else None
    weights = sum(t.weight for t in todo) or 1.0
    jobs = [
        Job(name, t, device, data_dir, str(store.checkpoint_path(t.key)), every, threads, planned * t.weight / weights)
        for t in todo
    ]
    return _Pending(name, profile, seed, module, settings, trials, store, device, jobs, threads, planned, left=len(jobs))


def _finish(p: _Pending, executor_name: str, wall: float, overlapped: bool = False) -> RunResult:
    """Summary, metrics, figures and timing of an experiment whose trials are over."""
    keys = [t.key for t in p.trials]
    results = {k: r for k in keys if (r := p.store.read_result(k, warn=False)) is not None}
    summary = {"experiment": p.name, "profile": p.profile, "seed": p.seed}
    summary.update(p.module.summarize(p.settings, results))
    if p.failed:
        summary["failed_trials"] = sorted(p.failed)
    p.store.write_summary(jsonable(summary))
    p.store.write_metrics(p.module.metrics(p.settings, results))
    figures = p.module.figures(p.settings, results, p.store.fig_dir) if results else []
    p.store.write_timing(
        {
            "device": p.device,
            "device_name": device_description(p.device),
            "executor": executor_name,
            "torch": torch.__version__,
            "wall_seconds_this_invocation": round(wall, 3),
            "trial_seconds": {k: round(r.get("_seconds", 0.0), 3) for k, r in results.items()},
            "total_trial_seconds": round(sum(r.get("_seconds", 0.0) for r in results.values()), 3),
            "threads_per_trial": p.threads,
            **cpu_use(results, wall, len(p.jobs) == len(p.trials) and not overlapped),
            "figures": [Path(f).name for f in figures],
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    )
    return RunResult(p.name, p.store.dir, summary, p.failed, trials_run=len(p.jobs))


def _run_trials(name, profile, seed, module, settings, trials, store, device, every, executor, data_dir, progress) -> RunResult:
    p = _prepare(name, profile, seed, module, settings, trials, store, device, every, executor, data_dir)
    bar = Progress(name, len(trials), len(trials) - len(p.jobs), enabled=progress, planned=p.planned)

    def on_outcome(job: Job, outcome: Outcome) -> None:
        p.record(job, outcome, bar.write)
        bar.trial_done()

    try:
        executor.run(p.jobs, on_outcome, bar.epoch)
    finally:
        bar.close()
    return _finish(p, getattr(executor, "name", type(executor).__name__), time.perf_counter() - p.t0)


def _side_by_side_study(executor, device: str, plans) -> bool:
    """Whether run_all runs the whole study's trials through one pool of single-thread workers
    (the default executor on a multi-core CPU, when every trial has one thread): an experiment's
    last trials then share the cores with the next experiment's first, instead of leaving one idle."""
    if not isinstance(executor, AutoExecutor) or device != "cpu" or cpu_count() < 2:
        return False
    return all(getattr(m, "SIDE_BY_SIDE", True) and trial_threads(len(t)) == 1 for m, _, t, _ in plans)


def _run_study_side_by_side(profile, seed, plans, device, executor: AutoExecutor, data_dir, study) -> list[RunResult]:
    """Every experiment's trials in one queue (SPEC order, heaviest first within an experiment) on
    one pool of worker processes, one per core. The driver records each outcome, writes an
    experiment's summary and figures as soon as its last trial is in, and shows the earliest
    unfinished experiment on the progress line. An experiment's wall time in timing.json is the
    time from the previous one's end to its own: its share of the study."""
    every = checkpoint_seconds()
    pending = []
    for module, settings, trials, store in plans:
        store.prepare(settings)
        pending.append(_prepare(module.NAME, profile, seed, module, settings, trials, store, device, every, executor, data_dir))
    by_name = {p.name: p for p in pending}
    results: dict[str, RunResult] = {}
    shown = {"index": 0, "since": time.perf_counter()}
    name_of = f"auto ({cpu_count()} worker processes, whole study)"

    def finish(p: _Pending) -> None:
        try:
            results[p.name] = _finish(p, name_of, time.perf_counter() - shown["since"], overlapped=True)
        except Exception as e:  # a crash outside the trials (summaries, figures): report, go on
            import traceback

            study.write(f"dlscope: {p.name} failed: {type(e).__name__}: {e}")
            results[p.name] = RunResult(p.name, p.store.dir, None, {"<experiment>": traceback.format_exc()})

    def show_next() -> None:
        """Move the line past the experiments that are over, onto the first still running."""
        while shown["index"] < len(pending):
            p = pending[shown["index"]]
            if study.name != p.name or study.phase == "closed":
                study.enter(p.name, draw=False)
                study.start_experiment(p.name, len(p.trials), len(p.trials) - p.left)
            if p.left > 0:
                return
            study.trials_finished()
            if p.name not in results:
                finish(p)
            study.end_experiment()
            shown["index"] += 1
            shown["since"] = time.perf_counter()

    def on_outcome(job: Job, outcome: Outcome) -> None:
        p = by_name[job.experiment]
        p.record(job, outcome, study.write)
        if study.name == p.name:
            study.trial_done()
        if p.left == 0 and pending.index(p) > shown["index"]:  # over before those shown: its files now
            finish(p)
        show_next()

    def on_progress(job: Job, done: int, total: int, info: str = "") -> None:
        if study.name == job.experiment:
            study.epoch(job.trial.label or job.trial.key, done, total)

    show_next()
    jobs = [j for p in pending for j in heaviest_first(p.jobs)]
    executor.run_pool(jobs, on_outcome, on_progress)
    show_next()
    return [results[p.name] for p in pending]


def trial_threads(n_trials: int) -> int:
    """Torch threads per trial on this CPU: the cores shared among the experiment's trials, as the
    default executor runs them side by side (1 each on 2 cores); all the cores for a single trial.
    From the number of trials, not of those left, so that a resumed run computes as the first."""
    cores = cpu_count()
    return max(1, cores // max(1, min(cores, n_trials)))


def cpu_use(results: dict, wall: float, own_wall: bool) -> dict:
    """timing.json's CPU record: the trials' CPU seconds; the cores a trial kept busy on average
    (CPU over trial seconds: what side by side is measured by, 1.0 for a single-thread trial that
    never waits); and, where the wall time is the experiment's own (every trial ran in this
    invocation, not overlapping another experiment's), its CPU utilisation: CPU over wall, in cores."""
    ran = [r for r in results.values() if isinstance(r.get("_cpu_seconds"), (int, float))]
    cpu, seconds = sum(r["_cpu_seconds"] for r in ran), sum(r.get("_seconds", 0.0) for r in ran)
    out = {"trial_cpu_seconds": round(cpu, 3), "cores": cpu_count()}
    if seconds > 0:
        out["cores_busy_per_trial"] = round(cpu / seconds, 3)
    if own_wall and ran and wall > 0:
        out["cpu_utilisation"] = round(cpu / wall, 3)  # 2.0: two cores busy all the time
    return out


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
    """Every experiment in SPEC order under one overall progress line: one after another, or with
    the default executor on a multi-core CPU as one queue of trials side by side (see
    _run_study_side_by_side). One failing (a trial, or the experiment itself) is reported and the others still run; the
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
        whole = _side_by_side_study(executor, picked, plans) and sum(planned.values()) >= SIDE_BY_SIDE_MIN_SECONDS
        if whole:
            results = _run_study_side_by_side(profile, seed, plans, picked, executor, data_dir, study)
            for r in results:
                if not r.ok:
                    study.write(f"dlscope: {r.experiment}: FAILED ({', '.join(sorted(r.failed)) or 'no summary'})")
        for name in names if not whole else []:
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
