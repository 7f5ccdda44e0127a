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

A run folder may come from elsewhere, so its files are data, never code: results and checkpoints
hold only tensors, numbers, strings, lists, tuples and dicts (`storable`), and are read back with
torch.load(weights_only=True), which builds nothing else. A result or checkpoint that does not read
back is treated as absent: its trial runs again. No file is read through a symbolic link
(files.open_regular), and no folder of the run may be one (RunStore.check).

`dlscope analyze` keeps its folder with the same class (RunStore.folder): config.json, measures/,
figures/, the same lock, checks and atomic writes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .files import open_regular, read_text_regular, remove_temp_files, save_atomic, write_text_atomic
from .errors import ConfigError


class RunFolderError(RuntimeError):
    """A file of the run folder is damaged or in the way; the message names it (CLI: exit 1)."""


_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def storable(obj, where: str = "result"):
    """obj as what a result or checkpoint file may hold: tensors, numbers, strings, lists, tuples
    and dicts (numpy arrays and scalars become tensors and numbers). Anything else is a TypeError
    naming where it sits: it would not load back with weights_only=True."""
    if type(obj).__module__ == "numpy":  # an array or a numpy scalar (np.float64 is also a float)
        return torch.from_numpy(obj.copy()) if getattr(obj, "shape", ()) != () else obj.item()
    if isinstance(obj, _SCALARS):
        return obj
    if torch.is_tensor(obj):
        return obj.detach() if obj.requires_grad else obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, tuple, type(None))):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; a stored dict's keys are strings or numbers")
            out[k] = storable(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [storable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__name__}; "
        f"results and checkpoints hold only tensors, numbers, strings, lists and dicts"
    )


def read_pt(path: Path):
    """A result or checkpoint file's dict, or None when it is missing, unreadable, a link or not a dict."""
    try:
        with open_regular(path) as f:
            obj = torch.load(f, weights_only=True)
    except Exception:  # missing, truncated, garbage, or objects weights_only refuses to build
        return None
    return obj if isinstance(obj, dict) else None


