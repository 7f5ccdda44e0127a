"""`pip wheel .` gives a wheel that installs and runs outside the checkout: an experiment and its
report, with nothing read from the source tree (everything the report needs is in the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    src = tmp_path / "src-copy"  # build from a copy: the build writes build/ and egg-info beside the sources
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("dlscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlscope/cli.py" in names and any(n.startswith("dlscope/experiments/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)

    site = tmp_path / "site"  # installed apart from the editable checkout; torch etc. come from this venv
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "MPLBACKEND": "Agg"}  # first on sys.path: the wheel's dlscope wins
    where = subprocess.run(
        [sys.executable, "-c", "import dlscope; print(dlscope.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlscope",
            "run",
            "func-fit",
            "--profile",
            "smoke",
            "--device",
            "cpu",
            "--out",
            "study",
            "--no-progress",
            "--set",
            "epochs=20",
            "--set",
            "points=30",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rep = subprocess.run(
        [sys.executable, "-m", "dlscope", "report", "study"], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (work / "study" / "report.html").read_text()
    assert "func-fit" in html and "data:image/png;base64," in html  # figures embedded
    assert str(REPO) not in html
