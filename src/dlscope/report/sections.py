"""What the report says: the header, the Findings table, the contents, one section per experiment
(its verdicts, what was run, figures, results, beside the original study) and the differences
from the original. Everything about an experiment comes from its module (experiments/_base.py) and
its folder in the run; this file names no experiment.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from .. import __version__, experiments
from ..findings import holm_survivors
from .blocks import Cell, Figure, Table, cells, fmt, fmt_number, fmt_seconds, fmt_setting, result_blocks
from .rundir import ExpRun, collect, is_number, module_of, read_figures

VERDICT_CLASS = {"shown": "good", "not shown": "bad", "inconclusive": "warn"}
FULL = "full"  # the profile with the original study's settings


def is_original(finding: dict) -> bool:
    return str(finding.get("source", "")).strip().lower().startswith("original")


def source_text(finding: dict) -> str:
    return "the original study" if is_original(finding) else str(finding.get("source") or "—")


def verdict_cell(verdict: str) -> Cell:
    kind = VERDICT_CLASS.get(verdict)
    return Cell(verdict if kind else f"{verdict} (unknown verdict)", f"verdict {kind or 'unknown'}")


def evidence_text(f: dict) -> str:
    """statistic: value (95% interval low to high), n = k"""
    text = f"{f.get('statistic') or 'value'}: {fmt_number(f.get('value'))}"
    ci = f.get("ci")
    if isinstance(ci, list) and len(ci) == 2 and all(is_number(c) for c in ci):
        text += f" (95% interval {fmt_number(ci[0])} to {fmt_number(ci[1])})"
    n = f.get("n")
    if is_number(n):
        text += f", n = {int(n)}"
    test, p = f.get("test"), f.get("p")
    if isinstance(test, str) and test:
        text += f"; {test}" + (f", p = {p:.2g}" if is_number(p) else "")
    return text


def holm_marks(rows: list[tuple[ExpRun, dict]]) -> list[str]:
    """Per finding: whether a "shown" verdict survives Holm's correction over every claim of the
    report that has a p ("yes" / "no"); "—" for the others."""
    ps = [f.get("p") if is_number(f.get("p")) else None for _, f in rows]
    keep = holm_survivors(ps)
    return [("yes" if k else "no") if f.get("verdict") == "shown" else "—" for (_, f), k in zip(rows, keep)]


def findings_table(
    rows: list[tuple[ExpRun, dict]], with_experiment: bool, caption: str = "", holm: list[str] | None = None
) -> Table:
    head = (
        (["experiment"] if with_experiment else [])
        + ["claim", "source", "verdict"]
        + (["after Holm"] if holm else [])
        + ["evidence", "note"]
    )
    body, last = [], None
    for i, (run, f) in enumerate(rows):
        row = []
        if with_experiment:  # the experiment's name on its first row only
            first = run.name != last
            row.append(Cell(f"[{run.name}](#{run.name})" if first else "", "link nw first" if first else "link"))
            last = run.name
        row += [Cell(str(f["claim"])), Cell(source_text(f)), verdict_cell(f["verdict"])]
        if holm:
            row.append(Cell(holm[i], "nw " + {"yes": "good", "no": "warn"}.get(holm[i], "")))
        row += [Cell(evidence_text(f)), Cell(str(f.get("note") or ""))]
        body.append(row)
    return Table(head, body, caption, cls="findings")


def verdict_counts(findings: list[dict]) -> str:
    counts = [f"{sum(f['verdict'] == v for f in findings)} {v}" for v in VERDICT_CLASS]
    return ", ".join(counts)


# --------------------------------------------------------------------------- the study's findings


def findings_blocks(runs: list[ExpRun]) -> list:
    blocks: list = [("section", "findings"), ("h2", "Findings", "findings-h")]
    ran = [r for r in runs if r.summary is not None]
    rows = [(r, f) for r in ran for f in r.findings]
    if not rows:
        blocks.append(
            (
                "note",
                "missing",
                "No findings recorded: the summaries in this run folder state no verdicts "
                "on the study's claims (they were written by a version of dlscope that did "
                "not yet compute them, or no experiment has finished).",
            )
        )
        blocks.append(("end",))
        return blocks
    holm = holm_marks(rows)
    tested = sum(is_number(f.get("p")) for _, f in rows)
    shown = sum(f.get("verdict") == "shown" for _, f in rows)
    blocks.append(
        (
            "p",
            f"Each claim of the original study, and of the papers where they differ, checked from this "
            f"run's own numbers: {verdict_counts([f for _, f in rows])}. **shown**: the 95% interval "
            f"lies on the claimed side (for rank tests: the exact one-sided p is at most 2.5%); **not "
            f"shown**: the data decide against the claim; **inconclusive**: the seeds disagree, or this "
            f"number of seeds cannot show an effect of this size (the note says which it could). Each "
            f"verdict is at 95% on its own; {tested} claims were tested, so about {tested * 0.025:.1f} "
            f'false "shown" are expected if none were true. **After Holm**: whether a shown verdict '
            f"still holds when the {tested} tests are corrected together (Holm's step-down method): "
            f"{sum(h == 'yes' for h in holm)} of {shown} do. The evidence names each test and its "
            f"one-sided p; summary.json holds the numbers each verdict is computed from (`sample`).",
        )
    )
    blocks.append(findings_table(rows, with_experiment=True, holm=holm))
    silent = [r.name for r in ran if not r.findings]
    if silent:
        blocks.append(("p", f"No findings recorded for: {', '.join(f'[{n}](#{n})' for n in silent)}."))
    blocks.append(("end",))
    return blocks


# --------------------------------------------------------------------------- beside the original


def _kind(ref: dict, label: str) -> str:
    return ref.get("kind") or ("acc" if "accuracy" in label else "loss")


def compare_cell(kind: str, original, mine) -> tuple[Cell, Cell, Cell]:
    """(original, ours, difference) with the difference coloured by how far we are from the original:
    accuracies in percentage points (≤ 3 close, ≤ 10 off, else far), losses relative (≤ 15%, ≤ 50%)."""
    key = "acc" if kind == "acc" else "loss"
    show = (lambda v: fmt(key, float(v))) if kind == "acc" else (lambda v: f"{v:.4g}")
    original = tuple(original) if isinstance(original, list) else original
    mine = tuple(mine) if isinstance(mine, list) else mine
    o_txt = f"{show(original[0])} – {show(original[1])}" if isinstance(original, tuple) else show(original)
    if (
        mine is None
        or (isinstance(mine, tuple) and not all(is_number(v) for v in mine))
        or (not isinstance(mine, tuple) and not is_number(mine))
    ):
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


def ours(module, summary: dict) -> dict:
    """This run's numbers under REFERENCE's labels, {label: (value, note)}, from the module's ours()."""
    out = {}
    for label, v in module.ours(summary).items():
        out[label] = (v.get("value"), v.get("note") or "") if isinstance(v, dict) else (v, "")
    return out


