"""The report as Markdown (report.md, beside the run's folders: figures linked by relative path).

Markdown passes raw HTML through, so strings from the run folder are escaped here as report.html
escapes them: outside code spans, <, > and & become entities, and a link may point only to an
anchor of this page (#...) or to a file of the run that the report itself names.
"""

from __future__ import annotations

import html
import re

from .blocks import Figure, Table

CODE_SPAN = re.compile(r"(`[^`\n]+`)")
LINK = re.compile(r"\]\((?!#[\w-]+\))")  # "](" not followed by an anchor: not a link of ours


def escape(text: str) -> str:
    """Text for Markdown: HTML escaped outside `code` spans (code spans show text verbatim), and
    only anchor links left working."""
    parts = CODE_SPAN.split(str(text).replace("\r", " ").replace("\n", " "))
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span
            out.append(part)
        else:
            out.append(LINK.sub(r"]\\(", html.escape(part, quote=False)))
    return "".join(out)


def cell(text: str) -> str:
    return escape(text).replace("|", "\\|")


def table_md(t: Table) -> str:
    lines = []
    if t.caption:
        lines.append(f"*{escape(t.caption)}*\n")
    lines.append("| " + " | ".join(cell(h) for h in t.head) + " |")
    aligns = []
    for i in range(len(t.head)):
        numeric = any(i < len(r) and "num" in r[i].cls.split() for r in t.rows) and "kv" not in t.cls.split()
        aligns.append("---:" if numeric else "---")
    lines.append("| " + " | ".join(aligns) + " |")
    for row in t.rows:
        texts = []
        for c in row:
            text = cell(c.text)
            classes = c.cls.split()
            if ("bad" in classes and "diff" in classes) or "verdict" in classes:
                text = f"**{text}**"
            texts.append(text)
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines)


def to_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Table):
            out.append(table_md(b))
        elif isinstance(b, Figure):
            path = f"{b.section}/figures/{b.name}" if b.section else f"figures/{b.name}"  # a plain file name (rundir.read_figure)
            alt = f"{escape(b.section)}: {escape(b.caption)}" if b.section else escape(b.caption)
            out.append(f"![{alt}]({path})\n\n*{escape(b.caption)}*")
        elif b[0] == "section":
            if b[1] != "contents":
                out.append(f'<a id="{html.escape(b[1])}"></a>')
        elif b[0] == "end":
            continue
        elif b[0] == "part":
            out.append(f"---\n\n**Part: {escape(b[1])}**")
        elif b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + escape(b[1]))
        elif b[0] == "status":
            out.append(f"Status: **{escape(b[2])}**")
        elif b[0] == "p":
            out.append(escape(b[1]))
        elif b[0] == "note":
            out.append(f"> {escape(b[2])}")
        elif b[0] == "links":
            out.append(escape(b[1]) + "".join(f" [{escape(label)}]({path})" for label, path in b[2]) + ".")
        elif b[0] == "legend":
            out.append(
                "Difference = dlscope − original; accuracies in percentage points (pp); **bold**: far from "
                "the original (more than 10 pp or 50%)."
            )
        elif b[0] == "diff":
            out.append(f"**{escape(b[1])}.** {escape(b[2])}\n\n*Why:* {escape(b[3])}")
    return "\n\n".join(out) + "\n"
