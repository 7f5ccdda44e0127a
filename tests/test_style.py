"""One style for the whole tree: `ruff format` and `ruff check` (configured in pyproject.toml) pass."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ["src", "tests", "bench"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([exe, *args, *TREES], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_code_is_formatted():
    r = _ruff("format", "--check")
    assert r.returncode == 0, f"run `ruff format {' '.join(TREES)}`:\n{r.stdout}{r.stderr}"


def test_lint_passes():
    r = _ruff("check")
    assert r.returncode == 0, f"`ruff check` found:\n{r.stdout}{r.stderr}"
