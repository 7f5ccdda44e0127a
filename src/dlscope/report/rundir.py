"""Reading a run folder for the report. A run folder may come from elsewhere: it is data, never
trusted. Every file is checked for the shape the report needs; one that is odd (valid JSON of the
wrong shape, unreadable) marks only its experiment as damaged. Figures are embedded only from
regular files (no symlinks) inside the experiment's own figures/ folder that are PNG images.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .. import experiments
from ..files import read_text_regular

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 50 * 2**20  # a figure larger than this is not one dlscope wrote


def module_of(name: str):
    """The experiment's module, or None where this version does not implement it."""
    return experiments.get(name) if experiments.is_available(name) else None


@dataclass
class FigureFile:
    name: str  # the file's name inside figures/
    data: bytes  # its PNG bytes, read once, here


@dataclass
class ExpRun:
    """What the run folder holds for one experiment."""

    name: str
    title: str
    implemented: bool
    dir: Path
    config: dict | None = None
    summary: dict | None = None
    timing: dict | None = None
    figures: list[FigureFile] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial key -> last line of its error
    damaged: list[str] = field(default_factory=list)  # what is wrong with its files, one line each
    has_metrics: bool = False  # metrics.csv exists

    @property
    def status(self) -> str:
        if self.damaged:
            return "damaged"
        if self.config is None:
            return "not run"
        if self.summary is None:
            return "incomplete"
        return "failed trials" if self.failed else "ok"

    @property
    def profile(self) -> str | None:
        p = (self.config or {}).get("profile")
        return p if isinstance(p, str) else None

    @property
    def seconds(self) -> float | None:
        t = self.timing or {}
        for key in ("total_trial_seconds", "wall_seconds_this_invocation"):
            if is_number(t.get(key)):
                return float(t[key])
        return None

    @property
    def findings(self) -> list[dict]:
        """The summary's findings that have the fields the report shows (others are skipped)."""
        return [f for f in (self.summary or {}).get("findings") or [] if is_finding(f)]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_finding(f) -> bool:
    return isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("id", "claim", "verdict"))


def read_json(path: Path) -> tuple[object, str | None]:
    """(the parsed JSON, None), or (None, why it could not be read)."""
    try:
        return json.loads(read_text_regular(path)), None  # never through a link out of the folder
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e.__class__.__name__
        return None, f"{path.name} could not be read ({why})"
    except ValueError:
        return None, f"{path.name} is not valid JSON"


def shape_problems(config, summary, timing) -> list[str]:
    """What in these files does not have the shape dlscope writes (one line each)."""
    problems = []
    for fname, obj in (("config.json", config), ("summary.json", summary), ("timing.json", timing)):
        if obj is not None and not isinstance(obj, dict):
            problems.append(f"{fname} is not a JSON object")
    config = config if isinstance(config, dict) else {}
    summary = summary if isinstance(summary, dict) else {}
    timing = timing if isinstance(timing, dict) else {}
    if "profile" in config and not isinstance(config["profile"], str):
        problems.append("config.json: profile is not a name")
    if "seed" in config and not (isinstance(config["seed"], int) and not isinstance(config["seed"], bool)):
        problems.append("config.json: seed is not a whole number")
    if "failed_trials" in summary and not (
        isinstance(summary["failed_trials"], list) and all(isinstance(k, str) for k in summary["failed_trials"])
    ):
        problems.append("summary.json: failed_trials is not a list of trial names")
    if "findings" in summary and not isinstance(summary["findings"], list):
        problems.append("summary.json: findings is not a list")
    if "figures" in timing and not (isinstance(timing["figures"], list) and all(isinstance(f, str) for f in timing["figures"])):
        problems.append("timing.json: figures is not a list of file names")
    for key in ("total_trial_seconds", "wall_seconds_this_invocation"):
        if timing.get(key) is not None and not is_number(timing[key]):
            problems.append(f"timing.json: {key} is not a number")
    for key in ("device", "device_name", "finished"):
        if timing.get(key) is not None and not isinstance(timing[key], str):
            problems.append(f"timing.json: {key} is not text")
    return problems


def read_figure(fig_dir: Path, name: str) -> bytes | None:
    """The bytes of figures/NAME if it is a regular PNG file directly inside fig_dir (not a link,
    not a path that leads elsewhere), else None."""
    if not name or name != Path(name).name or name.startswith(".") or not name.endswith(".png"):
        return None
    path = fig_dir / name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FIGURE_BYTES:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            data = f.read(MAX_FIGURE_BYTES + 1)
    finally:
        if fd is not None:
            os.close(fd)
    return data if data.startswith(PNG_SIGNATURE) and len(data) <= MAX_FIGURE_BYTES else None


def read_figures(exp_dir: Path, listed: list[str]) -> list[FigureFile]:
    """The experiment's figures: those timing.json lists first (in its order), then any other PNG
    in figures/. The folder itself must be a real folder of the run, not a link out of it."""
    fig_dir = exp_dir / "figures"
    if fig_dir.is_symlink() or exp_dir.is_symlink() or not fig_dir.is_dir():
        return []
    try:
        present = sorted(p.name for p in fig_dir.iterdir())
    except OSError:
        return []
    out, seen = [], set()
    for name in [*listed, *present]:
        if name in seen:
            continue
        seen.add(name)
        data = read_figure(fig_dir, name)
        if data is not None:
            out.append(FigureFile(name, data))
    return out


def collect(run_dir: Path, name: str) -> ExpRun:
    module = module_of(name)
    d = Path(run_dir) / name
    run = ExpRun(name, getattr(module, "TITLE", name), module is not None, d)
    if not d.is_dir() or d.is_symlink():
        return run
    config, err_c = read_json(d / "config.json")
    summary, err_s = read_json(d / "summary.json")
    timing, err_t = read_json(d / "timing.json")
    run.damaged = [e for e in (err_c, err_s, err_t) if e] + shape_problems(config, summary, timing)
    if config is None and not err_c:
        run.damaged.append("config.json is missing")
    run.config = config if isinstance(config, dict) else None
    run.summary = summary if isinstance(summary, dict) else None
    run.timing = timing if isinstance(timing, dict) else None
    if run.damaged:  # show what is wrong, nothing else from these files
        run.summary = run.timing = None
        return run
    run.figures = read_figures(d, (run.timing or {}).get("figures") or [])
    run.has_metrics = (d / "metrics.csv").is_file()
    for key in (run.summary or {}).get("failed_trials", []):
        run.failed[key] = "failed"
    try:
        errors = sorted(p for p in (d / "trials").glob("*.error.txt") if p.is_file() and not p.is_symlink())
    except OSError:
        errors = []
    hide = str(Path(run_dir).resolve())  # a path of the machine that ran it is no one's business
    for err in errors:
        try:
            lines = [ln for ln in err.read_text(errors="replace").strip().splitlines() if ln.strip()]
        except OSError:
            lines = []
        last = lines[-1].strip() if lines else "failed"
        run.failed[err.name[: -len(".error.txt")]] = last.replace(hide, Path(hide).name)
    return run


def holds_a_run(run_dir: Path) -> bool:
    """Whether the folder holds at least one experiment's folder with a config.json."""
    return any((Path(run_dir) / n / "config.json").exists() for n in experiments.names())


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (0, 0 if it is not a PNG)."""
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()[:24]
    if data[:8] != PNG_SIGNATURE or len(data) < 24:
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