def numbers_table(run: ExpRun, ref: dict) -> Table:
    mine = ours(module_of(run.name), run.summary)
    rows = []
    for label, original in ref["rows"].items():
        value, note = mine.get(label, (None, ""))
        o, m, d = compare_cell(_kind(ref, label), original, value)
        rows.append([Cell(f"{label} ({note})" if note else label), o, m, d])
    return Table(["", "original", "dlscope", "difference"], rows, cls="compare")


def comparison_blocks(run: ExpRun) -> list:
    """The original's claims as verdicts; its numbers beside ours only at the original's settings."""
    ref = getattr(module_of(run.name), "REFERENCE", None)
    ref = ref if isinstance(ref, dict) and ref.get("rows") else None
    claims = [f for f in run.findings if is_original(f)]
    if run.summary is None or (ref is None and not claims):
        return []
    profile = run.profile or "?"
    blocks: list = [("h3", "Beside the original study", None)]
    if claims:  # the evidence is in the experiment's Findings above
        blocks.append(
            Table(
                ["the original's claim", "verdict in this run"],
                [[Cell(str(f["claim"])), verdict_cell(f["verdict"])] for f in claims],
                cls="findings",
            )
        )
    else:
        blocks.append(("p", "No findings recorded on the original's claims."))
    if ref is None:
        return blocks
    if profile != FULL:
        blocks.append(
            (
                "note",
                "info",
                f"The original's numbers ({ref['what']}) are not comparable at the "
                f"`{profile}` profile (shorter schedules, data subsets), so only the verdicts "
                f"are shown. Run with `--profile full`, the original's settings, to see them "
                f"beside this run's.",
            )
        )
        return blocks
    blocks.append(("p", f"Compared: {ref['what']}. Original: {ref['original']}; this run: profile `{profile}`{_length(run)}."))
    blocks.append(numbers_table(run, ref))
    blocks.append(("legend",))
    return blocks


