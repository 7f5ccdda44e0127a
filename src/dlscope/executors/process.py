"""The `process` executor: trials in worker processes on this machine.

One worker per GPU (device cuda), or a pool that shares this machine's cores (device cpu), each
worker with cores / workers torch threads. Each worker runs one trial at a time and talks to the
driver over its own pipe: the driver sends (index, job), the worker sends per-epoch progress and
then the Outcome. Because the driver knows which trial each worker holds, a worker that dies
(killed, out of memory, segfault) costs exactly that trial one attempt: a new worker takes its
place and the trial runs again, from its checkpoint if it wrote one. Workers are started with
'spawn' (no inherited CUDA or thread-pool state) and live until the driver exits, so the next
experiment of `run all` finds them warm (torch imported, data sets cached).

Workers may write their trial's checkpoint file themselves (scratch on this machine); results go
back to the driver, which alone writes them into the run folder.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections import deque
from multiprocessing.connection import wait

from . import Job, Outcome, run_job


def cpu_count() -> int:
    """The cores this process may use (respects taskset and cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_main(conn, threads: int, gpu: int | None) -> None:
    if gpu is not None:  # before anything touches CUDA: this worker sees one GPU, as cuda:0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # e.g. SLURM's "2,3": gpu counts within it
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[gpu].strip() if visible else str(gpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops us
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the driver is gone
            return
        if msg is None:
            return
        index, job = msg
        outcome = run_job(job, lambda j, done, total, info: conn.send(("progress", index, done, total, info)))
        try:
            conn.send(("done", index, outcome))
        except Exception:  # a result that does not pickle is the trial's error, not a dead worker
            conn.send(
                (
                    "done",
                    index,
                    Outcome(
                        job.trial.key, error=traceback.format_exc(), seconds=outcome.seconds, cpu_seconds=outcome.cpu_seconds
                    ),
                )
            )


class _Worker:
    def __init__(self, ctx, threads: int, gpu: int | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, threads, gpu), daemon=True, name="dlscope-worker")
        self.proc.start()
        child.close()  # so that recv() sees EOF once the worker is gone
        self.gpu = gpu
        self.job: int | None = None  # index of the job it runs

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


class ProcessExecutor:
    name = "process"

    def __init__(self, workers: int | None = None, max_retries: int = 3):
        self.workers, self.max_retries = workers, max_retries
        self._pool: list[_Worker] = []
        self._layout = None  # (workers, threads, gpus) the pool was built for

    def _plan(self, device: str) -> tuple[int, int, list[int | None]]:
        """How many workers, torch threads each, and the GPU of each worker."""
        import torch

        cores = cpu_count()
        if device == "cuda" and torch.cuda.is_available():
            n_gpu = torch.cuda.device_count()
            n = self.workers or n_gpu
            return n, max(1, cores // n), [i % n_gpu for i in range(n)]
        n = self.workers or cores
        # "cuda:N" (one named GPU): every worker shares it; "cpu": no GPU at all
        return n, max(1, cores // n), [None] * n

    def _ensure_pool(self, device: str) -> None:
        layout = self._plan(device)
        if layout == self._layout and all(w.proc.is_alive() for w in self._pool):
            return
        self.close()
        n, threads, gpus = layout
        ctx = mp.get_context("spawn")
        self._ctx, self._threads = ctx, threads
        self._pool = [_Worker(ctx, threads, g) for g in gpus]
        self._layout = layout

    def close(self) -> None:
        for w in self._pool:
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.stop()
        self._pool, self._layout = [], None

    def run(self, jobs: list[Job], on_outcome, on_progress=None) -> None:
        if not jobs:
            return
        self._ensure_pool(jobs[0].device)
        todo = deque(range(len(jobs)))
        deaths = [0] * len(jobs)
        ok = False
        try:
            while todo or any(w.job is not None for w in self._pool):
                for i, w in enumerate(self._pool):
                    if w.job is None and todo:
                        index = todo.popleft()
                        try:
                            w.conn.send((index, jobs[index]))
                            w.job = index
                        except OSError:  # it died while idle: the job never started
                            todo.appendleft(index)
                            self._replace(i)
                        except Exception:  # the trial does not pickle (not a module-level function?)
                            on_outcome(jobs[index], Outcome(jobs[index].trial.key, error=traceback.format_exc()))
                busy = [w for w in self._pool if w.job is not None]
                if not busy:  # nothing started this round (a replaced worker, a job that failed to send)
                    continue
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
                for i, w in enumerate(list(self._pool)):
                    if w.job is None or (w.conn not in ready and w.proc.sentinel not in ready):
                        continue
                    if self._drain(w, jobs, on_outcome, on_progress):
                        continue  # alive, or it finished its job before dying
                    index, w.job = w.job, None
                    deaths[index] += 1
                    code = w.proc.exitcode
                    self._replace(i)
                    if deaths[index] <= self.max_retries:
                        todo.appendleft(index)  # again, from its checkpoint if it saved one
                    else:
                        job = jobs[index]
                        on_outcome(
                            job,
                            Outcome(
                                job.trial.key,
                                error=(
                                    f"the worker process running trial {job.trial.key} died {deaths[index]} times "
                                    f"(last exit code {code}); not retried again\n"
                                ),
                            ),
                        )
            ok = True
        finally:
            if not ok:  # interrupted, or on_outcome raised: stop the trials still running
                self.close()

    def _drain(self, w: _Worker, jobs, on_outcome, on_progress) -> bool:
        """Handle every message the worker has sent; False if it died holding its job."""
        try:
            while w.job is not None and w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "progress":
                    if on_progress:
                        on_progress(jobs[msg[1]], *msg[2:])
                else:
                    w.job = None
                    on_outcome(jobs[msg[1]], msg[2])
        except (EOFError, OSError):  # its end of the pipe closed: it exited
            return w.job is None
        return w.job is None or w.proc.is_alive()

    def _replace(self, i: int) -> None:
        old = self._pool[i]
        old.stop()
        self._pool[i] = _Worker(self._ctx, self._threads, old.gpu)
