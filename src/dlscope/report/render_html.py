"""The report as one self-contained HTML page: figures embedded as data URIs, inline CSS, no
script, no network. Every string from the run folder is escaped."""

from __future__ import annotations

import base64
import html
import re

from .blocks import Figure, Table
from .rundir import png_size

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
code { overflow-wrap: anywhere; font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace;
       background: var(--soft); padding: 1px 4px; border-radius: 3px; }
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
td.warn { background: var(--warn) !important; color: var(--warn-fg); }
td.bad { background: var(--bad) !important; color: var(--bad-fg); }
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
td.verdict { font-weight: 600; white-space: nowrap; } td.nw { white-space: nowrap; }
td.verdict.good { background: var(--good) !important; color: var(--good-fg); }
td.verdict.bad { background: var(--bad) !important; color: var(--bad-fg); }
td.verdict.warn { background: var(--warn) !important; color: var(--warn-fg); }
td.verdict.unknown { color: var(--muted); font-style: italic; }
table.findings { font-size: 13.5px; } table.findings td:nth-last-child(2) { min-width: 220px; }
table.findings td:last-child { color: var(--muted); } table.findings td:nth-child(2) { min-width: 200px; }
/* the findings with their evidence and notes: the page's width, long notes wrap within their column */
table.findings:has(th.col-note) { table-layout: fixed; width: 100%; font-size: 13px; }
table.findings:has(th.col-note) td { overflow-wrap: anywhere; min-width: 0 !important; }
th.col-experiment { width: 10%; } th.col-claim { width: 20%; } th.col-source { width: 9%; }
th.col-verdict { width: 10%; } th.col-after-holm { width: 6.5%; } th.col-evidence { width: 21%; } th.col-note { width: 23.5%; }
table.findings tr:has(td.first):not(:first-child) td { border-top: 2px solid var(--line); }
.badge.damaged { background: var(--bad); color: var(--bad-fg); }
p.links { font-size: 14px; }
@media print { body { background: #fff; } main { max-width: none; } section { break-inside: avoid-page; } }
"""


def inline(text: str) -> str:
    """Escape, then `code`, **bold** and [text](#anchor) links."""
    t = html.escape(text, quote=False)
    # short code stays on one line ("--profile" must not break at its hyphens); long code may wrap
    t = re.sub(r"`([^`]+)`", lambda m: f"<code{' class=nw' if len(m.group(1)) <= 40 else ''}>{m.group(1)}</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\[([^\]]+)\]\((#[\w-]+)\)", r'<a href="\2">\1</a>', t)
    return t


def figure_html(f: Figure) -> str:
    w, _ = png_size(f.data)
    style = f' width="{w}"' if w else ""  # shown at its pixel size, shrunk to the column's width when wider
    src = "data:image/png;base64," + base64.b64encode(f.data).decode("ascii")
    alt = html.escape(f"{f.section}: {f.caption}" if f.section else f.caption)
    where = f"{f.section}/figures/" if f.section else "figures/"  # "": the folder the page is in
    return (
        f'<figure><img src="{src}" alt="{alt}" data-file="{html.escape(where + f.name)}"{style}>'
        f"<figcaption>{inline(f.caption)}</figcaption></figure>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "blank"


def table_html(t: Table) -> str:
    # a caption as a paragraph: a <caption> wraps to the table's (often narrow) width
    out = [f'<p class="caption">{inline(t.caption)}</p>'] if t.caption else []
    out.append('<div class="tablewrap">' + (f'<table class="{html.escape(t.cls)}">' if t.cls else "<table>"))
    # each header cell names its column (class col-NAME), so CSS can size the columns of a table
    out.append("<thead><tr>" + "".join(f'<th class="col-{_slug(h)}">{inline(h)}</th>' for h in t.head) + "</tr></thead><tbody>")
    for row in t.rows:
        cells = []
        for c in row:
            text = inline(c.text)
            if c.cls.startswith("status"):
                text = f'<span class="badge {html.escape(c.cls.split()[-1])}">{text}</span>'
            cls = f' class="{html.escape(c.cls)}"' if c.cls else ""
            cells.append(f"<td{cls}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def to_html(blocks: list) -> str:
    body = []
    for b in blocks:
        if isinstance(b, Table):
            body.append(table_html(b))
        elif isinstance(b, Figure):
            body.append(figure_html(b))
        elif b[0] == "section":
            body.append(f'<section id="{html.escape(b[1])}">')
        elif b[0] == "end":
            body.append("</section>")
        elif b[0] == "part":
            body.append(f'<div class="part">{html.escape(b[1])}</div>')
        elif b[0] in ("h1", "h2", "h3"):
            ident = f' id="{html.escape(b[2])}"' if b[2] and b[0] != "h2" else ""
            top = ' <a class="top" href="#contents">↑ contents</a>' if b[0] == "h2" and b[2] != "contents-h" else ""
            body.append(f"<{b[0]}{ident}>{inline(b[1])}{top}</{b[0]}>")
        elif b[0] == "status":
            kind = html.escape(b[1].replace(" ", "-"))
            body.append(f'<p class="status {kind}"><span class="badge {kind}">{html.escape(b[2])}</span></p>')
        elif b[0] == "p":
            body.append(f"<p>{inline(b[1])}</p>")
        elif b[0] == "note":
            body.append(f'<div class="note {html.escape(b[1])}">{inline(b[2])}</div>')
        elif b[0] == "links":
            links = "".join(f' <a href="{html.escape(path)}">{html.escape(label)}</a>' for label, path in b[2])
            body.append(f'<p class="links">{inline(b[1])}{links}.</p>')
        elif b[0] == "legend":
            body.append(
                '<p class="legend">Difference = dlscope − original; accuracies in percentage points (pp). '
                '<span class="diff good">close</span> ≤ 3 pp or ≤ 15%, <span class="diff warn">off</span> '
                '≤ 10 pp or ≤ 50%, <span class="diff bad">far</span> beyond.</p>'
            )
        elif b[0] == "diff":
            body.append(
                f'<div class="diffitem"><h4>{inline(b[1])}</h4><p>{inline(b[2])}</p><p class="why">Why: {inline(b[3])}</p></div>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dlscope report</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )
