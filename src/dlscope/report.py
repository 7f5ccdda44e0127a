"""The study's report: DIR/report.html (one self-contained page: figures embedded as data URIs,
inline CSS, no network) and DIR/report.md beside it (figures linked by relative path).

It reads only the run folder: per experiment config.json, summary.json, timing.json, figures/*.png
and trials/*.error.txt. Both files are rendered from one list of blocks (heading, paragraph, table,
figure, ...), so the HTML and the Markdown always say the same thing.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, experiments
from .files import write_text_atomic

# Everything about one experiment (title, part, what to look for, captions, the original's numbers,
# differences) lives in its module (see experiments/base.py); this file names no experiment.


def module_of(name: str):
    """The experiment's module, or None where this version does not implement it."""
    return experiments.get(name) if experiments.is_available(name) else None


# --------------------------------------------------------------------------- reading a run folder


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
    figures: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial key -> last line of its error

    @property
    def status(self) -> str:
        if self.config is None:
            return "not run"
        if self.summary is None:
            return "incomplete"
        return "failed trials" if self.failed else "ok"

    @property
    def seconds(self) -> float | None:
        if not self.timing:
            return None
        return self.timing.get("total_trial_seconds") or self.timing.get("wall_seconds_this_invocation")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(run_dir: Path, name: str) -> ExpRun:
    module = module_of(name)
    implemented = module is not None
    d = Path(run_dir) / name
    run = ExpRun(name, getattr(module, "TITLE", name), implemented, d)
    if not d.is_dir():
        return run
    run.config = _read_json(d / "config.json")
    run.summary = _read_json(d / "summary.json")
    if not isinstance(run.summary, dict):
        run.summary = None
    run.timing = _read_json(d / "timing.json")
    fig_dir = d / "figures"
    listed = (run.timing or {}).get("figures") or []
    run.figures = [fig_dir / f for f in listed if (fig_dir / f).is_file()]
    run.figures += sorted(p for p in fig_dir.glob("*.png") if p not in run.figures and not p.name.startswith("."))
    for key in (run.summary or {}).get("failed_trials", []):
        run.failed[key] = "failed"
    for err in sorted((d / "trials").glob("*.error.txt")):
        lines = [ln for ln in err.read_text(errors="replace").strip().splitlines() if ln.strip()]
        run.failed[err.name[: -len(".error.txt")]] = lines[-1].strip() if lines else "failed"
    return run


# --------------------------------------------------------------------------- formatting numbers

PERCENT_KEYS = ("acc", "explained_variance")


def is_percent(key: str) -> bool:
    return any(k in key for k in PERCENT_KEYS)


def fmt(key: str, v) -> str:
    """One value for a table cell: accuracies as %, counts with separators, floats to 4 digits."""
    if v is None:
        return "not converged" if key == "converged_epoch" else "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v) if key in ("seed", "epoch", "epochs") or key.endswith("_epoch") else f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if is_percent(key):
            return f"{100 * v:.2f}%"
        if key in ("lr", "alpha") or key.endswith("_lr"):
            return f"{v:g}"
        if v == 0:
            return "0"
        if 1 <= abs(v) < 1e4:
            return f"{v:.4f}"
        if 1e-4 <= abs(v) < 1:
            return f"{v:.4g}"  # 4 significant digits: 0.08595, 0.001
        return f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "—"
        if len(v) <= 12 and all(not isinstance(x, (list, dict)) for x in v):
            return ", ".join(fmt(key, x) for x in v)
        nums = [x for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(nums) == len(v):
            return f"{len(v)} values, {fmt(key, float(min(nums)))} … {fmt(key, float(max(nums)))}"
        return f"{len(v)} values"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(k, x)}" for k, x in v.items())
    return str(v)


def header(key: str) -> str:
    return {"alpha": "α"}.get(key, key.replace("_", " "))


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# --------------------------------------------------------------------------- blocks


@dataclass
class Cell:
    text: str
    cls: str = ""  # css class: "num", "good", "warn", "bad", ...


@dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    cls: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


# A block is one of: ("h1"|"h2"|"h3", text, id), ("p", text), ("note", kind, text), Table, Figure,
# ("section", id) / ("end",) around an experiment.


