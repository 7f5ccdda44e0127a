"""The report's building blocks and how numbers read in them; tables of any summary.json.

A report is a list of blocks, rendered once as HTML and once as Markdown, so both say the same:
    ("h1" | "h2" | "h3", text, id)      headings
    ("p", text), ("note", kind, text)   a paragraph; a boxed note (kind: info, missing, bad)
    ("status", status, text)            an experiment's status badge
    ("part", text)                      the heading of a part of the study
    ("section", id) ... ("end",)        around a section
    ("diff", what, dlscope vs original, why)
    ("legend",)                         the colours of the comparison with the original
    ("links", text, [(label, path relative to the run folder)])
    Table, Figure
Text may hold `code`, **bold** and [text](#anchor); each renderer escapes everything else.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .rundir import is_number

# --------------------------------------------------------------------------- block types


@dataclass
class Cell:
    text: str
    cls: str = ""  # css class: "num", "good", "warn", "bad", "verdict shown", ...


@dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    cls: str = ""


@dataclass
class Figure:
    section: str  # the experiment
    name: str  # file name in SECTION/figures/
    data: bytes
    caption: str


def cells(row: list, num: set[int] | None = None) -> list[Cell]:
    return [c if isinstance(c, Cell) else Cell(str(c), "num" if num and i in num else "") for i, c in enumerate(row)]


# --------------------------------------------------------------------------- numbers as text

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
        nums = [x for x in v if is_number(x)]
        if len(nums) == len(v):
            return f"{len(v)} values, {fmt(key, float(min(nums)))} … {fmt(key, float(max(nums)))}"
        return f"{len(v)} values"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(str(k), x)}" for k, x in v.items())
    return str(v)


def fmt_number(v) -> str:
    """A number whose kind is unknown (a finding's statistic): three significant digits."""
    if not is_number(v):
        return "—"
    return "0" if abs(v) < 1e-12 else f"{v:.3g}"  # a mean of differences that cancel: rounding noise


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


# --------------------------------------------------------------------------- tables of a summary.json

MAX_ROWS = 30
META = ("experiment", "profile", "seed", "failed_trials", "findings")
# columns that name a training rather than measure it: never summarised as a statistic
ID_KEYS = ("seed", "seeds", "run", "member", "index")


def truthy(v) -> bool:
    """A flag or a list of flags (one per member) is set when any is."""
    return any(truthy(x) for x in v) if isinstance(v, (list, tuple)) else bool(v)


def rows_table(rows: list[dict], caption: str = "") -> tuple[Table, list[str]]:
    """A list of dicts as a table; columns that say nothing (all 'diverged': no) become a note."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    notes = []
    for c in list(cols):
        if c.startswith("original_"):  # shown in the comparison with the original instead
            cols.remove(c)
        elif c == "diverged" and not any(truthy(r.get(c)) for r in rows):
            cols.remove(c)
            notes.append("No training diverged.")
    num = {i for i, c in enumerate(cols) if any(is_number(r.get(c)) for r in rows)}
    body = []
    for r in rows:
        row = []
        for i, c in enumerate(cols):
            v = r.get(c)
            cls = "bad" if c == "diverged" and truthy(v) else "num" if i in num else ""
            row.append(Cell(fmt(c, v), cls))
        body.append(row)
    return Table([header(c) for c in cols], body, caption, cls="dense" if len(cols) > 8 else ""), notes


def is_id(key: str) -> bool:
    return key in ID_KEYS or key.endswith(("_seed", "_index"))


def stats_table(rows: list[dict], caption: str) -> list:
    """Many rows (e.g. 100 end points): per measured quantity its median and range over the rows;
    quantities that are the same in every row, and flags, become one sentence each; columns that
    name a training (seed, run) are left out."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and not is_id(k) and not k.startswith("original_")]
    body, same, flags = [], [], []
    for c in cols:
        vals = [r.get(c) for r in rows]
        if all(isinstance(v, bool) for v in vals if v is not None) and any(isinstance(v, bool) for v in vals):
            flags.append(f"{header(c)}: {sum(bool(v) for v in vals)} of {len(rows)}")
            continue
        nums = [float(v) for v in vals if is_number(v)]
        if not nums:
            continue
        if len(nums) == len(rows) and len(set(nums)) == 1:
            same.append(f"{header(c)} {fmt(c, vals[0])}")
            continue
        missing = len(rows) - len(nums)
        counts = all(isinstance(v, int) for v in vals if is_number(v))  # steps, eigenvalue counts: whole numbers
        show = (lambda x: f"{x:,g}") if counts else (lambda x: fmt(c, x))
        body.append(
            [
                Cell(header(c)),
                Cell(show(statistics.median(nums)), "num"),
                Cell(f"{show(min(nums))} – {show(max(nums))}", "num"),
                Cell(str(missing) if missing else "", "num"),
            ]
        )
    out: list = []
    if body:
        out.append(Table(["quantity", "median", "lowest – highest", "missing"], body, caption))
    if same:
        out.append(("p", f"The same in all {len(rows)} rows: {', '.join(same)}."))
    if flags:
        out.append(("p", f"Rows flagged: {'; '.join(flags)}."))
    return out


def seed_groups(rows: list[dict]) -> tuple[list[str], list[list[dict]]] | None:
    """Rows with one row per configuration and seed: (the columns that name a configuration, the
    rows of each configuration in order), or None where the rows are not like that. A column names
    the configuration if every seed has the same set of its values (the settings swept); measured
    values differ from seed to seed."""
    seeds = [r.get("seed") for r in rows]
    if any(not isinstance(s, int) or isinstance(s, bool) for s in seeds) or len(set(seeds)) < 2:
        return None
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    if len({len(v) for v in by_seed.values()}) != 1:
        return None
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    key = []
    for c in cols:
        if c == "seed" or c.startswith("original_") or any(isinstance(r.get(c), (bool, list, dict)) for r in rows):
            continue
        per_seed = [sorted(map(repr, (r.get(c) for r in group))) for group in by_seed.values()]
        if all(p == per_seed[0] for p in per_seed):
            key.append(c)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(repr(r.get(c)) for c in key), []).append(r)
    if len(groups) * len(by_seed) != len(rows):
        return None
    return key, list(groups.values())