def _length(run: ExpRun) -> str:
    """The training length the experiment declares first in WORK_SETTINGS["length"], as ", 25 epochs"."""
    keys = (getattr(module_of(run.name), "WORK_SETTINGS", None) or {}).get("length") or ("",)
    v = (run.config or {}).get(keys[0])
    if isinstance(v, int) and not isinstance(v, bool):
        unit = keys[0].replace("_", " ")
        return f", {v:,} {unit[:-1] if v == 1 else unit}"
    return ""


# --------------------------------------------------------------------------- one experiment


def settings_blocks(run: ExpRun) -> list:
    settings = run.config or {}
    full = (getattr(module_of(run.name), "PROFILES", None) or {}).get(FULL)
    t = run.timing or {}
    facts = [
        ["profile", run.profile or "—"],
        ["base seed (--seed)", str(settings.get("seed", "—"))],
        ["device", t.get("device_name") or t.get("device") or "—"],
        ["time", _time_text(t)],
    ]
    if t.get("finished"):
        facts.append(["finished", str(t["finished"]).replace("T", " ")])
    blocks: list = [("h3", "What was run", None), Table(["", ""], [cells(r) for r in facts], cls="kv")]
    if full is None:
        blocks.append(("p", "Settings: see config.json (this version has no module to compare them with)."))
        return blocks
    keys = [k for k in settings if k not in ("profile", "seed")] + [k for k in full if k not in settings]
    diff = [k for k in keys if json.dumps(settings.get(k)) != json.dumps(full.get(k))]
    if not diff:
        blocks.append(("p", "Settings: all as the `full` profile (the original study's)."))
    else:
        rows = [
            [Cell(k), *(Cell(fmt_setting(v), "num" if is_number(v) else "") for v in (settings.get(k), full.get(k)))]
            for k in diff
        ]
        same = len([k for k in keys if k not in diff])
        blocks.append(
            Table(
                ["setting", "this run", "full (original)"],
                rows,
                f"Settings that differ from the `full` profile ({same} others are the same)",
                cls="settings",
            )
        )
    return blocks


def _time_text(t: dict) -> str:
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


def own_findings_blocks(run: ExpRun) -> list:
    if run.summary is None:
        return []
    if not run.findings:
        return [("h3", "Findings", None), ("p", "No findings recorded for this experiment.")]
    return [("h3", "Findings", None), findings_table([(run, f) for f in run.findings], with_experiment=False)]


def figure_caption(module, name: str) -> str:
    caption = (getattr(module, "CAPTIONS", None) or {}).get(name)
    if isinstance(caption, str) and caption.strip():
        return caption
    return f"A figure of this experiment ({Path(name).stem.replace('_', ' ')})."