def _cells(row: list, num: set[int] | None = None) -> list[Cell]:
    return [c if isinstance(c, Cell) else Cell(str(c), "num" if num and i in num else "") for i, c in enumerate(row)]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rows_table(rows: list[dict], caption: str = "") -> tuple[Table, list[str]]:
    """A list of dicts as a table; columns that say nothing (all 'diverged': no) become a note."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    notes = []
    for c in list(cols):
        vals = [_truthy(r.get(c)) for r in rows]
        if c.startswith("original_"):  # shown in the comparison table instead
            cols.remove(c)
        elif c == "diverged" and not any(vals):
            cols.remove(c)
            notes.append("No training diverged.")
    num = {i for i, c in enumerate(cols) if any(_is_num(r.get(c)) for r in rows)}
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(cols):
            v = r.get(c)
            cls = "num" if i in num else ""
            if c == "diverged" and _truthy(v):
                cls = "bad"
            cells.append(Cell(fmt(c, v), cls))
        body.append(cells)
    return Table([header(c) for c in cols], body, caption, cls="dense" if len(cols) > 8 else ""), notes


def _truthy(v) -> bool:
    """A flag or a list of flags (one per member) is set when any is."""
    return any(_truthy(x) for x in v) if isinstance(v, (list, tuple)) else bool(v)


def stats_table(rows: list[dict], caption: str) -> Table:
    """Many rows (e.g. min-ratio's 100 points): min / median / mean / max per numeric column."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and _is_num(r[k])]
    body = []
    for c in cols:
        vals = [float(r[c]) for r in rows if _is_num(r.get(c)) and math.isfinite(float(r[c]))]
        missing = len(rows) - len(vals)
        if not vals:
            body.append(_cells([header(c), "—", "—", "—", "—", str(missing)], {5}))
            continue
        stats = [min(vals), statistics.median(vals), statistics.fmean(vals), max(vals)]
        body.append(_cells([header(c)] + [fmt(c, float(s)) for s in stats] + [str(missing)], {1, 2, 3, 4, 5}))
    return Table(["value", "min", "median", "mean", "max", "missing"], body, caption)


MAX_ROWS = 30
META = ("experiment", "profile", "seed", "failed_trials")


def result_blocks(summary: dict) -> list:
    """Tables of a summary.json, whatever its shape: scalars and short lists as one key/value table,
    lists of records as tables (long ones as statistics), records holding series as one table each."""
    blocks: list = []
    scalars = []
    for key, v in summary.items():
        if key in META:
            continue
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            v = [{"name": k, **x} for k, x in v.items()]
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            blocks += record_blocks(key, v)
        else:
            scalars.append([Cell(header(key)), Cell(fmt(key, v), "num" if _is_num(v) else "")])
    if scalars:
        blocks.insert(0, Table(["value", "this run"], scalars, cls="kv"))
    return blocks


def series_keys(row: dict) -> list[str]:
    """The fields of a record that are series of one length (e.g. interpolation's α and the
    metrics at each α): at least two numeric lists of the same length ≥ 3."""
    lengths = [len(v) for v in row.values() if isinstance(v, list) and len(v) >= 3 and all(_is_num(x) or x is None for x in v)]
    if len(lengths) < 2:
        return []
    n = statistics.mode(lengths)
    keys = [k for k, v in row.items() if isinstance(v, list) and len(v) == n and all(_is_num(x) or x is None for x in v)]
    return keys if len(keys) >= 2 else []


def record_blocks(key: str, rows: list[dict]) -> list:
    # one table per record only when every record holds series (grad-norm's per-seed lists of the
    # MLP row sit beside single-seed CNN rows: those stay one table)
    series = series_keys(rows[0]) if all(series_keys(r) for r in rows) else []
    if series:  # e.g. interpolation: one table per pair, one row per α
        out = []
        for r in rows:
            ident = " · ".join(f"{header(k)}: {fmt(k, v)}" for k, v in r.items() if k not in series)
            n = max(len(r[k]) for k in series if isinstance(r.get(k), list))
            recs = [{k: (r[k][i] if isinstance(r.get(k), list) and i < len(r[k]) else None) for k in series} for i in range(n)]
            t, notes = rows_table(recs, ident)
            out += [t] + [("p", x) for x in notes]
        return out
    if len(rows) > MAX_ROWS:
        return [stats_table(rows, f"{header(key)}: {len(rows)} rows, summarised (every row is in summary.json)")]
    t, notes = rows_table(rows, header(key) if key != "results" else "")
    return [t] + [("p", x) for x in notes]


# --------------------------------------------------------------------------- comparison with the original


def _reference(name: str) -> dict | None:
    """The original study's numbers for this experiment (its module's REFERENCE), or None."""
    ref = getattr(module_of(name), "REFERENCE", None)
    return ref if isinstance(ref, dict) and ref.get("rows") else None


def _ours(name: str, summary: dict) -> dict:
    """This run's numbers under REFERENCE's labels: {label: (value, note)} (the module's ours())."""
    out = {}
    for label, v in module_of(name).ours(summary).items():
        if isinstance(v, dict):
            out[label] = (v.get("value"), v.get("note") or "")
        else:
            out[label] = (v, "")
    return out


def _kind(ref: dict, label: str) -> str:
    return ref["kind"] or ("acc" if "accuracy" in label else "loss")


def compare_cell(kind: str, original, mine) -> tuple[Cell, Cell, Cell]:
    """(original, ours, difference) with the difference coloured by how far we are from the original:
    accuracies in percentage points (≤ 3 close, ≤ 10 off, else far), losses relative (≤ 15%, ≤ 50%)."""
    key = "acc" if kind == "acc" else "loss"
    show = (lambda v: fmt(key, float(v))) if kind == "acc" else (lambda v: f"{v:.4g}")
    o_txt = f"{show(original[0])} – {show(original[1])}" if isinstance(original, tuple) else show(original)
    if mine is None or (isinstance(mine, tuple) and None in mine):
        return Cell(o_txt, "num"), Cell("—", "num"), Cell("not in this run", "na")
    m_txt = f"{show(mine[0])} – {show(mine[1])}" if isinstance(mine, tuple) else show(mine)
    if isinstance(original, tuple):  # a range: how far our range lies outside it
        lo, hi = original
        mlo, mhi = mine if isinstance(mine, tuple) else (mine, mine)
        d = (mlo - hi) if mlo > hi else (mhi - lo) if mhi < lo else 0.0
        o_ref = hi if d > 0 else lo
    else:
        d, o_ref = float(mine) - float(original), float(original)
    if kind == "acc":
        size = abs(100 * d)
        cls = "good" if size <= 3 else "warn" if size <= 10 else "bad"
        d_txt = "within" if d == 0 and isinstance(original, tuple) else f"{100 * d:+.1f} pp"
    else:
        rel = abs(d) / abs(o_ref) if o_ref else math.inf
        cls = "good" if rel <= 0.15 else "warn" if rel <= 0.5 else "bad"
        d_txt = "within" if d == 0 and isinstance(original, tuple) else f"{d:+.4g}" + _ratio(d, o_ref)
    return Cell(o_txt, "num"), Cell(m_txt, "num"), Cell(d_txt, f"num diff {cls}")


def _ratio(d: float, original: float) -> str:
    """The difference relative to the original: a percentage, or a factor when it is large."""
    if not original:
        return ""
    rel = d / original
    if rel > 1:
        return f" ({rel + 1:.1f}× the original)"
    return f" ({100 * rel:+.0f}%)" if abs(rel) >= 0.1 else f" ({100 * rel:+.1f}%)"


def comparison_blocks(run: ExpRun) -> list:
    ref = _reference(run.name)
    if ref is None or run.summary is None:
        return []
    mine = _ours(run.name, run.summary)
    rows = []
    for label, original in ref["rows"].items():
        value, note = mine.get(label, (None, ""))
        shown = f"{label} ({note})" if note else label
        o, m, d = compare_cell(_kind(ref, label), original, value)
        rows.append([Cell(shown), o, m, d])
    profile = (run.config or {}).get("profile", "?")
    blocks: list = [("h3", "Beside the original study", None),
                    ("p", f"Compared: {ref['what']}. Original: {ref['original']}; this run: profile `{profile}`"
                          f"{_length(run.config)}.")]
    if profile != "full":
        blocks.append(("note", "info", f"This run used the `{profile}` profile (shorter schedules, data subsets), "
                                       "not the original's settings: large differences are expected. "
                                       "Run with `--profile full` to compare like with like."))
    blocks.append(Table(["", "original", "dlscope", "difference"], rows, cls="compare"))
    blocks.append(("legend",))
    return blocks


def _length(cfg: dict | None) -> str:
    if not cfg:
        return ""
    for k in ("epochs", "train_epochs", "steps"):
        if _is_num(cfg.get(k)):
            unit = k.replace("_", " ")
            return f", {cfg[k]:,} {unit[:-1] if cfg[k] == 1 else unit}"
    return ""


# --------------------------------------------------------------------------- one experiment


def settings_blocks(run: ExpRun) -> list:
    cfg = run.config or {}
    full = getattr(module_of(run.name), "PROFILES", {}).get("full")
    profile = cfg.get("profile", "?")
    t = run.timing or {}
    facts = [
        ["profile", f"{profile}"],
        ["base seed (--seed)", str(cfg.get("seed", "—"))],
        ["device", t.get("device_name") or t.get("device") or "—"],
        ["time", _time_text(t)],
    ]
    if t.get("finished"):
        facts.append(["finished", str(t["finished"]).replace("T", " ")])
    blocks: list = [("h3", "What was run", None), Table(["", ""], [_cells(r) for r in facts], cls="kv")]
    if full is None:
        blocks.append(("p", "Settings: see config.json (this version has no module to compare them with)."))
        return blocks
    keys = [k for k in cfg if k not in ("profile", "seed")] + [k for k in full if k not in cfg]
    diff = [k for k in keys if json.dumps(cfg.get(k)) != json.dumps(full.get(k))]
    if not diff:
        blocks.append(("p", "Settings: all as the `full` profile (the original study's)."))
    else:
        rows = [[Cell(k), *(Cell(fmt_setting(v), "num" if _is_num(v) else "") for v in (cfg.get(k), full.get(k)))] for k in diff]
        same = len([k for k in keys if k not in diff])
        blocks.append(Table(["setting", "this run", "full (original)"], rows,
                            f"Settings that differ from the `full` profile ({same} others are the same)", cls="settings"))
    return blocks


def fmt_setting(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(fmt_setting(x) for x in v)
    return str(v)


def _time_text(t: dict) -> str:
    if not t:
        return "—"
    trials = t.get("total_trial_seconds")
    wall = t.get("wall_seconds_this_invocation")
    if trials is None:
        return f"{fmt_seconds(wall)} wall" if wall is not None else "—"
    text = f"{fmt_seconds(trials)} in trials"
    if wall is not None and wall > trials + 1:  # summaries and figures take time too
        text += f", {fmt_seconds(wall)} wall"
    elif wall is not None and wall < trials - 1:
        text += f" (resumed: the last invocation took {fmt_seconds(wall)})"
    return text


def experiment_blocks(i: int, run: ExpRun) -> list:
    module = module_of(run.name)
    part = getattr(module, "PART", None)
    blocks: list = [("part", part)] if part else []
    blocks.append(("section", run.name))
    blocks.append(("h2", f"{i}. {run.title} — {run.name}", run.name))
    blocks.append(("status", run.status, _status_detail(run)))
    if run.status == "not run":
        why = "" if run.implemented else " (not implemented in this version of dlscope)"
        how = f" Run it with `dlscope run {run.name} --profile {_profile_hint(run)} --out {run.dir.parent}`." if run.implemented else ""
        blocks.append(("note", "missing", f"Not run{why}: there is no `{run.name}/` in this run folder.{how}"))
        blocks.append(("end",))
        return blocks
    if getattr(module, "LOOK_FOR", ""):
        blocks.append(("p", f"What to look for: {module.LOOK_FOR}"))
    if run.status == "incomplete":
        blocks.append(("note", "missing", "Incomplete: the experiment started but wrote no summary (interrupted, "
                                          "or it failed outside its trials). Run the same command again to resume."))
    if run.failed:
        items = "; ".join(f"`{k}`: {v}" for k, v in sorted(run.failed.items()))
        blocks.append(("note", "bad", f"{len(run.failed)} trial(s) failed, so their results are missing below: {items}. "
                                      f"The full errors are in {run.name}/trials/*.error.txt; running the same command "
                                      f"again retries them."))
    blocks += settings_blocks(run)
    if run.figures:
        blocks.append(("h3", "Figures", None))
        captions = getattr(module, "CAPTIONS", {})
        blocks += [Figure(p, captions.get(p.name) or f"Figure {p.stem.replace('_', ' ')} of this experiment.")
                   for p in run.figures]
    if run.summary is not None:
        blocks.append(("h3", "Results", None))
        blocks += result_blocks(run.summary)
        blocks += comparison_blocks(run)
    blocks.append(("end",))
    return blocks


def _profile_hint(run: ExpRun) -> str:
    """The profile the rest of the folder was run with (so the report stays comparable)."""
    for cfg_path in sorted(run.dir.parent.glob("*/config.json")):
        cfg = _read_json(cfg_path)
        if cfg and cfg.get("profile"):
            return cfg["profile"]
    return "quick"


def _status_detail(run: ExpRun) -> str:
    if run.status == "not run":
        return "not run" if run.implemented else "not run (not implemented)"
    if run.status == "failed trials":
        return f"{len(run.failed)} trial(s) failed: {', '.join(sorted(run.failed))}"
    return run.status


# --------------------------------------------------------------------------- the whole report


def build(run_dir: Path) -> tuple[list, list[ExpRun]]:
    runs = [collect(run_dir, n) for n in experiments.names()]
    ran = [r for r in runs if r.config is not None]
    devices = sorted({(r.timing or {}).get("device_name") or (r.timing or {}).get("device") for r in ran if r.timing} - {None})
    profiles = sorted({(r.config or {}).get("profile", "?") for r in ran})
    total = sum(r.seconds or 0 for r in ran)
    n_ok = sum(r.status == "ok" for r in runs)
    blocks: list = [("h1", "dlscope report", "top")]
    facts = [
        ["run folder", str(Path(run_dir).resolve())],
        ["dlscope", __version__],
        ["generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")],
        ["device", ", ".join(devices) or "—"],
        ["profile", ", ".join(profiles) or "—"],
        ["experiments", f"{n_ok} of {len(runs)} complete"
                        + (f"; not run: {', '.join(r.name for r in runs if r.status == 'not run')}" if len(ran) < len(runs) else "")],
        ["time in trials", fmt_seconds(total) if ran else "—"],
    ]
    blocks.append(Table(["", ""], [_cells(r) for r in facts], cls="kv facts"))
    blocks.append(("p", "A classic deep-learning study in three parts — deep vs shallow, optimization, "
                        "generalization — measured by dlscope. Each section says what was run, shows its "
                        "figures and results, and where the original study published numbers, puts them "
                        "beside ours. The last section lists where dlscope's definitions differ from the original's."))
    blocks.append(("section", "contents"))
    blocks.append(("h2", "Contents", "contents-h"))
    toc = []
    for i, r in enumerate(runs, 1):
        toc.append([Cell(str(i), "num"), Cell(f"[{r.name}](#{r.name})", "link"), Cell(r.title),
                    Cell(_status_detail(r), f"status {r.status.replace(' ', '-')}"),
                    Cell(fmt_seconds(r.seconds) if r.timing else "—", "num")])
    toc.append([Cell(""), Cell("[differences](#differences)", "link"), Cell("Where dlscope differs from the original"),
                Cell(""), Cell("")])
    blocks.append(Table(["#", "experiment", "title", "status", "time"], toc, cls="toc"))
    blocks.append(("end",))
    for i, r in enumerate(runs, 1):
        try:
            blocks += experiment_blocks(i, r)
        except Exception as e:  # one odd summary must not cost the whole report
            blocks += [("section", r.name), ("h2", f"{i}. {r.title} — {r.name}", r.name),
                       ("note", "bad", f"This section could not be rendered ({type(e).__name__}: {e}); "
                                       f"the files are in {r.name}/."), ("end",)]
    blocks.append(("section", "differences"))
    blocks.append(("h2", "Where dlscope's definitions differ from the original study", "differences-h"))
    for title, what, why in differences():
        blocks.append(("diff", title, what, why))
    blocks.append(("end",))
    return blocks, runs


def differences() -> list[tuple[str, str, str]]:
    """Where dlscope's definitions differ from the original's: each experiment's, then the study's."""
    items = []
    for name in experiments.names():
        items += list(getattr(module_of(name), "DIFFERENCES", None) or [])
    return items + list(experiments.STUDY_NOTES)


def write_report(run_dir: Path) -> list[Path]:
    """Write run_dir/report.html and run_dir/report.md; return their paths."""
    run_dir = Path(run_dir)
    blocks, _ = build(run_dir)
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    write_text_atomic(html_path, to_html(blocks))
    write_text_atomic(md_path, to_markdown(blocks, run_dir))
    return [html_path, md_path]


# --------------------------------------------------------------------------- HTML

CSS = """
:root { --fg:#1d232b; --muted:#5b6573; --line:#dde2e8; --bg:#fff; --soft:#f5f7fa; --accent:#2457a6;
        --good:#e3f4e6; --good-fg:#1c6b2c; --warn:#fdf1d8; --warn-fg:#8a5a00; --bad:#fbe3e1; --bad-fg:#a3261b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--fg);
       font: 15px/1.55 "DejaVu Sans", -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; background: var(--bg); }
h1 { font-size: 28px; margin: 8px 0 12px; }
h2 { font-size: 22px; margin: 0 0 6px; padding-top: 8px; }
h3 { font-size: 16px; margin: 22px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
section { border-top: 1px solid var(--line); padding: 18px 0 10px; margin-top: 18px; }
.part { margin: 40px 0 0; padding: 6px 12px; background: var(--accent); color: #fff; font-weight: 600;
        border-radius: 4px; font-size: 14px; letter-spacing: .05em; text-transform: uppercase; }
.part + section { border-top: none; margin-top: 4px; }
p { margin: 8px 0; }
code { overflow-wrap: anywhere; font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
code.nw { white-space: nowrap; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.tablewrap { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 10px 0 14px; font-size: 14px; max-width: 100%; }
p.caption { color: var(--muted); font-size: 13px; margin: 12px 0 -6px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; vertical-align: bottom; }
table.dense { font-size: 12.5px; } table.dense th, table.dense td { padding: 4px 6px; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { display: none; } table.kv td:first-child { color: var(--muted); padding-right: 24px; white-space: nowrap; }
table.kv td.num { text-align: left; }
table.facts td { border-bottom: none; padding: 2px 10px 2px 0; } table.facts tr td { background: none !important; }
td.diff { font-weight: 600; } td.good { background: var(--good) !important; color: var(--good-fg); }
td.warn { background: var(--warn) !important; color: var(--warn-fg); } td.bad { background: var(--bad) !important; color: var(--bad-fg); }
p.legend { font-size: 13px; color: var(--muted); }
span.diff { font-weight: 600; padding: 0 5px; border-radius: 3px; }
span.good { background: var(--good); color: var(--good-fg); } span.warn { background: var(--warn); color: var(--warn-fg); }
span.bad { background: var(--bad); color: var(--bad-fg); }
td.na { color: var(--muted); font-style: italic; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.status.ok .badge, .badge.ok { background: var(--good); color: var(--good-fg); }
.badge.failed-trials, .badge.incomplete { background: var(--bad); color: var(--bad-fg); }
.badge.not-run { background: #eceff3; color: var(--muted); }
td.status { white-space: nowrap; }
.note { padding: 9px 12px; border-radius: 4px; margin: 10px 0; border-left: 4px solid; }
.note.info { background: #eef3fb; border-color: var(--accent); }
.note.missing { background: #f3f4f6; border-color: #9aa3ae; color: var(--muted); }
.note.bad { background: var(--bad); border-color: var(--bad-fg); }
figure { margin: 14px 0 20px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 3px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.diffitem { margin: 14px 0; } .diffitem h4 { margin: 0 0 4px; font-size: 15px; }
.diffitem p { margin: 3px 0; } .diffitem .why { color: var(--muted); }
.top { float: right; font-size: 12px; font-weight: normal; }
@media print { body { background: #fff; } main { max-width: none; } section { break-inside: avoid-page; } }
"""


def _inline(text: str) -> str:
    """Escape, then `code`, **bold** and [text](#anchor) links."""
    t = html.escape(text, quote=False)
    # short code stays on one line ("--profile" must not break at its hyphens); long code may wrap
    t = re.sub(r"`([^`]+)`", lambda m: f'<code{" class=nw" if len(m.group(1)) <= 40 else ""}>{m.group(1)}</code>', t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\[([^\]]+)\]\((#[\w-]+)\)", r'<a href="\2">\1</a>', t)
    return t


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _figure_html(f: Figure, section: str) -> str:
    try:
        data = f.path.read_bytes()
    except OSError:
        return f'<p class="note bad">Figure {html.escape(f.path.name)} could not be read.</p>'
    w, _ = png_size(f.path)
    # shown at its pixel size, shrunk to the column's width when wider
    style = f' width="{w}"' if w else ""
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    alt = html.escape(f"{section}: {f.caption}")
    return (f'<figure><img src="{src}" alt="{alt}" data-file="{html.escape(section)}/figures/{html.escape(f.path.name)}"{style}>'
            f"<figcaption>{_inline(f.caption)}</figcaption></figure>")


def _table_html(t: Table) -> str:
    # a caption as a paragraph: a <caption> wraps to the table's (often narrow) width
    out = [f'<p class="caption">{_inline(t.caption)}</p>'] if t.caption else []
    out.append('<div class="tablewrap">' + (f'<table class="{t.cls}">' if t.cls else "<table>"))
    out.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.head) + "</tr></thead><tbody>")
    for row in t.rows:
        cells = []
        for c in row:
            text = _inline(c.text)
            if c.cls.startswith("status"):
                kind = c.cls.split()[-1]
                text = f'<span class="badge {kind}">{text}</span>'
            cls = f' class="{c.cls}"' if c.cls else ""
            cells.append(f"<td{cls}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def to_html(blocks: list) -> str:
    body, section = [], ""
    for b in blocks:
        if isinstance(b, Table):
            body.append(_table_html(b))
        elif isinstance(b, Figure):
            body.append(_figure_html(b, section))
        elif b[0] == "section":
            section = b[1]
            body.append(f'<section id="{html.escape(b[1])}">')
        elif b[0] == "end":
            body.append("</section>")
        elif b[0] == "part":
            body.append(f'<div class="part">{html.escape(b[1])}</div>')
        elif b[0] in ("h1", "h2", "h3"):
            ident = f' id="{b[2]}"' if b[2] and b[0] != "h2" else ""
            top = ' <a class="top" href="#contents">↑ contents</a>' if b[0] == "h2" and b[2] != "contents-h" else ""
            body.append(f"<{b[0]}{ident}>{_inline(b[1])}{top}</{b[0]}>")
        elif b[0] == "status":
            kind = b[1].replace(" ", "-")
            body.append(f'<p class="status {kind}"><span class="badge {kind}">{html.escape(b[2])}</span></p>')
        elif b[0] == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "note":
            body.append(f'<div class="note {b[1]}">{_inline(b[2])}</div>')
        elif b[0] == "legend":
            body.append('<p class="legend">Difference = dlscope − original; accuracies in percentage points (pp). '
                        '<span class="diff good">close</span> ≤ 3 pp or ≤ 15%, <span class="diff warn">off</span> '
                        '≤ 10 pp or ≤ 50%, <span class="diff bad">far</span> beyond.</p>')
        elif b[0] == "diff":
            body.append(f'<div class="diffitem"><h4>{_inline(b[1])}</h4><p>{_inline(b[2])}</p>'
                        f'<p class="why">Why: {_inline(b[3])}</p></div>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dlscope report</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


# --------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_md(t: Table) -> str:
    lines = []
    if t.caption:
        lines.append(f"*{t.caption}*\n")
    head = t.head if any(t.head) else [""] * len(t.head)
    lines.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
    aligns = []
    for i in range(len(t.head)):
        aligns.append("---:" if any(i < len(r) and "num" in r[i].cls.split() for r in t.rows) and t.cls != "kv" else "---")
    lines.append("| " + " | ".join(aligns) + " |")
    for row in t.rows:
        cells = []
        for c in row:
            text = _md_cell(c.text)
            if "bad" in c.cls.split() and "diff" in c.cls.split():
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(blocks: list, run_dir: Path) -> str:
    out, section = [], ""
    for b in blocks:
        if isinstance(b, Table):
            out.append(_table_md(b))
        elif isinstance(b, Figure):
            rel = b.path.relative_to(run_dir) if b.path.is_relative_to(run_dir) else b.path
            out.append(f"![{section}: {b.caption}]({rel.as_posix()})\n\n*{b.caption}*")
        elif b[0] == "section":
            section = b[1]
            if b[1] not in ("contents",):
                out.append(f'<a id="{b[1]}"></a>')
        elif b[0] == "end":
            continue
        elif b[0] == "part":
            out.append(f"---\n\n**Part: {b[1]}**")
        elif b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + b[1])
        elif b[0] == "status":
            out.append(f"Status: **{b[2]}**")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "note":
            out.append(f"> {b[2]}")
        elif b[0] == "legend":
            out.append("Difference = dlscope − original; accuracies in percentage points (pp); **bold**: far from "
                       "the original (more than 10 pp or 50%).")
        elif b[0] == "diff":
            out.append(f"**{b[1]}.** {b[2]}\n\n*Why:* {b[3]}")
    return "\n\n".join(out) + "\n"
