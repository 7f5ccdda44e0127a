"""The `ray` executor: each trial is a Ray task on a cluster.

The cluster is one that `ray start` made (see docs/cluster.md): `--address HOST:PORT`, or the
RAY_ADDRESS environment variable. With neither, a Ray instance private to this run starts on this
machine, bound to 127.0.0.1.

A trial's Resources become the task's num_cpus / num_gpus, so Ray packs trials onto nodes (several
tiny trials onto one GPU when they ask for a fraction of it). Results come back to the driver as
each task finishes; the driver alone writes the run folder. A task whose worker process or node
dies is run again by Ray (max_retries); a trial that raises comes back as a failed Outcome.

Checkpoints: a task checkpoints into the run folder only where it can see it (this machine, or a
file system shared with the driver); elsewhere a retried trial starts from scratch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from . import Job, Outcome, run_job

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # results are small and fetched as they arrive


def _run_task(job: Job, cpus: float) -> Outcome:
    """What runs on a Ray worker: one trial."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    if job.checkpoint_path and not (Path(job.checkpoint_path).parent.parent / "config.json").exists():
        job = replace(job, checkpoint_path=None)  # the run folder is not on this node
    return run_job(job)


def use_saved_token() -> None:
    """A cluster started by `ray start --head` requires the token in ~/.ray/auth_token whenever that
    file exists, and any private Ray run (ray.init without an address) writes one. So where a token
    file exists and RAY_AUTH_MODE is unset, connect with it rather than fail with "Authentication
    token is missing". Must run before ray is imported: Ray reads the switch at start-up."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ and path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        print(
            f"dlscope: connecting to Ray with the token in {path} (RAY_AUTH_MODE=token; "
            "set RAY_AUTH_MODE=disabled to connect without one)",
            file=sys.stderr,
        )


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers  # at most this many trials at once (local instance: its CPUs)
        self.max_retries = max_retries
        self._remote = None

    def _connect(self):
        if self.address:
            use_saved_token()
        if self.address is None:
            # Before ray is imported: a private instance listens on 127.0.0.1 only, not on the
            # machine's outside address (ray reads this switch once, at import).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address)
                except (ConnectionError, RuntimeError) as e:
                    from ..experiments._base import ConfigError

                    last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    raise ConfigError(
                        f"--executor ray: cannot connect to the Ray cluster at {self.address} ({last}). Is `ray start --head` "
                        f"running there, with the same Ray version? A cluster with token authentication also needs "
                        f"RAY_AUTH_MODE=token and its token here (docs/cluster.md)"
                    ) from e
            else:
                from ray._private import ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = False  # the same switch, if ray was imported before we set it
                ray.init(
                    address="local",
                    num_cpus=self.workers,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                )
        if self._remote is None:
            self._remote = ray.remote(_run_task)
        return ray

    def _options(self, job: Job, most_cpus: float) -> dict:
        res = job.trial.resources
        cpus = min(res.cpus, most_cpus)  # a request no node can meet would wait forever
        gpus = 0.0
        if job.device.startswith("cuda"):
            gpus = res.gpus or 1.0  # a trial that names no fraction gets a whole GPU
        return dict(
            num_cpus=cpus,
            num_gpus=gpus,
            max_retries=self.max_retries,
            retry_exceptions=False,
            name=f"{job.experiment}/{job.trial.key}",
        )

    def run(self, jobs: list[Job], on_outcome, on_progress=None) -> None:
        if not jobs:
            return
        ray = self._connect()
        limit = self.workers if self.address and self.workers else len(jobs)
        most_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1) or 1
        if jobs[0].device.startswith("cuda") and not ray.cluster_resources().get("GPU"):
            from ..experiments._base import ConfigError

            raise ConfigError("--device cuda: the Ray cluster has no GPUs (does `ray status` list them?)")
        queue = list(reversed(jobs))
        running: dict = {}  # ObjectRef -> Job
        try:
            while queue or running:
                while queue and len(running) < limit:
                    job = queue.pop()
                    opts = self._options(job, most_cpus)
                    running[self._remote.options(**opts).remote(job, opts["num_cpus"])] = job
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in done:
                    job = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:  # its worker or node died more than max_retries times
                        outcome = Outcome(job.trial.key, error=f"{type(e).__name__} (Ray): {e}\n")
                    on_outcome(job, outcome)
        finally:
            for ref in running:  # interrupted: do not leave trials running on the cluster
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished, or the cluster is gone
                    pass