def experiment_blocks(i: int, run: ExpRun, profile_hint: str, folder: str) -> list:
    module = module_of(run.name)
    part = getattr(module, "PART", None)
    blocks: list = [("part", part)] if part else []
    blocks.append(("section", run.name))
    blocks.append(("h2", f"{i}. {run.title} — {run.name}", run.name))
    blocks.append(("status", run.status, status_detail(run)))
    if run.status == "damaged":
        blocks.append(
            (
                "note",
                "bad",
                f"The files of this experiment are damaged, so nothing of it is shown: "
                f"{'; '.join(run.damaged)}. Run it again into a new folder to replace them.",
            )
        )
        blocks.append(("end",))
        return blocks
    if run.status == "not run":
        why = "" if run.implemented else " (not implemented in this version of dlscope)"
        how = (
            f" Run it with `dlscope run {run.name} --profile {profile_hint} --out {folder}` (from the folder that "
            f"holds this one)."
            if run.implemented
            else ""
        )
        blocks.append(("note", "missing", f"Not run{why}: there is no `{run.name}/` in this run folder.{how}"))
        blocks.append(("end",))
        return blocks
    blocks += own_findings_blocks(run)
    if getattr(module, "LOOK_FOR", ""):
        blocks.append(("p", f"What to look for: {module.LOOK_FOR}"))
    if run.status == "incomplete":
        blocks.append(
            (
                "note",
                "missing",
                "Incomplete: the experiment started but wrote no summary (interrupted, "
                "or it failed outside its trials). Run the same command again to resume.",
            )
        )
    if run.failed:
        items = "; ".join(f"`{k}`: {v}" for k, v in sorted(run.failed.items()))
        blocks.append(
            (
                "note",
                "bad",
                f"{len(run.failed)} trial(s) failed, so their results are missing below: {items}. "
                f"The full errors are in {run.name}/trials/*.error.txt; running the same command "
                f"again retries them.",
            )
        )
    blocks += settings_blocks(run)
    if run.figures:
        blocks.append(("h3", "Figures", None))
        blocks += [Figure(run.name, f.name, f.data, figure_caption(module, f.name)) for f in run.figures]
    if run.summary is not None:
        blocks.append(("h3", "Results", None))
        link = (f"{run.name}/metrics.csv", f"{run.name}/metrics.csv") if run.has_metrics else None
        blocks += result_blocks(run.summary, link)
        blocks += comparison_blocks(run)
    blocks.append(("end",))
    return blocks


def analyze_folders(run_dir: Path) -> list[Path]:
    """The `dlscope analyze` output folders inside the run folder (e.g. RUN_DIR/analyze from
    `dlscope analyze --run RUN_DIR`)."""
    from .curvature_folder import is_analyze_folder

    try:
        return sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink() and is_analyze_folder(p))
    except OSError:
        return []


def analyze_blocks(run_dir: Path) -> list:
    """A section per analyze folder: what was measured, the table, the figures."""
    from . import curvature_folder as af

    blocks: list = []
    for folder in analyze_folders(run_dir):
        blocks += [
            ("section", folder.name),
            ("h2", f"Curvature of the trained models — `{folder.name}/` (dlscope analyze)", folder.name),
        ]
        summary, damaged = af.read_summary(folder)  # read as data, its shape checked
        if damaged:
            blocks += [
                ("status", "damaged", "damaged"),
                (
                    "note",
                    "bad",
                    f"The files of this analysis are damaged, so nothing of it is shown: {'; '.join(damaged)}. "
                    f"Run `dlscope analyze` again into a new folder to replace them.",
                ),
                ("end",),
            ]
            continue
        figures = [Figure(folder.name, f.name, f.data, af.FIGURE_CAPTIONS.get(f.name, f.name)) for f in read_figures(folder, [])]
        try:
            blocks += af.blocks(summary, figures)
        except Exception as e:  # an odd summary costs its own section, never the whole report
            blocks += [
                (
                    "note",
                    "bad",
                    f"This section could not be rendered ({type(e).__name__}: {e}); the files are in {folder.name}/.",
                ),
                ("end",),
            ]
            continue
        blocks.append(("end",))
    return blocks


def status_detail(run: ExpRun) -> str:
    if run.status == "not run":
        return "not run" if run.implemented else "not run (not implemented)"
    if run.status == "failed trials":
        return f"{len(run.failed)} trial(s) failed: {', '.join(sorted(run.failed))}"
    return run.status


def differences() -> list[tuple[str, str, str]]:
    """Where dlscope's definitions differ from the original's: each experiment's, then the study's."""
    items = []
    for name in experiments.names():
        items += list(getattr(module_of(name), "DIFFERENCES", None) or [])
    return items + list(experiments.STUDY_NOTES)


