"""The progress display: one line for a study, or for a single experiment, in one style:

    [3/9] trajectory · trial 2/8 cnn-21 · epoch 12/50 · ~4 min left

On a terminal it is a live line redrawn in place, cut to the terminal's width (100 columns where
the terminal reports none). Elsewhere (a log file, CI, nohup) it never writes `\\r`: it writes plain
lines, one at each trial's end and one every $DLSCOPE_PROGRESS_SECONDS (default 30) while a trial
runs. It also holds the rough time estimate of a dry run (`estimate_seconds`).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from . import experiments
from .experiments._base import ConfigError

FALLBACK_COLUMNS = 100  # a terminal that reports 0 columns (some ptys, `script`, docker exec)
REFERENCE_THREADS = 2  # COST was measured on a 2-core CPU (torch sees 2 threads; the study ran 2 workers of 1)
PRIOR_SECONDS = 120.0  # how firmly the estimate holds to the plan before experiments finish (see StudyProgress)
MIN_LEFT_SHARE = 0.05  # a running experiment past its planned time: this share of it still counts as left


def progress_seconds() -> float:
    """How often a log (not a terminal) gets a progress line while a trial runs:
    $DLSCOPE_PROGRESS_SECONDS, default 30 (0 = at every epoch)."""
    text = os.environ.get("DLSCOPE_PROGRESS_SECONDS", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds >= 0 and seconds != float("inf")):
        raise ConfigError(f"DLSCOPE_PROGRESS_SECONDS={text}: expected a number of seconds, 0 or more")
    return seconds


def terminal_columns(stream) -> int:
    """The width of the terminal `stream` writes to; $COLUMNS, else 100, where it reports none."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            columns = 0
    return columns if columns > 0 else FALLBACK_COLUMNS


def _cost(name: str) -> float:
    """The experiment's share of the study's work: its module's COST (seconds of the quick profile on
    the reference CPU; only the ratios matter). One without a COST counts as an average one."""
    costs = {n: getattr(experiments.get(n), "COST", None) for n in experiments.available()}
    known = [c for c in costs.values() if isinstance(c, (int, float))]
    cost = costs.get(name)
    return cost if isinstance(cost, (int, float)) else (statistics.fmean(known) if known else 1.0)


