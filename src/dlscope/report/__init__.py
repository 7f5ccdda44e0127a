"""The study's report: DIR/report.html (one self-contained page: figures embedded as data URIs,
inline CSS, no network) and DIR/report.md beside it (figures linked by relative path).

It reads only the run folder (rundir.py: per experiment config.json, summary.json, timing.json,
figures/*.png, trials/*.error.txt), builds one list of blocks (sections.py, from blocks.py's
parts), and renders it twice (render_html.py, render_md.py), so both files say the same thing.
Nothing here names an experiment: each one's title, captions, claims and reference numbers come
from its module (experiments/_base.py).
"""

from __future__ import annotations

from pathlib import Path

from ..experiments._base import ConfigError
from ..files import write_text_atomic
from .curvature_folder import is_analyze_folder
from .curvature_folder import render_folder as render_analyze_folder
from .render_html import to_html
from .render_md import to_markdown
from .rundir import holds_a_run, png_size
from .sections import build

__all__ = ["ReportError", "build", "png_size", "to_html", "to_markdown", "write_report"]

OUTPUTS = ("report.html", "report.md")


class ReportError(RuntimeError):
    """The report could not be written (a read-only folder, a full disk): one line for the user."""


def clean_leftovers(run_dir: Path) -> None:
    """Remove the temporary files of report writes that were interrupted (.report.html.XXXX)."""
    for name in OUTPUTS:
        for tmp in run_dir.glob(f".{name}.*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def write_report(run_dir: Path) -> list[Path]:
    """Write run_dir/report.html and run_dir/report.md; return their paths.
    Raises ConfigError if the folder holds no run (and writes nothing), ReportError if the files
    cannot be written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    if not holds_a_run(run_dir) and is_analyze_folder(run_dir):  # `dlscope analyze`'s folder: its own report
        try:
            return render_analyze_folder(run_dir)
        except OSError as e:
            raise ReportError(f"cannot write the report in {run_dir}: {e.strerror or e}") from None
    if not holds_a_run(run_dir):
        raise ConfigError(f"{run_dir} holds no dlscope run (no experiment folder with a config.json); nothing written")
    blocks, _ = build(run_dir)
    paths = [run_dir / name for name in OUTPUTS]
    try:
        clean_leftovers(run_dir)
        write_text_atomic(paths[0], to_html(blocks))
        write_text_atomic(paths[1], to_markdown(blocks))
    except OSError as e:
        raise ReportError(f"cannot write the report in {run_dir}: {e.strerror or e}") from None
    return paths
