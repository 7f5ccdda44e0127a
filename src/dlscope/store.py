"""The run folder. `DIR/<experiment>/` holds:

    config.json      the settings of the run (a rerun with other settings is refused)
    summary.json     the results (deterministic: same seed, same device, same file)
    timing.json      wall time, per-trial seconds, device (everything that varies run to run)
    metrics.csv      long format: one row per (run, epoch, metric); the columns that name the
                     run (model, function, seed, ...) come first, then epoch, metric, value
    figures/*.png
    trials/<key>.pt  each finished trial's result; present = done, skipped on resume
    trials/<key>.error.txt   a failed trial's error (it is run again on resume)
    checkpoints/<key>.pt     an unfinished trial's last checkpoint, to restart from

Every file is written to a temporary name and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from .files import save_atomic, write_text_atomic
from .experiments.base import ConfigError


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tail = [c for c in ("epoch", "metric", "value") if c in cols]
    cols = [c for c in cols if c not in tail] + tail
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


class FileCheckpointer:
    """Saves a trial's state every `every_s` seconds (and when forced), loads it on restart."""

    def __init__(self, path: Path, every_s: float, on_progress: Callable[[int, int, str], None] | None = None):
        self.path, self.every_s, self.on_progress = Path(path), every_s, on_progress
        self._last = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=False)
        except Exception:
            return None  # an unreadable checkpoint means starting the trial over

    def save(self, state: dict, force: bool = False) -> None:
        if force or time.monotonic() - self._last >= self.every_s:
            save_atomic(state, self.path)
            self._last = time.monotonic()

    def progress(self, done: int, total: int, info: str = "") -> None:
        if self.on_progress:
            self.on_progress(done, total, info)

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def checkpoint_seconds() -> float:
    """How often trials checkpoint: $DLSCOPE_CHECKPOINT_SECONDS, default 30 (0 = every epoch)."""
    return float(os.environ.get("DLSCOPE_CHECKPOINT_SECONDS", "30"))


class RunStore:
    def __init__(self, out: Path | str, experiment: str):
        self.root = Path(out)
        self.dir = self.root / experiment
        self.experiment = experiment

    # ------------------------------------------------------------------ settings

    def prepare(self, config: dict) -> None:
        """Record the settings, or check that a resumed run uses the same ones."""
        path = self.dir / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(config)):
                diff = [k for k in set(old) | set(config) if old.get(k) != config.get(k)]
                raise ConfigError(
                    f"{self.dir} holds a {self.experiment} run with other settings ({', '.join(sorted(diff))} differ); "
                    f"use another --out or the same settings"
                )
        else:
            write_json(path, config)

    def config(self) -> dict | None:
        p = self.dir / "config.json"
        return json.loads(p.read_text()) if p.exists() else None

    # ------------------------------------------------------------------ trials

    def result_path(self, key: str) -> Path:
        return self.dir / "trials" / f"{key}.pt"

    def has_result(self, key: str) -> bool:
        return self.result_path(key).exists()

    def save_result(self, key: str, result: dict) -> None:
        save_atomic(result, self.result_path(key))
        err = self.dir / "trials" / f"{key}.error.txt"
        if err.exists():
            err.unlink()
        self.checkpoint_path(key).unlink(missing_ok=True)

    def load_result(self, key: str) -> dict:
        return torch.load(self.result_path(key), weights_only=False)

    def save_failure(self, key: str, error: str) -> None:
        write_text_atomic(self.dir / "trials" / f"{key}.error.txt", error)

    def failure(self, key: str) -> str | None:
        p = self.dir / "trials" / f"{key}.error.txt"
        return p.read_text() if p.exists() else None

    def checkpoint_path(self, key: str) -> Path:
        return self.dir / "checkpoints" / f"{key}.pt"

    # ------------------------------------------------------------------ outputs

    @property
    def fig_dir(self) -> Path:
        return self.dir / "figures"

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def summary(self) -> dict | None:
        p = self.dir / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_timing(self, timing: dict) -> None:
        write_json(self.dir / "timing.json", timing)

    def write_metrics(self, rows: list[dict]) -> None:
        write_csv(self.dir / "metrics.csv", rows)