class StudyProgress:
    """The one line of a study (or of one experiment: a study of one).

    Time left comes from the model `--dry-run` prints (plan_seconds: each experiment's COST scaled
    by its settings), from the first second: the running experiment is expected to take its planned
    seconds, and those after it theirs. What corrects the plan is the pace of the experiments that
    finished: planned seconds are scaled by (seconds they took + PRIOR_SECONDS) / (seconds planned
    for them + PRIOR_SECONDS), so one short experiment does not swing the estimate. Progress inside
    an experiment (epochs, trials) is shown but not extrapolated: with trials side by side or a
    slow first epoch (compiling), it misled the estimate by hours."""

    current: "StudyProgress | None" = None  # the active display; Progress reports into it

    def __init__(self, names: list[str], enabled: bool = True, planned: dict[str, float] | None = None):
        self.names, self.index, self.name = names, -1, ""
        self.planned = planned or {}  # experiment -> seconds (plan_seconds); COST where not given
        self.phase = "closed"  # starting -> trials -> tail (summary and figures) -> closed
        self.total = self.done = self.done_at_start = self.ep = self.ep_total = 0
        self.label, self.t0 = "", time.monotonic()
        self.durations: list[tuple[float, float]] = []  # (seconds taken, seconds planned) of experiments that ran trials
        self.final = ""
        self.stream, self.enabled = sys.stderr, enabled
        self.tty = enabled and _isatty(self.stream)
        self.every = progress_seconds() if enabled and not self.tty else 0.5
        self._last_draw, self._last_text = -float("inf"), ""
        self._shown = ""  # the live line on screen (terminal only)

    def __enter__(self) -> "StudyProgress":
        StudyProgress.current = self
        return self

    def __exit__(self, *exc) -> None:
        StudyProgress.current = None
        self.close()

    # ---------------------------------------------------------------- the experiment's steps

    def enter(self, name: str, draw: bool = True) -> None:
        """`name` starts (its trials are not known yet)."""
        self.index = self.names.index(name)
        self.name, self.total, self.done, self.done_at_start = name, 0, 0, 0
        self.label, self.ep, self.ep_total = "", 0, 0
        self.t0, self.phase = time.monotonic(), "starting"
        if draw:
            self.draw(force=True)

    def start_experiment(self, name: str, total: int, done: int) -> None:
        if name != self.name or self.phase == "closed":
            self.enter(name, draw=False)  # a single experiment: its first frame is the one below
        self.total, self.done, self.done_at_start = total, done, done
        self.phase = "trials"
        self.draw(force=True)

    def epoch(self, label: str, done: int, total: int) -> None:
        self.label, self.ep, self.ep_total = label, done, total
        self.draw()

    def trial_done(self) -> None:
        self.done += 1
        self.label, self.ep, self.ep_total = "", 0, 0
        if self.done < self.total:  # after the last, trials_finished draws
            self.draw(force=True)

    def trials_finished(self) -> None:
        """The trials are over; the summary and figures come next."""
        if self.phase in ("starting", "trials"):
            self.phase = "tail"
            self.draw(force=True)

    def end_experiment(self) -> None:
        if self.phase == "closed":  # already ended (a crash after the trials ends it twice)
            return
        now = time.monotonic()
        if self.done > self.done_at_start:  # a fully resumed experiment says nothing about pace
            self.durations.append((now - self.t0, self.plan(self.name)))
        self.phase = "closed"
        self.draw(force=True)

    # ---------------------------------------------------------------- the estimate

    def plan(self, name: str) -> float:
        return self.planned.get(name, _cost(name))

    def pace(self) -> float:
        """Seconds taken per second planned, from the experiments that finished (1 before any)."""
        taken = sum(t for t, _ in self.durations)
        planned = sum(p for _, p in self.durations)
        return (taken + PRIOR_SECONDS) / (planned + PRIOR_SECONDS)

    def seconds_left(self) -> float | None:
        pace = self.pace()
        later = pace * sum(self.plan(n) for n in self.names[self.index + 1 :])
        if self.phase == "closed":
            return later
        expected = pace * self.plan(self.name)
        # the running experiment: its planned time minus what it has had; never below a sliver of
        # it while it runs (it overran its plan: it is nearly done, or the next finish corrects the pace)
        here = max(expected - (time.monotonic() - self.t0), MIN_LEFT_SHARE * expected)
        return here + later

    # ---------------------------------------------------------------- the line

    def text(self) -> str:
        if self.final:
            return self.final
        parts = [f"[{self.index + 1}/{len(self.names)}] {self.name}"]
        if self.phase == "starting":
            parts.append("starting")
        elif self.phase == "closed":
            parts.append("done")
        elif self.done < self.total and self.phase == "trials":
            parts.append(f"trial {self.done + 1}/{self.total}" + (f" {self.label}" if self.label else ""))
            if self.ep_total:
                parts.append(f"epoch {self.ep}/{self.ep_total}")
        else:
            parts.append("summary and figures")
        left = self.seconds_left()
        if not (self.phase == "closed" and self.index == len(self.names) - 1):  # else nothing is left
            parts.append(f"~{format_duration(left)} left" if left is not None else "estimating time left")
        return " · ".join(parts)

    def draw(self, force: bool = False) -> None:
        """The line, now: on a terminal at most twice a second; in a log at most every
        $DLSCOPE_PROGRESS_SECONDS, or when `force`d (a trial ended, an experiment started)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.every:
            return
        text = self.text()
        if text == self._last_text:
            return
        self._last_draw, self._last_text = now, text
        if self.tty:
            text = text[: terminal_columns(self.stream) - 1]
            self.stream.write("\r" + text + "\x1b[K")
            self._shown = text
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, failed: list[str]) -> None:
        end = f"failed: {', '.join(failed)}" if failed else "all ok"
        self.final = f"[{len(self.names)}/{len(self.names)}] study finished · {end}"
        self.draw(force=True)

    def write(self, line: str) -> None:
        """A message line (a failed trial), above the live line; written even without a display."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        if self.tty and self._shown:
            self.stream.write(self._shown)
        self.stream.flush()

    def close(self) -> None:
        """End the live line, so that what is printed next starts on a line of its own."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = ""


class Progress:
    """The progress of one experiment's trials. While `run_all` runs, it reports into the study's
    line (StudyProgress.current); alone, it is a line of its own in the same style."""

    def __init__(self, experiment: str, total: int, done: int, enabled: bool = True, planned: float | None = None):
        study = StudyProgress.current if enabled else None
        self.own = study is None
        plan = None if planned is None else {experiment: planned}
        self.study = StudyProgress([experiment], enabled, plan) if self.own else study
        self.study.start_experiment(experiment, total, done)

    def epoch(self, job, done: int, total: int, info: str = "") -> None:
        self.study.epoch(job.trial.label or job.trial.key, done, total)

    def trial_done(self) -> None:
        self.study.trial_done()

    def write(self, line: str) -> None:
        self.study.write(line)

    def close(self) -> None:
        self.study.trials_finished()
        if self.own:
            self.study.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- dry-run estimate

MIN_SECONDS = 2.0  # start-up, data, summary and figures of even the smallest run


def estimate_seconds(name: str, settings: dict, trials: int, todo: int, device: str, seed: int = 0) -> float:
    """A rough time for `todo` of `trials` trials of experiment `name` at settings `settings` on `device`:
    its COST (seconds of the quick profile on the reference 2-core CPU) times the ratio of this run's
    work to quick's, the work being trials x seeds x epochs (or steps) x training examples, each the
    sum of the settings the experiment declares for it (WORK_SETTINGS); on a CPU, times
    2 / its torch threads (at least 1/2). No GPU reference exists: on CUDA it is the CPU figure."""
    import torch

    from .experiments._base import WORK_GROUPS, resolve

    module = experiments.get(name)
    quick = resolve(module, "quick", None, seed)
    ratio = trials / max(len(module.trials(quick)), 1)
    for keys in (module.WORK_SETTINGS[group] for group in WORK_GROUPS):
        mine = sum(settings[k] for k in keys if isinstance(settings.get(k), (int, float)))
        ref = sum(quick[k] for k in keys if isinstance(quick.get(k), (int, float)))
        if mine > 0 and ref > 0:
            ratio *= mine / ref
    seconds = _cost(name) * ratio
    if not device.startswith("cuda"):
        seconds *= max(REFERENCE_THREADS / max(torch.get_num_threads(), 1), 0.5)
    return 0.0 if todo == 0 else max(seconds * todo / max(trials, 1), MIN_SECONDS)


def plan_seconds(plans, device: str, seed: int = 0) -> dict[str, float]:
    """{experiment: estimated seconds} for check_plan's plans (module, settings, trials, store),
    finished trials left out: the one time model of --dry-run and of the live progress line."""
    out = {}
    for module, settings, trials, store in plans:
        done = sum(1 for t in trials if store.read_result(t.key, warn=False) is not None)
        out[module.NAME] = estimate_seconds(module.NAME, settings, len(trials), len(trials) - done, device, seed)
    return out


ESTIMATE_BASIS = (
    "a rough estimate: each experiment's COST (its seconds for the quick profile, measured on "
    "a 2-core CPU), scaled by trials x seeds x epochs x training examples relative to quick, "
    "and by 2 / this CPU's torch threads"
)