def read_json(path: Path) -> tuple[object, str | None]:
    """(the parsed JSON, None), (None, None) when the file is missing, or (None, why it is
    unreadable: one line). A link, a folder or a FIFO is unreadable (files.open_regular)."""
    try:
        return json.loads(read_text_regular(path)), None
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, (e.strerror or type(e).__name__)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as e:  # JSONDecodeError, or a number too long to convert
        return None, f"not valid JSON ({str(e).splitlines()[0][:100]})"
    except RecursionError:
        return None, "nested too deeply"


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
        # a state was loaded and the trial has not made progress since: if it fails now, the
        # checkpoint is the suspect (executors.run_job then runs it once more from the start)
        self.untried = False

    def load(self) -> dict | None:
        state = read_pt(self.path)  # an unreadable checkpoint means starting the trial over
        self.untried = state is not None
        return state

    def save(self, state: dict, force: bool = False) -> None:
        self.untried = False
        if force or time.monotonic() - self._last >= self.every_s:
            save_atomic(storable(state, f"checkpoint {self.path.name}"), self.path)
            self._last = time.monotonic()

    def progress(self, done: int, total: int, info: str = "") -> None:
        self.untried = False
        if self.on_progress:
            self.on_progress(done, total, info)

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def checkpoint_seconds() -> float:
    """How often trials checkpoint: $DLSCOPE_CHECKPOINT_SECONDS, default 30 (0 = every epoch)."""
    text = os.environ.get("DLSCOPE_CHECKPOINT_SECONDS", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(f"DLSCOPE_CHECKPOINT_SECONDS={text}: expected a number of seconds, 0 or more")
    return seconds


class RunStore:
    """One experiment's folder, out/<experiment>/ (or, by RunStore.folder, any one folder such
    as an analyze folder, with its own subfolders)."""

    SUBFOLDERS = ("trials", "checkpoints", "figures")

    def __init__(self, out: Path | str, experiment: str, subfolders: tuple[str, ...] | None = None, kind: str | None = None):
        self.root = Path(out)
        self.dir = self.root / experiment
        self.experiment = experiment
        self.subfolders = self.SUBFOLDERS if subfolders is None else subfolders
        self.kind = kind or experiment  # what the messages call the run

    @classmethod
    def folder(cls, path: Path | str, subfolders: tuple[str, ...], kind: str) -> "RunStore":
        """The store of the folder `path` itself (dlscope analyze's folder)."""
        path = Path(path)
        return cls(path.parent, path.name, subfolders, kind)

    @property
    def folders(self) -> list[Path]:
        return [self.dir, *(self.dir / s for s in self.subfolders)]

    def check_folders(self) -> None:
        """RunFolderError if the folder or one of its subfolders is a link or a file."""
        for folder in self.folders:
            if folder.is_symlink():  # a run folder from elsewhere must not send our reads and writes outside it
                raise RunFolderError(
                    f"{folder} is a symbolic link; dlscope writes runs only into real folders: "
                    f"replace it by a folder, or use another --out"
                )
            if folder.exists() and not folder.is_dir():
                raise RunFolderError(f"{folder} is a file, not a folder; move it away, or use another --out")

    # ------------------------------------------------------------------ settings

    def check(self, config: dict) -> bool:
        """Whether the folder holds this experiment's run already (True) or not yet (False).
        Reads only. ConfigError if its settings differ; RunFolderError if it is damaged."""
        path = self.dir / "config.json"
        self.check_folders()
        if not path.exists() and not path.is_symlink():
            return False
        old = self._read_config(path)
        if old != json.loads(json.dumps(config)):
            diff = [k for k in set(old) | set(config) if old.get(k) != config.get(k)]
            raise ConfigError(
                f"{self.dir} holds a {self.kind} run with other settings ({', '.join(sorted(diff))} differ); "
                f"use another --out or the same settings"
            )
        return True

    def _read_config(self, path: Path) -> dict:
        old, reason = read_json(path)
        if isinstance(old, dict):
            return old
        if reason is None:
            reason = "missing" if old is None else f"a JSON {type(old).__name__}, not an object"
        raise RunFolderError(
            f"{path}: unreadable ({reason}), so the settings of the run in {self.dir} are unknown; "
            f"delete that folder to start {self.kind} over, or use another --out"
        )

    def prepare(self, config: dict) -> None:
        """Record the settings, or check that a resumed run uses the same ones; then clear away
        the temporary files of writes a kill interrupted. The caller holds the folder's lock."""
        if not self.check(config):
            write_json(self.dir / "config.json", config)
        for folder in self.folders:
            remove_temp_files(folder)

    def config(self) -> dict | None:
        p = self.dir / "config.json"
        return self._read_config(p) if p.exists() or p.is_symlink() else None

    # ------------------------------------------------------------------ trials

    def result_path(self, key: str) -> Path:
        return self.dir / "trials" / f"{key}.pt"

    def has_result(self, key: str) -> bool:
        return self.result_path(key).exists()

    def save_result(self, key: str, result: dict) -> None:
        save_atomic(storable(result, f"result of trial {key}"), self.result_path(key))
        err = self.dir / "trials" / f"{key}.error.txt"
        if err.exists():
            err.unlink()
        self.checkpoint_path(key).unlink(missing_ok=True)

    def read_result(self, key: str, warn: bool = True) -> dict | None:
        """A finished trial's result; None if there is none, or if its file is unreadable (then
        the trial runs again, and says so on stderr when `warn`)."""
        path = self.result_path(key)
        if not path.exists():
            return None
        result = read_pt(path)
        if result is None and warn:
            print(
                f"dlscope: {path}: unreadable trial result (damaged, or not written by dlscope); running trial {key} again",
                file=sys.stderr,
            )
        return result

    def load_result(self, key: str) -> dict:
        result = self.read_result(key, warn=False)
        if result is None:
            raise RunFolderError(f"{self.result_path(key)}: missing or unreadable trial result")
        return result

    def remove_checkpoints_except(self, keys) -> None:
        """Drop checkpoints of trials that are finished (a kill between writing the result and
        removing the checkpoint leaves one) or not in this run at all."""
        folder = self.dir / "checkpoints"
        if folder.is_dir():
            for p in folder.glob("*.pt"):
                if p.stem not in keys:
                    p.unlink(missing_ok=True)

    def save_failure(self, key: str, error: str) -> None:
        write_text_atomic(self.dir / "trials" / f"{key}.error.txt", error)

    def failure(self, key: str) -> str | None:
        try:
            return read_text_regular(self.dir / "trials" / f"{key}.error.txt")
        except (OSError, UnicodeDecodeError):
            return None

    def checkpoint_path(self, key: str) -> Path:
        return self.dir / "checkpoints" / f"{key}.pt"

    # ------------------------------------------------------------------ JSON records (dlscope analyze's measures)

    def record_path(self, folder: str, key: str) -> Path:
        return self.dir / folder / f"{key}.json"

    def read_record(self, folder: str, key: str, problem: Callable[[object], str | None]) -> tuple[object, str | None]:
        """(a finished record, None), (None, None) if there is none, or (None, why the file is
        damaged): read as data, never through a link, its shape checked by `problem` (None: fine)."""
        obj, why = read_json(self.record_path(folder, key))
        if why is None and obj is not None:
            why = problem(obj)
        return (None, why) if why else (obj, None)

    def save_record(self, folder: str, key: str, obj) -> None:
        """Write a finished record (atomically) and drop the error file of an earlier failure."""
        write_json(self.record_path(folder, key), obj)
        (self.dir / folder / f"{key}.error.txt").unlink(missing_ok=True)

    def save_record_failure(self, folder: str, key: str, error: str) -> None:
        write_text_atomic(self.dir / folder / f"{key}.error.txt", error)

    # ------------------------------------------------------------------ outputs

    @property
    def fig_dir(self) -> Path:
        return self.dir / "figures"

    def write_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def summary(self) -> dict | None:
        """The summary, or None if it is missing or unreadable."""
        obj, _ = read_json(self.dir / "summary.json")
        return obj if isinstance(obj, dict) else None

    def write_timing(self, timing: dict) -> None:
        write_json(self.dir / "timing.json", timing)

    def write_metrics(self, rows: list[dict]) -> None:
        write_csv(self.dir / "metrics.csv", rows)
