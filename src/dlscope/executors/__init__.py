"""Executors run trials. Experiments never loop over trials themselves: they hand a list of
jobs to an executor, which reports each outcome back to the driver (the runner), and the driver
alone writes results into the run folder.

    auto     the default: on a multi-core CPU, an experiment's trials run side by side, one
             worker process per core, heavier trials first (Trial.weight), unless the whole
             experiment is expected to take under SIDE_BY_SIDE_MIN_SECONDS or declares
             SIDE_BY_SIDE = False; otherwise as local. The same numbers as local, less wall time.
    local    in this process, one trial after another
    process  worker processes on this machine: a pool sharing the cores, or one per GPU
             (--workers N); see process.py
    ray      Ray tasks on a cluster (--address HOST:PORT or $RAY_ADDRESS), or on a private local
             Ray instance without one; see ray_executor.py and docs/cluster.md

Every executor calls on_outcome(job, outcome) in the driver as each trial finishes, in whatever
order they finish. On a CPU, a trial's numbers depend on its torch thread count (convolutions sum
in an order that depends on it), so the runner fixes it per trial (Job.threads: the cores shared
among the experiment's trials) and local and auto both honour it: whichever of the two runs an
experiment, and whether it resumed, its numbers are the same. A worker that dies mid-trial costs
that trial one attempt (3 retries); a trial that raises comes back as an Outcome with its error.
"""

from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..engine import accel
from ..experiments._base import Trial, TrialContext
from ..store import FileCheckpointer, storable


@dataclass
class Job:
    experiment: str
    trial: Trial
    device: str
    data_dir: str | None
    checkpoint_path: str | None  # where the trial may checkpoint (None: it restarts from scratch)
    checkpoint_every: float = 30.0
    threads: int | None = None  # torch threads for the trial on a CPU (local, auto); None: as they are
    expected_seconds: float = 0.0  # the time model's share for this trial (progress.estimate_seconds)


@dataclass
class Outcome:
    key: str
    result: dict | None = None
    error: str | None = None  # the traceback of a trial that raised
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the process that ran it, all its threads


ProgressFn = Callable[[Job, int, int, str], None]  # (job, epochs done, epochs total, info)


def run_job(job: Job, on_progress: ProgressFn | None = None) -> Outcome:
    """Run one trial wherever this is called; an exception becomes a failed Outcome."""
    ckpt = None
    if job.checkpoint_path:
        cb = (lambda d, t, i: on_progress(job, d, t, i)) if on_progress else None
        ckpt = FileCheckpointer(job.checkpoint_path, job.checkpoint_every, cb)
    device = torch.device(job.device)
    accel.configure(device)  # in every worker process: deterministic kernels on CUDA
    ctx = TrialContext(device=device, data_dir=job.data_dir, checkpoint=ckpt)
    with _torch_threads(job.threads if device.type == "cpu" else None):
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = _run_trial(job, ctx, ckpt)
        outcome.seconds, outcome.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return outcome


@contextmanager
def _torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_trial(job: Job, ctx: TrialContext, ckpt) -> Outcome:
    try:
        try:
            result = job.trial.fn(job.trial.settings, ctx)
        except Exception:
            if not (ckpt and ckpt.untried):
                raise
            # it failed after loading its checkpoint, before any progress: the checkpoint may not
            # fit this version's trial (an older format, a damaged state); drop it, start over once
            ckpt.clear()
            result = job.trial.fn(job.trial.settings, ctx)
        result = storable(result, f"the result of trial {job.trial.key}")
    except Exception:
        return Outcome(job.trial.key, error=traceback.format_exc())
    return Outcome(job.trial.key, result=result)


class Executor(Protocol):
    name: str

    def run(self, jobs: list[Job], on_outcome: Callable[[Job, Outcome], None], on_progress: ProgressFn | None = None) -> None: ...


class LocalExecutor:
    name = "local"

    def run(self, jobs, on_outcome, on_progress=None) -> None:
        for job in jobs:
            on_outcome(job, run_job(job, on_progress))


def heaviest_first(jobs: list[Job]) -> list[Job]:
    """Jobs by Trial.weight, heaviest first (a stable sort: equal weights keep their order)."""
    return sorted(jobs, key=lambda j: -j.trial.weight)


SIDE_BY_SIDE_MIN_SECONDS = 20.0  # below this (expected, whole experiment) worker processes do not pay


class AutoExecutor:
    """The default executor. On a CPU with more than one core, an experiment's trials run side by
    side in a pool of worker processes, one per core (kept warm for the next experiment), heavier
    trials first so that the last one does not run alone: most trials are small models that
    cannot keep two cores busy. Trials run here, one after another, where that is as fast: one
    trial, a GPU, a run expected to take under SIDE_BY_SIDE_MIN_SECONDS (smoke), or an experiment
    that says SIDE_BY_SIDE = False. Either way each trial gets the same torch threads (Job.threads),
    so the numbers are the same."""

    name = "auto"  # timing.json gets "auto (local)" or "auto (N worker processes)", as last run

    def __init__(self):
        self._pool = None

    def side_by_side(self, jobs: list[Job]) -> int:
        """The worker processes these jobs get (0: run them here, one after another)."""
        from ..experiments import get
        from .process import cpu_count

        if len(jobs) < 2 or cpu_count() < 2 or any(j.device != "cpu" for j in jobs):
            return 0
        if sum(j.expected_seconds for j in jobs) < SIDE_BY_SIDE_MIN_SECONDS:
            return 0
        try:
            allowed = getattr(get(jobs[0].experiment), "SIDE_BY_SIDE", True)
        except Exception:  # an experiment the registry does not know (tests): run it here
            allowed = False
        return min(cpu_count(), len(jobs)) if allowed else 0

    def run(self, jobs, on_outcome, on_progress=None) -> None:
        workers = self.side_by_side(jobs)
        self.name = f"auto ({workers} worker processes)" if workers else "auto (local)"
        if not workers:
            return LocalExecutor().run(jobs, on_outcome, on_progress)
        self._run_in_pool(workers, heaviest_first(jobs), on_outcome, on_progress)

    def run_pool(self, jobs, on_outcome, on_progress=None) -> None:
        """These jobs, in this order, side by side on one worker process per core (run_all's whole
        study in one queue)."""
        from .process import cpu_count

        self.name = f"auto ({cpu_count()} worker processes, whole study)"
        if jobs:
            self._run_in_pool(cpu_count(), jobs, on_outcome, on_progress)

    def _run_in_pool(self, workers: int, jobs, on_outcome, on_progress) -> None:
        from .process import ProcessExecutor

        if self._pool is None or self._pool.workers != workers:
            self.close()
            self._pool = ProcessExecutor(workers)
        self._pool.run(jobs, on_outcome, on_progress)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


EXECUTORS = ("auto", "local", "process", "ray")


def make_executor(name: str = "auto", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor the command line names: --executor NAME [--workers N] [--address HOST:PORT]."""
    import importlib.util

    from ..experiments._base import ConfigError

    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if address is not None and name != "ray":
        raise ConfigError("--address is for --executor ray")
    if name in ("auto", "local"):
        if workers is not None:
            raise ConfigError("--workers is for --executor process or ray")
        return AutoExecutor() if name == "auto" else LocalExecutor()
    if name == "process":
        from .process import ProcessExecutor

        if workers is not None and workers > 256:  # each is a process holding torch: more would swamp the machine
            raise ConfigError(f"--workers {workers}: at most 256 worker processes on one machine")

        return ProcessExecutor(workers)
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: pip install 'dlscope[ray]'")
    from .ray_executor import RayExecutor

    return RayExecutor(address, workers)
