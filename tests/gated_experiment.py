"""A test-only experiment for the executor fault tests: func-fit, with two planned faults.

- The first trial, on its first attempt, stops after HOLD_EPOCH epochs (its checkpoint of that
  epoch already written) and waits until the test has killed the worker process running it;
  it announces its pid in GATE/held. Later attempts run through, from that checkpoint.
- The trial named by $DLSCOPE_TEST_RAISE raises.

Every attempt leaves GATE/attempt-<n> (its pid) and GATE/resumed-<n> (the epoch it started from).
Workers import this module by name, so tests put this folder on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from dlscope import experiments
from dlscope.experiments import func_fit

NAME = "func-fit-gated"
TITLE = "func-fit with a worker to kill"
PROFILES = func_fit.PROFILES
WORK_SETTINGS, POSITIVE_SETTINGS = func_fit.WORK_SETTINGS, func_fit.POSITIVE_SETTINGS
NON_NEGATIVE_SETTINGS = func_fit.NON_NEGATIVE_SETTINGS
validate, summarize, metrics, figures = func_fit.validate, func_fit.summarize, func_fit.metrics, func_fit.figures

GATE_ENV, RAISE_ENV = "DLSCOPE_TEST_GATE", "DLSCOPE_TEST_RAISE"
HOLD_EPOCH = 3
HOLD_TIMEOUT_S = 120.0  # a first attempt nobody kills gives up (the test then fails)


def register() -> None:
    experiments.REGISTRY[NAME] = __name__


def trials(cfg: dict) -> list:
    gate, fail = os.environ.get(GATE_ENV), os.environ.get(RAISE_ENV)
    return [
        replace(t, fn=gated_trial, settings={"inner": t.settings, "gate": gate if i == 0 else None, "raise": t.key == fail})
        for i, t in enumerate(func_fit.trials(cfg))
    ]


def gated_trial(args: dict, ctx) -> dict:
    if args["raise"]:
        raise RuntimeError("a planned failure of this trial")
    if args["gate"] and ctx.checkpoint is not None:
        ctx.checkpoint = _Gate(ctx.checkpoint, Path(args["gate"]))
    return func_fit.train_model(args["inner"], ctx)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Gate:
    """Wraps the trial's checkpointer: records each attempt, holds the first one mid-training."""

    def __init__(self, inner, gate: Path):
        self.inner, self.gate = inner, gate
        self.attempt = 0
        while True:  # claim the next attempt number
            try:
                fd = os.open(gate / f"attempt-{self.attempt}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                self.attempt += 1
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

    def load(self):
        state = self.inner.load()
        _write_atomic(self.gate / f"resumed-{self.attempt}", str(state["epoch"] if state else 0))
        return state

    def save(self, state, force=False):
        self.inner.save(state, force)

    def progress(self, done, total, info=""):
        self.inner.progress(done, total, info)
        if self.attempt == 0 and done == HOLD_EPOCH:
            _write_atomic(self.gate / "held", str(os.getpid()))
            deadline = time.monotonic() + HOLD_TIMEOUT_S
            while time.monotonic() < deadline and not (self.gate / "release").exists():
                time.sleep(0.05)  # waiting to be killed; the test writes `release` only on teardown
            raise RuntimeError("held trial was never killed")

    def clear(self):
        self.inner.clear()


# --------------------------------------------------------------------------- bare trial functions


def die(args: dict, ctx) -> dict:
    """Kills the process running it, every time."""
    os._exit(3)


def echo(args: dict, ctx) -> dict:
    return {**args, "pid": os.getpid()}
