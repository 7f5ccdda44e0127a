"""The driver: settings -> trials -> executor -> run folder -> summary, metrics, figures.

Resuming is the same call again: finished trials (a result file exists) are skipped, unfinished
ones restart from their checkpoint, failed ones are tried again.
"""

from __future__ import annotations

import datetime
import json
import platform
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
    """One line per experiment: trials done, the current trial's epoch and loss, time left."""

    def __init__(self, experiment: str, total: int, done: int, enabled: bool = True):
        from tqdm import tqdm

        self.done = done
        self.bar = tqdm(total=total, initial=done, desc=experiment, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n:.1f}/{total} trials [{elapsed}<{remaining}{postfix}]",
        )

    def epoch(self, job: Job, done: int, total: int, info: str) -> None:
        label = job.trial.label or job.trial.key
        self.bar.set_postfix_str(f"{label}: epoch {done}/{total} {info}".strip(), refresh=False)
        # fractional progress inside the running trial, so the time estimate moves
        self.bar.n = self.done + min(done / max(total, 1), 0.999)
        self.bar.refresh()

    def trial_done(self) -> None:
        self.done += 1
        self.bar.n = self.done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


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
    """Every experiment in SPEC order; one failing does not stop the others."""
    out = Path(out) if out else default_out()
    per = split_overrides(overrides)
    names = experiments.available()
    for name in names:  # bad settings anywhere stop the run before anything starts
        resolve(experiments.get(name), profile, per.get(name), seed)
    results = []
    for name in names:
        try:
            results.append(run_experiment(name, profile, out, seed, device, per.get(name), executor, data_dir, progress))
        except ConfigError:
            raise
        except Exception as e:  # a crash outside the trials (summaries, figures): report, go on
            import traceback

            print(f"dlscope: {name} failed: {e}", file=sys.stderr)
            results.append(RunResult(name, out / name, None, {"<experiment>": traceback.format_exc()}))
    return results