def seed_median_table(key: list[str], groups: list[list[dict]], caption: str) -> tuple[Table, list[str]]:
    """One row per configuration: its settings, then each measured quantity's median over the seeds."""
    rows = []
    for g in groups:
        row = {c: g[0].get(c) for c in key}
        row["seeds"] = len(g)
        cols = [c for c in g[0] if c not in key and c != "seed" and not c.startswith("original_")]
        for c in cols:
            vals = [r.get(c) for r in g]
            if all(isinstance(v, bool) for v in vals):
                row[c] = any(vals) if c == "diverged" else f"{sum(vals)} of {len(vals)}"
            elif all(is_number(v) for v in vals):
                m = statistics.median(vals)
                row[c] = int(m) if all(isinstance(v, int) for v in vals) and m == int(m) else float(m)  # counts stay counts
            elif all(v is None or is_number(v) for v in vals) and any(is_number(v) for v in vals):
                nums = [float(v) for v in vals if is_number(v)]
                row[c] = statistics.median(nums)
            else:
                row[c] = None
        rows.append(row)
    return rows_table(rows, caption)


def series_keys(row: dict) -> list[str]:
    """The fields of a record that are series of one length (e.g. the metrics at each point of a
    line): at least two numeric lists of the same length ≥ 3."""
    lengths = [len(v) for v in row.values() if isinstance(v, list) and len(v) >= 3 and all(is_number(x) or x is None for x in v)]
    if len(lengths) < 2:
        return []
    n = statistics.mode(lengths)
    keys = [k for k, v in row.items() if isinstance(v, list) and len(v) == n and all(is_number(x) or x is None for x in v)]
    return keys if len(keys) >= 2 else []


def record_blocks(key: str, rows: list[dict], data_link: tuple[str, str] | None) -> list:
    """A list of records: records holding series are listed without their series (the figures
    show them; metrics.csv holds every value); per-seed rows become medians over seeds; long lists
    become statistics."""
    caption = header(key) if key != "results" else ""
    series = sorted({k for r in rows for k in series_keys(r)}) if all(series_keys(r) for r in rows) else []
    if series:
        n = max(len(r[k]) for r in rows for k in series if isinstance(r.get(k), list))
        t, notes = rows_table([{k: v for k, v in r.items() if k not in series} for r in rows], caption)
        blocks: list = [t] + [("p", x) for x in notes]
        text = f"The values at each of the {n} points ({', '.join(header(k) for k in series)}) are drawn in the figures above"
        if data_link:
            blocks.append(("links", text + "; every value is in", [data_link]))
        else:
            blocks.append(("p", text + "; every value is in summary.json."))
        return blocks
    grouped = seed_groups(rows)
    if grouped and 1 < len(grouped[1]) < len(rows):  # several configurations, each over seeds
        keys, groups = grouped
        n = len(groups[0])
        t, notes = seed_median_table(
            keys,
            groups,
            (caption + ": " if caption else "") + f"median over {n} seeds per configuration (each seed's row is in summary.json)",
        )
        return [t] + [("p", x) for x in notes]
    if len(rows) > MAX_ROWS:
        return stats_table(rows, f"{header(key)}: {len(rows)} rows, summarised (every row is in summary.json)")
    t, notes = rows_table(rows, caption)
    return [t] + [("p", x) for x in notes]


def result_blocks(summary: dict, data_link: tuple[str, str] | None = None) -> list:
    """Tables of a summary.json, whatever its shape: scalars and short lists as one key/value table,
    lists of records as tables (see record_blocks)."""
    blocks: list = []
    scalars = []
    for key, v in summary.items():
        if key in META or is_id(key):
            continue
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            v = [{"name": k, **x} for k, x in v.items()]
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            blocks += record_blocks(key, v, data_link)
        else:
            scalars.append([Cell(header(key)), Cell(fmt(key, v), "num" if is_number(v) else "")])
    if scalars:
        blocks.insert(0, Table(["value", "this run"], scalars, cls="kv"))
    return blocks