# --------------------------------------------------------------------------- the whole report


def build(run_dir: Path) -> tuple[list, list[ExpRun]]:
    runs = [collect(run_dir, n) for n in experiments.names()]
    ran = [r for r in runs if r.config is not None and not r.damaged]
    devices = sorted(
        {str((r.timing or {}).get("device_name") or (r.timing or {}).get("device")) for r in ran if r.timing} - {"None"}
    )
    profiles = sorted({r.profile or "?" for r in ran})
    total = sum(r.seconds or 0 for r in ran)
    n_ok = sum(r.status == "ok" for r in runs)
    folder = Path(run_dir).resolve().name
    not_run = [r.name for r in runs if r.status == "not run"]
    damaged = [r.name for r in runs if r.status == "damaged"]
    blocks: list = [("h1", "dlscope report", "top")]
    facts = [
        ["run folder", folder],
        ["dlscope", __version__],
        ["generated", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")],
        ["device", ", ".join(devices) or "—"],
        ["profile", ", ".join(profiles) or "—"],
        [
            "experiments",
            f"{n_ok} of {len(runs)} complete"
            + (f"; not run: {', '.join(not_run)}" if not_run else "")
            + (f"; damaged: {', '.join(damaged)}" if damaged else ""),
        ],
        ["time in trials", (fmt_seconds(total) + " (summed over trials; side by side they overlap)") if ran else "—"],
    ]
    blocks.append(Table(["", ""], [cells(r) for r in facts], cls="kv facts"))
    blocks.append(
        (
            "p",
            "A classic deep-learning study in three parts — deep vs shallow, optimization, "
            "generalization — measured by dlscope. The findings come first: each claim of the original "
            "study, checked from this run's numbers. Then each experiment: its verdicts, what was run, "
            "its figures and results, and the original's claims beside them. The last section lists "
            "where dlscope's definitions differ from the original's.",
        )
    )
    blocks += findings_blocks(runs)
    blocks.append(("section", "contents"))
    blocks.append(("h2", "Contents", "contents-h"))
    toc = []
    for i, r in enumerate(runs, 1):
        toc.append(
            [
                Cell(str(i), "num"),
                Cell(f"[{r.name}](#{r.name})", "link"),
                Cell(r.title),
                Cell(status_detail(r), f"status {r.status.replace(' ', '-')}"),
                Cell(fmt_seconds(r.seconds) if r.timing else "—", "num"),
            ]
        )
    for folder in analyze_folders(Path(run_dir)):
        toc.append(
            [
                Cell(""),
                Cell(f"[{folder.name}](#{folder.name})", "link"),
                Cell("Curvature of the trained models (dlscope analyze)"),
                Cell(""),
                Cell(""),
            ]
        )
    toc.append(
        [
            Cell(""),
            Cell("[differences](#differences)", "link"),
            Cell("Where dlscope differs from the original"),
            Cell(""),
            Cell(""),
        ]
    )
    blocks.append(Table(["#", "experiment", "title", "status", "time"], toc, cls="toc"))
    blocks.append(("end",))
    profile_hint = profiles[0] if len(profiles) == 1 and profiles[0] != "?" else "quick"
    for i, r in enumerate(runs, 1):
        try:
            blocks += experiment_blocks(i, r, profile_hint, folder)
        except Exception as e:  # an odd summary costs its own section, never the whole report
            blocks += [
                ("section", r.name),
                ("h2", f"{i}. {r.title} — {r.name}", r.name),
                ("status", "damaged", "damaged"),
                ("note", "bad", f"This section could not be rendered ({type(e).__name__}: {e}); the files are in {r.name}/."),
                ("end",),
            ]
    blocks += analyze_blocks(Path(run_dir))
    blocks.append(("section", "differences"))
    blocks.append(("h2", "Where dlscope's definitions differ from the original study", "differences-h"))
    for title, what, why in differences():
        blocks.append(("diff", title, what, why))
    blocks.append(("end",))
    return blocks, runs
