"""The driver: settings -> trials -> executor -> run folder -> summary, metrics, figures.

Resuming is the same call again: finished trials (a result file exists) are skipped, unfinished
ones restart from their checkpoint, failed ones are tried again.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import experiments
from .executors import Executor, Job, LocalExecutor, Outcome
from .experiments.base import ConfigError, resolve
from .store import RunStore, checkpoint_seconds


@dataclass
class RunResult:
    experiment: str
    out_dir: Path
    summary: dict | None
    failed: dict[str, str] = field(default_factory=dict)  # trial key -> error

    @property
    def ok(self) -> bool:
        return not self.failed and self.summary is not None


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device}: choose auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available (this torch: {torch.__version__})")
    return device


def default_out() -> Path:
    return Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class Progress:
    """The progress display of one experiment: trials done, the running trial's epoch, time left.

    Alone it is one tqdm bar. While `run_all` runs, it reports into the study's one overall line
    (StudyProgress.current) instead, so the whole study shows as a single display."""

    def __init__(self, experiment: str, total: int, done: int, enabled: bool = True):
        from tqdm import tqdm

        self.done = done
        self.study = StudyProgress.current if enabled else None
        if self.study is not None:
            self.bar = self.study.bar  # run_experiment writes failure lines through .bar.write
            self.study.start_experiment(experiment, total, done)
            return
        self.bar = tqdm(total=total, initial=done, desc=experiment, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n:.1f}/{total} trials [{elapsed}<{remaining}{postfix}]",
        )

    def epoch(self, job: Job, done: int, total: int, info: str) -> None:
        label = job.trial.label or job.trial.key
        if self.study is not None:
            self.study.epoch(label, done, total)
            return
        self.bar.set_postfix_str(f"{label}: epoch {done}/{total} {info}".strip(), refresh=False)
        # fractional progress inside the running trial, so the time estimate moves
        self.bar.n = self.done + min(done / max(total, 1), 0.999)
        self.bar.refresh()

    def trial_done(self) -> None:
        self.done += 1
        if self.study is not None:
            self.study.trial_done()
            return
        self.bar.n = self.done
        self.bar.refresh()

    def close(self) -> None:
        if self.study is not None:
            self.study.end_experiment()
        else:
            self.bar.close()


def _cost(name: str) -> float:
    """The experiment's share of the study's work: its module's COST (seconds of the quick profile on
    the reference CPU; only the ratios matter). One without a COST counts as an average one."""
    costs = {n: getattr(experiments.get(n), "COST", None) for n in experiments.available()}
    known = [c for c in costs.values() if isinstance(c, (int, float))]
    cost = costs.get(name)
    return cost if isinstance(cost, (int, float)) else (statistics.fmean(known) if known else 1.0)


class StudyProgress:
    """One line for the whole study:  [3/9] trajectory · trial 2/8 cnn-21 · epoch 12/50 · ~4 min left

    Time left = the work still to do times the pace so far, with each experiment's share of the
    work taken from each module's COST (func-fit alone is a fifth of the quick study). Crude, but it
    corrects itself as experiments finish."""

    current: "StudyProgress | None" = None  # the active display; Progress reports into it

    def __init__(self, names: list[str], enabled: bool = True):
        from tqdm import tqdm

        self.names, self.index, self.name, self.open = names, -1, "", False
        self.total = self.done = self.done_at_start = self.ep = self.ep_total = 0
        self.label, self.t0 = "", time.monotonic()
        self.durations: list[tuple[float, float]] = []  # (seconds, relative cost) of experiments that ran trials
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=len(names), disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc} |{bar:12}| {elapsed}")
        self._last_draw = 0.0

    def __enter__(self) -> "StudyProgress":
        StudyProgress.current = self
        return self

    def __exit__(self, *exc) -> None:
        StudyProgress.current = None
        self.bar.close()

    # ---------------------------------------------------------------- called by Progress

    def enter(self, name: str) -> None:
        """run_all is about to run `name` (its trials are not known yet)."""
        self.index = self.names.index(name)
        self.name, self.total, self.done, self.done_at_start = name, 0, 0, 0
        self.label, self.ep, self.ep_total = "", 0, 0
        self.t0, self.open = time.monotonic(), True
        self.draw(force=True)

    def start_experiment(self, name: str, total: int, done: int) -> None:
        if name != self.name or not self.open:
            self.enter(name)
        self.total, self.done, self.done_at_start = total, done, done
        self.draw(force=True)

    def epoch(self, label: str, done: int, total: int) -> None:
        self.label, self.ep, self.ep_total = label, done, total
        self.draw()

    def trial_done(self) -> None:
        self.done += 1
        self.label, self.ep, self.ep_total = "", 0, 0
        self.draw(force=True)

    def end_experiment(self) -> None:
        if not self.open:  # already ended (a crash after the trials ends it twice)
            return
        self.open = False
        if self.done > self.done_at_start:  # a fully resumed experiment says nothing about pace
            self.durations.append((time.monotonic() - self.t0, _cost(self.name)))
        self.bar.n = self.index + 1
        self.draw(force=True)

    # ---------------------------------------------------------------- the line

    def fraction(self) -> float:
        """How much of the running experiment's remaining work (at its start) is done."""
        todo = self.total - self.done_at_start
        if todo <= 0:
            return 1.0
        within = self.ep / self.ep_total if self.ep_total else 0.0
        return min((self.done - self.done_at_start + within) / todo, 1.0)

    def seconds_left(self) -> float | None:
        f, spent = self.fraction(), time.monotonic() - self.t0
        cost = _cost(self.name)
        seconds = sum(d for d, _ in self.durations) + (spent if f >= 0.02 else 0.0)
        work = sum(c for _, c in self.durations) + (cost * f if f >= 0.02 else 0.0)
        if work <= 0:
            return None
        later = sum(_cost(n) for n in self.names[self.index + 1 :])
        return seconds / work * (cost * (1 - f) + later)

    def text(self) -> str:
        parts = [f"[{self.index + 1}/{len(self.names)}] {self.name}"]
        if self.done < self.total:
            parts.append(f"trial {self.done + 1}/{self.total}" + (f" {self.label}" if self.label else ""))
            if self.ep_total:
                parts.append(f"epoch {self.ep}/{self.ep_total}")
        else:
            parts.append("summary and figures")
        left = self.seconds_left()
        parts.append(f"~{_duration(left)} left" if left is not None else "estimating time left")
        return " · ".join(parts)

    def draw(self, force: bool = False) -> None:
        # a terminal redraws in place; a log file (CI) gets a line every 30 s at most
        now = time.monotonic()
        if not force and now - self._last_draw < (0.5 if self.tty else 30.0):
            return
        self._last_draw = now
        self.bar.n = min(self.index + self.fraction(), len(self.names))
        self.bar.set_description_str(self.text(), refresh=False)
        self.bar.refresh()

    def finish(self, failed: list[str]) -> None:
        self.bar.n = len(self.names)
        end = f"failed: {', '.join(failed)}" if failed else "all ok"
        self.bar.set_description_str(f"[{len(self.names)}/{len(self.names)}] study finished · {end}", refresh=False)
        self.bar.refresh()

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
    module = experiments.get(name)
    cfg = resolve(module, profile, overrides, seed)
    device = pick_device(device)
    out = Path(out) if out else default_out()
    store = RunStore(out, name)
    store.prepare(cfg)
    executor = executor or LocalExecutor()

    trials = module.trials(cfg)
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"{name}: trial keys are not unique: {keys}")
    todo = [t for t in trials if not store.has_result(t.key)]
    jobs = [
        Job(name, t, device, data_dir, str(store.checkpoint_path(t.key)), checkpoint_seconds())
        for t in todo
    ]

    bar = Progress(name, len(trials), len(trials) - len(todo), enabled=progress)
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
            bar.bar.write(f"{name}: trial {job.trial.key} failed: {outcome.error.strip().splitlines()[-1]}")
        bar.trial_done()

    try:
        executor.run(jobs, on_outcome, bar.epoch)
    finally:
        bar.close()

    results = {k: store.load_result(k) for k in keys if store.has_result(k)}
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
    return RunResult(name, store.dir, summary, failed)


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
        return obj if obj == obj and abs(obj) != float("inf") else None
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


def run_all(profile: str = "quick", out=None, seed: int = 0, device: str = "auto", executor=None, data_dir=None, progress=True, overrides=None) -> list[RunResult]:
    """Every experiment in SPEC order, one after another, under one overall progress line.
    One failing (a trial, or the experiment itself) is reported and the others still run; the
    caller sees it in the results (RunResult.ok) and sets the exit code."""
    out = Path(out) if out else default_out()
    per = split_overrides(overrides)
    names = experiments.available()
    for name in names:  # bad settings anywhere stop the run before anything starts
        resolve(experiments.get(name), profile, per.get(name), seed)
    missing = [n for n in experiments.names() if n not in names]
    if missing:
        print(f"dlscope: not implemented in this version, skipped: {', '.join(missing)}", file=sys.stderr)
    results = []
    with StudyProgress(names, enabled=progress) as study:
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
