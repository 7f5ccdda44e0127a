"""Executors run trials. Experiments never loop over trials themselves: they hand a list of
jobs to an executor, which reports each outcome back to the driver (the runner), and the driver
alone writes results into the run folder.

    auto     the default: as local, except that long trials that each keep to one core (the
             experiment's side_by_side(args): func-fit's compiled fast MLP path) run side by side
             on a multi-core CPU, one worker process per core (the same numbers, less wall time)
    local    in this process, one trial after another
    process  worker processes on this machine: a pool sharing the cores, or one per GPU
             (--workers N); see process.py
    ray      Ray tasks on a cluster (--address HOST:PORT or $RAY_ADDRESS), or on a private local
             Ray instance without one; see ray_executor.py and docs/cluster.md

Every executor calls on_outcome(job, outcome) in the driver as each trial finishes, in whatever
order they finish. A worker that dies mid-trial costs that trial one attempt (3 retries); a trial
that raises comes back as an Outcome with its error.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..engine import accel
from ..experiments.base import Trial, TrialContext
from ..store import FileCheckpointer, storable


@dataclass
class Job:
    experiment: str
    trial: Trial
    device: str
    data_dir: str | None
    checkpoint_path: str | None  # where the trial may checkpoint (None: it restarts from scratch)
    checkpoint_every: float = 30.0


@dataclass
class Outcome:
    key: str
    result: dict | None = None
    error: str | None = None  # the traceback of a trial that raised
    seconds: float = 0.0


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
    t0 = time.perf_counter()
    try:
        try:
            result = job.trial.fn(job.trial.args, ctx)
        except Exception:
            if not (ckpt and ckpt.untried):
                raise
            # it failed after loading its checkpoint, before any progress: the checkpoint may not
            # fit this version's trial (an older format, a damaged state); drop it, start over once
            ckpt.clear()
            result = job.trial.fn(job.trial.args, ctx)
        result = storable(result, f"the result of trial {job.trial.key}")
    except Exception:
        return Outcome(job.trial.key, error=traceback.format_exc(), seconds=time.perf_counter() - t0)
    return Outcome(job.trial.key, result=result, seconds=time.perf_counter() - t0)


class Executor(Protocol):
    name: str

    def run(self, jobs: list[Job], on_outcome: Callable[[Job, Outcome], None], on_progress: ProgressFn | None = None) -> None: ...


class LocalExecutor:
    name = "local"

    def run(self, jobs, on_outcome, on_progress=None) -> None:
        for job in jobs:
            on_outcome(job, run_job(job, on_progress))


class AutoExecutor:
    """The default executor: trials one after another in this process, except where side by side
    is plainly faster and gives the same numbers: trials that each use one core and run long
    (the experiment module's side_by_side(args) says so) on a CPU with more cores than one. Those run in a
    pool of one single-thread worker process per core (kept for the next such experiment)."""

    name = "auto"  # timing.json gets "auto (local)" or "auto (N worker processes)", as last run

    def __init__(self):
        self._pool = None

    def side_by_side(self, jobs: list[Job]) -> int:
        """The worker processes these jobs get (0: run them here, one after another)."""
        from ..experiments import get
        from .process import cpu_count

        if len(jobs) < 2 or any(j.device != "cpu" for j in jobs):
            return 0
        try:
            worth_it = getattr(get(jobs[0].experiment), "side_by_side", None)
        except Exception:  # an experiment the registry does not know (tests): run it here
            worth_it = None
        one_core = worth_it is not None and all(worth_it(j.trial.args) for j in jobs)
        return min(cpu_count(), len(jobs)) if one_core and cpu_count() > 1 else 0

    def run(self, jobs, on_outcome, on_progress=None) -> None:
        workers = self.side_by_side(jobs)
        self.name = f"auto ({workers} worker processes)" if workers else "auto (local)"
        if not workers:
            return LocalExecutor().run(jobs, on_outcome, on_progress)
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

    from ..experiments.base import ConfigError

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
